r"""Sweeps the paper's experiment grid over local GPUs or a SLURM cluster.

Every experiment is one run of the training CLI,

  python -m gevb_jax.main --config=<config> --workdir=<workdir> \
      --config.model.arch=<arch> --config.model.vectorized=<bool> \
      --config.model.nonneg=<bool> --config.rule=<rule> --config.seed=<seed> \
      [--config.<key>=<value> ...]

in its own stable workdir

  <root>/<dataset>/<arch>-<vectorized|conventional>-<nonneg|mixed>-<rule>/seed_<N>

where <dataset> is the config file's stem (mnist, cifar, ...). Where that folder
does not exist, one that an older sweep made is used: .../<experiment>/seed<N>, or
under the experiment's name from before the kinds were spelled out (fc-vec-...,
fc-conv-...). A run is
finished once its workdir holds summary.json; running an unfinished one again
resumes it from its latest checkpoint. All state lives in the workdirs, so a
stopped sweep is resumed by running the same command again: finished runs are
skipped and the others rerun.

Examples (from the repository root):

  # Table 1 (MNIST), 5 seeds, 2 runs at a time on each of 4 GPUs; plan first.
  python -m launch.sweep --grid=table1 --seeds=5 --root=runs \
      --gpus=0,1,2,3 --runs_per_gpu=2 --dry-run
  # Tables 1 and 2 as one SLURM job array.
  python -m launch.sweep --grid=table1,table2 --seeds=5 --root=runs \
      --backend=slurm --slurm_partition=gpu --submit
  # A short offline sweep on the CPU.
  python -m launch.sweep --grid=launch/grids/digits.json --seeds=2 \
      --root=/tmp/digits --gpus=cpu --runs_per_gpu=4 --set num_epochs=1

Grids. `table1` (MNIST, configs/mnist.py) and `table2` (CIFAR-10,
configs/cifar.py) hold the paper's 24 experiments per seed: arch {fc, conv, lc}
x {vectorized, conventional} x {nonnegative, mixed-sign} x 2 rules (vectorized
nets: gevb, bp; conventional nets: dfa, bp). Any other --grid value names a
JSON file holding one object with these keys:

  config     string (required)  config file, relative to where the sweep runs,
                                e.g. "configs/default.py"
  archs      list of strings    subset of "fc", "conv", "lc" (default: all)
  kinds      list of strings    subset of "vectorized" and "conventional"
                                (default: both; "vec" and "conv" also read)
  nonneg     list of booleans   subset of true, false (default: both)
  rules      object             kind -> list of rules, e.g.
                                {"vectorized": ["gevb"]}; "vectorized" admits
                                gevb, bp and "conventional" dfa, bp
                                (default: both rules of every kind)
  overrides  object             config key -> string, number or boolean,
                                passed as --config.<key>=<value>

e.g. {"config": "configs/default.py", "archs": ["fc"],
"overrides": {"num_epochs": 2}}. `--set key=value` adds overrides on top.

Backends. `local` runs every experiment as its own subprocess pinned to one GPU
by CUDA_VISIBLE_DEVICES: the unfinished experiments are dealt round-robin over
--gpus, and each GPU runs --runs_per_gpu of its queue at a time (`--gpus=cpu`
or empty: CPU only, --runs_per_gpu runs at a time). A run's output is appended
to <workdir>/log.txt. Ctrl-C stops the sweep together with its runs, which
share its process group. `slurm` writes <root>/sweep_tasks.txt (one command per
unfinished experiment) and <root>/sweep.sbatch, a job array whose task i runs
line i + 1; --submit hands it to sbatch. Do not rewrite the task file while an
array of the same root is still queued.
"""

import collections
import os
import shlex
import shutil
import subprocess
import sys

from absl import app, flags, logging

from gevb_jax import workdir as run_folder
from launch import local, planning, slurm

flags.DEFINE_list(
  "grid",
  None,
  "'table1' (MNIST), 'table2' (CIFAR-10) or a grid JSON file; "
  "comma-separate several to sweep them together.",
)
flags.DEFINE_integer("seeds", 5, "Runs seeds 0, ..., seeds - 1.", lower_bound=1)
flags.DEFINE_string("root", None, "Directory that holds all the workdirs.")
flags.DEFINE_string(
  "gpus",
  local.CPU,
  "Comma-separated GPU ids for --backend=local; 'cpu' or empty: CPU only.",
)
flags.DEFINE_integer(
  "runs_per_gpu", 1, "Concurrent runs per GPU (in all, for CPU only).", lower_bound=1
)
flags.DEFINE_bool("dry-run", False, "Print the plan and run nothing.")
flags.DEFINE_enum("backend", "local", ["local", "slurm"], "Where to run.")
flags.DEFINE_bool("submit", False, "With --backend=slurm: sbatch the script.")
flags.DEFINE_multi_string(
  "set", [], "Config override key=value, e.g. num_epochs=2; repeatable."
)
flags.DEFINE_string(
  "trainer_module", "gevb_jax.main", "Module that `python -m` runs for each experiment."
)
flags.DEFINE_string("slurm_partition", "", "SLURM partition (default: the cluster's).")
flags.DEFINE_string("slurm_time", "24:00:00", "SLURM time limit per run.")
flags.DEFINE_integer("slurm_cpus", 8, "SLURM CPUs per run.", lower_bound=1)
flags.DEFINE_integer(
  "slurm_max_parallel", 32, "Most SLURM array tasks running at once.", lower_bound=1
)
flags.mark_flags_as_required(["grid", "root"])

