"""Tests for launch.sweep: plan, CLI, SLURM script and local runs."""

import collections
import itertools
import json
import os
import pathlib
import shlex
import subprocess
import sys

import pytest

from gevb_jax import workdir as run_folder
from launch import local, planning

REPO = pathlib.Path(__file__).resolve().parents[1]
FAIL_ON = "FAKE_TRAINER_FAIL_ON"

# Stands in for gevb_jax.main: records its call, then writes summary.json into
# --workdir, unless the workdir ends with $FAKE_TRAINER_FAIL_ON (then exits 1).
FAKE_TRAINER = """
import json, os, sys, time
start = time.time()
workdir = next(a[len('--workdir='):] for a in sys.argv
               if a.startswith('--workdir='))
time.sleep(0.05)
with open(os.path.join(workdir, 'calls.jsonl'), 'a') as f:
  f.write(json.dumps({
      'argv': sys.argv[1:], 'start': start, 'end': time.time(),
      'cuda': os.environ.get('CUDA_VISIBLE_DEVICES'),
      'platforms': os.environ.get('JAX_PLATFORMS')}) + '\\n')
if os.environ.get('FAKE_TRAINER_FAIL_ON') and workdir.endswith(
    os.environ['FAKE_TRAINER_FAIL_ON']):
  print('fake trainer failed on purpose')
  sys.exit(1)
with open(os.path.join(workdir, 'summary.json'), 'w') as f:
  json.dump({'test_error': 0.0}, f)
"""


@pytest.fixture(name="cwd")
def fixture_cwd(tmp_path):
  """A working directory with (empty) config files and the fake trainer."""
  (tmp_path / "configs").mkdir()
  for name in ("mnist", "cifar", "default"):
    (tmp_path / "configs" / f"{name}.py").touch()
  (tmp_path / "fake_trainer.py").write_text(FAKE_TRAINER)
  return tmp_path


def run_sweep(cwd, *args, **env):
  """Runs `python -m launch.sweep ARGS` in `cwd` with the fake trainer."""
  base = {k: v for k, v in os.environ.items() if k != FAIL_ON}
  env = {**base, "PYTHONPATH": f"{REPO}{os.pathsep}{cwd}", **env}
  return subprocess.run(
    [sys.executable, "-m", "launch.sweep", "--trainer_module=fake_trainer", *args],
    cwd=cwd,
    env=env,
    capture_output=True,
    text=True,
    timeout=60,
    check=False,
  )


def finish(experiment, cwd):
  """Writes summary.json into `experiment`'s workdir, relative to `cwd`."""
  workdir = cwd / experiment.workdir
  workdir.mkdir(parents=True)
  (workdir / "summary.json").write_text("{}")


def calls(workdir):
  """The fake trainer's recorded calls in `workdir`."""
  path = workdir / "calls.jsonl"
  if not path.exists():
    return []
  return [json.loads(line) for line in path.read_text().splitlines()]


def test_table1_plan_covers_the_paper_grid_once():
  seeds = 3
  experiments = planning.plan(planning.GRIDS["table1"], seeds, "runs")
  assert len(experiments) == 24 * seeds
  points = collections.Counter(
    (
      e.experiment.arch,
      e.experiment.vectorized,
      e.experiment.nonneg,
      e.experiment.rule,
      e.seed,
    )
    for e in experiments
  )
  expected = {
    (arch, vectorized, nonneg, rule, seed)
    for arch, vectorized, nonneg, seed in itertools.product(
      ("fc", "conv", "lc"), (True, False), (True, False), range(seeds)
    )
    for rule in (("gevb", "bp") if vectorized else ("dfa", "bp"))
  }
  assert set(points) == expected and set(points.values()) == {1}
  assert not any(
    e.experiment.rule == "gevb" for e in experiments if not e.experiment.vectorized
  )
  assert not any(
    e.experiment.rule == "dfa" for e in experiments if e.experiment.vectorized
  )
  assert len({e.workdir for e in experiments}) == len(experiments)
  assert {e.config for e in experiments} == {"configs/mnist.py"}
  assert experiments == planning.plan(planning.GRIDS["table1"], seeds, "runs")


