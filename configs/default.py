"""Offline default: scikit-learn's 8x8 digits, nonnegative FC VNN trained by GEVB."""

from gevb_jax import defaults


def get_config():
  return defaults.base_config()
