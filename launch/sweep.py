r"""Sweeps the paper's experiment grid over local GPUs or a SLURM cluster.

Every seed of every experiment is one run, in its own stable run folder

  <root>/<dataset>/<experiment>/seed_<N>

where <dataset> is the config file's stem (mnist, cifar, ...) and <experiment> is
<arch>-<vectorized|conventional>-<nonneg|mixed>-<rule>, with -binary after it for
the binary output code (grid.Experiment.name). By default (--pack_seeds)
all the seeds of an experiment are one job, one process of the training CLI:

  python -m gevb_jax.main --config=<config> --workdir=<root>/<dataset>/<experiment> \
      --config.model.arch=<arch> --config.model.vectorized=<bool> \
      --config.model.nonneg=<bool> --config.rule=<rule> \
      --config.seed=0 --config.num_seeds=<seeds> [--config.<key>=<value> ...]

which trains the seeds together, each in its run folder: one process, one data set
load and one compilation instead of one per seed, which is faster on small nets.
With --nopack_seeds every seed is a job of its own (--workdir=<run folder>
--config.seed=<N>), so that the seeds of an experiment spread over GPUs or SLURM
tasks, e.g. for large nets that keep a GPU busy with one seed, or to fit a time
limit per task. Both modes write the same run folders and resume each other's runs.
Where a run folder does not exist, one that an older sweep made is used:
<experiment>/seed<N>, or under the experiment's name from before the kinds were
spelled out (fc-vec-..., fc-conv-...); an experiment with a seed in such a folder
runs one job per seed.

A run is finished once its run folder holds summary.json; running an unfinished one
again resumes it from its latest checkpoint, and a packed job whose seeds are partly
finished trains the others only. All state lives in the run folders, so a stopped
sweep is resumed by running the same command again: finished jobs are skipped and
the others rerun. A job with a run folder that another process holds (its lock: a
sweep started earlier, a user's own run) is left to it.

Examples (from the repository root):

  # Table 1 (MNIST), 5 seeds, 2 jobs at a time on each of 4 GPUs; plan first.
  python -m launch.sweep --grid=table1 --seeds=5 --root=runs \
      --gpus=0,1,2,3 --runs_per_gpu=2 --dry-run
  # Tables 1 and 2 as one SLURM job array.
  python -m launch.sweep --grid=table1,table2 --seeds=5 --root=runs \
      --backend=slurm --slurm_partition=gpu --submit
  # The same with every seed its own array task, on a GPU of its own.
  python -m launch.sweep --grid=table1,table2 --seeds=5 --root=runs \
      --backend=slurm --slurm_partition=gpu --submit --nopack_seeds
  # The expected wall time of Tables 1 and 2 on 4 GPUs, timed on GPU 0 first.
  python -m launch.sweep --grid=table1,table2 --seeds=5 --root=runs \
      --gpus=0,1,2,3 --estimate
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
  archs      list of strings    "fc", "conv", "lc" (default: all three) and/or
                                layer specs, e.g. "conv(32,3),pool(2),flatten,
                                dense(256)" (gevb_jax/arch_spec.py); a spec
                                is its run folders' <arch>
  kinds      list of strings    subset of "vectorized" and "conventional"
                                (default: both; "vec" and "conv" also read)
  nonneg     list of booleans   subset of true, false (default: both)
  rules      object             kind -> list of rules, e.g.
                                {"vectorized": ["gevb"]}; "vectorized" admits
                                gevb, bp and "conventional" dfa, bp, fa, kp,
                                sign (default: the paper's two rules per kind,
                                gevb, bp and dfa, bp)
  output_codes  list of strings "onehot" (the paper's, the default) and/or
                                "binary" (Section 7: K = ceil(log2 C) outputs)
  overrides  object             config key -> string, number or boolean,
                                passed as --config.<key>=<value>

e.g. {"config": "configs/default.py", "archs": ["fc"],
"overrides": {"num_epochs": 2}}. `--set key=value` adds overrides on top. Before
anything runs (with --dry-run too), every job's config is read and checked as the
trainer reads and checks it (gevb_jax.cli_config, gevb_jax.config_check): an unknown
key or a bad value is refused in one line. Checks that need the data (a batch larger
than the training set, the memory a run needs) are left to the trainer.

Backends. `local` runs every job as its own subprocess pinned to one GPU by
CUDA_VISIBLE_DEVICES: the unfinished jobs are dealt round-robin over --gpus, and
each GPU runs --runs_per_gpu of its queue at a time (`--gpus=cpu` or empty: CPU
only, --runs_per_gpu jobs at a time). A job's output is appended to log.txt in
its --workdir: the run folder, or <experiment>/log.txt for a packed job. Ctrl-C
stops the sweep together with its jobs, which share its process group, in one line
(exit code 130); the same command resumes them. `slurm`
writes <root>/sweep_tasks.txt (one command per unfinished job) and
<root>/sweep.sbatch, a job array whose task i runs line i + 1; --submit hands it
to sbatch. Do not rewrite the task file while an array of the same root is still
queued.
"""

