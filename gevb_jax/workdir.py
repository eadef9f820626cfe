"""The run folder (workdir): its file names, the claim of a config, checkpoints, the
metric writer and the one reader of ``metrics.jsonl``.

A workdir holds

  config.json       the run's config, claimed before anything else is written;
  metrics.jsonl     one JSON object per evaluation, appended as the run goes;
  events.out.*      the same scalars for TensorBoard;
  checkpoints/      orbax checkpoints at evaluations and between them at most every
                    ``checkpoint_every_s`` (the latest kept, and those at
                    evaluations);
  checksums/        the SHA-256 of each checkpoint's arrays, checked on restore;
  summary.json      written last: a run with a summary is finished;
  log.txt           a sweep's record of the run's console output;
  lock              the PID of the process that runs in it, while it runs.

A run of several seeds in one program (``config.num_seeds`` > 1) writes one such
workdir per seed, ``<workdir>/seed_<s>`` (``seed_dir``), each exactly the folder a
run of that seed alone would write there: either can resume the other.
"""

import contextlib
import fcntl
import hashlib
import json
import math
import os
import shutil
import signal
import threading

import jax
import numpy as np
import orbax.checkpoint as ocp
import tensorboardX
from absl import logging

from gevb_jax.defaults import base_config

CONFIG = "config.json"
METRICS = "metrics.jsonl"
SUMMARY = "summary.json"
CHECKPOINTS = "checkpoints"
LOG = "log.txt"
LOCK = "lock"
CHECKSUMS = "checksums"

# Config sections or single fields that do not change what a run computes: a
# workdir's run may go on under other values of these. Where data sets are cached or
# fetched from is not identity: their checksums are. Nor is how many steps one
# compiled call runs (tests/test_train.py pins that).
NOT_IDENTITY = (
  "progress",
  "overwrite",
  "memory_budget_mb",
  "steps_per_call",
  "seconds_per_call",
  "checkpoint_every_s",
  "num_seeds",
  "data.cache_dir",
  "data.mirror",
)


# Fields of a metrics row that time the run rather than describe what it computed: a
# resumed or repeated run matches its rows in everything else.
TIMINGS = ("wall_time_s", "train_examples_per_s")


class WorkdirError(ValueError):
  """A workdir's file cannot be read, or the workdir belongs to another run."""


def seed_dir(workdir, seed):
  """The run folder of ``seed`` in the workdir of a run of several seeds."""
  return os.path.join(workdir, f"seed_{seed}")


def is_seed_dir(name):
  """Whether ``name`` is a folder name ``seed_dir`` gives."""
  prefix, _, seed = name.partition("_")
  return prefix == "seed" and seed.isascii() and seed.isdigit()


def seed_dirs(workdir, seed, num_seeds):
  """An iterator over the run folder of each seed that a run of seeds ``seed``, ...,
  ``seed + num_seeds - 1`` in ``workdir`` writes: ``workdir`` itself for one seed,
  ``seed_dir`` of each for several. Lazy: a run checks what it can before it walks
  ``num_seeds`` folders."""
  if num_seeds == 1:
    return iter([workdir])
  return (seed_dir(workdir, s) for s in range(seed, seed + num_seeds))


def _path(workdir, name):
  return os.path.join(workdir, name)


def finished(workdir):
  """Whether the run in ``workdir`` wrote a readable summary. A damaged one does not
  count: the run resumes from its checkpoints and writes it again."""
  try:
    return read_summary(workdir) is not None
  except WorkdirError:
    return False


def _read_json(workdir, name):
  """The JSON object in ``workdir/name``, or None when the file does not exist."""
  path = _path(workdir, name)
  if not os.path.exists(path):
    return None
  try:
    with open(path) as f:
      value = json.load(f)
  except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
    raise WorkdirError(f"{path}: unreadable ({err})") from None
  if not isinstance(value, dict):
    raise WorkdirError(f"{path}: expected a JSON object, got {type(value).__name__}")
  return value


