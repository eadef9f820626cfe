"""Layers of vectorized networks as pure functions (paper Eqs. 6-8, Appendix H).

Activations of a vectorized network are laid out as ``(B, K, *S, C)``: batch, the K
components of every vector unit, spatial positions (none for dense layers) and
channels/units. A conventional network is the same thing with K = 1.

Each weighted layer is described by a frozen dataclass that knows its shapes and its
*unvectorized* linear map ``lin(w, x)`` on ``(N, *S, C_in)``. Layers past the first share
one weight over the K components (vectorized weight sharing), so they apply ``lin`` to
the ``B*K`` merged batch. The first layer has its own weights per component: it is one
``lin`` with ``K * C_out`` output channels, which is Appendix B's one-hot vector-input
construction without materialising the one-hot expansion.
"""

import dataclasses
import functools
import math

import jax
import jax.numpy as jnp
from jax import lax

# Examples per micro-batch of the fused first block (``first_block``): its K-wide
# pre-activation then stays in cache between the layer, the gate and the pooling.
# Measured on XLA:CPU in benchmarks/README.md.
FIRST_BLOCK_CHUNK = 1
# Bytes of per-tap outputs per micro-batch of ``conv_by_taps`` (fits the L2/L3 caches
# of the machine it was measured on: benchmarks/README.md).
TAPS_CHUNK_BYTES = 4 * 2**20


def tuned_for_cpu():
  """Whether to use the formulations tuned on XLA:CPU (``first_block``,
  ``conv_by_taps``, ``lc_by_position``). They loop over cache-sized pieces, which
  suits a CPU; on GPUs and TPUs, where they were never measured, the plain
  formulations (XLA's own convolutions) run instead."""
  return jax.default_backend() == "cpu"


def _spatial_out(size, kernel, stride, padding):
  out = (size + 2 * padding - kernel) // stride + 1
  if out < 1:
    raise ValueError(
      f"input size {size} is too small for kernel {kernel}, "
      f"stride {stride}, padding {padding}"
    )
  return out


@dataclasses.dataclass(frozen=True)
class Dense:
  """Fully connected: ``h[n, i] = sum_j x[n, j] w[j, i]``."""

  features: int
  kind = "dense"
  in_axis = 0  # Axis of the kernel that indexes input units.

  def out_shape(self, in_shape):
    if len(in_shape) != 1:
      raise ValueError(
        f"Dense expects flat inputs, got shape {in_shape}; insert a Flatten first"
      )
    return (self.features,)

  def kernel_shape(self, in_shape):
    return (in_shape[0], self.features)

  def bias_shape(self, out_shape):
    return (self.features,)

  def fan_in(self, in_shape):
    return in_shape[0]

  def lin(self, w, x):
    return x @ w  # (N, C_in) @ (C_in, C_out)

  def flops(self, in_shape):
    """Multiply-adds of ``lin`` per example, times two."""
    return 2 * in_shape[0] * self.features


@dataclasses.dataclass(frozen=True)
class Conv:
  """2-d convolution with one kernel shared over positions, NHWC / HWIO."""

  features: int
  kernel: int
  stride: int = 1
  padding: int = 0
  kind = "conv"
  in_axis = 2

  def out_shape(self, in_shape):
    h, w, _ = in_shape
    return (
      _spatial_out(h, self.kernel, self.stride, self.padding),
      _spatial_out(w, self.kernel, self.stride, self.padding),
      self.features,
    )

  def kernel_shape(self, in_shape):
    return (self.kernel, self.kernel, in_shape[-1], self.features)

  def bias_shape(self, out_shape):
    return (1, 1, self.features)  # One bias per channel, shared over positions.

  def fan_in(self, in_shape):
    return self.kernel * self.kernel * in_shape[-1]

  def lin(self, w, x):
    return (conv_with_plain_grads if tuned_for_cpu() else _conv)(self, w, x)

  def flops(self, in_shape):
    ho, wo, c = self.out_shape(in_shape)
    return 2 * ho * wo * c * self.fan_in(in_shape)


