"""Alignment at initialisation (Section 4, Appendices E-F, Fig. 2)."""

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gevb_jax
from gevb_jax import metrics, rules

INPUT = (8, 8, 1)  # Digits-shaped.
CLASSES = 10
WIDTHS = (64, 256, 1024)


@functools.cache
def _net(arch, widths, vectorized=True, nonneg=True):
  net = gevb_jax.make_network(
    arch,
    input_shape=INPUT,
    num_classes=CLASSES,
    vectorized=vectorized,
    nonneg=nonneg,
    widths=widths,
  )
  # The init's logic does not depend on the PRNG implementation; "rbg" keys compile
  # several times faster than threefry on CPU.
  return net, net.init(jax.random.key(3, impl="rbg"))


def _batch(batch=64, seed=0):
  rng = np.random.default_rng(seed)
  x = jnp.asarray(rng.uniform(-1.0, 1.0, (batch, *INPUT)), jnp.float32)
  return x, jnp.asarray(rng.integers(0, CLASSES, batch))


@functools.cache
def _fc_alignment(n):
  net, variables = _net("fc", (n, n))
  x, y = _batch()
  return metrics.alignment(net, variables, x, y, "gevb"), metrics.eq15_prediction(
    net, variables
  )


@pytest.mark.parametrize("n", WIDTHS)
def test_last_hidden_layer_angle_is_eq15_for_rectified_gaussian_readout(n):
  angles, predicted = _fc_alignment(n)
  assert list(angles) == ["dense_0", "dense_1"] == list(predicted)
  theta = angles["dense_1"]
  # ON/OFF readout weights: half exactly 0, half |N(0, s^2)|, i.e. rectified Gaussians:
  # sigma / mu = sqrt(pi - 1), theta = 55.7 deg; the paper observes ~45 deg.
  assert math.degrees(math.atan(math.sqrt(math.pi - 1))) == pytest.approx(55.7, abs=0.05)
  assert 45 <= theta <= 65
  assert abs(theta - metrics.angle_from_r(predicted["dense_1"])) < 2
  # delta_hat^{L-1} is the readout weight vector itself for every example (the readout
  # has no gate), so tan(theta) is its empirical sigma / mu; float32 arccos near 56 deg
  # is good to ~1e-6 relative.
  _, variables = _net("fc", (n, n))
  w = np.asarray(variables["params"]["readout"]["w"], np.float64).ravel()
  assert math.tan(math.radians(theta)) == pytest.approx(w.std() / w.mean(), rel=1e-4)


def test_earlier_layer_angles_are_small_and_shrink_with_width_as_eq15_predicts():
  earlier = []
  for n in WIDTHS:
    angles, predicted = _fc_alignment(n)
    assert 0 < angles["dense_0"] < angles["dense_1"] / 2
    # Eq. 15 is a ratio of expectations over the random weights and gates; the
    # empirical r fluctuates around it by O(1/sqrt(n)), 12 % at n = 64: 25 % is 2 s.d.
    # there and more at larger n.
    r = math.tan(math.radians(angles["dense_0"]))
    assert r == pytest.approx(predicted["dense_0"], rel=0.25), n
    earlier.append(angles["dense_0"])
  assert earlier[0] > earlier[1] > earlier[2], earlier
  # Eq. 15 scales r^{L-2} as 1/sqrt(n): widening 16x shrinks tan(theta) ~4x.
  ratio = math.tan(math.radians(earlier[0])) / math.tan(math.radians(earlier[2]))
  assert 2.5 < ratio < 6, ratio


def _angles_from_delta_hat(net, variables, x):
  """Per-example arctan(r_b) of Eq. 24 from delta_hat, averaged over the batch."""
  out = {}
  for name, d in metrics.delta_hat(net, variables, x).items():
    d = np.asarray(d, np.float64)
    valid = np.linalg.norm(d, axis=-1) > 0
    assert valid.any()
    assert (d >= 0).all()  # Nonnegative weights and gates (Section 3.3).
    r = d[valid].std(axis=-1) / d[valid].mean(axis=-1)
    out[name] = (np.degrees(np.arctan(r)).mean(), r.mean())
  return out


def test_alignment_is_the_batch_mean_of_arctan_r():
  net, variables = _net("fc", (256, 256))
  x, y = _batch()
  angles = metrics.alignment(net, variables, x, y, "gevb")
  by_hand = _angles_from_delta_hat(net, variables, x)
  relative_std = metrics.relative_std(net, variables, x)
  for name, (theta, mean_r) in by_hand.items():
    # float32 cosine good to ~1e-6 relative; d(theta) = d(cos) / sin(theta) with
    # theta > 5 deg here: < 1e-3 deg.
    assert angles[name] == pytest.approx(theta, abs=1e-3)
    assert relative_std[name] == pytest.approx(mean_r, rel=1e-4)
    # theta is averaged over examples, r too: arctan is concave, so by Jensen
    # tan(mean theta) <= mean r, equal only when every example has the same r (as in
    # the last hidden layer, where delta_hat is the readout weight: hence the float32
    # slack of 1e-5).
    assert math.tan(math.radians(angles[name])) <= relative_std[name] * (1 + 1e-5)
  # With a single example the two agree exactly (Eq. 24).
  one = metrics.alignment(net, variables, x[:1], y[:1], "gevb")
  for name, r in metrics.relative_std(net, variables, x[:1]).items():
    assert math.tan(math.radians(one[name])) == pytest.approx(r, rel=1e-4)


