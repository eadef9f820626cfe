"""Dataset loading and per-epoch batching for GEVB experiments.

All sources yield the same in-memory `Dataset`: images as float32 arrays of
shape (N, H, W, C) scaled to [-1, 1] as in the paper (a uint8 pixel p becomes
p / 127.5 - 1; scikit-learn digits, valued 0..16, become v / 8 - 1) and
labels as int32 arrays. Sources, chosen by `cfg.source`:

* ``digits``: scikit-learn's 8x8 digits, split into 1437 train / 360 test.
* ``idx``: a directory of MNIST-format idx files, plain or gzipped, e.g. the
  Debian Fashion-MNIST package at /usr/share/datasets/fashion-mnist.
* ``cifar10``, ``cifar100``: the CIFAR python archive or its extracted
  directory (`CIFARS`); CIFAR-100 with its 100 fine labels.
* ``download``: a dataset of `download.ARCHIVES` (`cfg.name`) from the raw
  archives, downloaded once into a cache directory and checked against their
  published SHA-256 (`gevb_jax.download`): ``cfg.cache_dir``, else
  ``$GEVB_JAX_DATA``, else ``~/.cache/gevb_jax``; fetched from the datasets'
  origins or from a mirror laid out like the cache (``cfg.mirror``, else
  ``$GEVB_JAX_MIRROR``).
* ``tfds``: a dataset of `TFDS_NAMES` (`cfg.name`) through tensorflow-datasets.

Every bad input raises `DataError` with a one-line message.
"""

import gzip
import os
import pickle
import posixpath
import tarfile
import zlib
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from gevb_jax import download

DIGITS_TEST_SIZE = 360
DIGITS_SPLIT_SEED = 0

IDX_IMAGES_MAGIC = 0x00000803
IDX_LABELS_MAGIC = 0x00000801
IDX_SPLITS = (
  ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
  ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
)
IDX_HINT = (
  "for Fashion-MNIST run `apt-get install dataset-fashion-mnist` "
  "(installs /usr/share/datasets/fashion-mnist); for MNIST let "
  'source "download" fetch its four idx .gz files'
)


class CifarLayout(NamedTuple):
  """Where a CIFAR python archive keeps its pickled batches.

  Attributes:
    title: the dataset's name in messages.
    archive: the archive's file name.
    directory: the folder the archive extracts to.
    train: the train batch members, in order.
    test: the test batch members.
    label_key: the batch dict's key of the labels used.
  """

  title: str
  archive: str
  directory: str
  train: tuple
  test: tuple
  label_key: bytes


CIFARS = {
  "cifar10": CifarLayout(
    "CIFAR-10",
    "cifar-10-python.tar.gz",
    "cifar-10-batches-py",
    tuple(f"data_batch_{i}" for i in range(1, 6)),
    ("test_batch",),
    b"labels",
  ),
  # The 100 fine classes; the 20 superclasses (b"coarse_labels") are not used.
  "cifar100": CifarLayout(
    "CIFAR-100",
    "cifar-100-python.tar.gz",
    "cifar-100-python",
    ("train",),
    ("test",),
    b"fine_labels",
  ),
}
CIFAR_ROW_BYTES = 3 * 32 * 32

SOURCES = ("digits", "idx", *CIFARS, "download", "tfds")
# The classes of each dataset that is named by `cfg.name` (download, tfds) or is its
# own source (cifar10, cifar100). TFDS publishes each under the same name, with the
# fine label as cifar100's "label".
NUM_CLASSES = {"mnist": 10, "fashion_mnist": 10, "cifar10": 10, "cifar100": 100}
TFDS_NAMES = tuple(NUM_CLASSES)
# (train images, test images, image shape) of each data set a config can name, known
# without loading it (the sweep's estimate plans with them; tests/test_data.py loads
# the ones it can to check).
SPLIT_SHAPES = {
  "digits": (1797 - DIGITS_TEST_SIZE, DIGITS_TEST_SIZE, (8, 8, 1)),
  "mnist": (60_000, 10_000, (28, 28, 1)),
  "fashion_mnist": (60_000, 10_000, (28, 28, 1)),
  "cifar10": (50_000, 10_000, (32, 32, 3)),
  "cifar100": (50_000, 10_000, (32, 32, 3)),
}

# (train_x, train_y, test_x, test_y), as returned by each source's loader.
Splits = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]


class DataError(ValueError):
  """A dataset is missing, malformed, or was requested with bad arguments."""


