"""The generators of the docs' generated sections: each turns a marker's arguments
into markdown from the run folders below a results root.

A marker names a generator, then its arguments, split as a shell splits them
(``shlex``: quote a value holding spaces, ``alt="learning curves"``). Positional
arguments are FOLDERs, paths below the results root (``digits``,
``digits/fc-vectorized-nonneg-gevb``): a generator reads every run folder below
each. Options are KEY=VALUE:

  table FOLDER [archs=..] [kinds=..] [signs=..] [rules=..] [codes=..]
      The data set's results table (``tables.grid_markdown``) with its caption: a row
      per architecture of ``archs`` (default: fc,conv,lc), a column per column of
      the data set's table (``runs.columns_of``) that the other filters keep.
  curve FOLDER [epochs=0,2,4]
      One experiment's evaluations: epoch, train and test error (%), the alignment
      angle (°) of each hidden layer; mean ± std over its seeds when it has several.
  finals FOLDER [FOLDER ...] [paper=mnist,cifar10]
      A row per FOLDER (one experiment each): seeds, final test and train error (%),
      epochs run, seeds at zero train error; with ``paper=``, the paper's published
      test (train) error of the same experiment on each data set named.
  angles FOLDER [FOLDER ...]
      Per FOLDER (one experiment each) and hidden layer: the alignment angle (°) and
      the sign agreement at epoch 0 and at the last evaluation.
  width FOLDER [file=NAME.png]
      The table of ``gevb_jax.alignment_vs_width``'s results in FOLDER (its
      ``alignment_vs_width.json``) and a link to their figure, drawn into ``file``.
  figure curves|alignment|cluster_quality FOLDER [filters] [file=NAME.png] [alt=..]
      Draws ``figures.plot_learning_curves``, ``plot_alignment`` (the filters must
      keep one column other than BP) or ``plot_cluster_quality`` of the runs the
      filters keep into the figures folder; the section is the image's link.

Filters take comma-separated values: ``archs`` fc, conv, lc; ``kinds`` vectorized,
conventional; ``signs`` nonneg, mixed; ``rules`` gevb, bp, dfa, fa, kp, sign;
``codes`` onehot, binary. A section that would show a run that is not there, or not
finished, is refused (``SectionError``) rather than written with a hole.
"""

import dataclasses
import functools
import json
import os
import pathlib
import re
import shlex

import numpy as np

from gevb_jax import grid, paper_results
from gevb_jax import workdir as run_folder
from gevb_jax.grid import ARCHS, Experiment
from gevb_jax.report import figures, tables
from gevb_jax.report.runs import WIDTH_FILE, collect_runs, columns_of, dataset_name

FILTERS = {
  "archs": ARCHS,
  "kinds": grid.KINDS,
  "signs": (grid.sign(True), grid.sign(False)),
  "rules": tuple(dict.fromkeys(r for rules in grid.RULES.values() for r in rules)),
  "codes": grid.OUTPUT_CODES,
}
FIGURE_KINDS = ("curves", "alignment", "cluster_quality")


class SectionError(ValueError):
  """Why a section cannot be generated, in one line."""


@dataclasses.dataclass(frozen=True)
class Spec:
  """A marker's generator, positional arguments and options, as written."""

  text: str
  generator: str
  args: tuple[str, ...]
  options: tuple[tuple[str, str], ...]

  def option(self, key, default=None):
    return dict(self.options).get(key, default)


def parse_spec(text):
  """The ``Spec`` of a marker's text: ``GENERATOR ARG ... KEY=VALUE ...``."""
  try:
    tokens = shlex.split(text)
  except ValueError as err:
    raise SectionError(f"cannot split the arguments: {err}") from None
  if not tokens:
    raise SectionError("no generator named")
  args, options = [], {}
  for token in tokens[1:]:
    key, equals, value = token.partition("=")
    if not equals:
      args.append(token)
    elif key in options:
      raise SectionError(f"option {key} given twice")
    else:
      options[key] = value
  return Spec(text.strip(), tokens[0], tuple(args), tuple(options.items()))


