"""gevb_jax.nnx: a network and its rule as a Flax NNX module, stepped by nnx.Optimizer
as the native trainer steps it."""

import chex
import jax
import numpy as np
import optax
import pytest
from flax import nnx

import gevb_jax
from gevb_jax import nnx as gevb_nnx
from gevb_jax import optim
from tests import references

WIDTHS = {"fc": (12, 8), "conv": (6, 4, 16), "lc": (4, 4, 16)}
# Large enough that the step clips some nonnegative weights at zero.
LEARNING_RATE = 0.05


@jax.jit(static_argnums=(0, 1, 2))
def _native_step(net, tx, rule, variables, x, y):
  """One step as the trainer takes it (train._step): the rule's updates, Adam, the
  projection."""
  params = variables["params"]
  loss, updates = gevb_jax.loss_and_updates(net, variables, x, y, rule)
  steps, _ = tx.update(updates, tx.init(params), params)
  return net.apply(variables, x), loss, updates, optax.apply_updates(params, steps)


@nnx.jit
def _nnx_step(model, optimizer, x, y):
  """The model's logits, then a step of the NNX loop in README.md."""
  logits = model(x)
  loss, grads = nnx.value_and_grad(lambda m: m.loss(x, y))(model)
  optimizer.update(model, grads)
  return logits, loss, grads


@pytest.mark.parametrize("arch", gevb_jax.ARCHS)
@pytest.mark.parametrize(
  "vectorized, rule", [(True, "gevb"), (True, "bp"), (False, "dfa")]
)
def test_an_nnx_optimizer_step_is_the_native_step(arch, vectorized, rule):
  net = gevb_jax.make_network(
    arch,
    input_shape=(8, 8, 1),
    num_classes=5,
    vectorized=vectorized,
    nonneg=True,
    widths=WIDTHS[arch],
  )
  model = gevb_nnx.Model(net, rule=rule, rngs=nnx.Rngs(3))
  variables = model.variables()
  chex.assert_trees_all_equal(variables, net.init(nnx.Rngs(3).params()))
  x, y = references.random_batch(net, batch=4)
  tx = gevb_jax.make_optimizer(net, learning_rate=LEARNING_RATE)
  optimizer = nnx.Optimizer(model, tx, wrt=nnx.Param)
  logits, loss, grads = _nnx_step(model, optimizer, x, y)
  native_logits, native_loss, updates, params = _native_step(
    net, tx, rule, variables, x, y
  )

  # model(x) is the net's logits, nnx.grad of model.loss the rule's update; the step
  # lands where the native one does, and the fixed variables stay.
  np.testing.assert_allclose(logits, native_logits, rtol=1e-6, atol=1e-6)
  np.testing.assert_allclose(loss, native_loss, rtol=1e-6)
  chex.assert_trees_all_close(nnx.to_pure_dict(grads), updates, rtol=1e-6, atol=1e-6)
  stepped = model.variables()
  chex.assert_trees_all_close(stepped["params"], params, rtol=1e-6, atol=1e-6)
  chex.assert_trees_all_equal(stepped["fixed"], variables["fixed"])
  # The projection ran: nonnegative leaves that stepped below zero sit at zero.
  mask = optim.nonneg_mask(net, params)
  kept = [
    np.asarray(p) for p, m in zip(jax.tree.leaves(params), jax.tree.leaves(mask)) if m
  ]
  assert all((p >= 0).all() for p in kept) and any((p == 0).any() for p in kept)
  assert not np.array_equal(
    stepped["params"]["readout"]["w"], variables["params"]["readout"]["w"]
  )


def test_a_rule_that_does_not_fit_the_network_is_refused():
  net = gevb_jax.make_network(
    "fc", input_shape=(8, 8, 1), num_classes=5, vectorized=True, nonneg=True
  )
  with pytest.raises(ValueError, match=r"'dfa'.*valid rules: gevb, bp"):
    gevb_nnx.Model(net, rule="dfa", rngs=nnx.Rngs(0))
