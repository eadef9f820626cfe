"""CIFAR-100 with its 100 fine labels (not in the paper: Table 2's recipe and
networks), downloaded on first use into ~/.cache/gevb_jax/cifar100 (or
data.cache_dir, or $GEVB_JAX_DATA) and checked against its published SHA-256.
Your own archive: --config.data.source=cifar100
--config.data.path=cifar-100-python.tar.gz. TFDS (pip install -e '.[tfds]'):
--config.data.source=tfds.

A vectorized network has K = 100 components per unit, ten times CIFAR-10's: the
FC net has 316 M parameters (CIFAR-10: 32 M) and the LC net 512 M (63 M), about 4
and 6 GB with Adam's moments, and the conv net's K-wide first layer holds ten
times the activations. Conventional networks (--config.model.vectorized=False)
grow only in their readout and DFA feedback matrices."""

from gevb_jax import defaults


def get_config():
  config = defaults.base_config()
  config.data.source = "download"
  config.data.name = "cifar100"
  return config
