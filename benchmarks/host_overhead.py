"""Time the training loop spends outside the jitted step, on Fashion-MNIST FC.

  python benchmarks/host_overhead.py [--epochs=2] [--arch=fc] [--rule=gevb]

Runs whole epochs through ``train.run_epoch`` (shuffled index batches, host-to-device
transfer, progress bookkeeping), then the same number of steps with one batch already
on the device, waiting for each; prints both and the loop's overhead.
"""

import argparse
import time

import jax
import numpy as np

import gevb_jax
from configs import fashion_mnist
from gevb_jax import data, train


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--epochs", type=int, default=2)
  parser.add_argument("--arch", default="fc")
  parser.add_argument("--rule", default="gevb")
  args = parser.parse_args()
  config = fashion_mnist.get_config()
  ds = data.load_dataset(config.data)
  net = gevb_jax.make_network(args.arch, input_shape=ds.train_x.shape[1:],
                              num_classes=ds.num_classes, vectorized=True, nonneg=True)
  tx = gevb_jax.make_optimizer(net)
  variables = net.init(jax.random.key(0))
  state = {**variables, "opt_state": tx.init(variables["params"])}
  mesh = train.data_mesh()
  x_all, y_all = jax.device_put((ds.train_x, ds.train_y))
  step = train.make_train_step(net, tx, args.rule, mesh)
  batches = [data.batch_indices(len(ds.train_x), config.batch_size, 0, e)
             for e in range(args.epochs + 1)]
  state, _ = train.run_epoch(step, state, x_all, y_all, batches[0][:3], mesh)  # Compile.
  jax.block_until_ready(state)

  start = time.perf_counter()
  for epoch in range(1, args.epochs + 1):
    state, loss = train.run_epoch(step, state, x_all, y_all, batches[epoch], mesh)
    float(loss)
  loop = time.perf_counter() - start

  idx = jax.device_put(batches[0][0])
  steps = sum(len(b) for b in batches[1:])
  times = []
  for _ in range(steps):
    t = time.perf_counter()
    state, loss = step(state, x_all, y_all, idx)
    jax.block_until_ready(loss)
    times.append(time.perf_counter() - t)
  device = float(np.sum(times))
  print("| model | steps | loop s | steps alone s | s/epoch | overhead |")
  print("|---|---:|---:|---:|---:|---:|")
  print(f"| Fashion-MNIST vec {args.arch} {args.rule} | {steps} | {loop:.2f} | "
        f"{device:.2f} | {loop / args.epochs:.2f} | {100 * (loop - device) / loop:.1f}% |")


if __name__ == "__main__":
  main()
