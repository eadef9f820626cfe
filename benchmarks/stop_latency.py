"""Seconds from SIGTERM to the training CLI's exit, mid-training.

  python benchmarks/stop_latency.py [--data=fashion_mnist] [--arch=conv] [--rule=gevb]
      [--novectorized] [--wait_s=5] [--runs=1] [--set key=value ...]

Starts ``python -m gevb_jax.main`` on configs/<data>.py (Fashion-MNIST by default;
``--data=digits``: configs/default.py) in a fresh workdir, waits for the epoch-0
evaluation line and ``--wait_s`` seconds more, so that training is under way, sends
SIGTERM and times the exit. ``--set`` passes ``--config.<key>=<value>`` on, e.g.
``--set steps_per_call=64`` for the fixed calls before issue 23 (0: whole epochs).
Evaluations come every 10 epochs and checkpoints at most every 60 s between them, the
defaults, so the latest checkpoint is epoch 0's or a later one. Prints a markdown
table: the
seconds from SIGTERM to exit, the exit code, the last line the run printed, and the
latest checkpoint it left with whether it restores (``workdir.restore_step``: readable,
finite, matching its checksum).
"""

import pathlib
import signal
import subprocess
import sys
import tempfile
import threading
import time

from absl import app, flags, logging

import gevb_jax
from gevb_jax import grid
from gevb_jax import workdir as run_folder

FLAGS = flags.FLAGS
flags.DEFINE_enum(
  "data", "fashion_mnist", ["digits", "fashion_mnist"], "configs/<data>.py's data."
)
flags.DEFINE_enum("arch", "conv", gevb_jax.ARCHS, "Architecture.")
flags.DEFINE_bool("vectorized", True, "A VNN, or a conventional net.")
flags.DEFINE_enum(
  "rule", "gevb", sorted({r for rs in grid.RULES.values() for r in rs}), "Learning rule."
)
flags.DEFINE_float("wait_s", 5.0, "Seconds after the epoch-0 evaluation line.")
flags.DEFINE_float("start_timeout_s", 600.0, "Most seconds to wait for that line.")
flags.DEFINE_float("stop_timeout_s", 1800.0, "Most seconds to wait for the exit.")
flags.DEFINE_integer("runs", 1, "Runs, one row each.", lower_bound=1)
flags.DEFINE_multi_string("set", [], "Config override key=value; repeatable.")

ROOT = pathlib.Path(__file__).resolve().parents[1]
CONFIGS = {"digits": "configs/default.py", "fashion_mnist": "configs/fashion_mnist.py"}


def command(workdir):
  """The CLI on the chosen net, with a checkpoint at most every 60 s between
  evaluations (the default) and evaluations every 10 epochs."""
  return [
    sys.executable,
    "-m",
    "gevb_jax.main",
    f"--config={CONFIGS[FLAGS.data]}",
    f"--workdir={workdir}",
    f"--config.model.arch={FLAGS.arch}",
    f"--config.model.vectorized={FLAGS.vectorized}",
    f"--config.rule={FLAGS.rule}",
    "--config.progress=False",
    "--config.stop_at_zero_train_error=False",
    *(f"--config.{item}" for item in FLAGS.set),
  ]


def _collect(stream, lines, started):
  """Appends the lines of ``stream``; sets ``started`` at the epoch-0 evaluation."""
  for line in stream:
    lines.append(line.rstrip("\n"))
    if line.startswith("epoch   0:"):
      started.set()


def checkpoint_state(workdir):
  """``(latest epoch, restorable)`` of the workdir's checkpoints, or ``(None, False)``."""
  step = run_folder.checkpoint_manager(str(workdir), keep_period=1).latest_step()
  if step is None:
    return None, False
  return step, run_folder.stored_state(str(workdir), step) is not None


def one_run(workdir):
  """SIGTERM mid-training: ``(seconds to exit, exit code, last line, checkpoint
  epoch, restorable)``."""
  proc = subprocess.Popen(
    command(workdir),
    cwd=ROOT,
    stdout=subprocess.PIPE,
    stderr=subprocess.STDOUT,
    text=True,
  )
  lines, started = [], threading.Event()
  reader = threading.Thread(target=_collect, args=(proc.stdout, lines, started))
  reader.start()
  if not started.wait(FLAGS.start_timeout_s):
    proc.kill()
    reader.join()
    sys.exit(f"no epoch-0 evaluation in {FLAGS.start_timeout_s:g} s: {lines[-1:]}")
  time.sleep(FLAGS.wait_s)
  if proc.poll() is not None:
    sys.exit(f"the run ended before SIGTERM: {lines[-1:]}; shorten --wait_s")
  sent = time.perf_counter()
  proc.send_signal(signal.SIGTERM)
  try:
    code = proc.wait(FLAGS.stop_timeout_s)
  except subprocess.TimeoutExpired:
    proc.kill()
    code = f"killed after {FLAGS.stop_timeout_s:g} s"
    proc.wait()
  seconds = time.perf_counter() - sent
  reader.join()
  return (seconds, code, lines[-1] if lines else "", *checkpoint_state(workdir))


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  logging.set_verbosity(logging.ERROR)  # orbax logs its restores.
  kind = "vectorized" if FLAGS.vectorized else "conventional"
  print(
    f"{FLAGS.data} {FLAGS.arch} {kind} {FLAGS.rule}, SIGTERM {FLAGS.wait_s:g} s after "
    f"the epoch-0 evaluation{', ' if FLAGS.set else ''}{' '.join(FLAGS.set)}\n"
  )
  print("| run | SIGTERM to exit (s) | exit code | last line | checkpoint | restorable |")
  print("|---:|---:|---:|---|---:|---|")
  for run in range(FLAGS.runs):
    with tempfile.TemporaryDirectory() as tmp:
      seconds, code, last, step, ok = one_run(pathlib.Path(tmp) / "run")
    epoch = "none" if step is None else f"epoch {step}"
    last = last.replace("|", "\\|")
    restorable = "yes" if ok else "no"
    print(f"| {run} | {seconds:.1f} | {code} | {last} | {epoch} | {restorable} |")


if __name__ == "__main__":
  app.run(main)
