"""The learning rules against independent references (DESIGN.md, issue 2 item 8)."""

import dataclasses

import chex
import hypothesis
import hypothesis.strategies as st
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gevb_jax
from gevb_jax import layers as L
from gevb_jax import rules
from tests import references

# Small widths keep every architecture fast; shapes: (1-channel -> Table 3, 3 -> Table 4).
WIDTHS = {
  ("fc", 1): (12, 8),
  ("conv", 1): (6, 4, 16),
  ("lc", 1): (4, 4, 16),
  ("fc", 3): (12, 8, 8),
  ("conv", 3): (6, 4, 4, 16),
  ("lc", 3): (4, 4, 4, 8),
}


def _net(arch, channels=1, vectorized=True, nonneg=True, num_classes=5, code="onehot"):
  return gevb_jax.make_network(
    arch,
    input_shape=(8, 8, channels),
    num_classes=num_classes,
    vectorized=vectorized,
    nonneg=nonneg,
    widths=WIDTHS[arch, channels],
    output_code=code,
  )


@pytest.mark.parametrize("arch", gevb_jax.ARCHS)
@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("nonneg", [True, False])
def test_bp_equals_autodiff_of_the_vectorized_forward(arch, channels, nonneg):
  net = _net(arch, channels, nonneg=nonneg)
  variables = net.init(jax.random.key(0))
  x, y = references.random_batch(net)
  loss, updates = gevb_jax.loss_and_updates(net, variables, x, y, "bp")
  reference = references.autodiff(net, variables, x, y)
  chex.assert_trees_all_close(updates, reference, rtol=1e-5, atol=1e-7)
  assert np.isclose(loss, gevb_jax.cross_entropy(net.apply(variables, x), y))


