"""Figures 2-5 of the paper from collected runs: learning curves, alignment angles and
the change in cluster quality."""

import collections
import math

import matplotlib
import numpy as np
from matplotlib import figure

from gevb_jax import grid
from gevb_jax.grid import APPROX_RULE, Experiment, arch_name
from gevb_jax.report.runs import (
  archs_of,
  by_experiment,
  columns_of,
  dataset_name,
  of_dataset,
)

# The cluster-quality score of Fig. 3B in summary.json (train.cluster_quality).
FIG3B_SCORE = "fig3b_rms"


def mean_std_by_epoch(points):
  """Mean and std of (epoch, value) points over the runs reaching each epoch."""
  by_epoch = collections.defaultdict(list)
  for epoch, value in points:
    by_epoch[epoch].append(value)
  epochs = sorted(by_epoch)
  return (
    np.array(epochs),
    np.array([np.mean(by_epoch[e]) for e in epochs]),
    np.array([np.std(by_epoch[e]) for e in epochs]),
  )


def curve_groups(runs, dataset):
  """The runs of ``dataset`` with evaluations, by experiment: what
  ``plot_learning_curves`` draws (empty: nothing to draw)."""
  return by_experiment(r for r in of_dataset(runs, dataset) if r.metrics)


def plot_learning_curves(runs, dataset, path):
  """Figs. 4-5: error (%) vs epoch, mean ± std over seeds.

  Rows are the architectures, columns the kinds of network (vectorized,
  conventional) that have runs, a line per column of the table (``columns_of``);
  test errors are solid, train errors dashed, on an axis linear up to 1 % and
  logarithmic above. Each epoch averages the runs that reached it, unfinished
  ones included: a seed that stopped early leaves the average after its last
  evaluation, and a curve ends with its last seed.

  Args:
    runs: runs of any datasets.
    dataset: the dataset to plot.
    path: output PNG path.

  Returns:
    False, writing nothing, when no run of the dataset has metrics.
  """
  groups = curve_groups(runs, dataset)
  if not groups:
    return False
  columns = columns_of(of_dataset(runs, dataset))
  archs = [
    a for a in archs_of(of_dataset(runs, dataset)) if any(e.arch == a for e in groups)
  ]
  kinds = [v for v in (True, False) if any(e.vectorized == v for e in groups)]
  fig = figure.Figure(
    figsize=(6.5 * len(kinds), 1 + 3 * len(archs)), layout="constrained"
  )
  axes = fig.subplots(len(archs), len(kinds), sharex=True, squeeze=False)
  for row, arch in enumerate(archs):
    for col, vectorized in enumerate(kinds):
      kind_columns = [c for c in columns if c.vectorized == vectorized]
      _curves_panel(axes[row, col], groups, arch, vectorized, kind_columns)
  for ax in axes[-1]:
    ax.set_xlabel("epoch")
  fig.suptitle(f"{dataset_name(dataset)} learning curves (solid: test, dashed: train)")
  fig.savefig(path, dpi=100)
  return True


def _curves_panel(ax, groups, arch, vectorized, columns):
  """One panel of ``plot_learning_curves``: the test (solid) and train (dashed) error
  of ``arch``'s experiment in each of ``columns``, mean ± std over its runs."""
  colors = matplotlib.colormaps["tab10" if len(columns) <= 10 else "tab20"]
  for index, column in enumerate(columns):
    experiment = Experiment(arch, *column)
    for key, linestyle in (("test_error", "-"), ("train_error", "--")):
      epochs, mean, std = mean_std_by_epoch(
        (m["epoch"], 100 * m[key])
        for run in groups.get(experiment, [])
        for m in run.metrics
      )
      if not epochs.size:
        continue
      ax.plot(
        epochs,
        mean,
        linestyle,
        color=colors(index),
        label=experiment.label if linestyle == "-" else None,
      )
      ax.fill_between(
        epochs, mean - std, mean + std, color=colors(index), alpha=0.2, linewidth=0
      )
  ax.set_title(f"{arch_name(arch)}, {grid.kind(vectorized)} networks")
  # Linear below 1 %, logarithmic above: the final errors of a few percent or less
  # stay apart next to the ~90 % at initialisation.
  ax.set_yscale("symlog", linthresh=1)
  ax.set_ylabel("error (%)")
  if ax.lines:  # Beside the panel: up to ten rules would hide the curves.
    ax.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1, 1))
    # Whole decades, so that errors within one decade (11-90 %) still get labelled
    # ticks at both ends; the data limits hold the mean ± std bands.
    lowest, highest = ax.dataLim.intervaly
    bottom = 0 if lowest < 1 else 10 ** math.floor(math.log10(lowest))
    ax.set_ylim(bottom, max(100, highest))
  else:
    ax.text(0.5, 0.5, "no runs", ha="center", va="center", transform=ax.transAxes)


