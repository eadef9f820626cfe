"""Downloads dataset archives into a local cache, verifies them, and reuses them.

`fetch(name)` returns the cache directory ``<cache>/<name>`` holding the raw
archives of `name`, a key of `ARCHIVES` (MNIST: the four idx .gz files; CIFAR:
the python tar.gz), each with the published size and SHA-256 listed there:

* A missing file is downloaded into a hidden temporary file in that directory,
  checked, and only then renamed into place (`os.replace`). A download that is
  cut off, fails its check, or is interrupted leaves nothing behind, and
  processes fetching at the same time cannot see each other's partial files.
* A file already in the cache is used without touching the network; its size
  and full SHA-256 are checked on every call (0.13 s for CIFAR-10's 170 MB on
  a 2-core CPU), so a damaged or substituted file is refused.

Where files come from and go (a non-empty argument wins over the variable):

* cache: `cache_dir`, else ``$GEVB_JAX_DATA``, else ``~/.cache/gevb_jax``.
* source: the dataset's origin (`ORIGINS`), or a mirror laid out like the
  cache, given by `mirror` or ``$GEVB_JAX_MIRROR``: files are fetched from
  ``<mirror>/<name>/<filename>``, so a filled cache directory served over HTTP,
  or named by a ``file://`` URL, is a mirror.

Offline, copy the files into ``<cache>/<name>/`` by hand; they are checked as
if downloaded. ``python -m gevb_jax.download [NAME ...]`` fills the cache with
the named datasets, by default all of `ARCHIVES`, ahead of time (e.g. on a login
node before a cluster job).

A process killed outright (SIGKILL) mid-download may leave a hidden
``.<filename>.*.part`` file in the cache; it is never read and can be deleted.
"""

import collections
import contextlib
import hashlib
import http.client
import os
import sys
import urllib.request
import uuid

import tqdm
from absl import logging

CACHE_ENV = "GEVB_JAX_DATA"
MIRROR_ENV = "GEVB_JAX_MIRROR"
DEFAULT_CACHE = os.path.join("~", ".cache", "gevb_jax")
TIMEOUT_S = 60  # per blocking socket operation, not for the whole file
CHUNK_BYTES = 1 << 20


class DownloadError(Exception):
  """An archive could not be downloaded, or a file's size or checksum is wrong."""


# A published file: its name (at the origin and in the cache), its size in
# bytes, and its SHA-256 as a lowercase hex string.
Archive = collections.namedtuple("Archive", ("filename", "size", "sha256"))


