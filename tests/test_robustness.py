"""Bad values and damaged run folders: a one-line refusal before anything is written,
or a recovery with the right result; never a good row or checkpoint lost."""

import asyncio
import gc
import importlib.util
import logging
import os
import shutil
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tensorboardX.proto import event_pb2

from configs import default as default_config
from gevb_jax import config_check, data, main, train
from gevb_jax import workdir as run_folder
from tests import helpers

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _config(**overrides):
  config = default_config.get_config()
  config.num_epochs, config.eval_every = 3, 1
  config.stop_at_zero_train_error = False
  config.progress = False
  config.model.widths = (64, 32)
  config.metrics.alignment_examples = 32
  return helpers.override(config, **overrides)


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
  """A finished 3-epoch run, its summary and its metrics rows (copied per test)."""
  workdir = tmp_path_factory.mktemp("finished") / "run"
  summary = train.train_and_evaluate(_config(), str(workdir))
  return workdir, summary, run_folder.read_metrics(workdir)


def _copy(finished, tmp_path):
  workdir = tmp_path / "run"
  shutil.copytree(finished[0], workdir)
  return workdir


def _files(workdir):
  return {
    str(p.relative_to(workdir)): p.read_bytes()
    for p in sorted(workdir.rglob("*"))
    if p.is_file() and p.name != run_folder.LOCK
  }


BAD = [
  ("batch_size", -5, "config.batch_size=-5: must be an integer >= 1"),
  ("batch_size", 0, "config.batch_size=0"),
  ("batch_size", 5000, "config.batch_size=5000: must be an integer in [1, 1437]"),
  ("eval_every", 0, "config.eval_every=0"),
  ("eval_batch_size", 0, "config.eval_batch_size=0"),
  ("num_epochs", -1, "config.num_epochs=-1: must be an integer >= 0"),
  ("seed", -1, "config.seed=-1: must be an integer in [0, 4294967295]"),
  ("num_seeds", 0, "config.num_seeds=0: must be an integer >= 1"),
  ("checkpoint_every_s", -1.0, "config.checkpoint_every_s=-1.0: must be a number"),
  ("kp_weight_decay", float("nan"), "config.kp_weight_decay=nan: must be a finite"),
  (
    "model.output_code",
    "gray",
    "config.model.output_code='gray': choose onehot or binary",
  ),
  ("learning_rate", -1.0, "config.learning_rate=-1.0: must be > 0"),
  ("learning_rate", float("nan"), "config.learning_rate=nan: must be a finite number"),
  ("model.widths", (0, 256), "config.model.widths=(0, 256): must be a tuple of positive"),
  ("model.widths", (-2, 256), "config.model.widths=(-2, 256)"),
  ("model.widths", (100000, 100000), "GiB"),
]


def test_bad_values_are_refused_before_a_finished_run_is_touched(finished, tmp_path):
  """Even with overwrite=True: the old run is deleted only by a run that can start."""
  workdir = _copy(finished, tmp_path)
  before = _files(workdir)
  for field, value, message in BAD:
    config = _config(**{field: value, "overwrite": True})
    with pytest.raises(config_check.ConfigError) as err:
      train.train_and_evaluate(config, str(workdir))
    assert message in str(err.value) and "\n" not in str(err.value), field
    assert _files(workdir) == before, field
  # The corrected command still finds its own run: nothing was claimed.
  assert train.train_and_evaluate(_config(), str(workdir)) == finished[1]


def test_a_huge_num_seeds_is_refused_at_once_naming_it(tmp_path):
  """Issue 23: 10^8 seeds once walked 10^8 seed folders before any check (killed after
  300 s of silence), and the memory check's refusal named config.model.widths."""
  with pytest.raises(config_check.ConfigError) as err:
    train.train_and_evaluate(_config(num_seeds=10**8), str(tmp_path / "run"))
  assert str(err.value).startswith("config.num_seeds=100000000: the run would hold")
  assert str(err.value).endswith(" seeds fit") and "\n" not in str(err.value)
  assert not (tmp_path / "run").exists()