@dataclasses.dataclass(frozen=True)
class LocallyConnected:
  """Convolution-shaped receptive fields with unshared weights (Appendix G/H).

  The kernel is ``(H_out, W_out, C_in, k, k, C_out)``: one conv kernel per output
  position. ``lin`` extracts all patches at once and contracts them position by
  position in one batched matmul: no Python loop over positions.
  """

  features: int
  kernel: int
  stride: int = 1
  padding: int = 0
  kind = "lc"
  in_axis = 2

  def out_shape(self, in_shape):
    return Conv(self.features, self.kernel, self.stride, self.padding).out_shape(in_shape)

  def kernel_shape(self, in_shape):
    ho, wo, _ = self.out_shape(in_shape)
    return (ho, wo, in_shape[-1], self.kernel, self.kernel, self.features)

  def bias_shape(self, out_shape):
    return out_shape  # One bias per position and channel.

  def fan_in(self, in_shape):
    return self.kernel * self.kernel * in_shape[-1]

  def lin(self, w, x):
    ho, wo = w.shape[:2]
    w = w.reshape(ho, wo, -1, w.shape[-1])  # (H_out, W_out, P, C_out)
    return jnp.einsum("nhwp,hwpc->nhwc", patches(self, x), w)

  def flops(self, in_shape):
    ho, wo, c = self.out_shape(in_shape)
    return 2 * ho * wo * c * self.fan_in(in_shape)


def _conv(layer, w, x):
  """``Conv.lin`` as XLA's convolution: ``(N, H, W, C_in)``, HWIO -> NHWC."""
  p = layer.padding
  return lax.conv_general_dilated(
    x,
    w,
    (layer.stride, layer.stride),
    ((p, p), (p, p)),
    dimension_numbers=("NHWC", "HWIO", "NHWC"),
  )


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def conv_with_plain_grads(layer, w, x):
  """``Conv.lin`` whose derivatives are convolutions in the forward's own NHWC/HWIO
  form, with the batch and channel swaps written out as transposes.

  JAX's transpose rules give the kernel and input gradients as convolutions with
  permuted dimension labels (``f01b_i01o->01bf``, ``b01f_01oi->b01f``). XLA:CPU
  rewrites those into its fast NHWC/HWIO convolution in a jitted step, but not inside
  a ``lax.scan`` body, where they fall back to a naive loop: 30x slower for an MNIST
  conv net's second layer, which made the trainer's scanned epochs of conv nets
  6-23x slower than single steps (benchmarks/README.md). Same numbers, to the bit.
  """
  return _conv(layer, w, x)


def conv_kernel_grad(layer, x, g):
  """``d/dw sum(g * Conv.lin(w, x))``, ``(k, k, C_in, C_out)``: a convolution of the
  input ``(N, H, W, C_in)``, channels as batch, by the output cotangent ``g``
  ``(N, H_out, W_out, C_out)`` dilated by the stride, examples as input channels."""
  k, s, p = layer.kernel, layer.stride, layer.padding
  ho, wo = g.shape[1:3]
  # High padding (negative: cropping) that leaves exactly k taps in each direction.
  high = (k - x.shape[1] - p + s * (ho - 1), k - x.shape[2] - p + s * (wo - 1))
  out = lax.conv_general_dilated(
    jnp.transpose(x, (3, 1, 2, 0)),  # (C_in, H, W, N)
    jnp.transpose(g, (1, 2, 0, 3)),  # (H_out, W_out, N, C_out)
    (1, 1),
    ((p, high[0]), (p, high[1])),
    rhs_dilation=(s, s),
    dimension_numbers=("NHWC", "HWIO", "NHWC"),
  )  # (C_in, k, k, C_out)
  return jnp.transpose(out, (1, 2, 0, 3))


