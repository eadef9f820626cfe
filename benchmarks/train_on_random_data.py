"""The trainer on random arrays in place of its data set: a run's speed where the data
are absent (benchmarks/gpu_check.py, on a machine without Fashion-MNIST).

  python benchmarks/train_on_random_data.py --config=configs/fashion_mnist.py \
      --workdir=DIR [--num_train=60000] [--num_test=10000] [--image_shape=28,28,1] \
      [--num_classes=10] [--config.<field>=<value> ...]

Images are uniform in [-1, 1] and labels uniform over the classes, from a fixed seed.
The run's header, its config.json (data.source and data.name "random") and its last
lines say that the data were random. The training CLI itself trains only on a data
set it loads.
"""

import sys

import numpy as np
from absl import app, flags

from gevb_jax import data, train
from gevb_jax import main as cli  # Defines --config and --workdir, and parses them.

FLAGS = flags.FLAGS
flags.DEFINE_integer("num_train", 60_000, "Training images.", lower_bound=1)
flags.DEFINE_integer("num_test", 10_000, "Test images.", lower_bound=1)
flags.DEFINE_list("image_shape", ["28", "28", "1"], "H,W,C of each image.")
flags.register_validator(
  "image_shape",
  lambda shape: len(shape) == 3 and all(s.isdigit() and int(s) > 0 for s in shape),
  message="must be three positive integers, H,W,C",
)
flags.DEFINE_integer("num_classes", 10, "Classes of the labels.", lower_bound=2)

RANDOM = "random"


def random_dataset(num_train, num_test, image_shape, num_classes, seed=0):
  """A ``data.Dataset`` of uniform images in [-1, 1] and uniform labels."""
  rng = np.random.default_rng(seed)

  def split(n):
    x = rng.uniform(-1.0, 1.0, (n, *image_shape)).astype(np.float32)
    return x, rng.integers(0, num_classes, n).astype(np.int32)

  return data.Dataset(*split(num_train), *split(num_test), num_classes, RANDOM)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  config = FLAGS.config.copy_and_resolve_references()
  config.data.source = config.data.name = RANDOM
  config.data.path = ""
  shape = tuple(int(s) for s in FLAGS.image_shape)
  ds = random_dataset(FLAGS.num_train, FLAGS.num_test, shape, FLAGS.num_classes)
  try:
    summaries = train.train_and_evaluate(config, FLAGS.workdir, ds=ds)
  except (train.TrainingError, data.DataError, ValueError, OSError) as err:
    sys.exit(f"error: {err}")
  if config.num_seeds == 1:
    summaries = [summaries]
  for seed, summary in enumerate(summaries, config.seed):
    print(
      f"seed {seed}: final test error {summary['final_test_error']:.4f} after "
      f"{summary['epochs_run']} epochs, on random data"
    )


if __name__ == "__main__":
  flags.mark_flags_as_required(["config"])
  app.run(main, flags_parser=cli.parse_flags)
