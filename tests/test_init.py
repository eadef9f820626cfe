"""He and ON/OFF initialisation (Section 5, Eq. 16; DESIGN.md "Initialisation")."""

import functools
import math

import chex
import hypothesis
import hypothesis.strategies as st
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.optimize

import gevb_jax
from gevb_jax import init, models
from gevb_jax import layers as L

K = 5
INPUT = (8, 8, 1)
# Widths of the half-width mixed-sign nets; the nonnegative nets have twice these.
# Even halves are needed because every net pairs its units.
HALF = {"fc": (64, 32), "conv": (16, 8, 32), "lc": (8, 8, 32)}
PAIRS = [("fc", True), ("conv", True), ("lc", True), ("fc", False)]


@functools.cache
def _pair(arch, vectorized):
  """(half mixed-sign net, its variables, ON/OFF net of twice the width, its variables),
  both initialised from the same key."""
  half = gevb_jax.make_network(
    arch,
    input_shape=INPUT,
    num_classes=K,
    vectorized=vectorized,
    nonneg=False,
    widths=HALF[arch],
  )
  full = gevb_jax.make_network(
    arch,
    input_shape=INPUT,
    num_classes=K,
    vectorized=vectorized,
    nonneg=True,
    widths=tuple(2 * w for w in HALF[arch]),
  )
  # init's logic does not depend on the PRNG implementation; "rbg" keys compile several
  # times faster than threefry on CPU (the activation-scale test uses the default).
  key = jax.random.key(7, impl="rbg")
  return half, half.init(key), full, full.init(key)


def _inputs(batch=16, shape=INPUT, seed=0):
  rng = np.random.default_rng(seed)
  return jnp.asarray(rng.uniform(-1.0, 1.0, (batch, *shape)), jnp.float32)


def _hidden_activations(net, variables, x):
  """``{hidden layer name: activation (B, K, *S, C)}`` by walking the layers."""
  a, out = x, {}
  for info in net.info:
    if info.readout:
      break
    if hasattr(info.layer, "lin"):
      a, _ = L.weighted_forward(
        info.layer,
        variables["params"][info.name],
        variables["fixed"][info.name],
        a,
        net.num_components,
        info.first,
        False,
      )
      out[info.name] = a
    else:
      a = L.apply_unweighted(info.layer, a, info.vectorized_input)
  return out


def _take(w, axis, start):
  return np.take(w, np.arange(start, w.shape[axis], 2), axis=axis)


def _half_kernel(info, w):
  """``W~`` recovered from an ON/OFF kernel (Eq. 16, interleaved ON = even, OFF = odd)."""
  w = np.asarray(w)
  if info.first:
    return w[..., ::2]
  even, odd = _take(w, info.layer.in_axis, 0), _take(w, info.layer.in_axis, 1)
  return even[..., ::2] - odd[..., ::2]  # A single readout unit is an ON row alone.


def _close(actual, expected):
  """Same nonzero float32 products summed in a different order (the ON/OFF net adds
  exact zeros and regroups partial sums): the error is bounded by
  ``fan_in * eps * sum|terms|``, fan_in <= 288 here, i.e. ~1e-5 of the magnitude."""
  actual, expected = np.asarray(actual), np.asarray(expected)
  np.testing.assert_allclose(
    actual, expected, rtol=1e-5, atol=1e-5 * np.abs(expected).max()
  )


