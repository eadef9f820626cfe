"""Tables 1-2 and Figures 2-5 of the paper from a tree of run workdirs.

Usage:
  python -m gevb_jax.report ROOT --out=DIR

Every directory below ROOT holding a `config.json` is a run workdir, with
`metrics.jsonl` (one evaluation per line) and, once finished, `summary.json`.
Runs are grouped by dataset (`config.data.name`) and experiment (architecture,
vectorized, nonneg, rule) over seeds. For each dataset DIR receives

  table_<dataset>.md, table_<dataset>.tex   test (train) errors, Tables 1-2
  curves_<dataset>.png                      learning curves, Figs. 4-5
  alignment_<dataset>_<kind>_<sign>.png     alignment angles, Fig. 2
  cluster_quality_<dataset>.png             change in cluster quality, Fig. 3B

plus table1.* (MNIST) and table2.* (CIFAR-10) and a `report.md` linking them.
On MNIST and CIFAR-10 every table cell also shows the paper's published number
and the difference, and report.md says how many cells fall within the tolerance
documented in `gevb_jax.paper_results`. Standard deviations over seeds are
population ones (ddof=0).
"""

import collections
from collections.abc import Callable, Iterable, Sequence
import dataclasses
import functools
import json
import os
import pathlib
import sys
from typing import Any, NamedTuple

from absl import app
from absl import flags
import matplotlib
from matplotlib import figure
import numpy as np

from gevb_jax import paper_results
from gevb_jax.models import ARCHS

_OUT = flags.DEFINE_string(
    'out', None, 'Directory to write the tables, figures and report.md into.')

ARCH_NAMES = {'fc': 'FC', 'conv': 'Conv', 'lc': 'LC'}
# Table columns in the paper's order: (vectorized, nonneg, rule).
COLUMNS = (
    (True, True, 'gevb'), (True, True, 'bp'),
    (True, False, 'gevb'), (True, False, 'bp'),
    (False, True, 'dfa'), (False, True, 'bp'),
    (False, False, 'dfa'), (False, False, 'bp'),
)
# The rule compared with BP in each kind of network: GEVB in vectorized
# networks, DFA in conventional ones.
APPROX_RULE = {True: 'gevb', False: 'dfa'}
PAPER_TABLES = paper_results.TABLE_NUMBERS
DATASET_NAMES = {
    'mnist': 'MNIST', 'cifar10': 'CIFAR-10',
    'fashion_mnist': 'Fashion-MNIST', 'digits': 'Digits',
}
# The cluster-quality score of Fig. 3B in summary.json (train.cluster_quality).
FIG3B_SCORE = 'fig3b_rms'
# Train errors (%) are shown in parentheses from this mean upwards.
TRAIN_ERROR_SHOWN = 0.005


class Experiment(NamedTuple):
  """One cell of Tables 1-2: an architecture trained by one rule."""
  arch: str
  vectorized: bool
  nonneg: bool
  rule: str

  @property
  def label(self) -> str:
    """The rule as in Figs. 4-5, with "+" for nonnegative networks."""
    return self.rule.upper() + ('+' if self.nonneg else '')

  @property
  def is_vnn_gevb(self) -> bool:
    """Whether this is GEVB in a vectorized nonnegative network."""
    return self.vectorized and self.nonneg and self.rule == 'gevb'

  def __str__(self) -> str:
    kind = 'Vectorized' if self.vectorized else 'Conventional'
    sign = 'Nonneg' if self.nonneg else 'Mixed'
    return f'{ARCH_NAMES[self.arch]} {kind} {sign} {self.rule.upper()}'


GRID = tuple(Experiment(arch, *column) for arch in ARCHS for column in COLUMNS)


