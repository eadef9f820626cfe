"""Shared by the end-to-end tests."""

import sys


def override(config, **overrides):
  """``config`` with dotted fields set, e.g. ``override(c, **{"model.widths": (8,)})``."""
  for key, value in overrides.items():
    target = config
    *path, leaf = key.split(".")
    for part in path:
      target = target[part]
    target[leaf] = value
  return config


def trainer_command(workdir, *flags):
  """The training CLI on the digits default config, off a progress bar."""
  return [
    sys.executable,
    "-m",
    "gevb_jax.main",
    "--config=configs/default.py",
    f"--workdir={workdir}",
    "--config.progress=False",
    *flags,
  ]