@pytest.mark.parametrize("arch,vectorized", PAIRS)
def test_on_off_net_contains_the_half_width_he_net(arch, vectorized):
  half, vh, full, vf = _pair(arch, vectorized)
  assert [i.name for i in half.weighted] == [i.name for i in full.weighted]
  for info in full.weighted:
    w = np.asarray(vf["params"][info.name]["w"])
    expected = np.asarray(vh["params"][info.name]["w"])
    # A conventional readout pairs its K = 5 outputs (2 pairs and an ON row), so its
    # W~ has 3 columns where the half net's readout has 5.
    if not (info.readout and not vectorized):
      np.testing.assert_array_equal(_half_kernel(info, w), expected)  # Bit for bit.
    # The rest of Eq. 16's block structure.
    if info.first:
      np.testing.assert_array_equal(w[..., 1::2], -w[..., ::2])
      continue
    even, odd = _take(w, info.layer.in_axis, 0), _take(w, info.layer.in_axis, 1)
    assert (w >= 0).all()
    pairs = w.shape[-1] // 2
    np.testing.assert_array_equal(odd[..., 1 : 2 * pairs : 2], even[..., : 2 * pairs : 2])
    np.testing.assert_array_equal(even[..., 1 : 2 * pairs : 2], odd[..., : 2 * pairs : 2])
    np.testing.assert_array_equal(np.minimum(even[..., ::2], odd[..., ::2]), 0)

  # With the ON cells' gating vectors, the half net computes what the ON net computes.
  fixed = {n: {**vh["fixed"][n], "t": vf["fixed"][n]["t"][:, ::2]} for n in vh["fixed"]}
  vh_on = {"params": vh["params"], "fixed": fixed}
  x = _inputs()
  logits = full.apply(vf, x)
  chex.assert_shape(logits, (16, K))
  if vectorized:
    _close(logits, half.apply(vh_on, x))
  else:  # Paired outputs: logit 2n + 1 is minus logit 2n.
    _close(logits[:, 1:4:2], -logits[:, 0:4:2])
  acts_full = _hidden_activations(full, vf, x)
  acts_half = _hidden_activations(half, vh_on, x)
  for name, a in acts_full.items():
    a = np.asarray(a)
    assert np.abs(a).max() > 0
    _close(a[..., ::2], acts_half[name])  # ON cells = the half net.
    _close(a[..., 1::2], -a[..., ::2])  # OFF cells carry minus their ON partner.
  # Without the substitution the gates differ and so do the outputs: the check above
  # depends on the gating vectors, it is not vacuous.
  if vectorized:
    assert not np.allclose(half.apply(vh, x), logits, rtol=1e-3)


