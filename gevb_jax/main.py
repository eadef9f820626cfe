"""Trains one network with one learning rule.

  python -m gevb_jax.main --config=configs/default.py --workdir=runs/digits \
      [--config.model.arch=conv --config.rule=bp ...]
"""

import sys

from absl import app, flags, logging
from ml_collections import config_flags

from gevb_jax import data, train

FLAGS = flags.FLAGS
flags.DEFINE_string("workdir", None, "Directory for metrics, checkpoints and plots.")
flags.mark_flags_as_required(["workdir"])
config_flags.DEFINE_config_file(
  "config", None, "Training configuration file.", lock_config=True
)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  if not FLAGS["verbosity"].present:  # Library INFO logs only when asked for.
    logging.set_verbosity(logging.WARNING)
  logging.info("config:\n%s", FLAGS.config)
  try:
    summary = train.train_and_evaluate(FLAGS.config, FLAGS.workdir)
  except (train.TrainingError, data.DataError, ValueError) as err:
    print(f"error: {err}", file=sys.stderr)
    sys.exit(1)
  print(
    f"final test error {summary['final_test_error']:.4f}, train error "
    f"{summary['final_train_error']:.4f} after {summary['epochs_run']} epochs"
  )


if __name__ == "__main__":
  flags.mark_flags_as_required(["config"])
  app.run(main)
