"""Checks a run's config, its data, its memory and its workdir before anything is
written: a bad value leaves the workdir as it was.

Every failure is a ``ConfigError`` with one line naming the field, the value and what
is allowed.
"""

import math
import os
import tempfile

import jax

from gevb_jax import arch_spec
from gevb_jax import workdir as run_folder
from gevb_jax.grid import OUTPUT_CODES
from gevb_jax.init import FLATTEN_PAIRINGS

# Free disk a run needs to start: config, metrics, a few checkpoints of a small net.
MIN_FREE_DISK_BYTES = 64 * 2**20
# Parameters, Adam's two moments and the update: float32 copies of every weight.
STATE_COPIES = 4
# The share of the memory where the arrays live (``memory_limit``) a run may plan to hold.
MEMORY_SHARE = 0.8
# config.memory_budget_mb unset: the activations of one evaluation or alignment batch
# may hold this much on a host's CPU, whose memory everything else on it shares...
HOST_BUDGET_MB = 512
# ... and this share of a device that reports its memory (a GPU), leaving the rest to
# what the budget does not count (the train step's activations, XLA's buffers). A
# choice, not yet measured on a GPU.
DEVICE_BUDGET_SHARE = 1 / 8


class ConfigError(ValueError):
  """A config value, the data or the workdir cannot make a run."""


def _fail(field, value, allowed):
  raise ConfigError(f"config.{field}={value!r}: {allowed}")


def _integer(config, field, low, high=None):
  value = config
  for part in field.split("."):
    value = value[part]
  bad = not isinstance(value, int) or isinstance(value, bool) or value < low
  if bad or (high is not None and value > high):
    limit = f"an integer >= {low}" if high is None else f"an integer in [{low}, {high}]"
    _fail(field, value, f"must be {limit}")


def _is_number(value):
  return isinstance(value, (int, float)) and not isinstance(value, bool)


def check_config(config):
  """Ranges of the fields that need no data, and the architecture's spec
  (``make_network`` checks its shapes and widths against the data, before anything is
  written; ``rules.check_rule`` checks the rule)."""
  for field in (
    "batch_size",
    "eval_batch_size",
    "eval_every",
    "num_seeds",
  ):
    _integer(config, field, 1)
  _integer(config, "num_epochs", 0)
  if config.steps_per_call is not None:
    _integer(config, "steps_per_call", 0)
  if config.memory_budget_mb is not None:
    _integer(config, "memory_budget_mb", 1)
  _integer(config, "seed", 0, 2**32 - config.num_seeds)
  _integer(config, "metrics.alignment_examples", 1)
  _integer(config, "metrics.tsne_examples", 0)
  _integer(config, "metrics.tsne_iters", 1)
  every, decay = config.checkpoint_every_s, config.kp_weight_decay
  seconds = config.seconds_per_call
  if not _is_number(seconds) or not (math.isfinite(seconds) and seconds > 0):
    _fail("seconds_per_call", seconds, "must be a finite number of seconds > 0")
  if not _is_number(every) or not every >= 0:
    _fail("checkpoint_every_s", every, "must be a number of seconds >= 0")
  if not _is_number(decay) or not (math.isfinite(decay) and decay >= 0):
    _fail("kp_weight_decay", decay, "must be a finite number >= 0")
  lr = config.learning_rate
  if not _is_number(lr) or not math.isfinite(lr):
    _fail("learning_rate", lr, "must be a finite number > 0")
  if lr <= 0:
    _fail("learning_rate", lr, "must be > 0 (Adam steps against the update)")
  try:
    arch_spec.check(config.model.arch)
  except arch_spec.SpecError as err:
    _fail("model.arch", config.model.arch, err.reason)
  widths = config.model.widths
  if widths is not None and (
    not isinstance(widths, tuple)
    or not all(isinstance(w, int) and not isinstance(w, bool) and w > 0 for w in widths)
  ):
    _fail("model.widths", widths, "must be a tuple of positive integers, e.g. (512,256)")
  if config.model.output_code not in OUTPUT_CODES:
    _fail(
      "model.output_code",
      config.model.output_code,
      f"choose {' or '.join(OUTPUT_CODES)}",
    )
  if config.model.flatten_pairing not in FLATTEN_PAIRINGS:
    _fail(
      "model.flatten_pairing",
      config.model.flatten_pairing,
      f"choose {' or '.join(FLATTEN_PAIRINGS)}",
    )


def check_data(config, ds):
  """The data against itself and the config."""
  if len(ds.train_x) == 0 or len(ds.test_x) == 0:
    _fail(
      "data",
      ds.name,
      f"has {len(ds.train_x)} train and {len(ds.test_x)} test "
      "images; both splits need at least one",
    )
  if ds.train_x.shape[1:] != ds.test_x.shape[1:] or 0 in ds.train_x.shape[1:]:
    _fail(
      "data",
      ds.name,
      f"train images {ds.train_x.shape[1:]} and test images "
      f"{ds.test_x.shape[1:]} must have one nonempty (H, W, C) shape",
    )
  n = len(ds.train_x)
  _integer(config, "batch_size", 1, n)