# MNIST from torchvision's first mirror (yann.lecun.com often refuses
# downloads). Sizes and SHA-256 from TensorFlow Datasets'
# tensorflow_datasets/url_checksums/mnist.txt (commit 31f1255e), for the same
# files at storage.googleapis.com/cvdf-datasets/mnist/. torchvision's MD5s
# (torchvision/datasets/mnist.py), for cross-checking: train-images
# f68b3c2dcbeaaa9fbdd348bbdeb94873, train-labels d53e105ee54ea40749a09fcbcd1e9432,
# t10k-images 9fb629c4189551a2d022fa330f9573f3, t10k-labels
# ec29112dd5afa0611ce80d1b7f02629c.
#
# CIFAR-10 from its authors' page, https://www.cs.toronto.edu/~kriz/cifar.html,
# which publishes MD5 c58f30108f718f92721af3b95e74349a. SHA-256 from TensorFlow
# Datasets' tensorflow_datasets/url_checksums/cifar10.csv (commit 2740d30f),
# also Keras's keras.datasets.cifar10.load_data file_hash; the size is the one
# other projects' manifests record beside this SHA-256 and that MD5.
#
# CIFAR-100 from the same page, which publishes MD5
# eb9058c3a382ffc7106e4002c42a8d85 (also torchvision/datasets/cifar.py, CIFAR100).
# SHA-256 from TensorFlow Datasets' tensorflow_datasets/url_checksums/cifar100.csv
# (commit 2740d30f), also Keras's keras.datasets.cifar100.load_data file_hash
# (keras/src/datasets/cifar100.py); the size is the one Keras's and torchvision's
# download progress report for this file and other projects' manifests record
# beside this SHA-256 and that MD5.
ORIGINS = {
  "mnist": "https://ossci-datasets.s3.amazonaws.com/mnist/",
  "cifar10": "https://www.cs.toronto.edu/~kriz/",
  "cifar100": "https://www.cs.toronto.edu/~kriz/",
}
ARCHIVES = {
  "mnist": (
    Archive(
      "train-images-idx3-ubyte.gz",
      9912422,
      "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
    ),
    Archive(
      "train-labels-idx1-ubyte.gz",
      28881,
      "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
    ),
    Archive(
      "t10k-images-idx3-ubyte.gz",
      1648877,
      "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
    ),
    Archive(
      "t10k-labels-idx1-ubyte.gz",
      4542,
      "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
    ),
  ),
  "cifar10": (
    Archive(
      "cifar-10-python.tar.gz",
      170498071,
      "6d958be074577803d12ecdefd02955f39262c83c16fe9348329d7fe0b5c001ce",
    ),
  ),
  "cifar100": (
    Archive(
      "cifar-100-python.tar.gz",
      169001437,
      "85cd44d02ba6437773c5bbd22e183051d648de2e7d6b014e1ef29b855ba677a7",
    ),
  ),
}


def fetch(name, cache_dir="", mirror=""):
  """Returns the cache directory holding `name`'s verified archives.

  Args:
    name: a key of `ARCHIVES`.
    cache_dir: the cache root; "" for $GEVB_JAX_DATA, else ~/.cache/gevb_jax.
    mirror: base URL of a mirror laid out like the cache; "" for
      $GEVB_JAX_MIRROR, else the dataset's origin.

  Returns:
    ``<cache>/<name>``, holding every file of ``ARCHIVES[name]``.

  Raises:
    DownloadError: for an unknown name, a cache directory that cannot be
      created, a failed download, or a file (cached or downloaded) whose size
      or SHA-256 is not the published one.
  """
  if name not in ARCHIVES:
    raise DownloadError(
      f"no download for dataset {name!r}; choose one of {', '.join(ARCHIVES)}"
    )
  directory = os.path.join(cache_root(cache_dir), name)
  try:
    os.makedirs(directory, exist_ok=True)
  except OSError as e:
    raise DownloadError(
      f"cannot create cache directory {directory} "
      f"({one_line(e)}); set data.cache_dir or "
      f"${CACHE_ENV}"
    ) from e
  for archive in ARCHIVES[name]:
    path = os.path.join(directory, archive.filename)
    if os.path.exists(path):
      verify_cached(path, archive)
    else:
      download(archive_url(name, archive.filename, mirror), path, archive)
  return directory


def cache_root(cache_dir=""):
  """The cache root: `cache_dir`, else $GEVB_JAX_DATA, else ~/.cache/gevb_jax."""
  return os.path.expanduser(cache_dir or os.environ.get(CACHE_ENV) or DEFAULT_CACHE)


def archive_url(name, filename, mirror=""):
  """The URL of one file: under `mirror` or $GEVB_JAX_MIRROR, else the origin."""
  mirror = mirror or os.environ.get(MIRROR_ENV)
  if mirror:
    return f"{mirror.rstrip('/')}/{name}/{filename}"
  return ORIGINS[name] + filename


def verify_cached(path, archive):
  """Checks a cached file's size and SHA-256, raising `DownloadError` if wrong."""
  size = os.path.getsize(path)
  if size != archive.size:
    found = f"{size} bytes, expected {archive.size}"
  else:
    digest = _sha256_of_file(path)
    if digest == archive.sha256:
      return
    found = f"sha256 {digest}, expected {archive.sha256}"
  raise DownloadError(f"cached {path}: {found}; delete it to download it again")


