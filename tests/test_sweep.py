"""Tests for launch.sweep: plan, CLI, SLURM script and local runs."""

import collections
import itertools
import json
import os
import pathlib
import shlex
import shutil
import signal
import subprocess
import sys
import time

import pytest

from gevb_jax import workdir as run_folder
from gevb_jax.grid import Experiment
from launch import local, planning

REPO = pathlib.Path(__file__).resolve().parents[1]
FAIL_ON = "FAKE_TRAINER_FAIL_ON"

# Stands in for gevb_jax.main as its contract has it: trains seeds --config.seed, ...,
# --config.seed + --config.num_seeds - 1 in --workdir itself (one seed) or each in
# --workdir/seed_<s> (several), leaving finished ones (with summary.json) alone. Every
# seed it trains records the call in its run folder, then gets summary.json, unless
# the folder ends with $FAKE_TRAINER_FAIL_ON (then the trainer exits 1).
FAKE_TRAINER = """
import json, os, sys, time
start = time.time()
args = dict(a[2:].split('=', 1) for a in sys.argv[1:])
seed, num_seeds = int(args['config.seed']), int(args.get('config.num_seeds', 1))
folders = [args['workdir']] if num_seeds == 1 else [
    os.path.join(args['workdir'], f'seed_{s}') for s in range(seed, seed + num_seeds)]
time.sleep(0.05)
for folder in folders:
  if os.path.exists(os.path.join(folder, 'summary.json')):
    continue
  os.makedirs(folder, exist_ok=True)
  with open(os.path.join(folder, 'calls.jsonl'), 'a') as f:
    f.write(json.dumps({
        'argv': sys.argv[1:], 'start': start, 'end': time.time(),
        'cuda': os.environ.get('CUDA_VISIBLE_DEVICES'),
        'platforms': os.environ.get('JAX_PLATFORMS')}) + '\\n')
  if os.environ.get('FAKE_TRAINER_FAIL_ON') and folder.endswith(
      os.environ['FAKE_TRAINER_FAIL_ON']):
    print('fake trainer failed on purpose')
    sys.exit(1)
  with open(os.path.join(folder, 'summary.json'), 'w') as f:
    json.dump({'test_error': 0.0}, f)
"""
# A grid of 4 experiments: fc, vectorized, nonneg or mixed, gevb or bp.
SMALL_GRID = {"config": "configs/default.py", "archs": ["fc"], "kinds": ["vectorized"]}


@pytest.fixture(name="cwd")
def fixture_cwd(tmp_path):
  """A working directory with the config files (the planner reads them to check each
  job's config as the trainer would) and the fake trainer."""
  shutil.copytree(REPO / "configs", tmp_path / "configs")
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


def finish(folder):
  """Writes summary.json into the run folder `folder`."""
  folder.mkdir(parents=True)
  (folder / "summary.json").write_text("{}")


def small_grid_jobs(cwd, seeds, pack_seeds=True):
  """Writes SMALL_GRID to grid.json in `cwd`; returns its jobs under root 'runs'."""
  (cwd / "grid.json").write_text(json.dumps(SMALL_GRID))
  grid = planning.load_grid(str(cwd / "grid.json"))
  return planning.plan(grid, seeds, "runs", pack_seeds=pack_seeds)


def calls(workdir):
  """The fake trainer's recorded calls in `workdir`."""
  path = workdir / "calls.jsonl"
  if not path.exists():
    return []
  return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.mark.parametrize("pack_seeds", [True, False])
def test_table1_plan_covers_the_paper_grid_once(pack_seeds):
  seeds = 3
  jobs = planning.plan(planning.GRIDS["table1"], seeds, "runs", pack_seeds=pack_seeds)
  assert len(jobs) == (24 if pack_seeds else 24 * seeds)
  assert all(job.packed == pack_seeds for job in jobs)
  points = collections.Counter(
    (
      job.experiment.arch,
      job.experiment.vectorized,
      job.experiment.nonneg,
      job.experiment.rule,
      seed,
    )
    for job in jobs
    for seed in job.seeds
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
    job.experiment.rule == "gevb" for job in jobs if not job.experiment.vectorized
  )
  assert not any(
    job.experiment.rule == "dfa" for job in jobs if job.experiment.vectorized
  )
  folders = [folder for job in jobs for folder in job.run_folders]
  assert len(set(folders)) == len(folders) == 24 * seeds
  assert {job.config for job in jobs} == {"configs/mnist.py"}
  assert jobs == planning.plan(
    planning.GRIDS["table1"], seeds, "runs", pack_seeds=pack_seeds
  )


