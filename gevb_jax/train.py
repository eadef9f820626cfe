"""Training: the jitted, data-parallel step, its compiled chunks, and the loop of the
paper's recipe over epochs, evaluations (``evaluation``) and checkpoints.

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
from gevb_jax import clusters, config_check, data, evaluation, grid, rules
from gevb_jax import workdir as run_folder
from gevb_jax.seeds import make_mesh, over_seeds, slot, stack


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
    out = lone_steps(slot(state, 0), loss_sum[0], x_all, y_all, idx[:, 0])
    return stack([out])

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
  evaluates = functools.partial(_evaluates, config=config)
  return not run_folder.claimable(config, workdir) and run_folder.complete(
    workdir, evaluates
  )


def train_and_evaluate(config, workdir, ds=None):
  """Trains per ``config`` in ``workdir``, resuming from the latest checkpoints.

  With ``config.num_seeds`` > 1, seeds ``seed, ..., seed + num_seeds - 1`` train as
  one vmapped program, each in its own ``workdir/seed_<s>`` (``seed_runs``).

  ``ds``: a ``data.Dataset`` already in memory, in place of the one ``config.data``
  names (benchmarks/train_on_random_data.py); it is checked like a loaded one.

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

  if ds is None:
    ds = data.load_dataset(config.data)
  config_check.check_data(config, ds)
  net = network(config, ds.train_x.shape[1:], ds.num_classes)
  rules.check_rule(net, config.rule)
  config_check.check_memory(net, config, ds)
  runs = list(seed_runs(config, workdir))
  finished = [_finished(c, w) for c, w in runs]
  setup = _make_setup(config, mesh, ds, net)
  # Only a run that can start claims its workdirs: a bad value leaves them as they were.
  with contextlib.ExitStack() as locks:
    for _, w in runs:
      locks.enter_context(run_folder.lock(w))
    for (c, w), done in zip(runs, finished, strict=True):
      if not done:
        run_folder.claim(c, w, start_over=run_folder.claimable(c, w))
    print(_header(config, ds, net, mesh), flush=True)
    summaries = _train(setup, runs, finished)
  return summaries[0] if config.num_seeds == 1 else summaries


def network(config, input_shape, num_classes):
  """The network ``config`` names, for images of ``input_shape`` in ``num_classes``
  classes."""
  return gevb_jax.make_network(
    config.model.arch,
    input_shape=input_shape,
    num_classes=num_classes,
    vectorized=config.model.vectorized,
    nonneg=config.model.nonneg,
    widths=config.model.widths,
    backward_kernels=rules.backward_kernels(config.rule),
    output_code=config.model.output_code,
    flatten_pairing=config.model.flatten_pairing,
  )


def _evaluates(epoch, config):
  """Whether a run evaluates after ``epoch`` epochs: at 0, every ``eval_every`` and
  at the end."""
  return epoch == 0 or epoch % config.eval_every == 0 or epoch == config.num_epochs


@dataclasses.dataclass(frozen=True)
class _Setup:
  """What the loop reads and never changes: the config, devices, data on the
  devices, network, optimizer and the compiled functions."""

  config: ml_collections.ConfigDict
  mesh: Mesh
  ds: data.Dataset
  net: object
  tx: object
  seeds: jax.Array  # (S,) uint32: the seeds of the stacked state, in order.
  x_all: jax.Array
  y_all: jax.Array
  train_chunk: object
  batch_indices: object
  evaluator: evaluation.Evaluator


def optimizer(net, config):
  """The run's optimizer: Adam at ``config.learning_rate`` with the nonnegativity
  projection, and Kolen-Pollack's weight decay for ``config.rule`` "kp"."""
  return gevb_jax.make_optimizer(
    net,
    learning_rate=config.learning_rate,
    weight_decay=config.kp_weight_decay if config.rule == "kp" else 0.0,
  )


