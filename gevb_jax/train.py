"""Training and evaluation: one jitted, data-parallel step, epochs, checkpoints.

``train_and_evaluate(config, workdir)`` trains one network with one rule, the paper's
recipe (Appendix I): full train/test evaluation at epoch 0, every ``eval_every``
epochs and at the end; early stop at zero train error. The workdir receives
``config.json``, ``metrics.jsonl``, TensorBoard events, orbax ``checkpoints/`` (one per
epoch, the latest kept plus those at evaluations) and ``summary.json``.

Resuming is exact: an epoch's batches depend only on ``(seed, epoch)``, and the
state is checkpointed at epoch ends, so a run killed at any moment and rerun ends
with the same parameters and metrics as one that never stopped.
"""

import json
import math
import os
import shutil
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint as ocp
import tensorboardX
import tqdm
from absl import logging
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

import gevb_jax
from gevb_jax import clusters, data, metrics


class TrainingError(RuntimeError):
  """A run cannot start or continue; the message says why."""


# --- Steps ---------------------------------------------------------------------


def make_train_step(net, tx, rule, mesh):
  """Jitted step ``(state, x_all, y_all, idx) -> (state, loss)``.

  The dataset lives on the devices; ``idx`` (the batch's indices) is sharded over
  the mesh's "data" axis and so is the gathered batch, while parameters and optimizer
  state are replicated: XLA inserts the gradient all-reduce.
  """
  replicated = NamedSharding(mesh, P())

  def step(state, x_all, y_all, idx):
    x, y = x_all[idx], y_all[idx]
    x = jax.lax.with_sharding_constraint(x, NamedSharding(mesh, P("data")))
    variables = {"params": state["params"], "fixed": state["fixed"]}
    loss, updates = gevb_jax.loss_and_updates(net, variables, x, y, rule)
    updates, opt_state = tx.update(updates, state["opt_state"], state["params"])
    params = optax.apply_updates(state["params"], updates)
    return {**state, "params": params, "opt_state": opt_state}, loss

  return jax.jit(step, donate_argnums=0, out_shardings=(replicated, replicated))


def run_epoch(train_step, state, x_all, y_all, batches, mesh, progress=False, desc=""):
  """Runs ``train_step`` over ``batches`` (indices, ``(steps, batch)``).

  Returns the new state and the summed loss, still on the device: nothing here waits
  for a step, so the host stays ahead of the devices.
  """
  sharding = NamedSharding(mesh, P("data"))
  loss_sum = 0.0
  for idx in tqdm.tqdm(batches, desc=desc, disable=not progress, leave=False):
    state, loss = train_step(state, x_all, y_all, jax.device_put(idx, sharding))
    loss_sum = loss_sum + loss
  return state, loss_sum


def make_eval_step(net, mesh):
  """Jitted ``(variables, x, y, weight) -> (summed errors, summed losses)``."""
  def step(variables, x, y, weight):
    x = jax.lax.with_sharding_constraint(x, NamedSharding(mesh, P("data")))
    logits = net.apply(variables, x)
    losses = optax.softmax_cross_entropy_with_integer_labels(logits, y)
    errors = (jnp.argmax(logits, -1) != y).astype(jnp.float32)
    return jnp.sum(errors * weight), jnp.sum(losses * weight)
  return jax.jit(step)


def evaluate(eval_step, variables, x, y, batch_size, mesh):
  """Error fraction and mean loss over a whole split (last batch padded)."""
  n = len(x)
  errors = losses = 0.0
  sharding = NamedSharding(mesh, P("data"))
  for start in range(0, n, batch_size):
    xb, yb = x[start:start + batch_size], y[start:start + batch_size]
    weight = np.ones(len(xb), np.float32)
    pad = batch_size - len(xb)
    if pad:
      xb = np.concatenate([xb, np.zeros((pad, *xb.shape[1:]), xb.dtype)])
      yb = np.concatenate([yb, np.zeros(pad, yb.dtype)])
      weight = np.concatenate([weight, np.zeros(pad, np.float32)])
    e, l = eval_step(variables, *jax.device_put((xb, yb, weight), sharding))
    errors, losses = errors + e, losses + l
  return float(errors) / n, float(losses) / n


