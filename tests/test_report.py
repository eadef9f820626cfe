"""Tests for gevb_jax.report on fake run workdirs."""

import json
import pathlib
import shutil
import subprocess
import sys

import numpy as np
import pytest
from matplotlib import figure

from gevb_jax import grid, paper_results, report
from gevb_jax import workdir as run_folder

REPO = pathlib.Path(__file__).resolve().parents[1]
SEEDS = (0, 1)
LAYERS = {
  "fc": ["dense_0", "dense_1"],
  "conv": ["conv_0", "conv_1", "dense_0"],
  "lc": ["lc_0", "lc_1", "dense_0"],
}
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _errors(index, seed):
  """Final (train, test) error fractions written for GRID[index] and seed.

  Test errors grow with the index faster than they vary over seeds, so the
  first GEVB/DFA column is the smallest of its row; even indices get train
  errors averaging 0.0045 %, below the 0.005 % shown in parentheses.
  """
  test = 0.01 * (index + 1) + 0.002 * seed * (index % 3)
  if index % 2 == 0:
    return 0.00004 + 0.00001 * seed, test
  return 0.001 * index + 0.0005 * seed, test


def _workdir(root, experiment, seed, dataset="digits"):
  arch, vectorized, nonneg, rule, code = experiment
  name = f"{arch}_v{vectorized:d}_n{nonneg:d}_{rule}_{code}"
  return root / dataset / name / f"seed_{seed}"


