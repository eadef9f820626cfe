"""The README's library snippet runs and does what it says."""

import os
import re

import jax
import numpy as np

README = os.path.join(
  os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "README.md"
)


def test_readme_library_snippet():
  with open(README) as f:
    (snippet,) = re.findall(r"```python\n(.*?)```", f.read(), re.S)
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
