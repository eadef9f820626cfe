"""Fashion-MNIST from idx files; Debian's dataset-fashion-mnist by default."""

import os

from gevb_jax import defaults

DEBIAN_PATH = "/usr/share/datasets/fashion-mnist"


def get_config():
  config = defaults.base_config()
  config.data.name = "fashion_mnist"
  if os.path.isdir(DEBIAN_PATH):
    config.data.source = "idx"
    config.data.path = DEBIAN_PATH
  else:
    config.data.source = "tfds"
  return config
