"""Sweep then report, end to end with the real trainer, on a tiny digits grid."""

import json
import os
import re
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_tiny_grid_sweep_then_report_fills_every_cell_and_figure(tmp_path):
  grid = tmp_path / "grid.json"
  grid.write_text(
    json.dumps(
      {
        "config": "configs/default.py",
        "overrides": {
          "num_epochs": 2,
          "eval_every": 2,
          "batch_size": 256,
          "metrics.cluster_quality": True,
          "metrics.tsne_iters": 250,
          "metrics.tsne_examples": 100,
          "metrics.alignment_examples": 32,
        },
      }
    )
  )
  runs, out = tmp_path / "runs", tmp_path / "report"
  sweep = subprocess.run(
    [
      sys.executable,
      "-m",
      "launch.sweep",
      f"--grid={grid}",
      "--seeds=2",
      f"--root={runs}",
      "--gpus=cpu",
      "--runs_per_gpu=2",
    ],
    cwd=ROOT,
    capture_output=True,
    text=True,
    timeout=1200,
    # Both seeds of an experiment compile the same programs: share them.
    env={
      **os.environ,
      "JAX_COMPILATION_CACHE_DIR": str(tmp_path / "jax_cache"),
      "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
    },
  )
  assert sweep.returncode == 0, sweep.stdout[-2000:] + sweep.stderr[-2000:]
  summaries = list(runs.rglob("summary.json"))
  assert len(summaries) == 48

  report = subprocess.run(
    [sys.executable, "-m", "gevb_jax.report", str(runs), f"--out={out}"],
    cwd=ROOT,
    capture_output=True,
    text=True,
    timeout=600,
  )
  assert report.returncode == 0, report.stderr[-2000:]
  table = (out / "table_digits.md").read_text()
  rows = [
    line for line in table.splitlines() if line.startswith(("| FC", "| Conv", "| LC"))
  ]
  assert len(rows) == 3
  for row in rows:
    cells = [c.strip() for c in row.strip("|").split("|")[1:]]
    assert len(cells) == 8
    for cell in cells:  # Every cell: "mean ± std" over both seeds, nothing missing.
      assert re.search(r"\d+\.\d\d ± \d+\.\d\d", cell) and "n=" not in cell, cell
  assert "All 48 runs finished." in table
  figures = {
    "curves_digits.png",
    "cluster_quality_digits.png",
    *(
      f"alignment_digits_{k}_{s}.png"
      for k in ("vectorized", "conventional")
      for s in ("nonneg", "mixed")
    ),
  }
  assert figures <= set(os.listdir(out))
  index = (out / "report.md").read_text()
  for name in figures | {"table_digits.md", "table_digits.tex"}:
    assert f"({name})" in index, name
  # The sweep skips what is finished: a rerun starts nothing.
  again = subprocess.run(
    [
      sys.executable,
      "-m",
      "launch.sweep",
      f"--grid={grid}",
      "--seeds=2",
      f"--root={runs}",
      "--gpus=cpu",
      "--dry-run",
    ],
    cwd=ROOT,
    capture_output=True,
    text=True,
    timeout=120,
  )
  # One job per experiment, its two seeds packed into one process.
  assert "24 jobs (48 runs): 0 pending, 24 done" in again.stdout
  assert sum(line.startswith("done ") for line in again.stdout.splitlines()) == 24
