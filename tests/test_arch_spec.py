"""Architectures from a layer spec (gevb_jax/arch_spec.py) or a tuple of layers."""

import jax
import numpy as np
import pytest

import gevb_jax
from gevb_jax import arch_spec, grid, models
from gevb_jax import init as initializers
from gevb_jax import layers as L


def _net(arch, input_shape=(8, 8, 1), vectorized=True, nonneg=True, **kwargs):
  return gevb_jax.make_network(
    arch,
    input_shape=input_shape,
    num_classes=10,
    vectorized=vectorized,
    nonneg=nonneg,
    **kwargs,
  )


@pytest.mark.parametrize(
  "spec, arch, input_shape",
  [
    ("flatten,dense(1024),dense(512)", "fc", (28, 28, 1)),
    ("conv(64,3),pool(2),conv(32,3),pool(2),flatten,dense(1024)", "conv", (28, 28, 1)),
    ("lc(32,3),pool(2),lc(32,3),pool(2),flatten,dense(1024)", "lc", (28, 28, 1)),
    (
      "conv(128,5),pool(2),conv(64,5),pool(2),conv(64,2,2,0),flatten,dense(1024)",
      "conv",
      (32, 32, 3),
    ),
  ],
)
@pytest.mark.parametrize("vectorized", [True, False])
def test_the_spec_of_a_paper_net_builds_that_net(spec, arch, input_shape, vectorized):
  """Tables 3-4 written as specs, stride and pad left at their defaults (1, k // 2)."""
  net = _net(spec, input_shape, vectorized)
  assert net == _net(arch, input_shape, vectorized)
  assert _net(net.layers[:-1], input_shape, vectorized) == net


def test_items_fill_in_stride_and_pad_and_keep_their_text():
  assert arch_spec.parse(" conv(8, 3) ,lc(6,5,2),conv(4,4,1,0),pool(3),flatten") == (
    arch_spec.Item("conv", (8, 3, 1, 1), "conv(8, 3)"),
    arch_spec.Item("lc", (6, 5, 2, 2), "lc(6,5,2)"),
    arch_spec.Item("conv", (4, 4, 1, 0), "conv(4,4,1,0)"),
    arch_spec.Item("pool", (3,), "pool(3)"),
    arch_spec.Item("flatten", (), "flatten"),
  )
  net = _net("lc(6,3,2),pool(2),flatten,dense(4)", input_shape=(9, 7, 2))
  assert net.layers == (
    L.LocallyConnected(6, 3, 2, 1),
    L.AvgPool(2),
    L.Flatten(),
    L.Dense(4),
    L.Dense(1),
  )
  assert [info.out_shape for info in net.info] == [
    (5, 4, 6),
    (2, 2, 6),
    (24,),
    (4,),
    (1,),
  ]


@pytest.mark.parametrize(
  "arch, kwargs, token, problem",
  [
    ("conv(8,3),polo(2),flatten", {}, "polo(2)", "is not a layer"),
    ("rnn", {}, "rnn", "is not a layer"),
    ("conv(8,3),", {}, "", "is not a layer"),
    ("conv(8)", {}, "conv(8)", "does not read as conv(C,k[,stride[,pad]])"),
    ("lc(8,3,1,1,0)", {}, "lc(8,3,1,1,0)", "does not read as lc(C,k[,stride[,pad]])"),
    ("flatten,dense(x)", {}, "dense(x)", "does not read as dense(N)"),
    ("flatten,dense(0)", {}, "dense(0)", "has N = 0"),
    ("pool(2),flatten", {}, "pool(2),flatten", "has no weighted layer"),
    ("conv(7,3),flatten", {}, "conv(7,3)", "has an odd width"),
    ("flatten,dense(8)", {"widths": (5,)}, "dense(5)", "has an odd width"),
    ("conv(8,3),pool(9),flatten", {}, "pool(9)", "shrinks the 8x8 map to nothing"),
    (
      "conv(8,3,3,0),lc(4,3,1,0),flatten",
      {},
      "lc(4,3,1,0)",
      "shrinks the 2x2 map to nothing",
    ),
    ("conv(8,3),dense(4)", {}, "dense(4)", "needs flat inputs, not (8, 8, 8)"),
    ("flatten,conv(8,3)", {}, "conv(8,3)", "needs an (H, W, C) map"),
    ("conv(8,3)", {}, "readout", "needs flat inputs"),
  ],
)
def test_a_bad_spec_is_refused_in_one_line_naming_its_token_and_the_grammar(
  arch, kwargs, token, problem
):
  with pytest.raises(arch_spec.SpecError) as error:
    _net(arch, **kwargs)
  message = str(error.value)
  assert message.startswith(f"arch {arch!r}: {token!r} {problem}")
  assert message.endswith(arch_spec.GRAMMAR) and "\n" not in message
  assert (
    "one of fc, conv, lc (Tables 3-4) or a spec: comma-separated dense(N), " in message
  )


def test_a_tuple_holds_layers_only():
  with pytest.raises(arch_spec.SpecError, match=r"'fc' is not a gevb_jax.layers layer"):
    _net((L.Flatten(), "fc"))


@pytest.mark.parametrize("vectorized", [True, False])
def test_mixed_sign_nets_take_odd_widths(vectorized):
  """Only a nonnegative net pairs its units ON/OFF; in a mixed-sign one an odd last
  unit keeps its ON gate and has no OFF partner."""
  net = _net("conv(5,3),flatten,dense(3)", vectorized=vectorized, nonneg=False)
  assert [info.out_shape[-1] for info in net.hidden] == [5, 3]
  t = np.asarray(initializers.gating_vectors(jax.random.key(7), 4, 5, vectorized))
  assert t.shape == (4, 5) and set(np.unique(t)) <= {-1.0, 1.0}
  np.testing.assert_array_equal(t[:, 1:4:2], -t[:, 0:4:2])
  if not vectorized:
    np.testing.assert_array_equal(t[0], [1, -1, 1, -1, 1])


def test_a_spec_names_itself_in_runs_and_tables():
  spec = "conv(4,3),flatten"
  experiment = grid.Experiment(spec, True, True, "gevb")
  assert experiment.name == f"{spec}-vectorized-nonneg-gevb"
  assert str(experiment) == f"{spec} Vectorized Nonneg GEVB"
  assert grid.arch_name("lc") == "LC" and grid.arch_name(spec) == spec
  assert models.spec_of(_net(spec).layers) == "conv(4,3,1,1),flatten,dense(1)"