def _lc_mixed_dfa(jobs):
  return [job for job in jobs if job.experiment == Experiment("lc", False, False, "dfa")]


def test_workdir_layout_and_command():
  jobs = planning.plan(
    planning.GRIDS["table2"], 2, "root", {"num_epochs": "2"}, pack_seeds=False
  )
  _, job = _lc_mixed_dfa(jobs)
  assert job.seeds == range(1, 2) and job.seed_text == "seed 1"
  assert job.workdir == pathlib.Path("root/cifar/lc-conventional-mixed-dfa/seed_1")
  assert str(job.workdir) == run_folder.seed_dir(
    "root/cifar/lc-conventional-mixed-dfa", 1
  )
  assert job.run_folders == [job.workdir]
  assert job.log == job.workdir / "log.txt"
  assert job.command("some.trainer") == [
    sys.executable,
    "-m",
    "some.trainer",
    "--config=configs/cifar.py",
    "--workdir=root/cifar/lc-conventional-mixed-dfa/seed_1",
    "--config.model.arch=lc",
    "--config.model.vectorized=False",
    "--config.model.nonneg=False",
    "--config.rule=dfa",
    "--config.model.output_code=onehot",
    "--config.seed=1",
    "--config.num_epochs=2",
  ]
  assert job.command()[2] == "gevb_jax.main"


def test_a_packed_job_trains_an_experiments_seeds_in_the_same_run_folders():
  overrides = {"num_epochs": "2"}
  packed = planning.plan(planning.GRIDS["table2"], 3, "root", overrides, pack_seeds=True)
  [job] = _lc_mixed_dfa(packed)
  experiment_dir = pathlib.Path("root/cifar/lc-conventional-mixed-dfa")
  assert job.workdir == experiment_dir
  assert job.seeds == range(3) and job.seed_text == "seeds 0-2"
  assert job.run_folders == [
    pathlib.Path(run_folder.seed_dir(experiment_dir, s)) for s in range(3)
  ]
  assert job.log == experiment_dir / "log.txt"
  assert job.command("some.trainer")[3:] == [
    "--config=configs/cifar.py",
    "--workdir=root/cifar/lc-conventional-mixed-dfa",
    "--config.model.arch=lc",
    "--config.model.vectorized=False",
    "--config.model.nonneg=False",
    "--config.rule=dfa",
    "--config.model.output_code=onehot",
    "--config.seed=0",
    "--config.num_seeds=3",
    "--config.num_epochs=2",
  ]
  # One layout: the packed jobs' run folders are the unpacked jobs' workdirs.
  unpacked = planning.plan(
    planning.GRIDS["table2"], 3, "root", overrides, pack_seeds=False
  )
  assert sorted(f for job in packed for f in job.run_folders) == sorted(
    job.workdir for job in unpacked
  )
  # A single seed is never packed: the trainer runs it in --workdir itself.
  single = planning.plan(planning.GRIDS["table2"], 1, "root", pack_seeds=True)
  assert single == planning.plan(planning.GRIDS["table2"], 1, "root", pack_seeds=False)
  assert not any("--config.num_seeds" in arg for arg in single[0].command())


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
  experiments = planning.plan(grid, 2, "r", overrides, pack_seeds=False)
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


def test_rules_beyond_the_paper_and_output_codes_are_grid_axes(tmp_path):
  path = tmp_path / "grid.json"
  spec = {
    "config": "configs/default.py",
    "archs": ["conv"],
    "kinds": ["conventional"],
    "nonneg": [False],
    "rules": {"conventional": ["fa", "kp", "sign"]},
    "output_codes": ["onehot", "binary"],
  }
  path.write_text(json.dumps(spec))
  jobs = planning.plan(planning.load_grid(str(path)), 2, "r", pack_seeds=True)
  assert [job.workdir.name for job in jobs] == [
    f"conv-conventional-mixed-{rule}{suffix}"
    for suffix in ("", "-binary")
    for rule in ("fa", "kp", "sign")
  ]
  command = jobs[-1].command()
  assert {"--config.rule=sign", "--config.model.output_code=binary"} <= set(command)


def test_a_layer_spec_is_an_arch_of_a_grid_file(tmp_path):
  """A spec (gevb_jax/arch_spec.py) names its run folders and reaches the trainer as
  --config.model.arch, beside a paper name."""
  spec = "conv(4,3),pool(2),flatten,dense(8)"
  path = tmp_path / "grid.json"
  grid_file = {
    "config": "configs/default.py",
    "archs": ["fc", spec],
    "kinds": ["vectorized"],
    "nonneg": [True],
    "rules": {"vectorized": ["gevb"]},
  }
  path.write_text(json.dumps(grid_file))
  jobs = planning.plan(planning.load_grid(str(path)), 1, "r", pack_seeds=True)
  assert [job.workdir.parent.name for job in jobs] == [
    "fc-vectorized-nonneg-gevb",
    f"{spec}-vectorized-nonneg-gevb",
  ]
  assert f"--config.model.arch={spec}" in jobs[1].command()