class Context:
  """What one pass over the docs shares: the runs below the results root, read once
  per folder, and the figures its sections link to.

  ``figures_mode``: "draw" draws each figure, "check" requires its file to exist,
  "skip" neither.
  """

  def __init__(self, results_root, figures_dir, figures_mode):
    self.results_root = pathlib.Path(results_root)
    self.figures_dir = pathlib.Path(figures_dir)
    self.figures_mode = figures_mode
    self._runs = {}
    self._figures = {}  # File name -> the spec (without alt) that draws it.

  def path(self, folder):
    """``folder`` of the results root; refused when it is not below it."""
    parts = pathlib.PurePosixPath(folder).parts
    if not parts or folder.startswith("/") or ".." in parts:
      raise SectionError(f"{folder!r} is not a folder below the results root")
    return self.results_root.joinpath(*parts)

  def runs(self, folder):
    """The runs below ``folder`` of the results root; refused when there are none."""
    if folder not in self._runs:
      path = self.path(folder)
      self._runs[folder] = collect_runs(path) if path.is_dir() else []
    if not self._runs[folder]:
      raise SectionError(f"no runs under {self.results_root / folder}")
    return self._runs[folder]

  def claim_figure(self, name, spec):
    """Whether the figure ``name`` is still to be drawn: once per pass, and refused
    when another section draws something else under that name."""
    drawn = (spec.generator, spec.args, tuple(o for o in spec.options if o[0] != "alt"))
    if name not in self._figures:
      self._figures[name] = drawn
      return True
    if self._figures[name] != drawn:
      raise SectionError(f"another section draws another figure into {name}")
    return False


def _one_dataset(runs, folder):
  datasets = sorted({run.dataset for run in runs})
  if len(datasets) > 1:
    raise SectionError(f"{folder} holds runs of several data sets: {', '.join(datasets)}")
  return datasets[0]


def _one_experiment(runs, folder):
  experiments = sorted({str(run.experiment) for run in runs})
  if len(experiments) > 1 or len({run.dataset for run in runs}) > 1:
    raise SectionError(f"{folder} holds several experiments: {', '.join(experiments)}")
  return runs[0].experiment


def _filters(spec):
  """The filter options of ``spec``: {filter: allowed values}, values checked."""
  selected = {}
  for name, known in FILTERS.items():
    if spec.option(name) is None:
      continue
    values = spec.option(name).split(",")
    for value in values:
      if value not in known:
        raise SectionError(f"{name}={value}: not one of {', '.join(known)}")
    selected[name] = values
  return selected


def _column_kept(column, filters):
  values = {
    "kinds": column.kind,
    "signs": grid.sign(column.nonneg),
    "rules": column.rule,
    "codes": column.output_code,
  }
  return all(value in filters.get(name, (value,)) for name, value in values.items())


def _experiment_kept(experiment, filters):
  """Whether ``experiment`` passes ``filters``; without ``archs=``, a net built from a
  layer spec passes as the paper's do."""
  archs = filters.get("archs")
  return (archs is None or experiment.arch in archs) and _column_kept(
    experiment.column, filters
  )


def _check_finished(runs, experiments, folder):
  """Refuses a table of ``experiments`` with a cell without a finished run, or with
  an unfinished run."""
  finished = {run.experiment for run in runs if run.finished}
  missing = [str(e) for e in experiments if e not in finished]
  if missing:
    more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
    raise SectionError(f"no finished run of {missing[0]}{more} under {folder}")
  unfinished = [r for r in runs if r.experiment in experiments and not r.finished]
  if unfinished:
    raise SectionError(f"unfinished run (no summary.json): {unfinished[0].workdir}")