def test_run_folders_inside_run_folders_are_refused(finished, tmp_path):
  """The report takes a folder with config.json for a run and looks no deeper: seed
  folders trained inside a finished run's folder once vanished from every table."""
  workdir = _copy(finished, tmp_path)
  packed = tmp_path / "packed"
  for seed in (0, 1):
    (packed / f"seed_{seed}").mkdir(parents=True)
    shutil.copy(workdir / run_folder.CONFIG, packed / f"seed_{seed}")
  before = {folder: _files(folder) for folder in (workdir, packed)}
  cases = [
    (workdir, 2, f"{workdir} holds a run (config.json)"),
    (workdir / "inner", 1, f"{workdir} holds a run (config.json)"),
    (packed, 1, "holds the seed folders of a run of several seeds (seed_0, seed_1)"),
  ]
  for folder, num_seeds, message in cases:
    with pytest.raises(config_check.ConfigError) as err:
      train.train_and_evaluate(_config(num_seeds=num_seeds), str(folder))
    assert message in str(err.value), folder
  assert {folder: _files(folder) for folder in before} == before
  assert not (workdir / "inner").exists()


@pytest.mark.parametrize(
  "train_shape,test_shape,test_size,message",
  [
    ((8, 8, 1), (9, 9, 1), 5, "train images (8, 8, 1) and test images (9, 9, 1)"),
    ((0, 8, 1), (0, 8, 1), 5, "one nonempty (H, W, C) shape"),
    ((8, 8, 1), (8, 8, 1), 0, "5 train and 0 test images"),
  ],
)
def test_data_that_cannot_make_a_run_is_one_line(
  tmp_path, monkeypatch, train_shape, test_shape, test_size, message
):
  ds = data.Dataset(
    np.zeros((5, *train_shape), np.float32),
    np.zeros(5, np.int32),
    np.zeros((test_size, *test_shape), np.float32),
    np.zeros(test_size, np.int32),
    num_classes=10,
    name="odd",
  )
  monkeypatch.setattr(data, "load_dataset", lambda cfg: ds)
  with pytest.raises(config_check.ConfigError) as err:
    train.train_and_evaluate(_config(batch_size=4), str(tmp_path / "run"))
  assert message in str(err.value)
  assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("where", ["file", "proc"])
def test_a_workdir_that_cannot_be_written_is_one_line(tmp_path, where):
  if where == "file":
    (tmp_path / "a_file").write_text("")
    workdir, message = tmp_path / "a_file", "exists and is not a directory"
  else:
    workdir, message = "/proc/gevb_run", "cannot write in /proc"
  with pytest.raises(config_check.ConfigError, match=message):
    train.train_and_evaluate(_config(), str(workdir))


def test_a_second_process_on_a_workdir_is_refused_naming_the_holder(tmp_path):
  workdir = tmp_path / "run"
  with run_folder.lock(workdir):
    assert run_folder.holder(workdir) == str(os.getpid())
    with pytest.raises(run_folder.WorkdirError, match=f"in use by process {os.getpid()}"):
      train.train_and_evaluate(_config(), str(workdir))
  assert run_folder.holder(workdir) is None  # Released: a stale file is taken over.
  with run_folder.lock(workdir):
    pass


def test_a_garbage_metrics_line_is_skipped_and_every_good_row_kept(finished, tmp_path):
  """Issue 10's case 1: the rerun once reported the epoch-0 error as the result."""
  workdir, (_, summary, rows) = _copy(finished, tmp_path), finished
  lines = (workdir / run_folder.METRICS).read_text().splitlines(keepends=True)
  (workdir / run_folder.METRICS).write_text("".join([lines[0], "GARBAGE\n", *lines[1:]]))
  (workdir / run_folder.SUMMARY).unlink()
  assert train.train_and_evaluate(_config(), str(workdir)) == summary
  assert run_folder.read_metrics(workdir) == rows


def _without_wall_time(rows):
  return [{k: v for k, v in row.items() if k not in run_folder.TIMINGS} for row in rows]


@pytest.mark.parametrize("damage", ["deleted", "emptied", "last row", "middle row"])
def test_checkpoints_win_over_lost_metrics(finished, tmp_path, damage):
  """Lost evaluations are made again from the checkpoints kept at evaluation epochs;
  a damaged last row once made the summary report an earlier epoch's error."""
  workdir, (_, summary, rows) = _copy(finished, tmp_path), finished
  (workdir / run_folder.SUMMARY).unlink()
  path = workdir / run_folder.METRICS
  lines = path.read_text().splitlines(keepends=True)
  if damage == "deleted":
    path.unlink()
  elif damage == "emptied":
    path.write_text("")
  else:
    index = -1 if damage == "last row" else 1
    lines[index] = lines[index][:20] + "#" + lines[index][21:]
    path.write_text("".join(lines))
  assert train.train_and_evaluate(_config(), str(workdir)) == summary
  assert _without_wall_time(run_folder.read_metrics(workdir)) == _without_wall_time(rows)