@pytest.mark.parametrize("arch,vectorized", PAIRS)
def test_signs_biases_gating_vectors_and_feedback(arch, vectorized):
  half, vh, full, vf = _pair(arch, vectorized)
  for net, variables in ((half, vh), (full, vf)):
    for info in net.weighted:
      w = np.asarray(variables["params"][info.name]["w"])
      np.testing.assert_array_equal(variables["params"][info.name]["b"], 0)
      if info.first or not net.nonneg:
        assert (w < 0).any() and (w > 0).any()  # Mixed-sign.
      else:
        assert (w >= 0).all() and (w > 0).any()
    for info in net.hidden:
      fixed = variables["fixed"][info.name]
      t = np.asarray(fixed["t"])
      chex.assert_shape(t, (net.num_components, info.out_shape[-1]))
      assert set(np.unique(t)) <= {-1.0, 1.0}
      np.testing.assert_array_equal(t[:, 1::2], -t[:, ::2])  # ON/OFF pairs.
      if vectorized:
        assert "feedback" not in fixed
        assert len(np.unique(t[:, ::2])) == 2  # Drawn from {-1, +1}^K, both occur.
      else:
        np.testing.assert_array_equal(t, np.tile([1.0, -1.0], t.shape[1] // 2)[None])
        b = np.asarray(fixed["feedback"])
        chex.assert_shape(b, (K, math.prod(info.out_shape)))
        assert b.max() <= 1.0 and len(np.unique(b)) > b.size // 2  # Random, not constant.
        if net.nonneg:
          assert b.min() >= 0.0
        else:
          assert b.min() >= -1.0 and (b < 0).any()


def _true_fan_in(kind, w_shape, first):
  """Fan-in read off the kernel shape by hand (the first layer's K axis excluded)."""
  if first:
    w_shape = (*w_shape[:-2], w_shape[-1])
  if kind == "dense":
    return w_shape[0]
  if kind == "conv":
    return math.prod(w_shape[:3])  # (k, k, C_in, C_out)
  return math.prod(w_shape[2:5])  # (Ho, Wo, C_in, k, k, C_out)


def _assert_std(samples, std):
  """Sample std of N i.i.d. Gaussians has standard error std / sqrt(2N); 5 of those
  bound a false failure at ~1e-6 for any seed."""
  samples = np.asarray(samples, np.float64).ravel()
  ratio = np.sqrt(np.mean(samples**2)) / std
  assert abs(ratio - 1) < 5 / np.sqrt(2 * samples.size), (ratio, samples.size)
  assert abs(samples.mean()) < 5 * std / np.sqrt(samples.size)


@pytest.mark.parametrize("arch,vectorized", PAIRS)
def test_he_scale_and_first_layer_scale(arch, vectorized):
  """He past the first layer; the first has std 1 / sqrt(fan_in) in every kind, as in
  the released code (init_methods.py:15-16, 39, 52-53, 76; vnn.py:43-44)."""
  half, vh, full, vf = _pair(arch, vectorized)
  for info in half.weighted:  # Mixed-sign: He, N(0, 2 / fan_in); first N(0, 1 / fan_in).
    w = np.asarray(vh["params"][info.name]["w"])
    fan_in = _true_fan_in(info.layer.kind, w.shape, info.first)
    _assert_std(w, math.sqrt((1.0 if info.first else 2.0) / fan_in))
  for info in full.weighted:
    w = np.asarray(vf["params"][info.name]["w"])
    fan_in = _true_fan_in(info.layer.kind, w.shape, info.first)
    if info.first:  # (+W~, -W~) with W~ of std 1 / sqrt(n0), not of K * n0.
      _assert_std(w[..., ::2], math.sqrt(1.0 / fan_in))
    else:  # W~ is He for the half net (fan-in / 2): E[w^2] = 2 / fan_in, as He.
      w_half = _half_kernel(info, w)
      _assert_std(w_half, math.sqrt(4.0 / fan_in))
      pairs = max(w.shape[-1] // 2, 1)  # Paired outputs, or the single readout unit.
      np.testing.assert_allclose(
        np.mean(w[..., : 2 * pairs].astype(np.float64) ** 2),
        np.mean(w_half[..., :pairs].astype(np.float64) ** 2) / 2,
        rtol=1e-6,
      )


@hypothesis.settings(deadline=None, max_examples=8)
@hypothesis.given(n=st.integers(6, 10), seed=st.integers(0, 2**31 - 1))
def test_on_off_spectrum_is_the_union_of_w_tilde_and_abs_w_tilde(n, seed):
  w = init.on_off_kernel(
    jax.random.key(seed), (2 * n, 2 * n), 2 * n, in_axis=0, first=False
  )
  w = np.asarray(w, np.float64)
  w_tilde = w[::2, ::2] - w[1::2, ::2]
  lam = np.linalg.eigvals(w)
  mu = np.concatenate([np.linalg.eigvals(w_tilde), np.linalg.eigvals(np.abs(w_tilde))])
  rows, cols = scipy.optimize.linear_sum_assignment(np.abs(lam[:, None] - mu[None]))
  # Double precision on well-separated eigenvalues of a 2n <= 20 matrix of norm O(1):
  # backward error ~1e-15 times condition numbers far below 1e6.
  assert np.abs(lam[rows] - mu[cols]).max() < 1e-9 * max(1.0, np.abs(mu).max())

  def interleave(even, odd):
    return np.stack([even, odd], axis=1).reshape(-1)

  for matrix, sign in ((w_tilde, -1.0), (np.abs(w_tilde), 1.0)):
    values, vectors = np.linalg.eig(matrix)
    for value, v in zip(values, vectors.T):
      u = interleave(v, sign * v) / np.sqrt(2)
      np.testing.assert_allclose(np.linalg.norm(u), 1.0, rtol=1e-12)
      np.testing.assert_allclose(w @ u, value * u, atol=1e-9 * max(1.0, abs(value)))


def _rms_per_layer(net, variables, x):
  return [
    float(jnp.sqrt(jnp.mean(a**2)))
    for a in _hidden_activations(net, variables, x).values()
  ]


def test_activation_scale_is_bounded_over_depth():
  net = models.Network(
    (L.Flatten(), *[L.Dense(256)] * 8, L.Dense(1)), INPUT, 10, True, True
  )
  variables = net.init(jax.random.key(0))
  x = _inputs(batch=64)
  rms = _rms_per_layer(net, variables, x)
  assert len(rms) == 8
  # The ON cells form a 128-wide He network; the gate Theta(t.h) keeps half of a
  # symmetric pre-activation distribution, so the second moment is preserved layer to
  # layer in expectation, with O(1/sqrt(width * batch * K)) fluctuations per layer:
  # a factor 3 over 7 layers is many standard deviations away.
  assert all(1 / 3 < r / rms[0] < 3 for r in rms), rms

  # An i.i.d. nonnegative init of the same second moment, E[w^2] = 2 / fan_in: the
  # absolute value of a He draw. Its outlier eigenvalue ~ sqrt(n) makes it explode.
  rng = np.random.default_rng(0)
  params = dict(variables["params"])
  for info in net.hidden[1:]:  # (The readout does not affect hidden activations.)
    w = np.asarray(params[info.name]["w"])
    iid = np.abs(rng.standard_normal(w.shape)) * np.sqrt(2.0 / w.shape[0])
    np.testing.assert_allclose(
      np.mean(iid**2), np.mean(w.astype(np.float64) ** 2), rtol=0.1
    )  # Same second moment: s.e. ~1 % each.
    params[info.name] = {**params[info.name], "w": jnp.asarray(iid, jnp.float32)}
  grown = _rms_per_layer(net, {**variables, "params": params}, x)
  assert grown[-1] / grown[0] > 100, grown
