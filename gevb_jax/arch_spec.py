"""The layer-spec grammar of architectures beyond the paper's, written once: ``models``
builds the layers, ``config_check``, the sweep (``launch.planning``) and the report
read specs through here.

A spec is comma-separated items; the readout is added after them (``models``)::

  dense(N)  conv(C,k[,stride[,pad]])  lc(C,k[,stride[,pad]])  pool(p)  flatten

e.g. ``"conv(32,3),pool(2),conv(32,3),pool(2),flatten,dense(256)"``. Stride defaults
to 1 and pad to ``k // 2``; ``pool`` is average pooling over ``p x p`` windows. The
item names are the ``kind``s of ``layers``' classes, and a parsed item's arguments
are that class's fields in order.

Plain Python: nothing here imports JAX.
"""

import re
from typing import NamedTuple

from gevb_jax import grid

# Each item's arguments, the required ones first; "stride" and "pad" may be left out.
ARGUMENTS = {
  "dense": ("N",),
  "conv": ("C", "k", "stride", "pad"),
  "lc": ("C", "k", "stride", "pad"),
  "pool": ("p",),
  "flatten": (),
}
# The arguments that may be left out, and their values then, from the others'.
DEFAULTS = {"stride": lambda given: 1, "pad": lambda given: given["k"] // 2}
OPTIONAL = tuple(DEFAULTS)
# The items that carry weights (the rest pool or flatten).
WEIGHTED = ("dense", "conv", "lc")


def usage(kind):
  """How an item is written: ``conv(C,k[,stride[,pad]])``, ``flatten``."""
  names = ARGUMENTS[kind]
  if not names:
    return kind
  required = ",".join(n for n in names if n not in OPTIONAL)
  optional = "".join(f"[,{n}" for n in names if n in OPTIONAL)
  return f"{kind}({required}{optional}{']' * optional.count('[')})"


GRAMMAR = (
  f"an arch is one of {', '.join(grid.ARCHS)} (Tables 3-4) or a spec: comma-separated "
  f"{', '.join(map(usage, ARGUMENTS))} (stride 1 and pad k//2 unless given), the "
  "readout added after them"
)

_ITEM = re.compile(r"\s*([a-z]*)\s*(?:\(([^()]*)\))?\s*")


class Item(NamedTuple):
  """One item of a spec: its kind, every argument (defaults filled in) and its text."""

  kind: str
  args: tuple
  text: str


class SpecError(ValueError):
  """An architecture that is neither a paper name nor a valid spec, in one line:
  ``arch <arch>: <reason>``."""

  def __init__(self, arch, reason):
    super().__init__(f"arch {arch!r}: {reason}")
    self.reason = reason


def refuse(arch, token, problem):
  """A ``SpecError`` naming the architecture, the token at fault and the grammar."""
  return SpecError(arch, f"{token!r} {problem}; {GRAMMAR}")


def _split(text):
  """The items of ``text``: split at the commas outside parentheses."""
  items, depth, start = [], 0, 0
  for i, char in enumerate(text):
    depth += (char == "(") - (char == ")")
    if char == "," and depth == 0:
      items.append(text[start:i])
      start = i + 1
  return [*items, text[start:]]


def _item(arch, token):
  """The ``Item`` written as ``token``."""
  token = token.strip()
  kind = _ITEM.match(token)[1]
  if kind not in ARGUMENTS:
    raise refuse(arch, token, "is not a layer")
  names = ARGUMENTS[kind]
  match = _ITEM.fullmatch(token)
  text = ((match and match[2]) or "").strip()
  values = [part.strip() for part in text.split(",")] if text else []
  required = [n for n in names if n not in OPTIONAL]
  fits = len(required) <= len(values) <= len(names)
  if not (match and fits and all(v.isdigit() for v in values)):
    raise refuse(arch, token, f"does not read as {usage(kind)}")
  args = [int(v) for v in values]
  for name, value in zip(names, args):
    if value == 0 and name != "pad":
      raise refuse(arch, token, f"has {name} = 0")
  given = dict(zip(names, args))
  args += [DEFAULTS[name](given) for name in names[len(args) :]]
  return Item(kind, tuple(args), token)


def parse(arch):
  """The ``Item``s of a spec, every argument given.

  Raises ``SpecError`` (one line naming the bad token and the grammar) for a token
  that is no layer, arguments that do not fit it, or a spec without a weighted layer.
  """
  if not isinstance(arch, str):
    raise SpecError(arch, f"not a string; {GRAMMAR}")
  items = tuple(_item(arch, token) for token in _split(arch))
  if not any(item.kind in WEIGHTED for item in items):
    raise refuse(arch, arch, "has no weighted layer (dense, conv or lc)")
  return items


def check(arch):
  """Raises ``SpecError`` unless ``arch`` is a paper name (``grid.ARCHS``) or a spec."""
  if arch not in grid.ARCHS:
    parse(arch)


def token(kind, args):
  """An item as a spec writes it: ``conv(32,3,1,1)``, ``flatten``."""
  return kind + (f"({','.join(map(str, args))})" if args else "")
