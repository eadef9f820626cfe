"""Trains one network with one learning rule.

  python -m gevb_jax.main --config=configs/default.py --workdir=runs/digits \
      [--config.model.arch=conv --config.rule=bp ...]
"""

import os
import signal
import sys
import traceback

from absl import app, flags, logging

from gevb_jax import cli_config, config_check, data, train

FLAGS = flags.FLAGS
flags.DEFINE_string("workdir", None, "Directory for metrics, checkpoints and plots.")
flags.mark_flags_as_required(["workdir"])
cli_config.define()


def parse_flags(argv):
  """absl's parsing, with a bad flag or config file on one line instead of a
  traceback."""
  try:
    return cli_config.parse(FLAGS, argv)
  except cli_config.FlagError as err:
    sys.exit(f"error: {err}; see --helpshort")
  except config_check.ConfigError as err:
    sys.exit(f"error: {err}")


def _interrupt(signum, frame):
  raise KeyboardInterrupt


def _in(names, path):
  """Whether ``path`` lies in a package or module folder of one of ``names``."""
  return any(f"{os.sep}{name}{os.sep}" in path for name in names)


# orbax and the asyncio loop and TensorStore reads it drives.
CHECKPOINT_LIBRARIES = ("orbax", "asyncio", "tensorstore")


def _from_checkpoint_libraries(unraisable):
  """Whether an exception Python could not raise (``sys.unraisablehook``) came from
  orbax's reads: after a failed restore, TensorStore's callbacks meet a closed event
  loop and coroutines are dropped, each printed with a traceback."""
  files = [frame.filename for frame in traceback.extract_tb(unraisable.exc_traceback)]
  code = getattr(unraisable.object, "cr_code", None)  # A coroutine's.
  files += [code.co_filename] if code else []
  return any(_in(CHECKPOINT_LIBRARIES, path) for path in files)


def _from_orbax(record):
  """Whether a log record reports a failure of orbax's: its own records (with
  tracebacks), and asyncio's "Task exception was never retrieved" for an orbax read
  that failed beside the one the restore raised, logged whenever the garbage
  collector gets to that task."""
  return _in(["orbax"], record.pathname) or (
    record.name == "asyncio" and _in(["orbax"], record.getMessage())
  )


def _quiet_libraries():
  """Leaves orbax's failures to the trainer's one-line messages: its log records (with
  tracebacks) and the exceptions its reads leave unraised are dropped."""
  logging.set_verbosity(logging.WARNING)
  logging.get_absl_handler().addFilter(lambda record: not _from_orbax(record))
  hook = sys.unraisablehook
  sys.unraisablehook = lambda unraisable: (
    None if _from_checkpoint_libraries(unraisable) else hook(unraisable)
  )


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  if not FLAGS["verbosity"].present:  # Library logs only when asked for.
    _quiet_libraries()
  logging.info("config:\n%s", FLAGS.config)
  signal.signal(signal.SIGTERM, _interrupt)  # Ends like Ctrl-C.
  try:
    summaries = train.train_and_evaluate(FLAGS.config, FLAGS.workdir)
  except (train.TrainingError, data.DataError, ValueError, OSError) as err:
    print(f"error: {err}", file=sys.stderr)
    sys.exit(1)
  except KeyboardInterrupt:
    print(
      f"stopped; the same command resumes {FLAGS.workdir} from its last checkpoint",
      file=sys.stderr,
      flush=True,
    )
    # Without Python's finalization: it tears down XLA's client under a compile still
    # running in its threads, a stop in mid-compile crashed there (SIGSEGV). What the
    # run wrote is on disk: saves hold the signal, the metrics and events are flushed
    # row by row, and the kernel releases the workdir's lock.
    sys.stdout.flush()
    os._exit(130)
  if FLAGS.config.num_seeds == 1:
    summaries = [summaries]
  for seed, summary in enumerate(summaries, FLAGS.config.seed):
    print(
      f"{f'seed {seed}: ' * (len(summaries) > 1)}final test error "
      f"{summary['final_test_error']:.4f}, train error "
      f"{summary['final_train_error']:.4f} after {summary['epochs_run']} epochs"
    )


if __name__ == "__main__":
  flags.mark_flags_as_required(["config"])
  app.run(main, flags_parser=parse_flags)