def read_config(workdir):
  """The config dict of the run in ``workdir``, or None before it was claimed."""
  return _read_json(workdir, CONFIG)


def read_summary(workdir):
  """The summary dict of a finished run, or None."""
  return _read_json(workdir, SUMMARY)


def read_metrics(workdir, last_epoch=None):
  """The rows of ``metrics.jsonl``, in order; ``[]`` when there is none.

  A last line without its newline was cut short by a kill and is left out. Any other
  line that is not a JSON object with an integer ``epoch`` is skipped with a warning
  naming the file and line; the rows after it are kept.

  Args:
    workdir: the run folder.
    last_epoch: if given, rows of later epochs are left out (they belong to epochs
      whose checkpoint was lost).
  """
  path = _path(workdir, METRICS)
  if not os.path.exists(path):
    return []
  with open(path, encoding="utf-8", errors="replace") as f:
    lines = f.read().split("\n")
  rows = []
  for number, line in enumerate(lines[:-1], start=1):  # lines[-1]: after the last \n.
    if not line.strip():
      continue
    try:
      row = json.loads(line)
    except json.JSONDecodeError:
      row = None
    if not isinstance(row, dict) or not isinstance(row.get("epoch"), int):
      logging.warning("%s:%d: skipped, not a metrics row: %r", path, number, line[:60])
      continue
    if last_epoch is None or row["epoch"] <= last_epoch:
      rows.append(row)
  return rows


def _flatten(d, prefix=""):
  out = {}
  for k, v in d.items():
    if isinstance(v, dict):
      out.update(_flatten(v, f"{prefix}{k}."))
    else:
      out[f"{prefix}{k}"] = v
  return out


def _predating(old):
  """The fields a run's config lacks that it ran with other than at today's default:
  conventional nonnegative conv/LC nets paired ON/OFF channels after the flatten until
  issue 20 (``model.flatten_pairing``); other nets pair channels under either value."""
  model = old.get("model", {})
  if (
    model.get("arch") in ("conv", "lc")
    and model.get("vectorized") is False
    and model.get("nonneg") is True
  ):
    return {"model.flatten_pairing": "channels"}
  return {}


def flatten_pairing(old):
  """The flatten pairing (``init.FLATTEN_PAIRINGS``) the run of config ``old`` (a dict
  read from its config.json) ran with, a field older runs lack (``_predating``)."""
  model = old.get("model", {})
  predating = _predating(old).get("model.flatten_pairing", "released")
  return model.get("flatten_pairing", predating)


def config_changes(config, workdir):
  """``"key: old -> new"`` for every field that differs from the workdir's run.

  A field the workdir's config lacks counts at its default (``defaults``): runs begun
  before a field existed resume under a config that leaves it at its default, unless
  the run computed something else before the field existed (``_predating``).

  Args:
    config: an ``ml_collections.ConfigDict``.
    workdir: the run folder; ``[]`` if it holds no config yet.
  """
  try:
    old = read_config(workdir)
  except WorkdirError as err:
    return [str(err)]
  if old is None:
    return []
  # A field added to the defaults after the run began had its default in the run.
  defaults = _flatten(json.loads(base_config().to_json()))
  old = {**defaults, **_predating(old), **_flatten(old)}
  new = _flatten(json.loads(config.to_json()))
  return [
    f"{k}: {old.get(k)!r} -> {new.get(k)!r}"
    for k in sorted(set(new) | set(old))
    if not {k, k.split(".")[0]} & set(NOT_IDENTITY) and new.get(k) != old.get(k)
  ]


def _recorded_pid(fd):
  """The PID the lock's holder wrote into the lock file."""
  return os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"