class Dataset(NamedTuple):
  """An in-memory classification dataset.

  Attributes:
    train_x: float32 (N_train, H, W, C) images in [-1, 1].
    train_y: int32 (N_train,) labels in [0, num_classes).
    test_x: float32 (N_test, H, W, C) images in [-1, 1].
    test_y: int32 (N_test,) labels in [0, num_classes).
    num_classes: number of classes.
    name: human-readable dataset name.
  """

  train_x: np.ndarray
  train_y: np.ndarray
  test_x: np.ndarray
  test_y: np.ndarray
  num_classes: int
  name: str


def load_dataset(cfg):
  """Loads the dataset described by `cfg`.

  Args:
    cfg: a ConfigDict (or any object with these attributes): `source`, one of
      `SOURCES`; `path`, the data location for the idx, cifar10 and cifar100
      sources;
      `name`, the dataset for the download and tfds sources (otherwise only
      recorded in `Dataset.name`); `cache_dir` and `mirror` for the download
      source ("" or absent: the environment or the defaults); `data_dir`, the
      tfds data_dir or None.

  Returns:
    The scaled `Dataset`.

  Raises:
    DataError: for an unknown source or missing or malformed data.
  """
  source = getattr(cfg, "source", None)
  path = os.path.expanduser(getattr(cfg, "path", None) or "")
  name = getattr(cfg, "name", None) or source
  if source in ("idx", *CIFARS) and not path:
    hint = IDX_HINT if source == "idx" else _cifar_hint(CIFARS[source])
    raise DataError(f"source {source!r} needs cfg.path; {hint}")
  num_classes = 10
  if source == "digits":
    splits = _load_digits()
  elif source == "idx":
    splits = _load_idx(path)
  elif source in CIFARS:
    splits, num_classes = _load_cifar(path, source), NUM_CLASSES[source]
  elif source == "download":
    splits = _load_download(
      name, getattr(cfg, "cache_dir", None) or "", getattr(cfg, "mirror", None) or ""
    )
    num_classes = NUM_CLASSES[name]
  elif source == "tfds":
    splits = _load_tfds(name, getattr(cfg, "data_dir", None))
    num_classes = NUM_CLASSES[name]
  else:
    raise DataError(f"unknown data source {source!r}; choose one of {', '.join(SOURCES)}")
  return Dataset(*splits, num_classes=num_classes, name=name)


def split_shape(cfg):
  """``(train images, test images, image shape, classes)`` of the data set ``cfg``
  names (as ``load_dataset`` takes it): from ``SPLIT_SHAPES`` for the known ones,
  else from the loaded data."""
  name = getattr(cfg, "name", None) or getattr(cfg, "source", None)
  if name in SPLIT_SHAPES:
    return (*SPLIT_SHAPES[name], NUM_CLASSES.get(name, 10))  # digits: 10.
  ds = load_dataset(cfg)
  return len(ds.train_x), len(ds.test_x), ds.train_x.shape[1:], ds.num_classes


def epoch_permutation(num_examples, seed, epoch):
  """Returns the shuffled example order for one epoch, drawn with ``jax.random``.

  The order depends only on (seed, epoch), so a resumed run replays the same
  epochs. ``seed`` and ``epoch`` may be traced (``jax.jit``, ``jax.vmap``): the
  trainer draws every seed's order on the devices.

  Args:
    num_examples: size of the dataset.
    seed: run seed in [0, 2**32).
    epoch: non-negative epoch index.

  Returns:
    An int32 permutation of range(num_examples).
  """
  key = jax.random.fold_in(jax.random.key(jnp.uint32(seed)), epoch)
  return jax.random.permutation(key, num_examples)


def batch_indices(num_examples, batch_size, seed, epoch):
  """Returns one epoch's example indices cut into full batches.

  The last partial batch is dropped, so every batch has the same shape and
  the training step compiles once; a different permutation each epoch means
  no example is dropped every time. Traceable in ``seed`` and ``epoch``.

  Args:
    num_examples: size of the dataset.
    batch_size: examples per batch.
    seed: run seed in [0, 2**32).
    epoch: non-negative epoch index.

  Returns:
    An int32 array of shape (num_examples // batch_size, batch_size).

  Raises:
    DataError: if batch_size is not in [1, num_examples].
  """
  if not 1 <= batch_size <= num_examples:
    raise DataError(
      f"batch_size {batch_size} must be between 1 and the "
      f"number of examples {num_examples}"
    )
  num_batches = num_examples // batch_size
  perm = epoch_permutation(num_examples, seed, epoch)
  return perm[: num_batches * batch_size].reshape(num_batches, batch_size)


