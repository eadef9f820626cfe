"""He and ON/OFF initialisers (paper Section 5, Eq. 16), as the released code draws them.

ON/OFF units are interleaved: unit (or channel) ``2m`` is the ON cell and ``2m + 1`` its
OFF partner, with opposite gating vectors. Channels are the fastest axis of every
activation, so pooling and flattening keep each pair adjacent, and a dense layer after
a flattened conv/LC stack could pair ON/OFF channels by the same rule
(``flatten_pairing="channels"``). The released conventional nets pair other inputs
there (``released_flatten_order``), and so do ours by default.

With this ordering Eq. 16 reads, for layers past the first (``W~`` is He-initialised at
half width, ``[.]+`` is rectification)::

  W[2n, 2m] = [W~[n, m]]+     W[2n + 1, 2m]     = [-W~[n, m]]+
  W[2n, 2m + 1] = [-W~[n, m]]+  W[2n + 1, 2m + 1] = [W~[n, m]]+

and the first layer is ``W[:, 2m] = W~[:, m]``, ``W[:, 2m + 1] = -W~[:, m]``. OFF cells
then carry exactly minus their ON partner's activation, and the ON cells compute what
the half-width mixed-sign network ``W~`` computes (in a conventional conv/LC net with
the released flatten pairing, only up to the flatten).

Where Eq. 16 and the text are silent, the authors' released code decides (it made
Tables 1-2; docs/reproduction.md lists each choice):

* the first weighted layer has std ``1 / sqrt(fan_in)`` in every kind of network, He's
  ``sqrt(2 / fan_in)`` only past it (``init_methods.py:15-16, 39, 52-53, 76``); in a
  vectorized net ``fan_in`` is the scalar input's ``n_0``, since the released layers
  multiply the one-hot ``K n_0`` fan-in back by ``sqrt(K)`` (``vnn.py:43-44``);
* the readout's outputs are ON/OFF paired too (``init_methods.py:25-32``); a single
  output (the vectorized readout) is an ON row alone;
* DFA's layers share one feedback matrix (``dfa_util.py:66-76, 84``);
* a conventional nonnegative net's layer after the flatten pairs its inputs in the
  released flatten order (``released_flatten_order``).
"""

import math

import jax
import jax.numpy as jnp
import numpy as np

from gevb_jax import layers as L

# How a conventional nonnegative net's weighted layer right after a flatten of a conv/LC
# stack pairs its inputs as ON/OFF (``released_flatten_order``): "released" as the
# authors' code does, in its (C, H, W) flatten order; "channels" ON/OFF channel pairs,
# adjacent in this library's (H, W, C) order (what every net did before issue 20).
FLATTEN_PAIRINGS = ("released", "channels")


def scaled_normal(key, shape, fan_in, gain, dtype=jnp.float32):
  """I.i.d. ``N(0, gain / fan_in)``: He for ``gain = 2``, the first layer's 1."""
  return jax.random.normal(key, shape, dtype) * jnp.sqrt(gain / fan_in).astype(dtype)


def variance_gain(first):
  """A layer's variance gain: 1 for the first weighted layer, He's 2 after it."""
  return 1.0 if first else 2.0


def interleave(even, odd, axis):
  """Interleaves two equal arrays along ``axis``: ``[even_0, odd_0, even_1, ...]``."""
  axis = axis % even.ndim
  stacked = jnp.stack([even, odd], axis=axis + 1)
  return stacked.reshape(*even.shape[:axis], -1, *even.shape[axis + 1 :])