def _manager(tmp_path):
  return run_folder.checkpoint_manager(str(tmp_path), keep_period=1)


@pytest.mark.parametrize("damage", ["checksum", "nan"])
def test_a_checkpoint_that_reads_but_is_wrong_falls_back(tmp_path, damage):
  manager = _manager(tmp_path)
  states = [{"w": np.full(3, float(epoch), np.float32)} for epoch in range(3)]
  for epoch, state in enumerate(states):
    if damage == "nan" and epoch == 2:
      state = {"w": np.array([1.0, np.nan, 0.0], np.float32)}
    run_folder.save(manager, epoch, state)
  if damage == "checksum":
    (tmp_path / run_folder.CHECKSUMS / "2").write_text("0" * 64)
  epoch, state = run_folder.restore(_manager(tmp_path), states[0])
  assert epoch == 1
  np.testing.assert_array_equal(state["w"], states[1]["w"])
  assert 2 not in _manager(tmp_path).all_steps()


ZSTD_MAGIC = bytes([0x28, 0xB5, 0x2F, 0xFD])


def _flip_low_bits(path, damage):
  """Flips the low bit of each b-tree node byte at 100, 1097, ..., or of each zstd
  frame's header descriptor (past its magic number) in an array data file."""
  raw = bytearray(path.read_bytes())
  if damage == "b-tree node":
    offsets = range(100 % len(raw), len(raw), 997)
  else:
    offsets = [i + 4 for i in range(len(raw)) if raw.startswith(ZSTD_MAGIC, i)]
  assert offsets, f"nothing to damage in {path}"
  for i in offsets:
    raw[i] ^= 1
  path.write_bytes(bytes(raw))


def _cli_flags():
  """The CLI's flags for ``_config()``."""
  return [
    "--config.num_epochs=3",
    "--config.eval_every=1",
    "--config.stop_at_zero_train_error=False",
    "--config.model.widths=(64,32)",
    "--config.metrics.alignment_examples=32",
  ]


def test_corrupted_checkpoints_fall_back_one_short_line_each(finished, tmp_path):
  """Issue 23: the fallback was right, but stderr got ~100 lines of asyncio
  tracebacks (a b-tree node's failed CRC), and the warning carried orbax's "See full
  TensorStore details: <bound method ...>" (array data that no longer decompresses)
  or TensorStore's spec of the store."""
  workdir, (_, summary, rows) = _copy(finished, tmp_path), finished
  (workdir / run_folder.SUMMARY).unlink()
  checkpoints = workdir / run_folder.CHECKPOINTS
  for target in sorted((checkpoints / "3" / "default" / "d").iterdir()):
    _flip_low_bits(target, "b-tree node")
  arrays = checkpoints / "2" / "default" / "ocdbt.process_0" / "d"
  _flip_low_bits(max(arrays.iterdir(), key=os.path.getsize), "array data")
  cmd = helpers.trainer_command(workdir, *_cli_flags())
  result = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, check=False)
  assert result.returncode == 0, result.stderr
  lines = result.stderr.splitlines()
  assert len(lines) == 2, result.stderr[:3000]
  for line, epoch in zip(lines, (3, 2), strict=True):
    assert f"checkpoint at epoch {epoch} is unreadable (ValueError: " in line
    assert "tensorstore_spec" not in line and "TensorStore details" not in line
  assert run_folder.read_summary(workdir) == summary
  assert _without_wall_time(run_folder.read_metrics(workdir)) == _without_wall_time(rows)


def _never_retrieved_record(folder):
  """The record asyncio logs for a failed task that nobody awaited, its coroutine
  defined in a module under ``folder``."""
  folder.mkdir(parents=True)
  (folder / "reads.py").write_text("async def read():\n  raise ValueError('DATA_LOSS')\n")
  spec = importlib.util.spec_from_file_location("reads", folder / "reads.py")
  reads = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(reads)
  records = []
  handler = logging.Handler()
  handler.emit = records.append
  asyncio_logger = logging.getLogger("asyncio")
  asyncio_logger.addHandler(handler)
  try:
    loop = asyncio.new_event_loop()
    loop.run_until_complete(asyncio.wait([loop.create_task(reads.read())]))
    loop.close()
    gc.collect()  # The never-retrieved task is logged when it is collected.
  finally:
    asyncio_logger.removeHandler(handler)
  (record,) = records
  assert "Task exception was never retrieved" in record.getMessage()
  return record