# Float32 copies of a network's widest activation (K components included) counted per
# example of an evaluation batch (the forward pass) and of an alignment batch (plain
# autodiff's K-wide gradient). Checked, not derived: with them a Fashion-MNIST conv
# VNN's epoch-0 evaluation peaks at 1.34 GB in a 512 MB budget (benchmarks/README.md).
EVAL_COPIES = 4
ALIGNMENT_COPIES = 12


def memory_bounded_batches(net, config, num_devices):
  """Evaluation and alignment batch sizes whose activations fit the memory budget.

  ``config.eval_batch_size`` caps the first; each is a multiple of ``num_devices``
  and at least ``num_devices``.
  """
  budget = config.memory_budget_mb * 2**20
  per_copy = 4 * net.widest_activation

  def fit(copies, cap):
    n = min(cap, int(budget // (copies * per_copy))) // num_devices * num_devices
    return max(n, num_devices)
  return (fit(EVAL_COPIES, config.eval_batch_size),
          fit(ALIGNMENT_COPIES, config.metrics.alignment_examples))


# --- Workdir -------------------------------------------------------------------


def _flatten(d, prefix=""):
  out = {}
  for k, v in d.items():
    if isinstance(v, dict):
      out.update(_flatten(v, f"{prefix}{k}."))
    else:
      out[f"{prefix}{k}"] = v
  return out


# Settings that do not change what a run computes: sections or single fields.
# Where datasets are cached or fetched from is not identity: their checksums are.
_NOT_IDENTITY = ("progress", "overwrite", "memory_budget_mb", "data.cache_dir",
                 "data.mirror")


def _config_changes(config, workdir):
  """``"key: old -> new"`` for every field that differs from the workdir's run."""
  path = os.path.join(workdir, "config.json")
  if not os.path.exists(path):
    return []
  with open(path) as f:
    old = _flatten(json.load(f))
  new = _flatten(json.loads(config.to_json()))
  return [f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in sorted(set(new) | set(old))
          if not {k, k.split(".")[0]} & set(_NOT_IDENTITY) and new.get(k) != old.get(k)]


def _claim_workdir(config, workdir, start_over):
  """Writes ``config.json``, first removing another config's run if ``start_over``."""
  if start_over:
    for name in ("checkpoints", "metrics.jsonl", "summary.json"):
      target = os.path.join(workdir, name)
      if os.path.isdir(target):
        shutil.rmtree(target)
      elif os.path.exists(target):
        os.remove(target)
  os.makedirs(workdir, exist_ok=True)
  with open(os.path.join(workdir, "config.json"), "w") as f:
    json.dump(json.loads(config.to_json()), f, indent=2, sort_keys=True)


def _restore(manager, abstract_state):
  """Latest readable checkpoint ``(epoch, state)``, falling back past corrupt ones."""
  for step in sorted(manager.all_steps(), reverse=True):
    try:
      state = manager.restore(step, args=ocp.args.StandardRestore(abstract_state))
      return step, state
    except Exception as err:  # pylint: disable=broad-except
      logging.warning("checkpoint at epoch %d is unreadable (%s: %s); deleting it and "
                      "falling back to the previous one", step, type(err).__name__,
                      str(err).splitlines()[0] if str(err) else "")
      manager.delete(step)
  return None, None


def _read_metrics(path, last_epoch):
  """Metrics lines up to ``last_epoch``; later ones belong to lost epochs."""
  if not os.path.exists(path):
    return []
  rows = []
  with open(path) as f:
    for line in f:
      try:
        row = json.loads(line)
      except json.JSONDecodeError:
        break  # A line cut short by a kill.
      if row["epoch"] <= last_epoch:
        rows.append(row)
  return rows


# --- Main loop -----------------------------------------------------------------


def data_mesh():
  """A 1-d mesh over every local device; batches are split along its "data" axis."""
  return Mesh(np.array(jax.devices()), ("data",))


def train_and_evaluate(config, workdir):
  """Trains per ``config`` in ``workdir``, resuming from its latest checkpoint.

  Returns the summary dict also written to ``summary.json``.
  """
  config = config.copy_and_resolve_references()
  changes = _config_changes(config, workdir)
  if changes and not config.overwrite:
    raise TrainingError(f"workdir {workdir} holds a run with another config "
                        f"({', '.join(changes)}); use another workdir or "
                        "--config.overwrite=True to start over")
  summary_path = os.path.join(workdir, "summary.json")
  if not changes and os.path.exists(summary_path):
    logging.info("%s already finished; nothing to do", workdir)
    with open(summary_path) as f:
      return json.load(f)

  mesh = data_mesh()
  if config.batch_size % mesh.size:
    raise TrainingError(f"batch_size {config.batch_size} does not divide over "
                        f"{mesh.size} devices; use a multiple of {mesh.size}")

  ds = data.load_dataset(config.data)
  net = gevb_jax.make_network(
      config.model.arch, input_shape=ds.train_x.shape[1:], num_classes=ds.num_classes,
      vectorized=config.model.vectorized, nonneg=config.model.nonneg,
      widths=config.model.widths)
  gevb_jax.rules.check_rule(net, config.rule)
  eval_batch, probe_batch = memory_bounded_batches(net, config, mesh.size)
  tx = gevb_jax.make_optimizer(net, learning_rate=config.learning_rate)
  # Only a run that can start claims the workdir: a typo leaves it as it was.
  _claim_workdir(config, workdir, start_over=bool(changes))

  variables = net.init(jax.random.key(config.seed))
  state = {"params": variables["params"], "fixed": variables["fixed"],
           "opt_state": tx.init(variables["params"])}
  manager = ocp.CheckpointManager(
      os.path.abspath(os.path.join(workdir, "checkpoints")),
      options=ocp.CheckpointManagerOptions(
          max_to_keep=1, keep_period=config.eval_every,
          enable_async_checkpointing=False, cleanup_tmp_directories=True))
  epoch, restored = _restore(manager, state)
  metrics_path = os.path.join(workdir, "metrics.jsonl")
  history = _read_metrics(metrics_path, -1 if epoch is None else epoch)
  with open(metrics_path, "w") as f:  # Drop lines of epochs that were lost.
    f.writelines(json.dumps(row) + "\n" for row in history)
  if restored is not None:
    state = restored
    logging.info("resumed %s from epoch %d", workdir, epoch)

  replicated = NamedSharding(mesh, P())
  state = jax.device_put(state, replicated)
  x_all, y_all = jax.device_put((ds.train_x, ds.train_y), replicated)
  train_step = make_train_step(net, tx, config.rule, mesh)
  eval_step = make_eval_step(net, mesh)
  # The released analysis measures alignment on the first training batch in stored
  # order (alignment_and_concentration_viz.ipynb, cell 1: shuffle_train=False).
  probe = (ds.train_x[:config.metrics.alignment_examples],
           ds.train_y[:config.metrics.alignment_examples])
  writer = tensorboardX.SummaryWriter(workdir)
  wall0 = time.time() - (history[-1]["wall_time_s"] if history else 0.0)
  steps_per_epoch = len(ds.train_x) // config.batch_size

  def log_eval(epoch):
    variables = {"params": state["params"], "fixed": state["fixed"]}
    train_error, train_loss = evaluate(eval_step, variables, ds.train_x, ds.train_y,
                                       eval_batch, mesh)
    test_error, test_loss = evaluate(eval_step, variables, ds.test_x, ds.test_y,
                                     eval_batch, mesh)
    row = {"epoch": epoch, "step": epoch * steps_per_epoch,
           "train_error": train_error, "test_error": test_error,
           "train_loss": train_loss, "test_loss": test_loss,
           "wall_time_s": time.time() - wall0}
    if config.metrics.alignment and config.rule != "bp":
      row["alignment"] = metrics.alignment(net, variables, *probe, config.rule,
                                           batch_size=probe_batch)
      if epoch == 0 and net.vectorized:
        row["relative_std"] = metrics.relative_std(net, variables, probe[0],
                                                   batch_size=probe_batch)
        row["eq15_relative_std"] = metrics.eq15_prediction(net, variables)
    with open(metrics_path, "a") as f:
      f.write(json.dumps(row) + "\n")
    for key, value in row.items():
      if isinstance(value, float) and key != "wall_time_s":
        writer.add_scalar(key, value, row["step"])
      elif isinstance(value, dict):
        for layer, v in value.items():
          writer.add_scalar(f"{key}/{layer}", v, row["step"])
    writer.flush()
    logging.info("epoch %d: train error %.4f, test error %.4f, loss %.4f", epoch,
                 train_error, test_error, train_loss)
    return row

  if epoch is None:
    last = log_eval(0)
    manager.save(0, args=ocp.args.StandardSave(state))
    epoch = 0
  else:
    last = history[-1]
  stopped_early = config.stop_at_zero_train_error and last["train_error"] == 0
  show = config.progress and sys.stderr.isatty()
  while epoch < config.num_epochs and not stopped_early:
    epoch += 1
    batches = data.batch_indices(len(ds.train_x), config.batch_size, config.seed, epoch)
    state, loss_sum = run_epoch(train_step, state, x_all, y_all, batches, mesh,
                                progress=show, desc=f"epoch {epoch}")
    if not math.isfinite(float(loss_sum)):
      raise TrainingError(f"non-finite training loss in epoch {epoch} "
                          f"({float(loss_sum)}); the checkpoint of epoch {epoch - 1} "
                          "is kept")
    if epoch % config.eval_every == 0 or epoch == config.num_epochs:
      last = log_eval(epoch)
      stopped_early = config.stop_at_zero_train_error and last["train_error"] == 0
    manager.save(epoch, args=ocp.args.StandardSave(state))
  manager.wait_until_finished()
  writer.close()

  summary = {"final_train_error": last["train_error"],
             "final_test_error": last["test_error"], "epochs_run": epoch,
             "stopped_early": bool(stopped_early)}
  if config.metrics.cluster_quality and config.model.arch in ("conv", "lc"):
    summary["cluster_quality"] = cluster_quality(net, config, ds, state, workdir)
  with open(summary_path, "w") as f:
    json.dump(summary, f, indent=2)
  return summary


def cluster_quality(net, config, ds, state, workdir):
  """Fig. 3: t-SNE cluster quality of the conv/LC representations, at init and now.

  Embeds the first ``config.metrics.tsne_examples`` training examples (0: all of
  them), as the authors' notebook embeds the training set (``conv_viz.ipynb``, cells
  4 and 9). Returns both scores, ``{"fig3b_rms": {"init", "final"},
  "section6_squared": {"init", "final"}}`` (see ``clusters``), and writes
  ``tsne_init.png`` and ``tsne_final.png`` beside the metrics.
  """
  n = config.metrics.tsne_examples or len(ds.train_x)
  x, y = ds.train_x[:n], ds.train_y[:n]
  represent = jax.jit(net.representation)
  scores = {"fig3b_rms": clusters.cluster_quality_rms,
            "section6_squared": clusters.cluster_quality_squared}
  out = {name: {} for name in scores}
  for tag, variables in (("init", net.init(jax.random.key(config.seed))),
                         ("final", {"params": state["params"], "fixed": state["fixed"]})):
    reps = np.concatenate([np.asarray(represent(variables, x[i:i + 1000]))
                           for i in range(0, len(x), 1000)])
    embedding = clusters.tsne_embedding(reps, iters=config.metrics.tsne_iters,
                                        seed=config.seed)
    for name, score in scores.items():
      out[name][tag] = score(embedding, y)
    clusters.scatter_png(embedding, y, os.path.join(workdir, f"tsne_{tag}.png"),
                         f"{config.model.arch} {config.rule}, {tag}: quality "
                         f"{out['fig3b_rms'][tag]:.3f} (Fig. 3B)")
  return out
