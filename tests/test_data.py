"""Tests for gevb_jax.data: loaders, scaling, error messages and batching."""

import collections
import functools
import gzip
import hashlib
import http.server
import importlib
import io
import os
import pickle
import stat
import sys
import tarfile
import threading
import types
import urllib.request

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from sklearn import datasets as sk_datasets

from gevb_jax import data, download

FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"
IMAGES_MAGIC = 0x00000803
LABELS_MAGIC = 0x00000801
TRAIN_IMAGES = "train-images-idx3-ubyte"
TRAIN_LABELS = "train-labels-idx1-ubyte"
TEST_IMAGES = "t10k-images-idx3-ubyte"
TEST_LABELS = "t10k-labels-idx1-ubyte"


def _cfg(**overrides):
  cfg = ml_collections.ConfigDict(dict(source="idx", path="", name="", data_dir=None))
  cfg.update(overrides)
  return cfg


def _scaled(pixels):
  return np.asarray(pixels, np.float32) / np.float32(127.5) - np.float32(1)


# ----------------------------------------------------------------- idx files.


def _idx_bytes(array, magic):
  array = np.asarray(array, np.uint8)
  dims = b"".join(d.to_bytes(4, "big") for d in array.shape)
  return magic.to_bytes(4, "big") + dims + array.tobytes()


def _write(path, payload, gz=False):
  if gz:
    path = str(path) + ".gz"
    with gzip.open(path, "wb") as f:
      f.write(payload)
  else:
    with open(path, "wb") as f:
      f.write(payload)
  return path


def _idx_arrays():
  """Tiny non-square (4x3) image sets containing 0 and 255."""
  rng = np.random.default_rng(0)
  train_x = rng.integers(0, 256, (5, 4, 3), dtype=np.uint8)
  train_x[0, 0, 0], train_x[0, 3, 2] = 0, 255
  test_x = rng.integers(0, 256, (3, 4, 3), dtype=np.uint8)
  return train_x, np.array([3, 0, 9, 1, 3]), test_x, np.array([7, 2, 5])


def _write_idx_dir(directory, gz=False, **replace):
  """Writes the four idx files; `replace` overrides a file's raw bytes."""
  train_x, train_y, test_x, test_y = _idx_arrays()
  files = {
    "train_images": _idx_bytes(train_x, IMAGES_MAGIC),
    "train_labels": _idx_bytes(train_y, LABELS_MAGIC),
    "test_images": _idx_bytes(test_x, IMAGES_MAGIC),
    "test_labels": _idx_bytes(test_y, LABELS_MAGIC),
  }
  files.update(replace)
  names = dict(
    train_images=TRAIN_IMAGES,
    train_labels=TRAIN_LABELS,
    test_images=TEST_IMAGES,
    test_labels=TEST_LABELS,
  )
  for key, raw in files.items():
    _write(directory / names[key], raw, gz=gz)
  return directory


@pytest.mark.parametrize("gz", [False, True])
def test_idx_loads_shapes_scaling_and_labels(tmp_path, gz):
  _write_idx_dir(tmp_path, gz=gz)
  ds = data.load_dataset(_cfg(path=str(tmp_path), name="tiny"))
  train_x, train_y, test_x, test_y = _idx_arrays()
  assert ds.train_x.shape == (5, 4, 3, 1) and ds.test_x.shape == (3, 4, 3, 1)
  assert ds.train_x.dtype == ds.test_x.dtype == np.float32
  assert ds.train_y.dtype == ds.test_y.dtype == np.int32
  assert ds.train_x[0, 0, 0, 0] == -1.0 and ds.train_x[0, 3, 2, 0] == 1.0
  np.testing.assert_array_equal(ds.train_x[..., 0], _scaled(train_x))
  np.testing.assert_array_equal(ds.test_x[..., 0], _scaled(test_x))
  np.testing.assert_array_equal(ds.train_y, train_y)
  np.testing.assert_array_equal(ds.test_y, test_y)
  assert (ds.num_classes, ds.name) == (10, "tiny")


def test_idx_accepts_mixed_plain_and_gzip_files(tmp_path):
  _write_idx_dir(tmp_path, gz=True)
  os.remove(tmp_path / (TEST_LABELS + ".gz"))
  _write(tmp_path / TEST_LABELS, _idx_bytes([4, 4, 4], LABELS_MAGIC))
  ds = data.load_dataset(_cfg(path=str(tmp_path)))
  np.testing.assert_array_equal(ds.test_y, [4, 4, 4])


@pytest.mark.skipif(
  not os.path.isdir(FASHION_MNIST_DIR),
  reason=f"{FASHION_MNIST_DIR} absent; apt-get install dataset-fashion-mnist provides it",
)
def test_idx_loads_debian_fashion_mnist():
  ds = data.load_dataset(_cfg(path=FASHION_MNIST_DIR, name="fashion_mnist"))
  assert ds.train_x.shape == (60000, 28, 28, 1)
  assert ds.test_x.shape == (10000, 28, 28, 1)
  assert ds.train_x.min() == -1.0 and ds.train_x.max() == 1.0
  np.testing.assert_array_equal(np.bincount(ds.train_y), [6000] * 10)
  np.testing.assert_array_equal(np.bincount(ds.test_y), [1000] * 10)