def test_the_cli_drops_asyncio_reports_of_orbax_reads_only(tmp_path):
  """CI, 2026-12-04: besides the two fallback lines, stderr held asyncio's "Task
  exception was never retrieved" for one of orbax's failed reads, with its traceback,
  whenever the garbage collector reached that task before the run ended."""
  assert main._from_orbax(_never_retrieved_record(tmp_path / "site" / "orbax"))
  assert not main._from_orbax(_never_retrieved_record(tmp_path / "site" / "mine"))


def test_a_stop_signal_during_a_save_waits_for_it(tmp_path, monkeypatch):
  """Issue 23: a signal mask covered the main thread only, so a SIGTERM that another
  thread took (the kernel gives a process's signal to any thread not blocking it)
  abandoned the save, leaving checkpoints/3.orbax-checkpoint-tmp."""
  manager = _manager(tmp_path)
  state = {"w": np.arange(3, dtype=np.float32)}
  run_folder.save(manager, 0, state)
  saving = threading.Event()
  # Started before the save, as orbax's and XLA's threads are.
  sender = threading.Thread(
    target=lambda: saving.wait(60) and os.kill(os.getpid(), signal.SIGTERM)
  )
  sender.start()
  save = manager.save

  def save_meeting_a_signal(*args, **kwargs):
    saving.set()
    sender.join()
    time.sleep(0.2)  # Python runs a handler in the main thread, here at the latest.
    return save(*args, **kwargs)

  def interrupt(signum, frame):  # The CLI's handler.
    raise KeyboardInterrupt

  monkeypatch.setattr(manager, "save", save_meeting_a_signal)
  previous = signal.signal(signal.SIGTERM, interrupt)
  try:
    with pytest.raises(KeyboardInterrupt):
      run_folder.save(manager, 3, state)
  finally:
    signal.signal(signal.SIGTERM, previous)
  assert sorted(os.listdir(tmp_path / run_folder.CHECKPOINTS)) == ["0", "3"]
  assert sorted(os.listdir(tmp_path / run_folder.CHECKSUMS)) == ["0", "3"]
  epoch, restored = run_folder.restore(_manager(tmp_path), state)
  assert epoch == 3
  np.testing.assert_array_equal(restored["w"], state["w"])


def _scalars(workdir, tag):
  """(step, value) of ``tag`` in the workdir's event files."""
  points = []
  for name in os.listdir(workdir):
    if not name.startswith("events.out."):
      continue
    raw = (workdir / name).read_bytes()
    offset = 0
    while offset < len(raw):
      length = int.from_bytes(raw[offset : offset + 8], "little")
      event = event_pb2.Event.FromString(raw[offset + 12 : offset + 12 + length])
      offset += 16 + length
      points += [
        (event.step, v.simple_value) for v in event.summary.value if v.tag == tag
      ]
  return sorted(points)


def test_tensorboard_events_are_rebuilt_on_resume_and_go_with_overwrite(
  finished, tmp_path
):
  workdir, (_, _, rows) = _copy(finished, tmp_path), finished
  for name in os.listdir(workdir):
    if name.startswith("events.out."):  # As a kill left them: empty.
      (workdir / name).write_bytes(b"")
  (workdir / run_folder.SUMMARY).unlink()
  train.train_and_evaluate(_config(), str(workdir))
  expected = [(r["step"], pytest.approx(r["test_error"])) for r in rows]
  assert _scalars(workdir, "test_error") == expected
  train.train_and_evaluate(_config(num_epochs=1, overwrite=True), str(workdir))
  assert [step for step, _ in _scalars(workdir, "test_error")] == [
    r["step"] for r in rows[:2]
  ]


