"""How a network's outputs code the class: one-hot, as in the paper (K = C outputs), or
binary, Section 7's way past the forward cost that grows with K (K = ceil(log2 C)).

One-hot: the loss is the softmax cross-entropy, the error vector ``e = softmax(z) -
onehot(y)`` (Eq. 2) and the prediction ``argmax z``. Binary: output ``k`` is bit ``k`` of
the class's number (``code_bits``); the loss is the sum of K sigmoid cross-entropies
against the bits, so ``e = sigmoid(z) - bits(y)``; the prediction is the class whose
code is most likely under independent bits, ``argmax_c sum_k log p(z_k -> bit_ck)``.
GEVB broadcasts whichever ``e`` the code gives. ``grid.OUTPUT_CODES`` names the codes.
"""

import math

import jax
import jax.numpy as jnp
import optax


def num_outputs(code, num_classes):
  """K: C for one-hot, ceil(log2 C) for binary (4 for 10 classes, 7 for 100)."""
  return num_classes if code == "onehot" else max(1, math.ceil(math.log2(num_classes)))


def code_bits(num_classes):
  """``(C, K)`` float32: row ``c`` holds the bits of ``c``, least significant first."""
  k = num_outputs("binary", num_classes)
  return ((jnp.arange(num_classes)[:, None] >> jnp.arange(k)) & 1).astype(jnp.float32)


def per_example_loss(logits, labels, code, num_classes):
  """``(B,)`` losses of ``logits`` ``(B, K)`` against integer ``labels``."""
  if code == "onehot":
    return optax.softmax_cross_entropy_with_integer_labels(logits, labels)
  bits = code_bits(num_classes)[labels]
  return optax.sigmoid_binary_cross_entropy(logits, bits).sum(-1)


def error_vector(logits, labels, code, num_classes):
  """``e = dL/dlogits`` of one example's loss, ``(B, K)``."""
  if code == "onehot":
    return jax.nn.softmax(logits) - jax.nn.one_hot(labels, num_classes)
  return jax.nn.sigmoid(logits) - code_bits(num_classes)[labels]


def predict(logits, code, num_classes):
  """The predicted class of each row of ``logits`` ``(B, K)``."""
  if code == "onehot":
    return jnp.argmax(logits, -1)
  bits = code_bits(num_classes)  # (C, K)
  # log p(bit = 1) = log_sigmoid(z), log p(bit = 0) = log_sigmoid(-z).
  likelihood = (
    jax.nn.log_sigmoid(logits) @ bits.T + jax.nn.log_sigmoid(-logits) @ (1 - bits).T
  )  # (B, C)
  return jnp.argmax(likelihood, -1)
