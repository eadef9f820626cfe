"""The training CLI's config flags, ``--config=<file>`` and ``--config.<key>=<value>``:
read into the config the trainer runs, errors on one line. The CLI (``main``) and the
sweep's planner (``launch.planning``) read them alike."""

from absl import flags
from ml_collections import config_flags

from gevb_jax.config_check import ConfigError


class FlagError(ConfigError):
  """A flag absl cannot parse: a value of the wrong type, a flag that does not exist."""


def define(flag_values=flags.FLAGS, sys_argv=None):
  """Defines ``--config`` in ``flag_values``, and the ``--config.<key>`` flags that
  ``sys_argv`` (by default ``sys.argv``) holds."""
  config_flags.DEFINE_config_file(
    "config",
    None,
    "Training configuration file.",
    flag_values=flag_values,
    lock_config=True,
    sys_argv=sys_argv,
  )


def _one_line(err):
  text = str(err.__cause__ or err).replace("\\n", " ").replace("\\'", "'")
  text = " ".join(text.split())
  if len(text) > 1 and text[0] == text[-1] and text[0] in "'\"":
    text = text[1:-1]  # A KeyError's repr inside an AttributeError.
  return text


def parse(flag_values, argv):
  """absl's parsing of ``argv`` into ``flag_values``; returns the arguments left.

  Raises:
    FlagError: a flag absl cannot parse.
    ConfigError: the config file's errors (a typo in a field, a missing file), which
      surface when the config is first read, here.
  """
  try:
    argv = flag_values(argv)
    flag_values.config.to_dict()
    return argv
  except flags.Error as err:
    raise FlagError(_one_line(err)) from None
  except (AttributeError, KeyError, OSError, TypeError, ValueError) as err:
    raise ConfigError(f"bad --config: {_one_line(err)}") from None


def read(config_args):
  """The config that the flags ``config_args`` (``--config=<file>``, then
  ``--config.<key>=<value>``, ...) give the trainer."""
  argv = ["trainer", *config_args]
  flag_values = flags.FlagValues()
  define(flag_values, argv)
  parse(flag_values, argv)
  return flag_values.config
