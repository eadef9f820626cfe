"""Learning rules swapped into ``jax.grad`` through ``jax.custom_vjp``.

Vectorized networks: "bp" (the exact gradient, Eqs. 11-14) and "gevb" (Eq. 9).
Conventional networks: "bp" (plain autodiff), "dfa" (Eq. 5), and beyond the paper
"fa" (feedback alignment), "kp" (Kolen-Pollack) and "sign" (sign symmetry), which send
``d`` back through other kernels than the weights (``_backward_kernel``).

Mechanism. Every weighted layer is wrapped in a ``custom_vjp`` whose forward is the
ordinary layer and whose backward computes the rule's update from what it saved (its
input and its gate mask) and two signals that travel backward beside the activation:

* ``eb``, a zero array shaped like the logits, is threaded forward through every layer
  unchanged and added to the logits. Its cotangent is therefore the error vector
  ``e = dL/dlogits`` (``softmax - onehot`` over the batch size, or the binary output
  code's ``sigmoid - bits``: ``output_codes``), which reaches every
  layer's backward: the global broadcast of GEVB and the input of DFA's projections.
* ``d``, for "bp" in vectorized nets and for "fa", "kp" and "sign", is a zero array
  with one scalar per unit; its cotangent is ``delta_hat`` of Eq. 13, the scalar
  Jacobian ``da^L/da^l = delta_hat I`` (Eq. 12), or the signal the feedback kernels
  send back. Pooling and flattening act on it as on one vector component.

The activation's own cotangent is never used (each backward returns zeros for it), so
no K-sized signal travels backward. A layer's update is::

  g_h[b, mu, ...] = s[b, ...] * E[b, mu]           (never materialised past layer 1)
  dW = weight-gradient of the unvectorized layer at input  sum_mu a[b, mu, ...] E[b, mu]
                                               with output cotangent s

where ``s`` is the postsynaptic factor (GEVB: ``G``; BP: ``G * delta_hat``; DFA:
``G * (e B)``; FA, KP, sign: ``G * d``; readout: 1, or ``e`` in a conventional net)
and ``E`` the component factor (``e`` in vectorized nets, 1 in conventional ones).
Contracting the presynaptic activity with ``e`` first makes every update past the first
layer cost about 1/K of the layer's forward pass. Returned updates use the gradient's
sign convention: optimizers descend along their negative, so GEVB's ``Delta w`` of
Eq. 9 is ``-update``.
"""

import functools

import jax
import jax.numpy as jnp
import optax

from gevb_jax import grid, models
from gevb_jax import layers as L

VECTORIZED_RULES = grid.RULES["vectorized"]
CONVENTIONAL_RULES = grid.RULES["conventional"]
# Rules that send a signal ``d`` (one scalar per unit) back layer by layer: the
# vectorized net's exact gradient (Eq. 13, through each layer's weights) and, in
# conventional nets, the rules that send it through other kernels (``_backward_kernel``).
LAYERWISE_RULES = ("bp", *grid.FEEDBACK_RULES)


def backward_kernels(rule):
  """The ``models.Network.backward_kernels`` that ``rule`` needs: "fixed" for feedback
  alignment, "learned" for Kolen-Pollack, "" for every other rule."""
  return {"fa": "fixed", "kp": "learned"}.get(rule, "")


def check_rule(net, rule):
  """Raises ValueError unless ``rule`` trains this kind of network."""
  kind = grid.kind(net.vectorized)
  if rule not in grid.RULES[kind]:
    raise ValueError(
      f"rule {rule!r} does not apply to {kind} networks; "
      f"valid rules: {', '.join(grid.RULES[kind])}"
    )
  needed = backward_kernels(rule)
  if needed and net.backward_kernels != needed:
    raise ValueError(
      f"rule {rule!r} needs a network made with backward_kernels={needed!r}; "
      f"this one has {net.backward_kernels!r}"
    )


def _sum_to_bias(x, bias_shape):
  """Sums ``(B, *S, C)`` over the batch and the axes where the bias is shared."""
  axes = tuple(i + 1 for i, n in enumerate(bias_shape) if n == 1 and x.shape[i + 1] != 1)
  return jnp.sum(x, axis=axes, keepdims=True)


def _postsynaptic(rule, info, fixed, mask, e, delta_hat, vectorized):
  """The postsynaptic factor ``s``, ``(B, *S_out, C_out)``."""
  if info.readout:
    return jnp.ones((e.shape[0], 1), e.dtype) if vectorized else e
  g = mask.astype(e.dtype)
  if rule == "gevb":
    return g  # Eq. 9: delta_hat := 1.
  if rule in LAYERWISE_RULES:
    return g * delta_hat  # Eq. 14; FA, KP and sign: the signal their kernels sent.
  return g * (e @ fixed["feedback"]).reshape(g.shape)  # Eq. 5: delta = B e.


def _backward_kernel(rule, params, fixed):
  """The kernel that takes a layer's signal back to its input, in the forward
  kernel's shape (the layer's input-vjp with it applies its transpose): the weights
  themselves for BP, a fixed random kernel for feedback alignment (Lillicrap et al.
  2016), a learned one for Kolen-Pollack (Akrout et al. 2019), the weights' signs for
  sign symmetry (Liao et al. 2016)."""
  if rule == "fa":
    return fixed["w_back"]
  if rule == "kp":
    return params["w_back"]
  if rule == "sign":
    return jnp.sign(params["w"])
  return params["w"]


