"""``report.md``: every table and figure of every data set in one directory."""

import functools
import pathlib

from gevb_jax.report import figures, tables
from gevb_jax.report.runs import columns_of, dataset_name, grid_status, of_dataset


def _figure_line(out, filename, plot, description, skip_reason):
  """Draws one figure and returns its report.md line: an image or a skip."""
  if plot(out / filename):
    return f"- {description}:\n\n  ![{filename}]({filename})\n"
  return f"- {filename} skipped: {skip_reason}"


def write_report(runs, out):
  """Writes every table and figure of every dataset, and report.md.

  Args:
    runs: the runs, e.g. from collect_runs.
    out: output directory, created if needed.

  Returns:
    The path of report.md.
  """
  out = pathlib.Path(out)
  out.mkdir(parents=True, exist_ok=True)
  lines = ["# GEVB report", "", f"{len(runs)} runs."]
  for dataset in sorted({run.dataset for run in runs}):
    lines += _dataset_section(runs, dataset, out)
  path = out / "report.md"
  path.write_text("\n".join(lines) + "\n")
  return str(path)


def _dataset_section(runs, dataset, out):
  """``dataset``'s lines of report.md; writes its tables and figures into ``out``."""
  stems = [f"table_{dataset}"]
  if dataset in tables.PAPER_TABLES:
    stems.append(f"table{tables.PAPER_TABLES[dataset]}")
  for stem in stems:
    (out / f"{stem}.md").write_text(tables.table_markdown(runs, dataset))
    (out / f"{stem}.tex").write_text(tables.table_latex(runs, dataset))
  lines = [
    "",
    f"## {dataset_name(dataset)}",
    "",
    "Tables: " + ", ".join(f"[{s}.md]({s}.md) ([LaTeX]({s}.tex))" for s in stems),
    "",
    *(f"- {line}" for line in grid_status(runs, dataset).lines()),
    *tables.agreement_lines(runs, dataset),
    "",
    "Figures:",
    "",
    _figure_line(
      out,
      f"curves_{dataset}.png",
      functools.partial(figures.plot_learning_curves, runs, dataset),
      "Learning curves (Figs. 4-5): error vs epoch, mean ± std over "
      "seeds; solid test, dashed train",
      "no metrics.jsonl evaluations.",
    ),
  ]
  for column in columns_of(of_dataset(runs, dataset)):
    if column.rule == "bp":  # Its update is the gradient.
      continue
    lines.append(
      _figure_line(
        out,
        figures.alignment_file(dataset, column),
        functools.partial(figures.plot_alignment, runs, dataset, column),
        f"Alignment (Fig. 2): angle between {column.label} updates in "
        f"{column.kind} networks and the gradient, per layer, mean ± std over "
        "seeds",
        f"no {column.label} run in {column.kind} networks recorded alignment angles.",
      )
    )
  lines.append(
    _figure_line(
      out,
      f"cluster_quality_{dataset}.png",
      functools.partial(figures.plot_cluster_quality, runs, dataset),
      "Cluster quality (Fig. 3B): change due to training of the t-SNE "
      "cluster quality of Conv/LC representations, GEVB in VNNs in colour",
      "no finished Conv or LC run reports cluster_quality.",
    )
  )
  return lines
