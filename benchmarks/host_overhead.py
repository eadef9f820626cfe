"""Time the training loop spends outside the jitted step.

  python benchmarks/host_overhead.py [--data=fashion_mnist] [--epochs=2] [--arch=fc]
      [--novectorized] [--rule=gevb] [--steps_per_call=K]

Runs whole epochs through ``train.run_epoch`` (index batches drawn on the device,
chunk dispatch, progress bookkeeping), then the same number of steps with one batch
already on the device, waiting for each; prints both and the loop's overhead.
"""

import importlib.util
import pathlib
import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags

import gevb_jax
from gevb_jax import data, grid, rules, train

FLAGS = flags.FLAGS
flags.DEFINE_integer(
  "epochs", 2, "Timed epochs, after a compiling warm-up.", lower_bound=1
)
flags.DEFINE_enum(
  "data", "fashion_mnist", ["digits", "fashion_mnist"], "configs/<data>.py's data."
)
flags.DEFINE_integer(
  "steps_per_call",
  None,
  "Steps per compiled call (0: a whole epoch; unset: sized by time, as the trainer).",
  lower_bound=0,
)
flags.DEFINE_enum("arch", "fc", gevb_jax.ARCHS, "Architecture.")
flags.DEFINE_bool("vectorized", True, "A VNN, or a conventional net.")
flags.DEFINE_enum(
  "rule", "gevb", sorted({r for rs in grid.RULES.values() for r in rs}), "Learning rule."
)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  name = {"digits": "default", "fashion_mnist": "fashion_mnist"}[FLAGS.data]
  path = pathlib.Path(__file__).resolve().parents[1] / "configs" / f"{name}.py"
  spec = importlib.util.spec_from_file_location(name, path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  config = module.get_config()
  ds = data.load_dataset(config.data)
  net = gevb_jax.make_network(
    FLAGS.arch,
    input_shape=ds.train_x.shape[1:],
    num_classes=ds.num_classes,
    vectorized=FLAGS.vectorized,
    nonneg=True,
    backward_kernels=rules.backward_kernels(FLAGS.rule),
  )
  rules.check_rule(net, FLAGS.rule)
  tx = gevb_jax.make_optimizer(net)
  variables = net.init(jax.random.key(0))
  state = {**variables, "opt_state": tx.init(variables["params"])}
  mesh = train.make_mesh()
  x_all, y_all = jax.device_put((ds.train_x, ds.train_y))
  step = train.make_train_step(net, tx, FLAGS.rule, mesh)
  chunk = train.make_train_chunk(net, tx, FLAGS.rule, mesh)
  draw = train.make_batch_indices(len(ds.train_x), config.batch_size, mesh)
  one_seed = jax.tree.map(lambda v: v[None], state)

  def batches(epoch):  # (steps, 1 seed, batch), drawn on the device as the trainer does
    return draw(jnp.zeros(1, jnp.uint32), jnp.full(1, epoch, jnp.int32))

  warm = batches(0)
  k = FLAGS.steps_per_call
  if k is None:
    k = train.calibrated_steps_per_call(
      chunk, one_seed, [True], x_all, y_all, warm, config.seconds_per_call
    )
  for warm_up in (warm[: k or len(warm)], warm):  # Compile.
    one_seed, _ = train.run_epoch(chunk, one_seed, [True], x_all, y_all, warm_up, k)
  jax.block_until_ready(one_seed)

  start = time.perf_counter()
  for epoch in range(1, FLAGS.epochs + 1):
    one_seed, loss = train.run_epoch(
      chunk, one_seed, [True], x_all, y_all, batches(epoch), k
    )
    float(loss[0])
  loop = time.perf_counter() - start

  idx = warm[0, 0]
  steps = len(warm) * FLAGS.epochs
  times = []
  for _ in range(steps):
    t = time.perf_counter()
    state, loss = step(state, x_all, y_all, idx)
    jax.block_until_ready(loss)
    times.append(time.perf_counter() - t)
  device = float(np.sum(times))
  print(
    "| model | steps per call | steps | loop s | steps alone s | s/epoch | overhead |"
  )
  print("|---|---:|---:|---:|---:|---:|---:|")
  print(
    f"| {ds.name} {'vec' if FLAGS.vectorized else 'conv.'} {FLAGS.arch} {FLAGS.rule} "
    f"| {k} | {steps} | {loop:.2f} | "
    f"{device:.2f} | {loop / FLAGS.epochs:.2f} | "
    f"{100 * (loop - device) / loop:.1f}% |"
  )


if __name__ == "__main__":
  app.run(main)