def test_workdir_layout_and_command():
  experiments = planning.plan(planning.GRIDS["table2"], 2, "root", {"num_epochs": "2"})
  e = next(
    e
    for e in experiments
    if (
      e.experiment.arch,
      e.experiment.vectorized,
      e.experiment.nonneg,
      e.experiment.rule,
      e.seed,
    )
    == ("lc", False, False, "dfa", 1)
  )
  assert e.workdir == pathlib.Path("root/cifar/lc-conventional-mixed-dfa/seed_1")
  assert str(e.workdir) == run_folder.seed_dir("root/cifar/lc-conventional-mixed-dfa", 1)
  assert e.command("some.trainer") == [
    sys.executable,
    "-m",
    "some.trainer",
    "--config=configs/cifar.py",
    "--workdir=root/cifar/lc-conventional-mixed-dfa/seed_1",
    "--config.model.arch=lc",
    "--config.model.vectorized=False",
    "--config.model.nonneg=False",
    "--config.rule=dfa",
    "--config.seed=1",
    "--config.num_epochs=2",
  ]
  assert e.command()[2] == "gevb_jax.main"


def test_grid_file_and_set_overrides(tmp_path):
  path = tmp_path / "grid.json"
  path.write_text(
    json.dumps(
      {
        "config": "configs/default.py",
        "archs": ["fc", "lc"],
        "nonneg": [True],
        "rules": {"vectorized": ["gevb"]},
        "overrides": {"num_epochs": 5, "eval_every": 1, "flag": True},
      }
    )
  )
  grid = planning.load_grid(str(path))
  overrides = planning.parse_overrides(["num_epochs=2"])
  experiments = planning.plan(grid, 2, "r", overrides)
  # 2 archs x 1 nonneg x (1 vectorized rule + 2 conventional rules) x 2 seeds.
  assert len(experiments) == 12
  assert {(e.experiment.vectorized, e.experiment.rule) for e in experiments} == {
    (True, "gevb"),
    (False, "dfa"),
    (False, "bp"),
  }
  assert {e.workdir.parts[1] for e in experiments} == {"default"}
  command = experiments[0].command()
  assert "--config.num_epochs=2" in command  # --set wins over the grid file.
  assert "--config.num_epochs=5" not in command
  assert {"--config.eval_every=1", "--config.flag=True"} <= set(command)


@pytest.mark.parametrize(
  "spec, words",
  [
    ({"archs": ["fc"]}, ['"config"']),
    ({"config": "configs/default.py", "archs": ["mlp"]}, ["'mlp'", '"fc", "conv", "lc"']),
    (
      {"config": "configs/default.py", "rules": {"conventional": ["gevb"]}},
      ["'gevb'", '"dfa", "bp"'],
    ),
    (
      {"config": "configs/default.py", "rules": {"vectorized": ["dfa"]}},
      ["'dfa'", '"gevb", "bp"'],
    ),
    (
      {
        "config": "configs/default.py",
        "kinds": ["vectorized"],
        "rules": {"conventional": ["bp"]},
      },
      ["'conventional'"],
    ),
    ({"config": "configs/default.py", "nonneg": [1]}, ["1", "true, false"]),
    ({"config": "configs/default.py", "seeds": 3}, ["'seeds'", "archs"]),
    (
      {"config": "configs/default.py", "overrides": {"seed": 3}},
      ["'seed'", "model.arch"],
    ),
  ],
)
def test_bad_grid_files_are_rejected(tmp_path, spec, words):
  path = tmp_path / "bad.json"
  path.write_text(json.dumps(spec))
  with pytest.raises(ValueError) as error:
    planning.load_grid(str(path))
  assert str(path) in str(error.value)
  for word in words:
    assert word in str(error.value)


def test_parse_gpus():
  assert local.parse_gpus("") == local.parse_gpus("cpu") == ["cpu"]
  assert local.parse_gpus("0,3") == ["0", "3"]
  for bad in ("a", "0,0", "-1", "0,,1"):
    with pytest.raises(ValueError, match="bad --gpus"):
      local.parse_gpus(bad)


@pytest.mark.parametrize(
  "args, words",
  [
    (["--grid=table3"], ["'table3'", "table1, table2"]),
    (["--grid=missing.json"], ["'missing.json'", "table1, table2"]),
    (["--grid=table1", "--gpus=0,x"], ["'0,x'", "cpu"]),
    (["--grid=table1", "--set", "num_epochs"], ["'num_epochs'", "key=value"]),
    (["--grid=table1", "--set", "rule=dfa"], ["'rule'", "model.arch"]),
    (["--grid=bad.json"], ["'gevb'", '"dfa", "bp"']),
    (["--grid=table1", "--submit"], ["--backend=slurm"]),
  ],
)
def test_bad_input_exits_with_one_clear_line(cwd, args, words):
  (cwd / "bad.json").write_text(
    json.dumps({"config": "configs/default.py", "rules": {"conventional": ["gevb"]}})
  )
  result = run_sweep(cwd, *args, "--root=runs")
  assert result.returncode != 0
  message = result.stderr.strip()
  assert "\n" not in message
  for word in words:
    assert word in message
  assert not (cwd / "runs").exists()


