"""t-SNE embeddings and cluster quality of learned representations (Fig. 3).

Appendix K: representations at the output of the convolutional layers are
projected to 600 dimensions with PCA, then embedded in 2-D with t-SNE
(perplexity 20, learning rate 100). The class clustering of the embedding is
scored two ways, which differ:

* Section 6's text, ``cluster_quality_squared``:
  ``Q = 1 - ((1/C) sum_c mean(r_c^2)) / mean(r^2)``, with mean(r_c^2) the mean
  squared pairwise distance between points of class c and mean(r^2) the same
  over all points;
* Fig. 3B's, from the authors' notebook (``notebooks/conv_viz.ipynb``, cell 9,
  ``rms_dists``/``tsne_d``), ``cluster_quality_rms``:
  ``Q = 1 - ((1/C) sum_c RMS_c) / RMS`` with ``RMS = sqrt(2 sum_d var_d)``
  (``ddof=1``), the root-mean-square distance over distinct pairs.

C is the number of classes (the paper writes K, which here is reserved for the
output dimension). The report's Fig. 3B uses the notebook's, which made the
published figure.
"""

import matplotlib
import numpy as np
from matplotlib import figure
from sklearn import decomposition, manifold

PERPLEXITY = 20.0
LEARNING_RATE = 100.0


def _mean_squared_distance(x):
  """Mean of ||x_i - x_j||^2 over all ordered pairs (i, j), i = j included.

  Uses mean_{i,j} ||x_i - x_j||^2 = 2 (mean_i ||x_i||^2 - ||mean_i x_i||^2),
  i.e. twice the total variance, which costs O(N d) instead of O(N^2 d).

  Args:
    x: (N, d) points.

  Returns:
    The mean squared pairwise distance.
  """
  return 2.0 * float(x.var(axis=0).sum())


def _checked(embedding, labels):
  embedding = np.asarray(embedding, dtype=np.float64)
  labels = np.asarray(labels)
  if embedding.ndim != 2 or labels.shape != embedding.shape[:1]:
    raise ValueError(
      f"Expected (N, d) embedding and (N,) labels, got {embedding.shape} "
      f"and {labels.shape}."
    )
  return embedding, labels


def cluster_quality_squared(embedding, labels):
  """Section 6's text: Q = 1 - (1/C) sum_c mean(r_c^2) / mean(r^2).

  Means run over all ordered pairs, including each point with itself, so a
  class with a single point has mean(r_c^2) = 0 and every term is defined.
  With this convention Q <= 1, with equality when every class collapses to a
  point; Q >= 0 when all classes have the same size (shuffled labels give
  Q ~ 0); in general Q >= 1 - N / (C min_c N_c), so a small, widely spread
  class can drive Q below -1.

  Args:
    embedding: (N, d) points, e.g. a t-SNE embedding.
    labels: (N,) class labels.

  Returns:
    The cluster quality Q.

  Raises:
    ValueError: if the shapes disagree or all points coincide.
  """
  embedding, labels = _checked(embedding, labels)
  overall = _mean_squared_distance(embedding)
  if overall == 0.0:
    raise ValueError("Cluster quality is undefined when all points coincide.")
  within = [_mean_squared_distance(embedding[labels == c]) for c in np.unique(labels)]
  return 1.0 - float(np.mean(within)) / overall


def _rms_distance(x):
  """The notebook's ``rms_dists``: sqrt(2 sum_d var_d), ``ddof=1``.

  Equals the root-mean-square of ||x_i - x_j|| over distinct pairs i != j.
  """
  return float(np.sqrt(2.0 * x.var(axis=0, ddof=1).sum()))


def cluster_quality_rms(embedding, labels):
  """Fig. 3B's: Q = 1 - (1/C) sum_c RMS_c / RMS, from the authors' notebook.

  ``RMS`` is the root-mean-square distance between distinct points, sqrt(2 *
  total variance) with ``ddof=1`` (``conv_viz.ipynb`` cell 9); the notebook plots
  ``Delta Q`` through ``d_init - d_trained`` with ``d = 1 - Q``. A class with a
  single point has no distinct pair and is left out of the mean over classes.

  Args:
    embedding: (N, d) points, e.g. a t-SNE embedding.
    labels: (N,) class labels.

  Returns:
    The cluster quality Q (at most 1, 1 when every class collapses to a point).

  Raises:
    ValueError: if the shapes disagree, all points coincide, or no class has
      two points.
  """
  embedding, labels = _checked(embedding, labels)
  counts = {c: int(np.sum(labels == c)) for c in np.unique(labels)}
  classes = [c for c, n in counts.items() if n > 1]
  overall = _rms_distance(embedding) if len(embedding) > 1 else 0.0
  if overall == 0.0 or not classes:
    raise ValueError(
      "Cluster quality is undefined when all points coincide or no class has two points."
    )
  within = [_rms_distance(embedding[labels == c]) for c in classes]
  return 1.0 - float(np.mean(within)) / overall


def tsne_embedding(representations, *, iters, seed, max_pca_dims=600):
  """Embeds representations in 2-D as in Appendix K.

  PCA first reduces to min(max_pca_dims, D, N) dimensions, then t-SNE runs
  with perplexity 20 and learning rate 100. t-SNE calibrates each point on its
  3 * perplexity nearest neighbours, which must exist among the other N - 1
  points, so for small N the perplexity is clipped to (N - 1) / 3.

  Args:
    representations: (N, D) features, flattened per example.
    iters: number of t-SNE iterations (the paper uses 5000; sklearn needs at
      least 250).
    seed: random seed of PCA and t-SNE.
    max_pca_dims: dimensionality after PCA (600 in the paper).

  Returns:
    (N, 2) embedding.
  """
  x = np.asarray(representations, dtype=np.float32)
  n, d = x.shape
  x = decomposition.PCA(
    n_components=min(max_pca_dims, d, n), random_state=seed
  ).fit_transform(x)
  tsne = manifold.TSNE(
    perplexity=min(PERPLEXITY, (n - 1) / 3),
    learning_rate=LEARNING_RATE,
    max_iter=iters,
    init="pca",
    random_state=seed,
  )
  return tsne.fit_transform(x)


def scatter_png(embedding, labels, path, title):
  """Writes a scatter plot of a 2-D embedding, coloured by class (Fig. 3A).

  Args:
    embedding: (N, 2) points.
    labels: (N,) class labels; each class gets a colour and a legend entry.
    path: output PNG path.
    title: axes title.
  """
  embedding = np.asarray(embedding)
  labels = np.asarray(labels)
  classes = np.unique(labels)
  cmap = matplotlib.colormaps["tab10" if len(classes) <= 10 else "tab20"]
  fig = figure.Figure(figsize=(5, 4.5))
  ax = fig.add_subplot()
  for i, c in enumerate(classes):
    points = embedding[labels == c]
    ax.scatter(points[:, 0], points[:, 1], s=4, color=cmap(i % cmap.N), label=str(c))
  ax.set_title(title)
  ax.set_xticks([])
  ax.set_yticks([])
  ax.legend(markerscale=3, fontsize="small", loc="center left", bbox_to_anchor=(1.0, 0.5))
  fig.savefig(path, dpi=100, bbox_inches="tight")
