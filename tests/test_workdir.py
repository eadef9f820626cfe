"""The run folder: the one reader of metrics.jsonl, and how the report meets damage."""

import json

import pytest

from configs import default as default_config
from gevb_jax import workdir

ROWS = [{"epoch": e, "test_error": 0.5 / (e + 1)} for e in (0, 2, 4)]


def _write_metrics(path, text):
  path.mkdir(parents=True, exist_ok=True)
  (path / workdir.METRICS).write_text(text)


def test_rows_in_order_and_a_line_cut_by_a_kill_is_left_out(tmp_path):
  lines = "".join(json.dumps(row) + "\n" for row in ROWS)
  _write_metrics(tmp_path, lines + '{"epoch": 6, "test_er')
  assert workdir.read_metrics(tmp_path) == ROWS
  assert workdir.read_metrics(tmp_path, last_epoch=2) == ROWS[:2]
  assert workdir.read_metrics(tmp_path / "nothing") == []


@pytest.mark.parametrize("garbage", ["GARBAGE", "[1, 2]", '{"test_error": 0.1}'])
def test_a_damaged_line_is_skipped_naming_file_and_line_and_later_rows_kept(
  tmp_path, garbage, caplog
):
  rows = [json.dumps(row) for row in ROWS]
  _write_metrics(tmp_path, "\n".join([rows[0], garbage, *rows[1:]]) + "\n")
  assert workdir.read_metrics(tmp_path) == ROWS
  assert f"{workdir.METRICS}:2: skipped" in caplog.text


def test_data_locations_are_not_part_of_a_runs_identity(tmp_path):
  config = default_config.get_config()
  recorded = json.loads(config.to_json())
  del recorded["data"]["cache_dir"], recorded["data"]["mirror"]  # An older run.
  (tmp_path / workdir.CONFIG).write_text(json.dumps(recorded))
  assert workdir.config_changes(config, str(tmp_path)) == []
  config.data.cache_dir, config.data.mirror = "/elsewhere", "http://mirror.example"
  assert workdir.config_changes(config, str(tmp_path)) == []
  config.data.name = "mnist"
  assert workdir.config_changes(config, str(tmp_path)) == [
    "data.name: 'digits' -> 'mnist'"
  ]


@pytest.mark.parametrize(
  "arch,vectorized,nonneg,recorded",
  [
    ("conv", False, True, "channels"),
    ("lc", False, True, "channels"),
    ("conv", True, True, "released"),
    ("conv", False, False, "released"),
    ("fc", False, True, "released"),
  ],
)
def test_runs_from_before_the_released_flatten_pairing_keep_the_channel_pairing(
  tmp_path, arch, vectorized, nonneg, recorded
):
  """A conventional nonnegative conv/LC run begun before model.flatten_pairing existed
  paired ON/OFF channels: it is that run, not one of today's default. Other nets
  pair channels under either value, so theirs is today's default."""
  config = default_config.get_config()
  config.model.arch, config.model.vectorized = arch, vectorized
  config.model.nonneg = nonneg
  old = json.loads(config.to_json())
  del old["model"]["flatten_pairing"]  # A run from before issue 20.
  (tmp_path / workdir.CONFIG).write_text(json.dumps(old))
  changes = workdir.config_changes(config, str(tmp_path))
  if recorded == "released":
    assert changes == []
  else:
    assert changes == ["model.flatten_pairing: 'channels' -> 'released'"]
    config.model.flatten_pairing = "channels"
    assert workdir.config_changes(config, str(tmp_path)) == []


def test_tensorboard_is_rebuilt_from_rows_with_a_layers_nan(tmp_path):
  """A NaN in a per-layer dict (relative_std of a layer with no active unit) is null
  in metrics.jsonl; rebuilding TensorBoard from it on resume once crashed the run."""
  row = {"epoch": 0, "step": 0, "test_error": 0.5, "relative_std": {"a": None, "b": 1.5}}
  _write_metrics(tmp_path, json.dumps(row) + "\n")
  writer = workdir.MetricWriter(str(tmp_path), workdir.read_metrics(tmp_path))
  writer.write({**row, "epoch": 1, "step": 10})
  writer.close()
  assert workdir.read_metrics(tmp_path) == [row, {**row, "epoch": 1, "step": 10}]