@pytest.mark.parametrize(
  "spec, words",
  [
    ({"archs": ["fc"]}, ['"config"']),
    (
      {"config": "configs/default.py", "output_codes": ["gray"]},
      ["'gray'", '"onehot", "binary"'],
    ),
    (
      {"config": "configs/default.py", "overrides": {"model.output_code": "binary"}},
      ["'model.output_code'", "output_codes"],
    ),
    ({"config": "configs/default.py", "archs": ["mlp"]}, ["'mlp'", "fc, conv, lc"]),
    (
      {"config": "configs/default.py", "archs": ["conv(4,3),pol(2),flatten"]},
      ["'pol(2)' is not a layer", "conv(C,k[,stride[,pad]])"],
    ),
    ({"config": "configs/default.py", "archs": ["fc", "fc"]}, ["twice"]),
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
    (
      {"config": "configs/default.py", "overrides": {"num_seeds": 3}},
      ["'num_seeds'", "--pack_seeds"],
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
    (["--grid=table1", "--set", "num_seeds=2"], ["'num_seeds'", "--pack_seeds"]),
    (["--grid=bad.json"], ["'gevb'", '"dfa", "bp"']),
    (["--grid=table1", "--submit"], ["--backend=slurm"]),
    # Issue 23: checked as the trainer checks them, not left to fail every job.
    (["--grid=table1", "--dry-run", "--set", "batch_size=-5"], ["config.batch_size=-5"]),
    (["--grid=table1", "--set", "num_epochz=1"], ["'num_epochz'", '"num_epochs"']),
    (["--grid=table1", "--set", "batch_size=abc"], ["--config.batch_size=abc"]),
    (["--grid=overrides.json"], ["config.learning_rate=-1.0: must be > 0"]),
  ],
)
def test_bad_input_exits_with_one_clear_line(cwd, args, words):
  (cwd / "bad.json").write_text(
    json.dumps({"config": "configs/default.py", "rules": {"conventional": ["gevb"]}})
  )
  (cwd / "overrides.json").write_text(
    json.dumps({"config": "configs/default.py", "overrides": {"learning_rate": -1}})
  )
  result = run_sweep(cwd, *args, "--root=runs")
  assert result.returncode != 0
  message = result.stderr.strip()
  assert "\n" not in message
  for word in words:
    assert word in message
  assert not (cwd / "runs").exists()


def test_dry_run_lists_every_job_once_and_runs_nothing(cwd):
  root = cwd / "runs"
  jobs = planning.plan(planning.GRIDS["table1"], 2, "runs", pack_seeds=True)
  for folder in jobs[5].run_folders:
    finish(cwd / folder)
  finish(cwd / jobs[6].run_folders[0])  # A job partly done is pending.
  result = run_sweep(
    cwd, "--grid=table1", "--seeds=2", "--root=runs", "--gpus=0,1", "--dry-run"
  )
  assert result.returncode == 0, result.stderr
  lines = [
    line.split(None, 4) for line in result.stdout.splitlines() if "--workdir=" in line
  ]
  assert len(lines) == len(jobs) == 24
  for job, (_, _, seeds, seed_range, command) in zip(jobs, lines):
    assert (seeds, seed_range) == ("seeds", "0-1")
    assert f"--workdir={job.workdir} " in command
    assert "--config.seed=0 --config.num_seeds=2" in command
    assert shlex.split(command)[2] == "fake_trainer"
  statuses = [(status, device) for status, device, *_ in lines]
  assert statuses[5] == ("done", "-")
  pending = statuses[:5] + statuses[6:]
  assert pending == [("pending", f"gpu{i % 2}") for i in range(23)]
  assert "24 jobs (48 runs): 23 pending, 1 done" in result.stdout
  folders = [p for p in root.glob("*/*/*") if p.is_dir()]
  finished = [*jobs[5].run_folders, jobs[6].run_folders[0]]
  assert sorted(folders) == sorted(cwd / f for f in finished)
  assert not list(root.rglob("log.txt")) and not list(root.rglob("calls.jsonl"))


def test_slurm_script_and_tasks(cwd):
  jobs = planning.plan(planning.GRIDS["table1"], 2, "runs", pack_seeds=True)
  for folder in jobs[0].run_folders:
    finish(cwd / folder)
  result = run_sweep(
    cwd,
    "--grid=table1",
    "--seeds=2",
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
  assert [shlex.split(t)[3:] for t in tasks] == [
    job.command("fake_trainer")[3:] for job in jobs[1:]
  ]
  # Array task 3 runs the 4th pending job, both its seeds, from the sweep's directory.
  subprocess.run(
    ["bash", str(script)],
    cwd="/",
    check=True,
    env={**os.environ, "SLURM_ARRAY_TASK_ID": "3", "PYTHONPATH": str(cwd)},
  )
  for folder in jobs[4].run_folders:
    assert [c["argv"] for c in calls(cwd / folder)] == [shlex.split(tasks[3])[3:]]
  assert not (cwd / jobs[5].workdir).exists()


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
  experiments = planning.plan(planning.GRIDS["table1"], 2, "runs", pack_seeds=False)
  finish(cwd / experiments[0].workdir)
  failing = experiments[30]
  args = [
    "--grid=table1",
    "--seeds=2",
    "--nopack_seeds",
    "--root=runs",
    "--gpus=3,5",
    "--runs_per_gpu=2",
  ]
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


def test_packed_local_runs_train_the_unfinished_seeds_and_log_per_experiment(cwd):
  jobs = small_grid_jobs(cwd, 3)
  done, partial, failing, old = jobs
  for folder in done.run_folders:
    finish(cwd / folder)
  finish(cwd / partial.run_folders[1])
  # An older sweep's folder: this experiment runs one job per seed.
  old_folder = cwd / old.workdir / "seed1"
  finish(old_folder)
  fail_on = str(failing.run_folders[1].relative_to("runs"))

  result = run_sweep(
    cwd, "--grid=grid.json", "--seeds=3", "--root=runs", **{FAIL_ON: fail_on}
  )
  assert result.returncode == 1
  # Skipped: the finished job, and the old folder's seed as a job of its own.
  assert "3 done, 1 failed, 2 skipped (already done)." in result.stdout
  assert f"FAILED  {failing.log}  (exit code 1)" in result.stdout
  assert failing.log == failing.workdir / "log.txt"
  assert "fake trainer failed on purpose" in (cwd / failing.log).read_text()
  assert not any(calls(cwd / folder) for folder in done.run_folders)
  # The partly finished job ran once, packed, and trained its unfinished seeds.
  seed_0, seed_1, seed_2 = (calls(cwd / folder) for folder in partial.run_folders)
  assert [c["argv"] for c in seed_0 + seed_2] == [partial.command("fake_trainer")[3:]] * 2
  assert seed_1 == []
  log = (cwd / partial.log).read_text()
  assert log.startswith("# ") and "--config.num_seeds=3" in log
  assert not list((cwd / partial.workdir).glob("*/log.txt"))
  # The experiment with an old folder: seeds 0 and 2 alone in the new layout.
  assert calls(old_folder) == [] and not (cwd / old.run_folders[1]).exists()
  for seed in (0, 2):
    [call] = calls(cwd / old.run_folders[seed])
    assert f"--workdir={old.run_folders[seed]}" in call["argv"]
    assert f"--config.seed={seed}" in call["argv"]
    assert not any(arg.startswith("--config.num_seeds") for arg in call["argv"])
    assert (cwd / old.run_folders[seed] / "log.txt").exists()


def test_cpu_runs(cwd):
  (cwd / "grid.json").write_text(
    json.dumps({**SMALL_GRID, "nonneg": [True], "overrides": {"eval_every": 1}})
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
  assert "2 done, 0 failed, 0 skipped" in result.stdout
  jobs = planning.plan(
    planning.load_grid(str(cwd / "grid.json")),
    2,
    "runs",
    {"num_epochs": "1"},
    pack_seeds=True,
  )
  for folder in (folder for job in jobs for folder in job.run_folders):
    [call] = calls(cwd / folder)
    assert (call["cuda"], call["platforms"]) == ("", "cpu")
    assert {"--config.eval_every=1", "--config.num_epochs=1"} <= set(call["argv"])


def test_old_kind_names_and_old_run_folders_are_still_used(tmp_path):
  """Grid files and sweeps from before the kinds were spelled out, and from before
  the run folders were named seed_<N>, keep working."""
  old = planning.Grid(
    "configs/default.py", archs=["fc"], kinds=["vec"], rules={"vec": ["gevb"]}
  )
  assert old == planning.Grid(
    "configs/default.py",
    archs=["fc"],
    kinds=["vectorized"],
    rules={"vectorized": ["gevb"]},
  )
  jobs = planning.plan(old, 2, tmp_path, pack_seeds=False)
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
  assert [j.seeds for j in adopted] == [j.seeds for j in jobs]


def test_a_packed_experiment_with_an_old_run_folder_runs_one_job_per_seed(tmp_path):
  grid = planning.Grid("configs/default.py", archs=["fc", "lc"], kinds=["vectorized"])
  jobs = planning.plan(grid, 3, tmp_path, pack_seeds=True)
  jobs = [j for j in jobs if j.experiment.rule == "gevb"]
  fc_nonneg, fc_mixed, lc_nonneg, lc_mixed = jobs
  old_layout = fc_nonneg.workdir / "seed2"
  old_name = tmp_path / "default" / "fc-vec-mixed-gevb" / "seed0"
  # Where both the old and the new folder exist, the new one is used.
  both = [lc_nonneg.workdir / "seed0", lc_nonneg.run_folders[0]]
  for folder in (old_layout, old_name, *both):
    folder.mkdir(parents=True)
  adopted = planning.adopt_old_folders(jobs)
  assert [(j.seeds, j.workdir) for j in adopted] == [
    (range(0, 1), fc_nonneg.run_folders[0]),
    (range(1, 2), fc_nonneg.run_folders[1]),
    (range(2, 3), old_layout),
    (range(0, 1), old_name),
    (range(1, 2), fc_mixed.run_folders[1]),
    (range(2, 3), fc_mixed.run_folders[2]),
    (range(3), lc_nonneg.workdir),
    (range(3), lc_mixed.workdir),
  ]
  assert [j.experiment for j in adopted] == [
    job.experiment for job in jobs for _ in range(3 if job in jobs[:2] else 1)
  ]
  command = adopted[2].command()
  assert f"--workdir={old_layout}" in command and "--config.seed=2" in command
  assert not any(arg.startswith("--config.num_seeds") for arg in command)


def test_a_job_with_a_run_folder_another_process_holds_is_not_started(cwd):
  jobs = small_grid_jobs(cwd, 2)
  held = cwd / jobs[0].run_folders[1]
  with run_folder.lock(held):
    result = run_sweep(cwd, "--grid=grid.json", "--seeds=2", "--root=runs")
  assert result.returncode == 0, result.stderr
  assert f"busy     {jobs[0].run_folders[1]} (process {os.getpid()})" in result.stdout
  assert not any(calls(cwd / folder) for folder in jobs[0].run_folders)
  assert "3 done, 0 failed, 0 skipped (already done), 1 busy." in result.stdout
  assert all(
    len(calls(cwd / folder)) == 1 for job in jobs[1:] for folder in job.run_folders
  )


# Stands in for a trainer that Ctrl-C stops: marks its start, then waits to be stopped.
STOPPABLE_TRAINER = """
import os, sys, time
args = dict(a[2:].split('=', 1) for a in sys.argv[1:] if '=' in a)
open(os.path.join(args['workdir'], 'started'), 'w').close()
try:
  time.sleep(120)
except KeyboardInterrupt:
  print('trainer stopped')
  sys.exit(130)
"""


def test_ctrl_c_stops_the_sweep_and_its_jobs_in_one_line(cwd):
  """Issue 23: the jobs stopped, but the sweep printed a 22-line KeyboardInterrupt
  traceback."""
  (cwd / "stoppable_trainer.py").write_text(STOPPABLE_TRAINER)
  jobs = small_grid_jobs(cwd, 1)
  env = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{cwd}"}
  proc = subprocess.Popen(
    [sys.executable, "-m", "launch.sweep", "--trainer_module=stoppable_trainer"]
    + ["--grid=grid.json", "--seeds=1", "--root=runs", f"--runs_per_gpu={len(jobs)}"],
    cwd=cwd,
    env=env,
    stdout=subprocess.PIPE,
    stderr=subprocess.PIPE,
    text=True,
    start_new_session=True,  # Its own process group, as a terminal's Ctrl-C meets it.
  )
  started = [cwd / job.workdir / "started" for job in jobs]
  deadline = time.time() + 60
  while time.time() < deadline and not all(path.exists() for path in started):
    time.sleep(0.05)
  os.killpg(proc.pid, signal.SIGINT)
  _, stderr = proc.communicate(timeout=60)
  assert proc.returncode == 130
  logged = [line for line in stderr.splitlines() if not line.startswith("I")]  # absl
  assert logged == ["sweep: stopped with its jobs; the same command resumes them"]
  for job in jobs:
    assert (cwd / job.log).read_text().splitlines()[-1] == "trainer stopped"
