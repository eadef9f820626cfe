"""Vectorized layers (Eqs. 6-8, Appendices B, G, H) and the paper's architectures.

Where exactness matters the tests use small-integer operands: every product and partial
sum is then an integer below 2**24, exactly representable in float32, so the result does
not depend on how a convolution or matmul orders its sums and can be compared with
``==`` instead of a tolerance.
"""

import functools
import math
import re

import chex
import hypothesis
import hypothesis.strategies as st
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gevb_jax
from gevb_jax import layers as L


def _ints(rng, shape, bound=3):
  """Float32 array of integers in [-bound, bound]."""
  return rng.integers(-bound, bound + 1, size=shape).astype(np.float32)


# --- Appendix B: the first layer is K * n0 one-hot vector input units ------------------


def _one_hot_inputs(x, k):
  """Eq. 17: ``a0[b, mu, ..., (nu, c)] = delta_{mu nu} x[b, ..., c]``, nu slowest."""
  a0 = np.einsum("mn,b...c->bm...nc", np.eye(k, dtype=x.dtype), x)
  return a0.reshape(*a0.shape[:-2], -1)


def _shared_kernel(layer, w1, k):
  """The later-layer (weight-shared) kernel on the K * C_in one-hot inputs."""
  if layer.kind == "dense":  # (n0, K, C_out) -> ((nu, j), C_out)
    return w1.transpose(1, 0, 2).reshape(-1, w1.shape[-1])
  if layer.kind == "conv":  # (kh, kw, C_in, K, C_out) -> (kh, kw, (nu, c), C_out)
    return w1.transpose(0, 1, 3, 2, 4).reshape(*w1.shape[:2], -1, w1.shape[-1])
  # (Ho, Wo, C_in, k, k, K, C_out) -> (Ho, Wo, (nu, c), k, k, C_out)
  ho, wo, _, kh, kw, _, c_out = w1.shape
  return w1.transpose(0, 1, 5, 2, 3, 4, 6).reshape(ho, wo, -1, kh, kw, c_out)


_SPATIAL = [
  (3, 1, 1),
  (3, 2, 1),
  (2, 2, 0),
  (5, 1, 2),
  (3, 2, 0),
]  # (kernel, stride, pad)


@pytest.mark.parametrize("kind", ["dense", "conv", "lc"])
@hypothesis.settings(deadline=None, max_examples=6)
@hypothesis.given(
  seed=st.integers(0, 2**31 - 1),
  k=st.integers(1, 4),
  c_in=st.integers(1, 3),
  c_out=st.integers(1, 4),
  size=st.sampled_from([5, 7]),
  spatial=st.sampled_from(_SPATIAL),
)
def test_first_layer_equals_one_hot_vector_inputs(
  kind, seed, k, c_in, c_out, size, spatial
):
  rng = np.random.default_rng(seed)
  kernel, stride, pad = spatial
  if kind == "dense":
    layer, in_shape = L.Dense(c_out), (size * c_in,)
  elif kind == "conv":
    layer, in_shape = L.Conv(c_out, kernel, stride, pad), (size, size, c_in)
  else:
    layer, in_shape = L.LocallyConnected(c_out, kernel, stride, pad), (size, size, c_in)
  kshape = layer.kernel_shape(in_shape)
  w1 = _ints(rng, (*kshape[:-1], k, kshape[-1]))
  x = _ints(rng, (2, *in_shape))

  first = np.asarray(L.linear(layer, jnp.asarray(w1), jnp.asarray(x), k, first=True))
  chex.assert_shape(first, (2, k, *layer.out_shape(in_shape)))

  # Appendix B: K * C_in vector inputs through the weight-shared (l > 1) map.
  a0 = _one_hot_inputs(x, k)
  chex.assert_shape(a0, (2, k, *in_shape[:-1], k * in_shape[-1]))
  w_shared = _shared_kernel(layer, w1, k)
  expanded_in = (*in_shape[:-1], k * in_shape[-1])
  assert w_shared.shape == layer.kernel_shape(expanded_in)
  expanded = np.asarray(
    L.linear(layer, jnp.asarray(w_shared), jnp.asarray(a0), k, first=False)
  )
  np.testing.assert_array_equal(first, expanded)  # Integer operands: exact.

  # And component mu is the plain layer with that component's own kernel.
  for mu in range(k):
    own = layer.lin(jnp.asarray(w1[..., mu, :]), jnp.asarray(x))
    np.testing.assert_array_equal(first[:, mu], np.asarray(own))


