"""Train-step throughput of every paper architecture and rule, on random data.

  python benchmarks/step_throughput.py [--batch=128] [--iters=5] [--only=mnist-fc]
      [--rules=gevb,dfa] [--output_code=binary] [--num_classes=100] [--num_seeds=1]
      [--step_only] [--min_seconds=2] [--matmul_n=2048] [--json]

Times are the best of at least ``--iters`` calls and ``--min_seconds``, after a
compiling warm-up;
the train step is ``train.make_train_step`` itself (donated state, as in training).
For each network (Tables 3-4 at MNIST 28x28x1 and CIFAR-10 32x32x3 input shapes) and
each rule that trains it, prints examples/s of the forward pass alone, of the full
jitted train step (update + optax), of the trainer's loop (``train.run_epoch`` over
compiled ``lax.scan`` chunks sized as the trainer sizes them, what users run) and its
ratio to the step, and of the step with updates from plain autodiff through the
vectorized forward; the step's analytic FLOPs, the achieved GFLOP/s, and this
machine's float32 matmul GFLOP/s measured in the same run. ``--num_seeds=N`` times
N seeds in one program: the step of all N and the packed trainer loop, examples of all
seeds counted.
``--num_classes=100 --only=cifar`` gives CIFAR-100's networks: one-hot K = 100, or
binary K = 7 with ``--output_code=binary``. ``--step_only`` times the train step
alone (no forward, trainer loop or autodiff columns): what benchmarks/gpu_check.py
runs for every net and rule in its few minutes.
"""

import json
import math
import sys
import time

import jax
import jax.numpy as jnp
from absl import app, flags
from common import DATASETS, NO_NET_MATCHES, autodiff_step, matches_a_net
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

import gevb_jax
from gevb_jax import layers as L
from gevb_jax import rules, train
from gevb_jax.grid import OUTPUT_CODES

FLAGS = flags.FLAGS
flags.DEFINE_integer("batch", 128, "Batch size.", lower_bound=1)
flags.DEFINE_integer(
  "iters", 5, "Timed calls per measurement, at least (and 2 s).", lower_bound=1
)
flags.DEFINE_string("only", "", "substring filter on 'dataset-arch'")
flags.register_validator("only", matches_a_net, message=NO_NET_MATCHES)
flags.DEFINE_list("rules", [], "Only these rules (default: every rule of each net).")
flags.register_validator(
  "rules",
  lambda names: set(names) <= {*gevb_jax.VECTORIZED_RULES, *gevb_jax.CONVENTIONAL_RULES},
  message="names a rule that no net trains with",
)
flags.DEFINE_bool("step_only", False, "Time the train step alone.")
flags.DEFINE_float(
  "min_seconds",
  2.0,
  "Each measurement lasts at least this long (short steps vary by +-20 % from call "
  "to call on this 2-core CPU).",
  lower_bound=0.0,
)
flags.DEFINE_integer(
  "matmul_n", 2048, "Side of the square matmul that gives the machine's rate.", 64
)
flags.DEFINE_bool("json", False, "print JSON lines instead")
flags.DEFINE_enum(
  "output_code", "onehot", OUTPUT_CODES, "Class code of the outputs (Section 7)."
)
flags.DEFINE_integer(
  "num_classes", 10, "Classes (100: CIFAR-100's fine labels).", lower_bound=2
)

flags.DEFINE_integer(
  "num_seeds", 1, "Seeds in one program (the trainer's num_seeds).", lower_bound=1
)
flags.DEFINE_float(
  "seconds_per_call",
  2.0,
  "The trainer's seconds_per_call: its compiled calls are sized to last this long.",
  lower_bound=0.01,
)


def step_flops(net, rule):
  """Analytic FLOPs (2 x multiply-adds) of the linear maps in one train step, per
  example: the forward, then the rule's backward. Elementwise work is not counted."""
  k = net.num_components
  forward = backward = 0
  for info in net.weighted:
    f = info.layer.flops(info.in_shape)
    forward += k * f
    if rule == "autodiff":  # Weight gradient and input gradient, K-sized.
      backward += k * f * (1 if info.first else 2)
    elif info.first and isinstance(info.layer, L.Conv):  # Per-example kernel
      kernel = math.prod(info.layer.kernel_shape(info.in_shape))  # gradients, then e.
      backward += f + 2 * k * kernel
    elif info.first:  # Layer 1's update is forward-sized by nature.
      backward += k * f
    else:  # Contract with e, then one unvectorized map,
      # Twice for the layer-wise rules (BP's delta_hat, FA/KP/sign's d).
      backward += f * (2 if rule in rules.LAYERWISE_RULES else 1)
    if rule == "dfa" and not info.readout:
      backward += 2 * net.num_outputs * math.prod(info.out_shape)  # e B.
  return forward + backward