@pytest.mark.parametrize("arch", gevb_jax.ARCHS)
@pytest.mark.parametrize("nonneg", [True, False])
@pytest.mark.parametrize("rule", ["gevb", "dfa"])
def test_gevb_and_dfa_equal_their_equations_written_by_hand(arch, nonneg, rule):
  """GEVB (Eq. 9) in VNNs; DFA, (B e * mask) outer a (Eq. 5), in conventional nets."""
  net = _net(arch, vectorized=rule == "gevb", nonneg=nonneg)
  variables = net.init(jax.random.key(2))
  x, y = references.random_batch(net, batch=3)
  _, updates = gevb_jax.loss_and_updates(net, variables, x, y, rule)
  expected = references.by_hand(net, variables, x, y)
  # float32 sums of up to ~600 terms against numpy's float64: ~1e-5 relative.
  chex.assert_trees_all_close(updates, expected, rtol=1e-4, atol=1e-6)
  # The readout's update is its gradient.
  grads = references.autodiff(net, variables, x, y)
  chex.assert_trees_all_close(updates["readout"], grads["readout"], rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("arch", ["conv", "lc"])
@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("nonneg", [True, False])
@pytest.mark.parametrize("rule", ["gevb", "bp"])
def test_vnn_conv_and_lc_rules_with_the_fused_first_block_off(
  monkeypatch, arch, channels, nonneg, rule
):
  """The path a GPU runs, and a CPU for a first kernel too large to fuse: the first
  layer, its gate and its pooling one after the other (no per-example scan), and conv
  gradients as JAX's own transposed convolutions. GEVB against Eq. 9 by hand, BP
  against autodiff, at both input shapes of Tables 3-4 (1 and 3 channels)."""
  variables = _net(arch, channels, nonneg=nonneg).init(jax.random.key(2))
  x, y = references.random_batch(_net(arch, channels), batch=3)
  if L.tuned_for_cpu():  # On a CPU the block is fused...
    fused = _net(arch, channels, nonneg=nonneg)
    assert fused.info[0].fused_pool is not None
    assert "scan" in str(jax.make_jaxpr(fused.apply)(variables, x))
  monkeypatch.setattr(L, "tuned_for_cpu", lambda: False)
  net = _net(arch, channels, nonneg=nonneg)
  assert net.info[0].fused_pool is None  # ...and here it is not.
  assert "scan" not in str(jax.make_jaxpr(net.apply)(variables, x))
  _, updates = gevb_jax.loss_and_updates(net, variables, x, y, rule)
  if rule == "bp":
    expected = references.autodiff(net, variables, x, y)
    chex.assert_trees_all_close(updates, expected, rtol=1e-5, atol=1e-7)
  else:
    expected = references.by_hand(net, variables, x, y)
    # float32 sums of up to ~600 terms against numpy's float64: ~1e-5 relative.
    chex.assert_trees_all_close(updates, expected, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize(
  "vectorized,rule", [(True, "gevb"), (True, "bp"), (False, "dfa"), (False, "fa")]
)
def test_binary_output_code_updates(vectorized, rule):
  """K = ceil(log2 C) outputs; e = sigmoid(z) - bits: GEVB and DFA broadcast it (their
  equations by hand), BP is the gradient of the K sigmoid cross-entropies, and FA
  sends it back through its kernels. The code only changes the readout and e, which
  every architecture shares: FC nets."""
  net = _net("fc", vectorized=vectorized, num_classes=10, code="binary")
  assert net.num_outputs == 4 and net.num_components == (4 if vectorized else 1)
  if rule == "fa":
    net = dataclasses.replace(net, backward_kernels="fixed")
  variables = net.init(jax.random.key(2))
  x, y = references.random_batch(net, batch=3)
  _, updates = gevb_jax.loss_and_updates(net, variables, x, y, rule)
  grads = references.autodiff(net, variables, x, y)
  if rule in ("gevb", "dfa"):
    expected = references.by_hand(net, variables, x, y)
  elif rule == "fa":
    kernels = {i.name: variables["fixed"][i.name]["w_back"] for i in net.weighted[1:]}
    expected = _layerwise_reference(net, variables, x, y, kernels)
  else:
    expected = grads
  chex.assert_trees_all_close(updates, expected, rtol=1e-4, atol=1e-6)
  chex.assert_trees_all_close(updates["readout"], grads["readout"], rtol=1e-5, atol=1e-7)


@hypothesis.settings(deadline=None, max_examples=8)
@hypothesis.given(
  seed=st.integers(0, 2**16),
  n1=st.sampled_from([4, 8, 16]),
  n2=st.sampled_from([4, 8, 16]),
  classes=st.integers(2, 6),
)
def test_single_example_gradient_sign_matches_gevb_in_nonneg_fc_vnn(
  seed, n1, n2, classes
):
  net = gevb_jax.make_network(
    "fc",
    input_shape=(4, 4, 1),
    num_classes=classes,
    vectorized=True,
    nonneg=True,
    widths=(n1, n2),
  )
  variables = net.init(jax.random.key(seed))
  x, y = references.random_batch(net, batch=1, seed=seed + 1)
  _, grads = gevb_jax.loss_and_updates(net, variables, x, y, "bp")
  _, gevb = gevb_jax.loss_and_updates(net, variables, x, y, "gevb")
  for name in grads:
    for leaf in ("w", "b"):
      g, u = np.asarray(grads[name][leaf]), np.asarray(gevb[name][leaf])
      nonzero = g != 0
      assert np.all(np.sign(g[nonzero]) == np.sign(u[nonzero])), (name, leaf)
  chex.assert_trees_all_close(gevb["readout"], grads["readout"], rtol=1e-6)


def _layerwise_reference(net, variables, x, y, kernels):
  """Plain autodiff of a forward pass whose every weighted layer past the first takes
  its input-gradient through ``kernels[name]`` instead of its weights: the value is
  ``lin(w, a)``, the weights' gradient comes through ``lin(w, stop_gradient(a))`` and
  the signal to the layer below through ``lin(kernel, a) - stop_gradient(...)``."""

  def loss(params):
    a = x
    for info in net.info:
      if not hasattr(info.layer, "lin"):
        a = L.apply_unweighted(info.layer, a, info.vectorized_input)
        continue
      p = params[info.name]
      h = L.linear(info.layer, p["w"], jax.lax.stop_gradient(a), 1, info.first)
      if not info.first:
        through = L.linear(info.layer, kernels[info.name], a, 1, False)
        h = h + through - jax.lax.stop_gradient(through)
      h = h + p["b"]
      if info.readout:
        return net.loss(h.reshape(h.shape[0], -1), y)
      a, _ = L.gate(h, variables["fixed"][info.name]["t"])
    raise AssertionError("no readout")

  return jax.grad(loss)(variables["params"])


# Every rule on every architecture, each rule on both signs of weights.
@pytest.mark.parametrize(
  "rule,arch,nonneg",
  [
    (rule, arch, (i + j) % 2 == 0)
    for i, rule in enumerate(("fa", "kp", "sign"))
    for j, arch in enumerate(gevb_jax.ARCHS)
  ],
)
def test_fa_kp_and_sign_equal_backprop_through_their_kernels(rule, arch, nonneg):
  """Each weighted layer's signal goes back through B (FA: fixed and random; KP:
  learned; sign symmetry: sign(W)) in place of W; the updates are then BP's formula
  with that signal, and KP's kernel gets its layer's weight update."""
  net = gevb_jax.make_network(
    arch,
    input_shape=(8, 8, 1),
    num_classes=5,
    vectorized=False,
    nonneg=nonneg,
    widths=WIDTHS[arch, 1],
    backward_kernels=rules.backward_kernels(rule),
  )
  variables = net.init(jax.random.key(2))
  x, y = references.random_batch(net, batch=3)
  _, updates = gevb_jax.loss_and_updates(net, variables, x, y, rule)
  source = {"fa": variables["fixed"], "kp": variables["params"]}.get(rule)
  kernels = {
    info.name: jnp.sign(variables["params"][info.name]["w"])
    if rule == "sign"
    else source[info.name]["w_back"]
    for info in net.weighted[1:]
  }
  expected = _layerwise_reference(net, variables, x, y, kernels)
  if rule == "kp":
    for name in kernels:
      np.testing.assert_array_equal(updates[name]["w_back"], updates[name]["w"])
      expected[name]["w_back"] = expected[name]["w"]
  chex.assert_trees_all_close(updates, expected, rtol=1e-4, atol=1e-6)
  # The readout's update is its gradient, and the rule is not BP below it.
  grads = references.autodiff(net, variables, x, y)
  for leaf in ("w", "b"):
    np.testing.assert_allclose(
      updates["readout"][leaf], grads["readout"][leaf], rtol=1e-5, atol=1e-7
    )
  first = net.weighted[0].name
  assert not np.allclose(updates[first]["w"], grads[first]["w"])


def test_rule_that_does_not_fit_the_network_is_refused():
  vnn = _net("fc")
  conventional = _net("fc", vectorized=False)
  x, y = references.random_batch(vnn)
  with pytest.raises(ValueError, match=r"'dfa'.*valid rules: gevb, bp"):
    gevb_jax.loss_and_updates(vnn, vnn.init(jax.random.key(0)), x, y, "dfa")
  with pytest.raises(ValueError, match=r"'gevb'.*valid rules: dfa, bp"):
    gevb_jax.loss_and_updates(
      conventional, conventional.init(jax.random.key(0)), x, y, "gevb"
    )


def test_gevb_update_past_layer_one_is_one_kth_of_the_forward():
  """Layers past the first never form a K-sized backward signal: the jaxpr of the
  update's backward holds no dot_general with the K-merged batch B*K."""
  net = gevb_jax.make_network(
    "fc",
    input_shape=(8, 8, 1),
    num_classes=10,
    vectorized=True,
    nonneg=True,
    widths=(16, 12),
  )
  variables = net.init(jax.random.key(0))
  x, y = references.random_batch(net, batch=7)
  jaxpr = jax.make_jaxpr(lambda v: gevb_jax.loss_and_updates(net, v, x, y, "gevb"))(
    variables
  )
  merged = [
    eqn
    for eqn in _all_eqns(jaxpr.jaxpr)
    if eqn.primitive.name == "dot_general"
    and any(7 * 10 in v.aval.shape for v in eqn.invars)
  ]
  # Forward only: layer 2 and the readout each run once on the merged batch; autodiff
  # would add their weight and input gradients on it too.
  assert len(merged) == 2


def _all_eqns(jaxpr):
  for eqn in jaxpr.eqns:
    yield eqn
    for value in eqn.params.values():
      for sub in value if isinstance(value, (tuple, list)) else (value,):
        sub = getattr(sub, "jaxpr", sub)
        if hasattr(sub, "eqns"):
          yield from _all_eqns(sub)
