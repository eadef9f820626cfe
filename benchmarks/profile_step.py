"""Where one train step's time goes: a jax.profiler trace joined with the optimized HLO.

  python benchmarks/profile_step.py --only=mnist-conv [--rule=gevb] [--batch=128]
      [--steps=3] [--vectorized=true] [--top=20] [--dump=DIR] [--num_seeds=1]

Runs ``train.make_train_step`` (as in training) a few times after a compiling warm-up,
under ``jax.profiler.trace``, then prints one row per XLA thunk (a fusion, a
convolution, a custom call, ...), ordered by time per step: milliseconds, share of
the step, the thunk's output shape, and the heavy operations it contains (convolution,
dot, reduce-window, reduce, transpose, ...), read from the compiled module's HLO.
``--dump`` also writes the optimized HLO text there. Nothing here is a test.
"""

import collections
import glob
import gzip
import json
import os
import re
import tempfile
import time

import jax
import jax.numpy as jnp
from absl import app, flags
from common import DATASETS, NETS

import gevb_jax
from gevb_jax import rules, train

HEAVY = (
  "convolution",
  "dot",
  "reduce-window",
  "reduce",
  "transpose",
  "select-and-scatter",
  "gather",
  "scatter",
  "pad",
  "concatenate",
  "custom-call",
)

FLAGS = flags.FLAGS
flags.DEFINE_enum(
  "only", "mnist-conv", NETS, "DATASET-ARCH, e.g. mnist-conv or cifar-lc."
)
flags.DEFINE_enum(
  "rule",
  "gevb",
  sorted({*gevb_jax.VECTORIZED_RULES, *gevb_jax.CONVENTIONAL_RULES}),
  "Learning rule.",
)
flags.DEFINE_bool("vectorized", True, "Vectorized (VNN) or conventional network.")
flags.DEFINE_integer("batch", 128, "Batch size.", lower_bound=1)
flags.DEFINE_integer("steps", 3, "Profiled steps.", lower_bound=1)
flags.DEFINE_integer(
  "num_seeds", 1, "Seeds in one program (the trainer's num_seeds).", lower_bound=1
)
flags.DEFINE_integer("top", 20, "Rows to print.", lower_bound=1)
flags.DEFINE_string("dump", "", "Directory for the optimized HLO text.")


@flags.multi_flags_validator(["rule", "vectorized"])
def _rule_trains_the_network(values):
  """Whether ``--rule`` is one of the rules that train the chosen kind of network."""
  rules = (
    gevb_jax.VECTORIZED_RULES if values["vectorized"] else gevb_jax.CONVENTIONAL_RULES
  )
  if values["rule"] not in rules:
    kind = "vectorized" if values["vectorized"] else "conventional"
    raise flags.ValidationError(
      f"--rule={values['rule']} does not train a {kind} network; "
      f"choose one of {', '.join(rules)}"
    )
  return True


def _computations(hlo):
  """``{computation name: [instruction lines]}`` of an HLO module's text."""
  out, name = {}, None
  for line in hlo.splitlines():
    match = re.match(r"^(?:ENTRY )?%?([\w.\-]+) .*\{$", line)
    if match:
      name = match.group(1)
      out[name] = []
    elif name and line.strip() and line.strip() != "}":
      out[name].append(line.strip())
  return out