@dataclasses.dataclass(frozen=True)
class Run:
  """A run workdir: its config, evaluations and (once finished) summary."""
  workdir: pathlib.Path
  config: dict[str, Any]
  metrics: list[dict[str, Any]]
  summary: dict[str, Any] | None

  @property
  def dataset(self) -> str:
    return self.config['data']['name']

  @property
  def experiment(self) -> Experiment:
    model = self.config['model']
    return Experiment(model['arch'], bool(model['vectorized']),
                      bool(model['nonneg']), self.config['rule'])

  @property
  def seed(self) -> int:
    return self.config['seed']

  @property
  def finished(self) -> bool:
    return self.summary is not None

  def __str__(self) -> str:
    return f'{self.experiment} seed {self.seed}'


def _read_metrics(path: pathlib.Path) -> list[dict[str, Any]]:
  """Parses metrics.jsonl, ignoring a last line still being written."""
  if not path.exists():
    return []
  complete_lines = path.read_text().split('\n')[:-1]
  return [json.loads(line) for line in complete_lines if line.strip()]


def collect_runs(root: str | os.PathLike[str]) -> list[Run]:
  """Loads every run workdir (a directory with config.json) below root."""
  runs = []
  for dirpath, dirnames, filenames in os.walk(root):
    dirnames.sort()
    if 'config.json' not in filenames:
      continue
    dirnames.clear()  # A run's own subdirectories (checkpoints) hold no runs.
    workdir = pathlib.Path(dirpath)
    summary_path = workdir / 'summary.json'
    runs.append(Run(
        workdir=workdir,
        config=json.loads((workdir / 'config.json').read_text()),
        metrics=_read_metrics(workdir / 'metrics.jsonl'),
        summary=(json.loads(summary_path.read_text())
                 if summary_path.exists() else None)))
  return runs


def _dataset_name(dataset: str) -> str:
  return DATASET_NAMES.get(dataset, dataset)


def _by_experiment(runs: Iterable[Run]) -> dict[Experiment, list[Run]]:
  groups = collections.defaultdict(list)
  for run in runs:
    groups[run.experiment].append(run)
  return groups


def _of_dataset(runs: Iterable[Run], dataset: str) -> list[Run]:
  return [run for run in runs if run.dataset == dataset]


@dataclasses.dataclass(frozen=True)
class GridStatus:
  """How a dataset's runs cover the grid of GRID experiments x seeds seen."""
  seeds: list[int]
  missing: list[str]
  unfinished: list[Run]
  outside: list[Run]

  @property
  def total(self) -> int:
    return len(GRID) * len(self.seeds)

  def lines(self) -> list[str]:
    """One line per kind of gap, each listing the runs concerned."""
    lines = []
    if self.missing:
      lines.append(f'{len(self.missing)} of {self.total} runs missing: '
                   + ', '.join(self.missing) + '.')
    if self.unfinished:
      lines.append(f'{len(self.unfinished)} of {self.total} runs unfinished '
                   '(no summary.json): '
                   + ', '.join(f'{r} ({r.workdir})' for r in self.unfinished)
                   + '.')
    if self.outside:
      lines.append(f'{len(self.outside)} runs outside the table layout: '
                   + ', '.join(f'{r} ({r.workdir})' for r in self.outside)
                   + '.')
    return lines or [f'All {self.total} runs finished.']


def grid_status(runs: Sequence[Run], dataset: str) -> GridStatus:
  """Missing, unfinished and off-grid runs of a dataset."""
  runs = _of_dataset(runs, dataset)
  seeds = sorted({run.seed for run in runs})
  present = {(run.experiment, run.seed) for run in runs}
  return GridStatus(
      seeds=seeds,
      missing=[f'{experiment} seed {seed}' for experiment in GRID
               for seed in seeds if (experiment, seed) not in present],
      unfinished=[run for run in runs
                  if run.experiment in GRID and not run.finished],
      outside=[run for run in runs if run.experiment not in GRID])


@dataclasses.dataclass(frozen=True)
class _Cell:
  """Final errors (%) of an experiment over its finished seeds."""
  test_mean: float
  test_std: float
  train_mean: float
  num_seeds: int


