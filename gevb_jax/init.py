"""He and ON/OFF initialisers (paper Section 5, Eq. 16).

ON/OFF units are interleaved: unit (or channel) ``2m`` is the ON cell and ``2m + 1`` its
OFF partner, with opposite gating vectors. Because channels are the fastest axis of
every activation, pooling and flattening keep each pair adjacent, so the same rule
holds for dense layers that follow a flattened conv/LC stack.

With this ordering Eq. 16 reads, for layers past the first (``W~`` is He-initialised at
half width, ``[.]+`` is rectification)::

  W[2n, 2m] = [W~[n, m]]+     W[2n + 1, 2m]     = [-W~[n, m]]+
  W[2n, 2m + 1] = [-W~[n, m]]+  W[2n + 1, 2m + 1] = [W~[n, m]]+

and the first layer is ``W[:, 2m] = W~[:, m]``, ``W[:, 2m + 1] = -W~[:, m]``. OFF cells
then carry exactly minus their ON partner's activation, and the ON cells compute what
the half-width mixed-sign network ``W~`` computes.
"""

import jax
import jax.numpy as jnp


def he_normal(key, shape, fan_in, dtype=jnp.float32):
  """He initialisation: i.i.d. N(0, 2 / fan_in)."""
  return jax.random.normal(key, shape, dtype) * jnp.sqrt(2.0 / fan_in).astype(dtype)


def interleave(even, odd, axis):
  """Interleaves two equal arrays along ``axis``: ``[even_0, odd_0, even_1, ...]``."""
  axis = axis % even.ndim
  stacked = jnp.stack([even, odd], axis=axis + 1)
  return stacked.reshape(*even.shape[:axis], -1, *even.shape[axis + 1:])


def halve(shape, axis):
  """``shape`` with the size along ``axis`` halved (it must be even)."""
  axis = axis % len(shape)
  if shape[axis] % 2:
    raise ValueError(f"ON/OFF pairing needs an even size, got {shape[axis]} "
                     f"along axis {axis} of kernel shape {shape}")
  return (*shape[:axis], shape[axis] // 2, *shape[axis + 1:])


def on_off_kernel(key, shape, fan_in, *, in_axis, first, readout):
  """Nonnegative ON/OFF kernel of Eq. 16 built from a half-size He kernel.

  Args:
    key: PRNG key.
    shape: full kernel shape; output units last.
    fan_in: fan-in of the full layer; the half network's fan-in is ``fan_in / 2``
      past the first layer (its inputs are the ON cells only).
    in_axis: the kernel axis of input units/channels (ignored for the first layer).
    first: the first layer is mixed-sign: ``(+W~; -W~)``.
    readout: the readout's outputs are not paired.

  Returns:
    The kernel, ``[.]+``-rectified blocks past the first layer.
  """
  if first:
    half = he_normal(key, halve(shape, -1), fan_in)
    return interleave(half, -half, axis=-1)
  half_shape = halve(shape, in_axis)
  if not readout:
    half_shape = halve(half_shape, -1)
  half = he_normal(key, half_shape, fan_in // 2)
  pos, neg = jax.nn.relu(half), jax.nn.relu(-half)
  on_rows = interleave(pos, neg, axis=in_axis)  # Weights onto ON cells.
  if readout:
    return on_rows
  off_rows = interleave(neg, pos, axis=in_axis)  # Weights onto OFF cells.
  return interleave(on_rows, off_rows, axis=-1)


def gating_vectors(key, num_components, num_units, vectorized):
  """ON/OFF gating vectors ``t``, shape ``(K, C)`` (Eq. 8).

  Vectorized nets draw ``t~`` uniformly from ``{-1, +1}^K`` per ON unit; conventional
  nets use ``t~ = +1``, so ``t`` alternates ``+1, -1`` over units/channels.
  """
  half = halve((num_components, num_units), -1)
  if vectorized:
    t = jax.random.rademacher(key, half, jnp.float32)
  else:
    t = jnp.ones(half, jnp.float32)
  return interleave(t, -t, axis=-1)


def dfa_feedback(key, num_classes, num_units, nonneg):
  """Fixed DFA feedback matrix ``B`` (Eq. 5), ``(num_classes, num_units)``.

  Uniform on [0, 1] for nonnegative networks and on [-1, 1] for mixed-sign ones
  (Appendix J).
  """
  low = 0.0 if nonneg else -1.0
  return jax.random.uniform(key, (num_classes, num_units), jnp.float32, low, 1.0)