def test_idx_missing_directory(tmp_path):
  missing = tmp_path / "nowhere"
  with pytest.raises(data.DataError, match="dataset-fashion-mnist") as err:
    data.load_dataset(_cfg(path=str(missing)))
  assert str(missing) in str(err.value)


def test_idx_empty_path():
  with pytest.raises(data.DataError, match="needs cfg.path"):
    data.load_dataset(_cfg(path=""))


def test_idx_missing_file(tmp_path):
  _write_idx_dir(tmp_path)
  os.remove(tmp_path / TEST_IMAGES)
  with pytest.raises(data.DataError, match=TEST_IMAGES):
    data.load_dataset(_cfg(path=str(tmp_path)))


@pytest.mark.parametrize("gz", [False, True])
def test_idx_wrong_magic(tmp_path, gz):
  _write_idx_dir(tmp_path, gz=gz, train_images=_idx_bytes(np.zeros(3), LABELS_MAGIC))
  with pytest.raises(data.DataError) as err:
    data.load_dataset(_cfg(path=str(tmp_path)))
  assert TRAIN_IMAGES in str(err.value)
  assert "0x00000803" in str(err.value) and "0x00000801" in str(err.value)


def test_idx_truncated_file(tmp_path):
  raw = _idx_bytes(np.zeros((5, 4, 3)), IMAGES_MAGIC)
  _write_idx_dir(tmp_path, train_images=raw[:-7])
  with pytest.raises(data.DataError) as err:
    data.load_dataset(_cfg(path=str(tmp_path)))
  message = str(err.value)
  assert TRAIN_IMAGES in message
  assert str(len(raw)) in message and str(len(raw) - 7) in message


def test_idx_truncated_header(tmp_path):
  _write_idx_dir(tmp_path, test_labels=LABELS_MAGIC.to_bytes(4, "big"))
  with pytest.raises(data.DataError, match=f"{TEST_LABELS}: header needs 8 bytes"):
    data.load_dataset(_cfg(path=str(tmp_path)))


def test_idx_corrupt_gzip(tmp_path):
  _write_idx_dir(tmp_path, gz=True)
  with open(tmp_path / (TRAIN_LABELS + ".gz"), "wb") as f:
    f.write(b"not gzip at all")
  with pytest.raises(data.DataError, match=TRAIN_LABELS):
    data.load_dataset(_cfg(path=str(tmp_path)))


def test_idx_label_out_of_range(tmp_path):
  _write_idx_dir(tmp_path, test_labels=_idx_bytes([1, 10, 2], LABELS_MAGIC))
  with pytest.raises(data.DataError, match=f"{TEST_LABELS}.*label 10"):
    data.load_dataset(_cfg(path=str(tmp_path)))


def test_idx_count_mismatch(tmp_path):
  _write_idx_dir(tmp_path, train_labels=_idx_bytes([1, 2], LABELS_MAGIC))
  with pytest.raises(data.DataError) as err:
    data.load_dataset(_cfg(path=str(tmp_path)))
  assert TRAIN_IMAGES in str(err.value) and TRAIN_LABELS in str(err.value)


# -------------------------------------------------------- CIFAR-10 and -100.

# The real archive, folder and batch names (train members, then the test member),
# written out here rather than taken from gevb_jax.data.
CIFAR_ARCHIVES = {
  "cifar10": "cifar-10-python.tar.gz",
  "cifar100": "cifar-100-python.tar.gz",
}
CIFAR_DIRS = {"cifar10": "cifar-10-batches-py", "cifar100": "cifar-100-python"}
CIFAR_MEMBERS = {
  "cifar10": tuple(f"data_batch_{i}" for i in range(1, 6)) + ("test_batch",),
  "cifar100": ("train", "test"),
}
CIFAR_CLASSES = {"cifar10": 10, "cifar100": 100}
CIFAR_NAMES = tuple(CIFAR_MEMBERS)


def _cifar_pixels(index):
  """(channel, row, col) of the single bright pixel of each image of batch `index`."""
  return [(index % 3, 31 - index, 2 * index + 1), (2, index, 0)]


def _cifar_batch(name, member, labels=None, data=None):
  """A pickled batch of `name` with one 255 pixel per image at _cifar_pixels.

  Labels, unless given: CIFAR-10 batch i [i, 9]; CIFAR-100 batch i fine labels
  [37 + i, 99] beside coarse labels [i, 19] that the loader must not read.
  """
  index = CIFAR_MEMBERS[name].index(member)
  if data is None:
    data = np.zeros((2, 3072), np.uint8)
    for row, (c, r, col) in zip(data, _cifar_pixels(index)):
      row[c * 1024 + r * 32 + col] = 255
  batch = {b"batch_label": member.encode(), b"data": data}
  if name == "cifar10":
    batch[b"labels"] = [index, 9] if labels is None else labels
  else:
    batch[b"fine_labels"] = [37 + index, 99] if labels is None else labels
    batch[b"coarse_labels"] = [index, 19]
  return pickle.dumps(batch)


def _cifar_members(name, **replace):
  members = {m: _cifar_batch(name, m) for m in CIFAR_MEMBERS[name]}
  members.update(replace)
  return {m: raw for m, raw in members.items() if raw is not None}


