"""A sweep's expected wall time on the devices it would use, from step rates measured
on the spot (``python -m launch.sweep ... --estimate``), before anything starts.

Each distinct network of the pending jobs (a config with its overrides, arch, kind,
rule, output code and the job's number of seeds; a nonnegative and a mixed-sign net
differ only in a clip and are timed once) is built as the trainer builds it, on the
first device of --gpus pinned as the local backend pins a job (``local.device_env``),
and timed there: its initial state and the trainer's compiled chunk of steps
(``train.make_train_chunk``, all the job's seeds in one program, or one of them
where the seeds take turns), then one-step calls of it, then its evaluation step on
one batch of the size the run would evaluate in.
A job then takes

  compile + epochs x steps per epoch x step + evaluations x batches per evaluation
  x evaluation batch

with every run taken to its config's ``num_epochs`` (early stops only shorten it).
The process's start-up, the alignment and t-SNE measurements and checkpoints are not
counted. Jobs go to the devices as the sweep deals them (round-robin over --gpus).
Runs that share a GPU are time-sliced by it (no MPS), so a device is taken to take the
sum of its jobs' times, whatever --runs_per_gpu: what sharing gains (one run's idle
spells filled by another's work) is left out; benchmarks/gpu_check.py measures it.
"""

import math
import os
import pathlib
import sys
import time
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from absl import flags
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P
from ml_collections import config_flags

from gevb_jax import data, evaluation, train
from gevb_jax.seeds import in_turn, make_mesh
from launch import local

# Each timing lasts at least this long (a few calls of a fast step), or one call.
MIN_TIMING_S = 0.2


class Timing(NamedTuple):
  """One network's measured seconds: a training step of all its seeds, an evaluation
  call on ``eval_batch`` examples of all its seeds, and its compilation (the init, the
  chunk and the evaluation step, their first calls less one call of each)."""

  step_s: float
  eval_s: float
  eval_batch: int
  compile_s: float


def pin(device, runs_per_device):
  """Pins this process to ``device`` (a GPU id or "cpu") as the local backend pins a
  job; before JAX starts its backend."""
  env = local.device_env(device, runs_per_device)
  os.environ.update(env)
  if "JAX_PLATFORMS" in env:  # JAX read the variable when it was imported.
    jax.config.update("jax_platforms", env["JAX_PLATFORMS"])


def job_config(job):
  """The config ``job``'s command trains, parsed as the trainer parses it."""
  argv = ["estimate", *(a for a in job.command()[3:] if a.startswith("--config"))]
  values = flags.FlagValues()
  config_flags.DEFINE_config_file(
    "config", None, flag_values=values, lock_config=True, sys_argv=argv
  )
  values(argv)
  return values.config


def network_key(job):
  """What sets a job's step cost: all of it but the sign constraint and the seed."""
  e = job.experiment
  return (
    job.config,
    job.overrides,
    e.arch,
    e.vectorized,
    e.rule,
    e.output_code,
    len(job.seeds),
  )


def network_label(job):
  """A network's row name, e.g. ``mnist conv-vectorized-gevb, 5 seeds``."""
  e = job.experiment
  code = "" if e.output_code == "onehot" else f"-{e.output_code}"
  label = f"{pathlib.PurePath(job.config).stem} {e.arch}-{e.kind}-{e.rule}{code}"
  if job.overrides:
    label += " (" + ", ".join(f"{k}={v}" for k, v in job.overrides) + ")"
  return label + f", {len(job.seeds)} seed{'s' * (len(job.seeds) > 1)}"


def _best_of_calls(call):
  """Seconds of the fastest of ``call``'s calls over ``MIN_TIMING_S`` (at least one)."""
  best, begin = math.inf, time.perf_counter()
  while best == math.inf or time.perf_counter() - begin < MIN_TIMING_S:
    start = time.perf_counter()
    call()
    best = min(best, time.perf_counter() - start)
  return best


def measure(config, shape, time_program=None):
  """The ``Timing`` of ``config``'s network and seeds on this process's devices, on
  random images of ``shape`` (``data.split_shape``), by ``time_program`` (default
  ``measure_program``). Where the seeds take turns (``seeds.in_turn``: several seeds
  on one CPU device), one seed is timed and its step and evaluation counted
  ``num_seeds`` times: the seeds' program runs one seed's after another, and timing
  it whole made a 5-seed grid's estimate take 5 times as long."""
  time_program = time_program or measure_program
  seeds = config.num_seeds
  if not in_turn(seeds, make_mesh(seeds)):
    return time_program(config, shape)
  one = config.copy_and_resolve_references()
  one.num_seeds = 1
  timing = time_program(one, shape)
  return timing._replace(step_s=seeds * timing.step_s, eval_s=seeds * timing.eval_s)