def test_dry_run_lists_every_experiment_once_and_runs_nothing(cwd):
  root = cwd / "runs"
  experiments = planning.plan(planning.GRIDS["table1"], 2, "runs")
  finish(experiments[5], cwd)
  result = run_sweep(
    cwd, "--grid=table1", "--seeds=2", "--root=runs", "--gpus=0,1", "--dry-run"
  )
  assert result.returncode == 0, result.stderr
  lines = [
    line.split(None, 2) for line in result.stdout.splitlines() if "--workdir=" in line
  ]
  assert len(lines) == len(experiments) == 48
  for e, (_, _, command) in zip(experiments, lines):
    assert f"--workdir={e.workdir} " in command
    assert shlex.split(command)[2] == "fake_trainer"
  statuses = [(status, device) for status, device, _ in lines]
  assert statuses[5] == ("done", "-")
  pending = statuses[:5] + statuses[6:]
  assert pending == [("pending", f"gpu{i % 2}") for i in range(47)]
  assert "48 experiments: 47 pending, 1 done" in result.stdout
  workdirs = [p for p in root.glob("*/*/*") if p.is_dir()]
  assert workdirs == [root / experiments[5].workdir.relative_to("runs")]
  assert not list(root.rglob("log.txt")) and not list(root.rglob("calls.jsonl"))


def test_slurm_script_and_tasks(cwd):
  experiments = planning.plan(planning.GRIDS["table1"], 1, "runs")
  finish(experiments[0], cwd)
  result = run_sweep(
    cwd,
    "--grid=table1",
    "--seeds=1",
    "--root=runs",
    "--backend=slurm",
    "--slurm_max_parallel=4",
    "--slurm_partition=gpu",
    "--slurm_time=2:00:00",
  )
  assert result.returncode == 0, result.stderr
  script = cwd / "runs" / "sweep.sbatch"
  text = script.read_text()
  subprocess.run(["bash", "-n", str(script)], check=True)
  for directive in (
    "--array=0-22%4",
    "--gres=gpu:1",
    "--partition=gpu",
    "--time=2:00:00",
    "--cpus-per-task=8",
  ):
    assert f"#SBATCH {directive}\n" in text
  assert (cwd / "runs" / "slurm_logs").is_dir()
  tasks = (cwd / "runs" / "sweep_tasks.txt").read_text().splitlines()
  assert [shlex.split(t)[4] for t in tasks] == [
    f"--workdir={e.workdir}" for e in experiments[1:]
  ]
  # Array task 3 runs the 4th pending experiment, from the sweep's directory.
  (cwd / experiments[4].workdir).mkdir(parents=True)
  subprocess.run(
    ["bash", str(script)],
    cwd="/",
    check=True,
    env={**os.environ, "SLURM_ARRAY_TASK_ID": "3", "PYTHONPATH": str(cwd)},
  )
  assert [c["argv"] for c in calls(cwd / experiments[4].workdir)] == [
    shlex.split(tasks[3])[3:]
  ]


def test_submit_needs_sbatch(cwd):
  args = ["--grid=table1", "--seeds=1", "--root=runs", "--backend=slurm", "--submit"]
  (cwd / "bin").mkdir()
  result = run_sweep(cwd, *args, PATH=str(cwd / "bin"))
  assert result.returncode != 0
  assert "sbatch" in result.stderr and "PATH" in result.stderr
  sbatch = cwd / "bin" / "sbatch"
  sbatch.write_text(f'#!/bin/sh\necho "$@" > {cwd}/submitted\n')
  sbatch.chmod(0o755)
  result = run_sweep(cwd, *args, PATH=f"{cwd / 'bin'}{os.pathsep}/bin")
  assert result.returncode == 0, result.stderr
  assert (cwd / "submitted").read_text().split() == [str(cwd / "runs" / "sweep.sbatch")]


