"""The first GPU session's one command: every net's step rate, five seeds in one
program, and runs sharing the GPU; a markdown table per part and one JSON file.

  python benchmarks/gpu_check.py --out=gpu_check.json [--fashion_mnist=DIR] [--quick]

Parts, in this order, each in processes of its own (so that each has the device's
memory to itself; this process allocates nothing on it):

- ``device``: the backend, the devices, their memory and JAX's version.
- ``throughput``: ``step_throughput.py --step_only --json``: the train step of all 12
  nets (MNIST- and CIFAR-10-shaped FC, conv and LC, vectorized and conventional) with
  each of their rules, its GFLOP/s and its share of the device's matmul rate.
- ``seeds``: 5 seeds in one program (``--config.num_seeds=5``) of the Fashion-MNIST
  conv VNN for 2 epochs: on Fashion-MNIST (--fashion_mnist, else Debian's idx files
  when there), else on random arrays of its shape (``train_on_random_data.py``), and
  the output says which. Its rate while training is the second epoch's, whose
  programs the first compiled.
- ``sharing``: the same 4 two-epoch runs (FC VNN, GEVB and BP, nonnegative and
  mixed) through ``launch.sweep`` with ``--runs_per_gpu=1`` and ``=4``: wall time,
  examples/s over it, and each run's own rate in its second epoch. Without
  Fashion-MNIST they run on scikit-learn's digits.

The JSON (``--out``) is written after every part; a part that fails or runs past its
time records its error, and the others still run. ``--quick`` runs the same code on
the CPU in well under a minute, small (tests/test_gpu_check.py).
"""

import datetime
import json
import os
import subprocess
import sys
import tempfile
import time
from typing import NamedTuple

import jax
from absl import app, flags

from gevb_jax import data
from gevb_jax import workdir as run_folder
from launch import planning

FLAGS = flags.FLAGS
flags.DEFINE_string("out", None, "Where to write the JSON.")
flags.mark_flag_as_required("out")
flags.DEFINE_bool("quick", False, "The same code on the CPU, small and in seconds.")
flags.DEFINE_string(
  "fashion_mnist", "", "Fashion-MNIST's idx files (default: Debian's, when there)."
)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEBIAN_FASHION_MNIST = "/usr/share/datasets/fashion-mnist"
# What the parts' processes get: this process's environment as it started.
CHILD_ENV = {
  **os.environ,
  "PYTHONPATH": os.pathsep.join(filter(None, [ROOT, os.environ.get("PYTHONPATH")])),
}


class Plan(NamedTuple):
  """How big each part is, and how long it may take (seconds)."""

  throughput_flags: tuple
  throughput_s: int
  num_seeds: int
  seeds_flags: tuple  # --config.* of the packed run, beside arch, seeds and epochs.
  random_flags: tuple  # train_on_random_data.py's, when the data are absent.
  seeds_s: int
  sharing_grid: dict  # A grid file's fields (launch.sweep), without the config.
  runs_per_gpu: tuple
  sharing_s: int  # Per sweep.


GPU = Plan(
  throughput_flags=("--iters=3", "--min_seconds=0.3", "--matmul_n=8192"),
  throughput_s=240,
  num_seeds=5,
  seeds_flags=(),
  random_flags=(),
  seeds_s=150,
  sharing_grid={
    "archs": ["fc"],
    "kinds": ["vectorized"],
    "overrides": {"num_epochs": 2, "eval_every": 1, "metrics.alignment": False},
  },
  runs_per_gpu=(1, 4),
  sharing_s=90,
)
QUICK = Plan(
  throughput_flags=(
    "--only=mnist-fc",
    "--rules=gevb,dfa",
    "--batch=8",
    "--iters=1",
    "--min_seconds=0",
    "--matmul_n=256",
  ),
  throughput_s=120,
  num_seeds=2,
  seeds_flags=(
    "--config.model.widths=(4,4,8)",
    "--config.batch_size=16",
    "--config.metrics.alignment=False",
    "--config.steps_per_call=0",  # No calibration: one compiled epoch.
  ),
  random_flags=("--num_train=64", "--num_test=32"),
  seeds_s=120,
  sharing_grid={
    "archs": ["fc"],
    "kinds": ["vectorized"],
    "nonneg": [True],
    "overrides": {
      "num_epochs": 2,
      "eval_every": 1,
      "metrics.alignment": False,
      "model.widths": "(16,8)",
      "steps_per_call": 0,
    },
  },
  runs_per_gpu=(1, 2),
  sharing_s=120,
)


