"""Run collection: every run folder below a root, grouped by data set and experiment, the
columns a data set's table shows, and how the runs cover them."""

import collections
import dataclasses
import os
import pathlib
import sys
from typing import Any

from gevb_jax import grid
from gevb_jax import workdir as run_folder
from gevb_jax.grid import Experiment

DATASET_NAMES = {
  "mnist": "MNIST",
  "cifar10": "CIFAR-10",
  "cifar100": "CIFAR-100",
  "fashion_mnist": "Fashion-MNIST",
  "digits": "Digits",
}

# What gevb_jax.alignment_vs_width writes into its --out folder (not a run folder).
WIDTH_FILE = "alignment_vs_width.json"


@dataclasses.dataclass(frozen=True)
class Run:
  """A run workdir: its config, evaluations and (once finished) summary."""

  workdir: pathlib.Path
  config: dict[str, Any]
  metrics: list[dict[str, Any]]
  summary: dict[str, Any] | None

  @property
  def dataset(self):
    return self.config["data"]["name"]

  @property
  def experiment(self):
    model = self.config["model"]
    return Experiment(
      model["arch"],
      bool(model["vectorized"]),
      bool(model["nonneg"]),
      self.config["rule"],
      # Runs from before the output codes had one-hot outputs.
      model.get("output_code", grid.OUTPUT_CODES[0]),
    )

  @property
  def seed(self):
    return self.config["seed"]

  @property
  def finished(self):
    return self.summary is not None

  def __str__(self):
    return f"{self.experiment} seed {self.seed}"


def _read_run(workdir):
  """The run in ``workdir``; ``WorkdirError`` naming the file when its config or
  summary cannot be read as a run's (a damaged metrics line is only skipped)."""
  run = Run(
    workdir=workdir,
    config=run_folder.read_config(workdir),
    metrics=run_folder.read_metrics(workdir),
    summary=run_folder.read_summary(workdir),
  )
  try:
    _ = run.dataset, run.experiment, int(run.seed)
  except (KeyError, TypeError, ValueError) as err:
    raise run_folder.WorkdirError(
      f"{workdir / run_folder.CONFIG}: not a run's config ({type(err).__name__}: {err})"
    ) from None
  if run.summary is not None and not all(
    isinstance(run.summary.get(key), (int, float))
    for key in ("final_test_error", "final_train_error")
  ):
    raise run_folder.WorkdirError(
      f"{workdir / run_folder.SUMMARY}: no final_test_error and final_train_error"
    )
  return run


def collect_runs(root):
  """Loads every run workdir (a directory with config.json) below root. A damaged
  one is named on stderr and skipped; the others are reported."""
  runs = []
  for dirpath, dirnames, filenames in os.walk(root):
    dirnames.sort()
    if run_folder.CONFIG not in filenames:
      continue
    dirnames.clear()  # A run's own subdirectories (checkpoints) hold no runs.
    try:
      runs.append(_read_run(pathlib.Path(dirpath)))
    except run_folder.WorkdirError as err:
      print(f"report: skipped a damaged run: {err}", file=sys.stderr)
  return runs


def dataset_name(dataset):
  return DATASET_NAMES.get(dataset, dataset)


def by_experiment(runs):
  groups = collections.defaultdict(list)
  for run in runs:
    groups[run.experiment].append(run)
  return groups


def of_dataset(runs, dataset):
  return [run for run in runs if run.dataset == dataset]


def columns_of(runs):
  """The columns of a table of ``runs``: the paper's eight (``grid.COLUMNS``), and
  every other column of ``grid.ALL_COLUMNS`` (rules and output codes beyond the
  paper) that a run is in, in ``ALL_COLUMNS`` order."""
  present = {run.experiment.column for run in runs}
  return [c for c in grid.ALL_COLUMNS if c.is_paper or c in present]


def archs_of(runs):
  """The rows of a table of ``runs``: the paper's architectures (``grid.ARCHS``), then
  every other (a layer spec) that a run has, in the order the runs come."""
  others = (run.experiment.arch for run in runs)
  return [*grid.ARCHS, *dict.fromkeys(a for a in others if a not in grid.ARCHS)]


def table_experiments(runs):
  """Every experiment of a table of ``runs``: each of ``archs_of(runs)`` in each of
  ``columns_of(runs)``."""
  columns = columns_of(runs)
  return [Experiment(arch, *column) for arch in archs_of(runs) for column in columns]


@dataclasses.dataclass(frozen=True)
class GridStatus:
  """How a dataset's runs cover its table's experiments x seeds seen."""

  seeds: list[int]
  experiments: list[Experiment]
  missing: list[str]
  unfinished: list[Run]
  outside: list[Run]

  @property
  def total(self):
    return len(self.experiments) * len(self.seeds)

  def lines(self):
    """One line per kind of gap, each listing the runs concerned."""
    lines = []
    if self.missing:
      lines.append(
        f"{len(self.missing)} of {self.total} runs missing: "
        + ", ".join(self.missing)
        + "."
      )
    if self.unfinished:
      lines.append(
        f"{len(self.unfinished)} of {self.total} runs unfinished "
        "(no summary.json): "
        + ", ".join(f"{r} ({r.workdir})" for r in self.unfinished)
        + "."
      )
    if self.outside:
      lines.append(
        f"{len(self.outside)} runs outside the table layout: "
        + ", ".join(f"{r} ({r.workdir})" for r in self.outside)
        + "."
      )
    return lines or [f"All {self.total} runs finished."]


def grid_status(runs, dataset):
  """Missing, unfinished and off-grid runs of a dataset: its table's experiments
  (``table_experiments``) are expected for every seed any of its runs has."""
  runs = of_dataset(runs, dataset)
  experiments = table_experiments(runs)
  seeds = sorted({run.seed for run in runs})
  present = {(run.experiment, run.seed) for run in runs}
  return GridStatus(
    seeds=seeds,
    experiments=experiments,
    missing=[
      f"{experiment} seed {seed}"
      for experiment in experiments
      for seed in seeds
      if (experiment, seed) not in present
    ],
    unfinished=[
      run for run in runs if run.experiment in experiments and not run.finished
    ],
    outside=[run for run in runs if run.experiment not in experiments],
  )