import collections
import os
import shlex
import shutil
import subprocess
import sys

from absl import app, flags, logging

from launch import local, planning, slurm

flags.DEFINE_list(
  "grid",
  None,
  "'table1' (MNIST), 'table2' (CIFAR-10) or a grid JSON file; "
  "comma-separate several to sweep them together.",
)
flags.DEFINE_integer("seeds", 5, "Runs seeds 0, ..., seeds - 1.", lower_bound=1)
flags.DEFINE_bool(
  "pack_seeds",
  True,
  "Train all the seeds of an experiment in one process (--config.num_seeds): one "
  "data set load and compilation for all of them, faster on small nets. "
  "--nopack_seeds: one process per seed, to spread an experiment's seeds over GPUs "
  "or SLURM tasks. Both write the same run folders.",
)
flags.DEFINE_string("root", None, "Directory that holds all the run folders.")
flags.DEFINE_string(
  "gpus",
  local.CPU,
  "Comma-separated GPU ids for --backend=local; 'cpu' or empty: CPU only.",
)
flags.DEFINE_integer(
  "runs_per_gpu", 1, "Concurrent jobs per GPU (in all, for CPU only).", lower_bound=1
)
flags.DEFINE_bool("dry-run", False, "Print the plan and run nothing.")
flags.DEFINE_bool(
  "estimate",
  False,
  "Time a few steps of each distinct network of the pending jobs on the first of "
  "--gpus, print the sweep's expected wall time on --gpus, and run nothing "
  "(launch/estimate.py).",
)
flags.DEFINE_enum("backend", "local", ["local", "slurm"], "Where to run.")
flags.DEFINE_bool("submit", False, "With --backend=slurm: sbatch the script.")
flags.DEFINE_multi_string(
  "set", [], "Config override key=value, e.g. num_epochs=2; repeatable."
)
flags.DEFINE_string(
  "trainer_module", "gevb_jax.main", "Module that `python -m` runs for each job."
)
flags.DEFINE_string("slurm_partition", "", "SLURM partition (default: the cluster's).")
flags.DEFINE_string(
  "slurm_time", "24:00:00", "SLURM time limit per job (all its seeds when packed)."
)
flags.DEFINE_integer("slurm_cpus", 8, "SLURM CPUs per job.", lower_bound=1)
flags.DEFINE_integer(
  "slurm_max_parallel", 32, "Most SLURM array tasks running at once.", lower_bound=1
)
flags.mark_flags_as_required(["grid", "root"])

FLAGS = flags.FLAGS


def jobs_from_flags():
  """Plans the jobs that --grid, --seeds, --pack_seeds, --root and --set ask for."""
  grids = [planning.load_grid(name) for name in FLAGS.grid]
  for grid in grids:
    if not os.path.isfile(grid.config):
      raise ValueError(
        f"config file {grid.config!r} not found from {os.getcwd()}; "
        "run the sweep from the repository root"
      )
  overrides = planning.parse_overrides(FLAGS.set)
  jobs = [
    job
    for grid in grids
    for job in planning.plan(
      grid, FLAGS.seeds, FLAGS.root, overrides, pack_seeds=FLAGS.pack_seeds
    )
  ]
  counts = collections.Counter(folder for job in jobs for folder in job.run_folders)
  repeated = [folder for folder, count in counts.items() if count > 1]
  if repeated:
    raise ValueError(f"--grid={','.join(FLAGS.grid)} plans {repeated[0]} more than once")
  for job in jobs:  # What would fail every job fails the plan.
    job.check()
  return planning.adopt_old_folders(jobs)


def print_estimate(assignments, devices):
  """Times the pending jobs' networks on the first device, prints the estimate."""
  from launch import estimate  # pylint: disable=import-outside-toplevel  # JAX's trainer.

  estimate.pin(devices[0], FLAGS.runs_per_gpu)
  print(estimate.report(estimate.estimate(assignments), FLAGS.runs_per_gpu))
  return 0