def _table(context, spec, doc_dir):
  """``table FOLDER [filters]``: the data set's table of final errors."""
  del doc_dir
  (folder,) = spec.args
  runs = context.runs(folder)
  dataset = _one_dataset(runs, folder)
  filters = _filters(spec)
  archs = [arch for arch in ARCHS if arch in filters.get("archs", ARCHS)]
  columns = [c for c in columns_of(runs) if _column_kept(c, filters)]
  if not columns:
    raise SectionError(f"no column of {folder}'s table passes the filters")
  _check_finished(runs, [Experiment(a, *c) for a in archs for c in columns], folder)
  lines = [
    tables.caption_markdown(runs, dataset),
    "",
    *tables.grid_markdown(runs, dataset, columns, archs),
  ]
  return "\n".join(lines) + "\n"


def _number(values, digits):
  """A mean, with ± std when there are several values."""
  text = f"{np.mean(values):.{digits}f}"
  return text + (f" ± {np.std(values):.{digits}f}" if len(values) > 1 else "")


def _pairing_text(run):
  """How a conventional nonnegative net's inputs pair after its conv/LC stack's
  flatten, where it is not the released pairing (issue 20); else nothing."""
  experiment = run.experiment
  if experiment.vectorized or not experiment.nonneg or experiment.arch == "fc":
    return ""
  if run_folder.flatten_pairing(run.config) == "released":
    return ""
  return " with ON/OFF channel pairs after the flatten"


def _seeds_text(runs):
  """Which seeds a table shows, and how it combines several."""
  seeds = sorted(run.seed for run in runs)
  if len(seeds) == 1:
    return f"seed {seeds[0]}"
  return (
    "seeds " + ", ".join(map(str, seeds)) + " (mean ± std over the seeds evaluated "
    "at each epoch)"
  )


def _values_by_epoch(runs, value):
  """{epoch: [value(m) of each run's evaluation m at that epoch, if not None]}."""
  by_epoch = {}
  for run in runs:
    for m in run.metrics:
      if value(m) is not None:
        by_epoch.setdefault(m["epoch"], []).append(value(m))
  return by_epoch


def _epochs(spec, evaluated, folder):
  """The epochs of ``spec``'s ``epochs`` option (default: every one evaluated)."""
  if spec.option("epochs") is None:
    return sorted(evaluated)
  try:
    epochs = [int(e) for e in spec.option("epochs").split(",")]
  except ValueError:
    raise SectionError(f"epochs={spec.option('epochs')}: not integers") from None
  for epoch in epochs:
    if epoch not in evaluated:
      raise SectionError(f"epoch {epoch} was not evaluated in {folder}")
  return epochs


def _curve(context, spec, doc_dir):
  """``curve FOLDER [epochs=..]``: one experiment's evaluations."""
  del doc_dir
  (folder,) = spec.args
  runs = context.runs(folder)
  experiment = _one_experiment(runs, folder)
  errors = {
    key: _values_by_epoch(
      runs, lambda m, key=key: None if m.get(key) is None else 100 * m[key]
    )
    for key in ("train_error", "test_error")
  }
  if not errors["test_error"]:
    raise SectionError(f"no evaluations in {folder}")
  layers = list(
    dict.fromkeys(
      layer for r in runs for m in r.metrics for layer in m.get("alignment", {})
    )
  )
  angles = {
    layer: _values_by_epoch(
      runs, lambda m, layer=layer: m.get("alignment", {}).get(layer)
    )
    for layer in layers
  }
  header = ["epoch", "train error %", "test error %", *(f"{x} °" for x in layers)]
  lines = [
    f"{dataset_name(runs[0].dataset)} {experiment}{_pairing_text(runs[0])}, "
    f"{_seeds_text(runs)}: train and "
    "test error (%) and, per hidden layer, the angle (°) between its update and the "
    "gradient, at each evaluation.",
    "",
    "| " + " | ".join(header) + " |",
    "|" + "---:|" * len(header),
  ]
  for epoch in _epochs(spec, errors["test_error"], folder):
    cells = [
      _number(errors[key][epoch], 2) if epoch in errors[key] else "" for key in errors
    ]
    cells += [_number(angles[x][epoch], 1) if epoch in angles[x] else "" for x in layers]
    lines.append("| " + " | ".join([str(epoch), *cells]) + " |")
  return "\n".join(lines) + "\n"


