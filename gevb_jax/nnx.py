"""A network and its learning rule as a Flax NNX module, for training loops in NNX.

``Model(net, rule=..., rngs=nnx.Rngs(seed))`` holds ``net.init``'s variables, one
attribute per weighted layer: its weights and biases as ``nnx.Param``s, what it draws
once and never trains (gating vectors, DFA feedback, FA's backward kernels) as
``Fixed``. The module's state split by type is then the native ``{"params",
"fixed"}`` layout, so ``nnx.grad`` of ``model.loss`` is shaped like
``variables["params"]`` and is ``rule``'s update (``rules.logits_with_rule``), and
``nnx.Optimizer(model, gevb_jax.make_optimizer(net), wrt=nnx.Param)`` steps as the
native trainer does: Adam, then the nonnegativity projection.
"""

from flax import nnx

from gevb_jax import rules


class Fixed(nnx.Variable):
  """A variable drawn once and never trained (``Network.init``'s ``fixed``); not an
  ``nnx.Param``, so ``nnx.grad`` and ``nnx.Optimizer(..., wrt=nnx.Param)`` leave it."""


class Model(nnx.Module):
  """``net`` trained by ``rule``.

  Args:
    net: a ``models.Network`` (``gevb_jax.make_network``); Kolen-Pollack and
      feedback alignment need its ``backward_kernels`` (``rules.backward_kernels``).
    rule: a rule for the net's kind (``grid.RULES``), checked here.
    rngs: ``nnx.Rngs``; the variables are ``net.init(rngs.params())``.
  """

  def __init__(self, net, *, rule, rngs):
    rules.check_rule(net, rule)
    self.net = net
    self.rule = rule
    variables = net.init(rngs.params())
    for name, params in variables["params"].items():
      layer = {leaf: nnx.Param(value) for leaf, value in params.items()}
      fixed = variables["fixed"].get(name, {})
      layer.update({leaf: Fixed(value) for leaf, value in fixed.items()})
      setattr(self, name, nnx.data(layer))

  def variables(self):
    """The native variables: ``{"params": {layer: {w, b[, w_back]}}, "fixed":
    {layer: {t[, feedback][, w_back]}}}`` of arrays (``Network.init``)."""
    return {
      "params": nnx.to_pure_dict(nnx.state(self, nnx.Param)),
      "fixed": nnx.to_pure_dict(nnx.state(self, Fixed)),
    }

  def __call__(self, x):
    """The logits ``(B, num_outputs)`` of images ``x`` ``(B, H, W, C)``."""
    return self.net.apply(self.variables(), x)

  def loss(self, x, labels):
    """The net's mean loss (``Network.loss``), its gradient in the params the rule's
    update (Eq. 9 for GEVB, Eq. 5 for DFA, Eqs. 11-14 for BP)."""
    logits = rules.logits_with_rule(self.net, self.variables(), x, self.rule)
    return self.net.loss(logits, labels)
