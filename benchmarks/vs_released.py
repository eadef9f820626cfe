"""Our GEVB train step against the authors' released PyTorch one, side by side.

  python benchmarks/vs_released.py --released=DIR [--iters=5] [--rounds=5]
      [--only=mnist-fc] [--batch=128] [--json]

DIR is a checkout of the authors' code (github.com/davidclark1/VectorizedNets,
0a5856d); PyTorch is not a dependency of gevb-jax and must be installed by hand
(``pip install torch --index-url https://download.pytorch.org/whl/cpu``). The
released modules are imported from DIR at run time; none of their code is copied here.

For each vectorized nonnegative net with GEVB (MNIST and CIFAR-10; FC, conv, LC), both
sides start from their own initial state and get the same random batches: one numpy
array per batch, in [-1, 1] as the released loaders' ``Normalize(0.5, 0.5)`` leaves
pixels, handed to PyTorch as (B, C, H, W) and to JAX as (B, H, W, C).

- Released: ``vec_models.make_<dataset>_vec_<arch>(mono=True)`` (the "df_mono"
  experiments of train_models.py:168-272), moved to the CPU and given
  ``optim.Adam(model.parameters(), lr=3e-4)`` as ``train_model`` does
  (train_models.py:118-119). One step is one call of the released
  ``train_models.train_epoch`` over a one-batch loader (train_models.py:137-166):
  ``format_input``'s K-fold input expansion, the forward under ``no_grad``,
  ``vnn.set_model_grads(..., learning_rule="df")`` (GEVB, vnn.py:303-337), the loss,
  ``opt.step()``, ``vnn.post_step_callback`` (the clamp of the nonnegative weights)
  and the epoch's loss and accuracy bookkeeping (its one printed line is swallowed).
  train_models.py imports torchvision for its data loaders only; where torchvision is
  missing an empty stand-in module is registered so that the import succeeds.
- Ours: ``train.make_train_step(net, make_optimizer(net), "gevb", mesh)``, the jitted
  step of training (donated state), waited on after every call.

The two take turns: each of ``--rounds`` rounds draws ``--settle + --iters`` batches and
runs them through one side, then the other (the side that goes first alternates), so
that slow and fast spells of the machine hit both alike. One warm-up step each (our
compile) precedes the rounds, and the first ``--settle`` steps of each turn are not
timed: on a 2-core CPU the first JAX step after PyTorch's ran 2-10x slower than the
next ones. Prints the median and fastest ms/step of each side, the ratio of
the medians (released / ours) and, as a check that both build the same net, the
trainable parameter count of each (weights and biases; gating vectors excluded).
"""

import contextlib
import datetime
import importlib
import io
import json
import os
import platform
import statistics
import subprocess
import sys
import time
import types

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags
from common import DATASETS, NO_NET_MATCHES, matches_a_net

import gevb_jax
from gevb_jax import train

FLAGS = flags.FLAGS
flags.DEFINE_string(
  "released", None, "A checkout of the authors' code (davidclark1/VectorizedNets)."
)
flags.mark_flag_as_required("released")
flags.DEFINE_integer("iters", 5, "Steps of each side per round.", lower_bound=1)
flags.DEFINE_integer("rounds", 5, "Rounds; the sides take turns in each.", lower_bound=1)
flags.DEFINE_integer(
  "settle",
  1,
  "Untimed steps that open each side's turn (the first step after the other side's "
  "runs slower: memory the other library freed, threads it left spinning).",
  lower_bound=0,
)
flags.DEFINE_integer("batch", 128, "Batch size.", lower_bound=1)
flags.DEFINE_integer("seed", 0, "Seed of both initial states and of the batches.")
flags.DEFINE_string("only", "", "substring filter on 'dataset-arch'")
flags.register_validator("only", matches_a_net, message=NO_NET_MATCHES)
flags.DEFINE_bool("json", False, "print JSON lines instead")

NUM_CLASSES = 10
LEARNING_RATE = 3e-4  # train_models.py:386-389, the paper's Appendix I.
# Every released module that importing vec_models and train_models pulls in.
RELEASED_FILES = (
  "vec_models.py",
  "vnn.py",
  "local2d.py",
  "init_methods.py",
  "train_models.py",
  "dfa_util.py",
  "nonvec_models.py",
)
INSTALL_TORCH = (
  "vs_released.py needs PyTorch, which gevb-jax does not install: "
  "pip install torch --index-url https://download.pytorch.org/whl/cpu"
)


def import_torch():
  try:
    import torch
  except ImportError:
    sys.exit(INSTALL_TORCH)
  return torch