def run(command, timeout):
  """Runs ``command`` in the repository; returns its output, wall seconds and an
  error line (None when it exited 0 in time)."""
  start = time.perf_counter()
  try:
    done = subprocess.run(
      command,
      cwd=ROOT,
      env=CHILD_ENV,
      capture_output=True,
      text=True,
      timeout=timeout,
      check=False,
    )
  except subprocess.TimeoutExpired as err:
    out = err.stdout or b""
    out = out.decode() if isinstance(out, bytes) else out
    return out, time.perf_counter() - start, f"ran past its {timeout} s"
  error = None
  if done.returncode:
    tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or [""]
    error = f"exit code {done.returncode}: {tail[0]}"
  return done.stdout, time.perf_counter() - start, error


def device_part():
  """The backend and devices, read by this process without allocating on them (JAX
  reads the variable when it starts the backend, at the first ``jax.devices()``)."""
  os.environ["XLA_PYTHON_CLIENT_PREALLOCATE"] = "false"
  if FLAGS.quick:
    jax.config.update("jax_platforms", "cpu")
    CHILD_ENV["JAX_PLATFORMS"] = "cpu"
  devices = jax.devices()
  stats = devices[0].memory_stats() or {}
  return {
    "backend": jax.default_backend(),
    "devices": [str(d) for d in devices],
    "device_kind": devices[0].device_kind,
    "bytes_limit": stats.get("bytes_limit"),
    "jax": jax.__version__,
  }


def throughput_part(plan):
  """Every net and rule's train step (step_throughput.py), as its JSON rows."""
  command = [
    sys.executable,
    os.path.join(ROOT, "benchmarks", "step_throughput.py"),
    "--json",
    "--step_only",
    *plan.throughput_flags,
  ]
  out, wall, error = run(command, plan.throughput_s)
  rows = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
  for row in rows:
    row["pct_of_matmul"] = 100 * row["gflop_s"] / row["matmul_gflop_s"]
  return {"wall_s": wall, "error": error, "rows": rows}


def fashion_mnist_dir():
  """Fashion-MNIST's idx directory, or None where it is absent (and not asked for)."""
  path = FLAGS.fashion_mnist or DEBIAN_FASHION_MNIST
  try:
    for name in (name for split in data.IDX_SPLITS for name in split):
      data._find_idx_file(path, name)  # pylint: disable=protected-access
  except data.DataError as err:
    if FLAGS.fashion_mnist:
      raise app.UsageError(f"--fashion_mnist={FLAGS.fashion_mnist}: {err}") from None
    return None
  return os.path.abspath(path)


def run_rows(folder):
  """A run folder's config, metrics rows and summary."""
  return (
    run_folder.read_config(folder),
    run_folder.read_metrics(folder),
    run_folder.read_summary(folder),
  )


def trained_examples(config, rows):
  """Training examples a run's metrics count (its last row's steps x batch)."""
  return rows[-1]["step"] * config["batch_size"] if rows else 0