def test_report_skips_a_damaged_run_naming_it(tmp_path, finished):
  runs = tmp_path / "runs"
  good = _copy(finished, runs)
  bad = runs / "bad"
  shutil.copytree(good, bad)
  (bad / run_folder.SUMMARY).write_text('{"final_test')
  (runs / "empty_config").mkdir()
  (runs / "empty_config" / run_folder.CONFIG).write_text("{}")
  result = subprocess.run(
    [sys.executable, "-m", "gevb_jax.report", str(runs), f"--out={tmp_path / 'out'}"],
    cwd=ROOT,
    capture_output=True,
    text=True,
    check=False,
  )
  assert result.returncode == 0, result.stderr
  assert result.stdout.strip().endswith("from 1 runs.")
  skipped = [line for line in result.stderr.splitlines() if "skipped" in line]
  assert len(skipped) == 2
  assert str(bad / run_folder.SUMMARY) in skipped[0]
  assert str(runs / "empty_config" / run_folder.CONFIG) in skipped[1]


def test_sigterm_ends_with_one_line_after_a_safe_checkpoint(tmp_path):
  workdir = tmp_path / "run"
  cmd = helpers.trainer_command(
    workdir,
    "--config.num_epochs=200",
    "--config.stop_at_zero_train_error=False",
    "--config.checkpoint_every_s=0",  # A checkpoint every epoch: SIGTERM meets saves.
  )
  proc = subprocess.Popen(
    cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
  )
  deadline = time.time() + 120
  while time.time() < deadline and not (workdir / run_folder.CHECKSUMS / "2").exists():
    time.sleep(0.02)
  proc.send_signal(signal.SIGTERM)
  _, stderr = proc.communicate(timeout=60)
  assert proc.returncode == 130
  assert stderr.strip().splitlines() == [
    f"stopped; the same command resumes {workdir} from its last checkpoint"
  ]
  # Every checkpoint on disk was completed, with its checksum; none was abandoned.
  steps = run_folder.checkpoint_manager(str(workdir), 1).all_steps()
  assert max(steps) >= 2
  assert sorted(os.listdir(workdir / run_folder.CHECKSUMS)) == sorted(map(str, steps))
  assert sorted(os.listdir(workdir / run_folder.CHECKPOINTS)) == sorted(map(str, steps))


def test_sigterm_mid_epoch_ends_soon_with_a_checkpoint_and_one_line(tmp_path):
  """Issue 23: a stop waited for a compiled call of 64 steps (over 2 min for a
  Fashion-MNIST conv VNN); calls now last at most about seconds_per_call
  (benchmarks/stop_latency.py times that). A stop mid-training also crashed the exit,
  2 times in 3 here (SIGSEGV in an XLA thread at Python's finalization), instead of
  ending in one line with exit code 130."""
  workdir = tmp_path / "run"
  cmd = helpers.trainer_command(
    workdir,
    "--config.model.arch=conv",
    "--config.num_epochs=50",
    "--config.eval_every=50",
    "--config.checkpoint_every_s=3600",  # Epoch 0's is the checkpoint to resume.
    "--config.batch_size=8",  # 179 steps an epoch, in calls of at most about 2 s.
    "--config.stop_at_zero_train_error=False",
    "--config.metrics.alignment=False",
  )
  proc = subprocess.Popen(
    cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
  )
  deadline = time.time() + 240
  while time.time() < deadline and not (workdir / run_folder.CHECKSUMS / "0").exists():
    time.sleep(0.02)
  time.sleep(3.0)  # Training: epoch 1 compiles and sizes its calls, then epochs run.
  proc.send_signal(signal.SIGTERM)
  stdout, stderr = proc.communicate(timeout=60)  # A call and a compile at most.
  assert proc.returncode == 130, stderr[-2000:]
  assert stderr.splitlines() == [
    f"stopped; the same command resumes {workdir} from its last checkpoint"
  ]
  assert stdout.splitlines()[-1].startswith("epoch   0: ")
  assert not (workdir / run_folder.SUMMARY).exists()
  assert os.listdir(workdir / run_folder.CHECKPOINTS) == ["0"]
  assert run_folder.stored_state(str(workdir), 0) is not None


RUN_FILES = [run_folder.CONFIG, run_folder.METRICS, run_folder.SUMMARY]