@functools.cache
def _layer_with_rule(net, info, rule):
  """The weighted layer ``info`` of ``net`` with ``rule``'s backward pass."""
  k, vectorized = net.num_components, net.vectorized

  def fwd(params, fixed, a, eb, d):
    if info.fused_pool is not None:  # Returns the pooled activation.
      out, mask = L.first_block(info.layer, info.fused_pool, params, fixed["t"], a, k)
    else:
      out, mask = L.weighted_forward(
        info.layer, params, fixed, a, k, info.first, info.readout
      )
    if info.readout:
      return out + eb, (params, fixed, a, mask)
    # One scalar per unit of ``out``: (B, *S, C) after any fused pooling.
    d_out = None
    if rule in LAYERWISE_RULES:
      d_out = jnp.zeros((out.shape[0], *out.shape[2:]), a.dtype)
    return (out, eb, d_out), (params, fixed, a, mask)

  def bwd(res, cotangent):
    params, fixed, a, mask = res
    if info.readout:
      e, delta_hat = cotangent, None
    else:
      _, e, delta_hat = cotangent
    if info.fused_pool is not None and delta_hat is not None:
      # delta_hat arrived at the pooled units; pooling is linear, so its transpose
      # takes it back to the layer's own units.
      _, unpool = jax.vjp(info.fused_pool.apply, jnp.zeros(mask.shape, e.dtype))
      (delta_hat,) = unpool(delta_hat)
    batch = e.shape[0]
    factor = e if vectorized else jnp.ones((batch, 1), e.dtype)  # E, (B, K)
    s = _postsynaptic(rule, info, fixed, mask, e, delta_hat, vectorized)
    bias_shape = params["b"].shape[1:]
    # (K, *bias_shape): sum_b E[b, mu] s[b, ...], summed where the bias is shared.
    gb = jnp.tensordot(factor, _sum_to_bias(s, bias_shape), axes=(0, 0))
    gb = gb.reshape(params["b"].shape)
    d_in = None
    if info.first:
      # Layer 1 has a weight per component: an update as large as its kernel.
      gw = L.first_layer_update(info.layer, a, s, factor)
    else:
      pre = jnp.einsum("bk...,bk->b...", a, factor)  # (B, *S_in, C_in)
      _, vjp = jax.vjp(info.layer.lin, params["w"], pre)
      gw, delta_in = vjp(s)
      if rule == "bp":
        d_in = delta_in  # Eq. 13: delta_hat_j = sum_i w_ij G_i delta_hat_i.
      elif rule in LAYERWISE_RULES:  # delta_j = sum_i B_ij s_i, B in W's place.
        kernel = _backward_kernel(rule, params, fixed)
        _, vjp_in = jax.vjp(lambda p: info.layer.lin(kernel, p), pre)
        (d_in,) = vjp_in(s)
    updates = {"w": gw, "b": gb}
    if "w_back" in params:  # Kolen-Pollack: the kernel gets the weights' update.
      updates["w_back"] = gw
    zeros = jax.tree_util.tree_map(jnp.zeros_like, (fixed, a))
    return (updates, *zeros, e, d_in)

  layer = jax.custom_vjp(lambda *args: fwd(*args)[0])
  layer.defvjp(fwd, bwd)
  return layer


def _rule_layer(rule, d_taps):
  def call(net, info, params, fixed, state):
    a, eb, d = state
    out = _layer_with_rule(net, info, rule)(params, fixed, a, eb, d)
    if info.readout:
      return out, None, None
    if d_taps is not None and info.name in d_taps:
      out = (out[0], out[1], out[2] + d_taps[info.name])
    return out

  return call


def logits_with_rule(net, variables, x, rule, d_taps=None):
  """Logits whose ``jax.grad`` yields ``rule``'s updates (plain ones for conventional
  "bp", whose exact gradient ordinary autodiff already computes at no extra cost).

  ``d_taps`` (layer-wise rules only) maps hidden-layer names to arrays ``(B, *S, C)``
  added to the signal ``d`` that leaves that layer: differentiating with respect to
  them gives the signal the rule sends back to each layer's units (the alignment
  metrics use it).
  """
  check_rule(net, rule)
  if rule == "bp" and not net.vectorized:
    return net.apply(variables, x)
  batch = x.shape[0]
  eb = jnp.zeros((batch, net.num_outputs), x.dtype)
  return models.forward(net, variables, x, _rule_layer(rule, d_taps), eb=eb)


def cross_entropy(logits, labels):
  """Mean softmax cross-entropy; its gradient in the logits is the error vector e."""
  return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()


def loss_and_updates(net, variables, x, labels, rule):
  """The mean loss (``net.loss``: cross-entropy of the net's output code) and
  ``rule``'s updates, shaped like ``variables["params"]``.

  For "bp" the updates are the gradient. All updates use the gradient's sign
  convention (an optimizer steps along their negative).
  """

  def loss_fn(params):
    logits = logits_with_rule(net, {**variables, "params": params}, x, rule)
    return net.loss(logits, labels)

  return jax.value_and_grad(loss_fn)(variables["params"])
