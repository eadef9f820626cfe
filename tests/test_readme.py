"""The README's library snippet and test command do what they say."""

import configparser
import os
import re

import jax
import numpy as np
from flax import nnx

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
README = os.path.join(ROOT, "README.md")
CI_RUN = os.path.join(ROOT, ".ci", "run")


def _snippets():
  """The library snippet and the NNX training loop."""
  with open(README) as f:
    library, nnx_loop = re.findall(r"```python\n(.*?)```", f.read(), re.S)
  return library, nnx_loop


def test_readme_library_snippet():
  snippet, _ = _snippets()
  namespace = {}
  exec(snippet, namespace)  # pylint: disable=exec-used
  assert namespace["logits"].shape == (32, 10)
  params, updates = namespace["variables"]["params"], namespace["updates"]
  assert jax.tree_util.tree_structure(updates) == jax.tree_util.tree_structure(params)
  new = namespace["params"]
  # The projected step keeps layers past the first nonnegative and moved every leaf.
  assert all(
    (np.asarray(new[n]["w"]) >= 0).all() for n in ("conv_1", "dense_0", "readout")
  )
  assert all(
    not np.array_equal(a, b)
    for a, b in zip(jax.tree_util.tree_leaves(new), jax.tree_util.tree_leaves(params))
  )


def test_ci_runs_the_readme_test_command_verbatim():
  with open(README) as f:
    (command,) = re.findall(r"Run the tests:\s*```bash\n(.*?)\n```", f.read(), re.S)
  with open(CI_RUN) as f:
    assert command in f.read().splitlines()
  assert "[test,tfds]" in command  # So that the TFDS source's test runs in CI.


def test_readme_gpu_install_line_names_setup_cfgs_cuda_extra():
  with open(README) as f:
    (extra,) = re.findall(r"pip install -e '\.\[(\w+)\]' && python -c", f.read())
  config = configparser.ConfigParser()
  config.read(os.path.join(ROOT, "setup.cfg"))
  requirements = config["options.extras_require"][extra].split()
  assert requirements == ["jax[cuda12]>=0.5"]


def test_readme_nnx_training_loop():
  _, snippet = _snippets()
  namespace = {}
  exec(snippet, namespace)  # pylint: disable=exec-used
  losses, net = namespace["losses"], namespace["net"]
  assert losses[-1] < 0.9 * losses[0]  # It trains.
  assert namespace["logits"].shape == (32, 10)
  variables = namespace["variables"]
  shapes = jax.eval_shape(net.init, jax.random.key(0))
  assert jax.tree.map(np.shape, variables) == jax.tree.map(np.shape, shapes)
  # The gates were not trained; the nonnegative weights stayed >= 0.
  initial = net.init(nnx.Rngs(0).params())
  np.testing.assert_array_equal(
    variables["fixed"]["conv_0"]["t"], initial["fixed"]["conv_0"]["t"]
  )
  assert (np.asarray(variables["params"]["dense_0"]["w"]) >= 0).all()
