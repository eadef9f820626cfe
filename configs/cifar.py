"""CIFAR-10 (Table 2), downloaded on first use into ~/.cache/gevb_jax/cifar10
(or data.cache_dir, or $GEVB_JAX_DATA) and checked against its published
SHA-256. Your own archive: --config.data.source=cifar10
--config.data.path=cifar-10-python.tar.gz. TFDS (pip install -e '.[tfds]'):
--config.data.source=tfds."""

from gevb_jax import defaults


def get_config():
  config = defaults.base_config()
  config.data.source = "download"
  config.data.name = "cifar10"
  config.metrics.cluster_quality = True  # Fig. 3, for conv and LC networks
  return config
