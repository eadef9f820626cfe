"""Shared by the end-to-end tests."""


def override(config, **overrides):
  """``config`` with dotted fields set, e.g. ``override(c, **{"model.widths": (8,)})``."""
  for key, value in overrides.items():
    target = config
    *path, leaf = key.split(".")
    for part in path:
      target = target[part]
    target[leaf] = value
  return config
