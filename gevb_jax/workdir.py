"""The run folder (workdir): its file names, the claim of a config, checkpoints, the
metric writer and the one reader of ``metrics.jsonl``.

A workdir holds

  config.json       the run's config, claimed before anything else is written;
  metrics.jsonl     one JSON object per evaluation, appended as the run goes;
  events.out.*      the same scalars for TensorBoard;
  checkpoints/      orbax checkpoints, one per epoch (the latest kept, and those at
                    evaluations);
  summary.json      written last: a run with a summary is finished;
  log.txt           a sweep's record of the run's console output.
"""

import json
import os
import shutil

import orbax.checkpoint as ocp
import tensorboardX
from absl import logging

CONFIG = "config.json"
METRICS = "metrics.jsonl"
SUMMARY = "summary.json"
CHECKPOINTS = "checkpoints"
LOG = "log.txt"

# Config sections or single fields that do not change what a run computes: a
# workdir's run may go on under other values of these. Where data sets are cached or
# fetched from is not identity: their checksums are.
NOT_IDENTITY = (
  "progress",
  "overwrite",
  "memory_budget_mb",
  "data.cache_dir",
  "data.mirror",
)


class WorkdirError(ValueError):
  """A workdir's file cannot be read, or the workdir belongs to another run."""


def _path(workdir, name):
  return os.path.join(workdir, name)


def finished(workdir):
  """Whether the run in ``workdir`` wrote its summary."""
  return os.path.exists(_path(workdir, SUMMARY))


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
  line that is not a JSON object with an ``epoch`` raises ``WorkdirError`` naming the
  file and line: no row after it is dropped silently.

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
      raise WorkdirError(f"{path}:{number}: not a metrics row: {line[:60]!r}")
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


def config_changes(config, workdir):
  """``"key: old -> new"`` for every field that differs from the workdir's run.

  Args:
    config: an ``ml_collections.ConfigDict``.
    workdir: the run folder; ``[]`` if it holds no config yet.
  """
  old = read_config(workdir)
  if old is None:
    return []
  old, new = _flatten(old), _flatten(json.loads(config.to_json()))
  return [
    f"{k}: {old.get(k)!r} -> {new.get(k)!r}"
    for k in sorted(set(new) | set(old))
    if not {k, k.split(".")[0]} & set(NOT_IDENTITY) and new.get(k) != old.get(k)
  ]


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
    for name in (CHECKPOINTS, METRICS, SUMMARY):
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


def save(manager, epoch, state):
  """Checkpoints ``state`` as step ``epoch``."""
  manager.save(epoch, args=ocp.args.StandardSave(state))


def restore(manager, abstract_state):
  """Latest readable checkpoint ``(epoch, state)``, falling back past corrupt ones;
  ``(None, None)`` when there is none."""
  for step in sorted(manager.all_steps(), reverse=True):
    try:
      return step, manager.restore(step, args=ocp.args.StandardRestore(abstract_state))
    except Exception as err:  # pylint: disable=broad-except
      logging.warning(
        "checkpoint at epoch %d is unreadable (%s: %s); deleting it and "
        "falling back to the previous one",
        step,
        type(err).__name__,
        str(err).splitlines()[0] if str(err) else "",
      )
      manager.delete(step)
  return None, None


class MetricWriter:
  """Appends evaluation rows to ``metrics.jsonl`` and their scalars to TensorBoard.

  Opening it rewrites ``metrics.jsonl`` with ``history`` only: rows of epochs whose
  checkpoint was lost are dropped, so a resumed run writes them again once.
  """

  def __init__(self, workdir, history):
    self._path = _path(workdir, METRICS)
    _write_atomically(self._path, "".join(json.dumps(row) + "\n" for row in history))
    self._tensorboard = tensorboardX.SummaryWriter(workdir)

  def write(self, row):
    """Appends one row; floats and dicts of floats (``{layer: angle}``) become
    TensorBoard scalars at ``row["step"]``."""
    with open(self._path, "a") as f:
      f.write(json.dumps(row) + "\n")
    for key, value in row.items():
      if isinstance(value, float) and key != "wall_time_s":
        self._tensorboard.add_scalar(key, value, row["step"])
      elif isinstance(value, dict):
        for layer, v in value.items():
          self._tensorboard.add_scalar(f"{key}/{layer}", v, row["step"])
    self._tensorboard.flush()

  def close(self):
    self._tensorboard.close()