def halve(shape, axis, allow_odd=False):
  """``shape`` with the size along ``axis`` halved (rounded up if ``allow_odd``)."""
  axis = axis % len(shape)
  if shape[axis] % 2 and not allow_odd:
    raise ValueError(
      f"ON/OFF pairing needs an even size, got {shape[axis]} "
      f"along axis {axis} of kernel shape {shape}"
    )
  return (*shape[:axis], -(-shape[axis] // 2), *shape[axis + 1 :])


def mixed_sign_kernel(key, shape, fan_in, *, first):
  """He kernel; the first layer's std is ``1 / sqrt(fan_in)`` (init_methods.py:15-16)."""
  return scaled_normal(key, shape, fan_in, variance_gain(first))


def on_off_kernel(key, shape, fan_in, *, in_axis, first):
  """Nonnegative ON/OFF kernel of Eq. 16 built from a half-size kernel ``W~``.

  Args:
    key: PRNG key.
    shape: full kernel shape; output units last.
    fan_in: fan-in of the full layer; the half network's fan-in is ``fan_in / 2``
      past the first layer (its inputs are the ON cells only).
    in_axis: the kernel axis of input units/channels (ignored for the first layer).
    first: the first layer is mixed-sign: ``(+W~; -W~)`` with ``W~`` of std
      ``1 / sqrt(fan_in)``.

  Returns:
    The kernel, ``[.]+``-rectified blocks past the first layer. Outputs come in
    ON/OFF pairs; an odd last output (a single readout unit) is an ON row alone, as
    in the released code's ``max(out_features // 2, 1)`` (``init_methods.py:25``).
  """
  if first:
    half = scaled_normal(key, halve(shape, -1), fan_in, variance_gain(True))
    return interleave(half, -half, axis=-1)
  half_shape = halve(halve(shape, in_axis), -1, allow_odd=True)
  half = scaled_normal(key, half_shape, fan_in // 2, variance_gain(False))
  pos, neg = jax.nn.relu(half), jax.nn.relu(-half)
  on_rows = interleave(pos, neg, axis=in_axis)  # Weights onto ON cells.
  off_rows = interleave(neg, pos, axis=in_axis)  # Weights onto OFF cells.
  return interleave(on_rows, off_rows, axis=-1)[..., : shape[-1]]


def released_flatten_order(shape):
  """For each input of ours, in (H, W, C) flatten order, its index in the released
  conventional nets' flatten of the same ``(H, W, C)`` activation.

  Those nets flatten with ``torch.nn.Flatten``, in (C, H, W) order
  (``nonvec_models.py:71, 94, 116, 139``), and the nonnegative ``Linear`` after it pairs
  flattened inputs ``2m`` and ``2m + 1`` (``init_methods.py:18-32``): two neighbouring
  positions of one channel, and at an odd ``H * W`` (7 x 7) also the last position of
  one channel with the first of the next. (The vectorized nets flatten in (H, W, C)
  order, ``vnn.py:254-259``, so they pair ON/OFF channels, as ours do.)

  Channels are named as the released gates name them: its conventional gate is
  ``t = -1`` on even channels and ``+1`` on odd ones (``nonvec_models.py:10-11``), ours
  the opposite (``gating_vectors``), so its channel ``c`` is our channel ``c ^ 1``,
  the one of the same ON/OFF pair with the same gate. Under that relabelling (and
  ``W~ -> -W~``) every other layer's weights are drawn as the released ones
  (docs/reproduction.md), so this order gives the released pairs at 7 x 7 too, where
  ``c`` and ``c ^ 1`` pair different positions (at 4 x 4 they pair the same).

  Args:
    shape: the flattened activation's ``(H, W, C)``; C even (ON/OFF channel pairs).

  Returns:
    An int array of length ``H * W * C``: a kernel whose input rows are in the released
    order becomes ours with ``kernel[order]``.
  """
  h, w, c = shape
  if c % 2:
    raise ValueError(f"ON/OFF pairing needs an even channel count, got shape {shape}")
  hh, ww, cc = np.meshgrid(np.arange(h), np.arange(w), np.arange(c), indexing="ij")
  return ((cc ^ 1) * h * w + hh * w + ww).ravel()


def gating_vectors(key, num_components, num_units, vectorized):
  """ON/OFF gating vectors ``t``, shape ``(K, C)`` (Eq. 8).

  Vectorized nets draw ``t~`` uniformly from ``{-1, +1}^K`` per ON unit; conventional
  nets use ``t~ = +1``, so ``t`` alternates ``+1, -1`` over units/channels. An odd
  last unit (only mixed-sign nets have odd widths) is an ON unit without its OFF
  partner.
  """
  half = halve((num_components, num_units), -1, allow_odd=True)
  if vectorized:
    t = jax.random.rademacher(key, half, jnp.float32)
  else:
    t = jnp.ones(half, jnp.float32)
  return interleave(t, -t, axis=-1)[:, :num_units]


def dfa_feedback(key, num_classes, out_shapes, nonneg):
  """Fixed DFA feedback matrices ``B_l`` (Eq. 5), one ``(num_classes, n_l)`` per layer
  (``num_classes``: the number of outputs, fewer under a binary output code).

  As in the released code (``dfa_util.py:66-76, 84``; Appendix J): one matrix of shape
  ``(num_classes, max_l n_l)``, uniform on [0, 1] for nonnegative networks and on
  [-1, 1] for mixed-sign ones, and layer ``l`` takes its first ``n_l`` columns, so the
  layers' feedback overlaps. The columns are indexed in PyTorch's flatten order of a
  conv/LC output, (channel, height, width), and mapped to this library's
  (height, width, channel) layout, so every unit gets the feedback the reference
  gives it.

  Args:
    key: PRNG key.
    num_classes: C, the rows of every ``B_l``.
    out_shapes: each hidden layer's output shape, ``(n,)`` or ``(H, W, C)``.
    nonneg: nonnegative network.

  Returns:
    A list of ``(num_classes, prod(shape))`` arrays, in this library's unit order.
  """
  sizes = [math.prod(shape) for shape in out_shapes]
  low = 0.0 if nonneg else -1.0
  full = jax.random.uniform(key, (num_classes, max(sizes)), jnp.float32, low, 1.0)
  out = []
  for shape, n in zip(out_shapes, sizes):
    b = full[:, :n]
    if len(shape) == 3:
      h, w, c = shape
      b = b.reshape(num_classes, c, h, w).transpose(0, 2, 3, 1).reshape(num_classes, n)
    out.append(b)
  return out


def network_variables(net, rng):
  """A ``models.Network``'s initial variables: ``{"params": {name: {w, b[, w_back]}},
  "fixed": {name: {t[, feedback][, w_back]}}}``.

  Mixed-sign networks get He weights; nonnegative ones ON/OFF weights (Eq. 16),
  whose input pairs after a flatten follow ``net.flatten_pairing``
  (``released_orders``); in both the first weighted layer has std
  ``1 / sqrt(fan_in)``. Biases start at zero. ``fixed`` holds what is drawn once and
  never trained: gating vectors for every hidden layer and, in conventional networks,
  each layer's slice of the one DFA feedback matrix. With ``net.backward_kernels``,
  every weighted layer past the first also gets ``w_back``, a kernel shaped and drawn
  like its weights.
  """
  params, fixed = {}, {}
  k, orders = net.num_components, released_orders(net)
  rng_layers, rng_feedback = jax.random.split(rng)
  for index, info in enumerate(net.weighted):
    key_w, key_t = jax.random.split(jax.random.fold_in(rng_layers, index))
    w = _kernel(net, orders, key_w, info, info.first)
    b = jnp.zeros((k, *info.layer.bias_shape(info.out_shape)), jnp.float32)
    params[info.name] = {"w": w, "b": b}
    if not info.readout:
      fixed[info.name] = {
        "t": gating_vectors(key_t, k, info.out_shape[-1], net.vectorized)
      }
  if not net.vectorized:
    shapes = [info.out_shape for info in net.hidden]
    feedback = dfa_feedback(rng_feedback, net.num_outputs, shapes, net.nonneg)
    for info, b in zip(net.hidden, feedback):
      fixed[info.name]["feedback"] = b
  if net.backward_kernels:
    # Drawn like the layer's own weights, from keys of their own: the network's other
    # variables are those of a net without backward kernels.
    where = params if net.backward_kernels == "learned" else fixed
    for index, info in enumerate(net.weighted[1:], 1):
      key = jax.random.fold_in(rng_feedback, index)
      where.setdefault(info.name, {})["w_back"] = _kernel(net, orders, key, info, False)
  return {"params": params, "fixed": fixed}


def released_orders(net):
  """``{layer name: input order}`` for the weighted layers whose ON/OFF input pairs
  are the released code's: a conventional nonnegative net's layer right after the
  flatten of a conv/LC stack, under ``flatten_pairing="released"``. A kernel drawn
  with adjacent input pairs becomes that layer's with ``kernel[order]``
  (``released_flatten_order``). Vectorized nets flatten in (H, W, C) order in the
  released code too, and a flatten of the raw image feeds the mixed-sign first layer:
  neither is here.
  """
  if net.vectorized or not net.nonneg or net.flatten_pairing != "released":
    return {}
  return {
    info.name: released_flatten_order(before.in_shape)
    for before, info in zip(net.info, net.info[1:])
    if isinstance(before.layer, L.Flatten)
    and len(before.in_shape) == 3
    and hasattr(info.layer, "lin")
    and not info.first
  }


def _kernel(net, orders, key, info, first):
  """A weighted layer's kernel: ON/OFF (Eq. 16) in a nonnegative net, He otherwise;
  the first layer's carries the K axis before its outputs."""
  shape = info.layer.kernel_shape(info.in_shape)
  if info.first:
    shape = (*shape[:-1], net.num_components, shape[-1])
  fan_in = info.layer.fan_in(info.in_shape)
  if not net.nonneg:
    return mixed_sign_kernel(key, shape, fan_in, first=first)
  w = on_off_kernel(key, shape, fan_in, in_axis=info.layer.in_axis, first=first)
  order = orders.get(info.name)
  return w if order is None else w[order]
