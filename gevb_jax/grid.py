"""The experiment grid, written once: architectures, kinds of network, which rules train
which kind, output codes, the columns of Tables 1-2 (the paper's, then the ones beyond
it) and each experiment's run-folder name. ``models``, ``rules``, ``output_codes``,
``report`` and ``launch`` read it from here.

Plain Python: nothing here imports JAX.
"""

from typing import NamedTuple

# Table 3 (1-channel inputs) and Table 4 (3-channel inputs); layers in ``models``. An
# ``arch`` may also be a layer spec (``arch_spec``), which names itself.
ARCHS = ("fc", "conv", "lc")
ARCH_NAMES = {"fc": "FC", "conv": "Conv", "lc": "LC"}
# Architectures with conv or LC layers, whose representations Fig. 3 clusters.
CLUSTERED_ARCHS = ("conv", "lc")

# Vectorized networks have K = num_classes components per unit (VNNs); conventional
# ones K = 1.
KINDS = ("vectorized", "conventional")
# The rules of the paper's Tables 1-2 per kind. The first is the one the paper compares
# with BP: GEVB (Eq. 9) in vectorized networks, DFA (Eq. 5) in conventional ones.
PAPER_RULES = {"vectorized": ("gevb", "bp"), "conventional": ("dfa", "bp")}
APPROX_RULE = {kind: rules[0] for kind, rules in PAPER_RULES.items()}
# Beyond the paper, conventional networks also train by feedback alignment ("fa",
# Lillicrap et al. 2016), Kolen-Pollack ("kp", Akrout et al. 2019) and sign symmetry
# ("sign", Liao et al. 2016): rules that send the error back layer by layer through
# other matrices than the forward weights' transposes.
FEEDBACK_RULES = ("fa", "kp", "sign")
# Every rule each kind admits.
RULES = {
  "vectorized": PAPER_RULES["vectorized"],
  "conventional": PAPER_RULES["conventional"] + FEEDBACK_RULES,
}
# How the outputs code the class: one-hot (K = C outputs), as in the paper, or binary
# (K = ceil(log2 C)), Section 7's proposal (``output_codes``). The first is the paper's.
OUTPUT_CODES = ("onehot", "binary")
# Grid files and run folders written before the kinds were spelled out.
OLD_KIND_NAMES = {"vec": "vectorized", "conv": "conventional"}


def arch_name(arch):
  """How tables and figures name an architecture: FC, Conv, LC, or a spec itself."""
  return ARCH_NAMES.get(arch, arch)


def kind(vectorized):
  """``"vectorized"`` or ``"conventional"``."""
  return KINDS[0] if vectorized else KINDS[1]


def sign(nonneg):
  """``"nonneg"`` (weights of layers l > 1 kept >= 0) or ``"mixed"``."""
  return "nonneg" if nonneg else "mixed"


def _code_suffix(output_code, separator):
  """Nothing for the paper's one-hot code, else the code after ``separator``."""
  return "" if output_code == OUTPUT_CODES[0] else separator + output_code


class Column(NamedTuple):
  """A column of the tables: a kind of network, a sign constraint, a rule and an
  output code."""

  vectorized: bool
  nonneg: bool
  rule: str
  output_code: str = OUTPUT_CODES[0]

  @property
  def kind(self):
    return kind(self.vectorized)

  @property
  def label(self):
    """The rule as in Figs. 4-5, with "+" for nonnegative networks (and the code
    when it is not one-hot)."""
    return (
      self.rule.upper()
      + ("+" if self.nonneg else "")
      + _code_suffix(self.output_code, " ")
    )

  @property
  def is_paper(self):
    """Whether Tables 1-2 of the paper have this column."""
    return self in COLUMNS

  def __str__(self):
    nonneg = "Nonneg" if self.nonneg else "Mixed"
    text = f"{self.kind.capitalize()} {nonneg} {self.rule.upper()}"
    return text + _code_suffix(self.output_code, " ")


class Experiment(NamedTuple):
  """One cell of the tables: an architecture and a ``Column``."""

  arch: str
  vectorized: bool
  nonneg: bool
  rule: str
  output_code: str = OUTPUT_CODES[0]

  @property
  def column(self):
    return Column(*self[1:])

  @property
  def kind(self):
    return kind(self.vectorized)

  @property
  def name(self):
    """The run folder's name, e.g. ``conv-vectorized-nonneg-gevb``, or
    ``fc-conventional-mixed-kp-binary`` for the binary output code."""
    name = f"{self.arch}-{self.kind}-{sign(self.nonneg)}-{self.rule}"
    return name + _code_suffix(self.output_code, "-")

  @property
  def old_name(self):
    """The name sweeps gave the folder before the kinds were spelled out."""
    short = {full: old for old, full in OLD_KIND_NAMES.items()}[self.kind]
    return f"{self.arch}-{short}-{sign(self.nonneg)}-{self.rule}"

  @property
  def label(self):
    return self.column.label

  @property
  def is_vnn_gevb(self):
    """Whether this is GEVB in a vectorized nonnegative network."""
    return self.vectorized and self.nonneg and self.rule == "gevb"

  def __str__(self):
    return f"{arch_name(self.arch)} {self.column}"


# Every column a table can have, grouped by kind, then sign, then output code; within
# a group the paper's rules come first, in its order.
ALL_COLUMNS = tuple(
  Column(k == KINDS[0], nonneg, rule, code)
  for k in KINDS
  for nonneg in (True, False)
  for code in OUTPUT_CODES
  for rule in RULES[k]
)
# The 8 columns of Tables 1-2, in the paper's order.
COLUMNS = tuple(
  c
  for c in ALL_COLUMNS
  if c.rule in PAPER_RULES[c.kind] and c.output_code == OUTPUT_CODES[0]
)
# The 24 experiments of one of the paper's tables.
GRID = tuple(Experiment(arch, *column) for arch in ARCHS for column in COLUMNS)
