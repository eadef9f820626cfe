"""Training and evaluation: one jitted, data-parallel step, epochs, checkpoints.

``train_and_evaluate(config, workdir)`` trains one network with one rule, the paper's
recipe (Appendix I): full train/test evaluation at epoch 0, every ``eval_every``
epochs and at the end; early stop at zero train error. The workdir receives
``config.json``, ``metrics.jsonl``, TensorBoard events, orbax ``checkpoints/`` (one per
epoch, the latest kept plus those at evaluations) and ``summary.json``.

Resuming is exact: an epoch's batches depend only on ``(seed, epoch)``, and the
state is checkpointed at epoch ends, so a run killed at any moment and rerun ends
with the same parameters and metrics as one that never stopped.
"""

import math
import os
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
import tqdm
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

import gevb_jax
from gevb_jax import clusters, config_check, data, grid, metrics, rules
from gevb_jax import workdir as run_folder


class TrainingError(RuntimeError):
  """A run cannot start or continue; the message says why."""


# --- Steps ---------------------------------------------------------------------


def _step(net, tx, rule, mesh):
  """One training step ``(state, x_all, y_all, idx) -> (state, loss)``, not jitted."""

  def step(state, x_all, y_all, idx):
    x, y = x_all[idx], y_all[idx]
    x = jax.lax.with_sharding_constraint(x, NamedSharding(mesh, P("data")))
    variables = {"params": state["params"], "fixed": state["fixed"]}
    loss, updates = rules.loss_and_updates(net, variables, x, y, rule)
    updates, opt_state = tx.update(updates, state["opt_state"], state["params"])
    params = optax.apply_updates(state["params"], updates)
    return {**state, "params": params, "opt_state": opt_state}, loss

  return step


def make_train_step(net, tx, rule, mesh):
  """Jitted step ``(state, x_all, y_all, idx) -> (state, loss)``.

  The dataset lives on the devices; ``idx`` (the batch's indices) is sharded over
  the mesh's "data" axis and so is the gathered batch, while parameters and optimizer
  state are replicated: XLA inserts the gradient all-reduce.
  """
  replicated = NamedSharding(mesh, P())
  return jax.jit(
    _step(net, tx, rule, mesh), donate_argnums=0, out_shardings=(replicated, replicated)
  )


def make_train_chunk(net, tx, rule, mesh):
  """Jitted ``(state, loss_sum, x_all, y_all, idx) -> (state, loss_sum)``: the steps
  of ``make_train_step`` over the rows of ``idx`` ``(steps, batch)`` as one
  ``lax.scan``, adding each step's loss to ``loss_sum`` in order. One call runs many
  steps, so the host dispatches once per chunk instead of once per step."""
  replicated = NamedSharding(mesh, P())
  step = _step(net, tx, rule, mesh)

  def chunk(state, loss_sum, x_all, y_all, idx):
    def body(carry, idx_row):
      state, loss_sum = carry
      state, loss = step(state, x_all, y_all, idx_row)
      return (state, loss_sum + loss), None

    return jax.lax.scan(body, (state, loss_sum), idx)[0]

  return jax.jit(chunk, donate_argnums=(0, 1), out_shardings=(replicated, replicated))


def run_epoch(
  train_chunk, state, x_all, y_all, batches, mesh, steps_per_call, progress=False, desc=""
):
  """Runs ``train_chunk`` over ``batches`` (indices, ``(steps, batch)``), up to
  ``steps_per_call`` steps per call (0: the whole epoch in one call).

  Returns the new state and the summed loss, still on the device. Without
  ``progress`` nothing here waits for the devices. With it, a tqdm bar counts
  examples per second, moving once per chunk: each chunk then waits for the one
  before, so that the bar follows the computation, not the dispatch.
  """
  sharding = NamedSharding(mesh, P(None, "data"))
  size = steps_per_call or len(batches)
  loss_sum = jnp.zeros((), jnp.float32)
  previous = None
  with tqdm.tqdm(
    total=batches.size,
    desc=desc,
    disable=not progress,
    leave=False,
    unit="ex",
    unit_scale=True,
  ) as bar:
    for start in range(0, len(batches), size):
      idx = jax.device_put(batches[start : start + size], sharding)
      state, loss_sum = train_chunk(state, loss_sum, x_all, y_all, idx)
      if progress:
        if previous is not None:
          previous[0].block_until_ready()
          bar.update(previous[1])
        previous = (loss_sum, idx.size)
    bar.update(bar.total - bar.n)
  return state, loss_sum


