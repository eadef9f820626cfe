"""The paper's optimizer (Appendix I): Adam, then clipping the l > 1 weights at zero."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import gevb_jax
from gevb_jax import optim

SMALL = {"fc": (16, 8), "conv": (4, 4, 8), "lc": (4, 4, 8)}
FIRST = {"fc": "dense_0", "conv": "conv_0", "lc": "lc_0"}


def _net(arch, vectorized=True, nonneg=True):
  return gevb_jax.make_network(
    arch,
    input_shape=(8, 8, 1),
    num_classes=4,
    vectorized=vectorized,
    nonneg=nonneg,
    widths=SMALL[arch],
  )


def _param_shapes(net):
  return jax.eval_shape(net.init, jax.random.key(0))["params"]


@pytest.mark.parametrize("arch", gevb_jax.ARCHS)
@pytest.mark.parametrize("vectorized", [True, False])
@pytest.mark.parametrize("nonneg", [True, False])
def test_nonneg_mask_marks_the_weights_of_layers_past_the_first(arch, vectorized, nonneg):
  net = _net(arch, vectorized, nonneg)
  params = _param_shapes(net)
  mask = optim.nonneg_mask(net, params)
  names = [info.name for info in net.weighted]
  assert names[0] == FIRST[arch] and names[-1] == "readout"
  assert len(names) == len(SMALL[arch]) + 1
  expected = {name: {"w": nonneg and name != FIRST[arch], "b": False} for name in names}
  assert mask == expected
  # The mask is a prefix of the params tree, as optax.masked needs.
  assert jax.tree_util.tree_structure(mask) == jax.tree_util.tree_structure(params)


def _start(net, seed=0):
  """Random parameters; the projected leaves start >= 0, half of them exactly 0."""
  rng = np.random.default_rng(seed)
  params = jax.tree_util.tree_map(
    lambda s: rng.standard_normal(s.shape).astype(np.float32), _param_shapes(net)
  )
  mask = optim.nonneg_mask(net, params)
  return jax.tree_util.tree_map(
    lambda p, m: jnp.asarray(np.maximum(p, 0) if m else p), params, mask
  )


def _leaves(tree, mask, projected):
  flat, _ = jax.tree_util.tree_flatten_with_path(tree)
  marks = jax.tree_util.tree_leaves(mask)
  return {
    jax.tree_util.keystr(path): np.asarray(leaf)
    for (path, leaf), m in zip(flat, marks)
    if m == projected
  }


@pytest.mark.parametrize("arch,nonneg", [("fc", True), ("conv", True), ("fc", False)])
def test_projection_after_adam(arch, nonneg):
  net = _net(arch, nonneg=nonneg)
  params = _start(net)
  mask = optim.nonneg_mask(net, params)
  assert any(jax.tree_util.tree_leaves(mask)) == nonneg
  rng = np.random.default_rng(1)
  opt = gevb_jax.make_optimizer(net)
  state = opt.init(params)
  plain = optax.adam(3e-4, 0.9, 0.999, 1e-8)  # Appendix I's Adam, no projection.
  plain_params, plain_state = params, plain.init(params)
  clipped = 0
  for _ in range(8):
    # Gradients biased positive drive weights down by ~lr per step: the weights near
    # zero (half of the projected ones start at exactly 0) are pushed below it.
    grads = jax.tree_util.tree_map(
      lambda p: jnp.asarray(rng.standard_normal(p.shape) + 1.0, jnp.float32), params
    )
    # One Adam step from the projected optimizer's own state and parameters.
    ref_updates, _ = plain.update(grads, state[0], params)
    reference = optax.apply_updates(params, ref_updates)
    updates, state = opt.update(grads, state, params)
    params = optax.apply_updates(params, updates)
    for key, leaf in _leaves(params, mask, True).items():
      before = _leaves(reference, mask, True)[key]
      np.testing.assert_array_equal(leaf, np.maximum(before, 0))
      clipped += int((before < 0).sum())
    for key, leaf in _leaves(params, mask, False).items():
      np.testing.assert_array_equal(leaf, _leaves(reference, mask, False)[key])
    # Plain Adam from the start, on the same gradients.
    plain_updates, plain_state = plain.update(grads, plain_state, plain_params)
    plain_params = optax.apply_updates(plain_params, plain_updates)

  # Layer 1's weights and every bias follow plain Adam bit for bit.
  unprojected = _leaves(params, mask, False)
  names = [info.name for info in net.weighted]
  assert {f"['{n}']['b']" for n in names} | {f"['{FIRST[arch]}']['w']"} <= set(
    unprojected
  )
  for key, leaf in _leaves(plain_params, mask, False).items():
    np.testing.assert_array_equal(unprojected[key], leaf)
  if not nonneg:
    assert len(unprojected) == 2 * len(names)  # Nothing projected: all equal plain Adam.
    assert any(
      (leaf < 0).any() for key, leaf in unprojected.items() if FIRST[arch] not in key
    )
    return
  assert clipped > 0  # The projection was exercised, not just the identity.
  projected = _leaves(params, mask, True)
  assert set(projected) == {f"['{n}']['w']" for n in names[1:]}
  for key, leaf in projected.items():
    assert (leaf >= 0).all(), key
    assert (leaf == 0).any(), key
    # Without the projection Adam would have made some of them negative.
    assert (_leaves(plain_params, mask, True)[key] < 0).any(), key


@pytest.mark.parametrize("nonneg", [False, True])
def test_kolen_pollack_kernels_get_the_weights_updates_and_decay_toward_them(nonneg):
  """Same update and same decoupled decay on W and B: without the nonneg clip,
  W - B shrinks by exactly (1 - lr * decay) per step; the biases do not decay."""
  net = gevb_jax.make_network(
    "fc",
    input_shape=(8, 8, 1),
    num_classes=4,
    vectorized=False,
    nonneg=nonneg,
    widths=SMALL["fc"],
    backward_kernels="learned",
  )
  lr, decay, steps = 1e-2, 5.0, 6
  tx = gevb_jax.make_optimizer(net, learning_rate=lr, weight_decay=decay)
  params = net.init(jax.random.key(0))["params"]
  variables = net.init(jax.random.key(0))
  state = tx.init(params)
  x = jax.random.uniform(jax.random.key(1), (8, 8, 8, 1), minval=-1.0, maxval=1.0)
  y = jnp.arange(8) % 4
  gap0 = {n: params[n]["w"] - params[n]["w_back"] for n in ("dense_1", "readout")}

  @jax.jit
  def step(params, state):
    _, updates = gevb_jax.loss_and_updates(
      net, {**variables, "params": params}, x, y, "kp"
    )
    updates, state = tx.update(updates, state, params)
    return optax.apply_updates(params, updates), state

  for _ in range(steps):
    params, state = step(params, state)
  for name, gap in gap0.items():
    now = params[name]["w"] - params[name]["w_back"]
    if nonneg:  # The clip at zero only ever closes the gap.
      assert np.all(np.abs(now) <= np.abs(gap) + 1e-6)
    else:
      np.testing.assert_allclose(
        now, gap * (1 - lr * decay) ** steps, rtol=1e-4, atol=1e-6
      )
  assert "w_back" not in params["dense_0"]
