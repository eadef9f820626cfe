"""Output codes (Section 7): one-hot K = C, binary K = ceil(log2 C), against the math
written out in NumPy."""

import numpy as np
import pytest

from gevb_jax import output_codes


def _bits(labels, k):
  return (np.asarray(labels)[:, None] >> np.arange(k)) & 1


@pytest.mark.parametrize("classes,k", [(2, 1), (10, 4), (16, 4), (17, 5), (100, 7)])
def test_binary_code_has_ceil_log2_bits_and_one_code_per_class(classes, k):
  assert output_codes.num_outputs("binary", classes) == k
  assert output_codes.num_outputs("onehot", classes) == classes
  bits = np.asarray(output_codes.code_bits(classes))
  np.testing.assert_array_equal(bits, _bits(np.arange(classes), k))
  assert len({tuple(row) for row in bits}) == classes


def test_binary_loss_error_vector_and_prediction_by_hand():
  rng = np.random.default_rng(0)
  z = rng.normal(size=(32, 4)).astype(np.float32) * 3
  y = rng.integers(0, 10, 32)
  b = _bits(y, 4)
  p = 1 / (1 + np.exp(-z.astype(np.float64)))
  loss = -(b * np.log(p) + (1 - b) * np.log(1 - p)).sum(-1)
  np.testing.assert_allclose(
    output_codes.per_example_loss(z, y, "binary", 10), loss, rtol=1e-5
  )
  np.testing.assert_allclose(
    output_codes.error_vector(z, y, "binary", 10), p - b, rtol=1e-5, atol=1e-6
  )
  codes = _bits(np.arange(10), 4)  # Classes 10-15 have codes but are never predicted.
  likelihood = np.log(p) @ codes.T + np.log(1 - p) @ (1 - codes).T
  np.testing.assert_array_equal(
    output_codes.predict(z, "binary", 10), likelihood.argmax(-1)
  )
  np.testing.assert_array_equal(output_codes.predict(z, "onehot", 4), z.argmax(-1))
