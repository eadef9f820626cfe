"""The paper's optimizer (Appendix I): Adam, then projection of the nonnegative leaves."""

import jax
import optax


def _by_leaf(params, fn):
  """``fn(layer name, leaf name)`` at every leaf of ``params``, in its containers
  (dicts, or the ``nnx.State`` of ``gevb_jax.nnx.Model``, whose path is the same)."""
  return jax.tree_util.tree_map_with_path(
    lambda path, _: fn(path[0].key, path[1].key), params
  )


def nonneg_mask(net, params):
  """True for the leaves kept >= 0: weights of layers l > 1 in nonnegative nets, and
  the learned backward kernels beside them (Kolen-Pollack), which get the same updates.

  Biases and the first layer's weights are never projected.
  """
  first = net.weighted[0].name
  return _by_leaf(
    params, lambda name, leaf: net.nonneg and leaf in ("w", "w_back") and name != first
  )


def _kernels(params):
  """True for the weights and backward kernels, False for the biases."""
  return _by_leaf(params, lambda name, leaf: leaf != "b")


def make_optimizer(net, learning_rate=3e-4, b1=0.9, b2=0.999, eps=1e-8, weight_decay=0.0):
  """``optax.chain(adam, clip-at-zero of the nonnegative weights)``.

  The clip is a projection applied after every step: an update that would take a
  nonnegative weight below zero sets it to exactly zero instead. ``weight_decay`` > 0
  makes it AdamW, decaying every weight and backward kernel (not the biases) by
  ``learning_rate * weight_decay`` per step; the paper's runs use none, Kolen-Pollack
  needs it.
  """
  if weight_decay:
    adam = optax.adamw(
      learning_rate, b1=b1, b2=b2, eps=eps, weight_decay=weight_decay, mask=_kernels
    )
  else:
    adam = optax.adam(learning_rate, b1=b1, b2=b2, eps=eps)
  return optax.chain(
    adam,
    optax.masked(
      optax.keep_params_nonnegative(), lambda params: nonneg_mask(net, params)
    ),
  )
