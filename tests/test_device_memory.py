"""On a device that reports its memory (a GPU), the memory check and the evaluation and
alignment batches count the device's memory, not the host's."""

import jax
import numpy as np
import pytest

import gevb_jax
from configs import default as default_config
from gevb_jax import config_check, data, evaluation

MIB = 2**20


class FakeGpu:
  """A device whose ``memory_stats()`` report an allocator limit, as a GPU's do."""

  platform = "gpu"

  def __init__(self, bytes_limit):
    self.bytes_limit = bytes_limit

  def memory_stats(self):
    return {"bytes_in_use": 0, "bytes_limit": self.bytes_limit}

  def __str__(self):
    return "cuda:0"


def _on_a_gpu(monkeypatch, bytes_limit):
  monkeypatch.setattr(jax, "local_devices", lambda: [FakeGpu(bytes_limit)])


def _net(arch):
  return gevb_jax.make_network(
    arch, input_shape=(28, 28, 1), num_classes=10, vectorized=True, nonneg=True
  )


def test_evaluation_and_alignment_batches_fit_the_devices_memory(monkeypatch):
  conv, config = _net("conv"), default_config.get_config()
  # 1.91 MiB per float32 copy of the widest activation; the host's 512 MiB fit 66
  # evaluated examples (4 copies each) and 22 aligned ones (12 copies).
  assert evaluation.memory_bounded_batches(conv, config, 1) == (66, 22)
  _on_a_gpu(monkeypatch, 256 * MIB)  # 1/8 of it, 32 MiB: 4 and 1 examples.
  assert evaluation.memory_bounded_batches(conv, config, 1) == (4, 1)
  config.memory_budget_mb = 512  # A budget set in the config is the config's.
  assert evaluation.memory_bounded_batches(conv, config, 1) == (66, 22)


def test_the_memory_check_counts_the_devices_memory(monkeypatch):
  fc, config = _net("fc"), default_config.get_config()
  x = np.zeros((100, 28, 28, 1), np.float32)
  y = np.zeros(100, np.int32)
  ds = data.Dataset(x, y, x, y, num_classes=10, name="zeros")
  config_check.check_memory(fc, config, ds)  # This machine's RAM holds it.
  _on_a_gpu(monkeypatch, 64 * MIB)  # 16 float32 bytes a weight alone overflow it.
  with pytest.raises(config_check.ConfigError, match=r"device cuda:0 has 0\.1 GiB"):
    config_check.check_memory(fc, config, ds)
  _on_a_gpu(monkeypatch, 80 * 2**30)
  config_check.check_memory(fc, config, ds)
