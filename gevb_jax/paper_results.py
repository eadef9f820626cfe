"""Tables 1-2 of the paper as published, and how close a reproduction must come.

Clark, Abbott & Chung, "Credit Assignment Through Broadcasting a Global Error Vector",
NeurIPS 2021: Table 1 (MNIST) and Table 2 (CIFAR-10). Each cell is the mean test
error (%) over five seeds and, where the paper prints it (train errors above
0.005 %), the mean train error (%); ``train`` is None where the paper prints none.
The paper prints no standard deviations.

A reproduced cell is *within tolerance* when its mean test error differs from the
paper's by at most ``max(TOLERANCE_POINTS, TOLERANCE_RELATIVE * paper)`` percentage
points: 0.2 points on MNIST's 1-2 % errors, 5 % of the error on CIFAR-10's 30-55 %.
That is several standard errors of a difference of two 5-seed means at the seed-to-
seed spread typical of each data set (about 0.1 points on MNIST, 1 point on CIFAR-10).
"""

from typing import NamedTuple

from gevb_jax import grid

TOLERANCE_POINTS = 0.2
TOLERANCE_RELATIVE = 0.05


class PaperCell(NamedTuple):
  """One published cell: mean test error (%) and mean train error (%) or None."""

  test: float
  train: float | None


def _cells(*values):
  """``(test, train)`` pairs, or a bare test error where no train error is printed."""
  return tuple(
    PaperCell(*v) if isinstance(v, tuple) else PaperCell(v, None) for v in values
  )


# Per data set, per (arch, vectorized): the four cells of the paper's row for that
# kind, in the order of ``grid.COLUMNS``.
_TABLES = {
  "mnist": {  # Table 1.
    ("fc", True): _cells((1.87, 0.06), (1.93, 0.05), (2.32, 0.33), (1.84, 0.07)),
    ("conv", True): _cells((2.33, 1.03), (1.3, 0.19), (1.83, 0.83), 0.8),
    ("lc", True): _cells(1.78, 1.64, (1.84, 0.05), 1.44),
    ("fc", False): _cells((2.2, 0.3), 1.36, (2.09, 0.19), 1.29),
    ("conv", False): _cells((1.56, 0.67), 0.71, (1.64, 0.42), 0.65),
    ("lc", False): _cells((1.98, 0.32), 1.21, (1.48, 0.09), 1.07),
  },
  "cifar10": {  # Table 2.
    ("fc", True): _cells((47.62, 1.25), (47.03, 0.72), (48.86, 2.02), (45.98, 0.78)),
    ("conv", True): _cells((33.74, 28.83), (30.85, 16.29), (38.43, 20.59), (30.54, 1.71)),
    ("lc", True): _cells((41.08, 0.83), (41.01, 0.34), (40.11, 0.83), (38.77, 0.36)),
    ("fc", False): _cells((48.69, 3.28), (45.42, 0.96), (49.54, 2.88), (45.69, 0.73)),
    ("conv", False): _cells((54.18, 48.43), (32.13, 0.23), (44.07, 17.25), (28.8, 0.15)),
    ("lc", False): _cells((41.18, 10.62), 35.51, (39.41, 2.94), 32.32),
  },
}
TABLE_NUMBERS = {"mnist": 1, "cifar10": 2}


def published(dataset, experiment):
  """The paper's cell for a ``grid.Experiment``, or None (no such table or cell)."""
  row = _TABLES.get(dataset, {}).get((experiment.arch, experiment.vectorized))
  if row is None or not experiment.column.is_paper:
    return None
  columns = [c for c in grid.COLUMNS if c.vectorized == experiment.vectorized]
  return row[columns.index(experiment.column)]


def tolerance(paper_test):
  """The largest |ours - paper| (percentage points) that counts as reproduced."""
  return max(TOLERANCE_POINTS, TOLERANCE_RELATIVE * paper_test)


def within_tolerance(ours_test, paper_test):
  """Whether a mean test error (%) reproduces the paper's within ``tolerance``."""
  return abs(ours_test - paper_test) <= tolerance(paper_test)
