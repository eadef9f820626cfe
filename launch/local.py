"""The local backend: every job (``planning.Job``) a subprocess pinned to one GPU (or
the CPU), a queue per device running ``runs_per_device`` jobs at a time."""

import concurrent.futures
import ctypes
import os
import re
import shlex
import signal
import subprocess
import sys
import time

from absl import logging

CPU = "cpu"


def parse_gpus(text):
  """Parses --gpus ('0,1,3'; 'cpu' or '' for CPU only) into devices."""
  if text.strip() in ("", CPU):
    return [CPU]
  ids = [part.strip() for part in text.split(",")]
  if not all(re.fullmatch(r"[0-9]+", i) for i in ids) or len(set(ids)) < len(ids):
    raise ValueError(
      f"bad --gpus={text!r}: expected distinct GPU ids like 0,1,3, "
      "or 'cpu' (or empty) for CPU only"
    )
  return ids


def device_env(device, runs_per_device):
  """Environment variables that pin a run to `device` (a GPU id or 'cpu')."""
  if device == CPU:
    return {"CUDA_VISIBLE_DEVICES": "", "JAX_PLATFORMS": "cpu"}
  env = {"CUDA_VISIBLE_DEVICES": device}
  if runs_per_device > 1:
    # JAX preallocates 75% of a GPU's memory; let the runs sharing it fit.
    env["XLA_PYTHON_CLIENT_MEM_FRACTION"] = f"{0.9 / runs_per_device:.2f}"
  return env


def _die_with_the_sweep():
  """In the child, before exec: SIGKILL when the sweep's thread that started it dies
  (Linux's PR_SET_PDEATHSIG), so that a killed sweep leaves no run behind."""
  if sys.platform.startswith("linux"):
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # 1: PR_SET_PDEATHSIG


def run_one(job, device, runs_per_device, trainer_module):
  """Runs `job` (a ``planning.Job``) on `device` to its end; returns the exit code.

  The command and its output are appended to the job's log. The job dies with the
  sweep, however the sweep dies.
  """
  job.workdir.mkdir(parents=True, exist_ok=True)
  command = job.command(trainer_module)
  env = device_env(device, runs_per_device)
  pinning = " ".join(f"{k}={shlex.quote(v)}" for k, v in env.items())
  with job.log.open("a") as log:
    log.write(f"# {time.strftime('%Y-%m-%d %H:%M:%S')} {pinning} {shlex.join(command)}\n")
    log.flush()
    return subprocess.run(
      command,
      stdin=subprocess.DEVNULL,
      stdout=log,
      stderr=subprocess.STDOUT,
      env={**os.environ, **env},
      preexec_fn=_die_with_the_sweep,
      check=False,
    ).returncode


def run_local(
  assignments,
  runs_per_device,
  trainer_module,
):
  """Runs (job, device) pairs, `runs_per_device` at a time per device.

  Every device has its own queue, a thread pool of `runs_per_device` workers
  that each wait on one job's subprocess at a time.

  Returns:
    The exit code of every job.
  """
  pools = {
    device: concurrent.futures.ThreadPoolExecutor(
      runs_per_device, thread_name_prefix=f"sweep-{device}"
    )
    for device in dict.fromkeys(device for _, device in assignments)
  }
  codes = {}
  try:
    futures = {
      pools[device].submit(run_one, job, device, runs_per_device, trainer_module): job
      for job, device in assignments
    }
    for future in concurrent.futures.as_completed(futures):
      job = futures[future]
      codes[job] = future.result()
      logging.info(
        "[%d/%d] exit code %d: %s",
        len(codes),
        len(futures),
        codes[job],
        job.workdir,
      )
  finally:
    for pool in pools.values():  # After Ctrl-C, start nothing new.
      pool.shutdown(cancel_futures=True)
  return codes
