"""Training and evaluation: one jitted, data-parallel step, epochs, checkpoints.

``train_and_evaluate(config, workdir)`` trains one network with one rule, the paper's
recipe (Appendix I): full train/test evaluation at epoch 0, every ``eval_every``
epochs and at the end; early stop at zero train error. The workdir receives
``config.json``, ``metrics.jsonl``, TensorBoard events, orbax ``checkpoints/`` (at every
evaluation and at most ``checkpoint_every_s`` apart between them; the latest kept plus
those at evaluations) and ``summary.json``.

Resuming is exact: an epoch's batches depend only on ``(seed, epoch)``, and the
state is checkpointed at epoch ends (every evaluation, and at most every
``checkpoint_every_s`` between them), so a run killed at any moment and rerun replays
the epochs since its last checkpoint and ends with the same parameters and metrics as
one that never stopped. With ``config.num_seeds`` > 1 the seeds train as one program,
each seed in its own workdir (``seed_runs``).
"""

import contextlib
import dataclasses
import functools
import math
import os
import sys
import time

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import tqdm
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

import gevb_jax
from gevb_jax import (
  clusters,
  config_check,
  data,
  grid,
  layers,
  metrics,
  output_codes,
  rules,
)
from gevb_jax import workdir as run_folder


class TrainingError(RuntimeError):
  """A run cannot start or continue; the message says why."""


# --- Steps ---------------------------------------------------------------------


def make_mesh(num_seeds=1):
  """A 2-d mesh over every local device: seeds are split along its "seeds" axis,
  which takes as many devices as divide both counts, and each seed's batches along
  the "data" axis, which takes the rest."""
  devices = np.array(jax.devices())
  seeds = math.gcd(len(devices), num_seeds)
  return Mesh(devices.reshape(seeds, -1), ("seeds", "data"))


@jax.jit
def _slot(tree, slot):
  """One seed's entries of a stacked pytree (one compiled call, not one per leaf)."""
  return jax.tree.map(lambda v: v[slot], tree)


@jax.jit
def _stack(trees):
  """The list of one pytree per seed as one pytree with a leading seed axis."""
  return jax.tree.map(lambda *v: jnp.stack(v), *trees)


def over_seeds(fn, num_seeds, in_axes, mesh):
  """``fn`` over stacked seeds: the arguments with an axis in ``in_axes`` and every
  output gain a leading seed axis ``S = num_seeds``.

  Seeds split over the devices of ``mesh``'s "seeds" axis, and every seed off the
  CPU, are ``jax.vmap``-ed, with the seed axis laid on that mesh axis. On one CPU
  device the seeds take turns (``lax.map``): vmapped, a conv net's convolutions
  become grouped convolutions, and two MNIST conv VNN seeds trained at 360 ex/s
  against 520 in turn (conv DFA 1100 against 2000; benchmarks/README.md). One seed
  runs ``fn`` itself on the squeezed arguments.
  """
  if num_seeds > 1 and (mesh.shape["seeds"] > 1 or not layers.tuned_for_cpu()):
    return jax.vmap(fn, in_axes=in_axes, spmd_axis_name="seeds")
  if num_seeds > 1:

    def in_turn(*args):
      def one(seeded):  # This seed's entries of the arguments with a seed axis.
        it = iter(seeded)
        return fn(*(a if axis is None else next(it) for a, axis in zip(args, in_axes)))

      seeded = tuple(a for a, axis in zip(args, in_axes) if axis is not None)
      return jax.lax.map(one, seeded)

    return in_turn

  def one_seed(*args):
    return _stack(
      [fn(*(a if axis is None else _slot(a, 0) for a, axis in zip(args, in_axes)))]
    )

  return one_seed


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