def seeds_part(plan, fashion, tmp):
  """``plan.num_seeds`` seeds of the Fashion-MNIST conv VNN in one program, 2 epochs,
  on Fashion-MNIST's idx files in ``fashion``, or random arrays where it is None."""
  workdir = os.path.join(tmp, "seeds")
  run_flags = [
    "--config=configs/fashion_mnist.py",
    f"--workdir={workdir}",
    "--config.model.arch=conv",
    f"--config.num_seeds={plan.num_seeds}",
    "--config.num_epochs=2",
    "--config.eval_every=1",  # Epoch 2's rate, its programs compiled in epoch 1.
    "--config.progress=False",
    *plan.seeds_flags,
  ]
  if fashion:
    trainer = ["-m", "gevb_jax.main"]
    run_flags += ["--config.data.source=idx", f"--config.data.path={fashion}"]
  else:
    trainer = [os.path.join(ROOT, "benchmarks", "train_on_random_data.py")]
    run_flags += plan.random_flags
  _, wall, error = run([sys.executable, *trainer, *run_flags], plan.seeds_s)
  seeds = []
  for seed, folder in enumerate(run_folder.seed_dirs(workdir, 0, plan.num_seeds)):
    if not run_folder.finished(folder):
      continue
    config, rows, summary = run_rows(folder)
    seeds.append(
      {
        "seed": seed,
        "epochs_run": summary["epochs_run"],
        "final_test_error": summary["final_test_error"],
        "examples": trained_examples(config, rows),
        "train_examples_per_s": rows[-1].get("train_examples_per_s", 0.0),
      }
    )
  examples = sum(s["examples"] for s in seeds)
  return {
    "wall_s": wall,
    "error": error,
    "data": "fashion_mnist" if fashion else "random",
    "num_seeds": plan.num_seeds,
    "seeds": seeds,
    "examples": examples,
    "examples_per_s": examples / wall,
    # Each seed's rate counts its own examples over the time all of them shared.
    "train_examples_per_s": sum(s["train_examples_per_s"] for s in seeds),
  }


def sharing_part(plan, fashion, gpus, tmp):
  """The same runs through launch.sweep at each of ``plan.runs_per_gpu``."""
  config_file = "configs/fashion_mnist.py" if fashion else "configs/default.py"
  spec = {"config": config_file, **plan.sharing_grid}
  if fashion:
    spec["overrides"] = {**spec["overrides"], "data.source": "idx", "data.path": fashion}
  grid_file = os.path.join(tmp, "sharing_grid.json")
  with open(grid_file, "w") as f:
    json.dump(spec, f)
  result = {"data": "fashion_mnist" if fashion else "digits", "gpus": gpus, "sweeps": []}
  for runs_per_gpu in plan.runs_per_gpu:
    root = os.path.join(tmp, f"sharing_{runs_per_gpu}")
    command = [sys.executable, "-m", "launch.sweep", f"--grid={grid_file}", "--seeds=1"]
    command += [f"--root={root}", f"--gpus={gpus}", f"--runs_per_gpu={runs_per_gpu}"]
    _, wall, error = run(command, plan.sharing_s)
    jobs = planning.plan(planning.load_grid(grid_file), 1, root, pack_seeds=True)
    runs = [run_rows(j.workdir) for j in jobs if run_folder.finished(j.workdir)]
    failed = [j for j in jobs if not run_folder.finished(j.workdir) and j.log.exists()]
    if failed:  # The trainer's own last line says why.
      error = f"{failed[0].workdir}: {failed[0].log.read_text().strip().splitlines()[-1]}"
    examples = sum(trained_examples(config, rows) for config, rows, _ in runs)
    rates = [rows[-1].get("train_examples_per_s", 0.0) for _, rows, _ in runs]
    result["sweeps"].append(
      {
        "runs_per_gpu": runs_per_gpu,
        "runs": len(jobs),
        "finished": len(runs),
        "wall_s": wall,
        "error": error,
        "examples": examples,
        "examples_per_s": examples / wall,
        "run_train_examples_per_s": sum(rates) / len(rates) if rates else 0.0,
      }
    )
  return result


def _table(header, rows):
  """A markdown table: a header of names, then rows of cells."""
  lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
  return "\n".join(lines + ["| " + " | ".join(map(str, row)) + " |" for row in rows])


def _error(part):
  return f"\n\n**{part['error']}**" if part.get("error") else ""