def device_memory():
  """The smallest ``bytes_limit`` of the local devices' ``memory_stats()`` (a GPU's:
  what its allocator may take, XLA_PYTHON_CLIENT_MEM_FRACTION of the card) and that
  device, or ``(None, None)`` where a device reports none (a CPU)."""
  limits = [((d.memory_stats() or {}).get("bytes_limit"), d) for d in jax.local_devices()]
  if any(limit is None for limit, _ in limits):
    return None, None
  return min(limits, key=lambda pair: pair[0])


def memory_limit():
  """``(bytes, where)``: the memory a run's arrays live in, the device's
  (``device_memory``), else this machine's RAM."""
  limit, device = device_memory()
  if limit is not None:
    return limit, f"device {device}"
  return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"), "this machine"


def activation_budget(config):
  """Bytes the activations of one evaluation or alignment batch may hold:
  ``config.memory_budget_mb`` where set; else ``DEVICE_BUDGET_SHARE`` of a device
  that reports its memory, or ``HOST_BUDGET_MB`` on a host."""
  if config.memory_budget_mb is not None:
    return config.memory_budget_mb * 2**20
  limit, _ = device_memory()
  return HOST_BUDGET_MB * 2**20 if limit is None else int(DEVICE_BUDGET_SHARE * limit)


def check_memory(net, config, ds):
  """A run's parameters, optimizer state, data and evaluation budget against this
  device's memory, or this machine's on a CPU (an estimate: what the run plans to
  hold at once). The refusal names ``num_seeds`` when one seed would fit,
  ``memory_budget_mb`` when the data and the budget alone would not, else
  ``model.widths``."""
  shapes = jax.eval_shape(net.init, jax.random.key(0))
  weights = sum(math.prod(leaf.shape) for leaf in jax.tree_util.tree_leaves(shapes))
  per_seed = STATE_COPIES * 4 * weights
  budget = activation_budget(config)
  shared = ds.train_x.nbytes + ds.test_x.nbytes + budget
  need = per_seed * config.num_seeds + shared
  have, where = memory_limit()
  if need <= MEMORY_SHARE * have:
    return
  seeds = f", for {config.num_seeds} seeds at once" if config.num_seeds > 1 else ""
  holding = (
    f"the run would hold about {need / 2**30:.1f} GiB ({weights:,} weights with their "
    f"optimizer state{seeds}); {where} has {have / 2**30:.1f} GiB"
  )
  fit = int((MEMORY_SHARE * have - shared) // per_seed)
  if config.num_seeds > 1 and fit >= 1:
    _fail("num_seeds", config.num_seeds, f"{holding}: at most {fit} seeds fit")
  if budget > MEMORY_SHARE * have - ds.train_x.nbytes - ds.test_x.nbytes:
    _fail("memory_budget_mb", config.memory_budget_mb, holding)
  _fail("model.widths", config.model.widths, holding)


def _check_nesting(workdir, num_seeds):
  """That the run folders a run writes (``workdir``, or ``workdir/seed_<s>`` for
  several seeds) neither sit in nor hold another run folder: the report takes a folder
  with config.json for a run and looks no deeper, so the inner runs would vanish."""
  path = os.path.abspath(workdir)
  above = path if num_seeds > 1 else os.path.dirname(path)
  if os.path.isfile(os.path.join(above, run_folder.CONFIG)):
    what = "the seed_<s> folders of this run" if num_seeds > 1 else "this run"
    raise ConfigError(
      f"workdir {workdir}: {above} holds a run ({run_folder.CONFIG}), and the report "
      f"would not find {what} inside it; use a workdir outside that run"
    )
  if num_seeds == 1 and os.path.isdir(path):
    inner = sorted(
      name
      for name in os.listdir(path)
      if run_folder.is_seed_dir(name)
      and os.path.isfile(os.path.join(path, name, run_folder.CONFIG))
    )
    if inner:
      raise ConfigError(
        f"workdir {workdir}: holds the seed folders of a run of several seeds "
        f"({', '.join(inner)}), which a run of one seed there would hide from the "
        "report; resume them with their --config.seed and --config.num_seeds, or use "
        "another workdir"
      )


def check_workdir(workdir, num_seeds=1):
  """That ``workdir`` is, or can become, a writable directory with room for a run of
  ``num_seeds`` seeds, whose run folders do not nest in another run's."""
  path = os.path.abspath(workdir)
  if os.path.exists(path) and not os.path.isdir(path):
    raise ConfigError(f"workdir {workdir}: exists and is not a directory")
  existing = path
  while not os.path.exists(existing):
    existing = os.path.dirname(existing)
  if not os.path.isdir(existing):
    raise ConfigError(f"workdir {workdir}: {existing} is not a directory")
  try:
    with tempfile.TemporaryFile(dir=existing):
      pass
    disk = os.statvfs(existing)
    free = disk.f_bavail * disk.f_frsize
  except OSError as err:
    raise ConfigError(
      f"workdir {workdir}: cannot write in {existing} ({err.strerror or err})"
    ) from None
  if free < MIN_FREE_DISK_BYTES:
    raise ConfigError(
      f"workdir {workdir}: {free / 2**20:.0f} MiB free on its disk; "
      f"a run needs at least {MIN_FREE_DISK_BYTES // 2**20} MiB"
    )
  _check_nesting(workdir, num_seeds)