def import_released(directory):
  """The released ``vec_models`` and ``train_models`` modules, imported from
  ``directory``; exits with one line when it lacks any file they need."""
  checkout = "give a checkout of github.com/davidclark1/VectorizedNets"
  if not os.path.isdir(directory):
    sys.exit(f"--released={directory} is not a directory: {checkout}")
  missing = [f for f in RELEASED_FILES if not os.path.isfile(os.path.join(directory, f))]
  if missing:
    sys.exit(f"--released={directory} lacks {', '.join(missing)}: {checkout}")
  sys.path.insert(0, os.path.abspath(directory))
  try:  # Only the released data loaders use it, and this script calls neither.
    import torchvision  # noqa: F401
  except ImportError:
    sys.modules["torchvision"] = types.ModuleType("torchvision")
  return importlib.import_module("vec_models"), importlib.import_module("train_models")


def released_commit(directory):
  """The commit of the git work tree whose top is ``directory``, or ""."""
  try:
    out = subprocess.run(
      ["git", "-C", directory, "rev-parse", "--show-toplevel", "HEAD"],
      capture_output=True,
      text=True,
      check=False,
    )
  except OSError:
    return ""
  lines = out.stdout.split()
  if out.returncode or len(lines) != 2:
    return ""
  top, commit = lines  # Not the commit of a repository that merely encloses it.
  return commit[:7] if os.path.realpath(top) == os.path.realpath(directory) else ""


def cpu_model():
  try:
    with open("/proc/cpuinfo") as f:
      for line in f:
        if line.startswith("model name"):
          return line.split(":", 1)[1].strip()
  except OSError:
    pass
  return platform.processor() or "unknown"


class Released:
  """The released GEVB training step of one net, as its training loop runs it."""

  def __init__(self, torch, vec_models, train_models, dataset, arch, seed):
    torch.manual_seed(seed)
    make = getattr(vec_models, f"make_{dataset}_vec_{arch}")
    self.model = make(mono=True).to("cpu")  # mono: nonnegative, ON/OFF initialised.
    self.opt = torch.optim.Adam(self.model.parameters(), lr=LEARNING_RATE)
    self.train_epoch = train_models.train_epoch
    self.flatten = arch == "fc"  # As train_models.py:168-272 passes it.
    self.torch = torch

  def layer_sizes(self):
    """(weight, bias) element counts of the weighted layers, in order."""
    return [
      (m.weight.numel(), m.bias.numel()) for m in self.model if hasattr(m, "weight")
    ]

  def batch(self, x, y):
    return self.torch.from_numpy(x), self.torch.from_numpy(y.astype(np.int64))

  def step(self, batch):
    with contextlib.redirect_stdout(io.StringIO()):  # Its per-epoch print.
      self.train_epoch(
        self.model, self.opt, [batch], self.flatten, True, "df", "cpu"
      )  # (model, opt, loader, flatten, vectorized, learning_rule, device)


class Ours:
  """``train.make_train_step`` with GEVB on the same net."""

  def __init__(self, dataset, arch, seed, batch):
    self.net = gevb_jax.make_network(
      arch,
      input_shape=DATASETS[dataset],
      num_classes=NUM_CLASSES,
      vectorized=True,
      nonneg=True,
    )
    variables = self.net.init(jax.random.key(seed))
    tx = gevb_jax.make_optimizer(self.net, learning_rate=LEARNING_RATE)
    self.state = {
      "params": variables["params"],
      "fixed": variables["fixed"],
      "opt_state": tx.init(variables["params"]),
    }
    self.train_step = train.make_train_step(self.net, tx, "gevb", train.make_mesh())
    self.idx = jnp.arange(batch)

  def layer_sizes(self):
    params = self.state["params"]
    return [
      (params[info.name]["w"].size, params[info.name]["b"].size)
      for info in self.net.weighted
    ]

  def batch(self, x, y):
    x = np.ascontiguousarray(x.transpose(0, 2, 3, 1))  # (B, C, H, W) -> (B, H, W, C)
    return jax.device_put(x), jax.device_put(y.astype(np.int32))

  def step(self, batch):
    x, y = batch
    self.state, loss = self.train_step(self.state, x, y, self.idx)
    jax.block_until_ready((self.state, loss))


def draw_batches(rng, count, batch, shape):
  """``count`` random (images (B, C, H, W) in [-1, 1], labels) numpy batches."""
  h, w, c = shape
  return [
    (
      rng.uniform(-1.0, 1.0, (batch, c, h, w)).astype(np.float32),
      rng.integers(0, NUM_CLASSES, batch),
    )
    for _ in range(count)
  ]