def _scale_uint8(images):
  """Maps uint8 pixels 0..255 to float32 in [-1, 1]."""
  return images.astype(np.float32) / np.float32(127.5) - np.float32(1.0)


def _checked_labels(labels, num_images, num_classes, where):
  """Validates labels against their images and returns them as int32."""
  labels = np.asarray(labels)
  if labels.shape != (num_images,):
    raise DataError(f"{where}: {num_images} images but labels of shape {labels.shape}")
  bad = labels[(labels < 0) | (labels >= num_classes)]
  if bad.size:
    raise DataError(f"{where}: label {bad[0]} outside [0, {num_classes})")
  return labels.astype(np.int32)


def _load_digits():
  """Loads scikit-learn digits with a fixed stratified 1437/360 split."""
  from sklearn import datasets, model_selection

  digits = datasets.load_digits()
  images = (digits.images / 8.0 - 1.0).astype(np.float32)[..., None]
  labels = _checked_labels(digits.target, len(images), 10, "sklearn digits")
  train_x, test_x, train_y, test_y = model_selection.train_test_split(
    images,
    labels,
    test_size=DIGITS_TEST_SIZE,
    stratify=labels,
    random_state=DIGITS_SPLIT_SEED,
  )
  return train_x, train_y, test_x, test_y


def _load_idx(directory):
  """Loads the train and test splits from a directory of idx files."""
  if not os.path.isdir(directory):
    raise DataError(f"idx directory {directory!r} not found; {IDX_HINT}")
  return _load_idx_files(
    [
      (_find_idx_file(directory, images), _find_idx_file(directory, labels))
      for images, labels in IDX_SPLITS
    ]
  )


def _load_idx_files(paths):
  """Loads the splits from (images path, labels path) pairs, train then test."""
  splits = []
  for images_path, labels_path in paths:
    images = _read_idx(images_path, IDX_IMAGES_MAGIC)
    labels = _read_idx(labels_path, IDX_LABELS_MAGIC)
    if len(images) != len(labels):
      raise DataError(
        f"{images_path} has {len(images)} images but "
        f"{labels_path} has {len(labels)} labels"
      )
    splits += [
      _scale_uint8(images)[..., None],
      _checked_labels(labels, len(images), 10, labels_path),
    ]
  return tuple(splits)


def _find_idx_file(directory, base):
  """Returns the plain or, failing that, gzipped idx file named `base`."""
  for filename in (base, base + ".gz"):
    path = os.path.join(directory, filename)
    if os.path.isfile(path):
      return path
  raise DataError(f"{os.path.join(directory, base)}[.gz] not found; {IDX_HINT}")


def _read_idx(path, magic):
  """Parses an unsigned-byte idx file, checking its magic number and size."""
  try:
    with (gzip.open if path.endswith(".gz") else open)(path, "rb") as f:
      raw = f.read()
  except (OSError, EOFError, zlib.error) as e:
    raise DataError(f"{path}: cannot read ({download.one_line(e)})") from e
  found = int.from_bytes(raw[:4], "big")
  if found != magic:
    raise DataError(f"{path}: magic number {found:#010x}, expected {magic:#010x}")
  header_bytes = 4 + 4 * (magic & 0xFF)
  if len(raw) < header_bytes:
    raise DataError(f"{path}: header needs {header_bytes} bytes, found {len(raw)}")
  dims = tuple(int.from_bytes(raw[i : i + 4], "big") for i in range(4, header_bytes, 4))
  expected = header_bytes + int(np.prod(dims))
  if len(raw) != expected:
    raise DataError(
      f"{path}: expected {expected} bytes for dims {dims}, found {len(raw)}"
    )
  return np.frombuffer(raw, np.uint8, offset=header_bytes).reshape(dims)


def _cifar_hint(layout):
  """Where to get a CIFAR archive, for error messages."""
  return (
    f"download {layout.archive} from https://www.cs.toronto.edu/~kriz/cifar.html, "
    'or let source "download" fetch it'
  )


def _load_cifar(path, name):
  """Loads CIFAR-10 or CIFAR-100 (`name`) from its python archive or its directory."""
  layout = CIFARS[name]
  if os.path.isdir(os.path.join(path, layout.directory)):
    path = os.path.join(path, layout.directory)
  elif os.path.isfile(os.path.join(path, layout.archive)):
    path = os.path.join(path, layout.archive)
  if os.path.isdir(path):
    raw, where = _read_cifar_dir(path, layout), path
  elif os.path.isfile(path):
    raw, where = _read_cifar_archive(path, layout), f"{path}:{layout.directory}"
  else:
    raise DataError(f"{layout.title} path {path!r} not found; {_cifar_hint(layout)}")
  splits = []
  for members in (layout.train, layout.test):
    images, labels = zip(
      *(
        _parse_cifar_batch(raw[m], f"{where}/{m}", layout.label_key, NUM_CLASSES[name])
        for m in members
      )
    )
    splits += [np.concatenate(images), np.concatenate(labels)]
  return tuple(splits)


