"""Tables 1-2 as markdown and LaTeX: mean ± std over seeds per cell, beside the paper's
published numbers on MNIST and CIFAR-10. One table per data set: the paper's eight
columns, then every column beyond the paper (rules, output codes) that a run is in."""

import dataclasses
import itertools
from typing import NamedTuple

import numpy as np

from gevb_jax import grid, paper_results
from gevb_jax.grid import GRID, Experiment, arch_name
from gevb_jax.report.runs import (
  archs_of,
  by_experiment,
  columns_of,
  dataset_name,
  grid_status,
  of_dataset,
)

PAPER_TABLES = paper_results.TABLE_NUMBERS


# Train errors (%) are shown in parentheses from this mean upwards.
TRAIN_ERROR_SHOWN = 0.005


@dataclasses.dataclass(frozen=True)
class _Cell:
  """Final errors (%) of an experiment over its finished seeds."""

  test_mean: float
  test_std: float
  train_mean: float
  num_seeds: int


def _cell(runs):
  finished = [run for run in runs if run.finished]
  if not finished:
    return None
  test = 100 * np.array([r.summary["final_test_error"] for r in finished])
  train = 100 * np.array([r.summary["final_train_error"] for r in finished])
  return _Cell(test.mean(), test.std(), train.mean(), len(finished))


class _Style(NamedTuple):
  missing: str
  pm: str
  bold: str
  paper: str  # Formats the paper's cell after ours,
  delta: str  # and ours minus the paper's.


_MARKDOWN = _Style(
  missing="—", pm="±", bold="**{}**", paper=" · paper {}", delta=" · Δ {:+.2f}"
)


_LATEX = _Style(
  missing="---",
  pm=r"$\pm$",
  bold=r"\textbf{{{}}}",
  paper="; paper {}",
  delta=r"; $\Delta$ {:+.2f}",
)


def _paper_text(paper):
  text = f"{paper.test:.2f}"
  return text + (f" ({paper.train:.2f})" if paper.train is not None else "")


def paper_agreement(runs, dataset):
  """(cells within tolerance of the paper, cells compared), or None for a data
  set the paper has no table for. A cell is compared once a seed finished."""
  if dataset not in PAPER_TABLES:
    return None
  groups = by_experiment(of_dataset(runs, dataset))
  within = compared = 0
  for experiment in GRID:
    cell = _cell(groups.get(experiment, []))
    if cell is None:
      continue
    compared += 1
    within += int(
      paper_results.within_tolerance(
        cell.test_mean, paper_results.published(dataset, experiment).test
      )
    )
  return within, compared


def agreement_lines(runs, dataset):
  """The markdown line saying how many cells reproduce the paper's (or none)."""
  counts = paper_agreement(runs, dataset)
  if counts is None:
    return []
  within, compared = counts
  return [
    f"- {within} of {compared} cells within tolerance of the paper's Table "
    f"{PAPER_TABLES[dataset]} (|ours − paper| ≤ max("
    f"{paper_results.TOLERANCE_POINTS}, "
    f"{paper_results.TOLERANCE_RELATIVE:.0%} of the paper's error) "
    "percentage points)."
  ]


def _table_rows(runs, dataset, columns, style, archs):
  """Formatted cells, one row per architecture of ``archs``, one per ``columns``.

  A cell reads "test mean ± std (train mean)", the smallest test error of a row
  among the rules other than BP is bold, and "n=..." flags cells with fewer
  finished seeds than the dataset has seeds. On MNIST and CIFAR-10 the paper's
  cell and the difference (ours − paper, percentage points) follow.
  """
  groups = by_experiment(of_dataset(runs, dataset))
  num_seeds = len(grid_status(runs, dataset).seeds)
  rows = []
  for arch in archs:
    cells = [_cell(groups.get(Experiment(arch, *column), [])) for column in columns]
    approx = [
      cell.test_mean
      for cell, column in zip(cells, columns)
      if cell is not None and column.rule != "bp"
    ]
    row = []
    for cell, column in zip(cells, columns):
      paper = paper_results.published(dataset, Experiment(arch, *column))
      published = "" if paper is None else style.paper.format(_paper_text(paper))
      if cell is None:
        row.append(style.missing + published)
        continue
      text = f"{cell.test_mean:.2f} {style.pm} {cell.test_std:.2f}"
      if cell.train_mean >= TRAIN_ERROR_SHOWN:
        text += f" ({cell.train_mean:.2f})"
      if column.rule != "bp" and cell.test_mean == min(approx):
        text = style.bold.format(text)
      if cell.num_seeds < num_seeds:
        text += f", n={cell.num_seeds}"
      if paper is not None:
        text += published + style.delta.format(cell.test_mean - paper.test)
      row.append(text)
    rows.append(row)
  return rows


def _title(dataset):
  number = PAPER_TABLES.get(dataset)
  prefix = f"Table {number}: " if number else ""
  return f"{prefix}{dataset_name(dataset)} test errors (%)"


