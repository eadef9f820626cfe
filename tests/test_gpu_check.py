"""benchmarks/gpu_check.py --quick: the GPU session's one command, run small on the CPU,
writes every part's numbers to its JSON (so that the script cannot rot before a GPU
arrives)."""

import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_quick_gpu_check_reports_every_part(tmp_path):
  out = tmp_path / "gpu_check.json"
  done = subprocess.run(
    [sys.executable, "benchmarks/gpu_check.py", "--quick", f"--out={out}"],
    cwd=ROOT,
    env={**os.environ, "PYTHONPATH": ROOT},
    capture_output=True,
    text=True,
    timeout=300,
    check=False,
  )
  assert done.returncode == 0, done.stderr[-2000:]
  report = json.loads(out.read_text())
  parts = report["parts"]
  assert list(parts) == ["device", "throughput", "seeds", "sharing"]
  assert report["quick"] and parts["device"]["backend"] == "cpu"
  assert done.stdout.startswith("# GPU check") and done.stdout.count("\n## ") == 4

  # --only=mnist-fc --rules=gevb,dfa: the vectorized and the conventional FC net.
  throughput = parts["throughput"]
  assert throughput["error"] is None
  assert [(r["model"], r["rule"]) for r in throughput["rows"]] == [
    ("mnist vec fc (K = 10)", "gevb"),
    ("mnist conv. fc (K = 1)", "dfa"),
  ]
  for row in throughput["rows"]:
    assert row["step_ex_s"] > 0 and row["matmul_gflop_s"] > 0
    assert 0 < row["pct_of_matmul"] == 100 * row["gflop_s"] / row["matmul_gflop_s"]

  # 2 seeds in one program, 2 epochs of 64 random examples in batches of 16.
  seeds = parts["seeds"]
  assert seeds["error"] is None and seeds["data"] == "random"
  assert "The data were random" in done.stdout
  assert [s["seed"] for s in seeds["seeds"]] == [0, 1]
  assert all(s["epochs_run"] == 2 and s["examples"] == 2 * 64 for s in seeds["seeds"])
  assert seeds["examples"] == 2 * 2 * 64
  assert seeds["examples_per_s"] > 0 and seeds["train_examples_per_s"] > 0

  # The same 2 digits runs (2 epochs of 11 batches of 128) one and two at a time.
  sharing = parts["sharing"]
  assert sharing["data"] == "digits" and sharing["gpus"] == "cpu"
  assert [s["runs_per_gpu"] for s in sharing["sweeps"]] == [1, 2]
  for sweep in sharing["sweeps"]:
    assert sweep["error"] is None and sweep["runs"] == sweep["finished"] == 2
    assert sweep["examples"] == 2 * 2 * 11 * 128
    assert sweep["wall_s"] > 0 and sweep["examples_per_s"] > 0
    assert sweep["run_train_examples_per_s"] > 0