def describe(hlo):
  """``{instruction name: (output shape, heavy ops inside)}`` for every instruction."""
  comps = _computations(hlo)
  out = {}
  for lines in comps.values():
    for line in lines:
      match = re.match(
        r"^(?:ROOT )?%?([\w.\-]+) = "  # name
        r"(\S+?\[[^\]]*\](?:\{[^}]*\})?|\([^)]*\)|\S+) "  # shape
        r"([\w\-]+)\(",
        line,
      )  # opcode
      if not match:
        continue
      name, shape, opcode = match.groups()
      called = re.findall(r"(?:calls|to_apply)=%?([\w.\-]+)", line)
      ops = collections.Counter()
      if opcode in HEAVY:
        ops[opcode] += 1
      for comp in called:
        for inner in comps.get(comp, []):
          inner_op = re.search(r"= \S+ ([\w\-]+)\(", inner)
          if inner_op and inner_op.group(1) in HEAVY:
            ops[inner_op.group(1)] += 1
      out[name] = (
        re.sub(r"\{[^}]*\}", "", shape),
        ", ".join(f"{op}×{n}" if n > 1 else op for op, n in ops.items()),
      )
  return out


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  dataset, arch = FLAGS.only.split("-")
  shape = DATASETS[dataset]
  net = gevb_jax.make_network(
    arch,
    input_shape=shape,
    num_classes=10,
    vectorized=FLAGS.vectorized,
    nonneg=True,
    backward_kernels=rules.backward_kernels(FLAGS.rule),
  )
  tx = gevb_jax.make_optimizer(net)
  seeds = FLAGS.num_seeds
  states = [net.init(jax.random.key(s)) for s in range(seeds)]
  states = [{**v, "opt_state": tx.init(v["params"])} for v in states]
  state = jax.tree.map(lambda *v: jnp.stack(v), *states) if seeds > 1 else states[0]
  x = jax.random.uniform(jax.random.key(1), (FLAGS.batch, *shape), minval=-1, maxval=1)
  y = jax.random.randint(jax.random.key(2), (FLAGS.batch,), 0, 10)
  idx = jnp.arange(FLAGS.batch)
  if seeds > 1:
    idx = jnp.broadcast_to(idx, (seeds, FLAGS.batch))
  step = train.make_train_step(net, tx, FLAGS.rule, train.make_mesh(seeds), seeds)
  for _ in range(2):  # Compile, then settle the donated state's layout.
    state, loss = step(state, x, y, idx)
    jax.block_until_ready(loss)
  hlo = step.lower(state, x, y, idx).compile().as_text()
  if FLAGS.dump:
    os.makedirs(FLAGS.dump, exist_ok=True)
    with open(os.path.join(FLAGS.dump, f"{FLAGS.only}-{FLAGS.rule}.hlo.txt"), "w") as f:
      f.write(hlo)
  with tempfile.TemporaryDirectory() as trace_dir:
    with jax.profiler.trace(trace_dir, create_perfetto_trace=True):
      begin = time.perf_counter()
      for _ in range(FLAGS.steps):
        state, loss = step(state, x, y, idx)
        jax.block_until_ready(loss)
      step_ms = (time.perf_counter() - begin) * 1e3 / FLAGS.steps
    (path,) = glob.glob(os.path.join(trace_dir, "**", "*.trace.json.gz"), recursive=True)
    with gzip.open(path) as f:
      events = json.load(f)["traceEvents"]
  info = describe(hlo)
  total = collections.Counter()
  for event in events:
    if event.get("ph") == "X" and event["name"] in info:
      total[event["name"]] += event.get("dur", 0)
  kind = "vec" if FLAGS.vectorized else "conv."
  print(
    f"{FLAGS.only} {kind} {FLAGS.rule}, batch {FLAGS.batch}, {seeds} seed(s): "
    f"{step_ms:.1f} ms per step under the profiler "
    f"({seeds * FLAGS.batch / step_ms * 1e3:.0f} ex/s), {len(total)} thunks timed; "
    "a while thunk's time includes its body's, listed too\n"
  )
  print("| thunk | ms/step | % of step | output | heavy ops inside |")
  print("|---|---:|---:|---|---|")
  for name, us in total.most_common(FLAGS.top):
    ms = us / 1e3 / FLAGS.steps
    shape, ops = info[name]
    print(f"| {name} | {ms:.1f} | {100 * ms / step_ms:.0f}% | {shape} | {ops} |")


if __name__ == "__main__":
  app.run(main)
