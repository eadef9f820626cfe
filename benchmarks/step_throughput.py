"""Train-step throughput of every paper architecture and rule, on random data.

  python benchmarks/step_throughput.py [--batch=128] [--iters=5] [--only=mnist-fc] [--json]

For each network (Tables 3-4 at MNIST 28x28x1 and CIFAR-10 32x32x3 input shapes) and
each rule that trains it, prints examples/s of the forward pass alone, of the full
jitted train step (update + optax), and of the same step with updates from plain
autodiff through the vectorized forward; the step's analytic FLOPs, the achieved
GFLOP/s, and this machine's float32 matmul GFLOP/s measured in the same run.
"""

import argparse
import json
import math
import time

import jax
import jax.numpy as jnp
import optax

import gevb_jax

DATASETS = {"mnist": (28, 28, 1), "cifar": (32, 32, 3)}

# The authors' PyTorch code, GEVB, batch 128, 2-core CPU (ex/s), from the issue.
AUTHORS = {("mnist", "fc"): 536, ("mnist", "conv"): 111, ("mnist", "lc"): 64,
           ("cifar", "fc"): 119, ("cifar", "conv"): 19}


def step_flops(net, rule):
  """Analytic FLOPs (2 x multiply-adds) of the linear maps in one train step, per
  example: the forward, then the rule's backward. Elementwise work is not counted."""
  k = net.num_components
  forward = backward = 0
  for info in net.weighted:
    f = info.layer.flops(info.in_shape)
    forward += k * f
    if rule == "autodiff":           # Weight gradient and input gradient, K-sized.
      backward += k * f * (1 if info.first else 2)
    elif info.first:                 # Layer 1's update is forward-sized by nature.
      backward += k * f
    else:                            # Contract with e, then one unvectorized map,
      backward += f * (2 if rule == "bp" else 1)  # twice for BP (delta_hat).
    if rule == "dfa" and not info.readout:
      backward += 2 * net.num_classes * math.prod(info.out_shape)  # e B.
  return forward + backward


def timed(fn, *args, iters):
  """Median seconds per call of a jitted ``fn`` after one warm-up call."""
  jax.block_until_ready(fn(*args))
  times = []
  for _ in range(iters):
    start = time.perf_counter()
    jax.block_until_ready(fn(*args))
    times.append(time.perf_counter() - start)
  return sorted(times)[len(times) // 2]


def matmul_gflops(n=2048, iters=10):
  """Float32 matmul GFLOP/s of this machine through XLA."""
  a = jax.random.normal(jax.random.key(0), (n, n), jnp.float32)
  f = jax.jit(lambda a: a @ a)
  return 2 * n ** 3 / timed(f, a, iters=iters) / 1e9


def make_step(net, tx, rule):
  """A jitted train step; ``rule="autodiff"`` takes the plain BP gradient."""
  def loss(params, fixed, x, y):
    return gevb_jax.cross_entropy(net.apply({"params": params, "fixed": fixed}, x), y)

  @jax.jit
  def step(params, opt_state, fixed, x, y):
    if rule == "autodiff":
      value, updates = jax.value_and_grad(loss)(params, fixed, x, y)
    else:
      value, updates = gevb_jax.loss_and_updates(
          net, {"params": params, "fixed": fixed}, x, y, rule)
    updates, opt_state = tx.update(updates, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, value
  return step


def bench(dataset, arch, vectorized, rule, batch, iters):
  shape = DATASETS[dataset]
  net = gevb_jax.make_network(arch, input_shape=shape, num_classes=10,
                              vectorized=vectorized, nonneg=True)
  variables = net.init(jax.random.key(0))
  params, fixed = variables["params"], variables["fixed"]
  x = jax.random.uniform(jax.random.key(1), (batch, *shape), minval=-1.0, maxval=1.0)
  y = jax.random.randint(jax.random.key(2), (batch,), 0, 10)
  tx = gevb_jax.make_optimizer(net)
  opt_state = tx.init(params)
  fwd = jax.jit(net.apply)
  t_fwd = timed(fwd, variables, x, iters=iters)
  t_step = timed(make_step(net, tx, rule), params, opt_state, fixed, x, y, iters=iters)
  t_auto = timed(make_step(net, tx, "autodiff"), params, opt_state, fixed, x, y,
                 iters=iters)
  flops = step_flops(net, rule) * batch
  return {
      "model": f"{dataset} {'vec' if vectorized else 'conv.'} {arch}",
      "rule": rule,
      "forward_ex_s": batch / t_fwd,
      "step_ex_s": batch / t_step,
      "autodiff_step_ex_s": batch / t_auto,
      "gflop_per_step": flops / 1e9,
      "gflop_s": flops / t_step / 1e9,
      "authors_ex_s": AUTHORS.get((dataset, arch)) if vectorized and rule == "gevb" else None,
  }


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--batch", type=int, default=128)
  parser.add_argument("--iters", type=int, default=5)
  parser.add_argument("--only", default="", help="substring filter on 'dataset-arch'")
  parser.add_argument("--json", action="store_true", help="print JSON lines instead")
  args = parser.parse_args()
  peak = matmul_gflops()
  rows = []
  for dataset in DATASETS:
    for arch in gevb_jax.ARCHS:
      if args.only not in f"{dataset}-{arch}":
        continue
      for vectorized in (True, False):
        rules = gevb_jax.VECTORIZED_RULES if vectorized else gevb_jax.CONVENTIONAL_RULES
        for rule in reversed(rules):
          row = bench(dataset, arch, vectorized, rule, args.batch, args.iters)
          row["matmul_gflop_s"] = peak
          rows.append(row)
          if args.json:
            print(json.dumps(row), flush=True)
  if args.json:
    return
  print(f"backend: {jax.default_backend()}, devices: {jax.device_count()}, "
        f"batch {args.batch}, float32 matmul: {peak:.0f} GFLOP/s\n")
  print("| model | rule | forward ex/s | step ex/s | autodiff step ex/s | GFLOP/step "
        "| GFLOP/s | % of matmul | authors' PyTorch ex/s (x4 target) |")
  print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
  for r in rows:
    authors = (f"{r['authors_ex_s']} ({4 * r['authors_ex_s']})"
               if r["authors_ex_s"] else "")
    print(f"| {r['model']} | {r['rule']} | {r['forward_ex_s']:.0f} | "
          f"{r['step_ex_s']:.0f} | {r['autodiff_step_ex_s']:.0f} | "
          f"{r['gflop_per_step']:.2f} | {r['gflop_s']:.0f} | "
          f"{100 * r['gflop_s'] / peak:.0f}% | {authors} |")


if __name__ == "__main__":
  main()