def alignment_file(dataset, column):
  """``alignment_<dataset>_<kind>_<sign>.png`` for the paper's GEVB and DFA columns,
  with ``_<rule>`` (and ``_<code>`` for codes other than one-hot) for the others."""
  stem = f"alignment_{dataset}_{column.kind}_{grid.sign(column.nonneg)}"
  if column.rule != APPROX_RULE[column.kind]:
    stem += f"_{column.rule}"
  if column.output_code != grid.OUTPUT_CODES[0]:
    stem += f"_{column.output_code}"
  return stem + ".png"


def alignment_panels(runs, dataset, column):
  """The runs of ``column`` of ``dataset`` that recorded alignment angles, by
  architecture: the panels of ``plot_alignment`` (empty: nothing to draw)."""
  panels = {}
  for arch in archs_of(of_dataset(runs, dataset)):
    experiment = Experiment(arch, *column)
    arch_runs = [
      r
      for r in of_dataset(runs, dataset)
      if r.experiment == experiment and any("alignment" in m for m in r.metrics)
    ]
    if arch_runs:
      panels[arch] = arch_runs
  return panels


def _alignment_panel(ax, arch, arch_runs):
  """One panel of ``plot_alignment``: each hidden layer's mean angle over epochs."""
  layers = list(
    dict.fromkeys(
      layer for run in arch_runs for m in run.metrics for layer in m.get("alignment", {})
    )
  )
  colors = matplotlib.colormaps["viridis"](np.linspace(0, 0.9, len(layers)))
  for layer, color in zip(layers, colors):
    epochs, mean, std = mean_std_by_epoch(
      (m["epoch"], m["alignment"][layer])
      for run in arch_runs
      for m in run.metrics
      if layer in m.get("alignment", {})
    )
    ax.errorbar(
      epochs,
      mean,
      yerr=std,
      color=color,
      marker="o",
      markersize=3,
      capsize=2,
      label=layer,
    )
  # 0-90 degrees, or up to the largest angle past 90 (updates pointing uphill).
  top = max(90, 15 * math.ceil(max(line.get_ydata().max() for line in ax.lines) / 15))
  ax.set_ylim(0, top)
  ax.set_yticks(range(0, top + 1, 15))
  ax.set_title(arch_name(arch))
  ax.set_xlabel("epoch")
  ax.legend(title="early → late", fontsize="small")


def plot_alignment(runs, dataset, column, path):
  """Fig. 2: per-layer angle between a rule's update and the gradient.

  One panel per architecture with alignment data, for the runs of one column of
  the table (a ``grid.Column`` whose rule is not BP: BP's update is the
  gradient, at 0 degrees). Layers are coloured early to late; error bars are
  std over seeds. The axis runs to 90 degrees, or further when a mean angle does.

  Args:
    runs: runs of any datasets.
    dataset: the dataset to plot.
    column: the kind of network, sign, rule and output code to plot.
    path: output PNG path.

  Returns:
    False, writing nothing, when no such run recorded alignment angles.
  """
  panels = alignment_panels(runs, dataset, column)
  if not panels:
    return False
  # Wide enough for the title over a single panel.
  fig = figure.Figure(figsize=(max(4.5 * len(panels), 6.5), 4), layout="constrained")
  axes = fig.subplots(1, len(panels), sharey=True, squeeze=False)[0]
  for ax, (arch, arch_runs) in zip(axes, panels.items()):
    _alignment_panel(ax, arch, arch_runs)
  axes[0].set_ylabel("alignment angle (°)")
  fig.suptitle(
    f"{dataset_name(dataset)}: {column.label} in {column.kind} networks, "
    "angle to the gradient"
  )
  fig.savefig(path, dpi=100)
  return True