def measure_program(config, shape):
  """The ``Timing`` of ``config``'s network and seeds as one program."""
  _, _, image_shape, num_classes = shape
  seeds, batch = config.num_seeds, config.batch_size
  mesh = make_mesh(seeds)
  net = train.network(config, image_shape, num_classes)
  tx = train.optimizer(net, config)
  per_seed = NamedSharding(mesh, P("seeds"))
  x = np.random.default_rng(0).uniform(-1, 1, (batch, *image_shape)).astype(np.float32)
  x, y = jax.device_put((x, np.zeros(batch, np.int32)), NamedSharding(mesh, P()))
  idx = jnp.broadcast_to(jnp.arange(batch), (1, seeds, batch))  # One step.
  active = jnp.ones(seeds, bool)
  chunk = train.make_train_chunk(net, tx, config.rule, mesh, seeds)
  start = time.perf_counter()
  first = train.initial_states(net, tx, mesh, jnp.arange(seeds, dtype=jnp.uint32))
  carry = [jax.device_put((first, jnp.zeros(seeds)), per_seed)]  # The trainer's too.

  def step():
    carry[0] = jax.block_until_ready(chunk(*carry[0], active, x, y, idx))

  step()  # Compiles.
  compiled = time.perf_counter() - start
  step_s = _best_of_calls(step)
  eval_batch, _ = evaluation.memory_bounded_batches(net, config, mesh.shape["data"])
  eval_step = evaluation.make_eval_step(net, mesh, seeds)
  state = carry[0][0]
  variables = {"params": state["params"], "fixed": state["fixed"]}
  xb = np.broadcast_to(np.asarray(x[:1]), (eval_batch, *image_shape))
  args = jax.device_put(
    (xb, np.zeros(eval_batch, np.int32), np.ones(eval_batch, np.float32)),
    NamedSharding(mesh, P("data")),
  )
  start = time.perf_counter()
  jax.block_until_ready(eval_step(variables, *args))  # Compiles.
  compiled += time.perf_counter() - start
  eval_s = _best_of_calls(lambda: jax.block_until_ready(eval_step(variables, *args)))
  return Timing(step_s, eval_s, eval_batch, max(0.0, compiled - step_s - eval_s))


def job_seconds(config, shape, timing):
  """A job's seconds with ``timing`` (see the module's docstring)."""
  num_train, num_test = shape[:2]
  steps = config.num_epochs * (num_train // config.batch_size)
  evaluations = sum(train._evaluates(e, config) for e in range(config.num_epochs + 1))
  calls = math.ceil(num_train / timing.eval_batch) + math.ceil(
    num_test / timing.eval_batch
  )
  return timing.compile_s + steps * timing.step_s + evaluations * calls * timing.eval_s


class Estimate(NamedTuple):
  """``networks``: ``{label: (Timing, [(job, device, seconds)])}``; ``devices``:
  each device's seconds, in --gpus order; ``wall_s``: the slowest device's."""

  networks: dict
  devices: dict
  wall_s: float


def estimate(assignments, timer=measure, log=sys.stderr):
  """The ``Estimate`` of ``(job, device)`` assignments, each distinct network timed
  once by ``timer(config, shape)``."""
  timings, networks = {}, {}
  devices = dict.fromkeys((d for _, d in assignments), 0.0)
  for job, device in assignments:
    config = job_config(job)
    shape = data.split_shape(config.data)
    key = network_key(job)
    if key not in timings:
      print(f"timing {network_label(job)} ...", file=log, flush=True)
      timings[key] = timer(config, shape)
    seconds = job_seconds(config, shape, timings[key])
    networks.setdefault(network_label(job), (timings[key], []))[1].append(
      (job, device, seconds)
    )
    devices[device] += seconds
  return Estimate(networks, devices, max(devices.values(), default=0.0))


def duration(seconds):
  """``42 s``, ``12.5 min``, ``7.3 h`` or ``4.2 days (101.0 h)``."""
  if seconds < 120:
    return f"{seconds:.0f} s"
  if seconds < 7200:
    return f"{seconds / 60:.1f} min"
  if seconds < 48 * 3600:
    return f"{seconds / 3600:.1f} h"
  return f"{seconds / 86400:.1f} days ({seconds / 3600:.1f} h)"


def report(est, runs_per_gpu):
  """The estimate as a markdown table of its networks and a closing line."""
  lines = [
    "| network | jobs | s/step | s/evaluation batch (examples) | compile s | each job |",
    "|---|---:|---:|---:|---:|---:|",
  ]
  for label, (t, jobs) in est.networks.items():
    lines.append(
      f"| {label} | {len(jobs)} | {t.step_s:.4f} | {t.eval_s:.4f} ({t.eval_batch}) | "
      f"{t.compile_s:.1f} | {duration(jobs[0][2])} |"
    )
  jobs = [job for _, runs in est.networks.values() for job, _, _ in runs]
  per_device = ", ".join(f"{d}: {duration(s)}" for d, s in est.devices.items())
  lines.append(
    f"\nExpected wall time of {len(jobs)} jobs ({sum(len(j.seeds) for j in jobs)} "
    f"runs): {duration(est.wall_s)} ({per_device}), every run to its num_epochs, "
    f"{runs_per_gpu} at a time per device sharing its throughput; start-up, alignment, "
    "t-SNE and checkpoints not counted."
  )
  return "\n".join(lines)
