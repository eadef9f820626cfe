"""The training CLI end to end: every arch x kind x rule, resume, faults, data
parallel."""

import json
import os
import signal
import subprocess
import time

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import pytest

import gevb_jax
from configs import default as default_config
from gevb_jax import clusters, data, evaluation, grid, metrics, rules, train
from gevb_jax import workdir as run_folder
from tests import helpers

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FASHION = "/usr/share/datasets/fashion-mnist"
SMALL = {"fc": (128, 64), "conv": (16, 8, 64), "lc": (8, 8, 64)}


def _config(**overrides):
  config = default_config.get_config()
  config.num_epochs = 2
  config.eval_every = 1
  config.progress = False
  config.metrics.alignment_examples = 32
  return helpers.override(config, **overrides)


def _cli(workdir, *flags, env=None, **kwargs):
  cmd = helpers.trainer_command(workdir, *flags)
  return subprocess.run(
    cmd,
    cwd=ROOT,
    capture_output=True,
    text=True,
    env={**os.environ, **(env or {})},
    timeout=300,
    **kwargs,
  )


def _metrics(workdir):
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    rows = [json.loads(line) for line in f]
  return [{k: v for k, v in row.items() if k not in run_folder.TIMINGS} for row in rows]


def _final_params(workdir):
  """The latest checkpoint's params on this process's first device, wherever saved."""
  manager = ocp.CheckpointManager(os.path.abspath(os.path.join(workdir, "checkpoints")))
  return run_folder.stored_state(str(workdir), manager.latest_step())["params"]


# Half the least relative change of a hidden layer's weights measured in the per-rule
# runs below (0.11: the vectorized conv net's first layer under GEVB, 2026-12-04).
# Zero hidden updates leave them where they were.
HIDDEN_MOVEMENT = 0.05


def _hidden_movement(workdir, config):
  """``{hidden layer: |w - w0| / |w0|}`` of the run's final weights against its
  initial ones."""
  net = gevb_jax.make_network(
    config.model.arch,
    input_shape=(8, 8, 1),
    num_classes=10,
    vectorized=config.model.vectorized,
    nonneg=config.model.nonneg,
    widths=config.model.widths,
    backward_kernels=rules.backward_kernels(config.rule),
  )
  initial = net.init(jax.random.key(config.seed))["params"]
  final = _final_params(workdir)
  return {
    info.name: float(
      np.linalg.norm(final[info.name]["w"] - initial[info.name]["w"])
      / np.linalg.norm(initial[info.name]["w"])
    )
    for info in net.hidden
  }


# The paper's rules; FA, KP and sign symmetry are pinned against references in
# tests/test_rules.py and end to end below.
CASES = [
  (arch, vectorized, rule)
  for arch in gevb_jax.ARCHS
  for vectorized in (True, False)
  for rule in grid.PAPER_RULES[grid.kind(vectorized)]
]