def _finals_row(runs, folder):
  """A ``finals`` row's cells after the label: seeds, test and train error (%),
  epochs run, seeds at zero train error."""
  unfinished = [run for run in runs if not run.finished]
  if unfinished:
    raise SectionError(f"unfinished run (no summary.json): {unfinished[0].workdir}")
  summaries = [run.summary for run in runs]
  epochs = sorted({s.get("epochs_run") for s in summaries}, key=str)
  at_zero = sum(s["final_train_error"] == 0 for s in summaries)
  return [
    str(len(runs)),
    _number([100 * s["final_test_error"] for s in summaries], 2),
    _number([100 * s["final_train_error"] for s in summaries], 2),
    " / ".join("—" if e is None else str(e) for e in epochs),
    f"{at_zero}/{len(runs)}",
  ]


def _paper_datasets(spec):
  """The data sets of ``paper=``, checked against the paper's tables."""
  datasets = spec.option("paper", "")
  datasets = datasets.split(",") if datasets else []
  for dataset in datasets:
    if dataset not in paper_results.TABLE_NUMBERS:
      known = ", ".join(paper_results.TABLE_NUMBERS)
      raise SectionError(f"paper={dataset}: not one of {known}")
  return datasets


def _paper_cell(dataset, experiment):
  """The paper's test (train) error (%) of ``experiment`` on ``dataset``, or —."""
  cell = paper_results.published(dataset, experiment)
  if cell is None:
    return "—"
  return f"{cell.test:.2f}" + ("" if cell.train is None else f" ({cell.train:.2f})")


def _labels(groups, experiments, folders):
  """A row label per folder: its experiment, with the data set's name when the
  folders hold several data sets, or the folder itself when two labels would be
  the same (one experiment under two studies)."""
  labels = [str(experiment) for experiment in experiments]
  if len({runs[0].dataset for runs in groups}) > 1:
    labels = [f"{dataset_name(r[0].dataset)} {x}" for r, x in zip(groups, labels)]
  if len(set(labels)) < len(labels):
    labels = [f"`{folder}`" for folder in folders]
  return labels


def _finals(context, spec, doc_dir):
  """``finals FOLDER ... [paper=]``: a row of final errors per experiment folder,
  beside the paper's numbers for the same experiment when ``paper=`` names data sets."""
  del doc_dir
  if not spec.args:
    raise SectionError("finals names no folder")
  papers = _paper_datasets(spec)
  groups = [context.runs(folder) for folder in spec.args]
  experiments = [_one_experiment(r, f) for r, f in zip(groups, spec.args)]
  labels = _labels(groups, experiments, spec.args)
  header = ["run", "seeds", "test error %", "train error %", "epochs", "zero train error"]
  header += [f"paper {dataset_name(d)} test (train) %" for d in papers]
  rows = [
    [label, *_finals_row(runs, folder), *(_paper_cell(d, experiment) for d in papers)]
    for label, runs, folder, experiment in zip(labels, groups, spec.args, experiments)
  ]
  lines = [
    "Final errors, mean ± std over the seeds.",
    "",
    "| " + " | ".join(header) + " |",
    "|---|" + "---:|" * (len(header) - 1),
    *("| " + " | ".join(row) + " |" for row in rows),
  ]
  return "\n".join(lines) + "\n"


def _alignment_column(runs, folder):
  columns = sorted({r.experiment.column for r in runs if r.experiment.rule != "bp"})
  if len(columns) != 1:
    raise SectionError(
      f"figure alignment needs the runs of one column other than BP under {folder}, "
      f"not {len(columns)}: choose it with kinds=, signs=, rules=, codes="
    )
  return columns[0]


