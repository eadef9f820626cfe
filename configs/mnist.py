"""MNIST (Table 1), downloaded on first use into ~/.cache/gevb_jax/mnist (or
data.cache_dir, or $GEVB_JAX_DATA) and checked against its published SHA-256.
Your own idx files: --config.data.source=idx --config.data.path=DIR. TFDS
(pip install -e '.[tfds]'): --config.data.source=tfds."""

from gevb_jax import defaults


def get_config():
  config = defaults.base_config()
  config.data.source = "download"
  config.data.name = "mnist"
  return config