@pytest.mark.parametrize("arch,vectorized,rule", CASES)
def test_every_arch_kind_and_rule_trains_on_digits(tmp_path, arch, vectorized, rule):
  # DFA gets 6 epochs: with the released code's paired readout (logits in +/- pairs)
  # a conventional nonneg DFA net sits on a plateau first. Measured on this tiny conv
  # net, train error after epochs 1-6: 0.90, 0.90, 0.90, 0.84, 0.77, 0.75; the same
  # net with an unpaired readout: 0.93, 0.86, 0.81, 0.77, 0.68, 0.60.
  epochs = 6 if rule == "dfa" else 3
  config = _config(
    **{
      "model.arch": arch,
      "model.vectorized": vectorized,
      "rule": rule,
      "model.widths": SMALL[arch],
      "num_epochs": epochs,
      "stop_at_zero_train_error": False,
      "learning_rate": 3e-3,
    }
  )
  summary = train.train_and_evaluate(config, str(tmp_path))
  rows = _metrics(tmp_path)
  assert [r["epoch"] for r in rows] == list(range(epochs + 1))
  for row in rows:
    assert 0 <= row["train_error"] <= 1 and 0 <= row["test_error"] <= 1
    assert row["step"] == row["epoch"] * (1437 // 128)
  # 33 (DFA: 66) steps at 10x the paper's learning rate: every rule learns.
  assert rows[-1]["train_loss"] < 0.95 * rows[0]["train_loss"]
  assert rows[-1]["test_error"] < rows[0]["test_error"] - 0.05
  assert summary == {
    "final_train_error": rows[-1]["train_error"],
    "final_test_error": rows[-1]["test_error"],
    "epochs_run": epochs,
    "stopped_early": False,
  }
  if rule != "bp":
    hidden = [
      info.name
      for info in gevb_jax.make_network(
        arch,
        input_shape=(8, 8, 1),
        num_classes=10,
        vectorized=vectorized,
        nonneg=True,
        widths=SMALL[arch],
      ).hidden
    ]
    assert list(rows[0]["alignment"]) == hidden
    # delta_hat >= 0 bounds GEVB's angle by 90 degrees in a nonneg VNN; DFA's isn't.
    bound = 90 if vectorized else 180
    assert all(0 <= a <= bound for a in rows[-1]["alignment"].values())
  assert set(os.listdir(tmp_path / "checkpoints")) >= {"0", str(epochs)}
  assert any(f.startswith("events.out.tfevents") for f in os.listdir(tmp_path))
  with open(tmp_path / "config.json") as f:
    assert json.load(f)["model"]["arch"] == arch
  # The readout gets the true gradient and learns alone: the hidden layers must learn
  # too, with the rule's updates.
  moved = _hidden_movement(tmp_path, config)
  assert all(m > HIDDEN_MOVEMENT for m in moved.values()), moved


def test_alignment_is_measured_on_the_first_training_examples(tmp_path):
  """As the released analysis does (alignment_and_concentration_viz.ipynb, cell 1:
  the first training batch with shuffle_train=False), not on test examples."""
  config = _config(
    **{
      "model.vectorized": False,
      "rule": "dfa",
      "num_epochs": 1,
      "model.widths": (64, 32),
      "metrics.alignment_examples": 40,
    }
  )
  train.train_and_evaluate(config, str(tmp_path))
  row = _metrics(tmp_path)[0]
  ds = data.load_dataset(config.data)
  net = gevb_jax.make_network(
    "fc",
    input_shape=ds.train_x.shape[1:],
    num_classes=10,
    vectorized=False,
    nonneg=True,
    widths=(64, 32),
  )
  variables = net.init(jax.random.key(config.seed))
  on_train = metrics.alignment(net, variables, ds.train_x[:40], ds.train_y[:40], "dfa")
  on_test = metrics.alignment(net, variables, ds.test_x[:40], ds.test_y[:40], "dfa")
  assert row["alignment"] == pytest.approx(on_train, abs=1e-4)
  assert all(abs(on_train[k] - on_test[k]) > 1e-3 for k in on_train)


@pytest.mark.parametrize("examples", [50, 0])
def test_tsne_embeds_training_examples_and_reports_both_scores(
  tmp_path, monkeypatch, examples
):
  """conv_viz.ipynb embeds the training set; 0 examples means all of it."""
  embedded = []

  def fake_tsne(representations, *, iters, seed):
    embedded.append(np.asarray(representations))
    return np.asarray(representations)[:, :2]

  monkeypatch.setattr(clusters, "tsne_embedding", fake_tsne)
  config = _config(
    **{
      "model.arch": "conv",
      "model.widths": (8, 4, 16),
      "num_epochs": 1,
      "metrics.cluster_quality": True,
      "metrics.tsne_examples": examples,
    }
  )
  summary = train.train_and_evaluate(config, str(tmp_path))
  ds = data.load_dataset(config.data)
  n = examples or len(ds.train_x)
  net = gevb_jax.make_network(
    "conv",
    input_shape=ds.train_x.shape[1:],
    num_classes=10,
    vectorized=True,
    nonneg=True,
    widths=(8, 4, 16),
  )
  reps = np.asarray(
    net.representation(net.init(jax.random.key(config.seed)), ds.train_x[:n])
  )
  assert len(embedded) == 2 and embedded[0].shape == reps.shape
  np.testing.assert_allclose(embedded[0], reps, rtol=1e-5, atol=1e-6)
  quality = summary["cluster_quality"]
  assert quality["fig3b_rms"]["init"] == pytest.approx(
    clusters.cluster_quality_rms(reps[:, :2], ds.train_y[:n])
  )
  assert quality["section6_squared"]["init"] == pytest.approx(
    clusters.cluster_quality_squared(reps[:, :2], ds.train_y[:n])
  )
  assert quality["fig3b_rms"]["final"] != quality["fig3b_rms"]["init"]


def test_kolen_pollack_runs_train_their_kernels_toward_the_weights(tmp_path):
  """The trainer builds KP's learned kernels, decays them and the weights alike
  (config.kp_weight_decay) and logs alignment and sign agreement per hidden layer."""
  config = _config(
    **{
      "model.vectorized": False,
      "model.nonneg": False,
      "model.widths": (16, 8),
      "rule": "kp",
      "num_epochs": 1,
      "kp_weight_decay": 20.0,
    }
  )
  train.train_and_evaluate(config, str(tmp_path))
  net = gevb_jax.make_network(
    "fc",
    input_shape=(8, 8, 1),
    num_classes=10,
    vectorized=False,
    nonneg=False,
    widths=(16, 8),
    backward_kernels="learned",
  )
  initial = net.init(jax.random.key(0))["params"]
  final = _final_params(tmp_path)
  shrink = (1 - config.learning_rate * config.kp_weight_decay) ** (1437 // 128)
  for name in ("dense_1", "readout"):
    np.testing.assert_allclose(
      final[name]["w"] - final[name]["w_back"],
      shrink * (initial[name]["w"] - initial[name]["w_back"]),
      rtol=1e-3,
      atol=1e-6,
    )
  for row in _metrics(tmp_path):
    assert set(row["alignment"]) == set(row["sign_agreement"]) == {"dense_0", "dense_1"}
    assert all(0 <= v <= 1 for v in row["sign_agreement"].values())


def test_a_binary_output_code_vnn_learns_with_four_components(tmp_path, capsys):
  """Section 7: 10 classes in K = 4 components; evaluation predicts the most likely
  code, and GEVB with e = sigmoid(z) - bits learns."""
  config = _config(
    **{
      "model.output_code": "binary",
      "model.widths": (64, 32),
      "num_epochs": 3,
      "learning_rate": 3e-3,
    }
  )
  train.train_and_evaluate(config, str(tmp_path))
  assert "FC Vectorized Nonneg GEVB binary (K = 4)" in capsys.readouterr().out
  rows = _metrics(tmp_path)
  assert rows[-1]["test_error"] < rows[0]["test_error"] - 0.3
  assert rows[-1]["train_loss"] < 0.8 * rows[0]["train_loss"]


def test_early_stop_at_zero_train_error_and_rerun_is_a_no_op(tmp_path):
  config = _config(num_epochs=40, eval_every=5)
  summary = train.train_and_evaluate(config, str(tmp_path))
  rows = _metrics(tmp_path)
  assert summary["stopped_early"] and summary["final_train_error"] == 0
  assert rows[-1]["train_error"] == 0 and all(r["train_error"] > 0 for r in rows[:-1])
  assert summary["epochs_run"] == rows[-1]["epoch"] < 40
  assert summary["final_test_error"] < 0.1  # Digits FC VNN learns for real.
  assert train.train_and_evaluate(config, str(tmp_path)) == summary
  assert _metrics(tmp_path) == rows


def test_console_is_quiet_off_a_tty_and_library_logs_come_on_request(tmp_path):
  """README command 1's run: a header, one line per evaluation, the final line."""
  quiet = _cli(tmp_path / "quiet")
  assert quiet.returncode == 0, quiet.stderr
  lines = (quiet.stdout + quiet.stderr).splitlines()
  rows = _metrics(tmp_path / "quiet")
  assert len(lines) == 1 + len(rows) + 1 <= 30
  assert lines[0].startswith("digits: 1437 train / 360 test images 8x8x1, 10 classes")
  assert "FC Vectorized Nonneg GEVB (K = 10)" in lines[0]
  assert [line.split(":")[0] for line in lines[1:-1]] == [
    f"epoch {row['epoch']:>3}" for row in rows
  ]
  assert lines[-1].startswith(f"final test error {rows[-1]['test_error']:.4f}")
  verbose = _cli(tmp_path / "verbose", "--config.num_epochs=1", "--verbosity=1")
  assert verbose.returncode == 0, verbose.stderr
  assert any(
    "orbax" in line or "checkpoint" in line.lower()
    for line in verbose.stderr.splitlines()
    if line.startswith("I")
  )


def test_sigkill_mid_training_then_resume_is_bit_identical(tmp_path):
  flags = [
    "--config.num_epochs=12",
    "--config.eval_every=4",
    "--config.stop_at_zero_train_error=False",
    "--config.model.widths=(64,32)",
  ]
  reference, resumed = tmp_path / "reference", tmp_path / "resumed"
  assert _cli(reference, *flags).returncode == 0
  cmd = helpers.trainer_command(resumed, *flags)
  proc = subprocess.Popen(
    cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
  )
  checkpoints = resumed / "checkpoints"
  deadline = time.time() + 240
  while time.time() < deadline and not (
    checkpoints.exists()
    and any(name.isdigit() and int(name) >= 5 for name in os.listdir(checkpoints))
  ):
    time.sleep(0.02)
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  assert not (resumed / "summary.json").exists(), "the run finished before the kill"
  result = _cli(resumed, *flags)
  assert result.returncode == 0, result.stderr
  assert _metrics(resumed) == _metrics(reference)
  for a, b in zip(
    *(jax.tree_util.tree_leaves(_final_params(d)) for d in (resumed, reference))
  ):
    np.testing.assert_array_equal(a, b)


def test_two_device_data_parallel_run_matches_one_device(tmp_path):
  flags = [
    "--config.num_epochs=2",
    "--config.stop_at_zero_train_error=False",
    "--config.model.widths=(64,32)",
  ]
  one, two = tmp_path / "one", tmp_path / "two"
  assert _cli(one, *flags).returncode == 0
  result = _cli(
    two, *flags, env={"XLA_FLAGS": "--xla_force_host_platform_device_count=2"}
  )
  assert result.returncode == 0, result.stderr
  m1, m2 = _metrics(one), _metrics(two)
  assert [r["train_error"] for r in m1] == pytest.approx(
    [r["train_error"] for r in m2], abs=2 / 1437
  )
  # Only the order of the cross-device gradient sum differs: float32 rounding.
  for a, b in zip(
    jax.tree_util.tree_leaves(_final_params(one)),
    jax.tree_util.tree_leaves(_final_params(two)),
  ):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
  bad = _cli(
    tmp_path / "bad",
    "--config.batch_size=127",
    env={"XLA_FLAGS": "--xla_force_host_platform_device_count=2"},
  )
  assert bad.returncode != 0
  assert "batch_size 127 does not divide over 2 devices" in bad.stderr


def test_workdir_of_another_config_is_refused_unless_overwrite(tmp_path):
  train.train_and_evaluate(_config(num_epochs=1), str(tmp_path))
  with pytest.raises(run_folder.WorkdirError, match=r"rule: 'gevb' -> 'bp'"):
    train.train_and_evaluate(_config(num_epochs=1, rule="bp"), str(tmp_path))
  summary = train.train_and_evaluate(
    _config(num_epochs=1, rule="bp", overwrite=True), str(tmp_path)
  )
  assert summary["epochs_run"] == 1
  with open(tmp_path / "config.json") as f:
    assert json.load(f)["rule"] == "bp"


def test_corrupt_latest_checkpoint_falls_back_to_previous(tmp_path, caplog):
  config = _config(num_epochs=3, stop_at_zero_train_error=False)
  reference = train.train_and_evaluate(config, str(tmp_path / "ref"))
  config2 = _config(num_epochs=2, stop_at_zero_train_error=False)
  train.train_and_evaluate(config2, str(tmp_path / "run"))
  # Damage every file of the latest checkpoint (epoch 2), then continue to epoch 3.
  for dirpath, _, files in os.walk(tmp_path / "run" / "checkpoints" / "2"):
    for name in files:
      with open(os.path.join(dirpath, name), "wb") as f:
        f.write(b"garbage")
  os.remove(tmp_path / "run" / "summary.json")
  with open(tmp_path / "run" / "config.json") as f:
    stored = json.load(f)
  stored["num_epochs"] = 3
  with open(tmp_path / "run" / "config.json", "w") as f:
    json.dump(stored, f)
  summary = train.train_and_evaluate(config, str(tmp_path / "run"))
  assert "epoch 2 is unreadable" in caplog.text
  assert summary == reference
  assert _metrics(tmp_path / "run") == _metrics(tmp_path / "ref")


def test_non_finite_loss_stops_with_message_and_keeps_last_checkpoint(tmp_path):
  result = _cli(tmp_path, "--config.learning_rate=1e38", "--config.num_epochs=5")
  assert result.returncode == 1
  assert (
    result.stderr.strip()
    .splitlines()[-1]
    .startswith("error: non-finite training loss in epoch")
  )
  assert "Traceback" not in result.stderr
  manager = ocp.CheckpointManager(str(tmp_path / "checkpoints"))
  state = manager.restore(manager.latest_step())
  assert all(
    np.isfinite(leaf).all() for leaf in jax.tree_util.tree_leaves(state["params"])
  )
  assert not (tmp_path / "summary.json").exists()


@pytest.mark.parametrize(
  "flags,message",
  [
    (
      ["--config.data.source=idx", "--config.data.path=/nonexistent/mnist"],
      "/nonexistent/mnist",
    ),
    (["--config.data.source=floppy"], "'floppy'"),
    (["--config.rule=dfa"], "valid rules: gevb, bp"),
    (["--config.model.arch=rnn"], "config.model.arch='rnn': 'rnn' is not a layer"),
    (["--config.model.widths=(33,16)"], "'dense(33)' has an odd width"),
    # Layer specs: a bad token, an odd width in a nonnegative net, a layer that
    # shrinks digits' 8x8 map to nothing; each message names the token.
    (["--config.model.arch=conv(4,3),pooll(2),flatten"], "'pooll(2)' is not a layer"),
    (["--config.model.arch=conv(5,3),flatten"], "'conv(5,3)' has an odd width"),
    (["--config.model.arch=conv(4,3),pool(9),flatten"], "'pool(9)' shrinks the 8x8"),
    (["--config.batch_size=-5"], "config.batch_size=-5: must be an integer >= 1"),
    (["--config.model.archh=fc"], 'Did you mean "arch"'),
  ],
)
def test_bad_input_exits_with_one_readable_line(tmp_path, flags, message):
  result = _cli(tmp_path, *flags)
  assert result.returncode == 1
  last = result.stderr.strip().splitlines()[-1]
  assert last.startswith("error: ") and message in last
  assert "Traceback" not in result.stderr
  # Nothing was claimed: the corrected command can use the same workdir.
  assert not (tmp_path / "config.json").exists()


@pytest.mark.skipif(
  not os.path.isdir(FASHION),
  reason=f"{FASHION} missing (apt-get install dataset-fashion-mnist)",
)
def test_fashion_mnist_end_to_end(tmp_path):
  from configs import fashion_mnist  # pylint: disable=import-outside-toplevel

  config = fashion_mnist.get_config()
  config.num_epochs = 1
  config.progress = False
  config.model.widths = (128, 64)
  summary = train.train_and_evaluate(config, str(tmp_path))
  # 468 GEVB steps of a nonneg FC VNN: far below chance (90 %) on real data.
  assert summary["final_test_error"] < 0.25


def test_memory_budget_sizes_evaluation_and_alignment_batches(tmp_path):
  conv = gevb_jax.make_network(
    "conv", input_shape=(28, 28, 1), num_classes=10, vectorized=True, nonneg=True
  )
  assert conv.widest_activation == 10 * 28 * 28 * 64
  config = _config(memory_budget_mb=512)
  # 1.91 MiB per float32 copy of the widest activation: 4 copies per evaluated
  # example and 12 per aligned one fit 66 and 22 examples in 512 MiB.
  assert evaluation.memory_bounded_batches(conv, config, 1) == (66, 22)
  assert evaluation.memory_bounded_batches(conv, config, 2) == (66, 22)
  assert evaluation.memory_bounded_batches(conv, config, 4) == (64, 20)
  config.memory_budget_mb = 1
  assert evaluation.memory_bounded_batches(conv, config, 2) == (2, 2)
  config.memory_budget_mb = 10**6  # The caps: eval_batch_size, alignment_examples.
  assert evaluation.memory_bounded_batches(conv, config, 1) == (1000, 32)

  # The budget changes how evaluation is batched, not what it measures, and a rerun
  # with another budget resumes the same run.
  rows = {}
  for budget in (1, 512):
    config = _config(
      **{
        "model.arch": "conv",
        "model.widths": (8, 4, 16),
        "num_epochs": 1,
        "memory_budget_mb": budget,
        "metrics.alignment_examples": 40,
      }
    )
    train.train_and_evaluate(config, str(tmp_path / str(budget)))
    rows[budget] = _metrics(tmp_path / str(budget))
  for small, large in zip(rows[1], rows[512]):
    assert small["train_error"] == large["train_error"]
    assert small["test_loss"] == pytest.approx(large["test_loss"], rel=1e-5)
    for name, angle in large["alignment"].items():
      assert small["alignment"][name] == pytest.approx(angle, abs=1e-3)
  config.memory_budget_mb = 1
  train.train_and_evaluate(config, str(tmp_path / "512"))  # Not refused.


@pytest.mark.parametrize(
  "arch,vectorized,rule",
  [
    ("fc", True, "gevb"),
    ("conv", True, "gevb"),
    ("conv", False, "dfa"),
    ("lc", True, "bp"),
  ],
)
@pytest.mark.parametrize("num_seeds", [1, 2])
def test_steps_per_call_leaves_the_result_bit_identical_to_one_step_per_call(
  arch, vectorized, rule, num_seeds
):
  """An epoch as one lax.scan, as chunks with a remainder, or (one seed) one jitted
  step at a time: the same parameters to the bit, so a resume may size its calls
  otherwise (``calibrated_steps_per_call``). Conv nets too: before their gradients were
  plain convolutions, the scanned conv step rounded otherwise."""
  net = gevb_jax.make_network(
    arch,
    input_shape=(12, 12, 1),
    num_classes=10,
    vectorized=vectorized,
    nonneg=True,
    widths=(64, 32) if arch == "fc" else (8, 4, 16),
    backward_kernels=rules.backward_kernels(rule),
  )
  tx = gevb_jax.make_optimizer(net)
  mesh = train.make_mesh(num_seeds)
  x_all = jax.random.uniform(jax.random.key(1), (350, 12, 12, 1), minval=-1, maxval=1)
  y_all = jax.random.randint(jax.random.key(2), (350,), 0, 10)
  # (steps, seeds, batch): 10 steps.
  batches = jnp.stack([data.batch_indices(350, 32, s, 1) for s in range(num_seeds)], 1)

  def fresh():
    states = []
    for seed in range(num_seeds):
      variables = net.init(jax.random.key(seed))
      states.append({**variables, "opt_state": tx.init(variables["params"])})
    return jax.tree.map(lambda *v: jnp.stack(v), *states)

  chunk = train.make_train_chunk(net, tx, rule, mesh, num_seeds)
  active = [True] * num_seeds
  expected, _ = train.run_epoch(chunk, fresh(), active, x_all, y_all, batches, 0)
  expected = jax.tree_util.tree_leaves(expected)
  for steps_per_call in (1, 3):  # 3: with a remainder of 1.
    got, _ = train.run_epoch(
      chunk, fresh(), active, x_all, y_all, batches, steps_per_call
    )
    for a, b in zip(jax.tree_util.tree_leaves(got), expected, strict=True):
      np.testing.assert_array_equal(a, b)
  if num_seeds == 1:
    state = jax.tree.map(lambda v: v[0], fresh())
    step = train.make_train_step(net, tx, rule, mesh)
    for idx in batches[:, 0]:
      state, _ = step(state, x_all, y_all, idx)
    for a, b in zip(jax.tree_util.tree_leaves(state), expected, strict=True):
      np.testing.assert_array_equal(a, b[0])


def test_calls_are_sized_by_time_and_the_timing_leaves_the_state_alone():
  """A chunk that takes 50 ms a step, aimed at 0.5 s: at most 10 steps a call (a
  sleep only lasts longer), at least one; the state it was timed on is untouched."""

  def slow_chunk(state, loss_sum, active, x_all, y_all, idx):
    time.sleep(0.05 * len(idx))
    return jax.tree.map(lambda v: v + 1, state), loss_sum

  state = {"w": jnp.zeros((1, 3))}
  batches = jnp.zeros((40, 1, 8), jnp.int32)
  steps = train.calibrated_steps_per_call(
    slow_chunk, state, [True], None, None, batches, seconds=0.5
  )
  assert 1 <= steps <= 10
  np.testing.assert_array_equal(state["w"], 0)
  assert (
    train.calibrated_steps_per_call(
      slow_chunk, state, [True], None, None, batches[:1], seconds=0.5
    )
    == 1
  )
  assert (
    train.calibrated_steps_per_call(
      slow_chunk, state, [True], None, None, batches[:3], seconds=100
    )
    == 3
  )