# --- Locally connected layers with tied weights are convolutions -----------------------


@pytest.mark.parametrize(
  "kernel,stride,pad", [(3, 1, 1), (5, 1, 2), (2, 2, 0), (3, 2, 1)]
)
def test_locally_connected_with_tied_kernels_is_a_convolution(kernel, stride, pad):
  rng = np.random.default_rng(kernel * 10 + stride + pad)
  x = _ints(rng, (2, 8, 8, 3))
  conv = L.Conv(4, kernel, stride, pad)
  lc = L.LocallyConnected(4, kernel, stride, pad)
  w_conv = _ints(rng, conv.kernel_shape((8, 8, 3)))  # (k, k, C_in, C_out)
  ho, wo, _ = lc.out_shape((8, 8, 3))
  tied = np.broadcast_to(w_conv.transpose(2, 0, 1, 3), (ho, wo, 3, kernel, kernel, 4))
  assert tied.shape == lc.kernel_shape((8, 8, 3))
  expected = np.asarray(conv.lin(jnp.asarray(w_conv), jnp.asarray(x)))
  chex.assert_shape(expected, (2, ho, wo, 4))
  np.testing.assert_array_equal(
    np.asarray(lc.lin(jnp.asarray(tied), jnp.asarray(x))), expected
  )

  # Unshared: a kernel living at one output position only touches that position.
  h0, w0 = ho - 1, wo // 2
  single = np.zeros(tied.shape, np.float32)
  single[h0, w0] = tied[h0, w0]
  out = np.array(lc.lin(jnp.asarray(single), jnp.asarray(x)))  # Writable copy.
  np.testing.assert_array_equal(out[:, h0, w0], expected[:, h0, w0])
  out[:, h0, w0] = 0
  np.testing.assert_array_equal(out, 0)


# --- The gated nonlinearity (Eqs. 7-8) and pooling ------------------------------------


def test_gate_is_open_at_zero():
  # Unit 0: t.h = 1 - 1 = 0, Theta(0) = 1, active. Unit 1: t.h = 1 - 2 < 0, inactive.
  h = jnp.array([[[1.0, 1.0], [1.0, -2.0]]])  # (B=1, K=2, C=2)
  t = jnp.array([[1.0, 1.0], [-1.0, 1.0]])  # (K, C): t_0 = (1, -1), t_1 = (1, 1)
  a, mask = L.gate(h, t)
  np.testing.assert_array_equal(mask, [[True, False]])
  np.testing.assert_array_equal(a, [[[1.0, 0.0], [1.0, 0.0]]])


@pytest.mark.parametrize(
  "layer,in_shape",
  [
    (L.Dense(6), (20,)),
    (L.Conv(6, 3, 1, 1), (5, 4, 2)),
    (L.LocallyConnected(6, 3, 2, 1), (5, 4, 2)),
  ],
)
def test_first_layer_t_dot_h_from_the_input_equals_the_sum_over_components(
  layer, in_shape
):
  """t . h of the first layer computed as one map of the input with the t-weighted
  kernel equals the sum over K of t * h; with integer inputs and weights both are
  exact, so the gates agree everywhere."""
  rng = np.random.default_rng(0)
  k = 4
  kernel = layer.kernel_shape(in_shape)
  w = _ints(rng, (*kernel[:-1], k, kernel[-1]), bound=2)
  b = _ints(rng, (k, *layer.bias_shape(layer.out_shape(in_shape))), bound=2)
  t = rng.choice([-1.0, 1.0], size=(k, 6)).astype(np.float32)
  x = _ints(rng, (3, *in_shape), bound=2)
  params = {"w": jnp.asarray(w), "b": jnp.asarray(b)}
  h = L.linear(layer, params["w"], jnp.asarray(x), k, True) + params["b"]
  expected = sum(
    t[mu].reshape(*([1] * (h.ndim - 3)), 6) * np.asarray(h[:, mu]) for mu in range(k)
  )
  got = L.first_layer_t_dot_h(layer, params, jnp.asarray(t), jnp.asarray(x))
  np.testing.assert_array_equal(got, expected)
  assert (expected > 0).any() and (expected < 0).any()
  a, mask = L.weighted_forward(
    layer, params, {"t": jnp.asarray(t)}, jnp.asarray(x), k, True, False
  )
  np.testing.assert_array_equal(mask, expected >= 0)
  np.testing.assert_array_equal(a, np.asarray(h) * (expected >= 0)[:, None])