def _cell(runs: Sequence[Run]) -> _Cell | None:
  finished = [run for run in runs if run.finished]
  if not finished:
    return None
  test = 100 * np.array([r.summary['final_test_error'] for r in finished])
  train = 100 * np.array([r.summary['final_train_error'] for r in finished])
  return _Cell(test.mean(), test.std(), train.mean(), len(finished))


class _Style(NamedTuple):
  missing: str
  pm: str
  bold: str
  paper: str  # Formats the paper's cell after ours,
  delta: str  # and ours minus the paper's.


_MARKDOWN = _Style(missing='—', pm='±', bold='**{}**', paper=' · paper {}',
                   delta=' · Δ {:+.2f}')
_LATEX = _Style(missing='---', pm=r'$\pm$', bold=r'\textbf{{{}}}',
                paper='; paper {}', delta=r'; $\Delta$ {:+.2f}')


def _paper_cell(dataset: str,
                experiment: Experiment) -> paper_results.PaperCell | None:
  return paper_results.published(dataset, *experiment)


def _paper_text(paper: paper_results.PaperCell) -> str:
  text = f'{paper.test:.2f}'
  return text + (f' ({paper.train:.2f})' if paper.train is not None else '')


def paper_agreement(runs: Sequence[Run], dataset: str) -> tuple[int, int] | None:
  """(cells within tolerance of the paper, cells compared), or None for a data
  set the paper has no table for. A cell is compared once a seed finished."""
  if dataset not in PAPER_TABLES:
    return None
  groups = _by_experiment(_of_dataset(runs, dataset))
  within = compared = 0
  for experiment in GRID:
    cell = _cell(groups.get(experiment, []))
    if cell is None:
      continue
    compared += 1
    within += int(paper_results.within_tolerance(
        cell.test_mean, _paper_cell(dataset, experiment).test))
  return within, compared


def _agreement_lines(runs: Sequence[Run], dataset: str) -> list[str]:
  """The markdown line saying how many cells reproduce the paper's (or none)."""
  counts = paper_agreement(runs, dataset)
  if counts is None:
    return []
  within, compared = counts
  return [f'- {within} of {compared} cells within tolerance of the paper\'s Table '
          f'{PAPER_TABLES[dataset]} (|ours − paper| ≤ max('
          f'{paper_results.TOLERANCE_POINTS}, '
          f'{paper_results.TOLERANCE_RELATIVE:.0%} of the paper\'s error) '
          'percentage points).']


def _table_rows(runs: Sequence[Run], dataset: str,
                style: _Style) -> list[list[str]]:
  """Formatted cells, one row per architecture, one column per COLUMNS.

  A cell reads "test mean ± std (train mean)", the smallest GEVB or DFA test
  error of a row is bold, and "n=..." flags cells with fewer finished seeds
  than the dataset has seeds. On MNIST and CIFAR-10 the paper's cell and the
  difference (ours − paper, percentage points) follow.
  """
  groups = _by_experiment(_of_dataset(runs, dataset))
  num_seeds = len(grid_status(runs, dataset).seeds)
  rows = []
  for arch in ARCHS:
    cells = [_cell(groups.get(Experiment(arch, *column), []))
             for column in COLUMNS]
    approx = [cell.test_mean for cell, (_, _, rule) in zip(cells, COLUMNS)
              if cell is not None and rule != 'bp']
    row = []
    for cell, column in zip(cells, COLUMNS):
      paper = _paper_cell(dataset, Experiment(arch, *column))
      published = '' if paper is None else style.paper.format(_paper_text(paper))
      if cell is None:
        row.append(style.missing + published)
        continue
      text = f'{cell.test_mean:.2f} {style.pm} {cell.test_std:.2f}'
      if cell.train_mean >= TRAIN_ERROR_SHOWN:
        text += f' ({cell.train_mean:.2f})'
      if column[2] != 'bp' and cell.test_mean == min(approx):
        text = style.bold.format(text)
      if cell.num_seeds < num_seeds:
        text += f', n={cell.num_seeds}'
      if paper is not None:
        text += published + style.delta.format(cell.test_mean - paper.test)
      row.append(text)
    rows.append(row)
  return rows