@contextlib.contextmanager
def lock(workdir):
  """Holds the workdir's lock (an exclusive ``flock`` on ``lock``, which records the
  holder's PID) while the block runs. The kernel drops the lock when its process
  dies, however it dies, so a stale lock file is simply taken over.

  Raises:
    WorkdirError: another live process holds the lock.
  """
  os.makedirs(workdir, exist_ok=True)
  fd = os.open(_path(workdir, LOCK), os.O_RDWR | os.O_CREAT, 0o644)
  try:
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
  except BlockingIOError:
    pid = _recorded_pid(fd)
    os.close(fd)
    raise WorkdirError(
      f"workdir {workdir} is in use by process {pid}; wait for it "
      "or stop it, then run again"
    ) from None
  try:
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    yield
  finally:
    os.close(fd)


def holder(workdir):
  """The PID that holds the workdir's lock, or None when no live process does."""
  path = _path(workdir, LOCK)
  if not os.path.exists(path):
    return None
  fd = os.open(path, os.O_RDONLY)
  try:
    fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
  except BlockingIOError:
    return _recorded_pid(fd)
  finally:
    os.close(fd)
  return None


def claimable(config, workdir):
  """Whether ``config`` would start over in ``workdir``: True if the workdir holds a
  run of another config and ``config.overwrite`` allows starting over, False if it
  holds none or this config's own run.

  Raises:
    WorkdirError: the workdir holds another config's run and overwrite is off.
  """
  changes = config_changes(config, workdir)
  if changes and not config.overwrite:
    raise WorkdirError(
      f"workdir {workdir} holds a run with another config "
      f"({', '.join(changes)}); use another workdir or "
      "--config.overwrite=True to start over"
    )
  return bool(changes)


def _write_atomically(path, text):
  """Writes ``text`` to ``path`` through a temporary file: a kill leaves the old file
  or the new one, never half of either."""
  tmp = f"{path}.tmp"
  with open(tmp, "w") as f:
    f.write(text)
    f.flush()
    os.fsync(f.fileno())
  os.replace(tmp, path)


def claim(config, workdir, start_over):
  """Writes ``config.json``, first removing another config's run if ``start_over``."""
  if start_over:
    for name in (CHECKPOINTS, CHECKSUMS, METRICS, SUMMARY, *_event_files(workdir)):
      target = _path(workdir, name)
      if os.path.isdir(target):
        shutil.rmtree(target)
      elif os.path.exists(target):
        os.remove(target)
  os.makedirs(workdir, exist_ok=True)
  _write_atomically(
    _path(workdir, CONFIG),
    json.dumps(json.loads(config.to_json()), indent=2, sort_keys=True),
  )


def write_summary(workdir, summary):
  """Writes ``summary.json``, which marks the run finished."""
  _write_atomically(_path(workdir, SUMMARY), json.dumps(summary, indent=2))


def checkpoint_manager(workdir, keep_period):
  """An orbax manager of ``workdir/checkpoints`` that keeps the latest step and every
  ``keep_period``-th, saving synchronously."""
  return ocp.CheckpointManager(
    os.path.abspath(_path(workdir, CHECKPOINTS)),
    options=ocp.CheckpointManagerOptions(
      max_to_keep=1,
      keep_period=keep_period,
      enable_async_checkpointing=False,
      cleanup_tmp_directories=True,
    ),
  )


def _digest(state):
  """SHA-256 over every array of ``state``: dtype, shape and bytes, in tree order."""
  sha = hashlib.sha256()
  for leaf in jax.tree_util.tree_leaves(state):
    array = np.asarray(leaf)
    sha.update(f"{array.dtype}{array.shape}".encode())
    sha.update(np.ascontiguousarray(array).tobytes())
  return sha.hexdigest()


def _checksum_path(manager, epoch):
  return os.path.join(os.path.dirname(manager.directory), CHECKSUMS, str(epoch))


# The signals that stop a run (the CLI turns both into KeyboardInterrupt).
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