@hypothesis.settings(deadline=None, max_examples=8)
@hypothesis.given(
  seed=st.integers(0, 2**31 - 1),
  k=st.integers(1, 4),
  spatial=st.sampled_from([(), (3, 2)]),
)
def test_gate_mask_is_per_unit_shared_over_positions_and_components(seed, k, spatial):
  rng = np.random.default_rng(seed)
  # Small integers make t.h == 0 frequent and every sum exact.
  h = _ints(rng, (3, k, *spatial, 6), bound=2)
  t = rng.choice([-1.0, 1.0], size=(k, 6)).astype(np.float32)
  a, mask = L.gate(jnp.asarray(h), jnp.asarray(t))
  chex.assert_shape(mask, (3, *spatial, 6))
  dots = np.zeros((3, *spatial, 6), np.float32)
  for mu in range(k):  # t.h with t per channel, all positions
    dots += t[mu] * h[:, mu]
  np.testing.assert_array_equal(mask, dots >= 0)
  np.testing.assert_array_equal(a, h * (dots >= 0)[:, None])

  # OFF partner (t -> -t): exactly one of the pair is active unless t.h == 0 (both).
  a_off, mask_off = L.gate(jnp.asarray(h), jnp.asarray(-t))
  np.testing.assert_array_equal(mask_off, np.where(dots == 0, True, ~np.asarray(mask)))
  nonzero = np.broadcast_to((dots != 0)[:, None], h.shape)
  np.testing.assert_array_equal((np.asarray(a) + np.asarray(a_off))[nonzero], h[nonzero])


def test_avg_pool_floors_odd_sizes_like_pytorch():
  rng = np.random.default_rng(0)
  x = _ints(rng, (2, 5, 7, 3))
  pool = L.AvgPool(2)
  assert pool.out_shape((5, 7, 3)) == (2, 3, 3)
  out = np.asarray(pool.apply(jnp.asarray(x)))
  # torch.nn.AvgPool2d(2) drops the last row and column of odd sizes.
  expected = x[:, :4, :6].reshape(2, 2, 2, 3, 2, 3).mean(axis=(2, 4))
  np.testing.assert_array_equal(out, expected)  # Sums of 4 integers / 4: exact.
  # Vectorized inputs pool each of the K components alike.
  xk = _ints(rng, (2, 4, 5, 7, 3))
  out_k = np.asarray(L.apply_unweighted(pool, jnp.asarray(xk), True))
  for mu in range(4):
    np.testing.assert_array_equal(
      out_k[:, mu], np.asarray(pool.apply(jnp.asarray(xk[:, mu])))
    )


def test_flatten_keeps_channels_fastest():
  x = np.arange(2 * 2 * 3 * 4, dtype=np.float32).reshape(2, 2, 3, 4)
  out = np.asarray(L.Flatten().apply(jnp.asarray(x)))
  np.testing.assert_array_equal(out, x.reshape(2, -1))
  np.testing.assert_array_equal(out[0, :4], x[0, 0, 0])  # ON/OFF channel pairs adjacent.


# --- make_network: Tables 3-4 ---------------------------------------------------------


def _shapes(net):
  """Variable shapes without computing them."""
  variables = jax.eval_shape(net.init, jax.random.key(0))
  return jax.tree_util.tree_map(lambda s: s.shape, variables)


def _logits_shape(net, variables, batch=2):
  x = jax.ShapeDtypeStruct((batch, *net.input_shape), jnp.float32)
  return jax.eval_shape(net.apply, variables, x).shape