def _title(dataset: str) -> str:
  number = PAPER_TABLES.get(dataset)
  prefix = f'Table {number}: ' if number else ''
  return f'{prefix}{_dataset_name(dataset)} test errors (%)'


def table_markdown(runs: Sequence[Run], dataset: str) -> str:
  """Table 1/2 of the paper for one dataset, as markdown with a footer."""
  status = grid_status(runs, dataset)
  header = ['', *(str(Experiment('fc', *c)).removeprefix('FC ')
                  for c in COLUMNS)]
  body = [[ARCH_NAMES[arch], *row] for arch, row in
          zip(ARCHS, _table_rows(runs, dataset, _MARKDOWN))]
  lines = [
      f'# {_title(dataset)}',
      '',
      f'Final test error (%), mean ± std over {len(status.seeds)} seeds; '
      f'train error (%) in parentheses when ≥ {TRAIN_ERROR_SHOWN}. '
      'Bold: the smallest GEVB or DFA test error of each row. '
      'n=…: fewer finished seeds. —: no finished run.'
      + (' paper: the published mean test (train) error over 5 seeds; '
         'Δ: ours − paper.' if dataset in PAPER_TABLES else ''),
      '',
      '| ' + ' | '.join(header) + ' |',
      '|' + '---|' * len(header),
      *('| ' + ' | '.join(row) + ' |' for row in body),
      '',
      *(f'- {line}' for line in status.lines()),
      *_agreement_lines(runs, dataset),
  ]
  return '\n'.join(lines) + '\n'


def table_latex(runs: Sequence[Run], dataset: str) -> str:
  """Table 1/2 of the paper for one dataset, as a booktabs LaTeX table."""
  status = grid_status(runs, dataset)
  caption = (
      _title(dataset).replace('%', r'\%')
      + f'. Train errors in parentheses when $\\geq {TRAIN_ERROR_SHOWN}$. '
      f'Mean $\\pm$ std over {len(status.seeds)} seeds')
  if status.missing:
    caption += f'; {len(status.missing)} of {status.total} runs missing'
  if status.unfinished:
    caption += f'; {len(status.unfinished)} unfinished'
  if dataset in PAPER_TABLES:
    caption += ('. Paper: the published mean test (train) error; '
                r'$\Delta$: ours $-$ paper')
  sign_groups = ' & '.join([r'\multicolumn{2}{c}{Nonnegative} & '
                            r'\multicolumn{2}{c}{Mixed-sign}'] * 2)
  lines = [
      r'% Generated by gevb_jax.report; needs \usepackage{booktabs}.',
      *(f'% {line}' for line in status.lines()),
      r'\begin{table}',
      r'\centering',
      f'\\caption{{{caption}.}}',
      r'\begin{tabular}{l' + 'c' * len(COLUMNS) + '}',
      r'\toprule',
      r' & \multicolumn{4}{c}{Vectorized networks}'
      r' & \multicolumn{4}{c}{Conventional networks} \\',
      r'\cmidrule(lr){2-5} \cmidrule(lr){6-9}',
      f' & {sign_groups} \\\\',
      r'\cmidrule(lr){2-3} \cmidrule(lr){4-5} \cmidrule(lr){6-7} '
      r'\cmidrule(lr){8-9}',
      ' & ' + ' & '.join(rule.upper() for _, _, rule in COLUMNS) + r' \\',
      r'\midrule',
      *(f'{ARCH_NAMES[arch]} & ' + ' & '.join(row) + r' \\'
        for arch, row in zip(ARCHS, _table_rows(runs, dataset, _LATEX))),
      r'\bottomrule',
      r'\end{tabular}',
      r'\end{table}',
  ]
  return '\n'.join(lines) + '\n'