def _write_cifar_dir(root, name="cifar10", **replace):
  """Writes `name`'s extracted folder; `replace` overrides (None: drops) a member."""
  directory = root / CIFAR_DIRS[name]
  directory.mkdir(parents=True)
  for member, raw in _cifar_members(name, **replace).items():
    (directory / member).write_bytes(raw)
  return directory


def _write_cifar_tar(root, name="cifar10", **replace):
  """Writes `name`'s python archive; `replace` overrides (None: drops) a member."""
  path = root / CIFAR_ARCHIVES[name]
  with tarfile.open(path, "w:gz") as tar:
    for member, raw in _cifar_members(name, **replace).items():
      info = tarfile.TarInfo(f"{CIFAR_DIRS[name]}/{member}")
      info.size = len(raw)
      tar.addfile(info, io.BytesIO(raw))
  return path


def _where(path, name, member):
  """How errors name a member: inside the archive, or the file of the folder."""
  if path.is_dir():
    return f"{path / member}"
  return f"{path}:{CIFAR_DIRS[name]}/{member}"


@pytest.mark.parametrize(
  "name,train_y,test_y",
  [("cifar10", [0, 9, 1, 9, 2, 9, 3, 9, 4, 9], [5, 9]), ("cifar100", [37, 99], [38, 99])],
)
@pytest.mark.parametrize("layout", ["tar", "dir_with_tar", "dir", "dir_with_dir"])
def test_cifar_loads_hwc_scaled_in_order(tmp_path, layout, name, train_y, test_y):
  if layout.startswith("tar") or layout == "dir_with_tar":
    path = _write_cifar_tar(tmp_path, name)
  else:
    path = _write_cifar_dir(tmp_path, name)
  if layout.startswith("dir_with"):
    path = tmp_path
  ds = data.load_dataset(_cfg(source=name, path=str(path)))
  assert ds.train_x.shape == (len(train_y), 32, 32, 3)
  assert ds.test_x.shape == (2, 32, 32, 3)
  assert ds.train_x.dtype == ds.test_x.dtype == np.float32
  assert ds.train_y.dtype == ds.test_y.dtype == np.int32
  np.testing.assert_array_equal(ds.train_y, train_y)
  np.testing.assert_array_equal(ds.test_y, test_y)
  images = np.concatenate([ds.train_x, ds.test_x])
  pixels = [p for i in range(len(CIFAR_MEMBERS[name])) for p in _cifar_pixels(i)]
  expected = np.full_like(images, -1.0)
  for image, (c, r, col) in zip(expected, pixels):
    image[r, col, c] = 1.0
  np.testing.assert_array_equal(images, expected)
  assert (ds.num_classes, ds.name) == (CIFAR_CLASSES[name], name)


def test_cifar_sources_do_not_read_each_others_archives(tmp_path):
  _write_cifar_tar(tmp_path, "cifar10")
  with pytest.raises(data.DataError) as err:
    data.load_dataset(_cfg(source="cifar100", path=str(tmp_path)))
  assert "cifar-100-python.tar.gz" in str(err.value)
  _write_cifar_dir(tmp_path, "cifar100")
  ds = data.load_dataset(_cfg(source="cifar10", path=str(tmp_path)))
  assert (len(ds.train_y), ds.num_classes) == (10, 10)


@pytest.mark.parametrize("name", CIFAR_NAMES)
def test_cifar_missing_path(tmp_path, name):
  missing = tmp_path / "nothing-here"
  with pytest.raises(data.DataError, match=CIFAR_ARCHIVES[name]) as err:
    data.load_dataset(_cfg(source=name, path=str(missing)))
  assert str(missing) in str(err.value)


@pytest.mark.parametrize("name", CIFAR_NAMES)
def test_cifar_empty_path(name):
  with pytest.raises(data.DataError, match=f"needs cfg.path.*{CIFAR_ARCHIVES[name]}"):
    data.load_dataset(_cfg(source=name, path=""))


@pytest.mark.parametrize("name,member", [("cifar10", "test_batch"), ("cifar100", "test")])
def test_cifar_missing_tar_member(tmp_path, name, member):
  path = _write_cifar_tar(tmp_path, name, **{member: None})
  with pytest.raises(data.DataError, match=f"{CIFAR_DIRS[name]}/{member} not found"):
    data.load_dataset(_cfg(source=name, path=str(path)))


@pytest.mark.parametrize(
  "name,member", [("cifar10", "data_batch_3"), ("cifar100", "train")]
)
def test_cifar_missing_dir_file(tmp_path, name, member):
  directory = _write_cifar_dir(tmp_path, name, **{member: None})
  with pytest.raises(data.DataError) as err:
    data.load_dataset(_cfg(source=name, path=str(tmp_path)))
  assert f"batch {directory / member} not found" in str(err.value)


@pytest.mark.parametrize(
  "name,title", [("cifar10", "CIFAR-10"), ("cifar100", "CIFAR-100")]
)
def test_cifar_corrupt_archive(tmp_path, name, title):
  path = tmp_path / CIFAR_ARCHIVES[name]
  path.write_bytes(b"\x1f\x8b garbage")
  with pytest.raises(data.DataError, match=f"readable {title} archive") as err:
    data.load_dataset(_cfg(source=name, path=str(path)))
  assert str(err.value).startswith(f"{path}: ") and "\n" not in str(err.value)