FLAGS = flags.FLAGS


def experiments_from_flags():
  """Plans the jobs that --grid, --seeds, --root and --set ask for."""
  grids = [planning.load_grid(name) for name in FLAGS.grid]
  for grid in grids:
    if not os.path.isfile(grid.config):
      raise ValueError(
        f"config file {grid.config!r} not found from {os.getcwd()}; "
        "run the sweep from the repository root"
      )
  overrides = planning.parse_overrides(FLAGS.set)
  experiments = [
    e for grid in grids for e in planning.plan(grid, FLAGS.seeds, FLAGS.root, overrides)
  ]
  counts = collections.Counter(e.workdir for e in experiments)
  repeated = [workdir for workdir, count in counts.items() if count > 1]
  if repeated:
    raise ValueError(f"--grid={','.join(FLAGS.grid)} plans {repeated[0]} more than once")
  return planning.adopt_old_folders(experiments)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError("Too many command-line arguments.")
  try:
    experiments = experiments_from_flags()
    devices = local.parse_gpus(FLAGS.gpus)
    if FLAGS.submit and FLAGS.backend != "slurm":
      raise ValueError("--submit needs --backend=slurm")
  except ValueError as e:
    sys.exit(f"sweep: {e}")

  # A run whose workdir another process holds (a sweep started earlier, a user's
  # own run) is left to it.
  unfinished = [e for e in experiments if not e.finished()]
  holders = {e: run_folder.holder(e.workdir) for e in unfinished}
  busy = [e for e in unfinished if holders[e]]
  for e in busy:
    print(f"busy     {e.workdir} (process {holders[e]})")
  pending = [e for e in unfinished if not holders[e]]
  done = len(experiments) - len(unfinished)
  busy_note = f", {len(busy)} busy" if busy else ""
  assignments = [(e, devices[i % len(devices)]) for i, e in enumerate(pending)]
  if FLAGS["dry-run"].value:
    if FLAGS.backend == "slurm":
      slots = {e: f"array{i}" for i, e in enumerate(pending)}
    else:
      slots = {e: d if d == local.CPU else f"gpu{d}" for e, d in assignments}
    for e in experiments:
      status = "pending" if e in slots else "busy" if e in busy else "done"
      print(
        f"{status:7}  "
        f"{slots.get(e, '-'):8}  "
        f"{shlex.join(e.command(FLAGS.trainer_module))}"
      )
    print(
      f"{len(experiments)} experiments: {len(pending)} pending, {done} done{busy_note}"
    )
    return 0
  if not pending:
    print(f"Nothing to run: {done} of {len(experiments)} experiments done{busy_note}.")
    return 0

  if FLAGS.backend == "slurm":
    script = slurm.write_slurm(
      pending,
      FLAGS.root,
      FLAGS.trainer_module,
      partition=FLAGS.slurm_partition,
      time_limit=FLAGS.slurm_time,
      cpus=FLAGS.slurm_cpus,
      max_parallel=FLAGS.slurm_max_parallel,
    )
    print(
      f"Wrote {script} for {len(pending)} pending experiments ({done} done{busy_note})."
    )
    if not FLAGS.submit:
      return 0
    if shutil.which("sbatch") is None:
      sys.exit(
        "sweep: --submit needs `sbatch` on PATH and found none; "
        f"submit {script} from a SLURM login node"
      )
    return subprocess.run(["sbatch", str(script)], check=False).returncode

  logging.info(
    "Running %d of %d experiments on %s, %d at a time each.",
    len(pending),
    len(experiments),
    ",".join(devices),
    FLAGS.runs_per_gpu,
  )
  codes = local.run_local(assignments, FLAGS.runs_per_gpu, FLAGS.trainer_module)
  failed = [e for e in pending if codes[e] != 0 or not e.finished()]
  print(
    f"{len(pending) - len(failed)} done, {len(failed)} failed, "
    f"{done} skipped (already done){busy_note}."
  )
  for e in failed:
    reason = f"exit code {codes[e]}" if codes[e] else "exit code 0 but no summary.json"
    print(f"FAILED  {e.log}  ({reason})")
  return 1 if failed else 0


if __name__ == "__main__":
  app.run(main)