def make_eval_step(net, mesh):
  """Jitted ``(variables, x, y, weight) -> (summed errors, summed losses)``."""

  def step(variables, x, y, weight):
    x = jax.lax.with_sharding_constraint(x, NamedSharding(mesh, P("data")))
    logits = net.apply(variables, x)
    losses = optax.softmax_cross_entropy_with_integer_labels(logits, y)
    errors = (jnp.argmax(logits, -1) != y).astype(jnp.float32)
    return jnp.sum(errors * weight), jnp.sum(losses * weight)

  return jax.jit(step)


def evaluate(eval_step, variables, x, y, batch_size, mesh):
  """Error fraction and mean loss over a whole split (last batch padded)."""
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
  return float(errors) / n, float(losses) / n


# Float32 copies of a network's widest activation (K components included) counted per
# example of an evaluation batch (the forward pass) and of an alignment batch (plain
# autodiff's K-wide gradient). Checked, not derived: with them a Fashion-MNIST conv
# VNN's epoch-0 evaluation peaks at 1.34 GB in a 512 MB budget (benchmarks/README.md).
EVAL_COPIES = 4
ALIGNMENT_COPIES = 12


def memory_bounded_batches(net, config, num_devices):
  """Evaluation and alignment batch sizes whose activations fit the memory budget.

  ``config.eval_batch_size`` caps the first; each is a multiple of ``num_devices``
  and at least ``num_devices``.
  """
  budget = config.memory_budget_mb * 2**20
  per_copy = 4 * net.widest_activation

  def fit(copies, cap):
    n = min(cap, int(budget // (copies * per_copy))) // num_devices * num_devices
    return max(n, num_devices)

  return (
    fit(EVAL_COPIES, config.eval_batch_size),
    fit(ALIGNMENT_COPIES, config.metrics.alignment_examples),
  )


# --- Main loop -----------------------------------------------------------------


def _header(config, ds, net, mesh):
  """The console's first line: data, network, rule and devices."""
  shape = "x".join(map(str, ds.train_x.shape[1:]))
  experiment = grid.Experiment(config.model.arch, net.vectorized, net.nonneg, config.rule)
  devices = f"{mesh.size} {jax.default_backend()} device{'s' * (mesh.size > 1)}"
  return (
    f"{ds.name}: {len(ds.train_x)} train / {len(ds.test_x)} test images {shape}, "
    f"{ds.num_classes} classes | {experiment} (K = {net.num_components}) | "
    f"{devices}"
  )


def _eval_line(row):
  """One evaluation on one console line; alignment angles per layer, early to late."""
  line = (
    f"epoch {row['epoch']:>3}: train error {row['train_error']:.4f}, test error "
    f"{row['test_error']:.4f}, train loss {row['train_loss']:.4f}"
  )
  if "alignment" in row:
    line += (
      ", alignment " + "/".join(f"{v:.0f}" for v in row["alignment"].values()) + " deg"
    )
  return line


def data_mesh():
  """A 1-d mesh over every local device; batches are split along its "data" axis."""
  return Mesh(np.array(jax.devices()), ("data",))


def train_and_evaluate(config, workdir):
  """Trains per ``config`` in ``workdir``, resuming from its latest checkpoint.

  Returns the summary dict also written to ``summary.json``.
  """
  config = config.copy_and_resolve_references()
  config_check.check_config(config)
  config_check.check_workdir(workdir)
  if not run_folder.claimable(config, workdir) and run_folder.finished(workdir):
    print(f"{workdir} holds a finished run; nothing to do", flush=True)
    return run_folder.read_summary(workdir)

  mesh = data_mesh()
  if config.batch_size % mesh.size:
    raise TrainingError(
      f"batch_size {config.batch_size} does not divide over "
      f"{mesh.size} devices; use a multiple of {mesh.size}"
    )

  ds = data.load_dataset(config.data)
  config_check.check_data(config, ds)
  net = gevb_jax.make_network(
    config.model.arch,
    input_shape=ds.train_x.shape[1:],
    num_classes=ds.num_classes,
    vectorized=config.model.vectorized,
    nonneg=config.model.nonneg,
    widths=config.model.widths,
  )
  rules.check_rule(net, config.rule)
  config_check.check_memory(net, config, ds)
  eval_batch, probe_batch = memory_bounded_batches(net, config, mesh.size)
  tx = gevb_jax.make_optimizer(net, learning_rate=config.learning_rate)
  # Only a run that can start claims the workdir: a bad value leaves it as it was.
  with run_folder.lock(workdir):
    run_folder.claim(config, workdir, start_over=run_folder.claimable(config, workdir))
    print(_header(config, ds, net, mesh), flush=True)
    return _train(config, workdir, mesh, ds, net, tx, eval_batch, probe_batch)


def _evaluates(epoch, config):
  """Whether a run evaluates after ``epoch`` epochs: at 0, every ``eval_every`` and
  at the end."""
  return epoch == 0 or epoch % config.eval_every == 0 or epoch == config.num_epochs


def _train(config, workdir, mesh, ds, net, tx, eval_batch, probe_batch):
  """The run itself, in a claimed and locked workdir."""
  variables = net.init(jax.random.key(config.seed))
  state = {
    "params": variables["params"],
    "fixed": variables["fixed"],
    "opt_state": tx.init(variables["params"]),
  }
  manager = run_folder.checkpoint_manager(workdir, keep_period=config.eval_every)
  epoch, restored = run_folder.restore(manager, state)
  history = run_folder.read_metrics(workdir, last_epoch=-1 if epoch is None else epoch)
  if restored is not None:
    print(f"resumed {workdir} from epoch {epoch}", flush=True)

  replicated = NamedSharding(mesh, P())
  state = jax.device_put(state, replicated)
  x_all, y_all = jax.device_put((ds.train_x, ds.train_y), replicated)
  train_chunk = make_train_chunk(net, tx, config.rule, mesh)
  eval_step = make_eval_step(net, mesh)
  # The released analysis measures alignment on the first training batch in stored
  # order (alignment_and_concentration_viz.ipynb, cell 1: shuffle_train=False).
  probe = (
    ds.train_x[: config.metrics.alignment_examples],
    ds.train_y[: config.metrics.alignment_examples],
  )
  wall0 = time.time() - (history[-1]["wall_time_s"] if history else 0.0)
  steps_per_epoch = len(ds.train_x) // config.batch_size

  def make_row(epoch, state):
    """The evaluation of ``state`` after ``epoch`` epochs, as a metrics row."""
    variables = {"params": state["params"], "fixed": state["fixed"]}
    train_error, train_loss = evaluate(
      eval_step, variables, ds.train_x, ds.train_y, eval_batch, mesh
    )
    test_error, test_loss = evaluate(
      eval_step, variables, ds.test_x, ds.test_y, eval_batch, mesh
    )
    row = {
      "epoch": epoch,
      "step": epoch * steps_per_epoch,
      "train_error": train_error,
      "test_error": test_error,
      "train_loss": train_loss,
      "test_loss": test_loss,
      "wall_time_s": time.time() - wall0,
    }
    if config.metrics.alignment and config.rule != "bp":
      row["alignment"] = metrics.alignment(
        net, variables, *probe, config.rule, batch_size=probe_batch
      )
      if epoch == 0 and net.vectorized:
        row["relative_std"] = metrics.relative_std(
          net, variables, probe[0], batch_size=probe_batch
        )
        row["eq15_relative_std"] = metrics.eq15_prediction(net, variables)
    return row

  if restored is not None:
    # Checkpoints win over metrics.jsonl: evaluations it lost or that a damaged line
    # took are made again from the checkpoints kept at evaluation epochs.
    present = {row["epoch"] for row in history}
    for e in range(epoch + 1):
      if _evaluates(e, config) and e not in present:
        kept = restored if e == epoch else run_folder.restore_step(manager, e, state)
        if kept is not None:
          history.append(make_row(e, kept))
          print(f"rebuilt the evaluation of epoch {e} from its checkpoint", flush=True)
    history.sort(key=lambda row: row["epoch"])
    state = jax.device_put(restored, replicated)
  writer = run_folder.MetricWriter(workdir, history)

  def log_eval(epoch):
    row = make_row(epoch, state)
    writer.write(row)
    print(_eval_line(row), flush=True)
    return row

  if epoch is None:
    last = log_eval(0)
    run_folder.save(manager, 0, state)
    epoch = 0
  elif history:
    last = history[-1]
  else:  # No evaluation survives and none can be rebuilt: evaluate now.
    last = log_eval(epoch)
  stopped_early = config.stop_at_zero_train_error and last["train_error"] == 0
  show = config.progress and sys.stderr.isatty()
  while epoch < config.num_epochs and not stopped_early:
    epoch += 1
    batches = data.batch_indices(len(ds.train_x), config.batch_size, config.seed, epoch)
    state, loss_sum = run_epoch(
      train_chunk,
      state,
      x_all,
      y_all,
      batches,
      mesh,
      config.steps_per_call,
      progress=show,
      desc=f"epoch {epoch}",
    )
    if not math.isfinite(float(loss_sum)):
      raise TrainingError(
        f"non-finite training loss in epoch {epoch} "
        f"({float(loss_sum)}); the checkpoint of epoch {epoch - 1} "
        "is kept"
      )
    if _evaluates(epoch, config):
      last = log_eval(epoch)
      stopped_early = config.stop_at_zero_train_error and last["train_error"] == 0
    run_folder.save(manager, epoch, state)
  manager.wait_until_finished()
  writer.close()

  summary = {
    "final_train_error": last["train_error"],
    "final_test_error": last["test_error"],
    "epochs_run": epoch,
    "stopped_early": bool(stopped_early),
  }
  if config.metrics.cluster_quality and config.model.arch in grid.CLUSTERED_ARCHS:
    summary["cluster_quality"] = cluster_quality(net, config, ds, state, workdir)
  run_folder.write_summary(workdir, summary)
  return summary


def cluster_quality(net, config, ds, state, workdir):
  """Fig. 3: t-SNE cluster quality of the conv/LC representations, at init and now.

  Embeds the first ``config.metrics.tsne_examples`` training examples (0: all of
  them), as the authors' notebook embeds the training set (``conv_viz.ipynb``, cells
  4 and 9). Returns both scores, ``{"fig3b_rms": {"init", "final"},
  "section6_squared": {"init", "final"}}`` (see ``clusters``), and writes
  ``tsne_init.png`` and ``tsne_final.png`` beside the metrics.
  """
  n = config.metrics.tsne_examples or len(ds.train_x)
  x, y = ds.train_x[:n], ds.train_y[:n]
  represent = jax.jit(net.representation)
  scores = {
    "fig3b_rms": clusters.cluster_quality_rms,
    "section6_squared": clusters.cluster_quality_squared,
  }
  out = {name: {} for name in scores}
  for tag, variables in (
    ("init", net.init(jax.random.key(config.seed))),
    ("final", {"params": state["params"], "fixed": state["fixed"]}),
  ):
    reps = np.concatenate(
      [np.asarray(represent(variables, x[i : i + 1000])) for i in range(0, len(x), 1000)]
    )
    embedding = clusters.tsne_embedding(
      reps, iters=config.metrics.tsne_iters, seed=config.seed
    )
    for name, score in scores.items():
      out[name][tag] = score(embedding, y)
    clusters.scatter_png(
      embedding,
      y,
      os.path.join(workdir, f"tsne_{tag}.png"),
      f"{config.model.arch} {config.rule}, {tag}: quality "
      f"{out['fig3b_rms'][tag]:.3f} (Fig. 3B)",
    )
  return out