def _read_cifar_dir(directory, layout):
  """Reads every batch file of an extracted CIFAR directory."""
  raw = {}
  for member in layout.train + layout.test:
    path = os.path.join(directory, member)
    if not os.path.isfile(path):
      raise DataError(f"{layout.title} batch {path} not found; {_cifar_hint(layout)}")
    with open(path, "rb") as f:
      raw[member] = f.read()
  return raw


def _read_cifar_archive(path, layout):
  """Reads every batch of a CIFAR archive in one pass, in memory."""
  wanted = {f"{layout.directory}/{m}": m for m in layout.train + layout.test}
  raw = {}
  try:
    with tarfile.open(path, "r:*") as tar:
      for info in tar:
        member = wanted.get(posixpath.normpath(info.name))
        if member and info.isfile():
          raw[member] = tar.extractfile(info).read()
  except (tarfile.TarError, OSError, EOFError, zlib.error) as e:
    raise DataError(
      f"{path}: not a readable {layout.title} archive ({download.one_line(e)})"
    ) from e
  for name, member in wanted.items():
    if member not in raw:
      raise DataError(f"{path}: member {name} not found; {_cifar_hint(layout)}")
  return raw


def _parse_cifar_batch(raw, where, label_key, num_classes):
  """Decodes one pickled batch into float32 HWC images and int32 labels."""
  try:
    batch = pickle.loads(raw, encoding="bytes")
  except Exception as e:  # Unpickling garbage can raise almost any error.
    raise DataError(f"{where}: corrupt pickle ({download.one_line(e)})") from e
  if not isinstance(batch, dict) or not {b"data", label_key} <= batch.keys():
    raise DataError(f"{where}: expected a dict with b'data' and {label_key!r}")
  data = np.asarray(batch[b"data"])
  if data.dtype != np.uint8 or data.ndim != 2 or (data.shape[1] != CIFAR_ROW_BYTES):
    raise DataError(
      f"{where}: expected uint8 data of shape (N, "
      f"{CIFAR_ROW_BYTES}), found {data.dtype} {data.shape}"
    )
  labels = _checked_labels(batch[label_key], len(data), num_classes, where)
  images = data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
  return _scale_uint8(images), labels


def _load_download(name, cache_dir, mirror):
  """Loads a dataset of `download.ARCHIVES` from its cache, downloading what is missing.

  Only the files `download.fetch` verified are read, never other files that
  may sit beside them (e.g. extracted copies).
  """
  if name not in download.ARCHIVES:
    raise DataError(
      f'source "download" has no dataset {name!r}; set cfg.name '
      f"to one of {', '.join(download.ARCHIVES)}"
    )
  try:
    directory = download.fetch(name, cache_dir, mirror)
  except download.DownloadError as e:
    raise DataError(str(e)) from e
  if name == "mnist":
    return _load_idx_files(
      [
        (os.path.join(directory, f"{images}.gz"), os.path.join(directory, f"{labels}.gz"))
        for images, labels in IDX_SPLITS
      ]
    )
  (archive,) = download.ARCHIVES[name]
  return _load_cifar(os.path.join(directory, archive.filename), name)


def _load_tfds(name, data_dir):
  """Loads the train and test splits of a tensorflow-datasets dataset."""
  if name not in TFDS_NAMES:
    raise DataError(
      f"unsupported tfds dataset {name!r}; choose one of {', '.join(TFDS_NAMES)}"
    )
  try:
    import tensorflow_datasets as tfds
  except ImportError as e:
    raise DataError(
      'source "tfds" needs tensorflow-datasets; install it with `pip install -e .[tfds]`'
    ) from e
  splits = []
  for split in ("train", "test"):
    data = tfds.as_numpy(
      tfds.load(name, split=split, batch_size=-1, data_dir=data_dir or None)
    )
    images = np.asarray(data["image"])
    labels = _checked_labels(
      data["label"], len(images), NUM_CLASSES[name], f"tfds {name}[{split}]"
    )
    splits += [_scale_uint8(images), labels]
  return tuple(splits)