def _write_run(
  root, index, seed, dataset="digits", measurements=True, workdir=None, experiment=None
):
  """Writes a finished run of GRID[index] (or of `experiment`, with GRID[index]'s
  numbers) with known numbers (into `workdir`, if given, instead of the folder
  ``_workdir`` names)."""
  experiment = experiment or grid.GRID[index]
  workdir = workdir or _workdir(root, experiment, seed, dataset)
  workdir.mkdir(parents=True)
  config = {
    "data": {"name": dataset, "source": "fake"},
    "model": {
      "arch": experiment.arch,
      "vectorized": experiment.vectorized,
      "nonneg": experiment.nonneg,
      "widths": None,
      "output_code": experiment.output_code,
    },
    "rule": experiment.rule,
    "seed": seed,
    "num_epochs": 20,
    "eval_every": 10,
  }
  (workdir / "config.json").write_text(json.dumps(config))
  train, test = _errors(index, seed)
  records = []
  for epoch, scale in ((0, 10.0), (10, 3.0), (20, 1.0)):
    record = {
      "epoch": epoch,
      "step": epoch * 10,
      "train_error": train * scale,
      "test_error": test * scale,
      "train_loss": 1.0,
      "test_loss": 1.0,
      "wall_time_s": epoch,
    }
    if measurements and experiment.rule != "bp":
      record["alignment"] = {
        layer: 10.0 * i + epoch + seed
        for i, layer in enumerate(LAYERS.get(experiment.arch, ["dense_0"]))
      }
    records.append(record)
  (workdir / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
  summary = {
    "final_train_error": train,
    "final_test_error": test,
    "epochs_run": 20,
    "stopped_early": False,
  }
  if measurements and experiment.arch != "fc":
    summary["cluster_quality"] = {
      "fig3b_rms": {"init": 0.05, "final": 0.05 + 0.01 * index + 0.01 * seed},
      "section6_squared": {"init": 0.1, "final": 0.2},
    }
  (workdir / "summary.json").write_text(json.dumps(summary))


@pytest.fixture
def root(tmp_path):
  root = tmp_path / "runs"
  for index in range(len(grid.GRID)):
    for seed in SEEDS:
      _write_run(root, index, seed)
  return root


def _expected_cell(index, seeds):
  train, test = 100 * np.array([_errors(index, seed) for seed in seeds]).T
  text = f"{test.mean():.2f} ± {test.std():.2f}"
  if train.mean() >= 0.005:
    text += f" ({train.mean():.2f})"
  return text


def _table_cells(markdown):
  """The 24 data cells of a markdown table, in GRID order."""
  cells = []
  for line in markdown.splitlines():
    fields = [field.strip() for field in line.strip().strip("|").split("|")]
    if fields[0] in ("FC", "Conv", "LC"):
      cells += fields[1:]
  assert len(cells) == len(grid.GRID)
  return cells


def test_collect_runs(root):
  runs = report.collect_runs(root)
  assert len(runs) == len(grid.GRID) * len(SEEDS)
  assert {(r.experiment, r.seed) for r in runs} == {
    (e, s) for e in grid.GRID for s in SEEDS
  }
  assert all(r.finished and len(r.metrics) == 3 for r in runs)


def test_collect_runs_reads_every_sweep_layout(tmp_path):
  """The sweep's run folders, <experiment>/seed_<s> (also below a packed run's
  workdir, which holds its log but no config), and an older sweep's
  <experiment>/seed<N>, are all runs: seeds of their experiments in the grid."""
  root = tmp_path / "runs"
  old, new = (root / "digits" / grid.GRID[i].name for i in (0, 1))
  for seed in SEEDS:
    _write_run(root, 0, seed, workdir=old / f"seed{seed}")
    _write_run(root, 1, seed, workdir=pathlib.Path(run_folder.seed_dir(new, seed)))
  (new / "log.txt").write_text("# the packed run's log\n")
  runs = report.collect_runs(root)
  expected = [(grid.GRID[0], seed, f"seed{seed}") for seed in SEEDS] + [
    (grid.GRID[1], seed, f"seed_{seed}") for seed in SEEDS
  ]
  assert sorted((r.experiment, r.seed, r.workdir.name) for r in runs) == sorted(expected)
  status = report.grid_status(runs, "digits")
  assert status.seeds == list(SEEDS)
  assert not status.unfinished and not status.outside
  assert len(status.missing) == (len(grid.GRID) - 2) * len(SEEDS)
  cells = _table_cells(report.table_markdown(runs, "digits"))
  for index in (0, 1):  # Both seeds in each cell: no ", n=1".
    assert cells[index].replace("**", "") == _expected_cell(index, SEEDS)


def test_collect_runs_ignores_line_being_written(root):
  workdir = _workdir(root, grid.GRID[0], 0)
  with open(workdir / "metrics.jsonl", "a") as f:
    f.write('{"epoch": 30, "train_')
  (run,) = [r for r in report.collect_runs(root) if r.workdir == workdir]
  assert [m["epoch"] for m in run.metrics] == [0, 10, 20]


def test_table_cells(root):
  markdown = report.table_markdown(report.collect_runs(root), "digits")
  cells = _table_cells(markdown)
  for index, cell in enumerate(cells):
    assert cell.replace("**", "") == _expected_cell(index, SEEDS)
  assert sum("(" in cell for cell in cells) == len(cells) // 2
  bold = [index % 8 for index, cell in enumerate(cells) if "**" in cell]
  assert bold == [0, 0, 0]
  assert "All 48 runs finished." in markdown
  assert "paper" not in markdown  # The paper has no digits table.


def test_table_unfinished_and_missing(root):
  workdir = _workdir(root, grid.GRID[5], 1)
  (workdir / "summary.json").unlink()
  for seed in SEEDS:
    shutil.rmtree(_workdir(root, grid.GRID[7], seed))
  markdown = report.table_markdown(report.collect_runs(root), "digits")
  cells = _table_cells(markdown)
  assert cells[5] == _expected_cell(5, [0]) + ", n=1"
  assert cells[7] == "—"
  assert (
    f"1 of 48 runs unfinished (no summary.json): {grid.GRID[5]} seed 1 ({workdir})."
  ) in markdown
  assert (
    f"2 of 48 runs missing: {grid.GRID[7]} seed 0, {grid.GRID[7]} seed 1."
  ) in markdown


def test_table_latex(root):
  latex = report.table_latex(report.collect_runs(root), "digits")
  body = latex.split("\\midrule\n")[1].split("\\bottomrule")[0]
  rows = body.strip().splitlines()
  assert [row.split(" & ")[0] for row in rows] == ["FC", "Conv", "LC"]
  assert all(row.endswith(r" \\") and row.count("&") == 8 for row in rows)
  assert "\\toprule" in latex and "\\textbf{" in latex


def test_rules_and_codes_beyond_the_paper_are_columns_of_the_one_table(root, tmp_path):
  """A run of a rule or output code the paper has no column for adds its column to
  the data set's table, after the paper's columns of its kind and sign, and its
  figures to the report; the paper's columns stay."""
  kp = grid.Experiment("conv", False, False, "kp")
  binary = grid.Experiment("fc", True, True, "gevb", "binary")
  for seed in SEEDS:
    _write_run(root, 30, seed, experiment=kp)
  _write_run(root, 31, 0, experiment=binary)
  runs = report.collect_runs(root)
  assert kp in {run.experiment for run in runs}
  markdown = report.table_markdown(runs, "digits")
  header = next(line for line in markdown.splitlines() if line.startswith("|  |"))
  paper = [str(column) for column in grid.COLUMNS]
  assert header.strip("| ").split(" | ") == [
    *paper[:2],
    "Vectorized Nonneg GEVB binary",
    *paper[2:],
    "Conventional Mixed KP",
  ]
  rows = {
    line.split(" | ")[0].strip("| "): line.strip("| ").split(" | ")[1:]
    for line in markdown.splitlines()
    if line.startswith(("| FC", "| Conv", "| LC"))
  }
  assert rows["Conv"][-1] == _expected_cell(30, SEEDS)
  assert rows["FC"][-1] == rows["LC"][-1] == "—"
  assert rows["FC"][2] == _expected_cell(31, [0]) + ", n=1"
  assert rows["FC"][:2] + rows["FC"][3:-1] == [
    _expected_cell(i, SEEDS) if i != 0 else f"**{_expected_cell(0, SEEDS)}**"
    for i in range(8)
  ]
  # 10 columns x 3 archs x 2 seeds; KP lacks FC and LC, binary all but FC seed 0.
  assert "- 9 of 60 runs missing: " in markdown
  assert paper_results.published("mnist", kp) is None
  latex = report.table_latex(runs, "digits")
  assert r"\multicolumn{5}{c}{Vectorized networks}" in latex
  assert r"\multicolumn{3}{c}{Nonnegative} & \multicolumn{2}{c}{Mixed-sign}" in latex
  assert r"\cmidrule(lr){2-6} \cmidrule(lr){7-11}" in latex
  rules = "GEVB & BP & GEVB (binary) & GEVB & BP & DFA & BP & DFA & BP & KP"
  assert f" & {rules} \\\\\n" in latex
  written = pathlib.Path(report.write_report(runs, tmp_path / "out")).parent
  for name in (
    "alignment_digits_conventional_mixed_kp.png",
    "alignment_digits_vectorized_nonneg_binary.png",
  ):
    assert (written / name).read_bytes().startswith(PNG_MAGIC)


def test_a_net_built_from_a_spec_is_a_row_named_by_its_spec(root, monkeypatch):
  """A layer spec's runs add a row after the paper's architectures, named by the spec
  in the tables and the figures' panels; its missing cells count as missing runs."""
  spec = "conv(4,3),pool(2),flatten,dense(8)"
  experiment = grid.Experiment(spec, True, True, "gevb")
  for seed in SEEDS:
    _write_run(root, 30, seed, experiment=experiment)
  runs = report.collect_runs(root)
  markdown = report.table_markdown(runs, "digits")
  (row,) = [line for line in markdown.splitlines() if line.startswith(f"| {spec} |")]
  cells = row.strip("| ").split(" | ")[1:]
  assert cells == [f"**{_expected_cell(30, SEEDS)}**", *["—"] * 7]
  # 4 rows x 8 columns x 2 seeds, the spec's 7 other columns missing.
  assert f"- 14 of 64 runs missing: {spec} Vectorized Nonneg BP seed 0, " in markdown
  latex = report.table_latex(runs, "digits")
  rows = latex.split("\\midrule\n")[1].split("\\bottomrule")[0].strip().splitlines()
  assert [row.split(" & ")[0] for row in rows] == ["FC", "Conv", "LC", spec]
  saved = []
  monkeypatch.setattr(figure.Figure, "savefig", lambda fig, *_, **__: saved.append(fig))
  assert report.plot_learning_curves(runs, "digits", "curves.png")
  assert report.plot_alignment(runs, "digits", grid.COLUMNS[0], "alignment.png")
  curves, alignment = saved
  assert curves.axes[-2].get_title() == f"{spec}, vectorized networks"
  assert [ax.get_title() for ax in alignment.axes] == ["FC", "Conv", "LC", spec]


def test_alignment_axis_reaches_angles_past_90_degrees(tmp_path, monkeypatch):
  """An update pointing uphill (angle > 90) stays on the figure; otherwise the axis
  ends at 90."""
  runs_dir = tmp_path / "runs"
  for index in (4, 6):  # FC conventional DFA, nonneg and mixed.
    _write_run(runs_dir, index, 0)
  metrics = _workdir(runs_dir, grid.GRID[4], 0) / "metrics.jsonl"
  rows = [json.loads(line) for line in metrics.read_text().splitlines()]
  rows[-1]["alignment"]["dense_1"] = 131.0
  metrics.write_text("".join(json.dumps(row) + "\n" for row in rows))
  saved = []
  monkeypatch.setattr(figure.Figure, "savefig", lambda fig, *_, **__: saved.append(fig))
  runs = report.collect_runs(runs_dir)
  for column in (grid.COLUMNS[4], grid.COLUMNS[6]):
    assert report.plot_alignment(runs, "digits", column, tmp_path / "figure.png")
  assert [fig.axes[0].get_ylim() for fig in saved] == [(0, 135), (0, 90)]


@pytest.mark.parametrize(
  "errors, ylim",
  [
    ((0.895, 0.175, 0.115), (10, 100)),  # Within one decade: no labelled tick before.
    ((0.9, 0.05, 0.02), (1, 100)),
    ((0.9, 0.05, 0.004), (0, 100)),  # Into the linear part below 1 %.
  ],
)
def test_learning_curves_span_whole_decades(tmp_path, monkeypatch, errors, ylim):
  """A panel's error axis runs from the decade below its lowest error (0 below 1 %)
  to 100 %, so that its log scale labels at least two ticks."""
  runs_dir = tmp_path / "runs"
  _write_run(runs_dir, 8, 0)  # Conv, vectorized GEVB+.
  metrics = _workdir(runs_dir, grid.GRID[8], 0) / "metrics.jsonl"
  rows = [json.loads(line) for line in metrics.read_text().splitlines()]
  for row, error in zip(rows, errors, strict=True):
    row["train_error"] = row["test_error"] = error
  metrics.write_text("".join(json.dumps(row) + "\n" for row in rows))
  saved = []
  monkeypatch.setattr(figure.Figure, "savefig", lambda fig, *_, **__: saved.append(fig))
  assert report.plot_learning_curves(report.collect_runs(runs_dir), "digits", "c.png")
  [ax] = saved[0].axes
  assert ax.get_ylim() == ylim
  labelled = [tick for tick in ax.get_yticks() if ylim[0] <= tick <= ylim[1]]
  assert len(labelled) >= 2


def test_a_one_panel_alignment_figure_holds_its_title(tmp_path, monkeypatch):
  """The title over a single architecture's panel stays inside the figure."""
  runs_dir = tmp_path / "runs"
  _write_run(runs_dir, 8, 0)  # Conv, vectorized GEVB+.
  saved = []
  monkeypatch.setattr(figure.Figure, "savefig", lambda fig, *_, **__: saved.append(fig))
  runs = report.collect_runs(runs_dir)
  assert report.plot_alignment(runs, "digits", grid.COLUMNS[0], "alignment.png")
  [fig] = saved
  fig.draw_without_rendering()
  title = fig.get_suptitle()
  assert title.startswith("Digits: GEVB")
  extent = fig._suptitle.get_window_extent()
  assert fig.bbox.x0 <= extent.x0 and extent.x1 <= fig.bbox.x1


def test_plots_skip_without_measurements(tmp_path):
  runs_dir = tmp_path / "runs"
  _write_run(runs_dir, 8, 0, measurements=False)  # Conv, vectorized GEVB+.
  # Fig. 3B plots the notebook's score; the text's alone, or an older run's
  # unnamed one, is not drawn as if it were.
  _write_run(runs_dir, 9, 0)
  summary_path = _workdir(runs_dir, grid.GRID[9], 0) / "summary.json"
  summary = json.loads(summary_path.read_text())
  summary["cluster_quality"] = {"section6_squared": {"init": 0.1, "final": 0.2}}
  summary_path.write_text(json.dumps(summary))
  _write_run(runs_dir, 10, 0)
  summary_path = _workdir(runs_dir, grid.GRID[10], 0) / "summary.json"
  summary["cluster_quality"] = {"init": 0.1, "final": 0.2}
  summary_path.write_text(json.dumps(summary))
  runs = report.collect_runs(runs_dir)
  path = tmp_path / "figure.png"
  assert not report.plot_alignment(runs, "digits", grid.COLUMNS[0], path)
  assert not report.plot_cluster_quality(runs, "digits", path)
  assert not path.exists()
  assert report.plot_learning_curves(runs, "digits", path)
  assert path.read_bytes().startswith(PNG_MAGIC)


def test_cli_writes_every_table_and_figure(root, tmp_path):
  _write_run(root, 0, 0, dataset="mnist", measurements=False)
  _write_run(root, 10, 0, dataset="cifar10")  # Conv vectorized GEVB.
  out = tmp_path / "out"
  subprocess.run(
    [sys.executable, "-m", "gevb_jax.report", str(root), f"--out={out}"],
    cwd=REPO,
    check=True,
    capture_output=True,
  )
  expected = {
    f"{stem}.{ext}"
    for stem in ("table_digits", "table_mnist", "table1", "table_cifar10", "table2")
    for ext in ("md", "tex")
  }
  expected |= {f"curves_{d}.png" for d in ("digits", "mnist", "cifar10")}
  expected |= {
    f"alignment_digits_{kind}_{sign}.png"
    for kind in ("vectorized", "conventional")
    for sign in ("nonneg", "mixed")
  }
  expected |= {
    "alignment_cifar10_vectorized_mixed.png",
    "cluster_quality_digits.png",
    "cluster_quality_cifar10.png",
  }
  written = {path.name for path in out.iterdir()} - {"report.md"}
  assert written == expected
  markdown = (out / "report.md").read_text()
  for name in written:
    assert f"]({name})" in markdown
    if name.endswith(".png"):
      assert (out / name).read_bytes().startswith(PNG_MAGIC)
  assert (out / "table1.md").read_text().startswith("# Table 1: MNIST")
  assert (out / "table2.md").read_text().startswith("# Table 2: CIFAR-10")
  assert "cluster_quality_mnist.png skipped: no finished" in markdown
  assert "alignment_mnist_vectorized_nonneg.png skipped" in markdown
  assert "23 of 24 runs missing" in markdown


@pytest.mark.parametrize("make_dir", [True, False])
def test_cli_without_runs_fails(tmp_path, make_dir):
  root = tmp_path / "empty"
  if make_dir:
    root.mkdir()
    (root / "notes.txt").write_text("no runs here")
  result = subprocess.run(
    [sys.executable, "-m", "gevb_jax.report", str(root), f"--out={tmp_path / 'out'}"],
    cwd=REPO,
    capture_output=True,
    text=True,
  )
  assert result.returncode != 0
  assert result.stderr.strip() == (
    f"No runs (directories with config.json) found under {root}."
  )


def _set_test_error(root, index, dataset, test_percent):
  path = _workdir(root, grid.GRID[index], 0, dataset) / "summary.json"
  summary = json.loads(path.read_text())
  summary["final_test_error"] = test_percent / 100
  path.write_text(json.dumps(summary))


def test_paper_column_and_tolerance_count(tmp_path):
  """Each MNIST/CIFAR-10 cell shows the paper's number and ours − paper; the
  count uses |Δ| <= max(0.2, 5 % of the paper's error)."""
  root = tmp_path / "runs"
  # GRID[0]: FC VNN nonneg GEVB, Table 1: 1.87 (0.06), Table 2: 47.62 (1.25).
  # GRID[21]: LC conventional nonneg BP, Table 1: 1.21, Table 2: 35.51.
  cases = {
    ("mnist", 0): 1.87 + 0.19,
    ("mnist", 21): 1.21 - 0.21,
    ("cifar10", 0): 47.62 + 2.3,
    ("cifar10", 21): 35.51 + 1.8,
  }
  for (dataset, index), test in cases.items():
    _write_run(root, index, 0, dataset=dataset)
    _set_test_error(root, index, dataset, test)
  runs = report.collect_runs(root)
  assert report.paper_agreement(runs, "mnist") == (1, 2)
  assert report.paper_agreement(runs, "cifar10") == (1, 2)  # 5 %: 2.38 and 1.78.
  mnist = _table_cells(report.table_markdown(runs, "mnist"))
  assert mnist[0].endswith("· paper 1.87 (0.06) · Δ +0.19")
  assert mnist[21].endswith("· paper 1.21 · Δ -0.21")
  assert mnist[1] == "— · paper 1.93 (0.05)"  # The paper's number without ours.
  latex = report.table_latex(runs, "cifar10")
  assert r"; paper 47.62 (1.25); $\Delta$ +2.30" in latex
  out = tmp_path / "out"
  markdown = pathlib.Path(report.write_report(runs, out)).read_text()
  assert (
    "1 of 2 cells within tolerance of the paper's Table 1 "
    "(|ours − paper| ≤ max(0.2, 5% of the paper's error) percentage "
    "points)."
  ) in markdown
  assert "1 of 2 cells within tolerance of the paper's Table 2" in markdown
  assert "1 of 2 cells within" in (out / "table1.md").read_text()


def _write_mnist_idx(directory, num_train=64, num_test=32):
  """Small MNIST-shaped idx files (28x28 uint8, every class present)."""
  rng = np.random.default_rng(0)
  directory.mkdir()
  for prefix, n in (("train", num_train), ("t10k", num_test)):
    labels = np.arange(n) % 10
    images = rng.integers(0, 256, (n, 28, 28)).astype(np.uint8)
    images[np.arange(n), labels, :] = 255  # A learnable, label-dependent stripe.
    for kind, array, magic in (
      ("images-idx3", images, 0x803),
      ("labels-idx1", labels.astype(np.uint8), 0x801),
    ):
      header = magic.to_bytes(4, "big") + b"".join(
        d.to_bytes(4, "big") for d in array.shape
      )
      (directory / f"{prefix}-{kind}-ubyte").write_bytes(header + array.tobytes())
  return directory


def test_paper_column_on_mnist_runs_trained_from_idx_files(tmp_path):
  from configs import mnist as mnist_config
  from gevb_jax import train

  idx = _write_mnist_idx(tmp_path / "mnist")
  root = tmp_path / "runs"
  finals = {}
  for vectorized, rule in ((True, "gevb"), (False, "dfa")):
    config = mnist_config.get_config()
    config.data.source, config.data.path = "idx", str(idx)
    config.model.vectorized, config.rule = vectorized, rule
    config.model.widths = (32, 16)
    config.num_epochs, config.eval_every, config.batch_size = 1, 1, 32
    config.progress, config.metrics.alignment_examples = False, 16
    workdir = root / f"fc-{rule}"
    finals[rule] = (
      100 * train.train_and_evaluate(config, str(workdir))["final_test_error"]
    )
  runs = report.collect_runs(root)
  assert {run.dataset for run in runs} == {"mnist"}
  cells = _table_cells(report.table_markdown(runs, "mnist"))
  # GRID[0] is FC VNN nonneg GEVB (paper 1.87), GRID[4] FC conventional nonneg
  # DFA (paper 2.2 (0.3)).
  for index, rule, paper in ((0, "gevb", "1.87 (0.06)"), (4, "dfa", "2.20 (0.30)")):
    ours = finals[rule]
    paper_test = float(paper.split()[0])
    cell = cells[index].replace("**", "")
    assert cell.startswith(f"{ours:.2f} ± 0.00")
    assert cell.endswith(f"· paper {paper} · Δ {ours - paper_test:+.2f}")
  within = sum(
    abs(finals[r] - p) <= max(0.2, 0.05 * p) for r, p in (("gevb", 1.87), ("dfa", 2.2))
  )
  markdown = pathlib.Path(report.write_report(runs, tmp_path / "out")).read_text()
  assert f"{within} of 2 cells within tolerance of the paper's Table 1" in markdown