def compare(torch, released_modules, dataset, arch):
  """Times both steps of one net, alternating; returns a result row."""
  sides = {
    "released": Released(torch, *released_modules, dataset, arch, FLAGS.seed),
    "ours": Ours(dataset, arch, FLAGS.seed, FLAGS.batch),
  }
  sizes = {name: side.layer_sizes() for name, side in sides.items()}
  if sizes["released"] != sizes["ours"]:
    print(
      f"{dataset}-{arch}: (weight, bias) sizes differ, released {sizes['released']}, "
      f"ours {sizes['ours']}",
      file=sys.stderr,
    )
  rng = np.random.default_rng(FLAGS.seed)
  shape = DATASETS[dataset]
  (warm_up,) = draw_batches(rng, 1, FLAGS.batch, shape)
  for side in sides.values():
    side.step(side.batch(*warm_up))
  times = {name: [] for name in sides}
  for r in range(FLAGS.rounds):
    batches = draw_batches(rng, FLAGS.settle + FLAGS.iters, FLAGS.batch, shape)
    order = list(sides) if r % 2 == 0 else list(sides)[::-1]
    for name in order:
      side = sides[name]
      converted = [side.batch(x, y) for x, y in batches]  # Outside the timing.
      for batch in converted[: FLAGS.settle]:
        side.step(batch)
      for batch in converted[FLAGS.settle :]:
        start = time.perf_counter()
        side.step(batch)
        times[name].append(time.perf_counter() - start)
  median = {name: 1e3 * statistics.median(t) for name, t in times.items()}
  return {
    "net": f"{dataset}-{arch}",
    "released_params": sum(map(sum, sizes["released"])),
    "ours_params": sum(map(sum, sizes["ours"])),
    "same_layer_sizes": sizes["released"] == sizes["ours"],
    "released_ms": median["released"],
    "released_min_ms": 1e3 * min(times["released"]),
    "ours_ms": median["ours"],
    "ours_min_ms": 1e3 * min(times["ours"]),
    "ratio": median["released"] / median["ours"],
    "steps_each": len(times["ours"]),
  }


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  torch = import_torch()
  released_modules = import_released(FLAGS.released)
  commit = released_commit(FLAGS.released)
  env = {
    "date": datetime.date.today().isoformat(),
    "cpu": cpu_model(),
    "logical_cpus": os.cpu_count(),
    "torch": torch.__version__,
    "torch_num_threads": torch.get_num_threads(),
    "jax": jax.__version__,
    "jax_backend": jax.default_backend(),
    "released": os.path.abspath(FLAGS.released),
    "released_commit": commit,
    "batch": FLAGS.batch,
    "rounds": FLAGS.rounds,
    "iters": FLAGS.iters,
    "settle": FLAGS.settle,
  }
  if not FLAGS.json:
    print(
      f"{env['date']}; CPU: {env['cpu']} ({env['logical_cpus']} logical CPUs); "
      f"torch {env['torch']}, torch.get_num_threads() = {env['torch_num_threads']}; "
      f"jax {env['jax']} ({env['jax_backend']})"
    )
    print(
      f"released code: {env['released']}"
      + (f" at {commit}" if commit else " (not a git checkout)")
    )
    print(
      f"vectorized nonnegative nets, GEVB, Adam {LEARNING_RATE:g}, batch {FLAGS.batch}; "
      f"{FLAGS.rounds} rounds of {FLAGS.iters} timed steps each way, alternating, "
      f"each turn opened by {FLAGS.settle} untimed; median (fastest) ms/step\n"
    )
    print(
      "| net | released params | our params | released ms/step | our ms/step "
      "| released / ours |"
    )
    print("|---|---:|---:|---:|---:|---:|", flush=True)
  for dataset in DATASETS:
    for arch in gevb_jax.ARCHS:
      if FLAGS.only not in f"{dataset}-{arch}":
        continue
      r = compare(torch, released_modules, dataset, arch)
      if FLAGS.json:
        print(json.dumps({**env, **r}), flush=True)
        continue
      ours_params = f"{r['ours_params']:,}"
      if not r["same_layer_sizes"]:
        ours_params += " (layers differ)"
      print(
        f"| {r['net']} | {r['released_params']:,} | {ours_params} | "
        f"{r['released_ms']:.0f} ({r['released_min_ms']:.0f}) | "
        f"{r['ours_ms']:.0f} ({r['ours_min_ms']:.0f}) | {r['ratio']:.1f}x |",
        flush=True,
      )


if __name__ == "__main__":
  app.run(main)