def test_local_runs_pin_devices_skip_finished_and_report_failures(cwd):
  experiments = planning.plan(planning.GRIDS["table1"], 2, "runs")
  finish(experiments[0], cwd)
  failing = experiments[30]
  args = ["--grid=table1", "--seeds=2", "--root=runs", "--gpus=3,5", "--runs_per_gpu=2"]
  fail_on = str(failing.workdir.relative_to("runs"))

  result = run_sweep(cwd, *args, **{FAIL_ON: fail_on})
  assert result.returncode == 1
  assert "46 done, 1 failed, 1 skipped" in result.stdout
  assert f"FAILED  {failing.log}  (exit code 1)" in result.stdout
  assert "fake trainer failed on purpose" in (cwd / failing.log).read_text()
  assert calls(cwd / experiments[0].workdir) == []
  runs = {}
  for i, e in enumerate(experiments[1:]):
    [call] = calls(cwd / e.workdir)
    assert call["argv"] == e.command("fake_trainer")[3:]
    assert call["cuda"] == ("3", "5")[i % 2]  # As the dry run deals them.
    runs.setdefault(call["cuda"], []).append((call["start"], call["end"]))
  for spans in runs.values():  # At most --runs_per_gpu at once per GPU.
    for start, _ in spans:
      assert sum(s <= start < end for s, end in spans) <= 2

  result = run_sweep(cwd, *args, **{FAIL_ON: fail_on})
  assert result.returncode == 1
  assert "0 done, 1 failed, 47 skipped" in result.stdout
  assert len(calls(cwd / failing.workdir)) == 2
  assert len(calls(cwd / experiments[1].workdir)) == 1

  result = run_sweep(cwd, *args)
  assert result.returncode == 0, result.stdout
  assert "1 done, 0 failed, 47 skipped" in result.stdout
  assert len(calls(cwd / failing.workdir)) == 3


def test_cpu_runs(cwd):
  (cwd / "grid.json").write_text(
    json.dumps(
      {
        "config": "configs/default.py",
        "archs": ["fc"],
        "kinds": ["vectorized"],
        "nonneg": [True],
        "overrides": {"eval_every": 1},
      }
    )
  )
  result = run_sweep(
    cwd,
    "--grid=grid.json",
    "--seeds=2",
    "--root=runs",
    "--gpus=cpu",
    "--runs_per_gpu=2",
    "--set",
    "num_epochs=1",
  )
  assert result.returncode == 0, result.stderr
  assert "4 done, 0 failed, 0 skipped" in result.stdout
  experiments = planning.plan(
    planning.load_grid(str(cwd / "grid.json")), 2, "runs", {"num_epochs": "1"}
  )
  for e in experiments:
    [call] = calls(cwd / e.workdir)
    assert (call["cuda"], call["platforms"]) == ("", "cpu")
    assert {"--config.eval_every=1", "--config.num_epochs=1"} <= set(call["argv"])


def test_old_kind_names_and_old_run_folders_are_still_used(tmp_path):
  """Grid files and sweeps from before the kinds were spelled out keep working."""
  old = planning.Grid(
    "configs/default.py", archs=["fc"], kinds=["vec"], rules={"vec": ["gevb"]}
  )
  assert old == planning.Grid(
    "configs/default.py",
    archs=["fc"],
    kinds=["vectorized"],
    rules={"vectorized": ["gevb"]},
  )
  jobs = planning.plan(old, 2, tmp_path)
  assert [j.workdir.parent.name for j in jobs] == [
    "fc-vectorized-nonneg-gevb",
    "fc-vectorized-mixed-gevb",
  ] * 2
  experiment_dirs = [tmp_path / "default" / j.experiment.name for j in jobs[:2]]
  # Seed 1 of the first experiment ran under its old name, seed 0 of the second in
  # the old seed<N> layout; seed 1 of the second in both the old and new layouts.
  old_name = tmp_path / "default" / "fc-vec-nonneg-gevb" / "seed1"
  old_layout = experiment_dirs[1] / "seed0"
  for folder in (old_name, old_layout, experiment_dirs[1] / "seed1", jobs[3].workdir):
    folder.mkdir(parents=True)
  adopted = planning.adopt_old_folders(jobs)
  assert [j.workdir for j in adopted] == [
    jobs[0].workdir,
    old_layout,
    old_name,
    jobs[3].workdir,
  ]
  assert jobs[3].workdir == experiment_dirs[1] / "seed_1"
  assert [j.seed for j in adopted] == [j.seed for j in jobs]


def test_a_run_whose_workdir_another_process_holds_is_not_started(cwd):
  (cwd / "grid.json").write_text(
    json.dumps({"config": "configs/default.py", "archs": ["fc"], "nonneg": [True]})
  )
  jobs = planning.plan(planning.load_grid(str(cwd / "grid.json")), 1, "runs")
  held = cwd / jobs[0].workdir
  with run_folder.lock(held):
    result = run_sweep(cwd, "--grid=grid.json", "--seeds=1", "--root=runs")
  assert result.returncode == 0, result.stderr
  assert f"busy     {jobs[0].workdir} (process {os.getpid()})" in result.stdout
  assert calls(held) == []
  assert "3 done, 0 failed, 0 skipped (already done), 1 busy." in result.stdout
  assert all(len(calls(cwd / job.workdir)) == 1 for job in jobs[1:])
