"""The paper's experiment grid, written once: architectures, kinds of network, which
rules train which kind, the columns of Tables 1-2 and each experiment's run-folder
name. ``models``, ``rules``, ``report`` and ``launch`` read it from here.

Plain Python: nothing here imports JAX.
"""

from typing import NamedTuple

# Table 3 (1-channel inputs) and Table 4 (3-channel inputs); layers in ``models``.
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
# Grid files and run folders written before the kinds were spelled out.
OLD_KIND_NAMES = {"vec": "vectorized", "conv": "conventional"}


def kind(vectorized):
  """``"vectorized"`` or ``"conventional"``."""
  return KINDS[0] if vectorized else KINDS[1]


def sign(nonneg):
  """``"nonneg"`` (weights of layers l > 1 kept >= 0) or ``"mixed"``."""
  return "nonneg" if nonneg else "mixed"


class Experiment(NamedTuple):
  """One cell of Tables 1-2: an architecture, a kind of network, a sign constraint
  and a rule."""

  arch: str
  vectorized: bool
  nonneg: bool
  rule: str

  @property
  def kind(self):
    return kind(self.vectorized)

  @property
  def name(self):
    """The run folder's name, e.g. ``conv-vectorized-nonneg-gevb``."""
    return f"{self.arch}-{self.kind}-{sign(self.nonneg)}-{self.rule}"

  @property
  def old_name(self):
    """The name sweeps gave the folder before the kinds were spelled out."""
    short = {full: old for old, full in OLD_KIND_NAMES.items()}[self.kind]
    return f"{self.arch}-{short}-{sign(self.nonneg)}-{self.rule}"

  @property
  def label(self):
    """The rule as in Figs. 4-5, with "+" for nonnegative networks."""
    return self.rule.upper() + ("+" if self.nonneg else "")

  @property
  def is_vnn_gevb(self):
    """Whether this is GEVB in a vectorized nonnegative network."""
    return self.vectorized and self.nonneg and self.rule == "gevb"

  def __str__(self):
    nonneg = "Nonneg" if self.nonneg else "Mixed"
    kind_name = self.kind.capitalize()
    return f"{ARCH_NAMES[self.arch]} {kind_name} {nonneg} {self.rule.upper()}"


# Columns of Tables 1-2 in the paper's order: (vectorized, nonneg, rule).
COLUMNS = tuple(
  (k == KINDS[0], nonneg, rule)
  for k in KINDS
  for nonneg in (True, False)
  for rule in PAPER_RULES[k]
)
# The 24 experiments of one table.
GRID = tuple(Experiment(arch, *column) for arch in ARCHS for column in COLUMNS)