def conv_input_grad(layer, w, g, in_shape):
  """``d/dx sum(g * Conv.lin(w, x))``, ``(N, H, W, C_in)`` for ``x`` of ``in_shape``:
  the cotangent ``g`` dilated by the stride, convolved with the flipped kernel whose
  input and output channels swap."""
  k, s, p = layer.kernel, layer.stride, layer.padding
  ho, wo = g.shape[1:3]
  high = (in_shape[1] - 1 - s * (ho - 1) + p, in_shape[2] - 1 - s * (wo - 1) + p)
  return lax.conv_general_dilated(
    g,
    jnp.transpose(w[::-1, ::-1], (0, 1, 3, 2)),  # (k, k, C_out, C_in)
    (1, 1),
    ((k - 1 - p, high[0]), (k - 1 - p, high[1])),
    lhs_dilation=(s, s),
    dimension_numbers=("NHWC", "HWIO", "NHWC"),
  )


def _conv_fwd(layer, w, x):
  return _conv(layer, w, x), (w, x)


def _conv_bwd(layer, residuals, g):
  w, x = residuals
  return conv_kernel_grad(layer, x, g), conv_input_grad(layer, w, g, x.shape)


conv_with_plain_grads.defvjp(_conv_fwd, _conv_bwd)


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def conv_by_taps(layer, w, x):
  """A stride-1 ``Conv.lin`` as one matmul with all k*k taps, then shifted sums.

  ``y[n, p, i, j] = x[n, p] @ w[i, j]`` for every position p and tap (i, j) is a single
  ``(N*H*W, C_in) @ (C_in, k*k*C_out)`` matmul; the output at p sums the taps
  ``y[n, p + (i, j) - padding, i, j]``. Micro-batches of examples keep ``y`` in cache.
  On XLA:CPU this runs at 2-3x the speed of ``lax.conv_general_dilated`` for the
  B*K-example batches of a VNN's second conv (benchmarks/README.md). Its derivatives
  are those of ``layer.lin`` (XLA's transposed convolutions), not of the loop.

  Args:
    layer: a ``Conv`` with stride 1.
    w: ``(k, k, C_in, C_out)``.
    x: ``(N, H, W, C_in)``.

  Returns:
    ``(N, H_out, W_out, C_out)``, equal to ``layer.lin(w, x)`` up to rounding.
  """
  k, p = layer.kernel, layer.padding
  _, h, wd, c_in = x.shape
  ho, wo, _ = layer.out_shape(x.shape[1:])
  c_out = w.shape[-1]
  taps = jnp.transpose(w, (2, 0, 1, 3)).reshape(c_in, k * k * c_out)

  def one(xn):  # (H, W, C_in)
    y = (xn.reshape(-1, c_in) @ taps).reshape(h, wd, k, k, c_out)
    y = jnp.pad(y, ((p, p), (p, p), (0, 0), (0, 0), (0, 0)))
    return sum(y[i : i + ho, j : j + wo, i, j] for i in range(k) for j in range(k))

  chunk = max(1, TAPS_CHUNK_BYTES // (4 * h * wd * k * k * c_out))
  return lax.map(one, x, batch_size=chunk)


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def lc_by_position(layer, w, x):
  """``LocallyConnected.lin`` as a loop over output positions with the batch in rows.

  At each position, the receptive fields of all examples ``(N, C_in*k*k)`` times that
  position's kernel ``(C_in*k*k, C_out)``: one cache-sized matmul per position, where
  ``lin`` builds and transposes the patches of the whole batch first. 3-5x faster for
  the B*K-example batches of a VNN's later LC layers on XLA:CPU (benchmarks/README.md).
  Its derivatives are those of ``layer.lin``.

  Args:
    layer: a ``LocallyConnected``.
    w: ``(H_out, W_out, C_in, k, k, C_out)``.
    x: ``(N, H, W, C_in)``.

  Returns:
    ``(N, H_out, W_out, C_out)``, equal to ``layer.lin(w, x)`` up to rounding.
  """
  k, s, p = layer.kernel, layer.stride, layer.padding
  n, _, _, c_in = x.shape
  ho, wo, _ = layer.out_shape(x.shape[1:])
  c_out = w.shape[-1]  # Not layer.features for a first layer's K * C channels.
  xp = jnp.pad(x, ((0, 0), (p, p), (p, p), (0, 0)))
  if c_out < n:
    # Reorder the kernel to (kh, kw, c), which costs 1/N of the receptive fields per
    # output channel, so that a field is a plain slice of the batch: no transpose.
    kernels = jnp.transpose(w, (0, 1, 3, 4, 2, 5)).reshape(ho * wo, -1, c_out)

    def field(i, j):  # (N, k*k*C_in): kh, kw, c
      return lax.dynamic_slice(xp, (0, i * s, j * s, 0), (n, k, k, c_in)).reshape(n, -1)
  else:
    # A first layer's K-wide kernel is the larger: transpose the fields instead.
    kernels = w.reshape(ho * wo, -1, c_out)  # (H_out*W_out, C_in*k*k, C_out)
    xt = jnp.transpose(xp, (1, 2, 0, 3))  # (H, W, N, C_in)

    def field(i, j):  # (N, C_in*k*k): c, kh, kw
      f = lax.dynamic_slice(xt, (i * s, j * s, 0, 0), (k, k, n, c_in))
      return jnp.transpose(f, (2, 3, 0, 1)).reshape(n, -1)

  def one(position):
    index, kernel = position
    return field(index // wo, index % wo) @ kernel  # (N, C_out)

  out = lax.map(one, (jnp.arange(ho * wo), kernels))  # (H_out*W_out, N, C_out)
  return jnp.transpose(out.reshape(ho, wo, n, c_out), (2, 0, 1, 3))


def _lin_fwd(fast, layer, w, x):
  return fast(layer, w, x), (w, x)


def _lin_bwd(layer, residuals, g):
  _, vjp = jax.vjp(layer.lin, *residuals)
  return vjp(g)


conv_by_taps.defvjp(functools.partial(_lin_fwd, conv_by_taps), _lin_bwd)
lc_by_position.defvjp(functools.partial(_lin_fwd, lc_by_position), _lin_bwd)


def patches(layer, x):
  """``(N, H, W, C) -> (N, H_out, W_out, C * k * k)``, ordered (c, kh, kw): the receptive
  fields of a conv or LC ``layer``.

  Built from k*k strided slices: unlike ``lax.conv_general_dilated_patches`` (a
  convolution with a one-hot kernel) this and its transpose are pure data movement.
  """
  k, s, p = layer.kernel, layer.stride, layer.padding
  n, _, _, c = x.shape
  ho, wo, _ = layer.out_shape(x.shape[1:])
  xp = jnp.pad(x, ((0, 0), (p, p), (p, p), (0, 0)))
  cols = [
    xp[:, i : i + s * (ho - 1) + 1 : s, j : j + s * (wo - 1) + 1 : s, :]
    for i in range(k)
    for j in range(k)
  ]
  return jnp.stack(cols, axis=-1).reshape(n, ho, wo, c * k * k)


@dataclasses.dataclass(frozen=True)
class AvgPool:
  """Non-overlapping average pooling (PyTorch's AvgPool2d: floor on odd sizes)."""

  window: int = 2
  kind = "pool"

  def out_shape(self, in_shape):
    h, w, c = in_shape
    return (h // self.window, w // self.window, c)

  def apply(self, x):  # (N, H, W, C)
    k = self.window
    summed = lax.reduce_window(x, 0.0, lax.add, (1, k, k, 1), (1, k, k, 1), "VALID")
    return summed / (k * k)


@dataclasses.dataclass(frozen=True)
class Flatten:
  """Flattens ``(H, W, C)`` with C fastest, so ON/OFF channel pairs stay adjacent."""

  kind = "flatten"

  def out_shape(self, in_shape):
    return (math.prod(in_shape),)

  def apply(self, x):
    return x.reshape(x.shape[0], -1)


def apply_unweighted(layer, x, vectorized_input):
  """Applies pooling/flatten to ``(B, *S, C)`` or, vectorized, ``(B, K, *S, C)``."""
  if not vectorized_input:
    return layer.apply(x)
  b, k = x.shape[:2]
  y = layer.apply(x.reshape(b * k, *x.shape[2:]))
  return y.reshape(b, k, *y.shape[1:])


def linear(layer, w, a, num_components, first):
  """Vectorized linear map of Eq. 6 (no bias).

  Args:
    layer: a weighted layer.
    w: first layer: ``(*kernel_shape[:-1], K, C_out)``; later: ``kernel_shape``.
    a: first layer: the input ``(B, *S, C_in)``; later: ``(B, K, *S, C_in)``.
    num_components: K.
    first: whether this is the first weighted layer.

  Returns:
    Pre-activations without bias, ``(B, K, *S_out, C_out)``.
  """
  k = num_components
  if first:
    lin = (
      functools.partial(lc_by_position, layer)
      if isinstance(layer, LocallyConnected) and tuned_for_cpu()
      else layer.lin
    )
    h = lin(w.reshape(*w.shape[:-2], -1), a)  # (B, *S', K * C_out)
    h = h.reshape(*h.shape[:-1], k, -1)  # (B, *S', K, C_out)
    return jnp.moveaxis(h, -2, 1)
  b = a.shape[0]
  merged = a.reshape(b * k, *a.shape[2:])  # (B*K, *S, C_in)
  if isinstance(layer, Conv) and layer.stride == 1 and tuned_for_cpu():
    h = conv_by_taps(layer, w, merged)
  elif isinstance(layer, LocallyConnected) and tuned_for_cpu():
    h = lc_by_position(layer, w, merged)
  else:
    h = layer.lin(w, merged)  # (B*K, *S', C_out)
  return h.reshape(b, k, *h.shape[1:])


def gate(h, t, t_dot_h=None):
  """The gated nonlinearity ``a = Theta(t . h) h`` of Eqs. 7-8, with Theta(0) = 1.

  Args:
    h: pre-activations ``(B, K, *S, C)``.
    t: gating vectors ``(K, C)``, one per unit (dense) or per channel (conv, LC).
    t_dot_h: ``t . h`` as ``(B, *S, C)`` when the caller has it; else summed here.

  Returns:
    ``(a, mask)``: activations like ``h`` and the gate ``G(h)`` as ``(B, *S, C)`` bool.
  """
  if t_dot_h is None:
    t = t.reshape(t.shape[0], *([1] * (h.ndim - 3)), t.shape[1]).astype(h.dtype)
    t_dot_h = jnp.sum(h * t, axis=1)
  mask = t_dot_h >= 0
  return h * mask[:, None].astype(h.dtype), mask


def first_layer_update(layer, x, s, e):
  """The first layer's update: ``sum_b e[b, mu] dW_b`` with ``dW_b`` the unvectorized
  layer's weight gradient at input ``x_b`` and output cotangent ``s_b``.

  This is the gradient of Eq. 6's first layer, ``h[b, mu] = lin(w[..., mu, :], x_b)``,
  at cotangent ``s[b] e[b, mu]`` (Eqs. 9 and 14 with one weight per component).

  Args:
    layer: the first weighted layer.
    x: its input ``(B, H, W, C_in)`` (or ``(B, n)`` for a dense layer).
    s: the postsynaptic factor ``(B, *S, C)``.
    e: the component factor ``(B, K)``.

  Returns:
    ``(*kernel_shape[:-1], K, C)``.
  """
  batch, k = e.shape
  if isinstance(layer, Conv):
    # A conv kernel is small: per-example kernel gradients (B, C_in * k * k, C) cost
    # 1/K of the K-wide gradient and never build the K-wide cotangent.
    per_example = jnp.einsum("bhwp,bhwc->bpc", patches(layer, x), s)
    per_example = per_example.reshape(batch, x.shape[-1], layer.kernel, layer.kernel, -1)
    return jnp.einsum("bihwc,bm->hwimc", per_example, e)
  g_h = s[..., None, :] * e.reshape(batch, *([1] * (s.ndim - 2)), k, 1)  # (B, *S, K, C)
  kernel = (*layer.kernel_shape(x.shape[1:])[:-1], k * s.shape[-1])
  _, vjp = jax.vjp(lambda w: layer.lin(w, x), jnp.zeros(kernel, x.dtype))
  (gw,) = vjp(g_h.reshape(*g_h.shape[:-2], -1))
  return gw.reshape(*kernel[:-1], k, -1)


def first_layer_t_dot_h(layer, params, t, x):
  """``t . h`` of the first layer straight from its input, ``(B, *S, C)``.

  The first layer's K components are K linear maps of the same input, so
  ``sum_mu t[mu, c] h[b, mu, ..., c] = lin(sum_mu t[mu, c] w[..., mu, c], x) + t . b``:
  one unvectorized map, 1/K of the layer's cost, instead of a sum over the K axis of
  the K-times-wider pre-activation (that reduce alone took a third of an MNIST conv
  VNN step on XLA:CPU; benchmarks/README.md).
  """
  t = t.astype(params["w"].dtype)
  w_t = jnp.einsum("...kc,kc->...c", params["w"], t)  # (*kernel[:-1], C)
  b_t = jnp.einsum("k...c,kc->...c", params["b"], t)  # bias_shape
  return layer.lin(w_t, x) + b_t


def weighted_forward(layer, params, fixed, a, num_components, first, readout):
  """Forward pass of one weighted layer: Eq. 6, then Eqs. 7-8 unless readout.

  Returns ``(out, mask)``: for the readout ``out`` is the logits ``(B, K * C_out)`` and
  mask is None; otherwise ``out`` is the activation ``(B, K, *S, C)``.
  """
  # The bias is (K, *bias_shape) and broadcasts against (B, K, *S, C).
  h = linear(layer, params["w"], a, num_components, first) + params["b"]
  if readout:
    return h.reshape(h.shape[0], -1), None
  # From the input when that reads less than the sum over K would: the first layer's
  # K-wide kernel must be smaller than its K-wide output (conv and LC layers; not
  # dense ones, whose weight outgrows a batch's activation). With K = 1 the sum over
  # components is t * h itself.
  from_input = first and num_components > 1 and params["w"].size < h.size
  t_dot_h = first_layer_t_dot_h(layer, params, fixed["t"], a) if from_input else None
  return gate(h, fixed["t"], t_dot_h)


def first_block(layer, pool, params, t, x, num_components, chunk=FIRST_BLOCK_CHUNK):
  """The first weighted layer, its gate and the pooling after it, fused.

  Equals ``weighted_forward`` followed by ``apply_unweighted(pool, ...)`` but never
  holds the K-wide pre-activation of the whole batch: the layer, the gate and the
  pooling run over micro-batches of ``chunk`` examples, with the K components beside
  the channels, and only the pooled activation (a quarter of the size) is moved to
  the ``(B, K, ...)`` layout. The gate ``t . h`` comes from the input as in
  ``weighted_forward``.

  Args:
    layer: the first weighted layer (conv or LC).
    pool: the pooling layer right after it.
    params: ``{"w": (*kernel_shape[:-1], K, C), "b": (K, *bias_shape)}``.
    t: gating vectors ``(K, C)``.
    x: images ``(B, H, W, C_in)``.
    num_components: K.
    chunk: examples per micro-batch.

  Returns:
    ``(a, mask)``: the pooled activation ``(B, K, *S_pool, C)`` and the gate ``G(h)``
    before pooling, ``(B, *S, C)`` bool.
  """
  k = num_components
  w = params["w"].reshape(*params["w"].shape[:-2], -1)  # (*kernel[:-1], K * C)
  bias = jnp.moveaxis(params["b"], 0, -2)  # (*bias_shape[:-1], K, C)
  bias = bias.reshape(*bias.shape[:-2], -1)  # (*bias_shape[:-1], K * C)
  mask = first_layer_t_dot_h(layer, params, t, x) >= 0  # (B, *S, C)

  def one(example):
    xb, mb = example  # (H, W, C_in), (*S, C)
    h = layer.lin(w, xb[None]) + bias  # (1, *S, K * C)
    h = h.reshape(*h.shape[:-1], k, -1) * mb[..., None, :].astype(h.dtype)
    a = pool.apply(h.reshape(*h.shape[:-2], -1))[0]  # (*S_pool, K * C)
    return jnp.moveaxis(a.reshape(*a.shape[:-1], k, -1), -2, 0)  # (K, *S_pool, C)

  return lax.map(one, (x, mask), batch_size=chunk), mask
