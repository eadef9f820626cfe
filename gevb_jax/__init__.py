"""gevb-jax: vectorized nonnegative networks and global error-vector broadcasting.

Clark, Abbott & Chung, "Credit Assignment Through Broadcasting a Global Error Vector",
NeurIPS 2021.
"""

import jax
import optax

from gevb_jax.models import ARCHS, Network, make_network
from gevb_jax.optim import make_optimizer
from gevb_jax.rules import CONVENTIONAL_RULES, VECTORIZED_RULES, logits_with_rule


def cross_entropy(logits, labels):
  """Mean softmax cross-entropy; its gradient in the logits is the error vector e."""
  return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()


def loss_and_updates(net, variables, x, labels, rule):
  """The mean cross-entropy and ``rule``'s updates, shaped like ``variables["params"]``.

  For "bp" the updates are the gradient. All updates use the gradient's sign
  convention (an optimizer steps along their negative).
  """
  def loss_fn(params):
    logits = logits_with_rule(net, {**variables, "params": params}, x, rule)
    return cross_entropy(logits, labels)
  return jax.value_and_grad(loss_fn)(variables["params"])


__all__ = [
    "ARCHS", "CONVENTIONAL_RULES", "VECTORIZED_RULES", "Network", "cross_entropy",
    "logits_with_rule", "loss_and_updates", "make_network", "make_optimizer",
]
