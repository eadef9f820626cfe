"""Tables 1-2 and Figures 2-5 of the paper from a tree of run workdirs.

Usage:
  python -m gevb_jax.report ROOT --out=DIR
  python -m gevb_jax.report ROOT --update_docs [--repo_root=.]
  python -m gevb_jax.report ROOT --check_docs [--repo_root=.]

--update_docs rewrites every generated section of README.md and
docs/reproduction.md (below --repo_root) from the runs under ROOT and draws the
figures they link to into docs/figures/; --check_docs exits 1 naming the first
section whose text differs from what ROOT gives (``gevb_jax.report.docs`` has the
marker grammar, ``gevb_jax.report.sections`` the generators). With either, --out
may also be given for the report below.

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

from gevb_jax.report import collect_runs, docs, write_report

_OUT = flags.DEFINE_string(
  "out", None, "Directory to write the tables, figures and report.md into."
)
_UPDATE_DOCS = flags.DEFINE_bool(
  "update_docs", False, "Rewrite the docs' generated sections from the runs under ROOT."
)
_CHECK_DOCS = flags.DEFINE_bool(
  "check_docs",
  False,
  "Exit 1 naming the first generated section of the docs that differs from what "
  "the runs under ROOT give.",
)
_REPO_ROOT = flags.DEFINE_string(
  "repo_root", ".", "The repository root that README.md and docs/ are relative to."
)


def _docs(root):
  """Runs --update_docs or --check_docs; exits 1 with one line on a problem."""
  doc_names = ", ".join(docs.DOCS)
  if _UPDATE_DOCS.value:
    try:
      total, changed = docs.update_docs(root, _REPO_ROOT.value)
    except docs.DocsError as err:
      sys.exit(f"Docs not updated: {err}")
    print(f"Updated {changed} of {total} generated sections of {doc_names}.")
    return
  problems = docs.check_docs(root, _REPO_ROOT.value)
  if problems:
    more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
    sys.exit(problems[0] + more)
  total = docs.count_sections(_REPO_ROOT.value)
  print(f"All {total} generated sections of {doc_names} match {root}.")


def main(argv):
  if len(argv) != 2:
    raise app.UsageError("Expected one argument: ROOT.")
  root = argv[1]
  if _UPDATE_DOCS.value and _CHECK_DOCS.value:
    raise app.UsageError("Give --update_docs or --check_docs, not both.")
  if not (_UPDATE_DOCS.value or _CHECK_DOCS.value or _OUT.value):
    raise app.UsageError("Give --out, --update_docs or --check_docs.")
  if _UPDATE_DOCS.value or _CHECK_DOCS.value:
    _docs(root)
  if _OUT.value:
    runs = collect_runs(root)
    if not runs:
      sys.exit(f"No runs (directories with config.json) found under {root}.")
    print(f"Wrote {write_report(runs, _OUT.value)} from {len(runs)} runs.")


if __name__ == "__main__":
  app.run(main)
