"""The SLURM backend: one job array whose task i runs line i + 1 of a task file."""

import os
import pathlib
import shlex


def sbatch_script(
  num_tasks,
  tasks_file,
  log_dir,
  *,
  cwd,
  partition,
  time_limit,
  cpus,
  max_parallel,
):
  """A SLURM job array whose task i runs, in `cwd`, line i + 1 of tasks_file."""
  directives = [
    "--job-name=gevb-sweep",
    f"--array=0-{num_tasks - 1}%{max_parallel}",
    "--gres=gpu:1",
    f"--cpus-per-task={cpus}",
    f"--time={time_limit}",
    f"--output={log_dir}/%A_%a.out",
    *([f"--partition={partition}"] if partition else []),
  ]
  return (
    "\n".join(
      [
        "#!/bin/bash",
        *(f"#SBATCH {directive}" for directive in directives),
        "set -euo pipefail",
        f"cd {shlex.quote(cwd)}",
        f'task=$(sed -n "$((SLURM_ARRAY_TASK_ID + 1))p" {shlex.quote(str(tasks_file))})',
        'eval "exec ${task}"',
      ]
    )
    + "\n"
  )


def write_slurm(pending, root, trainer_module, **sbatch_options):
  """Writes <root>/sweep_tasks.txt and <root>/sweep.sbatch for `pending`.

  Args:
    pending: the jobs (``planning.Job``) to run, one array task each.
    root: the sweep's root directory.
    trainer_module: module that `python -m` runs for each job.
    **sbatch_options: `partition`, `time_limit`, `cpus` and `max_parallel`
      of `sbatch_script`.

  Returns:
    The path of the script.
  """
  root = pathlib.Path(root).absolute()
  log_dir = root / "slurm_logs"
  log_dir.mkdir(parents=True, exist_ok=True)  # SLURM does not create it.
  tasks_file = root / "sweep_tasks.txt"
  tasks_file.write_text(
    "".join(shlex.join(job.command(trainer_module)) + "\n" for job in pending)
  )
  script = root / "sweep.sbatch"
  script.write_text(
    sbatch_script(len(pending), tasks_file, log_dir, cwd=os.getcwd(), **sbatch_options)
  )
  return script
