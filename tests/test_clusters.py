"""Tests for gevb_jax.clusters."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gevb_jax import clusters


def _brute_force_quality(x, labels):
  """Q from an explicit N x N distance matrix, pairs i = j included."""
  d2 = ((x[:, None, :] - x[None, :, :]) ** 2).sum(-1)
  within = [d2[np.ix_(labels == c, labels == c)].mean() for c in np.unique(labels)]
  return 1.0 - np.mean(within) / d2.mean()


def _gaussian_clusters(rng, num_classes, per_class, dim, spread):
  centers = rng.normal(size=(num_classes, dim)) * 10.0
  labels = np.repeat(np.arange(num_classes), per_class)
  x = centers[labels] + spread * rng.normal(size=(len(labels), dim))
  return x, labels


@st.composite
def _points_and_labels(draw, balanced):
  """Random points with balanced or arbitrary labels, N >= 2."""
  num_classes = draw(st.integers(1, 5))
  rng = np.random.default_rng(draw(st.integers(0, 2**31 - 1)))
  if balanced:
    labels = np.repeat(np.arange(num_classes), draw(st.integers(2, 8)))
  else:
    labels = rng.integers(0, num_classes, size=draw(st.integers(2, 40)))
  x = rng.normal(size=(len(labels), draw(st.integers(1, 4))))
  return x * draw(st.floats(1e-3, 1e3)), rng.permutation(labels)


@settings(max_examples=200, deadline=None)
@given(_points_and_labels(balanced=False))
def test_quality_bounds(data):
  x, labels = data
  q = clusters.cluster_quality_squared(x, labels)
  num_classes = len(np.unique(labels))
  smallest = min(np.sum(labels == c) for c in np.unique(labels))
  assert q <= 1.0 + 1e-9
  assert q >= 1.0 - len(labels) / (num_classes * smallest) - 1e-9


@settings(max_examples=200, deadline=None)
@given(_points_and_labels(balanced=True))
def test_quality_in_unit_interval_for_balanced_classes(data):
  x, labels = data
  assert -1e-9 <= clusters.cluster_quality_squared(x, labels) <= 1.0 + 1e-9


def test_quality_below_minus_one_for_small_spread_class():
  x = np.concatenate([[[-10.0], [10.0]], np.zeros((100, 1))])
  labels = np.array([0, 0] + [1] * 100)
  assert clusters.cluster_quality_squared(x, labels) < -1.0


@pytest.mark.parametrize("seed", range(5))
def test_quality_matches_brute_force(seed):
  rng = np.random.default_rng(seed)
  x = rng.normal(size=(30, 3))
  labels = rng.integers(0, 4, size=30)
  np.testing.assert_allclose(
    clusters.cluster_quality_squared(x, labels),
    _brute_force_quality(x, labels),
    rtol=1e-10,
    atol=1e-12,
  )


def test_separated_clusters_beat_shuffled_labels():
  rng = np.random.default_rng(0)
  x, labels = _gaussian_clusters(rng, 5, 40, 2, spread=0.01)
  tight = clusters.cluster_quality_squared(x, labels)
  shuffled = clusters.cluster_quality_squared(x, rng.permutation(labels))
  assert tight > 0.999
  assert abs(shuffled) < 0.1
  assert tight > shuffled


def test_quality_invariant_to_similarity_transforms():
  rng = np.random.default_rng(1)
  x, labels = _gaussian_clusters(rng, 3, 20, 4, spread=3.0)
  rotation, _ = np.linalg.qr(rng.normal(size=(4, 4)))
  q = clusters.cluster_quality_squared(x, labels)
  for transformed in (x + rng.normal(size=4) * 100, 0.01 * x, x @ rotation):
    np.testing.assert_allclose(
      clusters.cluster_quality_squared(transformed, labels), q, rtol=1e-9
    )


def test_quality_rejects_coincident_points():
  with pytest.raises(ValueError, match="coincide"):
    clusters.cluster_quality_squared(np.ones((4, 2)), np.array([0, 0, 1, 1]))


def test_tsne_embedding_separates_clusters():
  rng = np.random.default_rng(2)
  x, labels = _gaussian_clusters(rng, 4, 25, 50, spread=0.5)
  embedding = clusters.tsne_embedding(x, iters=250, seed=0)
  assert embedding.shape == (100, 2)
  assert np.all(np.isfinite(embedding))
  # 250 iterations only cover t-SNE's early-exaggeration phase.
  assert clusters.cluster_quality_squared(embedding, labels) > 0.8
  assert abs(clusters.cluster_quality_squared(embedding, rng.permutation(labels))) < 0.1


def test_tsne_embedding_tiny_input():
  x = np.random.default_rng(3).normal(size=(6, 3))
  embedding = clusters.tsne_embedding(x, iters=250, seed=0)
  assert embedding.shape == (6, 2)
  assert np.all(np.isfinite(embedding))


def test_scatter_png_writes_png(tmp_path):
  rng = np.random.default_rng(4)
  x, labels = _gaussian_clusters(rng, 3, 10, 2, spread=1.0)
  path = tmp_path / "tsne.png"
  clusters.scatter_png(x, labels, str(path), "GEVB+ after training")
  assert path.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")


def _brute_force_rms_quality(x, labels):
  """Fig. 3B's score from pairwise distances: 1 - mean_c RMS_c / RMS, RMS over
  distinct pairs (the notebook's sqrt(2 sum var), ddof=1, written out)."""

  def rms(points):
    d = np.linalg.norm(points[:, None] - points[None], axis=-1)
    n = len(points)
    return np.sqrt(np.sum(d**2) / (n * (n - 1)))

  within = [rms(x[labels == c]) for c in np.unique(labels)]
  return 1.0 - np.mean(within) / rms(x)


@pytest.mark.parametrize("seed", range(5))
def test_fig3b_quality_matches_brute_force_and_differs_from_the_text(seed):
  rng = np.random.default_rng(seed)
  x = rng.normal(size=(30, 3)) + 2.0 * rng.integers(0, 2, size=(30, 1))
  labels = rng.integers(0, 4, size=30)
  labels[:8] = np.arange(8) % 4  # Every class has at least two points.
  q = clusters.cluster_quality_rms(x, labels)
  np.testing.assert_allclose(q, _brute_force_rms_quality(x, labels), rtol=1e-10)
  # RMS ratios, not ratios of mean squares: the two formulas disagree.
  assert abs(q - clusters.cluster_quality_squared(x, labels)) > 1e-3


def test_fig3b_quality_leaves_out_single_point_classes():
  x = np.array([[0.0], [1.0], [10.0], [11.0], [5.0]])
  labels = np.array([0, 0, 1, 1, 2])
  # Classes 0 and 1 have RMS_c = 1; class 2 is left out; RMS runs over all 5 points.
  overall = np.sqrt(2 * x.var(ddof=1))
  np.testing.assert_allclose(
    clusters.cluster_quality_rms(x, labels), 1.0 - 1.0 / overall, rtol=1e-12
  )
  with pytest.raises(ValueError, match="no class has two points"):
    clusters.cluster_quality_rms(x[:3], np.array([0, 1, 2]))
