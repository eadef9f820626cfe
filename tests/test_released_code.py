"""The initial state matches the authors' released code, through the public API.

Released code: github.com/davidclark1/VectorizedNets at 0a5856d. Each test names the
file and lines it pins; docs/reproduction.md lists every such choice.
"""

import math

import jax
import numpy as np
import pytest

import gevb_jax

MNIST = (28, 28, 1)


def _init(arch, vectorized, nonneg, input_shape=MNIST, num_classes=10, seed=0):
  net = gevb_jax.make_network(
    arch,
    input_shape=input_shape,
    num_classes=num_classes,
    vectorized=vectorized,
    nonneg=nonneg,
  )
  return net, net.init(jax.random.key(seed))


@pytest.mark.parametrize("vectorized", [True, False])
@pytest.mark.parametrize("nonneg", [True, False])
def test_first_layer_std_times_sqrt_fan_in_is_one(vectorized, nonneg):
  """init_methods.py:15-16, 39 (f = 1 for the first layer) and vnn.py:43-44 (the
  vectorized layer multiplies back the one-hot K n0 fan-in): std = 1 / sqrt(n0)."""
  net, variables = _init("fc", vectorized, nonneg)
  first, second = net.weighted[:2]
  w = np.asarray(variables["params"][first.name]["w"], np.float64)
  scale = w.std() * math.sqrt(first.in_shape[0])  # 784 * K * 1024 draws: s.e. < 0.1 %.
  assert abs(scale - 1.0) < 0.01, scale
  if not nonneg:  # Past the first layer: He, std * sqrt(fan_in) = sqrt(2).
    w = np.asarray(variables["params"][second.name]["w"], np.float64)
    assert abs(w.std() * math.sqrt(second.in_shape[0]) - math.sqrt(2)) < 0.02


def _reference_order(shape):
  """For each unit of ours, in our (H, W, C) flatten order, its column in PyTorch's
  (C, H, W) flatten order, written out index by index."""
  if len(shape) == 1:
    return np.arange(shape[0])
  h, w, c = shape
  hh, ww, cc = np.meshgrid(np.arange(h), np.arange(w), np.arange(c), indexing="ij")
  return (cc * h * w + hh * w + ww).ravel()


@pytest.mark.parametrize("arch", ["fc", "conv", "lc"])
@pytest.mark.parametrize("nonneg", [True, False])
def test_dfa_feedback_is_one_matrix_sliced_per_layer_in_reference_order(arch, nonneg):
  """dfa_util.py:68-76 draws one (C, max_l n_l) matrix; :84 gives layer l the first
  n_l columns of the projection, viewed as the layer's (C, H, W) gradient."""
  net, variables = _init(arch, False, nonneg)
  hidden = net.hidden
  # Rebuild the one matrix in the reference's column order from the widest layer.
  widest = max(hidden, key=lambda info: math.prod(info.out_shape))
  b_widest = np.asarray(variables["fixed"][widest.name]["feedback"])
  full = np.empty_like(b_widest)
  full[:, _reference_order(widest.out_shape)] = b_widest
  assert full.shape == (10, max(math.prod(info.out_shape) for info in hidden))
  for info in hidden:
    b = np.asarray(variables["fixed"][info.name]["feedback"])
    assert b.shape == (10, math.prod(info.out_shape))
    # Unit u of ours is column _reference_order[u] of the reference's layer, which is
    # column _reference_order[u] of the one matrix.
    np.testing.assert_array_equal(b, full[:, _reference_order(info.out_shape)])
  assert full.min() >= (0.0 if nonneg else -1.0) and full.max() <= 1.0
  if not nonneg:
    assert (full < 0).any()
  assert len(np.unique(full)) > full.size // 2  # Random, not constant.
  # Not the same matrix twice: another seed draws another one.
  _, other = _init(arch, False, nonneg, seed=1)
  assert not np.array_equal(other["fixed"][widest.name]["feedback"], b_widest)