def caption_markdown(runs, dataset):
  """The line under a markdown table's title: what its cells show."""
  num_seeds = len(grid_status(runs, dataset).seeds)
  return (
    f"Final test error (%), mean ± std over {num_seeds} seeds; "
    f"train error (%) in parentheses when ≥ {TRAIN_ERROR_SHOWN}. "
    "Bold: the smallest test error of each row among the rules other than BP. "
    "n=…: fewer finished seeds. —: no finished run."
    + (
      " paper: the published mean test (train) error over 5 seeds; Δ: ours − paper."
      if dataset in PAPER_TABLES
      else ""
    )
  )


def grid_markdown(runs, dataset, columns, archs=None):
  """The markdown table alone, without title or footer: a row per architecture of
  ``archs`` (None: ``archs_of`` the data set's runs, each named by ``grid.arch_name``),
  a column per ``columns`` (``grid.Column``s), cells as in Tables 1-2."""
  if archs is None:
    archs = archs_of(of_dataset(runs, dataset))
  header = ["", *map(str, columns)]
  rows = _table_rows(runs, dataset, columns, _MARKDOWN, archs)
  return [
    "| " + " | ".join(header) + " |",
    "|" + "---|" * len(header),
    *(
      "| " + " | ".join([arch_name(arch), *row]) + " |" for arch, row in zip(archs, rows)
    ),
  ]


def table_markdown(runs, dataset):
  """Table 1/2 of the paper for one dataset, as markdown with a footer."""
  status = grid_status(runs, dataset)
  columns = columns_of(of_dataset(runs, dataset))
  lines = [
    f"# {_title(dataset)}",
    "",
    caption_markdown(runs, dataset),
    "",
    *grid_markdown(runs, dataset, columns),
    "",
    *(f"- {line}" for line in status.lines()),
    *agreement_lines(runs, dataset),
  ]
  return "\n".join(lines) + "\n"


def _latex_groups(columns, key, name):
  """A header row spanning each run of consecutive ``columns`` with the same
  ``key`` (titled ``name(key)``), and the line of ``\\cmidrule``s under it. LaTeX
  column 1 holds the row names."""
  cells, rules, first = [], [], 2
  for value, group in itertools.groupby(columns, key):
    last = first + len(list(group)) - 1
    cells.append(f"\\multicolumn{{{last - first + 1}}}{{c}}{{{name(value)}}}")
    rules.append(f"\\cmidrule(lr){{{first}-{last}}}")
    first = last + 1
  return " & " + " & ".join(cells) + r" \\", " ".join(rules)


def _latex_rule(column):
  """A column's rule, and its output code when that is not the paper's."""
  text = column.rule.upper()
  if column.output_code != grid.OUTPUT_CODES[0]:
    text += f" ({column.output_code})"
  return text


def table_latex(runs, dataset):
  """Table 1/2 of the paper for one dataset, as a booktabs LaTeX table."""
  status = grid_status(runs, dataset)
  columns = columns_of(of_dataset(runs, dataset))
  archs = archs_of(of_dataset(runs, dataset))
  caption = (
    _title(dataset).replace("%", r"\%")
    + f". Train errors in parentheses when $\\geq {TRAIN_ERROR_SHOWN}$. "
    f"Mean $\\pm$ std over {len(status.seeds)} seeds"
  )
  if status.missing:
    caption += f"; {len(status.missing)} of {status.total} runs missing"
  if status.unfinished:
    caption += f"; {len(status.unfinished)} unfinished"
  if dataset in PAPER_TABLES:
    caption += (
      ". Paper: the published mean test (train) error; "
      r"$\Delta$: ours $-$ paper"
    )
  kinds, kind_rules = _latex_groups(
    columns, lambda c: c.kind, lambda kind: f"{kind.capitalize()} networks"
  )
  signs, sign_rules = _latex_groups(
    columns,
    lambda c: (c.kind, c.nonneg),
    lambda value: "Nonnegative" if value[1] else "Mixed-sign",
  )
  lines = [
    r"% Generated by gevb_jax.report; needs \usepackage{booktabs}.",
    *(f"% {line}" for line in status.lines()),
    r"\begin{table}",
    r"\centering",
    f"\\caption{{{caption}.}}",
    r"\begin{tabular}{l" + "c" * len(columns) + "}",
    r"\toprule",
    kinds,
    kind_rules,
    signs,
    sign_rules,
    " & " + " & ".join(_latex_rule(c) for c in columns) + r" \\",
    r"\midrule",
    *(
      f"{arch_name(arch)} & " + " & ".join(row) + r" \\"
      for arch, row in zip(archs, _table_rows(runs, dataset, columns, _LATEX, archs))
    ),
    r"\bottomrule",
    r"\end{tabular}",
    r"\end{table}",
  ]
  return "\n".join(lines) + "\n"


def width_markdown(results):
  """The table of ``alignment_vs_width``'s results ``{n: {layer: {"measured",
  "eq15"}}}``: mean ± std over seeds of each angle (°)."""
  layers = list(next(iter(results.values())))
  head = " | ".join(f"{name} measured | {name} Eq. 15" for name in layers)
  lines = [f"| width n | {head} |", "|---:|" + "---:|" * (2 * len(layers))]
  for n, per_layer in results.items():
    cells = []
    for name in layers:
      for key in ("measured", "eq15"):
        v = np.asarray(per_layer[name][key])
        cells.append(f"{v.mean():.2f} ± {v.std():.2f}")
    lines.append(f"| {n} | " + " | ".join(cells) + " |")
  return "\n".join(lines) + "\n"
