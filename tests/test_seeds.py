"""Several seeds in one program (config.num_seeds): each seed's folder is its
single-seed run's, each seed stops on its own, a SIGKILL resumes exactly, and the seed
axis splits over devices."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest

from configs import default as default_config
from gevb_jax import train
from gevb_jax import workdir as run_folder
from tests import helpers

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TEST_EXAMPLES = 360  # The digits test split.
# At this learning rate seeds 0 and 1 reach zero train error at different evaluations.
OVERRIDES = {
  "num_epochs": 20,
  "eval_every": 2,
  "learning_rate": 0.01,
  "model.widths": (64, 32),
  "metrics.alignment_examples": 32,
  "progress": False,
}


def _config(**overrides):
  return helpers.override(default_config.get_config(), **{**OVERRIDES, **overrides})


def _flags(**overrides):
  values = {**OVERRIDES, **overrides}
  values["model.widths"] = "(" + ",".join(map(str, values["model.widths"])) + ")"
  return [f"--config.{key}={value}" for key, value in values.items()]


def _rows(workdir):
  return [
    {k: v for k, v in row.items() if k not in run_folder.TIMINGS}
    for row in run_folder.read_metrics(workdir)
  ]


@pytest.fixture(scope="module")
def packed(tmp_path_factory):
  """Seeds 0 and 1 in one program, and each alone."""
  root = tmp_path_factory.mktemp("seeds")
  summaries = train.train_and_evaluate(_config(num_seeds=2), str(root / "packed"))
  singles = {
    seed: train.train_and_evaluate(_config(seed=seed), str(root / f"single_{seed}"))
    for seed in (0, 1)
  }
  return root, summaries, singles


def test_each_seed_folder_matches_its_single_seed_run(packed):
  root, summaries, singles = packed
  assert sorted(os.listdir(root / "packed")) == ["seed_0", "seed_1"]
  for seed, summary in zip((0, 1), summaries, strict=True):
    folder, single = root / "packed" / f"seed_{seed}", root / f"single_{seed}"
    assert sorted(p.name for p in folder.iterdir() if "tfevents" not in p.name) == sorted(
      p.name for p in single.iterdir() if "tfevents" not in p.name
    )
    assert (folder / run_folder.CONFIG).read_text() == (
      single / run_folder.CONFIG
    ).read_text()
    assert run_folder.read_summary(folder) == summary
    assert summary["epochs_run"] == singles[seed]["epochs_run"]
    rows, reference = _rows(folder), _rows(single)
    assert [r["epoch"] for r in rows] == [r["epoch"] for r in reference]
    for row, ref in zip(rows, reference, strict=True):
      assert abs(row["test_error"] - ref["test_error"]) * TEST_EXAMPLES <= 2
      for key in ("train_loss", "test_loss"):
        assert row[key] == pytest.approx(ref[key], abs=1e-3)


def test_each_seed_stops_at_its_own_zero_train_error(packed):
  root, summaries, _ = packed
  epochs = [summary["epochs_run"] for summary in summaries]
  assert len(set(epochs)) == 2 and max(epochs) < OVERRIDES["num_epochs"]
  for seed, summary in zip((0, 1), summaries, strict=True):
    folder = root / "packed" / f"seed_{seed}"
    rows = run_folder.read_metrics(folder)
    first_zero = next(r["epoch"] for r in rows if r["train_error"] == 0)
    assert summary["stopped_early"] and summary["epochs_run"] == first_zero
    assert rows[-1]["epoch"] == first_zero  # Frozen: no evaluation after its stop.
    manager = run_folder.checkpoint_manager(str(folder), OVERRIDES["eval_every"])
    assert manager.latest_step() == first_zero


def test_a_packed_run_killed_and_resumed_ends_bit_identical(packed, tmp_path):
  """Killed mid-run, then seed 1 set one evaluation back (as if killed between the
  seeds' checkpoints): the rerun catches seed 1 up alone and ends as if never
  stopped."""
  root, summaries, _ = packed
  workdir = tmp_path / "run"
  cmd = helpers.trainer_command(workdir, *_flags(num_seeds=2))
  proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL)
  metrics = workdir / "seed_1" / run_folder.METRICS
  deadline = time.time() + 240
  while time.time() < deadline and not (
    metrics.exists() and metrics.read_text().count("\n") >= 4
  ):
    time.sleep(0.02)
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  seed_1 = workdir / "seed_1"
  assert not (seed_1 / run_folder.SUMMARY).exists(), "the run ended before the kill"
  manager = run_folder.checkpoint_manager(str(seed_1), OVERRIDES["eval_every"])
  latest = manager.latest_step()
  assert latest >= 2
  shutil.rmtree(seed_1 / run_folder.CHECKPOINTS / str(latest))
  result = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, check=False)
  assert result.returncode == 0, result.stderr
  assert f"resumed {seed_1} from epoch {latest - OVERRIDES['eval_every']}" in (
    result.stdout
  )
  for seed, summary in zip((0, 1), summaries, strict=True):
    assert f"seed {seed}: final test error {summary['final_test_error']:.4f}" in (
      result.stdout
    )
    folder = workdir / f"seed_{seed}"
    assert run_folder.read_summary(folder) == summary
    assert _rows(folder) == _rows(root / "packed" / f"seed_{seed}")


def test_the_seed_axis_splits_over_two_devices(packed, tmp_path):
  root, summaries, _ = packed
  script = (
    "import json, sys\n"
    "from gevb_jax import train\n"
    "from tests import test_seeds\n"
    "print(json.dumps(dict(train.make_mesh(2).shape)))\n"
    "train.train_and_evaluate(test_seeds._config(num_seeds=2), sys.argv[1])\n"
  )
  result = subprocess.run(
    [sys.executable, "-c", script, str(tmp_path / "run")],
    cwd=ROOT,
    capture_output=True,
    text=True,
    check=False,
    env={**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=2"},
  )
  assert result.returncode == 0, result.stderr
  lines = result.stdout.splitlines()
  assert json.loads(lines[0]) == {"seeds": 2, "data": 1}
  assert "seeds 0-1 in one program | 2 cpu devices" in lines[1]
  for seed, summary in zip((0, 1), summaries, strict=True):
    split = run_folder.read_summary(tmp_path / "run" / f"seed_{seed}")
    assert split["epochs_run"] == summary["epochs_run"]
    gap = abs(split["final_test_error"] - summary["final_test_error"])
    assert gap * TEST_EXAMPLES <= 2
