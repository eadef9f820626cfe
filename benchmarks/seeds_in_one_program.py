"""Wall time of N seeds in one process (``--config.num_seeds=N``) against N runs.

  python benchmarks/seeds_in_one_program.py --config=default [--arch=fc]
      [--num_seeds=3] [--num_epochs=-1] [--set=key=value ...]

Times the training CLI as a user runs it, start-up included: the N single-seed runs
one after the other, then one run of all N seeds, each in a fresh folder, ``--repeats``
times alternating. Prints a table row with the median times and the largest gap
between a seed's final test error in the two ways.
"""

import os
import statistics
import subprocess
import sys
import tempfile
import time

from absl import app, flags

import gevb_jax
from gevb_jax import workdir as run_folder

FLAGS = flags.FLAGS
flags.DEFINE_string("config", "default", "configs/<config>.py.")
flags.DEFINE_enum("arch", "fc", gevb_jax.ARCHS, "Architecture of the vectorized net.")
flags.DEFINE_integer("num_seeds", 3, "Seeds 0, ..., num_seeds - 1.", lower_bound=2)
flags.DEFINE_integer(
  "num_epochs", -1, "Epochs per run; -1: the config's (up to zero train error)."
)
flags.DEFINE_multi_string("set", [], "More --config.<key>=<value> overrides.")
flags.DEFINE_integer(
  "repeats", 3, "Times both ways, alternating; the medians are printed.", lower_bound=1
)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _train(workdir, *flags_):
  """Runs the training CLI; returns its wall time in seconds."""
  command = [
    sys.executable,
    "-m",
    "gevb_jax.main",
    f"--config=configs/{FLAGS.config}.py",
    f"--workdir={workdir}",
    f"--config.model.arch={FLAGS.arch}",
    "--config.progress=False",
    *(f"--config.{item}" for item in FLAGS.set),
    *flags_,
  ]
  if FLAGS.num_epochs >= 0:
    command.append(f"--config.num_epochs={FLAGS.num_epochs}")
  start = time.perf_counter()
  subprocess.run(command, cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
  return time.perf_counter() - start


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  seeds = range(FLAGS.num_seeds)
  separate, packed = [], []
  for _ in range(FLAGS.repeats):
    with tempfile.TemporaryDirectory() as root:
      separate.append(
        sum(_train(f"{root}/single_{s}", f"--config.seed={s}") for s in seeds)
      )
      packed.append(_train(f"{root}/packed", f"--config.num_seeds={FLAGS.num_seeds}"))
      single = [run_folder.read_summary(f"{root}/single_{s}") for s in seeds]
      together = [
        run_folder.read_summary(run_folder.seed_dir(f"{root}/packed", s)) for s in seeds
      ]
  separate, packed = statistics.median(separate), statistics.median(packed)
  test_size = {"default": 360, "fashion_mnist": 10000}.get(FLAGS.config)
  gap = max(
    abs(a["final_test_error"] - b["final_test_error"])
    for a, b in zip(single, together, strict=True)
  )
  epochs = "/".join(str(s["epochs_run"]) for s in together)
  print(
    "| config | arch | seeds | epochs run | separate runs s (median) | one program s | "
    "speed-up | largest test-error gap |"
  )
  print("|---|---|---:|---|---:|---:|---:|---:|")
  gap_text = f"{gap:.4f}" + (f" ({gap * test_size:.0f} examples)" if test_size else "")
  print(
    f"| {FLAGS.config} | {FLAGS.arch} | {FLAGS.num_seeds} | {epochs} | "
    f"{separate:.1f} | {packed:.1f} | {separate / packed:.2f}x | {gap_text} |"
  )


if __name__ == "__main__":
  app.run(main)
