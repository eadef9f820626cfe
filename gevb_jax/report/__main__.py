"""Tables 1-2 and Figures 2-5 of the paper from a tree of run workdirs.

Usage:
  python -m gevb_jax.report ROOT --out=DIR

Every directory below ROOT holding a `config.json` is a run workdir, with
`metrics.jsonl` (one evaluation per line) and, once finished, `summary.json`.
Runs are grouped by dataset (`config.data.name`) and experiment (architecture,
vectorized, nonneg, rule, output code) over seeds. A dataset's table has the paper's
eight columns, and one more for every rule or output code beyond the paper that a run
is in (`gevb_jax.grid.ALL_COLUMNS`). For each dataset DIR receives

  table_<dataset>.md, table_<dataset>.tex   test (train) errors, Tables 1-2
  curves_<dataset>.png                      learning curves, Figs. 4-5
  alignment_<dataset>_<kind>_<sign>.png     alignment angles, Fig. 2, of GEVB and DFA;
    alignment_<dataset>_<kind>_<sign>_<rule>[_binary].png of the other rules
  cluster_quality_<dataset>.png             change in cluster quality, Fig. 3B

plus table1.* (MNIST) and table2.* (CIFAR-10) and a `report.md` linking them.
On MNIST and CIFAR-10 every table cell also shows the paper's published number
and the difference, and report.md says how many cells fall within the tolerance
documented in `gevb_jax.paper_results`. Standard deviations over seeds are
population ones (ddof=0).
"""

import sys

from absl import app, flags

from gevb_jax.report import collect_runs, write_report

_OUT = flags.DEFINE_string(
  "out", None, "Directory to write the tables, figures and report.md into."
)


def main(argv):
  if len(argv) != 2:
    raise app.UsageError("Expected one argument: ROOT.")
  root = argv[1]
  runs = collect_runs(root)
  if not runs:
    sys.exit(f"No runs (directories with config.json) found under {root}.")
  print(f"Wrote {write_report(runs, _OUT.value)} from {len(runs)} runs.")


if __name__ == "__main__":
  flags.mark_flag_as_required("out")
  app.run(main)