def _make_setup(config, mesh, ds, net):
  tx = optimizer(net, config)
  num_seeds = config.num_seeds
  x_all, y_all = jax.device_put((ds.train_x, ds.train_y), NamedSharding(mesh, P()))
  return _Setup(
    config=config,
    mesh=mesh,
    ds=ds,
    net=net,
    tx=tx,
    seeds=jnp.arange(config.seed, config.seed + num_seeds, dtype=jnp.uint32),
    x_all=x_all,
    y_all=y_all,
    train_chunk=make_train_chunk(net, tx, config.rule, mesh, num_seeds),
    batch_indices=make_batch_indices(len(ds.train_x), config.batch_size, mesh, num_seeds),
    evaluator=evaluation.make_evaluator(net, config, ds, mesh),
  )


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
  manager: object = None
  writer: object = None
  wall0: float = 0.0
  # Examples trained and seconds spent training (evaluations aside) since the last
  # evaluation, in this process.
  trained: list = dataclasses.field(default_factory=lambda: [0, 0.0])

  @property
  def seed(self):
    return self.config.seed

  def timing(self):
    """The row's clock: wall time since the run began, and the training rate since
    the last evaluation (which it resets)."""
    out = {"wall_time_s": time.time() - self.wall0}
    examples, seconds = self.trained
    if seconds > 0:
      out["train_examples_per_s"] = examples / seconds
    self.trained = [0, 0.0]
    return out


def _train(setup, runs, finished):
  """The paper's loop (Appendix I) over every seed's claimed, locked workdir: resume,
  evaluate at epoch 0, then train an epoch, evaluate when due, checkpoint, until
  every seed is at zero train error or at the last epoch. Returns the summaries."""
  config = setup.config
  state, seeds = _resume(setup, runs, finished)
  _first_evaluations(setup, seeds, state)
  steps_per_call = config.steps_per_call  # None: sized by time on the first epoch.
  saved = time.time()
  while not all(run.done for run in seeds):
    # Seeds behind the others (a resume) catch up first; stopped seeds stay frozen.
    epoch = 1 + min(run.epoch for run in seeds if not run.done)
    going = [run for run in seeds if not run.done and run.epoch == epoch - 1]
    active = np.isin(np.arange(config.num_seeds), [run.slot for run in going])
    batches = setup.batch_indices(
      setup.seeds, jnp.full(config.num_seeds, epoch, jnp.int32)
    )
    if steps_per_call is None:
      steps_per_call = calibrated_steps_per_call(
        setup.train_chunk,
        state,
        active,
        setup.x_all,
        setup.y_all,
        batches,
        config.seconds_per_call,
      )
    state, going = _train_epoch(setup, state, going, active, batches, steps_per_call)
    due = [(run.slot, run) for run in going if _evaluates(epoch, config)]
    _log_rows(setup, epoch, state, due)
    # Every evaluation (the last epoch is one) is checkpointed, and otherwise at most
    # one epoch per checkpoint_every_s: a resume replays the epochs since.
    if due or time.time() - saved >= config.checkpoint_every_s:
      for run in going:
        run_folder.save(run.manager, epoch, slot(state, run.slot))
      saved = time.time()
    for run in going:
      run.done = run.stopped_early or epoch >= config.num_epochs
  return _summaries(setup, seeds, state)


def initial_states(net, tx, mesh, seeds):
  """The stacked training state of each seed of ``seeds`` (uint32 ``(S,)``), in one
  compiled call: drawn op by op, the init of a digits net took 3 s."""

  def init(seed):
    variables = net.init(jax.random.key(seed))
    return {
      "params": variables["params"],
      "fixed": variables["fixed"],
      "opt_state": tx.init(variables["params"]),
    }

  return jax.jit(over_seeds(init, len(seeds), (0,), mesh))(seeds)


