"""The initial state matches the authors' released code, through the public API.

Released code: github.com/davidclark1/VectorizedNets at 0a5856d. Each test names the
file and lines it pins; docs/reproduction.md lists every such choice.
"""

import functools
import math

import chex
import jax
import numpy as np
import pytest

import gevb_jax
from configs import default as default_config
from gevb_jax import config_check
from gevb_jax.init import released_orders

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
  swapped, so with ON/OFF hidden activity the logits come in +/- pairs. Past the
  released flatten pairing of a conv/LC net, the dense layer's inputs are not ON/OFF
  channel pairs, so its activity and the logits are not +/- pairs: only with
  flatten_pairing="channels" are they."""
  net, variables = _init(arch, False, True)
  w = np.asarray(variables["params"]["readout"]["w"])  # (n_in, 10)
  on, off = w[0::2], w[1::2]  # Rows from ON and from OFF inputs.
  np.testing.assert_array_equal(on[:, 1::2], off[:, 0::2])
  np.testing.assert_array_equal(off[:, 1::2], on[:, 0::2])
  assert (w >= 0).all() and np.minimum(on, off).max() == 0 and w.max() > 0
  x = jax.random.uniform(jax.random.key(3), (8, *MNIST), minval=-1, maxval=1)
  logits = np.asarray(net.apply(variables, x))
  assert np.abs(logits).max() > 1e-3
  if arch == "fc":
    np.testing.assert_allclose(logits[:, 1::2], -logits[:, 0::2], atol=1e-5)
  else:
    assert not np.allclose(logits[:, 1::2], -logits[:, 0::2], atol=1e-3)
    net, variables = _paired(arch, MNIST, "channels")
    logits = np.asarray(net.apply(variables, x))
    np.testing.assert_allclose(logits[:, 1::2], -logits[:, 0::2], atol=1e-5)
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


# --- The dense layer after the flatten: released ON/OFF input pairs ---------------------

FLATTENED = [
  ("conv", MNIST, (7, 7, 32)),
  ("lc", MNIST, (7, 7, 32)),
  ("conv", (32, 32, 3), (4, 4, 64)),
  ("lc", (32, 32, 3), (4, 4, 32)),
]


def _released_names(t_ours):
  """For each unit or channel of a released conventional layer, ours: the one of its
  ON/OFF pair {2k, 2k + 1} with the same gate. The released gate is -1 on even units
  and +1 on odd ones (nonvec_models.py:10-11); ours are read off the net."""
  t_released = np.where(np.arange(len(t_ours)) % 2 == 0, -1.0, 1.0)
  names = []
  for k, t in enumerate(t_released):
    pair = (k - k % 2, k - k % 2 + 1)
    assert t_ours[pair[0]] == -t_ours[pair[1]]
    names.append(pair[0] if t_ours[pair[0]] == t else pair[1])
  return np.array(names)


def _released_input_rows(shape, t_ours):
  """Our flattened index of each input of the released Linear after the flatten, in
  its order: our (H, W, C) activation with C fastest, its channels named as the
  released net names them, laid out (C, H, W) and flattened as torch.nn.Flatten does
  (nonvec_models.py:71, 94, 116, 139)."""
  h, w, c = shape
  ours = np.arange(h * w * c).reshape(h, w, c)  # Our flatten: C fastest.
  released = ours[:, :, _released_names(t_ours)].transpose(2, 0, 1)  # (C, H, W)
  return released.reshape(-1)


def _init_methods_linear_mono(w_half):
  """init_methods.py:24-32, the ON/OFF Linear (out, in) built from W (out/2, in/2)."""
  out = np.zeros((2 * w_half.shape[0], 2 * w_half.shape[1]), w_half.dtype)
  out[::2, ::2] = np.maximum(w_half, 0)
  out[::2, 1::2] = np.maximum(-w_half, 0)
  out[1::2, ::2] = np.maximum(-w_half, 0)
  out[1::2, 1::2] = np.maximum(w_half, 0)
  return out


def _copy_partners(w):
  """For each input row i of a kernel (in, out): every row j whose weights onto the
  odd outputs equal row i's onto the even ones, Eq. 16's ON/OFF copy relation."""
  w = np.asarray(w) + 0.0  # -0.0 -> 0.0, so equal values have equal bytes.
  rows = {}
  for j, row in enumerate(w[:, 1::2]):
    rows.setdefault(row.tobytes(), []).append(j)
  return [rows.get(row.tobytes(), []) for row in w[:, ::2]]


def _around_flatten(net):
  """The weighted layer before the flatten, the flatten and the layer after it."""
  (i,) = [i for i, info in enumerate(net.info) if info.layer.kind == "flatten"]
  before = [info for info in net.info[:i] if hasattr(info.layer, "lin")][-1]
  return before, net.info[i], net.info[i + 1]


@functools.cache
def _paired(arch, input_shape, flatten_pairing, backward_kernels=""):
  net = gevb_jax.make_network(
    arch,
    input_shape=input_shape,
    num_classes=10,
    vectorized=False,
    nonneg=True,
    backward_kernels=backward_kernels,
    flatten_pairing=flatten_pairing,
  )
  return net, net.init(jax.random.key(0))


@pytest.mark.parametrize("arch,input_shape,flattened", FLATTENED)
def test_dense_after_the_flatten_pairs_inputs_as_the_released_code(
  arch, input_shape, flattened
):
  """nonvec_models.py:71, 94, 116, 139 flatten (C, H, W); init_methods.py:24-32 pairs
  the Linear's inputs 2m, 2m + 1 and its outputs 2n, 2n + 1. Read in the released
  order (units and channels named by their gates), our kernel is that init's, and no
  other pair of our inputs is an ON/OFF copy."""
  net, variables = _paired(arch, input_shape, "released")
  before, flatten, dense = _around_flatten(net)
  assert flatten.in_shape == flattened and dense.layer.kind == "dense"
  w = np.asarray(variables["params"][dense.name]["w"])  # (in, out), ours.
  rows = _released_input_rows(
    flattened, np.asarray(variables["fixed"][before.name]["t"])[0]
  )
  cols = _released_names(np.asarray(variables["fixed"][dense.name]["t"])[0])
  assert sorted(rows) == list(range(w.shape[0])) and sorted(cols) == list(
    range(w.shape[1])
  )
  released = w[np.ix_(rows, cols)].T  # The released Linear's (out, in) weight.
  w_half = released[::2, ::2] - released[::2, 1::2]
  np.testing.assert_array_equal(released, _init_methods_linear_mono(w_half))
  # W ~ N(0, 1 / (0.25 in_features)) (init_methods.py:25): s.e. of the std < 0.1 %.
  assert abs(w_half.std() * math.sqrt(0.25 * w.shape[0]) - 1) < 0.01
  # The pairs, (2m, 2m + 1) of the released order, and only they.
  partner = np.empty_like(rows)
  partner[rows[0::2]], partner[rows[1::2]] = rows[1::2], rows[0::2]
  assert _copy_partners(w) == [[p] for p in partner]
  # Neighbouring positions of one channel, never an ON/OFF channel pair; at 7 x 7
  # (49 positions, odd) each ON/OFF channel pair also joins one position of each.
  h, wd, c = flattened
  channel, position = rows % c, rows // c
  crossing = channel[0::2] != channel[1::2]
  assert crossing.sum() == (c // 2 if h * wd % 2 else 0)
  assert (position[0::2] != position[1::2]).all()
  assert (position[1::2][~crossing] == position[0::2][~crossing] + 1).all()


@pytest.mark.parametrize("arch,input_shape,flattened", FLATTENED)
def test_channel_pairing_is_the_same_draw_with_channels_paired(
  arch, input_shape, flattened
):
  """flatten_pairing="channels" pairs ON/OFF channels, adjacent in our (H, W, C)
  order (inputs 2i, 2i + 1), as before issue 20; the draw is the same, laid out in
  the released order, and every other variable is equal."""
  net, variables = _paired(arch, input_shape, "channels")
  released_net, released = _paired(arch, input_shape, "released")
  before, _, dense = _around_flatten(net)
  w = np.asarray(variables["params"][dense.name]["w"])
  assert _copy_partners(w) == [[i ^ 1] for i in range(w.shape[0])]
  rows = _released_input_rows(
    flattened, np.asarray(released["fixed"][before.name]["t"])[0]
  )
  w_released = np.asarray(released["params"][dense.name]["w"])
  np.testing.assert_array_equal(w_released[rows], w)
  released["params"][dense.name]["w"] = variables["params"][dense.name]["w"]
  chex.assert_trees_all_equal(released, variables)
  assert released_orders(released_net).keys() == {dense.name}
  assert released_orders(net) == {}


def test_backward_kernels_after_the_flatten_are_paired_as_the_weights():
  """The fixed backward kernels (feedback alignment) are drawn like the weights."""
  net, variables = _paired("conv", MNIST, "released", backward_kernels="fixed")
  before, flatten, dense = _around_flatten(net)
  rows = _released_input_rows(
    flatten.in_shape, np.asarray(variables["fixed"][before.name]["t"])[0]
  )
  partner = np.empty_like(rows)
  partner[rows[0::2]], partner[rows[1::2]] = rows[1::2], rows[0::2]
  for w in (
    variables["params"][dense.name]["w"],
    variables["fixed"][dense.name]["w_back"],
  ):
    assert _copy_partners(w) == [[p] for p in partner]


@pytest.mark.parametrize(
  "arch,vectorized,nonneg",
  [("conv", True, True), ("fc", False, True), ("lc", False, False)],
)
def test_flatten_pairing_leaves_other_nets_alone(arch, vectorized, nonneg):
  """vnn.py:254-259: the vectorized Flatten permutes to (H, W, C) first, so those nets
  pair ON/OFF channels as ours; an FC net flattens the raw image into its mixed-sign
  first layer; a mixed-sign net pairs nothing."""
  inits = []
  for flatten_pairing in ("released", "channels"):
    net = gevb_jax.make_network(
      arch,
      input_shape=(8, 8, 1),
      num_classes=10,
      vectorized=vectorized,
      nonneg=nonneg,
      flatten_pairing=flatten_pairing,
    )
    assert released_orders(net) == {}
    inits.append(net.init(jax.random.key(0)))
  chex.assert_trees_all_equal(*inits)


def test_a_bad_flatten_pairing_is_refused_in_one_line():
  with pytest.raises(ValueError, match="unknown flatten_pairing 'chw'; choose one of"):
    gevb_jax.make_network(
      "conv",
      input_shape=MNIST,
      num_classes=10,
      vectorized=False,
      nonneg=True,
      flatten_pairing="chw",
    )
  config = default_config.get_config()
  config_check.check_config(config)
  config.model.flatten_pairing = "chw"
  with pytest.raises(config_check.ConfigError) as err:
    config_check.check_config(config)
  assert str(err.value) == (
    "config.model.flatten_pairing='chw': choose released or channels"
  )