@pytest.mark.parametrize("input_shape", [(8, 8, 1), (28, 28, 1), (32, 32, 3)])
@pytest.mark.parametrize("arch", gevb_jax.ARCHS)
def test_make_network_builds_every_arch_and_kind(input_shape, arch):
  for num_classes in (3, 10):
    nets = {
      v: gevb_jax.make_network(
        arch, input_shape=input_shape, num_classes=num_classes, vectorized=v, nonneg=True
      )
      for v in (True, False)
    }
    first = {}
    for vectorized, net in nets.items():
      k = num_classes if vectorized else 1
      assert net.num_components == k
      variables = jax.eval_shape(net.init, jax.random.key(0))
      assert _logits_shape(net, variables) == (2, num_classes)
      params = variables["params"]
      assert set(params) == {info.name for info in net.weighted}
      assert params["readout"]["w"].shape[-1] == (1 if vectorized else num_classes)
      for info in net.hidden:
        fixed = variables["fixed"][info.name]
        assert fixed["t"].shape == (k, info.out_shape[-1])
        if vectorized:
          assert "feedback" not in fixed
        else:
          assert fixed["feedback"].shape == (num_classes, math.prod(info.out_shape))
      first[vectorized] = params[net.weighted[0].name]["w"].shape
    # The first layer has K times the parameters of the conventional one (Appendix G).
    assert math.prod(first[True]) == num_classes * math.prod(first[False])


def _table(k, out):
  """Expected (w, b) shapes of Tables 3-4 with K components and ``out`` readout units.

  The vectorized CIFAR-10 LC net's dense layer is 256 wide, as in the released code
  (vec_models.py:92), not Table 4's 512; the conventional one keeps 512."""
  lc_dense = 256 if k > 1 else 512
  return {
    ("fc", (28, 28, 1)): {
      "dense_0": ((784, k, 1024), (k, 1024)),
      "dense_1": ((1024, 512), (k, 512)),
      "readout": ((512, out), (k, out)),
    },
    ("conv", (28, 28, 1)): {
      "conv_0": ((3, 3, 1, k, 64), (k, 1, 1, 64)),
      "conv_1": ((3, 3, 64, 32), (k, 1, 1, 32)),
      "dense_0": ((7 * 7 * 32, 1024), (k, 1024)),
      "readout": ((1024, out), (k, out)),
    },
    ("lc", (28, 28, 1)): {
      "lc_0": ((28, 28, 1, 3, 3, k, 32), (k, 28, 28, 32)),
      "lc_1": ((14, 14, 32, 3, 3, 32), (k, 14, 14, 32)),
      "dense_0": ((7 * 7 * 32, 1024), (k, 1024)),
      "readout": ((1024, out), (k, out)),
    },
    ("fc", (32, 32, 3)): {
      "dense_0": ((3072, k, 1024), (k, 1024)),
      "dense_1": ((1024, 512), (k, 512)),
      "dense_2": ((512, 512), (k, 512)),
      "readout": ((512, out), (k, out)),
    },
    ("conv", (32, 32, 3)): {
      "conv_0": ((5, 5, 3, k, 128), (k, 1, 1, 128)),
      "conv_1": ((5, 5, 128, 64), (k, 1, 1, 64)),
      "conv_2": ((2, 2, 64, 64), (k, 1, 1, 64)),
      "dense_0": ((4 * 4 * 64, 1024), (k, 1024)),
      "readout": ((1024, out), (k, out)),
    },
    ("lc", (32, 32, 3)): {
      "lc_0": ((32, 32, 3, 5, 5, k, 64), (k, 32, 32, 64)),
      "lc_1": ((16, 16, 64, 5, 5, 32), (k, 16, 16, 32)),
      "lc_2": ((4, 4, 32, 2, 2, 32), (k, 4, 4, 32)),
      "dense_0": ((4 * 4 * 32, lc_dense), (k, lc_dense)),
      "readout": ((lc_dense, out), (k, out)),
    },
  }


@pytest.mark.parametrize("input_shape", [(28, 28, 1), (32, 32, 3)])
@pytest.mark.parametrize("arch", gevb_jax.ARCHS)
@pytest.mark.parametrize("vectorized", [True, False])
def test_parameter_shapes_follow_tables_3_and_4(input_shape, arch, vectorized):
  net = gevb_jax.make_network(
    arch, input_shape=input_shape, num_classes=10, vectorized=vectorized, nonneg=False
  )
  k, out = (10, 1) if vectorized else (1, 10)
  expected = _table(k, out)[arch, input_shape]
  params = _shapes(net)["params"]
  assert params == {name: {"w": w, "b": b} for name, (w, b) in expected.items()}