def make_train_step(net, tx, rule, mesh, num_seeds=1):
  """Jitted step ``(state, x_all, y_all, idx) -> (state, loss)`` of one seed.

  The dataset lives on the devices; ``idx`` (the batch's indices) is sharded over
  the mesh's "data" axis and so is the gathered batch, while parameters and optimizer
  state are replicated: XLA inserts the gradient all-reduce. With ``num_seeds`` > 1,
  the step of that many stacked seeds (``over_seeds``): ``state``, ``idx`` ``(S,
  batch)`` and the outputs carry a leading seed axis.
  """
  step = _step(net, tx, rule, mesh)
  if num_seeds > 1:
    per_seed = NamedSharding(mesh, P("seeds"))
    return jax.jit(
      over_seeds(step, num_seeds, (0, None, None, 0), mesh),
      donate_argnums=0,
      out_shardings=(per_seed, per_seed),
    )
  replicated = NamedSharding(mesh, P())
  return jax.jit(step, donate_argnums=0, out_shardings=(replicated, replicated))


def make_train_chunk(net, tx, rule, mesh, num_seeds=1):
  """Jitted ``(state, loss_sum, active, x_all, y_all, idx) -> (state, loss_sum)``.

  Runs the steps of ``num_seeds`` stacked seeds over the rows of ``idx``
  ``(steps, S, batch)`` as one ``lax.scan``, so the host dispatches once per chunk
  instead of once per step. ``state`` and ``loss_sum`` ``(S,)`` carry a leading seed
  axis; a seed whose ``active`` ``(S,)`` entry is False keeps its state and loss sum
  (it has stopped, or waits for the others to catch up), and each active seed adds
  its steps' losses to its own sum in order.
  """
  per_seed = NamedSharding(mesh, P("seeds"))
  step = _step(net, tx, rule, mesh)
  seeds_step = over_seeds(step, num_seeds, (0, None, None, 0), mesh)

  def keep_active(active, new, old):
    return jnp.where(active.reshape(-1, *(1,) * (new.ndim - 1)), new, old)

  def chunk(state, loss_sum, active, x_all, y_all, idx):
    def body(carry, idx_row):  # idx_row: (S, batch)
      state, loss_sum = carry
      new, loss = seeds_step(state, x_all, y_all, idx_row)
      state = jax.tree.map(functools.partial(keep_active, active), new, state)
      return (state, loss_sum + jnp.where(active, loss, 0.0)), None

    return jax.lax.scan(body, (state, loss_sum), idx)[0]

  if num_seeds > 1:
    return jax.jit(chunk, donate_argnums=(0, 1), out_shardings=(per_seed, per_seed))

  def lone_steps(state, loss_sum, x_all, y_all, idx):
    def body(carry, idx_row):
      state, loss_sum = carry
      state, loss = step(state, x_all, y_all, idx_row)
      return (state, loss_sum + loss), None

    return jax.lax.scan(body, (state, loss_sum), idx)[0]

  replicated = NamedSharding(mesh, P())
  lone_steps = jax.jit(
    lone_steps, donate_argnums=(0, 1), out_shardings=(replicated, replicated)
  )

  def lone_chunk(state, loss_sum, active, x_all, y_all, idx):
    """One seed, never frozen (its run ends when it stops), scanned unbatched: the
    steps of ``make_train_step`` to the bit. (Squeezing the seed axis inside the
    jitted scan lets XLA fuse the scan otherwise: chunk sizes then differ by rounding,
    tested again on 2026-12-03. Outside, it costs two copies of the state per call.)"""
    del active
    out = lone_steps(_slot(state, 0), loss_sum[0], x_all, y_all, idx[:, 0])
    return _stack([out])

  return lone_chunk


def make_batch_indices(num_examples, batch_size, mesh, num_seeds=1):
  """Jitted ``(seeds, epochs) -> idx`` ``(steps, S, batch)``: each seed's epoch of
  ``data.batch_indices``, drawn on the devices from its (seed, epoch)."""
  draw = over_seeds(
    functools.partial(data.batch_indices, num_examples, batch_size),
    num_seeds,
    (0, 0),
    mesh,
  )
  return jax.jit(
    lambda seeds, epochs: jnp.swapaxes(draw(seeds, epochs), 0, 1),
    out_shardings=NamedSharding(mesh, P(None, "seeds", "data")),
  )