# Steps of an MNIST or Fashion-MNIST epoch at batch 128: the most one call can run.
EPOCH_STEPS = 60_000 // 128


def timed(fn, *args, iters):
  """Best seconds per call of a jitted ``fn`` after one warm-up call, over at least
  ``iters`` calls and ``--min_seconds``."""
  jax.block_until_ready(fn(*args))
  best, count, begin = math.inf, 0, time.perf_counter()
  while count < iters or time.perf_counter() - begin < FLAGS.min_seconds:
    start = time.perf_counter()
    jax.block_until_ready(fn(*args))
    best = min(best, time.perf_counter() - start)
    count += 1
  return best


def matmul_gflops(n, iters=10):
  """Float32 matmul GFLOP/s of this machine through XLA (an ``n`` x ``n`` square)."""
  a = jax.random.normal(jax.random.key(0), (n, n), jnp.float32)
  f = jax.jit(lambda a: a @ a)
  return 2 * n**3 / timed(f, a, iters=iters) / 1e9


def timed_steps(step, state, x, y, idx, iters):
  """Best seconds per step over at least ``iters`` steps and ``--min_seconds``, after
  two warm-up steps: the second call compiles again, for the sharding the first gave
  the donated state, unless ``state`` already has it (with one warm-up step,
  --iters=1 timed that compile)."""
  for _ in range(2):  # Compiles, then again for the donated state's new sharding.
    state, loss = step(state, x, y, idx)
    jax.block_until_ready(loss)
  best, count, begin = math.inf, 0, time.perf_counter()
  while count < iters or time.perf_counter() - begin < FLAGS.min_seconds:
    start = time.perf_counter()
    state, loss = step(state, x, y, idx)
    jax.block_until_ready(loss)
    best = min(best, time.perf_counter() - start)
    count += 1
  return best


def trainer_loop_seconds(net, tx, rule, state, x, y, idx, num_seeds):
  """Seconds per step of the trainer's loop: ``train.run_epoch`` over chunks of
  ``train.make_train_chunk``, as many steps a call as ``calibrated_steps_per_call``
  gives, over two calls' worth of steps; best of two after a compiling warm-up.

  Returns that, the steps per call, and the seconds the warm-up took beyond a timed
  loop (the chunk's compilation, mostly)."""
  mesh = train.make_mesh(num_seeds)
  chunk = train.make_train_chunk(net, tx, rule, mesh, num_seeds)
  active = [True] * num_seeds
  epoch = jnp.broadcast_to(idx, (EPOCH_STEPS, *idx.shape))  # (steps, S, batch)
  size = train.calibrated_steps_per_call(
    chunk, state, active, x, y, epoch, FLAGS.seconds_per_call
  )
  steps = 2 * size
  batches = jnp.broadcast_to(idx, (steps, *idx.shape))
  times = []
  for _ in range(3):  # The first compiles.
    start = time.perf_counter()
    state, loss = train.run_epoch(chunk, state, active, x, y, batches, size)
    jax.block_until_ready(loss)
    times.append(time.perf_counter() - start)
  best = min(times[1:])
  return best / steps, size, times[0] - best


def make_net(dataset, arch, vectorized, rule):
  """One of the benchmarked networks, as ``make_network`` builds it for ``rule``."""
  return gevb_jax.make_network(
    arch,
    input_shape=DATASETS[dataset],
    num_classes=FLAGS.num_classes,
    vectorized=vectorized,
    nonneg=True,
    backward_kernels=rules.backward_kernels(rule),
    output_code=FLAGS.output_code,
  )


def beside_the_step(net, tx, rule, x, y, idx, fresh_state, iters):
  """The columns beside the step's: the forward pass, the trainer's loop and the
  autodiff reference step (one seed only), as seconds (None where not timed)."""
  seeds = idx.shape[0]
  variables = net.init(jax.random.key(0))
  t_fwd = timed(jax.jit(net.apply), variables, x, iters=iters)
  t_loop, per_call, compile_s = trainer_loop_seconds(
    net, tx, rule, fresh_state(True), x, y, idx, seeds
  )
  t_auto = None
  if seeds == 1:
    try:  # The K-sized autodiff reference can exhaust memory on the largest nets.
      t_auto = timed_steps(
        autodiff_step(net, tx), fresh_state(False), x, y, idx[0], iters
      )
    except jax.errors.JaxRuntimeError as err:
      print(f"autodiff step failed: {str(err).splitlines()[0]}", file=sys.stderr)
  return t_fwd, t_loop, per_call, compile_s, t_auto


def model_name(dataset, arch, vectorized, net):
  """The table's name of a net, e.g. ``mnist vec conv (K = 10)``."""
  model = f"{dataset} {'vec' if vectorized else 'conv.'} {arch}"
  if FLAGS.num_classes != 10:
    model += f" {FLAGS.num_classes} classes"
  if FLAGS.output_code != "onehot":
    model += f" {FLAGS.output_code}"
  if FLAGS.num_seeds > 1:
    model += f", {FLAGS.num_seeds} seeds"
  return f"{model} (K = {net.num_components})"