def test_dfa_at_init_is_near_orthogonal_to_the_gradient():
  net, variables = _net("fc", (256, 256), vectorized=False)
  x, y = _batch()
  angles = metrics.alignment(net, variables, x, y, "dfa")
  assert list(angles) == ["dense_0", "dense_1"]
  for name, theta in angles.items():
    assert 75 < theta < 105, (name, theta)
  assert metrics.alignment(net, variables, x, y, "bp") == {}


@pytest.mark.parametrize("arch,widths", [("conv", (8, 4, 32)), ("lc", (4, 4, 32))])
def test_conv_and_lc_alignment_has_one_angle_per_hidden_layer(arch, widths):
  net, variables = _net(arch, widths)
  x, y = _batch(batch=16)
  angles = metrics.alignment(net, variables, x, y, "gevb")
  assert (
    list(angles)
    == [info.name for info in net.hidden]
    == [f"{arch}_0", f"{arch}_1", "dense_0"]
  )
  for name, theta in angles.items():
    assert math.isfinite(theta) and 0 <= theta <= 90, (name, theta)
  assert metrics.alignment(net, variables, x, y, "bp") == {}


@pytest.mark.parametrize("vectorized,rule", [(True, "gevb"), (False, "dfa")])
def test_alignment_in_chunks_equals_all_at_once(vectorized, rule):
  """Chunks of 16 (the last one 8) average the same examples as one batch of 40."""
  net, variables = _net("conv", (8, 4, 32), vectorized=vectorized)
  x, labels = _batch(batch=40)
  whole = metrics.alignment(net, variables, x, labels, rule)
  chunked = metrics.alignment(net, variables, x, labels, rule, batch_size=16)
  assert whole.keys() == chunked.keys()
  for name in whole:
    assert chunked[name] == pytest.approx(whole[name], abs=1e-3)
  # Not a mean of chunk means: the first 16 examples alone give other angles.
  first = metrics.alignment(net, variables, x[:16], labels[:16], rule)
  assert any(abs(first[n] - whole[n]) > 1e-2 for n in whole)
  if vectorized:
    r_whole = metrics.relative_std(net, variables, x)
    r_chunked = metrics.relative_std(net, variables, x, batch_size=16)
    for name in r_whole:
      assert r_chunked[name] == pytest.approx(r_whole[name], rel=1e-4)


def test_no_examples_measure_nothing():
  net, variables = _net("fc", (8, 8))
  x, labels = _batch(batch=4)
  assert metrics.alignment(net, variables, x[:0], labels[:0], "gevb", batch_size=2) == {}
  assert metrics.relative_std(net, variables, x[:0]) == {}


@pytest.mark.parametrize("rule", ["fa", "sign"])
def test_layerwise_rules_are_measured_against_what_their_kernels_send_back(rule):
  """Last hidden layer: FA sends ``e`` back through its fixed kernel, sign symmetry
  through the readout's signs; the angle is the one to dL/da of that layer."""
  net = gevb_jax.make_network(
    "fc",
    input_shape=INPUT,
    num_classes=CLASSES,
    vectorized=False,
    nonneg=False,
    widths=(16, 12),
    backward_kernels=rules.backward_kernels(rule),
  )
  variables = net.init(jax.random.key(4))
  x, y = _batch(batch=8)
  logits = net.apply(variables, x)
  e = np.asarray(jax.nn.softmax(logits) - jax.nn.one_hot(y, CLASSES))
  readout = variables["params"]["readout"]["w"]  # (n, C)
  kernel = variables["fixed"]["readout"]["w_back"] if rule == "fa" else np.sign(readout)
  sent = e @ np.asarray(kernel).T  # (B, n)

  def total_loss(logits):
    return -jnp.sum(jax.nn.one_hot(y, CLASSES) * jax.nn.log_softmax(logits))

  last = net.hidden[-1].name
  grads = metrics._tap_gradients(net, variables, x, total_loss)
  true = np.asarray(metrics._first_component(net, grads)[last])  # dL/da, (B, n)
  cos = np.sum(sent * true, -1) / (
    np.linalg.norm(sent, axis=-1) * np.linalg.norm(true, axis=-1)
  )
  expected = np.degrees(np.arccos(np.clip(cos, -1, 1))).mean()
  got = metrics.alignment(net, variables, x, y, rule)
  assert got[last] == pytest.approx(expected, abs=1e-3)
  assert set(got) == {info.name for info in net.hidden}


def test_sign_agreement_counts_matching_update_signs():
  """Against a count by hand; 1 for every layer of a nonneg VNN on one example (GEVB's
  single-example sign theorem), below 1 for DFA."""
  x, y = _batch(batch=8)
  vnn, variables = _net("fc", (16, 12))
  one = metrics.sign_agreement(vnn, variables, x[:1], y[:1], "gevb")
  assert one == {info.name: 1.0 for info in vnn.hidden}
  conventional, variables = _net("fc", (16, 12), vectorized=False)
  got = metrics.sign_agreement(conventional, variables, x, y, "dfa")
  _, updates = gevb_jax.loss_and_updates(conventional, variables, x, y, "dfa")
  _, grads = gevb_jax.loss_and_updates(conventional, variables, x, y, "bp")
  for info in conventional.hidden:
    u, g = np.asarray(updates[info.name]["w"]), np.asarray(grads[info.name]["w"])
    by_hand = np.mean(np.sign(u[g != 0]) == np.sign(g[g != 0]))
    assert got[info.name] == pytest.approx(by_hand)
  assert min(got.values()) < 1.0
  assert metrics.sign_agreement(conventional, variables, x, y, "bp") == {}
