"""Several seeds of one experiment as one program: the device mesh, and functions of one
seed mapped over a leading seed axis."""

import math

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh

from gevb_jax import layers


def make_mesh(num_seeds=1):
  """A 2-d mesh over every local device: seeds are split along its "seeds" axis,
  which takes as many devices as divide both counts, and each seed's batches along
  the "data" axis, which takes the rest."""
  devices = np.array(jax.devices())
  seeds = math.gcd(len(devices), num_seeds)
  return Mesh(devices.reshape(seeds, -1), ("seeds", "data"))


@jax.jit
def slot(tree, index):
  """One seed's entries of a stacked pytree (one compiled call, not one per leaf)."""
  return jax.tree.map(lambda v: v[index], tree)


@jax.jit
def stack(trees):
  """The list of one pytree per seed as one pytree with a leading seed axis."""
  return jax.tree.map(lambda *v: jnp.stack(v), *trees)


def in_turn(num_seeds, mesh):
  """Whether ``over_seeds`` runs ``num_seeds`` seeds one after the other on ``mesh``
  (several seeds on one CPU device), so that they take ``num_seeds`` times one's time."""
  return num_seeds > 1 and mesh.shape["seeds"] == 1 and layers.tuned_for_cpu()


def over_seeds(fn, num_seeds, in_axes, mesh):
  """``fn`` over stacked seeds: the arguments with an axis in ``in_axes`` and every
  output gain a leading seed axis ``S = num_seeds``.

  Seeds split over the devices of ``mesh``'s "seeds" axis, and every seed off the
  CPU, are ``jax.vmap``-ed, with the seed axis laid on that mesh axis. On one CPU
  device the seeds take turns (``lax.map``): vmapped, a conv net's convolutions
  become grouped convolutions, and two MNIST conv VNN seeds trained at 360 ex/s
  against 520 in turn (conv DFA 1100 against 2000; benchmarks/README.md). One seed
  runs ``fn`` itself on the squeezed arguments.
  """
  if num_seeds > 1 and not in_turn(num_seeds, mesh):
    return jax.vmap(fn, in_axes=in_axes, spmd_axis_name="seeds")
  if num_seeds > 1:

    def turns(*args):
      def one(seeded):  # This seed's entries of the arguments with a seed axis.
        it = iter(seeded)
        return fn(*(a if axis is None else next(it) for a, axis in zip(args, in_axes)))

      seeded = tuple(a for a, axis in zip(args, in_axes) if axis is not None)
      return jax.lax.map(one, seeded)

    return turns

  def one_seed(*args):
    return stack(
      [fn(*(a if axis is None else slot(a, 0) for a, axis in zip(args, in_axes)))]
    )

  return one_seed
