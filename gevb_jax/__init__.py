"""gevb-jax: vectorized nonnegative networks and global error-vector broadcasting.

Clark, Abbott & Chung, "Credit Assignment Through Broadcasting a Global Error Vector",
NeurIPS 2021.
"""

from gevb_jax.grid import ARCHS
from gevb_jax.models import Network, make_network
from gevb_jax.optim import make_optimizer
from gevb_jax.rules import (
  CONVENTIONAL_RULES,
  VECTORIZED_RULES,
  cross_entropy,
  logits_with_rule,
  loss_and_updates,
)

__all__ = [
  "ARCHS",
  "CONVENTIONAL_RULES",
  "VECTORIZED_RULES",
  "Network",
  "cross_entropy",
  "logits_with_rule",
  "loss_and_updates",
  "make_network",
  "make_optimizer",
]