def _check_flags():
  """The jobs and devices the flags name; refused in one line."""
  try:
    jobs = jobs_from_flags()
    devices = local.parse_gpus(FLAGS.gpus)
    if FLAGS.submit and FLAGS.backend != "slurm":
      raise ValueError("--submit needs --backend=slurm")
    if FLAGS.estimate and FLAGS.backend != "local":
      raise ValueError("--estimate times the jobs on --gpus: use it with --backend=local")
  except ValueError as e:
    sys.exit(f"sweep: {e}")
  return jobs, devices


def _print_plan(jobs, pending, busy, assignments, done, busy_note):
  """--dry-run: each job's status, slot and command, then the counts."""
  if FLAGS.backend == "slurm":
    slots = {job: f"array{i}" for i, job in enumerate(pending)}
  else:
    slots = {job: d if d == local.CPU else f"gpu{d}" for job, d in assignments}
  for job in jobs:
    status = "pending" if job in slots else "busy" if job in busy else "done"
    print(
      f"{status:7}  "
      f"{slots.get(job, '-'):8}  "
      f"{job.seed_text:11}  "
      f"{shlex.join(job.command(FLAGS.trainer_module))}"
    )
  runs = sum(len(job.seeds) for job in jobs)
  print(f"{len(jobs)} jobs ({runs} runs): {len(pending)} pending, {done} done{busy_note}")
  return 0


def _submit_slurm(pending, done, busy_note):
  """Writes the pending jobs' SLURM array script, and submits it with --submit."""
  script = slurm.write_slurm(
    pending,
    FLAGS.root,
    FLAGS.trainer_module,
    partition=FLAGS.slurm_partition,
    time_limit=FLAGS.slurm_time,
    cpus=FLAGS.slurm_cpus,
    max_parallel=FLAGS.slurm_max_parallel,
  )
  print(f"Wrote {script} for {len(pending)} pending jobs ({done} done{busy_note}).")
  if not FLAGS.submit:
    return 0
  if shutil.which("sbatch") is None:
    sys.exit(
      "sweep: --submit needs `sbatch` on PATH and found none; "
      f"submit {script} from a SLURM login node"
    )
  return subprocess.run(["sbatch", str(script)], check=False).returncode


def _run_here(pending, assignments, done, busy_note):
  """Runs the pending jobs on this machine's devices; says which failed, and why."""
  try:
    codes = local.run_local(assignments, FLAGS.runs_per_gpu, FLAGS.trainer_module)
  except KeyboardInterrupt:  # The jobs, in the sweep's process group, got it too.
    print("sweep: stopped with its jobs; the same command resumes them", file=sys.stderr)
    return 130
  failed = {}
  for job in pending:
    if codes[job]:
      failed[job] = f"exit code {codes[job]}"
    elif left := job.unfinished():
      failed[job] = f"exit code 0 but no summary.json in {', '.join(map(str, left))}"
  print(
    f"{len(pending) - len(failed)} done, {len(failed)} failed, "
    f"{done} skipped (already done){busy_note}."
  )
  for job, reason in failed.items():
    print(f"FAILED  {job.log}  ({reason})")
  return 1 if failed else 0


def main(argv):
  if len(argv) > 1:
    raise app.UsageError("Too many command-line arguments.")
  jobs, devices = _check_flags()
  # A job with a run folder that another process holds (a sweep started earlier, a
  # user's own run) is left to it.
  unfinished = [job for job in jobs if not job.finished()]
  holders = {job: job.holders() for job in unfinished}
  busy = [job for job in unfinished if holders[job]]
  for job in busy:
    for folder, pid in holders[job].items():
      print(f"busy     {folder} (process {pid})")
  pending = [job for job in unfinished if not holders[job]]
  done = len(jobs) - len(unfinished)
  busy_note = f", {len(busy)} busy" if busy else ""
  assignments = [(job, devices[i % len(devices)]) for i, job in enumerate(pending)]
  if FLAGS["dry-run"].value:
    return _print_plan(jobs, pending, busy, assignments, done, busy_note)
  if not pending:
    print(f"Nothing to run: {done} of {len(jobs)} jobs done{busy_note}.")
    return 0
  if FLAGS.estimate:
    return print_estimate(assignments, devices)
  if FLAGS.backend == "slurm":
    return _submit_slurm(pending, done, busy_note)
  logging.info(
    "Running %d of %d jobs on %s, %d at a time each.",
    len(pending),
    len(jobs),
    ",".join(devices),
    FLAGS.runs_per_gpu,
  )
  return _run_here(pending, assignments, done, busy_note)


if __name__ == "__main__":
  app.run(main)
