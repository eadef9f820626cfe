"""What several benchmarks share: the input shapes and the autodiff reference step.

This module defines no flags. Each script defines its own at module scope, and absl
refuses a flag defined twice, so the scripts import from here and not from each other.
"""

import jax
import optax

import gevb_jax

DATASETS = {"mnist": (28, 28, 1), "cifar": (32, 32, 3)}

# Every network the benchmarks build, as DATASET-ARCH (the values of --only).
NETS = tuple(f"{dataset}-{arch}" for dataset in DATASETS for arch in gevb_jax.ARCHS)

# A --only filter's error when it selects none of them.
NO_NET_MATCHES = f"matches none of {', '.join(NETS)}"


def matches_a_net(only):
  """Whether the substring filter ``only`` selects at least one of ``NETS``."""
  return any(only in name for name in NETS)


def autodiff_step(net, tx):
  """The training step with BP updates from plain autodiff of the vectorized forward
  (the K-sized backward the rules avoid); otherwise as ``train.make_train_step``."""

  def step(state, x_all, y_all, idx):
    def loss(params):
      logits = net.apply({"params": params, "fixed": state["fixed"]}, x_all[idx])
      return net.loss(logits, y_all[idx])  # The net's output code's loss.

    value, grads = jax.value_and_grad(loss)(state["params"])
    updates, opt_state = tx.update(grads, state["opt_state"], state["params"])
    params = optax.apply_updates(state["params"], updates)
    return {**state, "params": params, "opt_state": opt_state}, value

  return jax.jit(step, donate_argnums=0)