def test_widths_override_and_bad_arguments():
  net = gevb_jax.make_network(
    "conv",
    input_shape=(28, 28, 1),
    num_classes=10,
    vectorized=True,
    nonneg=True,
    widths=(6, 4, 16),
  )
  params = _shapes(net)["params"]
  assert params["conv_0"]["w"] == (3, 3, 1, 10, 6)
  assert params["conv_1"]["w"] == (3, 3, 6, 4)
  assert params["dense_0"]["w"] == (7 * 7 * 4, 16)
  assert params["readout"]["w"] == (16, 1)

  def make(arch="conv", input_shape=(28, 28, 1), widths=None, num_classes=10):
    return gevb_jax.make_network(
      arch,
      input_shape=input_shape,
      num_classes=num_classes,
      vectorized=True,
      nonneg=True,
      widths=widths,
    )

  with pytest.raises(ValueError, match=r"'conv\(5,3,1,1\)' has an odd width"):
    make(widths=(6, 5, 16))
  with pytest.raises(ValueError, match=r"3 hidden weighted layers.*\(6, 4\)"):
    make(widths=(6, 4))
  with pytest.raises(ValueError, match=r"'mlp'"):
    make(arch="mlp")
  with pytest.raises(ValueError, match=r"\(8, 8, 2\) has 2 channels"):
    make(input_shape=(8, 8, 2))
  with pytest.raises(ValueError, match=r"num_classes.*1"):
    make(num_classes=1)


# --- Faster formulations, each against the plain one, at the shapes of Tables 3-4 ---


def _first_block_of(arch, input_shape):
  net = gevb_jax.make_network(
    arch, input_shape=input_shape, num_classes=10, vectorized=True, nonneg=False
  )
  return net, net.info[0], net.info[1]


@pytest.mark.parametrize("input_shape", [(28, 28, 1), (32, 32, 3)])
@pytest.mark.parametrize("arch", ["conv", "lc"])
def test_fused_first_block_equals_layer_then_gate_then_pool(arch, input_shape):
  """Micro-batches of 2 over 5 examples: the last one is a remainder."""
  net, first, pool = _first_block_of(arch, input_shape)
  variables = net.init(jax.random.key(0))
  params, fixed = variables["params"][first.name], variables["fixed"][first.name]
  params["b"] = jax.random.normal(jax.random.key(2), params["b"].shape) * 0.1
  x = jax.random.uniform(jax.random.key(1), (5, *input_shape), minval=-1, maxval=1)
  a, mask = L.weighted_forward(first.layer, params, fixed, x, 10, True, False)
  expected = L.apply_unweighted(pool.layer, a, True)
  got, got_mask = L.first_block(
    first.layer, pool.layer, params, fixed["t"], x, 10, chunk=2
  )
  np.testing.assert_array_equal(got_mask, mask)
  assert got.shape == expected.shape == (5, 10, *pool.out_shape)
  np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)
  assert 0.2 < float(mask.mean()) < 0.8  # Both sides of the gate are exercised.


def test_network_fuses_only_a_vnn_first_layer_whose_kernel_fits_in_cache():
  fused = {
    (arch, shape, vec): gevb_jax.make_network(
      arch, input_shape=shape, num_classes=10, vectorized=vec, nonneg=True
    )
    .info[0]
    .fused_pool
    is not None
    for arch in gevb_jax.ARCHS
    for shape in [(28, 28, 1), (32, 32, 3)]
    for vec in (True, False)
  }
  # CIFAR-10's LC kernel (32 * 32 * 75 * 640 floats, 196 MB) would be re-read per
  # example; FC nets have no pooling; conventional nets have no K-wide activation.
  assert {key for key, f in fused.items() if f} == {
    ("conv", (28, 28, 1), True),
    ("lc", (28, 28, 1), True),
    ("conv", (32, 32, 3), True),
  }