def device_table(part):
  limit = part["bytes_limit"]
  memory = f"{limit / 2**30:.1f} GiB" if limit else "- (host RAM)"
  header = ["backend", "devices", "kind", "memory JAX may take", "jax"]
  row = [part["backend"], ", ".join(part["devices"]), part["device_kind"], memory]
  return _table(header, [[*row, part["jax"]]])


def throughput_table(part):
  rows = [
    [r["model"], r["rule"], f"{r['step_ex_s']:.0f}", f"{r['gflop_s']:.0f}",
     f"{r['pct_of_matmul']:.0f}%"]
    for r in part["rows"]
  ]  # fmt: skip
  peak = part["rows"][0]["matmul_gflop_s"] if part["rows"] else 0.0
  table = _table(["model", "rule", "step ex/s", "GFLOP/s", "% of matmul"], rows)
  return f"float32 matmul: {peak:.0f} GFLOP/s\n\n{table}{_error(part)}"


def seeds_table(part):
  errors = ", ".join(f"{s['final_test_error']:.4f}" for s in part["seeds"])
  header = ["data", "seeds", "epochs", "wall s", "ex/s over the wall time"]
  header += ["ex/s in epoch 2 (all seeds)", "test error per seed"]
  row = [part["data"], part["num_seeds"], "/".join(str(s["epochs_run"]) for s in
         part["seeds"]), f"{part['wall_s']:.1f}", f"{part['examples_per_s']:.0f}",
         f"{part['train_examples_per_s']:.0f}", errors]  # fmt: skip
  note = "\n\nThe data were random (no Fashion-MNIST here)." * (part["data"] == "random")
  return _table(header, [row]) + note + _error(part)


def sharing_table(part):
  header = ["runs per GPU", "runs finished", "wall s", "examples"]
  header += ["ex/s over the wall time", "each run's ex/s in epoch 2 (mean)"]
  rows = [
    [s["runs_per_gpu"], f"{s['finished']}/{s['runs']}", f"{s['wall_s']:.1f}",
     s["examples"], f"{s['examples_per_s']:.0f}", f"{s['run_train_examples_per_s']:.0f}"]
    for s in part["sweeps"]
  ]  # fmt: skip
  errors = "".join(_error(s) for s in part["sweeps"])
  return f"data: {part['data']}, --gpus={part['gpus']}\n\n{_table(header, rows)}{errors}"


TITLES = {
  "device": "Device",
  "throughput": "Step throughput of every net and rule",
  "seeds": "Seeds in one program (Fashion-MNIST conv VNN, 2 epochs)",
  "sharing": "Runs sharing the GPU (launch.sweep --runs_per_gpu)",
}
TABLES = {
  "device": device_table,
  "throughput": throughput_table,
  "seeds": seeds_table,
  "sharing": sharing_table,
}


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  plan = QUICK if FLAGS.quick else GPU
  fashion = None if FLAGS.quick else fashion_mnist_dir()  # --quick: random, digits.
  report = {
    "quick": FLAGS.quick,
    "date": datetime.datetime.now().isoformat(),
    "parts": {},
  }
  device = device_part()
  gpus = "0" if device["backend"] == "gpu" else "cpu"
  print(f"# GPU check, {report['date'][:16]}: {device['device_kind']}", flush=True)
  parts = {
    "device": lambda tmp: device,
    "throughput": lambda tmp: throughput_part(plan),
    "seeds": lambda tmp: seeds_part(plan, fashion, tmp),
    "sharing": lambda tmp: sharing_part(plan, fashion, gpus, tmp),
  }
  with tempfile.TemporaryDirectory(prefix="gpu_check_") as tmp:
    for name, part in parts.items():
      start = time.perf_counter()
      report["parts"][name] = result = part(tmp)
      result["part_s"] = time.perf_counter() - start
      with open(FLAGS.out, "w") as f:
        json.dump(report, f, indent=1)
      print(f"\n## {TITLES[name]} ({result['part_s']:.0f} s)\n", flush=True)
      print(TABLES[name](result), flush=True)


if __name__ == "__main__":
  app.run(main)