def bench(dataset, arch, vectorized, rule, batch, iters):
  shape, seeds = DATASETS[dataset], FLAGS.num_seeds
  net = make_net(dataset, arch, vectorized, rule)
  tx = gevb_jax.make_optimizer(net)
  x = jax.random.uniform(jax.random.key(1), (batch, *shape), minval=-1.0, maxval=1.0)
  y = jax.random.randint(jax.random.key(2), (batch,), 0, FLAGS.num_classes)

  init = jax.jit(net.init)  # Op by op, a vectorized net's init took seconds.

  def fresh_state(stacked):  # A new copy: the steps donate (consume) their state.
    states = [init(jax.random.key(s)) for s in range(seeds if stacked else 1)]
    states = [{**v, "opt_state": tx.init(v["params"])} for v in states]
    return jax.tree.map(lambda *v: jnp.stack(v), *states) if stacked else states[0]

  idx = jnp.broadcast_to(jnp.arange(batch), (seeds, batch))  # (S, batch)
  mesh = train.make_mesh(seeds)
  step = train.make_train_step(net, tx, rule, mesh, seeds)
  # On the step's output sharding, the second warm-up step reuses the first's program.
  sharding = NamedSharding(mesh, P("seeds") if seeds > 1 else P())
  state = jax.device_put(fresh_state(seeds > 1), sharding)
  t_step = timed_steps(step, state, x, y, idx if seeds > 1 else idx[0], iters)
  t_fwd = t_loop = per_call = compile_s = t_auto = None
  if not FLAGS.step_only:
    t_fwd, t_loop, per_call, compile_s, t_auto = beside_the_step(
      net, tx, rule, x, y, idx, fresh_state, iters
    )
  flops = step_flops(net, rule) * batch * seeds
  return {
    "model": model_name(dataset, arch, vectorized, net),
    "rule": rule,
    "forward_ex_s": batch / t_fwd if t_fwd else None,
    "step_ex_s": seeds * batch / t_step,
    "trainer_ex_s": seeds * batch / t_loop if t_loop else None,
    "trainer_steps_per_call": per_call,
    "trainer_compile_s": compile_s,
    "autodiff_step_ex_s": batch / t_auto if t_auto else None,
    "gflop_per_step": flops / 1e9,
    "gflop_s": flops / t_step / 1e9,
  }


def _cell(value, spec=".0f"):
  return "-" if value is None else format(value, spec)


def table_row(r, peak):
  """One row of the markdown table (``-`` where a column was not timed)."""
  ratio = r["trainer_ex_s"] / r["step_ex_s"] if r["trainer_ex_s"] else None
  cells = [
    r["model"],
    r["rule"],
    _cell(r["forward_ex_s"]),
    _cell(r["step_ex_s"]),
    _cell(r["trainer_ex_s"]),
    _cell(ratio, ".2f"),
    _cell(r["trainer_steps_per_call"], "d"),
    _cell(r["trainer_compile_s"], ".1f"),
    _cell(r["autodiff_step_ex_s"]),
    _cell(r["gflop_per_step"], ".2f"),
    _cell(r["gflop_s"]),
    f"{100 * r['gflop_s'] / peak:.0f}%",
  ]
  return "| " + " | ".join(cells) + " |"


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  peak = matmul_gflops(FLAGS.matmul_n)
  if not FLAGS.json:
    print(
      f"backend: {jax.default_backend()}, devices: {jax.device_count()}, "
      f"batch {FLAGS.batch}, seeds {FLAGS.num_seeds}, float32 matmul: {peak:.0f} "
      f"GFLOP/s, calls of {FLAGS.seconds_per_call:g} s\n"
    )
    print(
      "| model | rule | forward ex/s | step ex/s | trainer ex/s | trainer / step "
      "| steps per call | chunk compile s | autodiff step ex/s | GFLOP/step | GFLOP/s "
      "| % of matmul |"
    )
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|", flush=True)
  for dataset in DATASETS:
    for arch in gevb_jax.ARCHS:
      if FLAGS.only not in f"{dataset}-{arch}":
        continue
      for vectorized in (True, False):
        rules = gevb_jax.VECTORIZED_RULES if vectorized else gevb_jax.CONVENTIONAL_RULES
        for rule in rules:
          if FLAGS.rules and rule not in FLAGS.rules:
            continue
          r = bench(dataset, arch, vectorized, rule, FLAGS.batch, FLAGS.iters)
          r["matmul_gflop_s"] = peak
          print(json.dumps(r) if FLAGS.json else table_row(r, peak), flush=True)


if __name__ == "__main__":
  app.run(main)