@pytest.mark.parametrize("input_shape", [(28, 28, 1), (32, 32, 3)])
def test_network_with_fused_first_block_equals_the_unfused_one(input_shape):
  """``taps`` on the first layer force its unfused path: logits agree."""
  net = gevb_jax.make_network(
    "conv", input_shape=input_shape, num_classes=10, vectorized=True, nonneg=True
  )
  variables = net.init(jax.random.key(0))
  x = jax.random.uniform(jax.random.key(1), (3, *input_shape), minval=-1, maxval=1)
  first = net.info[0]
  taps = {first.name: jnp.zeros((3, 10, *first.out_shape))}
  np.testing.assert_allclose(
    net.apply(variables, x), net.apply(variables, x, taps), rtol=1e-5, atol=1e-5
  )


# Every stride-1 convolution and every LC layer of Tables 3-4, with its formulation
# tuned for XLA:CPU: (fast, layer, input shape, examples). lc_by_position reorders the
# kernel when it has fewer output channels than examples, else transposes the fields:
# each LC shape runs both ways.
_TABLE_LC = [
  (L.LocallyConnected(32, 3, 1, 1), (28, 28, 1)),
  (L.LocallyConnected(32, 3, 1, 1), (14, 14, 32)),
  (L.LocallyConnected(64, 5, 1, 2), (32, 32, 3)),
  (L.LocallyConnected(32, 5, 1, 2), (16, 16, 64)),
  (L.LocallyConnected(32, 2, 2, 0), (8, 8, 32)),
]
_TABLE_FAST = [
  (L.conv_by_taps, L.Conv(64, 3, 1, 1), (28, 28, 1), 20),
  (L.conv_by_taps, L.Conv(32, 3, 1, 1), (14, 14, 64), 20),
  (L.conv_by_taps, L.Conv(128, 5, 1, 2), (32, 32, 3), 20),
  (L.conv_by_taps, L.Conv(64, 5, 1, 2), (16, 16, 128), 20),
  *[(L.lc_by_position, layer, shape, n) for layer, shape in _TABLE_LC for n in (20, 70)],
]


@pytest.mark.parametrize("fast,layer,in_shape,examples", _TABLE_FAST)
def test_fast_formulation_equals_the_plain_one_and_its_derivatives(
  fast, layer, in_shape, examples
):
  """20 examples: conv_by_taps runs more than one micro-batch, with a remainder."""
  kw, kx, kg = jax.random.split(jax.random.key(0), 3)
  w = jax.random.normal(kw, layer.kernel_shape(in_shape)) / math.sqrt(
    layer.fan_in(in_shape)
  )
  x = jax.random.uniform(kx, (examples, *in_shape), minval=-1, maxval=1)
  expected = layer.lin(w, x)
  np.testing.assert_allclose(fast(layer, w, x), expected, rtol=1e-5, atol=1e-5)
  g = jax.random.normal(kg, expected.shape)
  got = jax.vjp(lambda w, x: fast(layer, w, x), w, x)[1](g)
  # The derivatives are the plain formulation's own.
  chex.assert_trees_all_equal(got, jax.vjp(layer.lin, w, x)[1](g))


@pytest.mark.parametrize(
  "layer,in_shape",
  [
    (L.Dense(6), (20,)),
    (L.Conv(64, 3, 1, 1), (28, 28, 1)),
    (L.Conv(128, 5, 1, 2), (32, 32, 3)),
    (L.LocallyConnected(32, 3, 1, 1), (28, 28, 1)),
    (L.Conv(6, 3, 2, 1), (7, 6, 2)),
  ],
)
def test_first_layer_update_is_the_gradient_at_cotangent_s_times_e(layer, in_shape):
  """Integer inputs and factors make both sides exact: they must agree bit for bit."""
  k, batch = 10, 3
  rng = np.random.default_rng(0)
  kernel = layer.kernel_shape(in_shape)
  w = jnp.zeros((*kernel[:-1], k, kernel[-1]))
  x = jnp.asarray(_ints(rng, (batch, *in_shape), bound=2))
  s = jnp.asarray(rng.integers(0, 2, (batch, *layer.out_shape(in_shape))), jnp.float32)
  e = jnp.asarray(_ints(rng, (batch, k), bound=2))
  g_h = s[:, None] * e.reshape(batch, k, *([1] * (s.ndim - 1)))  # (B, K, *S, C)
  (want,) = jax.vjp(lambda w: L.linear(layer, w, x, k, True), w)[1](g_h)
  np.testing.assert_array_equal(L.first_layer_update(layer, x, s, e), want)
  assert np.abs(want).max() > 1