def calibrated_steps_per_call(train_chunk, state, active, x_all, y_all, batches, seconds):
  """The steps per compiled call of ``train_chunk`` that take about ``seconds``.

  Times a two-step chunk on a copy of ``state`` (its result is dropped, so training is
  unchanged), after compiling it. A signal acts between calls (``run_epoch``), so
  calls of a few seconds keep a stop prompt on every net: a fixed 64 steps took 16 s
  for an MNIST conv VNN and over 2 min for a CIFAR-10 LC VNN (issue 23).

  Returns at least 1 and at most the epoch's steps.
  """
  steps = len(batches)
  if steps <= 1:
    return 1
  active = jnp.asarray(active)

  def two_steps():
    copy = jax.block_until_ready(jax.tree.map(jnp.copy, state))  # Not timed.
    start = time.perf_counter()
    out = train_chunk(
      copy, jnp.zeros(len(active), jnp.float32), active, x_all, y_all, batches[:2]
    )
    jax.block_until_ready(out)
    return time.perf_counter() - start

  two_steps()  # Compiles.
  per_step = two_steps() / 2
  return int(min(steps, max(1, seconds // per_step)))


def run_epoch(
  train_chunk,
  state,
  active,
  x_all,
  y_all,
  batches,
  steps_per_call,
  progress=False,
  desc="",
):
  """Runs ``train_chunk`` over ``batches`` (indices, ``(steps, S, batch)``, on the
  devices), up to ``steps_per_call`` steps per call (0: the whole epoch in one call).

  Returns the new state and each seed's summed loss ``(S,)``, still on the device.
  Without ``progress`` nothing here waits for the devices. With it, a tqdm bar counts
  examples per second, moving once per chunk: each chunk then waits for the one
  before, so that the bar follows the computation, not the dispatch.
  """
  steps = len(batches)
  size = steps_per_call or steps
  per_step = batches.shape[2] * int(np.sum(active))  # Examples the active seeds see.
  loss_sum = jnp.zeros(len(active), jnp.float32)
  active = jnp.asarray(active)
  previous = None
  with tqdm.tqdm(
    total=steps * per_step,
    desc=desc,
    disable=not progress,
    leave=False,
    unit="ex",
    unit_scale=True,
  ) as bar:
    for start in range(0, steps, size):
      idx = batches[start : start + size]
      state, loss_sum = train_chunk(state, loss_sum, active, x_all, y_all, idx)
      if progress:
        if previous is not None:
          previous[0].block_until_ready()
          bar.update(previous[1])
        previous = (loss_sum, len(idx) * per_step)
    bar.update(bar.total - bar.n)
  return state, loss_sum


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


# Float32 copies of a network's widest activation (K components included) counted per
# example of an evaluation batch (the forward pass) and of an alignment batch (plain
# autodiff's K-wide gradient). Checked, not derived: with them a Fashion-MNIST conv
# VNN's epoch-0 evaluation peaks at 1.34 GB in a 512 MB budget (benchmarks/README.md).
EVAL_COPIES = 4
ALIGNMENT_COPIES = 12


def memory_bounded_batches(net, config, num_devices):
  """Evaluation and alignment batch sizes whose activations fit the memory budget.

  ``config.eval_batch_size`` caps the first, which evaluates ``config.num_seeds``
  seeds at once; the second serves one seed at a time. Each is a multiple of
  ``num_devices`` and at least ``num_devices``.
  """
  budget = config.memory_budget_mb * 2**20
  per_copy = 4 * net.widest_activation

  def fit(copies, cap):
    n = min(cap, int(budget // (copies * per_copy))) // num_devices * num_devices
    return max(n, num_devices)

  return (
    fit(EVAL_COPIES * config.num_seeds, config.eval_batch_size),
    fit(ALIGNMENT_COPIES, config.metrics.alignment_examples),
  )


# --- Main loop -----------------------------------------------------------------


def _header(config, ds, net, mesh):
  """The console's first line: data, network, rule, seeds and devices."""
  shape = "x".join(map(str, ds.train_x.shape[1:]))
  experiment = grid.Experiment(
    config.model.arch, net.vectorized, net.nonneg, config.rule, net.output_code
  )
  devices = f"{mesh.size} {jax.default_backend()} device{'s' * (mesh.size > 1)}"
  seeds = ""
  if config.num_seeds > 1:
    seeds = f"seeds {config.seed}-{config.seed + config.num_seeds - 1} in one program | "
  return (
    f"{ds.name}: {len(ds.train_x)} train / {len(ds.test_x)} test images {shape}, "
    f"{ds.num_classes} classes | {experiment} (K = {net.num_components}) | "
    f"{seeds}{devices}"
  )


def _eval_line(row, seed=None):
  """One evaluation on one console line; alignment angles per layer, early to late.
  ``seed`` (when several train at once) leads the line."""
  line = (
    f"epoch {row['epoch']:>3}: train error {row['train_error']:.4f}, test error "
    f"{row['test_error']:.4f}, train loss {row['train_loss']:.4f}"
  )
  if "alignment" in row:
    line += (
      ", alignment " + "/".join(f"{v:.0f}" for v in row["alignment"].values()) + " deg"
    )
  if "train_examples_per_s" in row:
    line += f" | trained at {row['train_examples_per_s']:.0f} ex/s"
  return line if seed is None else f"seed {seed} {line}"


def seed_runs(config, workdir):
  """Yields ``(config, workdir)`` of each seed a run of ``config`` trains: the config
  itself in ``workdir`` for one seed; for several, seed ``s``'s config (``seed = s``,
  ``num_seeds = 1``) in ``workdir/seed_<s>`` (``workdir.seed_dirs``). Lazy, as
  ``seed_dirs`` is."""
  folders = run_folder.seed_dirs(workdir, config.seed, config.num_seeds)
  if config.num_seeds == 1:
    yield config, next(folders)
    return
  for offset, folder in enumerate(folders):
    one = config.copy_and_resolve_references()
    one.seed, one.num_seeds = config.seed + offset, 1
    yield one, folder


def _finished(config, workdir):
  """Whether ``workdir`` holds this config's finished run (``WorkdirError`` when it
  holds another config's and overwrite is off)."""
  return not run_folder.claimable(config, workdir) and _complete(config, workdir)


def train_and_evaluate(config, workdir):
  """Trains per ``config`` in ``workdir``, resuming from the latest checkpoints.

  With ``config.num_seeds`` > 1, seeds ``seed, ..., seed + num_seeds - 1`` train as
  one vmapped program, each in its own ``workdir/seed_<s>`` (``seed_runs``).

  Returns the summary written to ``summary.json``; with several seeds, the list of
  their summaries in seed order.
  """
  config = config.copy_and_resolve_references()
  config_check.check_config(config)
  config_check.check_workdir(workdir, config.num_seeds)
  # Stops at the first unfinished seed: a huge num_seeds meets the memory check below
  # before its folders are walked.
  if all(_finished(c, w) for c, w in seed_runs(config, workdir)):
    print(f"{workdir} holds a finished run; nothing to do", flush=True)
    summaries = [run_folder.read_summary(w) for _, w in seed_runs(config, workdir)]
    return summaries[0] if config.num_seeds == 1 else summaries

  mesh = make_mesh(config.num_seeds)
  data_devices = mesh.shape["data"]
  if config.batch_size % data_devices:
    raise TrainingError(
      f"batch_size {config.batch_size} does not divide over {data_devices} "
      f"devices{' per seed' * (config.num_seeds > 1)}; use a multiple of {data_devices}"
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
    backward_kernels=rules.backward_kernels(config.rule),
    output_code=config.model.output_code,
    flatten_pairing=config.model.flatten_pairing,
  )
  rules.check_rule(net, config.rule)
  config_check.check_memory(net, config, ds)
  runs = list(seed_runs(config, workdir))
  finished = [_finished(c, w) for c, w in runs]
  eval_batch, probe_batch = memory_bounded_batches(net, config, data_devices)
  tx = gevb_jax.make_optimizer(
    net,
    learning_rate=config.learning_rate,
    weight_decay=config.kp_weight_decay if config.rule == "kp" else 0.0,
  )
  # Only a run that can start claims its workdirs: a bad value leaves them as they were.
  with contextlib.ExitStack() as locks:
    for _, w in runs:
      locks.enter_context(run_folder.lock(w))
    for (c, w), done in zip(runs, finished, strict=True):
      if not done:
        run_folder.claim(c, w, start_over=run_folder.claimable(c, w))
    print(_header(config, ds, net, mesh), flush=True)
    summaries = _train(config, runs, finished, mesh, ds, net, tx, eval_batch, probe_batch)
  return summaries[0] if config.num_seeds == 1 else summaries


def _evaluates(epoch, config):
  """Whether a run evaluates after ``epoch`` epochs: at 0, every ``eval_every`` and
  at the end."""
  return epoch == 0 or epoch % config.eval_every == 0 or epoch == config.num_epochs


def _complete(config, workdir):
  """Whether ``workdir`` holds a finished run with every evaluation in its metrics. A
  finished run that lost rows (a damaged line) runs again from its last checkpoint,
  which rebuilds them and changes nothing else."""
  if not run_folder.finished(workdir):
    return False
  epochs = run_folder.read_summary(workdir).get("epochs_run")
  if not isinstance(epochs, int):
    return False
  present = {row["epoch"] for row in run_folder.read_metrics(workdir)}
  return all(e in present for e in range(epochs + 1) if _evaluates(e, config))


@dataclasses.dataclass
class _Seed:
  """One seed's run as the loop goes: its config (``seed`` its own), workdir, slot in
  the stacked state, and where it stands."""

  config: ml_collections.ConfigDict
  workdir: str
  slot: int
  epoch: int | None = None  # Epochs trained so far; None: nothing checkpointed.
  done: bool = False
  stopped_early: bool = False
  failure: str | None = None
  last: dict | None = None  # The latest evaluation row.
  history: list = dataclasses.field(default_factory=list)
  manager: object = None
  writer: object = None
  wall0: float = 0.0
  # Examples trained and seconds spent training (evaluations aside) since the last
  # evaluation, in this process.
  trained: list = dataclasses.field(default_factory=lambda: [0, 0.0])

  @property
  def seed(self):
    return self.config.seed


def _train(config, runs, finished, mesh, ds, net, tx, eval_batch, probe_batch):
  """The run itself, every seed's workdir claimed and locked; returns the summaries."""
  num_seeds = config.num_seeds
  several = num_seeds > 1
  seeds = jnp.arange(config.seed, config.seed + num_seeds, dtype=jnp.uint32)

  def init_state(seed):
    variables = net.init(jax.random.key(seed))
    return {
      "params": variables["params"],
      "fixed": variables["fixed"],
      "opt_state": tx.init(variables["params"]),
    }

  # One compiled call: drawn op by op, the init of a digits net took 3 s.
  state = jax.jit(over_seeds(init_state, num_seeds, (0,), mesh))(seeds)
  per_seed = NamedSharding(mesh, P("seeds"))
  replicated = NamedSharding(mesh, P())
  x_all, y_all = jax.device_put((ds.train_x, ds.train_y), replicated)
  train_chunk = make_train_chunk(net, tx, config.rule, mesh, num_seeds)
  batch_indices = make_batch_indices(len(ds.train_x), config.batch_size, mesh, num_seeds)
  eval_step = make_eval_step(net, mesh, num_seeds)
  # The released analysis measures alignment on the first training batch in stored
  # order (alignment_and_concentration_viz.ipynb, cell 1: shuffle_train=False).
  probe = (
    ds.train_x[: config.metrics.alignment_examples],
    ds.train_y[: config.metrics.alignment_examples],
  )
  steps_per_epoch = len(ds.train_x) // config.batch_size

  def make_rows(epoch, state, due, eval_step):
    """The evaluations of the ``due`` ``(slot, run)`` seeds in ``state`` (stacked)
    after ``epoch`` epochs, as ``[(run, metrics row)]``."""
    variables = {"params": state["params"], "fixed": state["fixed"]}
    train_error, train_loss = evaluate(
      eval_step, variables, ds.train_x, ds.train_y, eval_batch, mesh
    )
    test_error, test_loss = evaluate(
      eval_step, variables, ds.test_x, ds.test_y, eval_batch, mesh
    )
    rows = []
    for slot, run in due:
      row = {
        "epoch": epoch,
        "step": epoch * steps_per_epoch,
        "train_error": float(train_error[slot]),
        "test_error": float(test_error[slot]),
        "train_loss": float(train_loss[slot]),
        "test_loss": float(test_loss[slot]),
        "wall_time_s": time.time() - run.wall0,
      }
      examples, seconds = run.trained
      if seconds > 0:
        row["train_examples_per_s"] = examples / seconds
      run.trained = [0, 0.0]
      if config.metrics.alignment and config.rule != "bp":
        one = _slot(variables, slot)
        row["alignment"] = metrics.alignment(
          net, one, *probe, config.rule, batch_size=probe_batch
        )
        row["sign_agreement"] = metrics.sign_agreement(net, one, *probe, config.rule)
        if epoch == 0 and net.vectorized:
          row["relative_std"] = metrics.relative_std(
            net, one, probe[0], batch_size=probe_batch
          )
          row["eq15_relative_std"] = metrics.eq15_prediction(net, one)
      rows.append((run, row))
    return rows

  def log(run, row):
    run.writer.write(row)
    run.last = row
    print(_eval_line(row, run.seed if several else None), flush=True)

  seed_states = []
  states = []
  eval_one = make_eval_step(net, mesh)  # For evaluations rebuilt from one checkpoint.
  for slot, ((c, w), done) in enumerate(zip(runs, finished, strict=True)):
    run = _Seed(c, w, slot, done=done)
    seed_states.append(run)
    fresh = _slot(state, slot)
    states.append(fresh)
    if done:
      continue
    run.manager = run_folder.checkpoint_manager(w, keep_period=c.eval_every)
    run.epoch, restored = run_folder.restore(run.manager, fresh)
    run.history = run_folder.read_metrics(
      w, last_epoch=-1 if run.epoch is None else run.epoch
    )
    run.wall0 = time.time() - (run.history[-1]["wall_time_s"] if run.history else 0.0)
    if restored is None:
      continue
    print(f"resumed {w} from epoch {run.epoch}", flush=True)
    # Checkpoints win over metrics.jsonl: evaluations it lost or that a damaged line
    # took are made again from the checkpoints kept at evaluation epochs.
    present = {row["epoch"] for row in run.history}
    for e in range(run.epoch + 1):
      if _evaluates(e, c) and e not in present:
        kept = (
          restored if e == run.epoch else run_folder.restore_step(run.manager, e, fresh)
        )
        if kept is not None:
          [(_, row)] = make_rows(e, _stack([kept]), [(0, run)], eval_one)
          run.history.append(row)
          print(f"rebuilt the evaluation of epoch {e} from its checkpoint", flush=True)
    run.history.sort(key=lambda row: row["epoch"])
    states[slot] = restored
  state = jax.device_put(_stack(states), per_seed)

  for run in seed_states:
    if run.done:
      continue
    run.writer = run_folder.MetricWriter(run.workdir, run.history)
    if run.history:
      run.last = run.history[-1]
  fresh = [(run.slot, run) for run in seed_states if not run.done and run.epoch is None]
  if fresh:
    for _, run in fresh:
      run.epoch = 0
    for run, row in make_rows(0, state, fresh, eval_step):
      log(run, row)
    for slot, run in fresh:
      run_folder.save(run.manager, 0, _slot(state, slot))
  for run in seed_states:
    if not run.done and run.last is None:  # No evaluation survives or can be rebuilt.
      [(_, row)] = make_rows(run.epoch, state, [(run.slot, run)], eval_step)
      log(run, row)
    if not run.done:
      run.stopped_early = config.stop_at_zero_train_error and run.last["train_error"] == 0
      run.done = run.stopped_early or run.epoch >= config.num_epochs

  show = config.progress and sys.stderr.isatty()
  saved = time.time()
  steps_per_call = config.steps_per_call  # None: sized by time on the first epoch.
  while not all(run.done for run in seed_states):
    # Seeds behind the others (a resume) catch up first; stopped seeds stay frozen.
    epoch = 1 + min(run.epoch for run in seed_states if not run.done)
    going = [run for run in seed_states if not run.done and run.epoch == epoch - 1]
    active = np.zeros(num_seeds, bool)
    active[[run.slot for run in going]] = True
    batches = batch_indices(seeds, jnp.full(num_seeds, epoch, jnp.int32))
    if steps_per_call is None:
      steps_per_call = calibrated_steps_per_call(
        train_chunk, state, active, x_all, y_all, batches, config.seconds_per_call
      )
    start = time.perf_counter()
    state, loss_sum = run_epoch(
      train_chunk,
      state,
      active,
      x_all,
      y_all,
      batches,
      steps_per_call,
      progress=show,
      desc=f"epoch {epoch}",
    )
    loss_sum = np.asarray(loss_sum)  # Waits for the epoch.
    seconds = time.perf_counter() - start
    for run in going:
      run.epoch = epoch
      run.trained = [
        run.trained[0] + batches.shape[0] * batches.shape[2],
        run.trained[1] + seconds,
      ]
      if not math.isfinite(loss_sum[run.slot]):
        run.failure = (
          f"{f'seed {run.seed}: ' if several else ''}non-finite training loss in epoch "
          f"{epoch} ({loss_sum[run.slot]}); its checkpoints up to epoch {epoch - 1} are "
          "kept"
        )
        run.done = True
    going = [run for run in going if run.failure is None]
    due = [(run.slot, run) for run in going if _evaluates(epoch, config)]
    if due:
      for run, row in make_rows(epoch, state, due, eval_step):
        log(run, row)
        run.stopped_early = config.stop_at_zero_train_error and row["train_error"] == 0
    # Every evaluation (the last epoch is one) is checkpointed, and otherwise at most
    # one epoch per checkpoint_every_s: a resume replays the epochs since.
    if due or time.time() - saved >= config.checkpoint_every_s:
      for run in going:
        run_folder.save(run.manager, epoch, _slot(state, run.slot))
      saved = time.time()
    for run in going:
      run.done = run.stopped_early or epoch >= config.num_epochs

  summaries = []
  for run in seed_states:
    if run.manager is None:  # Finished before this process started.
      summaries.append(run_folder.read_summary(run.workdir))
      continue
    run.manager.wait_until_finished()
    run.writer.close()
    if run.failure is not None:
      continue
    summary = {
      "final_train_error": run.last["train_error"],
      "final_test_error": run.last["test_error"],
      "epochs_run": run.epoch,
      "stopped_early": bool(run.stopped_early),
    }
    if config.metrics.cluster_quality and config.model.arch in grid.CLUSTERED_ARCHS:
      summary["cluster_quality"] = cluster_quality(
        net, run.config, ds, _slot(state, run.slot), run.workdir
      )
    run_folder.write_summary(run.workdir, summary)
    summaries.append(summary)
  failures = [run.failure for run in seed_states if run.failure is not None]
  if failures:
    raise TrainingError("; ".join(failures))
  return summaries


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
