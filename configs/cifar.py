"""CIFAR-10 (Table 2). The raw archive with --config.data.source=cifar10
--config.data.path=cifar-10-python.tar.gz, or TFDS (the default here)."""

from gevb_jax import defaults


def get_config():
  config = defaults.base_config()
  config.data.source = "tfds"
  config.data.name = "cifar10"
  config.metrics.cluster_quality = True   # Fig. 3, for conv and LC networks
  return config
