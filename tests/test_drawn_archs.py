"""The learning rules on drawn architectures (issue 22): stacks of dense, conv, LC and
pooling layers written as specs (``gevb_jax.arch_spec``), not only the paper's twelve
nets, in both kinds of network and both signs of weights.

Each property draws ``GEVB_DRAWN_ARCHS`` architectures (25 unless set), e.g.

  GEVB_DRAWN_ARCHS=500 python -m pytest -o addopts= -p no:xdist tests/test_drawn_archs.py
"""

import functools
import os
from typing import NamedTuple

import chex
import hypothesis
import hypothesis.strategies as st
import jax
import numpy as np

import gevb_jax
from gevb_jax import grid, optim
from gevb_jax import layers as L
from tests import references

NUM_ARCHS = int(os.environ.get("GEVB_DRAWN_ARCHS", "25"))


# Each drawn net's program compiles once and runs once, on a tiny batch: LLVM's
# optimisations would cost more time than they save (they double the compile time).
# Its executable is dropped after the run: every cached executable holds about 270
# memory maps, so some 240 drawn nets in one process reached the kernel's 65 530
# (vm.max_map_count), and LLVM's next allocation failed with a segfault.
def once(*static_argnums):
  """``jax.jit`` for a program that runs once, its caches cleared after the run."""

  def decorate(fn):
    jitted = jax.jit(
      fn,
      static_argnums=static_argnums,
      compiler_options={"xla_backend_optimization_level": 0},
    )

    @functools.wraps(fn)
    def run(*args):
      outputs = jax.block_until_ready(jitted(*args))
      jax.clear_caches()
      return outputs

    return run

  return decorate


DRAWN = hypothesis.settings(
  max_examples=NUM_ARCHS,
  deadline=None,
  suppress_health_check=[hypothesis.HealthCheck.too_slow],
)


class Case(NamedTuple):
  """A drawn network and the seed of its variables and batch."""

  spec: str
  input_shape: tuple
  num_classes: int
  vectorized: bool
  nonneg: bool
  seed: int

  def build(self, batch):
    """``(net, variables, x, y)``: the net, variables (``draw_variables``) and a
    batch of ``batch`` images in [-1, 1] with their labels."""
    net = gevb_jax.make_network(
      self.spec,
      input_shape=self.input_shape,
      num_classes=self.num_classes,
      vectorized=self.vectorized,
      nonneg=self.nonneg,
    )
    rng = np.random.default_rng(self.seed)
    x = rng.uniform(-1, 1, (batch, *self.input_shape)).astype(np.float32)
    return net, draw_variables(net, rng), x, rng.integers(0, self.num_classes, batch)


def draw_variables(net, rng):
  """Variables shaped like ``net.init``'s, drawn in numpy: weights N(0, 2 / fan_in),
  or |N(0, 1)| / fan_in where the net keeps them nonnegative (``nonneg_mask``: past
  the first layer of a nonnegative net), biases N(0, 0.1^2), gates +-1 and DFA
  feedback uniform on [0, 1] (nonnegative) or [-1, 1].

  The properties below hold for any weights of these signs. ``net.init`` would
  compile its random draws anew for every architecture: seconds each on a CPU.
  """
  shapes = jax.eval_shape(net.init, jax.random.key(0))
  nonneg = optim.nonneg_mask(net, shapes["params"])
  params, fixed = {}, {}
  for info in net.weighted:
    fan_in = info.layer.fan_in(info.in_shape)
    shape = shapes["params"][info.name]
    w = rng.normal(size=shape["w"].shape)
    w = np.abs(w) / fan_in if nonneg[info.name]["w"] else w * np.sqrt(2 / fan_in)
    b = 0.1 * rng.normal(size=shape["b"].shape)
    params[info.name] = {"w": w.astype(np.float32), "b": b.astype(np.float32)}
  for name, shape in shapes["fixed"].items():
    fixed[name] = {"t": rng.choice(np.float32([-1, 1]), shape["t"].shape)}
    if "feedback" in shape:
      low = 0 if net.nonneg else -1
      feedback = rng.uniform(low, 1, shape["feedback"].shape).astype(np.float32)
      fixed[name]["feedback"] = feedback
  return {"params": params, "fixed": fixed}