def _resume(setup, runs, finished):
  """The stacked state every seed goes on from (its latest sound checkpoint, or its
  initial state), and each seed's ``_Seed`` with its checkpoint manager and metric
  writer open."""
  initial = initial_states(setup.net, setup.tx, setup.mesh, setup.seeds)
  seeds, states = [], []
  for index, ((c, w), done) in enumerate(zip(runs, finished, strict=True)):
    run = _Seed(c, w, index, done=done)
    seeds.append(run)
    fresh = slot(initial, index)
    states.append(fresh)
    if done:
      continue
    run.manager = run_folder.checkpoint_manager(w, keep_period=c.eval_every)
    run.epoch, restored, history, lost = run_folder.resume(
      run.manager, w, fresh, functools.partial(_evaluates, config=c)
    )
    run.wall0 = time.time() - (history[-1]["wall_time_s"] if history else 0.0)
    for epoch, kept in lost:
      [row] = evaluation.rows(
        setup.evaluator, epoch, stack([kept]), [(0, run.timing())], single=True
      )
      history.append(row)
      print(f"rebuilt the evaluation of epoch {epoch} from its checkpoint", flush=True)
    history.sort(key=lambda row: row["epoch"])
    if restored is not None:
      states[index] = restored
    run.writer = run_folder.MetricWriter(w, history)
    run.last = history[-1] if history else None
  per_seed = NamedSharding(setup.mesh, P("seeds"))
  return jax.device_put(stack(states), per_seed), seeds


def _first_evaluations(setup, seeds, state):
  """Epoch 0's evaluation (and checkpoint) of each seed with nothing checkpointed,
  and a new evaluation of any seed whose rows were all lost; then which seeds are
  done already."""
  config = setup.config
  fresh = [(run.slot, run) for run in seeds if not run.done and run.epoch is None]
  for _, run in fresh:
    run.epoch = 0
  _log_rows(setup, 0, state, fresh)
  for index, run in fresh:
    run_folder.save(run.manager, 0, slot(state, index))
  for run in seeds:
    if not run.done and run.last is None:  # No evaluation survives or can be rebuilt.
      _log_rows(setup, run.epoch, state, [(run.slot, run)])
    if not run.done:
      run.stopped_early = config.stop_at_zero_train_error and run.last["train_error"] == 0
      run.done = run.stopped_early or run.epoch >= config.num_epochs


def _log_rows(setup, epoch, state, due):
  """Evaluates the ``due`` ``(slot, _Seed)`` pairs after ``epoch`` epochs; writes and
  prints each row, and marks a seed at zero train error as stopped."""
  if not due:
    return
  timed = [(index, run.timing()) for index, run in due]
  rows = evaluation.rows(setup.evaluator, epoch, state, timed)
  several = setup.config.num_seeds > 1
  for (_, run), row in zip(due, rows, strict=True):
    run.writer.write(row)
    run.last = row
    print(_eval_line(row, run.seed if several else None), flush=True)
    run.stopped_early = setup.config.stop_at_zero_train_error and row["train_error"] == 0


def _train_epoch(setup, state, going, active, batches, steps_per_call):
  """One epoch of the ``going`` seeds (``active`` in the stack); returns the state and
  those of them whose training loss stayed finite (the others fail)."""
  config = setup.config
  epoch = going[0].epoch + 1
  start = time.perf_counter()
  state, loss_sum = run_epoch(
    setup.train_chunk,
    state,
    active,
    setup.x_all,
    setup.y_all,
    batches,
    steps_per_call,
    progress=config.progress and sys.stderr.isatty(),
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
      who = f"seed {run.seed}: " if config.num_seeds > 1 else ""
      run.failure = (
        f"{who}non-finite training loss in epoch {epoch} ({loss_sum[run.slot]}); its "
        f"checkpoints up to epoch {epoch - 1} are kept"
      )
      run.done = True
  return state, [run for run in going if run.failure is None]


def _summaries(setup, seeds, state):
  """Writes each seed's ``summary.json`` (the final errors, and t-SNE cluster quality
  when asked for); returns the summaries, or raises ``TrainingError`` naming every
  seed whose loss went non-finite."""
  config, summaries = setup.config, []
  for run in seeds:
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
        setup.net, run.config, setup.ds, slot(state, run.slot), run.workdir
      )
    run_folder.write_summary(run.workdir, summary)
    summaries.append(summary)
  failures = [run.failure for run in seeds if run.failure is not None]
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
