"""The run folder: the one reader of metrics.jsonl, and how the report meets damage."""

import json
import subprocess
import sys

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
def test_a_damaged_line_before_good_rows_is_an_error_naming_file_and_line(
  tmp_path, garbage
):
  """Reading on past it would drop the rows after it without a word."""
  rows = [json.dumps(row) for row in ROWS]
  _write_metrics(tmp_path, "\n".join([rows[0], garbage, *rows[1:]]) + "\n")
  with pytest.raises(workdir.WorkdirError, match=rf"{workdir.METRICS}:2: "):
    workdir.read_metrics(tmp_path)


def test_report_names_the_damaged_file_in_one_line(tmp_path):
  run = tmp_path / "runs" / "a"
  _write_metrics(run, "GARBAGE\n")
  (run / workdir.CONFIG).write_text("{}")
  result = subprocess.run(
    [
      sys.executable,
      "-m",
      "gevb_jax.report",
      str(tmp_path / "runs"),
      f"--out={tmp_path / 'out'}",
    ],
    capture_output=True,
    text=True,
    check=False,
  )
  assert result.returncode != 0
  assert result.stderr.strip() == (
    f"report: {run / workdir.METRICS}:1: not a metrics row: 'GARBAGE'"
  )


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
