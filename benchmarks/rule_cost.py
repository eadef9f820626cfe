"""GEVB against BP against plain autodiff, step by step, in every vectorized net.

  python benchmarks/rule_cost.py [--rounds=10] [--only=mnist-conv] [--batch=128]

Best-of-N figures of rows timed one after another cannot separate 10 % on a machine
where one step's time spreads by +-20 %. Here the three train steps of one network
(``train.make_train_step`` with "gevb" and "bp", and ``common.autodiff_step``)
take turns, one step each per round, after a compiling warm-up, so that slow and fast
spells of the machine hit all three alike. Prints the median and the fastest step of
each, and whether the medians keep the order GEVB <= BP <= autodiff.
"""

import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags
from common import DATASETS, NO_NET_MATCHES, autodiff_step, matches_a_net

import gevb_jax
from gevb_jax import train

FLAGS = flags.FLAGS
flags.DEFINE_integer(
  "rounds", 10, "Timed rounds, one step of each rule per round.", lower_bound=1
)
flags.DEFINE_integer("batch", 128, "Batch size.", lower_bound=1)
flags.DEFINE_string("only", "", "substring filter on 'dataset-arch'")
flags.register_validator("only", matches_a_net, message=NO_NET_MATCHES)


def interleaved(dataset, arch, batch, rounds):
  shape = DATASETS[dataset]
  net = gevb_jax.make_network(
    arch, input_shape=shape, num_classes=10, vectorized=True, nonneg=True
  )
  variables = net.init(jax.random.key(0))
  tx = gevb_jax.make_optimizer(net)
  x = jax.random.uniform(jax.random.key(1), (batch, *shape), minval=-1.0, maxval=1.0)
  y = jax.random.randint(jax.random.key(2), (batch,), 0, 10)
  idx = jnp.arange(batch)
  mesh = train.make_mesh()
  steps = {
    "gevb": train.make_train_step(net, tx, "gevb", mesh),
    "bp": train.make_train_step(net, tx, "bp", mesh),
    "autodiff": autodiff_step(net, tx),
  }
  states = {
    name: jax.tree_util.tree_map(
      jnp.array,
      {
        "params": variables["params"],
        "fixed": variables["fixed"],
        "opt_state": tx.init(variables["params"]),
      },
    )
    for name in steps
  }
  times = {name: [] for name in steps}
  for i in range(rounds + 1):  # Round 0 compiles.
    for name, step in steps.items():
      start = time.perf_counter()
      states[name], loss = step(states[name], x, y, idx)
      jax.block_until_ready(loss)
      if i:
        times[name].append(time.perf_counter() - start)
  return {name: np.asarray(t) * 1e3 for name, t in times.items()}


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  print(
    f"backend: {jax.default_backend()}, batch {FLAGS.batch}, "
    f"{FLAGS.rounds} interleaved rounds\n"
  )
  print(
    "| net (vec, nonneg) | GEVB median (min) ms | BP median (min) ms "
    "| autodiff median (min) ms | GEVB <= BP <= autodiff |"
  )
  print("|---|---:|---:|---:|---|")
  for dataset in DATASETS:
    for arch in gevb_jax.ARCHS:
      if FLAGS.only not in f"{dataset}-{arch}":
        continue
      ms = interleaved(dataset, arch, FLAGS.batch, FLAGS.rounds)
      med = {name: float(np.median(t)) for name, t in ms.items()}
      cells = [f"{med[n]:.0f} ({ms[n].min():.0f})" for n in ("gevb", "bp", "autodiff")]
      order = med["gevb"] <= med["bp"] <= med["autodiff"]
      print(
        f"| {dataset}-{arch} | {' | '.join(cells)} | {'yes' if order else 'no'} |",
        flush=True,
      )


if __name__ == "__main__":
  app.run(main)