@pytest.mark.parametrize("name", CIFAR_NAMES)
def test_cifar_truncated_archive_is_one_line_naming_it(tmp_path, name):
  path = _write_cifar_tar(tmp_path, name)
  raw = path.read_bytes()
  path.write_bytes(raw[: len(raw) // 2])  # Cut inside a member's data.
  with pytest.raises(data.DataError) as err:
    data.load_dataset(_cfg(source=name, path=str(path)))
  assert str(err.value).startswith(f"{path}: not a readable ")
  assert "\n" not in str(err.value)


@pytest.mark.parametrize(
  "name,member", [("cifar10", "data_batch_2"), ("cifar100", "train")]
)
@pytest.mark.parametrize("damage", ["garbage", "truncated"])
@pytest.mark.parametrize("writer", [_write_cifar_tar, _write_cifar_dir])
def test_cifar_corrupt_pickle(tmp_path, writer, damage, name, member):
  raw = _cifar_batch(name, member)
  bad = b"\x80\x04 not a pickle" if damage == "garbage" else raw[: len(raw) // 2]
  path = writer(tmp_path, name, **{member: bad})
  with pytest.raises(data.DataError) as err:
    data.load_dataset(_cfg(source=name, path=str(path)))
  assert str(err.value).startswith(f"{_where(path, name, member)}: corrupt pickle")
  assert "\n" not in str(err.value)


@pytest.mark.parametrize(
  "name,member,key",
  [("cifar10", "test_batch", "b'labels'"), ("cifar100", "test", "b'fine_labels'")],
)
def test_cifar_batch_without_the_labels_it_needs(tmp_path, name, member, key):
  # A CIFAR-100 batch with coarse labels only, a CIFAR-10 batch with CIFAR-100's.
  batch = {b"data": np.zeros((2, 3072), np.uint8), b"coarse_labels": [0, 1]}
  if name == "cifar10":
    batch[b"fine_labels"] = [0, 1]
  path = _write_cifar_tar(tmp_path, name, **{member: pickle.dumps(batch)})
  with pytest.raises(data.DataError) as err:
    data.load_dataset(_cfg(source=name, path=str(path)))
  where = _where(path, name, member)
  assert str(err.value) == f"{where}: expected a dict with b'data' and {key}"


@pytest.mark.parametrize(
  "name,member", [("cifar10", "data_batch_4"), ("cifar100", "test")]
)
def test_cifar_wrong_data_length(tmp_path, name, member):
  short = _cifar_batch(name, member, data=np.zeros((2, 3000), np.uint8))
  path = _write_cifar_tar(tmp_path, name, **{member: short})
  with pytest.raises(data.DataError, match=rf"{member}: .*\(N, 3072\)"):
    data.load_dataset(_cfg(source=name, path=str(path)))


@pytest.mark.parametrize(
  "name,member,label",
  [
    ("cifar10", "test_batch", -1),
    ("cifar10", "data_batch_2", 10),
    ("cifar100", "train", 100),
    ("cifar100", "test", -1),
  ],
)
@pytest.mark.parametrize("writer", [_write_cifar_tar, _write_cifar_dir])
def test_cifar_label_out_of_range(tmp_path, writer, name, member, label):
  bad = _cifar_batch(name, member, labels=[3, label])
  path = writer(tmp_path, name, **{member: bad})
  with pytest.raises(data.DataError) as err:
    data.load_dataset(_cfg(source=name, path=str(path)))
  assert str(err.value) == (
    f"{_where(path, name, member)}: label {label} outside [0, {CIFAR_CLASSES[name]})"
  )


@pytest.mark.parametrize(
  "name,member", [("cifar10", "data_batch_1"), ("cifar100", "train")]
)
def test_cifar_label_count_mismatch(tmp_path, name, member):
  bad = _cifar_batch(name, member, labels=[1, 2, 3])
  path = _write_cifar_dir(tmp_path, name, **{member: bad})
  with pytest.raises(data.DataError, match=f"{member}: 2 images"):
    data.load_dataset(_cfg(source=name, path=str(path)))


# ------------------------------------------------------------------- digits.


def test_digits_split_is_deterministic_stratified_partition():
  first = data.load_dataset(_cfg(source="digits"))
  second = data.load_dataset(_cfg(source="digits"))
  for a, b in zip(first[:4], second[:4]):
    np.testing.assert_array_equal(a, b)
  assert first.train_x.shape == (1437, 8, 8, 1)
  assert first.test_x.shape == (360, 8, 8, 1)
  assert first.train_x.dtype == np.float32 and first.train_y.dtype == np.int32
  assert (first.num_classes, first.name) == (10, "digits")

  def rows(images, labels):
    return collections.Counter(
      (label, image.tobytes()) for image, label in zip(images, labels)
    )

  digits = sk_datasets.load_digits()
  expected = (digits.images / 8 - 1).astype(np.float32)[..., None]
  assert rows(first.train_x, first.train_y) + rows(first.test_x, first.test_y) == rows(
    expected, digits.target
  )
  assert first.train_x.min() == -1.0 and first.train_x.max() == 1.0

  class_share = np.bincount(digits.target) / len(digits.target)
  assert np.all(np.abs(np.bincount(first.test_y) - 360 * class_share) <= 1)


def test_split_shape_is_the_loaded_datas_and_loads_no_known_set(monkeypatch):
  configs = [_cfg(source="digits")]
  if os.path.isdir(FASHION_MNIST_DIR):
    configs.append(_cfg(path=FASHION_MNIST_DIR, name="fashion_mnist"))
  for cfg in configs:
    ds = data.load_dataset(cfg)
    shape = (len(ds.train_x), len(ds.test_x), ds.train_x.shape[1:], ds.num_classes)
    assert data.split_shape(cfg) == shape
  monkeypatch.setattr(data, "load_dataset", None)  # Offline: nothing is fetched.
  cifar100 = _cfg(source="download", name="cifar100")
  assert data.split_shape(cifar100) == (50_000, 10_000, (32, 32, 3), 100)


# ----------------------------------------------------------------- download.


class _Mirror:
  """An HTTP server on 127.0.0.1 serving `root`, in a thread.

  Attributes:
    url: its base URL.
    requests: the paths asked for, in order.
    cut: if True, each body stops halfway under the full Content-Length and
      the connection closes, as when a download is cut off.
  """

  def __init__(self, root):
    self.root, self.requests, self.cut = root, [], False
    mirror = self

    class Handler(http.server.BaseHTTPRequestHandler):
      def do_GET(self):
        mirror.requests.append(self.path)
        path = mirror.root / self.path.lstrip("/")
        if not path.is_file():
          self.send_error(404)
          return
        body = path.read_bytes()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body[: len(body) // 2] if mirror.cut else body)

      def log_message(self, *args):
        pass

    self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    self.url = f"http://127.0.0.1:{self.server.server_port}"
    threading.Thread(target=self.server.serve_forever, args=(0.01,), daemon=True).start()

  def stop(self):
    self.server.shutdown()
    self.server.server_close()


def _archive_of(path):
  """The `download.Archive` (name, size, SHA-256) of a file on disk."""
  raw = path.read_bytes()
  return download.Archive(path.name, len(raw), hashlib.sha256(raw).hexdigest())


@pytest.fixture
def mirror(tmp_path, monkeypatch):
  """Serves tiny MNIST, CIFAR-10 and CIFAR-100 archives under the real file names,
  laid out like the cache, and makes their sizes and SHA-256 the published ones."""
  root = tmp_path / "mirror"
  (root / "mnist").mkdir(parents=True)
  _write_idx_dir(root / "mnist", gz=True)
  for name in CIFAR_NAMES:
    (root / name).mkdir()
    _write_cifar_tar(root / name, name)
  for name, archives in list(download.ARCHIVES.items()):
    monkeypatch.setitem(
      download.ARCHIVES,
      name,
      tuple(_archive_of(root / name / a.filename) for a in archives),
    )
  monkeypatch.delenv(download.CACHE_ENV, raising=False)
  monkeypatch.delenv(download.MIRROR_ENV, raising=False)
  server = _Mirror(root)
  yield server
  server.stop()


def _download_cfg(mirror, cache, name="mnist"):
  return _cfg(source="download", name=name, cache_dir=str(cache), mirror=mirror.url)


def _local_copy(mirror, name):
  """The served archives of `name` loaded straight from disk."""
  if name == "mnist":
    return data.load_dataset(_cfg(source="idx", path=str(mirror.root / name)))
  path = mirror.root / name / CIFAR_ARCHIVES[name]
  return data.load_dataset(_cfg(source=name, path=str(path)))


def _assert_same_arrays(ds, expected):
  for got, want in zip(ds[:4], expected[:4]):
    assert got.dtype == want.dtype
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("name", ["mnist", *CIFAR_NAMES])
def test_download_loads_the_served_archives_and_caches_only_them(mirror, tmp_path, name):
  ds = data.load_dataset(_download_cfg(mirror, tmp_path / "cache", name))
  _assert_same_arrays(ds, _local_copy(mirror, name))
  assert (ds.num_classes, ds.name) == (CIFAR_CLASSES.get(name, 10), name)
  filenames = [a.filename for a in download.ARCHIVES[name]]
  assert mirror.requests == [f"/{name}/{f}" for f in filenames]
  assert sorted(os.listdir(tmp_path / "cache" / name)) == sorted(filenames)
  umask = os.umask(0)
  os.umask(umask)
  for filename in filenames:  # Readable as any file the user creates.
    mode = os.stat(tmp_path / "cache" / name / filename).st_mode
    assert stat.S_IMODE(mode) == 0o666 & ~umask


def test_download_mnist_arrays_are_the_idx_contents(mirror, tmp_path):
  ds = data.load_dataset(_download_cfg(mirror, tmp_path / "cache"))
  train_x, train_y, test_x, test_y = _idx_arrays()
  np.testing.assert_array_equal(ds.train_x[..., 0], _scaled(train_x))
  np.testing.assert_array_equal(ds.test_x[..., 0], _scaled(test_x))
  np.testing.assert_array_equal(ds.train_y, train_y)
  np.testing.assert_array_equal(ds.test_y, test_y)


def test_download_from_a_file_url_mirror(mirror, tmp_path):
  cfg = _cfg(
    source="download",
    name="mnist",
    cache_dir=str(tmp_path / "cache"),
    mirror=mirror.root.as_uri(),
  )
  _assert_same_arrays(data.load_dataset(cfg), _local_copy(mirror, "mnist"))
  assert not mirror.requests


def test_download_second_run_reads_the_cache_without_the_network(
  mirror, tmp_path, monkeypatch
):
  # Locations from the environment this time; cfg leaves them empty.
  monkeypatch.setenv(download.CACHE_ENV, str(tmp_path / "env-cache"))
  monkeypatch.setenv(download.MIRROR_ENV, mirror.url)
  cfg = _cfg(source="download", name="cifar10", cache_dir="", mirror="")
  first = data.load_dataset(cfg)
  assert len(mirror.requests) == 1
  assert os.listdir(tmp_path / "env-cache" / "cifar10") == ["cifar-10-python.tar.gz"]
  mirror.stop()
  second = data.load_dataset(cfg)
  _assert_same_arrays(second, first)
  assert len(mirror.requests) == 1


@pytest.mark.parametrize("wrong", ["sha256", "size"])
def test_download_wrong_checksum_is_one_line_and_caches_nothing(
  mirror, tmp_path, monkeypatch, wrong
):
  archives = list(download.ARCHIVES["mnist"])
  served = archives[1]
  if wrong == "sha256":
    archives[1] = served._replace(sha256="0" * 64)
    expected = f"has sha256 {served.sha256}, expected {'0' * 64}"
  else:
    archives[1] = served._replace(size=served.size - 1)
    expected = f"is larger than the published {served.size - 1} bytes"
  monkeypatch.setitem(download.ARCHIVES, "mnist", tuple(archives))
  with pytest.raises(data.DataError) as err:
    data.load_dataset(_download_cfg(mirror, tmp_path / "cache"))
  message = str(err.value)
  assert "\n" not in message
  assert f"{mirror.url}/mnist/{served.filename} {expected}" in message
  # The file checked before it stays; the bad one and its temporary file do not.
  assert os.listdir(tmp_path / "cache" / "mnist") == [archives[0].filename]


def test_download_cut_off_caches_nothing_and_a_rerun_succeeds(mirror, tmp_path):
  cfg = _download_cfg(mirror, tmp_path / "cache", "cifar10")
  mirror.cut = True
  with pytest.raises(data.DataError) as err:
    data.load_dataset(cfg)
  size = download.ARCHIVES["cifar10"][0].size
  assert f"stopped after {size // 2} of {size} bytes" in str(err.value)
  assert "\n" not in str(err.value)
  assert os.listdir(tmp_path / "cache" / "cifar10") == []
  mirror.cut = False
  _assert_same_arrays(data.load_dataset(cfg), _local_copy(mirror, "cifar10"))


@pytest.mark.parametrize(
  "error",
  [ConnectionResetError("reset by peer"), KeyboardInterrupt()],
  ids=["connection_reset", "keyboard_interrupt"],
)
def test_download_error_mid_stream_leaves_no_partial_file(
  mirror, tmp_path, monkeypatch, error
):
  monkeypatch.setattr(download, "CHUNK_BYTES", 16)
  real_urlopen = urllib.request.urlopen
  reads = []

  def failing_urlopen(url, timeout):
    response = real_urlopen(url, timeout=timeout)
    real_read = response.read

    def read(amt):
      reads.append(amt)
      if len(reads) > 1:
        raise error
      return real_read(amt)

    response.read = read
    return response

  monkeypatch.setattr(urllib.request, "urlopen", failing_urlopen)
  cfg = _download_cfg(mirror, tmp_path / "cache", "cifar10")
  expected = (
    KeyboardInterrupt if isinstance(error, KeyboardInterrupt) else (data.DataError)
  )
  with pytest.raises(expected):
    data.load_dataset(cfg)
  assert len(reads) == 2  # One chunk was written before the failure.
  assert os.listdir(tmp_path / "cache" / "cifar10") == []
  monkeypatch.setattr(urllib.request, "urlopen", real_urlopen)
  _assert_same_arrays(data.load_dataset(cfg), _local_copy(mirror, "cifar10"))


def test_download_error_names_the_url_and_where_to_put_the_file(mirror, tmp_path):
  os.remove(mirror.root / "cifar10" / "cifar-10-python.tar.gz")
  with pytest.raises(data.DataError) as err:
    data.load_dataset(_download_cfg(mirror, tmp_path / "cache", "cifar10"))
  message = str(err.value)
  assert "\n" not in message and "404" in message
  assert f"{mirror.url}/cifar10/cifar-10-python.tar.gz" in message
  target = tmp_path / "cache" / "cifar10" / "cifar-10-python.tar.gz"
  assert f"by hand to {target}" in message
  assert os.listdir(target.parent) == []


@pytest.mark.parametrize("damage", ["same_size", "truncated"])
def test_download_refuses_a_damaged_cached_file(mirror, tmp_path, damage):
  cfg = _download_cfg(mirror, tmp_path / "cache")
  data.load_dataset(cfg)
  cached = tmp_path / "cache" / "mnist" / TEST_IMAGES
  cached = cached.with_name(cached.name + ".gz")
  raw = cached.read_bytes()
  cached.write_bytes(bytes(len(raw)) if damage == "same_size" else raw[:-1])
  mirror.stop()
  with pytest.raises(data.DataError) as err:
    data.load_dataset(cfg)
  message = str(err.value)
  assert "\n" not in message and str(cached) in message
  assert "delete it to download it again" in message
  expected = (
    download.ARCHIVES["mnist"][2].sha256
    if damage == "same_size"
    else f"{len(raw) - 1} bytes, expected {len(raw)}"
  )
  assert expected in message


def test_download_into_an_impossible_cache_is_one_line(mirror, tmp_path):
  (tmp_path / "file").write_bytes(b"")
  cache = tmp_path / "file" / "cache"
  with pytest.raises(data.DataError) as err:
    data.load_dataset(_download_cfg(mirror, cache))
  assert str(err.value).startswith(f"cannot create cache directory {cache}")
  assert "\n" not in str(err.value) and not mirror.requests


def test_download_archives_are_well_formed_and_the_ones_the_loaders_read():
  for name, archives in download.ARCHIVES.items():
    assert name in data.NUM_CLASSES and name in download.ORIGINS
    for archive in archives:
      assert archive.size > 0 and len(archive.sha256) == 64
      assert set(archive.sha256) <= set("0123456789abcdef")
  for name in CIFAR_NAMES:
    assert [a.filename for a in download.ARCHIVES[name]] == [CIFAR_ARCHIVES[name]]


def test_download_unknown_dataset_lists_choices(tmp_path):
  with pytest.raises(data.DataError, match="one of mnist, cifar10, cifar100$"):
    data.load_dataset(
      _cfg(source="download", name="fashion_mnist", cache_dir=str(tmp_path))
    )
  assert not os.listdir(tmp_path)


def test_download_locations_argument_then_environment_then_default(monkeypatch, tmp_path):
  monkeypatch.delenv(download.CACHE_ENV, raising=False)
  monkeypatch.delenv(download.MIRROR_ENV, raising=False)
  monkeypatch.setenv("HOME", str(tmp_path))
  assert download.cache_root() == str(tmp_path / ".cache" / "gevb_jax")
  assert download.archive_url("cifar10", "c.tar.gz") == (
    "https://www.cs.toronto.edu/~kriz/c.tar.gz"
  )
  assert download.archive_url("cifar100", "cifar-100-python.tar.gz") == (
    "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz"
  )
  monkeypatch.setenv(download.CACHE_ENV, "/env/cache")
  monkeypatch.setenv(download.MIRROR_ENV, "http://env.example/data")
  assert download.cache_root() == "/env/cache"
  assert download.archive_url("mnist", "m.gz") == ("http://env.example/data/mnist/m.gz")
  assert download.cache_root("~/mine") == str(tmp_path / "mine")
  assert download.archive_url("mnist", "m.gz", "file:///srv/mirror/") == (
    "file:///srv/mirror/mnist/m.gz"
  )


def test_download_cli_fills_the_cache(mirror, tmp_path, monkeypatch, capsys):
  monkeypatch.setenv(download.CACHE_ENV, str(tmp_path / "cache"))
  monkeypatch.setenv(download.MIRROR_ENV, mirror.url)
  assert download.main(["download", "mnist", "cifar100"]) == 0
  assert capsys.readouterr().out.split() == [
    str(tmp_path / "cache" / name) for name in ("mnist", "cifar100")
  ]
  assert len(os.listdir(tmp_path / "cache" / "mnist")) == 4
  assert os.listdir(tmp_path / "cache" / "cifar100") == ["cifar-100-python.tar.gz"]
  assert not os.path.exists(tmp_path / "cache" / "cifar10")
  assert download.main(["download", "svhn"]) == 1
  assert capsys.readouterr().err.startswith("error: no download for dataset 'svhn'")


@pytest.mark.parametrize(
  "module,name", [("mnist", "mnist"), ("cifar", "cifar10"), ("cifar100", "cifar100")]
)
def test_configs_download_by_default(mirror, tmp_path, module, name):
  config = importlib.import_module(f"configs.{module}").get_config()
  assert (config.data.source, config.data.name) == ("download", name)
  config.data.cache_dir, config.data.mirror = str(tmp_path), mirror.url
  _assert_same_arrays(data.load_dataset(config.data), _local_copy(mirror, name))


# ------------------------------------------------------------------- source.


def test_unknown_source_lists_choices():
  with pytest.raises(data.DataError) as err:
    data.load_dataset(_cfg(source="bogus"))
  message = str(err.value)
  assert "'bogus'" in message
  assert all(choice in message for choice in data.SOURCES)


def test_tfds_unknown_name_lists_choices():
  with pytest.raises(data.DataError, match="mnist, fashion_mnist, cifar10, cifar100$"):
    data.load_dataset(_cfg(source="tfds", name="imagenet"))


def test_tfds_missing_package_says_how_to_install(monkeypatch):
  monkeypatch.setitem(sys.modules, "tensorflow_datasets", None)
  with pytest.raises(data.DataError, match=r"pip install -e \.\[tfds\]"):
    data.load_dataset(_cfg(source="tfds", name="mnist"))


def _fake_tfds(monkeypatch, labels):
  """Installs a stand-in for tensorflow_datasets (which need not be installed) that
  serves two white 32x32x3 images per split with `labels[split]`; returns the calls
  to its `load`."""
  loads = []

  def load(name, *, split, batch_size, data_dir):
    loads.append((name, split, batch_size, data_dir))
    images = np.full((2, 32, 32, 3), 255, np.uint8)
    return {"image": images, "label": np.array(labels[split], np.int64)}

  module = types.ModuleType("tensorflow_datasets")
  module.load, module.as_numpy = load, lambda tree: tree
  monkeypatch.setitem(sys.modules, "tensorflow_datasets", module)
  return loads


@pytest.mark.parametrize("name,num_classes", [("cifar10", 10), ("cifar100", 100)])
def test_tfds_labels_are_checked_against_the_datasets_classes(
  monkeypatch, tmp_path, name, num_classes
):
  top = num_classes - 1
  labels = {"train": [top, 0], "test": [1, top]}
  loads = _fake_tfds(monkeypatch, labels)
  cfg = _cfg(source="tfds", name=name, data_dir=str(tmp_path))
  ds = data.load_dataset(cfg)
  assert loads == [(name, split, -1, str(tmp_path)) for split in ("train", "test")]
  assert (ds.num_classes, ds.name) == (num_classes, name)
  np.testing.assert_array_equal(ds.train_y, [top, 0])
  np.testing.assert_array_equal(ds.test_y, [1, top])
  assert ds.train_y.dtype == np.int32
  np.testing.assert_array_equal(ds.test_x, np.ones((2, 32, 32, 3), np.float32))
  labels["test"] = [1, num_classes]
  with pytest.raises(data.DataError) as err:
    data.load_dataset(cfg)
  expected = f"tfds {name}[test]: label {num_classes} outside [0, {num_classes})"
  assert str(err.value) == expected


@pytest.mark.parametrize(
  "name,shape,num_classes",
  [("fashion_mnist", (28, 28, 1), 10), ("cifar100", (32, 32, 3), 100)],
)
def test_tfds_mock_data(tmp_path, monkeypatch, name, shape, num_classes):
  tfds = pytest.importorskip(
    "tensorflow_datasets",
    reason="tensorflow-datasets not installed (pip install -e .[tfds])",
  )
  # Mocked builders have no split sizes, so batch_size=-1 would batch by
  # sys.maxsize, which TensorFlow cannot allocate; give them the mock's size.
  monkeypatch.setattr(tfds.core.SplitDict, "total_num_examples", property(lambda self: 6))
  with tfds.testing.mock_data(num_examples=6):
    ds = data.load_dataset(_cfg(source="tfds", name=name, data_dir=str(tmp_path)))
  assert ds.train_x.shape == ds.test_x.shape == (6, *shape)
  assert ds.train_x.dtype == np.float32 and ds.train_y.dtype == np.int32
  pixels = (ds.train_x + 1) * 127.5
  np.testing.assert_allclose(pixels, np.round(pixels), atol=1e-4)
  assert pixels.min() >= 0 and pixels.max() <= 255
  assert ds.train_y.min() >= 0 and ds.train_y.max() < num_classes
  assert (ds.num_classes, ds.name) == (num_classes, name)


# ----------------------------------------------------------------- batching.


@pytest.mark.parametrize(
  "num_examples,seed,epoch", [(1, 0, 0), (37, 2**32 - 1, 1000), (300, 12345, 7)]
)
def test_epoch_permutation_is_a_deterministic_permutation(num_examples, seed, epoch):
  perm = data.epoch_permutation(num_examples, seed, epoch)
  np.testing.assert_array_equal(np.sort(perm), np.arange(num_examples))
  np.testing.assert_array_equal(perm, data.epoch_permutation(num_examples, seed, epoch))


def test_epoch_permutation_changes_with_epoch_and_seed():
  base = data.epoch_permutation(60000, seed=0, epoch=0)
  assert not np.array_equal(base, data.epoch_permutation(60000, 0, 1))
  assert not np.array_equal(base, data.epoch_permutation(60000, 1, 0))
  assert not np.array_equal(
    data.epoch_permutation(60000, 1, 2), data.epoch_permutation(60000, 2, 1)
  )


def test_batch_indices_drawn_for_many_seeds_at_once_match_one_at_a_time():
  """The trainer draws every seed's batches in one vmapped call on the devices."""
  seeds, epochs = jnp.array([0, 7, 2**32 - 1], jnp.uint32), jnp.array([3, 3, 9])
  draw = jax.jit(jax.vmap(functools.partial(data.batch_indices, 50, 8)))
  for got, seed, epoch in zip(
    draw(seeds, epochs), (0, 7, 2**32 - 1), (3, 3, 9), strict=True
  ):
    np.testing.assert_array_equal(got, data.batch_indices(50, 8, seed, epoch))


def test_batch_indices_drop_remainder_and_are_distinct():
  batches = data.batch_indices(103, batch_size=10, seed=3, epoch=5)
  assert batches.shape == (10, 10)
  assert len(np.unique(batches)) == 100
  np.testing.assert_array_equal(batches.ravel(), data.epoch_permutation(103, 3, 5)[:100])
  exact = data.batch_indices(100, batch_size=25, seed=3, epoch=5)
  np.testing.assert_array_equal(np.sort(exact.ravel()), np.arange(100))


@pytest.mark.parametrize("batch_size", [0, 11])
def test_batch_indices_rejects_bad_batch_size(batch_size):
  with pytest.raises(data.DataError) as err:
    data.batch_indices(10, batch_size, seed=0, epoch=0)
  assert f"batch_size {batch_size}" in str(err.value)
  assert "number of examples 10" in str(err.value)
