"""The paper's optimizer (Appendix I): Adam, then projection of the nonnegative leaves."""

import optax


def nonneg_mask(net, params):
  """True for the leaves kept >= 0: weights of layers l > 1 in nonnegative nets.

  Biases and the first layer's weights are never projected.
  """
  first = net.weighted[0].name
  return {
    name: {leaf: net.nonneg and leaf == "w" and name != first for leaf in p}
    for name, p in params.items()
  }


def make_optimizer(net, learning_rate=3e-4, b1=0.9, b2=0.999, eps=1e-8):
  """``optax.chain(adam, clip-at-zero of the nonnegative weights)``.

  The clip is a projection applied after every step: an update that would take a
  nonnegative weight below zero sets it to exactly zero instead.
  """
  return optax.chain(
    optax.adam(learning_rate, b1=b1, b2=b2, eps=eps),
    optax.masked(
      optax.keep_params_nonnegative(), lambda params: nonneg_mask(net, params)
    ),
  )