@contextlib.contextmanager
def _stop_signals_held():
  """Ctrl-C and SIGTERM that arrive in the block act when it ends: the first is sent
  again then, to the handler it would have met. Python runs signal handlers in the
  main thread whichever thread the kernel gave the signal, so holding them there
  covers orbax's threads too, which a signal mask of the main thread did not."""
  if threading.current_thread() is not threading.main_thread():
    yield  # Only the main thread sets handlers, and only it is interrupted.
    return
  held = []
  previous = {
    signum: signal.signal(signum, lambda signum, frame: held.append(signum))
    for signum in STOP_SIGNALS
  }
  try:
    yield
  finally:
    for signum, handler in previous.items():
      signal.signal(signum, signal.SIG_DFL if handler is None else handler)
  if held:
    signal.raise_signal(held[0])


def save(manager, epoch, state):
  """Checkpoints ``state`` as step ``epoch``, with its checksum beside it; checksums
  of steps the manager has since let go are removed. Ctrl-C and SIGTERM wait until
  the checkpoint and its checksum are on disk."""
  with _stop_signals_held():
    manager.save(epoch, args=ocp.args.StandardSave(state))
    path = _checksum_path(manager, epoch)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    _write_atomically(path, _digest(state))
    kept = {str(step) for step in manager.all_steps()}
    for name in os.listdir(os.path.dirname(path)):
      if name not in kept and not name.endswith(".tmp"):
        os.remove(os.path.join(os.path.dirname(path), name))


def _why_corrupt(manager, step, state):
  """Why a restored ``state`` cannot be trusted, or None."""
  for leaf in jax.tree_util.tree_leaves(state):
    array = np.asarray(leaf)
    if np.issubdtype(array.dtype, np.floating) and not np.isfinite(array).all():
      return "holds NaN or infinite values"
  path = _checksum_path(manager, step)
  if os.path.exists(path):  # Checkpoints written before checksums have none.
    with open(path) as f:
      if f.read().strip() != _digest(state):
        return f"does not match the checksum in {path}"
  return None


def restore_step(manager, step, abstract_state):
  """The checkpoint of epoch ``step`` if it exists and is sound, else None (kept)."""
  if step not in manager.all_steps():
    return None
  try:
    state = manager.restore(step, args=ocp.args.StandardRestore(abstract_state))
  except Exception:  # pylint: disable=broad-except
    return None
  return None if _why_corrupt(manager, step, state) else state


def _root_cause(err):
  """The innermost cause of ``err`` on one line, without the spec of the store that
  TensorStore appends (orbax's own wrapper names only a bound method)."""
  while err.__cause__ is not None:
    err = err.__cause__
  first = (str(err).splitlines() or [""])[0]
  return f"{type(err).__name__}: {first.split(' [tensorstore_spec')[0]}"


def stored_state(workdir, step):
  """The state checkpointed at epoch ``step`` in ``workdir``, in the shapes it was
  stored with, on this process's first device, if it restores soundly
  (``restore_step``: readable, finite, matching its checksum); else None. For looking
  at a run from outside it."""
  manager = checkpoint_manager(workdir, keep_period=1)
  path = os.path.join(manager.directory, str(step), "default")
  device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
  try:
    stored = ocp.StandardCheckpointer().metadata(path).item_metadata
  except Exception:  # pylint: disable=broad-except
    return None
  abstract = jax.tree_util.tree_map(
    lambda leaf: jax.ShapeDtypeStruct(leaf.shape, leaf.dtype, sharding=device), stored
  )
  return restore_step(manager, step, abstract)


def restore(manager, abstract_state):
  """Latest sound checkpoint ``(epoch, state)``, falling back past unreadable,
  non-finite or checksum-failing ones (each deleted, with a one-line warning);
  ``(None, None)`` when there is none."""
  for step in sorted(manager.all_steps(), reverse=True):
    try:
      state = manager.restore(step, args=ocp.args.StandardRestore(abstract_state))
      why = _why_corrupt(manager, step, state)
    except Exception as err:  # pylint: disable=broad-except
      why = f"is unreadable ({_root_cause(err)})"
    if why is None:
      return step, state
    logging.warning(
      "checkpoint at epoch %d %s; deleting it and falling back to the previous one",
      step,
      why,
    )
    manager.delete(step)
  return None, None


