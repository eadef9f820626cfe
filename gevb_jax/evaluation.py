"""A run's evaluations (the paper's recipe, Appendix I): error and loss over the whole
train and test sets, and on the first training examples the alignment of each hidden
layer's update with the gradient, its sign agreement, and at epoch 0 r^l and Eq. 15
(Appendix E); in batches sized to the memory budget."""

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from gevb_jax import config_check, metrics, output_codes
from gevb_jax.seeds import over_seeds, slot

# Float32 copies of a network's widest activation (K components included) counted per
# example of an evaluation batch (the forward pass) and of an alignment batch (plain
# autodiff's K-wide gradient). Checked, not derived: with them a Fashion-MNIST conv
# VNN's epoch-0 evaluation peaks at 1.34 GB in a 512 MB budget (benchmarks/README.md).
EVAL_COPIES = 4
ALIGNMENT_COPIES = 12


def memory_bounded_batches(net, config, num_devices):
  """Evaluation and alignment batch sizes whose activations fit the memory budget.

  The budget is ``config_check.activation_budget``: on a GPU, a share of the device's
  memory. ``config.eval_batch_size`` caps the first, which evaluates
  ``config.num_seeds`` seeds at once; the second serves one seed at a time. Each is a
  multiple of ``num_devices`` and at least ``num_devices``.
  """
  budget = config_check.activation_budget(config)
  per_copy = 4 * net.widest_activation

  def fit(copies, cap):
    n = min(cap, int(budget // (copies * per_copy))) // num_devices * num_devices
    return max(n, num_devices)

  return (
    fit(EVAL_COPIES * config.num_seeds, config.eval_batch_size),
    fit(ALIGNMENT_COPIES, config.metrics.alignment_examples),
  )


def make_eval_step(net, mesh, num_seeds=1):
  """Jitted ``(variables, x, y, weight) -> (summed errors, summed losses)``, each
  ``(S,)``, for ``num_seeds`` stacked variables on one batch."""

  def step(variables, x, y, weight):
    x = jax.lax.with_sharding_constraint(x, NamedSharding(mesh, P("data")))
    logits = net.apply(variables, x)
    losses = output_codes.per_example_loss(logits, y, net.output_code, net.num_classes)
    errors = (net.predict(logits) != y).astype(jnp.float32)
    return jnp.sum(errors * weight), jnp.sum(losses * weight)

  return jax.jit(over_seeds(step, num_seeds, (0, None, None, None), mesh))


def evaluate(eval_step, variables, x, y, batch_size, mesh):
  """Each seed's error fraction and mean loss over a whole split (last batch padded),
  as two NumPy arrays ``(S,)``."""
  n = len(x)
  errors = losses = 0.0
  sharding = NamedSharding(mesh, P("data"))
  for start in range(0, n, batch_size):
    xb, yb = x[start : start + batch_size], y[start : start + batch_size]
    weight = np.ones(len(xb), np.float32)
    pad = batch_size - len(xb)
    if pad:
      xb = np.concatenate([xb, np.zeros((pad, *xb.shape[1:]), xb.dtype)])
      yb = np.concatenate([yb, np.zeros(pad, yb.dtype)])
      weight = np.concatenate([weight, np.zeros(pad, np.float32)])
    e, loss = eval_step(variables, *jax.device_put((xb, yb, weight), sharding))
    errors, losses = errors + e, losses + loss
  return np.asarray(errors, np.float64) / n, np.asarray(losses, np.float64) / n


@dataclasses.dataclass(frozen=True)
class Evaluator:
  """What a run's evaluations need: the network, rule, data and the compiled steps
  (``stacked`` for all of the run's seeds, ``single`` for one seed)."""

  net: Any
  rule: str
  ds: Any
  mesh: Any
  stacked: Any
  single: Any
  eval_batch: int
  probe_batch: int
  alignment_examples: int
  alignment: bool  # Whether to measure alignment and sign agreement.
  steps_per_epoch: int


def make_evaluator(net, config, ds, mesh):
  """The ``Evaluator`` of a run of ``config`` on ``ds``."""
  eval_batch, probe_batch = memory_bounded_batches(net, config, mesh.shape["data"])
  return Evaluator(
    net=net,
    rule=config.rule,
    ds=ds,
    mesh=mesh,
    stacked=make_eval_step(net, mesh, config.num_seeds),
    single=make_eval_step(net, mesh),
    eval_batch=eval_batch,
    probe_batch=probe_batch,
    alignment_examples=config.metrics.alignment_examples,
    alignment=config.metrics.alignment and config.rule != "bp",
    steps_per_epoch=len(ds.train_x) // config.batch_size,
  )


def rows(ev, epoch, state, due, single=False):
  """The metrics rows after ``epoch`` epochs of the seeds at the ``due`` ``(slot,
  timing)`` pairs of the stacked ``state`` (``single``: a stack of one seed), each
  row with its ``timing`` dict (the run's clock) after the errors and losses."""
  variables = {"params": state["params"], "fixed": state["fixed"]}
  eval_step = ev.single if single else ev.stacked
  ds = ev.ds
  train_error, train_loss = evaluate(
    eval_step, variables, ds.train_x, ds.train_y, ev.eval_batch, ev.mesh
  )
  test_error, test_loss = evaluate(
    eval_step, variables, ds.test_x, ds.test_y, ev.eval_batch, ev.mesh
  )
  out = []
  for s, timing in due:
    row = {
      "epoch": epoch,
      "step": epoch * ev.steps_per_epoch,
      "train_error": float(train_error[s]),
      "test_error": float(test_error[s]),
      "train_loss": float(train_loss[s]),
      "test_loss": float(test_loss[s]),
      **timing,
    }
    if ev.alignment:
      row.update(_probe_measurements(ev, slot(variables, s), epoch))
    out.append(row)
  return out


def _probe_measurements(ev, variables, epoch):
  """Alignment and sign agreement of one seed's ``variables`` on the probe examples,
  the first training examples in stored order, as the released analysis measures
  them (alignment_and_concentration_viz.ipynb, cell 1: shuffle_train=False); at epoch
  0 of a VNN also r^l and Eq. 15's prediction of it."""
  net, rule = ev.net, ev.rule
  probe = ev.ds.train_x[: ev.alignment_examples], ev.ds.train_y[: ev.alignment_examples]
  out = {
    "alignment": metrics.alignment(
      net, variables, *probe, rule, batch_size=ev.probe_batch
    ),
    "sign_agreement": metrics.sign_agreement(net, variables, *probe, rule),
  }
  if epoch == 0 and net.vectorized:
    out["relative_std"] = metrics.relative_std(
      net, variables, probe[0], batch_size=ev.probe_batch
    )
    out["eq15_relative_std"] = metrics.eq15_prediction(net, variables)
  return out