def test_conv_feedback_is_not_the_identity_relabelling():
  """The (C, H, W) -> (H, W, C) mapping matters: conv_1's feedback is not the first
  columns of conv_0's in our own order."""
  net, variables = _init("conv", False, True)
  b0 = np.asarray(variables["fixed"]["conv_0"]["feedback"])
  b1 = np.asarray(variables["fixed"]["conv_1"]["feedback"])
  assert not np.array_equal(b1, b0[:, : b1.shape[1]])
  # Dense layers after the flatten take plain leading columns of the reference order.
  dense = np.asarray(variables["fixed"]["dense_0"]["feedback"])
  np.testing.assert_array_equal(
    dense, b0[:, np.argsort(_reference_order(net.hidden[0].out_shape))[:1024]]
  )


@pytest.mark.parametrize("arch", ["fc", "conv", "lc"])
def test_conventional_nonneg_readout_pairs_its_outputs(arch):
  """init_methods.py:25-32: output 2n + 1 is output 2n with its ON and OFF inputs
  swapped, so with ON/OFF hidden activity the logits come in +/- pairs."""
  net, variables = _init(arch, False, True)
  w = np.asarray(variables["params"]["readout"]["w"])  # (n_in, 10)
  on, off = w[0::2], w[1::2]  # Rows from ON and from OFF inputs.
  np.testing.assert_array_equal(on[:, 1::2], off[:, 0::2])
  np.testing.assert_array_equal(off[:, 1::2], on[:, 0::2])
  assert (w >= 0).all() and np.minimum(on, off).max() == 0 and w.max() > 0
  x = jax.random.uniform(jax.random.key(3), (8, *MNIST), minval=-1, maxval=1)
  logits = np.asarray(net.apply(variables, x))
  np.testing.assert_allclose(logits[:, 1::2], -logits[:, 0::2], atol=1e-5)
  assert np.abs(logits).max() > 1e-3
  # A mixed-sign readout is plain He: no pairing.
  _, mixed = _init(arch, False, False)
  w = np.asarray(mixed["params"]["readout"]["w"])
  assert not np.allclose(w[1::2, 1::2], w[0::2, 0::2])


def test_odd_readout_pairs_all_but_the_last_output():
  """A single readout unit (the vectorized net) is an ON row alone, as the released
  code's max(out_features // 2, 1) gives; with 5 classes, 2 pairs and one ON row."""
  net, variables = _init("fc", False, True, input_shape=(8, 8, 1), num_classes=5)
  w = np.asarray(variables["params"]["readout"]["w"])
  assert w.shape[-1] == 5
  np.testing.assert_array_equal(w[0::2, 1:4:2], w[1::2, 0:4:2])
  np.testing.assert_array_equal(np.minimum(w[0::2, 4], w[1::2, 4]), 0)
  assert w[:, 4].max() > 0


@pytest.mark.parametrize("vectorized", [True, False])
def test_cifar_lc_dense_width(vectorized):
  """vec_models.py:92: the vectorized CIFAR-10 LC net's dense layer has 256 units
  (Table 4 says 512); nonvec_models.py:140 keeps 512 for the conventional one."""
  net = gevb_jax.make_network(
    "lc", input_shape=(32, 32, 3), num_classes=10, vectorized=vectorized, nonneg=True
  )
  (dense,) = [info for info in net.hidden if info.layer.kind == "dense"]
  assert dense.out_shape == ((256,) if vectorized else (512,))
  # The MNIST LC nets and the CIFAR-10 conv nets keep Tables 3-4's widths.
  for arch, shape, width in (("lc", MNIST, 1024), ("conv", (32, 32, 3), 1024)):
    net = gevb_jax.make_network(
      arch, input_shape=shape, num_classes=10, vectorized=vectorized, nonneg=True
    )
    assert [i.out_shape for i in net.hidden if i.layer.kind == "dense"] == [(width,)]