def download(url, path, archive):
  """Downloads `url` to `path` if it has the size and SHA-256 of `archive`.

  The bytes go to a temporary file next to `path`, renamed to `path` only once
  checked; on any failure or interruption the temporary file is removed.

  Args:
    url: where to download from (http, https or file).
    path: where the checked file lands.
    archive: the expected size and SHA-256.

  Raises:
    DownloadError: if the download fails or its size or SHA-256 is wrong.
  """
  directory, filename = os.path.split(path)
  logging.info("downloading %s to %s", url, path)
  partial = os.path.join(directory, f".{filename}.{uuid.uuid4().hex}.part")
  # Not tempfile.mkstemp: its files are private (0600), this one is shared data,
  # so the umask decides, as for any file the user creates.
  try:
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
  except OSError as e:
    raise DownloadError(
      f"cannot write to cache directory {directory} "
      f"({one_line(e)}); set data.cache_dir or "
      f"${CACHE_ENV}"
    ) from e
  try:
    with os.fdopen(fd, "wb") as out:
      received, digest = _copy_url(url, out, archive, path)
    _check_download(url, received, digest, archive)
    os.replace(partial, path)
  except BaseException:
    with contextlib.suppress(FileNotFoundError):
      os.remove(partial)
    raise


def _copy_url(url, out, archive, path):
  """Streams at most archive.size + 1 bytes of `url` into `out`.

  Returns:
    (bytes received, their SHA-256 hex digest).
  """
  sha256 = hashlib.sha256()
  received = 0
  try:
    with (
      urllib.request.urlopen(url, timeout=TIMEOUT_S) as response,
      tqdm.tqdm(
        total=archive.size,
        desc=archive.filename,
        unit="B",
        unit_scale=True,
        unit_divisor=1024,
        leave=False,
        disable=None,
      ) as progress,
    ):
      while received <= archive.size:
        chunk = response.read(min(CHUNK_BYTES, archive.size + 1 - received))
        if not chunk:
          break
        out.write(chunk)
        sha256.update(chunk)
        received += len(chunk)
        progress.update(len(chunk))
  except (OSError, http.client.HTTPException, ValueError) as e:
    raise DownloadError(
      f"cannot download {url} ({one_line(e)}); download it "
      f"by hand to {path}, or point data.mirror or "
      f"${MIRROR_ENV} at a mirror that has it"
    ) from e
  return received, sha256.hexdigest()


def _check_download(url, received, digest, archive):
  """Raises `DownloadError` unless `received` bytes with `digest` are `archive`."""
  if received < archive.size:
    problem = f"stopped after {received} of {archive.size} bytes; run again to retry"
  elif received > archive.size:
    problem = f"is larger than the published {archive.size} bytes"
  elif digest != archive.sha256:
    problem = f"has sha256 {digest}, expected {archive.sha256}"
  else:
    return
  raise DownloadError(f"download of {url} {problem}; nothing cached")


def _sha256_of_file(path):
  """The SHA-256 hex digest of a file, read in chunks."""
  sha256 = hashlib.sha256()
  with open(path, "rb") as f:
    for chunk in iter(lambda: f.read(CHUNK_BYTES), b""):
      sha256.update(chunk)
  return sha256.hexdigest()


def one_line(error):
  """Formats an exception as a single line (``data`` uses it too)."""
  return " ".join(f"{type(error).__name__}: {error}".split())


def main(argv):
  """Fills the cache with the datasets named in argv[1:] (default: all)."""
  try:
    for name in argv[1:] or ARCHIVES:
      print(fetch(name))
  except DownloadError as e:
    print(f"error: {e}", file=sys.stderr)
    return 1
  return 0


if __name__ == "__main__":
  sys.exit(main(sys.argv))
