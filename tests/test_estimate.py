"""launch.sweep --estimate: a grid's expected wall time from step rates measured on the
spot (launch/estimate.py)."""

import io
import os
import pathlib
import subprocess
import sys

import pytest

from configs import default as default_config
from launch import estimate, planning

REPO = pathlib.Path(__file__).resolve().parents[1]
DIGITS = (1437, 360, (8, 8, 1), 10)
# 4 experiments (nonnegative and mixed-sign, GEVB and BP) but 2 distinct networks.
GRID = planning.Grid(
  str(REPO / "configs" / "default.py"),
  archs=("fc",),
  kinds=("vectorized",),
  overrides={"model.widths": "(16,8)", "num_epochs": 4, "eval_every": 2},
)


def test_a_job_takes_its_epochs_of_steps_and_its_evaluations():
  timing = estimate.Timing(step_s=0.01, eval_s=0.002, eval_batch=100, compile_s=3.0)
  config = default_config.get_config()
  config.eval_every = 10
  seconds = {}
  for epochs in (10, 20):
    config.num_epochs = epochs
    seconds[epochs] = estimate.job_seconds(config, DIGITS, timing)
  # 11 steps of 128 an epoch; 15 + 4 evaluation batches of 100 at epochs 0, 10 (, 20).
  assert seconds[10] == pytest.approx(3.0 + 10 * 11 * 0.01 + 2 * 19 * 0.002)
  assert seconds[20] - seconds[10] == pytest.approx(10 * 11 * 0.01 + 19 * 0.002)


def _estimate(tmp_path, seeds, pack_seeds, calls):
  def timer(config, shape):  # A step of S seeds in one program takes S times one's.
    calls.append((config.rule, config.num_seeds, shape))
    return estimate.Timing(0.01 * config.num_seeds, 0.0, 1000, 0.0)

  jobs = planning.plan(GRID, seeds, tmp_path, pack_seeds=pack_seeds)
  assignments = [(job, ("0", "1")[i % 2]) for i, job in enumerate(jobs)]
  return estimate.estimate(assignments, timer=timer, log=io.StringIO())


@pytest.mark.parametrize("pack_seeds", [True, False])
def test_each_distinct_network_is_timed_once_and_the_jobs_dealt_to_the_devices(
  tmp_path, pack_seeds
):
  calls = []
  est = _estimate(tmp_path, 2, pack_seeds, calls)
  per_job = 2 if pack_seeds else 1  # Seeds.
  assert calls == [("gevb", per_job, DIGITS), ("bp", per_job, DIGITS)]
  assert [len(runs) for _, runs in est.networks.values()] == [4 // per_job] * 2
  job = 4 * 11 * 0.01 * per_job  # 4 epochs of 11 steps.
  assert all(
    s == pytest.approx(job) for _, runs in est.networks.values() for *_, s in runs
  )
  # 4 experiments x 2 seeds of 0.44 s, half of them on each device, packed or not.
  assert est.devices == pytest.approx({"0": 4 * 0.44, "1": 4 * 0.44})
  assert est.wall_s == max(est.devices.values())
  assert _estimate(tmp_path, 4, pack_seeds, []).wall_s == pytest.approx(2 * est.wall_s)


def test_sweep_estimate_times_the_grid_and_starts_nothing(tmp_path):
  grid = tmp_path / "grid.json"
  grid.write_text(
    '{"config": "configs/default.py", "archs": ["fc"], "kinds": ["vectorized"], '
    '"rules": {"vectorized": ["gevb"]}, "overrides": {"model.widths": "(16,8)"}}'
  )
  root = tmp_path / "runs"
  done = subprocess.run(
    [sys.executable, "-m", "launch.sweep", f"--grid={grid}", "--seeds=3"]
    + [f"--root={root}", "--estimate", "--set", "num_epochs=3"],
    cwd=REPO,
    env={**os.environ, "PYTHONPATH": str(REPO)},
    capture_output=True,
    text=True,
    timeout=300,
    check=False,
  )
  assert done.returncode == 0, done.stderr[-2000:]
  table = [line for line in done.stdout.splitlines() if line.startswith("| ")]
  assert len(table) == 2  # The header and the one network, nonneg and mixed.
  cells = table[1].split(" | ")
  assert (
    cells[0]
    == "| default fc-vectorized-gevb (model.widths=(16,8), num_epochs=3), 3 seeds"
  )
  assert cells[1] == "2" and float(cells[2]) > 0  # 2 jobs; seconds per step.
  assert "Expected wall time of 2 jobs (6 runs): " in done.stdout
  assert "(cpu: " in done.stdout and not root.exists()


@pytest.mark.parametrize("in_turn", [True, False])
def test_seeds_that_take_turns_are_timed_as_one_seed_counted_each(monkeypatch, in_turn):
  calls = []

  def time_program(config, shape):
    calls.append(config.num_seeds)
    return estimate.Timing(step_s=0.5, eval_s=0.25, eval_batch=100, compile_s=3.0)

  monkeypatch.setattr(estimate, "in_turn", lambda seeds, mesh: in_turn)
  config = default_config.get_config()
  config.num_seeds = 3
  timing = estimate.measure(config, DIGITS, time_program)
  if in_turn:  # One seed's program, its step and evaluation 3 times over.
    assert calls == [1] and config.num_seeds == 3
    assert timing == estimate.Timing(1.5, 0.75, 100, 3.0)
  else:  # Vmapped seeds: their program as it is.
    assert calls == [3] and timing == estimate.Timing(0.5, 0.25, 100, 3.0)