def _plot(kind, runs, dataset, folder):
  """(plot(path), whether it has anything to draw, default file name, alt text)."""
  slug = folder.strip("/").replace("/", "_")
  name = dataset_name(dataset)
  if kind == "curves":
    plot = functools.partial(figures.plot_learning_curves, runs, dataset)
    drawable = bool(figures.curve_groups(runs, dataset))
    return plot, drawable, f"curves_{slug}.png", f"{name} learning curves"
  if kind == "alignment":
    column = _alignment_column(runs, folder)
    plot = functools.partial(figures.plot_alignment, runs, dataset, column)
    drawable = bool(figures.alignment_panels(runs, dataset, column))
    alt = f"{name} {column.label} alignment"
    return plot, drawable, figures.alignment_file(slug, column), alt
  plot = functools.partial(figures.plot_cluster_quality, runs, dataset)
  drawable = bool(figures.cluster_deltas(runs, dataset))
  return plot, drawable, f"cluster_quality_{slug}.png", f"{name} cluster quality"


def _figure(context, spec, doc_dir):
  """``figure KIND FOLDER [filters] [file=] [alt=]``: draws a figure, links it."""
  kind, folder = spec.args
  if kind not in FIGURE_KINDS:
    raise SectionError(f"figure {kind}: not one of {', '.join(FIGURE_KINDS)}")
  runs = context.runs(folder)
  dataset = _one_dataset(runs, folder)
  filters = _filters(spec)
  runs = [run for run in runs if _experiment_kept(run.experiment, filters)]
  if not runs:
    raise SectionError(f"no run under {folder} passes the filters")
  plot, drawable, file, alt = _plot(kind, runs, dataset, folder)
  if not drawable:
    raise SectionError(
      f"the runs under {folder} have no {kind.replace('_', ' ')} to draw"
    )
  file = spec.option("file", file)
  if not re.fullmatch(r"[\w.-]+\.png", file):
    raise SectionError(f"file={file}: not a .png file name")
  path = context.figures_dir / file
  if context.claim_figure(file, spec):
    if context.figures_mode == "draw":
      path.parent.mkdir(parents=True, exist_ok=True)
      plot(path)
    elif context.figures_mode == "check" and not path.is_file():
      raise SectionError(f"figure {file} is missing: --update_docs draws it")
  link = pathlib.PurePath(os.path.relpath(path, doc_dir)).as_posix()
  return f"![{spec.option('alt', alt)}]({link})\n"


def _at_ends(runs, key, layer):
  """``(values at epoch 0, values at each run's last evaluation)`` of ``key``'s
  ``layer`` entry (``alignment`` or ``sign_agreement``) over ``runs``."""
  first, last = [], []
  for run in runs:
    rows = [m for m in run.metrics if layer in m.get(key, {})]
    if rows and rows[0]["epoch"] == 0:
      first.append(rows[0][key][layer])
    if rows:
      last.append(rows[-1][key][layer])
  return first, last


