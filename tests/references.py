"""Hand-written references of the learning rules (DESIGN.md, issue 2 item 8): GEVB
(Eq. 9) and DFA (Eq. 5) as numpy loops over layers, examples and positions, and the
gradient by plain autodiff. Shared by the tests of the paper's nets and of drawn
architectures."""

import functools

import jax
import numpy as np

from gevb_jax import layers as L


def random_batch(net, batch=6, seed=1):
  """``batch`` images uniform in [-1, 1] and random labels."""
  kx, ky = jax.random.split(jax.random.key(seed))
  x = jax.random.uniform(kx, (batch, *net.input_shape), minval=-1.0, maxval=1.0)
  return x, jax.random.randint(ky, (batch,), 0, net.num_classes)


def autodiff(net, variables, x, y):
  """The gradient of the mean loss by plain autodiff of ``net.apply``."""

  def loss(params):
    return net.loss(net.apply({**variables, "params": params}, x), y)

  return jax.grad(loss)(variables["params"])


def error_vector(net, logits, y):
  """e = dL/dlogits of the mean loss, numpy (B, num_outputs), written out: softmax
  minus one-hot, or for the binary code sigmoid minus the bits of the class's number."""
  z = np.asarray(logits, np.float64)
  if net.output_code == "onehot":
    p = np.exp(z - z.max(-1, keepdims=True))
    e = p / p.sum(-1, keepdims=True) - np.eye(net.num_classes)[np.asarray(y)]
  else:
    bits = (np.asarray(y)[:, None] >> np.arange(net.num_outputs)) & 1
    e = 1 / (1 + np.exp(-z)) - bits
  return e / z.shape[0]


@functools.partial(jax.jit, static_argnums=0)
def forward_trace(net, variables, x):
  """What the sums of ``by_hand`` read off the forward pass: the logits, and each
  weighted layer's input and gate mask (None for the readout)."""
  a, inputs, masks = x, {}, {}
  for info in net.info:
    if not hasattr(info.layer, "lin"):
      a = L.apply_unweighted(info.layer, a, info.vectorized_input)
      continue
    inputs[info.name] = a
    a, masks[info.name] = L.weighted_forward(
      info.layer,
      variables["params"][info.name],
      variables["fixed"].get(info.name),
      a,
      net.num_components,
      info.first,
      info.readout,
    )
  return {"logits": a, "inputs": inputs, "masks": masks}


def _patches(x, k, stride, pad):
  """Numpy im2col with explicit loops: (N, H, W, C) -> (N, Ho, Wo, C, k, k)."""
  n, h, w, c = x.shape
  xp = np.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
  ho, wo = (h + 2 * pad - k) // stride + 1, (w + 2 * pad - k) // stride + 1
  out = np.zeros((n, ho, wo, c, k, k), x.dtype)
  for i in range(ho):
    for j in range(wo):
      window = xp[:, i * stride : i * stride + k, j * stride : j * stride + k, :]
      out[:, i, j] = window.transpose(0, 3, 1, 2)
  return out


def by_hand(net, variables, x, y):
  """GEVB's (vectorized nets) or DFA's (conventional nets) updates at ``x``, ``y``,
  written out by ``sums_by_hand``."""
  return sums_by_hand(net, variables, forward_trace(net, variables, x), y)


def sums_by_hand(net, variables, trace, y):
  """Rule updates written out with numpy loops over layers, examples and positions,
  from the forward pass ``trace`` (``forward_trace``).

  GEVB (Eq. 9, Appendix H): dW_ij = sum_examples G_i sum_mu a_{j mu} e_mu, summed over
  the positions sharing a weight; db_{i mu} = G_i e_mu. Layer 1 uses the one-hot
  vector inputs of Appendix B: dW_{i mu j} = G_i x_j e_mu. DFA (Eq. 5): the
  postsynaptic factor is G_i (B e)_i, presynaptic activity is used as is.
  The readout's update is the gradient in both rules. ``e`` is ``error_vector``.
  """
  e = error_vector(net, trace["logits"], y)
  params = jax.tree_util.tree_map(np.asarray, variables["params"])
  fixed = jax.tree_util.tree_map(np.asarray, variables["fixed"])
  factor = e if net.vectorized else np.ones((e.shape[0], 1), e.dtype)  # E[b, mu]
  updates = {}
  for info in net.weighted:
    layer, p = info.layer, params[info.name]
    a, mask = np.asarray(trace["inputs"][info.name]), trace["masks"][info.name]
    if info.readout:
      s = np.ones((e.shape[0], 1)) if net.vectorized else e
    elif net.vectorized:
      s = np.asarray(mask, np.float64)
    else:
      s = np.asarray(mask, np.float64) * (e @ fixed[info.name]["feedback"]).reshape(
        mask.shape
      )
    # Presynaptic signal per example: x itself (layer 1) or sum_mu a_mu E_mu.
    pre = a if info.first else np.einsum("bk...,bk->b...", a, factor)
    if layer.kind != "dense":
      pre = _patches(pre, layer.kernel, layer.stride, layer.padding)  # (B,Ho,Wo,C,k,k)
    gw = np.zeros(p["w"].shape)
    gb = np.zeros(p["b"].shape)
    for b in range(e.shape[0]):
      post = s[b]  # (*S_out, C_out)
      if info.first:  # Weight per component.
        post = post[..., None, :] * factor[b][:, None]  # (*S_out, K, C_out)
      if layer.kind == "dense":
        gw += np.multiply.outer(pre[b], post)
      elif layer.kind == "conv":  # Sum over shared positions.
        gw += np.einsum("hwcij,hw...->ijc...", pre[b], post)
      else:  # One weight per position.
        gw += np.einsum("hwcij,hw...->hwcij...", pre[b], post)
      gb_b = np.multiply.outer(factor[b], s[b])  # (K, *S_out, C_out)
      if layer.kind == "conv":
        gb_b = gb_b.sum(axis=(1, 2), keepdims=True)
      gb += gb_b.reshape(gb.shape)
    updates[info.name] = {"w": gw, "b": gb}
  return updates
