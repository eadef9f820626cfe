"""Peak resident memory of training, evaluating and measuring alignment, per network.

  python benchmarks/peak_memory.py [--only=mnist-conv] [--budget_mb=512]

Each network runs in its own process (peak RSS is per process): one jitted train
step at batch 128, one evaluation pass over 2 000 random examples in the batches that
``evaluation.memory_bounded_batches`` picks for the budget, and the alignment measurement
on 128 examples. Prints the batch sizes and the process's peak RSS. Nonnegative VNNs
with GEVB, Tables 3-4 at MNIST and CIFAR-10 input shapes. Nothing here is a test.
"""

import json
import resource
import subprocess
import sys

import jax
import jax.numpy as jnp
from absl import app, flags
from common import DATASETS, NETS, NO_NET_MATCHES, matches_a_net

import gevb_jax
from gevb_jax import defaults, evaluation, metrics, train

FLAGS = flags.FLAGS
flags.DEFINE_string("only", "", "Substring filter on DATASET-ARCH.")
flags.register_validator("only", matches_a_net, message=NO_NET_MATCHES)
flags.DEFINE_integer("budget_mb", 512, "config.memory_budget_mb.", lower_bound=1)
flags.DEFINE_string("one", "", "Internal: measure this DATASET-ARCH in this process.")
flags.register_validator(
  "one", lambda one: not one or one in NETS, message=f"is none of {', '.join(NETS)}"
)


def measure(name, budget_mb):
  dataset, arch = name.split("-")
  shape = DATASETS[dataset]
  net = gevb_jax.make_network(
    arch, input_shape=shape, num_classes=10, vectorized=True, nonneg=True
  )
  config = defaults.base_config()
  config.memory_budget_mb = budget_mb
  mesh = train.make_mesh()
  eval_batch, probe_batch = evaluation.memory_bounded_batches(net, config, mesh.size)
  variables = net.init(jax.random.key(0))
  tx = gevb_jax.make_optimizer(net)
  state = {
    "params": variables["params"],
    "fixed": variables["fixed"],
    "opt_state": tx.init(variables["params"]),
  }
  x = jax.random.uniform(jax.random.key(1), (2000, *shape), minval=-1, maxval=1)
  y = jax.random.randint(jax.random.key(2), (2000,), 0, 10)
  step = train.make_train_step(net, tx, "gevb", mesh)
  state, loss = step(state, x, y, jnp.arange(128))
  jax.block_until_ready(loss)
  variables = {"params": state["params"], "fixed": state["fixed"]}
  evaluation.evaluate(
    evaluation.make_eval_step(net, mesh), variables, x, y, eval_batch, mesh
  )
  metrics.alignment(net, variables, x[:128], y[:128], "gevb", batch_size=probe_batch)
  peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
  return {
    "net": name,
    "eval_batch": eval_batch,
    "alignment_batch": probe_batch,
    "peak_rss_mb": peak_mb,
  }


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  if FLAGS.one:
    print(json.dumps(measure(FLAGS.one, FLAGS.budget_mb)))
    return
  print(f"memory_budget_mb = {FLAGS.budget_mb}\n")
  print("| net (vec, nonneg, GEVB) | eval batch | alignment batch | peak RSS |")
  print("|---|---:|---:|---:|", flush=True)
  for dataset in DATASETS:
    for arch in gevb_jax.ARCHS:
      name = f"{dataset}-{arch}"
      if FLAGS.only not in name:
        continue
      out = subprocess.run(
        [sys.executable, __file__, f"--one={name}", f"--budget_mb={FLAGS.budget_mb}"],
        capture_output=True,
        text=True,
        check=True,
      )
      r = json.loads(out.stdout.strip().splitlines()[-1])
      print(
        f"| {name} | {r['eval_batch']} | {r['alignment_batch']} | "
        f"{r['peak_rss_mb'] / 1024:.2f} GB |",
        flush=True,
      )


if __name__ == "__main__":
  app.run(main)