def resume(manager, workdir, fresh, evaluates):
  """Where the run in ``workdir`` stands: ``(epoch, state, history, lost)``.

  ``epoch`` and ``state`` are the latest sound checkpoint's (``restore``; ``(None,
  None)`` when there is none, and then the run starts from ``fresh``). ``history`` is
  its metrics rows up to that epoch. Checkpoints win over ``metrics.jsonl``: ``lost``
  lists ``(e, state at e)`` for every evaluation epoch up to ``epoch``
  (``evaluates(e)``) that has no row (a damaged line took it) and whose checkpoint is
  kept, for the trainer to evaluate again.
  """
  epoch, restored = restore(manager, fresh)
  history = read_metrics(workdir, last_epoch=-1 if epoch is None else epoch)
  if restored is None:
    return None, None, history, []
  print(f"resumed {workdir} from epoch {epoch}", flush=True)
  present = {row["epoch"] for row in history}
  lost = []
  for e in range(epoch + 1):
    if evaluates(e) and e not in present:
      kept = restored if e == epoch else restore_step(manager, e, fresh)
      if kept is not None:
        lost.append((e, kept))
  return epoch, restored, history, lost


def complete(workdir, evaluates):
  """Whether ``workdir`` holds a finished run with every evaluation in its metrics
  (``evaluates(e)``: whether epoch ``e`` is one). A finished run that lost rows (a
  damaged line) runs again from its last checkpoint, which rebuilds them and changes
  nothing else."""
  if not finished(workdir):
    return False
  epochs = read_summary(workdir).get("epochs_run")
  if not isinstance(epochs, int):
    return False
  present = {row["epoch"] for row in read_metrics(workdir)}
  return all(e in present for e in range(epochs + 1) if evaluates(e))


def _event_files(workdir):
  if not os.path.isdir(workdir):
    return []
  return [name for name in os.listdir(workdir) if name.startswith("events.out.")]


def _json_line(row):
  return json.dumps(_finite_or_none(row), allow_nan=False) + "\n"


def _finite_or_none(value):
  """JSON has no NaN: non-finite floats are written as null."""
  if isinstance(value, float) and not math.isfinite(value):
    return None
  if isinstance(value, dict):
    return {k: _finite_or_none(v) for k, v in value.items()}
  return value


class MetricWriter:
  """Appends evaluation rows to ``metrics.jsonl`` and their scalars to TensorBoard.

  Opening it rewrites ``metrics.jsonl`` with ``history`` only: rows of epochs whose
  checkpoint was lost are dropped, so a resumed run writes them again once. It also
  rewrites the TensorBoard events from ``history``, in one new event file: scalars a
  killed process never got to disk come back on resume.
  """

  def __init__(self, workdir, history):
    self._path = _path(workdir, METRICS)
    _write_atomically(self._path, "".join(_json_line(row) for row in history))
    for name in _event_files(workdir):
      os.remove(_path(workdir, name))
    self._tensorboard = tensorboardX.SummaryWriter(workdir)
    for row in history:
      self._add_scalars(row)
    self._tensorboard.flush()

  def write(self, row):
    """Appends one row; floats and dicts of floats (``{layer: angle}``) become
    TensorBoard scalars at ``row["step"]``."""
    with open(self._path, "a") as f:
      f.write(_json_line(row))
    self._add_scalars(row)
    self._tensorboard.flush()

  def _add_scalars(self, row):
    for key, value in row.items():
      if isinstance(value, float) and key != "wall_time_s":
        self._tensorboard.add_scalar(key, value, row["step"])
      elif isinstance(value, dict):
        for layer, v in value.items():
          if isinstance(v, float):  # Not a NaN, which metrics.jsonl holds as null.
            self._tensorboard.add_scalar(f"{key}/{layer}", v, row["step"])

  def close(self):
    self._tensorboard.close()