# Each run file is a case of its own, and so are the files of the checkpoints and of
# their checksums, one drawn at random, in a run that resumes from them: drawn from
# all of them at once, the three run files came up rarely, and a damaged checkpoint of
# the finished run was never read.
@pytest.mark.parametrize(
  "kind", [*RUN_FILES, run_folder.CHECKPOINTS, run_folder.CHECKSUMS]
)
@settings(max_examples=3, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=st.data())
def test_garbage_in_any_run_file_is_recovered_or_refused_in_one_line(
  finished, tmp_path_factory, kind, data
):
  """No traceback, nothing good lost: the right result, or a one-line refusal."""
  workdir = _copy(finished, tmp_path_factory.mktemp("garbage"))
  (_, summary, rows) = finished
  candidates = [kind]
  if kind not in RUN_FILES:
    candidates = sorted(
      str(p.relative_to(workdir)) for p in (workdir / kind).rglob("*") if p.is_file()
    )
    (workdir / run_folder.SUMMARY).unlink()  # A finished run would not read them.
  target = workdir / data.draw(st.sampled_from(candidates), label="file")
  raw = target.read_bytes()
  offset = data.draw(st.integers(0, max(len(raw) - 1, 0)), label="offset")
  if data.draw(st.booleans(), label="truncate"):
    target.write_bytes(raw[:offset])
  else:
    target.write_bytes(raw[:offset] + b"\x00\xffGARBAGE" + raw[offset:])
  try:
    result = train.train_and_evaluate(_config(), str(workdir))
  except ValueError as err:  # ConfigError, WorkdirError, DataError: a refusal.
    assert "\n" not in str(err)
    assert target.name == run_folder.CONFIG, f"refused after damage to {target}: {err}"
    return
  assert result == summary
  assert _without_wall_time(run_folder.read_metrics(workdir)) == _without_wall_time(rows)


def _checkpointed(workdir):
  """The epochs whose checkpoint was completed: its checksum is written after it."""
  folder = workdir / run_folder.CHECKSUMS
  return (
    {int(name) for name in os.listdir(folder) if name.isdigit()}
    if folder.exists()
    else set()
  )


def _kill_after_a_checkpoint(cmd, workdir, epoch, delay):
  """Starts ``cmd`` and SIGKILLs it ``delay`` seconds after it completed a checkpoint
  of epoch ``epoch`` or later; returns the epochs checkpointed before and at the
  kill."""
  before = _checkpointed(workdir)
  proc = subprocess.Popen(
    cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
  )
  deadline = time.time() + 240
  while (
    time.time() < deadline and max(_checkpointed(workdir) - before, default=-1) < epoch
  ):
    time.sleep(0.01)
  time.sleep(delay)
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  return before, _checkpointed(workdir)


@pytest.mark.parametrize("vectorized,rule", [(True, "gevb"), (False, "dfa")])
def test_random_sigkills_then_resume_is_bit_identical(tmp_path, vectorized, rule):
  """Each kill lands at a random moment after the killed process completed a
  checkpoint (a kill before the first would test a plain rerun, not a resume): one of
  epoch 0 or later, then one of epoch 4 or later, of 16."""
  overrides = {
    "num_epochs": 16,
    "eval_every": 4,
    "model.vectorized": vectorized,
    "rule": rule,
  }
  reference = train.train_and_evaluate(_config(**overrides), str(tmp_path / "reference"))
  workdir = tmp_path / "killed"
  cmd = helpers.trainer_command(
    workdir,
    "--config.stop_at_zero_train_error=False",
    "--config.metrics.alignment_examples=32",
    "--config.model.widths=(64,32)",
    *(f"--config.{key}={value}" for key, value in overrides.items()),
  )
  delays = np.random.default_rng(int(vectorized)).uniform(0.0, 0.3, size=2)
  for epoch, delay in zip((0, 4), delays, strict=True):
    before, after = _kill_after_a_checkpoint(cmd, workdir, epoch, delay)
    assert max(after - before, default=-1) >= epoch, (before, after)
    assert not (workdir / run_folder.SUMMARY).exists(), "the run ended before a kill"
  result = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, check=False)
  assert result.returncode == 0, result.stderr
  assert run_folder.read_summary(workdir) == reference
  assert _without_wall_time(run_folder.read_metrics(workdir)) == _without_wall_time(
    run_folder.read_metrics(tmp_path / "reference")
  )
  # Equal checksums of the final checkpoints: bit-identical parameters and Adam state.
  final = str(reference["epochs_run"])
  assert (workdir / run_folder.CHECKSUMS / final).read_text() == (
    tmp_path / "reference" / run_folder.CHECKSUMS / final
  ).read_text()
