"""MNIST (Table 1). Raw idx files with --config.data.source=idx --config.data.path=DIR,
or TFDS (the default here)."""

from gevb_jax import defaults


def get_config():
  config = defaults.base_config()
  config.data.source = "tfds"
  config.data.name = "mnist"
  return config
