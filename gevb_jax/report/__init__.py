"""Tables 1-2 and Figures 2-5 of the paper from a tree of run folders.

``python -m gevb_jax.report ROOT --out=DIR`` (see ``__main__``). The pieces:
``runs`` collects run folders, ``tables`` and ``figures`` draw, ``document`` writes
them all with ``report.md``; ``sections`` generates the docs' generated sections from
them and ``docs`` checks or rewrites those sections in README.md and
docs/reproduction.md (``--check_docs``, ``--update_docs``).
"""

from gevb_jax.report.docs import check_docs, update_docs
from gevb_jax.report.document import write_report
from gevb_jax.report.figures import (
  plot_alignment,
  plot_cluster_quality,
  plot_learning_curves,
)
from gevb_jax.report.runs import GridStatus, Run, collect_runs, grid_status
from gevb_jax.report.tables import paper_agreement, table_latex, table_markdown

__all__ = [
  "GridStatus",
  "Run",
  "check_docs",
  "collect_runs",
  "grid_status",
  "paper_agreement",
  "plot_alignment",
  "plot_cluster_quality",
  "plot_learning_curves",
  "table_latex",
  "table_markdown",
  "update_docs",
  "write_report",
]