@pytest.mark.parametrize("arch", ["conv", "lc"])
def test_off_the_cpu_the_plain_formulations_run_and_agree(arch, monkeypatch):
  """The loops tuned for XLA:CPU give way to XLA's own convolutions elsewhere."""

  def build():
    return gevb_jax.make_network(
      arch,
      input_shape=(12, 12, 1),
      num_classes=10,
      vectorized=True,
      nonneg=True,
      widths=(6, 4, 8),
    )

  net = build()
  variables = net.init(jax.random.key(0))
  x = jax.random.uniform(jax.random.key(1), (3, 12, 12, 1), minval=-1, maxval=1)
  assert net.info[0].fused_pool is not None
  assert "scan" in str(jax.make_jaxpr(net.apply)(variables, x))
  monkeypatch.setattr(L, "tuned_for_cpu", lambda: False)
  plain = build()
  assert plain.info[0].fused_pool is None
  assert "scan" not in str(jax.make_jaxpr(plain.apply)(variables, x))
  np.testing.assert_allclose(
    plain.apply(variables, x), net.apply(variables, x), rtol=1e-5, atol=1e-6
  )


@pytest.mark.parametrize(
  "layer,in_shape",
  [
    (L.Conv(64, 3, 1, 1), (28, 28, 1)),
    (L.Conv(32, 3, 1, 1), (14, 14, 64)),
    (L.Conv(128, 5, 1, 2), (32, 32, 3)),
    (L.Conv(64, 5, 1, 2), (16, 16, 128)),
    (L.Conv(64, 2, 2, 0), (8, 8, 64)),
    (L.Conv(5, 2, 2, 0), (7, 9, 3)),  # Odd sizes: the stride drops the last row.
    (L.Conv(4, 3, 2, 1), (6, 5, 2)),
    (L.Conv(3, 4, 3, 2), (11, 10, 2)),
  ],
)
def test_conv_gradients_written_as_plain_convolutions_equal_jaxs(layer, in_shape):
  """Integer operands: the kernel and input gradients must equal the ones JAX's
  transpose rules give, bit for bit, at every stride, padding and odd size."""
  rng = np.random.default_rng(0)
  w = jnp.asarray(_ints(rng, layer.kernel_shape(in_shape), bound=2))
  x = jnp.asarray(_ints(rng, (3, *in_shape), bound=2))
  g = jnp.asarray(_ints(rng, (3, *layer.out_shape(in_shape)), bound=2))
  want = jax.vjp(functools.partial(L._conv, layer), w, x)[1](g)
  got = jax.vjp(functools.partial(L.conv_with_plain_grads, layer), w, x)[1](g)
  chex.assert_trees_all_equal(got, want)
  assert np.abs(want[0]).max() > 1 and np.abs(want[1]).max() > 1


@pytest.mark.parametrize(
  "vectorized,rule", [(True, "gevb"), (True, "bp"), (False, "dfa")]
)
def test_a_scanned_conv_step_compiles_to_plain_convolutions_only(vectorized, rule):
  """Inside a ``lax.scan`` XLA:CPU leaves a convolution with permuted dimension labels
  as a naive loop (30x slower; the trainer's scanned epochs ran 6-23x slower than
  single steps). Every convolution of a scanned conv-net step must be NHWC/HWIO."""
  net = gevb_jax.make_network(
    "conv",
    input_shape=(12, 12, 1),
    num_classes=10,
    vectorized=vectorized,
    nonneg=True,
    widths=(6, 4, 8),
  )
  variables = net.init(jax.random.key(0))
  x = jnp.zeros((4, 3, 12, 12, 1))
  y = jnp.zeros((4, 3), jnp.int32)

  def steps(params):
    def body(params, batch):
      _, updates = gevb_jax.loss_and_updates(
        net, {**variables, "params": params}, *batch, rule
      )
      return jax.tree.map(jnp.subtract, params, updates), None

    return jax.lax.scan(body, params, (x, y))[0]

  hlo = jax.jit(steps).lower(variables["params"]).compile().as_text()
  labels = re.findall(r"convolution\(.*?dim_labels=([^,\s]+)", hlo)
  assert len(labels) >= 2
  assert set(labels) == {"b01f_01io->b01f"}, labels