def _map_item(draw, kind, shape, width):
  """A conv or LC item that fits the ``(h, w)`` map ``shape``, its text and output."""
  h, w = shape
  k = draw(st.integers(1, min(3, h, w)))
  stride = draw(st.integers(1, 2))
  pad = draw(st.one_of(st.none(), st.integers(0, k - 1)))
  args = [draw(width), k]
  if pad is not None:
    args += [stride, pad]
  elif stride != 1:
    args += [stride]
  pad = k // 2 if pad is None else pad
  shape = tuple((n + 2 * pad - k) // stride + 1 for n in shape)
  return f"{kind}({','.join(map(str, args))})", shape


@st.composite
def architectures(draw, nonneg):
  """``(spec, input_shape)``: 1-6 hidden weighted layers on an image of at most 7 x 7
  x 3, conv and LC layers (with average pooling between them) before the flatten,
  dense ones after it. Widths are even in a nonnegative net (ON/OFF pairs)."""
  width = st.integers(1, 4).map(lambda n: 2 * n) if nonneg else st.integers(1, 7)
  shape = (draw(st.integers(3, 7)), draw(st.integers(3, 7)))
  input_shape = (*shape, draw(st.integers(1, 3)))
  num_weighted = draw(st.integers(1, 6))
  num_maps = draw(st.integers(0, num_weighted))
  kinds = draw(
    st.lists(st.sampled_from(["conv", "lc"]), min_size=num_maps, max_size=num_maps)
  )
  items = []
  for kind in kinds:
    if min(shape) >= 2 and draw(st.booleans()):
      window = draw(st.integers(2, min(3, *shape)))
      items.append(f"pool({window})")
      shape = tuple(n // window for n in shape)
    item, shape = _map_item(draw, kind, shape, width)
    items.append(item)
  items.append("flatten")
  items += [f"dense({draw(width)})" for _ in range(num_weighted - num_maps)]
  return ",".join(items), input_shape


BOTH = st.booleans()


@st.composite
def cases(draw, vectorized=BOTH, nonneg=BOTH):
  """A ``Case``: a drawn architecture, either kind and sign unless given."""
  nonneg = draw(nonneg)
  spec, input_shape = draw(architectures(nonneg))
  return Case(
    spec,
    input_shape,
    draw(st.integers(2, 4)),
    draw(vectorized),
    nonneg,
    draw(st.integers(0, 2**16)),
  )


@once(0)
def _rules_and_references(net, variables, x, y):
  """One program per drawn net: its BP update and the gradient by autodiff, the
  update of the rule the paper compares with BP (GEVB or DFA), and the forward pass
  the hand-written sums read."""
  approx = grid.APPROX_RULE[grid.kind(net.vectorized)]
  return (
    gevb_jax.loss_and_updates(net, variables, x, y, "bp")[1],
    references.autodiff(net, variables, x, y),
    gevb_jax.loss_and_updates(net, variables, x, y, approx)[1],
    references.forward_trace(net, variables, x),
  )


@DRAWN
@hypothesis.given(case=cases())
def test_bp_gevb_and_dfa_equal_their_references(case):
  """In every kind and sign of net: BP equals autodiff of ``net.apply``; GEVB (in
  VNNs) equals Eq. 9 and DFA (in conventional nets) Eq. 5, written by hand."""
  net, variables, x, y = case.build(batch=3)
  bp, gradient, approx, trace = _rules_and_references(net, variables, x, y)
  chex.assert_trees_all_close(bp, gradient, rtol=1e-5, atol=1e-7)
  # float32 sums against numpy's float64, as for the paper's nets (test_rules.py).
  expected = references.sums_by_hand(net, variables, trace, y)
  chex.assert_trees_all_close(approx, expected, rtol=1e-4, atol=1e-6)


def _assert_signs_match(gradient, update, where):
  """Every nonzero entry of the gradient has the sign of the update's entry."""
  g, u = np.asarray(gradient), np.asarray(update)
  nonzero = g != 0
  mismatched = np.sum(np.sign(g[nonzero]) != np.sign(u[nonzero]))
  assert mismatched == 0, f"{where}: {mismatched} of {nonzero.sum()} signs differ"


def _unshared(net, variables):
  """The net with every conv layer replaced by an LC layer holding the conv's kernel
  at each position, and its variables: the same function, whose LC weights at a
  position get that position's term of the conv's update."""
  layers = tuple(
    L.LocallyConnected(lay.features, lay.kernel, lay.stride, lay.padding)
    if isinstance(lay, L.Conv)
    else lay
    for lay in net.layers[:-1]
  )
  twin = gevb_jax.make_network(
    layers,
    input_shape=net.input_shape,
    num_classes=net.num_classes,
    vectorized=net.vectorized,
    nonneg=net.nonneg,
  )
  params, fixed = {}, {}
  for info, twin_info in zip(net.weighted, twin.weighted):
    p = dict(variables["params"][info.name])
    if isinstance(info.layer, L.Conv):
      # (k, k, C_in, [K,] C) -> (H_out, W_out, C_in, k, k, [K,] C), ordered as patches.
      w = np.moveaxis(p["w"], 2, 0)
      p["w"] = np.broadcast_to(w, (*info.out_shape[:2], *w.shape))
      p["b"] = np.broadcast_to(p["b"], (net.num_components, *info.out_shape))
    params[twin_info.name] = p
    if info.name in variables["fixed"]:
      fixed[twin_info.name] = variables["fixed"][info.name]
  return twin, {"params": params, "fixed": fixed}


def _summed_over_positions(update):
  """An LC twin's update of a conv layer summed over positions: the conv's shape."""
  w = np.moveaxis(np.sum(update["w"], axis=(0, 1)), 0, 2)
  return {"w": w, "b": np.sum(update["b"], axis=(1, 2), keepdims=True)}


@once(0, 1)
def _logits_and_updates(net, rules, variables, x, y):
  """The logits, and the updates of each of ``rules``."""
  updates = (gevb_jax.loss_and_updates(net, variables, x, y, r)[1] for r in rules)
  return net.apply(variables, x), *updates


@DRAWN
@hypothesis.given(case=cases(vectorized=st.just(True), nonneg=st.just(True)))
def test_single_example_gevb_has_the_gradients_sign(case):
  """Section 4's sign match in a nonnegative VNN, on one example: delta_hat >= 0
  (Eq. 13 with W >= 0), so every weight and bias of a dense or LC hidden layer (one
  weight per position) moves with the gradient's sign (BP's update, the gradient by
  the test above). A conv weight is shared over positions: its update sums one term
  per position, and only the terms are sign-matched, not their sum. The terms are
  the updates of the LC twin (``_unshared``): it computes the net's function, and
  its GEVB updates sum to the conv's."""
  net, variables, x, y = case.build(batch=1)
  twin, twin_variables = _unshared(net, variables)
  twin_logits, twin_gradient, twin_gevb = _logits_and_updates(
    twin, ("bp", "gevb"), twin_variables, x, y
  )
  if twin != net:  # The net has conv layers.
    logits, gevb = _logits_and_updates(net, ("gevb",), variables, x, y)
    chex.assert_trees_all_close(twin_logits, logits, rtol=1e-5, atol=1e-6)
  for info, twin_info in zip(net.hidden, twin.hidden):
    if info.layer.kind == "conv":
      summed = _summed_over_positions(twin_gevb[twin_info.name])
      chex.assert_trees_all_close(summed, gevb[info.name], rtol=1e-5, atol=1e-6)
    for leaf in ("w", "b"):
      where = f"{case.spec}: {info.name}/{leaf}"
      g, u = twin_gradient[twin_info.name][leaf], twin_gevb[twin_info.name][leaf]
      _assert_signs_match(g, u, where + " per position" * (info.layer.kind == "conv"))