def cluster_deltas(runs, dataset):
  """Final - init Fig. 3B cluster quality of each Conv or LC run of ``dataset`` that
  reports it, by experiment: the bars of ``plot_cluster_quality`` (empty: nothing
  to draw)."""
  deltas = collections.defaultdict(list)
  for run in of_dataset(runs, dataset):
    quality = (run.summary or {}).get("cluster_quality", {}).get(FIG3B_SCORE)
    if run.experiment.arch in grid.CLUSTERED_ARCHS and quality:
      deltas[run.experiment].append(quality["final"] - quality["init"])
  return deltas


def plot_cluster_quality(runs, dataset, path):
  """Fig. 3B: change in cluster quality due to training, per experiment.

  One panel each for the convolutional and locally connected architectures
  when their finished runs report cluster quality, scored as in Fig. 3B (the
  authors' notebook, ``clusters.cluster_quality_rms``); a bar per column of the
  table (``columns_of``), mean ± std over seeds of final - init, with GEVB in
  VNNs in colour and the rest grey.

  Args:
    runs: runs of any datasets.
    dataset: the dataset to plot.
    path: output PNG path.

  Returns:
    False, writing nothing, when no such run reports cluster quality.
  """
  deltas = cluster_deltas(runs, dataset)
  archs = [a for a in grid.CLUSTERED_ARCHS if any(e.arch == a for e in deltas)]
  if not archs:
    return False
  columns = columns_of(of_dataset(runs, dataset))
  # Bars from x = 0 on; the first conventional column's position splits the kinds.
  split = [c.vectorized for c in columns].index(False)
  width = 0.75 * len(columns)
  fig = figure.Figure(figsize=(width * len(archs), 4), layout="constrained")
  axes = fig.subplots(1, len(archs), sharey=True, squeeze=False)[0]
  for ax, arch in zip(axes, archs):
    experiments = [Experiment(arch, *column) for column in columns]
    for x, experiment in enumerate(experiments):
      if experiment in deltas:
        ax.bar(
          x,
          np.mean(deltas[experiment]),
          yerr=np.std(deltas[experiment]),
          capsize=3,
          color="C3" if experiment.is_vnn_gevb else "grey",
        )
    ax.set_xticks(
      range(len(experiments)), [experiment.label for experiment in experiments]
    )
    ax.axhline(0, color="black", linewidth=0.8)
    ax.axvline(split - 0.5, color="black", linewidth=0.8, linestyle=":")
    kinds = ax.secondary_xaxis(-0.08)
    centres = [(split - 1) / 2, (split + len(columns) - 1) / 2]
    kinds.set_xticks(centres, ["vectorized", "conventional"])
    kinds.tick_params(length=0)
    kinds.spines["bottom"].set_visible(False)
    ax.set_title(arch_name(arch))
  axes[0].set_ylabel("change in cluster quality")
  fig.suptitle(f"{dataset_name(dataset)}: cluster quality, final − init")
  fig.savefig(path, dpi=100)
  return True


def plot_alignment_vs_width(results, path):
  """GEVB's alignment at init against width, measured and by Eq. 15
  (``gevb_jax.alignment_vs_width``'s results)."""
  widths = list(results)
  fig = figure.Figure(figsize=(5.5, 4))
  ax = fig.subplots()
  for i, name in enumerate(next(iter(results.values()))):
    colour = f"C{i}"
    measured = np.array([results[n][name]["measured"] for n in widths])
    predicted = np.array([results[n][name]["eq15"] for n in widths])
    ax.errorbar(
      widths,
      measured.mean(1),
      yerr=measured.std(1),
      fmt="o",
      color=colour,
      label=f"{name} measured",
    )
    ax.plot(widths, predicted.mean(1), "-", color=colour, label=f"{name} Eq. 15")
  ax.set_xscale("log", base=2)
  ax.set_xlabel("hidden width n")
  ax.set_ylabel("GEVB alignment angle at init (degrees)")
  ax.set_ylim(0, 90)
  ax.legend(fontsize=8)
  ax.set_title("Alignment at initialisation vs width")
  fig.tight_layout()
  fig.savefig(path, dpi=120)