def _angles(context, spec, doc_dir):
  """``angles FOLDER ...``: per experiment folder and hidden layer, the alignment
  angle and the sign agreement at epoch 0 and at the last evaluation."""
  del doc_dir
  if not spec.args:
    raise SectionError("angles names no folder")
  header = [
    "run",
    "layer",
    "angle ° at epoch 0",
    "at the end",
    "sign agreement at epoch 0",
    "at the end",
  ]
  lines = [
    "Per hidden layer, the angle between its update and the gradient and the fraction "
    "of its weight entries whose update has the gradient's sign, on the first 128 "
    "training examples, at epoch 0 and at the last evaluation; mean ± std over the "
    "seeds.",
    "",
    "| " + " | ".join(header) + " |",
    "|---|---|" + "---:|" * (len(header) - 2),
  ]
  groups = [context.runs(folder) for folder in spec.args]
  experiments = [_one_experiment(r, f) for r, f in zip(groups, spec.args)]
  labels = _labels(groups, experiments, spec.args)
  for folder, runs, label in zip(spec.args, groups, labels):
    _finals_row(runs, folder)  # Refuses unfinished runs.
    layers = list(
      dict.fromkeys(x for r in runs for m in r.metrics for x in m.get("alignment", {}))
    )
    if not layers:
      raise SectionError(f"no alignment measured in {folder}")
    label = f"{label} ({_seeds_text(runs).split(' (')[0]})"
    for layer in layers:
      cells = [
        _number(values, digits) if values else ""
        for key, digits in (("alignment", 1), ("sign_agreement", 3))
        for values in _at_ends(runs, key, layer)
      ]
      lines.append("| " + " | ".join([label, layer, *cells]) + " |")
      label = ""
  return "\n".join(lines) + "\n"


def _width(context, spec, doc_dir):
  """``width FOLDER [file=NAME.png]``: the table and figure of
  ``gevb_jax.alignment_vs_width``'s ``alignment_vs_width.json`` in FOLDER."""
  (folder,) = spec.args
  path = context.path(folder) / WIDTH_FILE
  try:
    results = {int(n): v for n, v in json.loads(path.read_text()).items()}
  except (OSError, ValueError) as err:
    raise SectionError(f"{path}: cannot be read ({type(err).__name__})") from None
  seeds = {len(v["measured"]) for layers in results.values() for v in layers.values()}
  file = spec.option("file", "alignment_vs_width.png")
  lines = [
    "GEVB's alignment angle (°) at initialisation per hidden layer, measured and "
    f"predicted by Eq. 15, mean ± std over {' / '.join(map(str, sorted(seeds)))} "
    "seeds.",
    "",
    tables.width_markdown(results),
  ]
  figure_spec = Spec(spec.text, "width", spec.args, (("file", file),))
  out = context.figures_dir / file
  if context.claim_figure(file, figure_spec):
    if context.figures_mode == "draw":
      out.parent.mkdir(parents=True, exist_ok=True)
      figures.plot_alignment_vs_width(results, out)
    elif context.figures_mode == "check" and not out.is_file():
      raise SectionError(f"figure {file} is missing: --update_docs draws it")
  link = pathlib.PurePath(os.path.relpath(out, doc_dir)).as_posix()
  return "\n".join(lines) + f"\n![alignment vs width]({link})\n"


# Generator name -> (function, least and most positional arguments, options).
GENERATORS = {
  "table": (_table, 1, 1, tuple(FILTERS)),
  "curve": (_curve, 1, 1, ("epochs",)),
  "finals": (_finals, 1, None, ("paper",)),
  "figure": (_figure, 2, 2, (*FILTERS, "file", "alt")),
  "angles": (_angles, 1, None, ()),
  "width": (_width, 1, 1, ("file",)),
}


def render(context, spec, doc_dir):
  """The markdown ``spec``'s generator writes, for a document in ``doc_dir``.

  Raises:
    SectionError: the generator or an option is unknown, an argument is missing,
      or a run the section would show is absent or unfinished.
  """
  if spec.generator not in GENERATORS:
    raise SectionError(
      f"unknown generator {spec.generator!r} (one of {', '.join(GENERATORS)})"
    )
  function, least, most, options = GENERATORS[spec.generator]
  if len(spec.args) < least or (most is not None and len(spec.args) > most):
    wanted = least if least == most else f"at least {least}"
    raise SectionError(
      f"{spec.generator} takes {wanted} argument(s), not {len(spec.args)}"
    )
  for key, _ in spec.options:
    if key not in options:
      known = ", ".join(options) or "none"
      raise SectionError(f"{spec.generator} has no option {key} (options: {known})")
  return function(context, spec, doc_dir)