def _mean_std_by_epoch(
    points: Iterable[tuple[int, float]]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """Mean and std of (epoch, value) points over the runs reaching each epoch."""
  by_epoch = collections.defaultdict(list)
  for epoch, value in points:
    by_epoch[epoch].append(value)
  epochs = sorted(by_epoch)
  return (np.array(epochs),
          np.array([np.mean(by_epoch[e]) for e in epochs]),
          np.array([np.std(by_epoch[e]) for e in epochs]))


def plot_learning_curves(runs: Sequence[Run], dataset: str,
                         path: str | os.PathLike[str]) -> bool:
  """Figs. 4-5: error (%) vs epoch, mean ± std over seeds.

  Rows are architectures, columns vectorized and conventional networks; test
  errors are solid, train errors dashed. Each epoch averages the runs that
  reached it, unfinished ones included: a seed that stopped early leaves the
  average after its last evaluation, and a curve ends with its last seed.

  Args:
    runs: runs of any datasets.
    dataset: the dataset to plot.
    path: output PNG path.

  Returns:
    False, writing nothing, when no run of the dataset has metrics.
  """
  groups = _by_experiment(r for r in _of_dataset(runs, dataset) if r.metrics)
  if not groups:
    return False
  fig = figure.Figure(figsize=(10, 10), layout='constrained')
  axes = fig.subplots(len(ARCHS), 2, sharex=True, squeeze=False)
  for row, arch in enumerate(ARCHS):
    for col, vectorized in enumerate((True, False)):
      ax = axes[row, col]
      kind_columns = [c for c in COLUMNS if c[0] == vectorized]
      for color, column in enumerate(kind_columns):
        experiment = Experiment(arch, *column)
        for key, linestyle in (('test_error', '-'), ('train_error', '--')):
          epochs, mean, std = _mean_std_by_epoch(
              (m['epoch'], 100 * m[key])
              for run in groups.get(experiment, []) for m in run.metrics)
          if not epochs.size:
            continue
          ax.plot(epochs, mean, linestyle, color=f'C{color}',
                  label=experiment.label if linestyle == '-' else None)
          ax.fill_between(epochs, mean - std, mean + std, color=f'C{color}',
                          alpha=0.2, linewidth=0)
      kind = 'vectorized' if vectorized else 'conventional'
      ax.set_title(f'{ARCH_NAMES[arch]}, {kind} networks')
      ax.set_ylabel('error (%)')
      if ax.lines:
        ax.legend(fontsize='small')
      else:
        ax.text(0.5, 0.5, 'no runs', ha='center', va='center',
                transform=ax.transAxes)
  for ax in axes[-1]:
    ax.set_xlabel('epoch')
  fig.suptitle(f'{_dataset_name(dataset)} learning curves '
               '(solid: test, dashed: train)')
  fig.savefig(path, dpi=100)
  return True


def _alignment_file(dataset: str, vectorized: bool, nonneg: bool) -> str:
  kind = 'vectorized' if vectorized else 'conventional'
  sign = 'nonneg' if nonneg else 'mixed'
  return f'alignment_{dataset}_{kind}_{sign}.png'


def plot_alignment(runs: Sequence[Run], dataset: str, vectorized: bool,
                   nonneg: bool, path: str | os.PathLike[str]) -> bool:
  """Fig. 2: per-layer angle between the rule's update and the gradient.

  One panel per architecture with alignment data, for GEVB (vectorized) or
  DFA (conventional) networks; BP's update is the gradient, at 0 degrees.
  Layers are coloured early to late; error bars are std over seeds.

  Args:
    runs: runs of any datasets.
    dataset: the dataset to plot.
    vectorized: vectorized (GEVB) or conventional (DFA) networks.
    nonneg: nonnegative or mixed-sign networks.
    path: output PNG path.

  Returns:
    False, writing nothing, when no such run recorded alignment angles.
  """
  rule = APPROX_RULE[vectorized]
  panels = {}
  for arch in ARCHS:
    experiment = Experiment(arch, vectorized, nonneg, rule)
    arch_runs = [r for r in _of_dataset(runs, dataset)
                 if r.experiment == experiment
                 and any('alignment' in m for m in r.metrics)]
    if arch_runs:
      panels[arch] = arch_runs
  if not panels:
    return False
  fig = figure.Figure(figsize=(4.5 * len(panels), 4), layout='constrained')
  axes = fig.subplots(1, len(panels), sharey=True, squeeze=False)[0]
  for ax, (arch, arch_runs) in zip(axes, panels.items()):
    layers = list(dict.fromkeys(
        layer for run in arch_runs for m in run.metrics
        for layer in m.get('alignment', {})))
    colors = matplotlib.colormaps['viridis'](np.linspace(0, 0.9, len(layers)))
    for layer, color in zip(layers, colors):
      epochs, mean, std = _mean_std_by_epoch(
          (m['epoch'], m['alignment'][layer]) for run in arch_runs
          for m in run.metrics if layer in m.get('alignment', {}))
      ax.errorbar(epochs, mean, yerr=std, color=color, marker='o',
                  markersize=3, capsize=2, label=layer)
    ax.set_ylim(0, 90)
    ax.set_yticks(range(0, 91, 15))
    ax.set_title(ARCH_NAMES[arch])
    ax.set_xlabel('epoch')
    ax.legend(title='early → late', fontsize='small')
  axes[0].set_ylabel('alignment angle (°)')
  kind = 'vectorized' if vectorized else 'conventional'
  label = Experiment('fc', vectorized, nonneg, rule).label
  fig.suptitle(f'{_dataset_name(dataset)}: {label} in {kind} networks, '
               'angle to the gradient')
  fig.savefig(path, dpi=100)
  return True


def plot_cluster_quality(runs: Sequence[Run], dataset: str,
                         path: str | os.PathLike[str]) -> bool:
  """Fig. 3B: change in cluster quality due to training, per experiment.

  One panel each for the convolutional and locally connected architectures
  when their finished runs report cluster quality, scored as in Fig. 3B (the
  authors' notebook, ``clusters.cluster_quality_rms``); bars are mean ± std over
  seeds of final - init, with GEVB in VNNs in colour and the rest grey.

  Args:
    runs: runs of any datasets.
    dataset: the dataset to plot.
    path: output PNG path.

  Returns:
    False, writing nothing, when no such run reports cluster quality.
  """
  deltas = collections.defaultdict(list)
  for run in _of_dataset(runs, dataset):
    quality = (run.summary or {}).get('cluster_quality', {}).get(FIG3B_SCORE)
    if run.experiment.arch in ('conv', 'lc') and quality:
      deltas[run.experiment].append(quality['final'] - quality['init'])
  archs = [a for a in ('conv', 'lc') if any(e.arch == a for e in deltas)]
  if not archs:
    return False
  fig = figure.Figure(figsize=(6 * len(archs), 4), layout='constrained')
  axes = fig.subplots(1, len(archs), sharey=True, squeeze=False)[0]
  for ax, arch in zip(axes, archs):
    experiments = [Experiment(arch, *column) for column in COLUMNS]
    for x, experiment in enumerate(experiments):
      if experiment in deltas:
        ax.bar(x, np.mean(deltas[experiment]), yerr=np.std(deltas[experiment]),
               capsize=3, color='C3' if experiment.is_vnn_gevb else 'grey')
    ax.set_xticks(range(len(experiments)),
                  [experiment.label for experiment in experiments])
    ax.axhline(0, color='black', linewidth=0.8)
    ax.axvline(3.5, color='black', linewidth=0.8, linestyle=':')
    kinds = ax.secondary_xaxis(-0.08)
    kinds.set_xticks([1.5, 5.5], ['vectorized', 'conventional'])
    kinds.tick_params(length=0)
    kinds.spines['bottom'].set_visible(False)
    ax.set_title(ARCH_NAMES[arch])
  axes[0].set_ylabel('change in cluster quality')
  fig.suptitle(f'{_dataset_name(dataset)}: cluster quality, final − init')
  fig.savefig(path, dpi=100)
  return True


def _figure_line(out: pathlib.Path, filename: str,
                 plot: Callable[[pathlib.Path], bool], description: str,
                 skip_reason: str) -> str:
  """Draws one figure and returns its report.md line: an image or a skip."""
  if plot(out / filename):
    return f'- {description}:\n\n  ![{filename}]({filename})\n'
  return f'- {filename} skipped: {skip_reason}'


def write_report(runs: Sequence[Run], out: str | os.PathLike[str]) -> str:
  """Writes every table and figure of every dataset, and report.md.

  Args:
    runs: the runs, e.g. from collect_runs.
    out: output directory, created if needed.

  Returns:
    The path of report.md.
  """
  out = pathlib.Path(out)
  out.mkdir(parents=True, exist_ok=True)
  lines = ['# GEVB report', '', f'{len(runs)} runs.']
  for dataset in sorted({run.dataset for run in runs}):
    stems = [f'table_{dataset}']
    if dataset in PAPER_TABLES:
      stems.append(f'table{PAPER_TABLES[dataset]}')
    for stem in stems:
      (out / f'{stem}.md').write_text(table_markdown(runs, dataset))
      (out / f'{stem}.tex').write_text(table_latex(runs, dataset))
    lines += [
        '', f'## {_dataset_name(dataset)}', '',
        'Tables: ' + ', '.join(f'[{s}.md]({s}.md) ([LaTeX]({s}.tex))'
                               for s in stems),
        '', *(f'- {line}' for line in grid_status(runs, dataset).lines()),
        *_agreement_lines(runs, dataset),
        '', 'Figures:', '',
        _figure_line(
            out, f'curves_{dataset}.png',
            functools.partial(plot_learning_curves, runs, dataset),
            'Learning curves (Figs. 4-5): error vs epoch, mean ± std over '
            'seeds; solid test, dashed train',
            'no metrics.jsonl evaluations.'),
    ]
    for vectorized in (True, False):
      for nonneg in (True, False):
        label = Experiment('fc', vectorized, nonneg,
                           APPROX_RULE[vectorized]).label
        kind = 'vectorized' if vectorized else 'conventional'
        lines.append(_figure_line(
            out, _alignment_file(dataset, vectorized, nonneg),
            functools.partial(plot_alignment, runs, dataset, vectorized,
                              nonneg),
            f'Alignment (Fig. 2): angle between {label} updates in {kind} '
            'networks and the gradient, per layer, mean ± std over seeds',
            f'no {label} run in {kind} networks recorded alignment angles.'))
    lines.append(_figure_line(
        out, f'cluster_quality_{dataset}.png',
        functools.partial(plot_cluster_quality, runs, dataset),
        'Cluster quality (Fig. 3B): change due to training of the t-SNE '
        'cluster quality of Conv/LC representations, GEVB in VNNs in colour',
        'no finished Conv or LC run reports cluster_quality.'))
  path = out / 'report.md'
  path.write_text('\n'.join(lines) + '\n')
  return str(path)


def main(argv: Sequence[str]) -> None:
  if len(argv) != 2:
    raise app.UsageError('Expected one argument: ROOT.')
  root = argv[1]
  runs = collect_runs(root)
  if not runs:
    sys.exit(f'No runs (directories with config.json) found under {root}.')
  print(f'Wrote {write_report(runs, _OUT.value)} from {len(runs)} runs.')


if __name__ == '__main__':
  flags.mark_flag_as_required('out')
  app.run(main)
