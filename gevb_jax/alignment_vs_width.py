"""GEVB alignment at initialisation against width, beside Eq. 15's prediction.

  python -m gevb_jax.alignment_vs_width --config=configs/default.py --out=DIR \
      [--widths=64,128,256,512,1024,2048,4096] [--seeds=5] [--examples=128]

For each width n, nonnegative FC VNNs with every hidden layer n wide (ON/OFF init)
are built for the config's dataset; the angle between GEVB's and the gradient's
single-example updates (Appendix E) is measured per hidden layer on the first training
inputs in stored order (as the authors measured it), and Eq. 15's ``arctan r^l`` is
computed from the same weights. Writes
``alignment_vs_width.md`` (mean +- std over seeds), ``alignment_vs_width.json`` and
``alignment_vs_width.png``.
"""

import json
import os

import jax
from absl import app, flags
from ml_collections import config_flags

import gevb_jax
from gevb_jax import data, metrics
from gevb_jax.report import figures, runs, tables

FLAGS = flags.FLAGS
flags.DEFINE_string("out", None, "Output directory.")
flags.DEFINE_list(
  "widths", ["64", "128", "256", "512", "1024", "2048", "4096"], "Hidden widths n (even)."
)
flags.register_validator(
  "widths",
  lambda ws: (
    bool(ws) and all(w.isdigit() and int(w) >= 2 and int(w) % 2 == 0 for w in ws)
  ),
  message="--widths must list even integers >= 2 (ON/OFF pairs), e.g. 64,128",
)
flags.DEFINE_integer("seeds", 5, "Initialisations per width.", lower_bound=1)
flags.DEFINE_integer(
  "examples",
  128,
  "First training examples (stored order) the angles average over.",
  lower_bound=1,
)
config_flags.DEFINE_config_file("config", "configs/default.py", "Config naming the data.")


def measure(input_shape, num_classes, x, widths, seeds):
  """``{n: {layer: {"measured": [deg per seed], "eq15": [deg per seed]}}}``."""
  # As many hidden layers as the FC net of Table 3 or 4 has for these inputs.
  depth = len(
    gevb_jax.make_network(
      "fc", input_shape=input_shape, num_classes=num_classes, vectorized=True, nonneg=True
    ).hidden
  )
  results = {}
  for n in widths:
    net = gevb_jax.make_network(
      "fc",
      input_shape=input_shape,
      num_classes=num_classes,
      vectorized=True,
      nonneg=True,
      widths=(n,) * depth,
    )
    per_layer = {info.name: {"measured": [], "eq15": []} for info in net.hidden}
    for seed in range(seeds):
      variables = net.init(jax.random.key(seed))
      measured = metrics.alignment(net, variables, x, None, "gevb")
      predicted = metrics.eq15_prediction(net, variables)
      for name in per_layer:
        per_layer[name]["measured"].append(measured[name])
        per_layer[name]["eq15"].append(metrics.angle_from_r(predicted[name]))
    results[n] = per_layer
  return results


def main(argv):
  del argv
  widths = [int(w) for w in FLAGS.widths]
  ds = data.load_dataset(FLAGS.config.data)
  x = ds.train_x[: FLAGS.examples]
  results = measure(ds.train_x.shape[1:], ds.num_classes, x, widths, FLAGS.seeds)
  os.makedirs(FLAGS.out, exist_ok=True)
  stem = os.path.join(FLAGS.out, "alignment_vs_width")
  with open(os.path.join(FLAGS.out, runs.WIDTH_FILE), "w") as f:
    json.dump({str(n): r for n, r in results.items()}, f, indent=2)
  with open(stem + ".md", "w") as f:
    f.write(
      f"GEVB alignment at init, nonneg FC VNN on {ds.name}, mean ± std over "
      f"{FLAGS.seeds} seeds, {len(x)} training examples (degrees).\n\n"
    )
    f.write(tables.width_markdown(results))
  figures.plot_alignment_vs_width(results, stem + ".png")
  print(tables.width_markdown(results))


if __name__ == "__main__":
  flags.mark_flags_as_required(["out"])
  app.run(main)
