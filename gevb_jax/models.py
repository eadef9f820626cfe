"""The paper's architectures (Tables 3-4) as data, any other stack of their layers
from a spec (``arch_spec``), and the network they make.

``make_network`` returns a :class:`Network`: a frozen, hashable description (it can be
a static argument of ``jax.jit``) with Flax-style ``init`` and ``apply``.
"""

import dataclasses
import functools
import math
from typing import Any, NamedTuple

from gevb_jax import arch_spec, output_codes
from gevb_jax import init as initializers
from gevb_jax import layers as L
from gevb_jax.grid import ARCHS, OUTPUT_CODES

# Table 3 (1-channel inputs) and Table 4 (3-channel inputs). Hidden weighted layers
# only; the readout is added by make_network.
_TABLE3 = {
  "fc": (L.Flatten(), L.Dense(1024), L.Dense(512)),
  "conv": (
    L.Conv(64, 3, 1, 1),
    L.AvgPool(2),
    L.Conv(32, 3, 1, 1),
    L.AvgPool(2),
    L.Flatten(),
    L.Dense(1024),
  ),
  "lc": (
    L.LocallyConnected(32, 3, 1, 1),
    L.AvgPool(2),
    L.LocallyConnected(32, 3, 1, 1),
    L.AvgPool(2),
    L.Flatten(),
    L.Dense(1024),
  ),
}
_TABLE4 = {
  "fc": (L.Flatten(), L.Dense(1024), L.Dense(512), L.Dense(512)),
  "conv": (
    L.Conv(128, 5, 1, 2),
    L.AvgPool(2),
    L.Conv(64, 5, 1, 2),
    L.AvgPool(2),
    L.Conv(64, 2, 2, 0),
    L.Flatten(),
    L.Dense(1024),
  ),
  "lc": (
    L.LocallyConnected(64, 5, 1, 2),
    L.AvgPool(2),
    L.LocallyConnected(32, 5, 1, 2),
    L.AvgPool(2),
    L.LocallyConnected(32, 2, 2, 0),
    L.Flatten(),
    L.Dense(512),
  ),
}
# The released code's vectorized CIFAR-10 LC net has a 256-unit dense layer
# (vec_models.py:92-94), not Table 4's 512; its conventional one has 512
# (nonvec_models.py:140).
_TABLE4_VECTORIZED = {**_TABLE4, "lc": _TABLE4["lc"][:-1] + (L.Dense(256),)}


class LayerInfo(NamedTuple):
  """One layer of a network with its shapes (per example, without the K axis)."""

  name: str
  layer: Any
  in_shape: tuple
  out_shape: tuple
  first: bool  # First weighted layer: its input is the raw image.
  readout: bool  # The output layer: no gate, logits out.
  vectorized_input: bool  # Whether the input carries the K axis.
  # The pooling right after this layer, when the two run fused (layers.first_block):
  # only for the first layer of a VNN, on a CPU, and only while its K-wide kernel fits
  # the budget below. The pooling's own entry is then skipped by ``forward``.
  fused_pool: Any = None


# A fused first layer re-reads its kernel for every example: only worth it while the
# kernel stays in cache (half the 32 MiB L3 of the machine it was measured on; MNIST
# LC's 9 MB kernel gains 2.8x, CIFAR-10 LC's 196 MB one loses 2.4x: benchmarks/README.md).
FUSED_KERNEL_MAX_BYTES = 16 * 2**20


def layer_infos(layers, input_shape, num_components):
  """Each layer's ``LayerInfo``, in order, for a net of ``num_components`` (K)
  components per unit on inputs of ``input_shape``."""
  out, shape, first, counts = [], tuple(input_shape), True, {}
  for i, layer in enumerate(layers):
    readout = i == len(layers) - 1
    out_shape = layer.out_shape(shape)
    if readout:
      name = "readout"
    else:
      index = counts.get(layer.kind, 0)
      counts[layer.kind] = index + 1
      name = f"{layer.kind}_{index}"
    weighted = hasattr(layer, "lin")
    following = layers[i + 1] if i + 1 < len(layers) else None
    fused_pool = None
    if weighted and first and isinstance(following, L.AvgPool):
      kernel_bytes = 4 * num_components * math.prod(layer.kernel_shape(shape))
      fits = num_components > 1 and kernel_bytes <= FUSED_KERNEL_MAX_BYTES
      fused_pool = following if fits and L.tuned_for_cpu() else None
    out.append(
      LayerInfo(
        name, layer, shape, out_shape, weighted and first, readout, not first, fused_pool
      )
    )
    first = first and not weighted
    shape = out_shape
  return tuple(out)


@dataclasses.dataclass(frozen=True)
class Network:
  """A vectorized (K = num_classes) or conventional (K = 1) gated network."""

  layers: tuple
  input_shape: tuple
  num_classes: int
  vectorized: bool
  nonneg: bool
  # Kernels that carry the error backward in place of the forward weights' transposes,
  # one per weighted layer past the first (rules.backward_kernels): "" none, "fixed"
  # (feedback alignment: drawn once, in ``fixed``) or "learned" (Kolen-Pollack: trained
  # beside the weights, in ``params``).
  backward_kernels: str = ""
  # How the outputs code the class (output_codes): "onehot" (K = C) or "binary".
  output_code: str = "onehot"
  # Which inputs of a conventional nonnegative net's layer after a flatten are ON/OFF
  # pairs (init.FLATTEN_PAIRINGS): "released" (the authors' (C, H, W) order) or
  # "channels". Only ``init`` reads it.
  flatten_pairing: str = "released"

  @property
  def num_outputs(self):
    """The readout's outputs: C one-hot, ceil(log2 C) binary (``output_codes``)."""
    return output_codes.num_outputs(self.output_code, self.num_classes)

  def loss(self, logits, labels):
    """The mean loss of ``logits`` ``(B, num_outputs)``; its gradient in them is the
    error vector ``e`` over the batch size."""
    return output_codes.per_example_loss(
      logits, labels, self.output_code, self.num_classes
    ).mean()

  def predict(self, logits):
    """The class each row of ``logits`` predicts."""
    return output_codes.predict(logits, self.output_code, self.num_classes)

  @property
  def num_components(self):
    """K: components per unit, one per output in a VNN."""
    return self.num_outputs if self.vectorized else 1

  @functools.cached_property
  def info(self):
    """Per-layer names and shapes, in order (``layer_infos``)."""
    return layer_infos(self.layers, self.input_shape, self.num_components)

  @property
  def widest_activation(self):
    """Elements of the largest activation of one example, K components included."""
    return max(self.num_components * math.prod(info.out_shape) for info in self.info)

  @property
  def weighted(self):
    """The weighted layers' infos, readout last."""
    return tuple(i for i in self.info if hasattr(i.layer, "lin"))

  @property
  def hidden(self):
    """The gated hidden layers' infos (everything weighted but the readout)."""
    return self.weighted[:-1]

  def init(self, rng):
    """The initial variables, as the released code draws them
    (``init.network_variables``)."""
    return initializers.network_variables(self, rng)

  def apply(self, variables, x, taps=None):
    """Plain forward pass: logits ``(B, num_outputs)`` for images ``(B, H, W, C)``.

    ``taps`` optionally maps hidden-layer names to arrays added to that layer's
    activation ``(B, K, *S, C)``; differentiating with respect to them gives the
    backpropagated signal of each layer (used by the alignment metrics and tests).
    """
    return forward(self, variables, x, _plain_layer(taps))

  def representation(self, variables, x):
    """Activations entering the first dense layer after the conv/LC stack, flattened.

    Shape ``(B, K * n)``; for an FC network this is the flattened input.
    """
    a = x
    for info in self.info:
      if isinstance(info.layer, L.Dense):
        return a.reshape(a.shape[0], -1)
      if hasattr(info.layer, "lin"):
        a, _ = L.weighted_forward(
          info.layer,
          variables["params"][info.name],
          variables["fixed"][info.name],
          a,
          self.num_components,
          info.first,
          False,
        )
      else:
        a = L.apply_unweighted(info.layer, a, info.vectorized_input)
    raise ValueError("network has no dense layer")


def _plain_layer(taps):
  def call(net, info, params, fixed, state):
    a, _, _ = state
    tapped = taps is not None and info.name in taps
    if info.fused_pool is not None and not tapped:
      out, _ = L.first_block(
        info.layer, info.fused_pool, params, fixed["t"], a, net.num_components
      )
      return out, None, None
    out, _ = L.weighted_forward(
      info.layer, params, fixed, a, net.num_components, info.first, info.readout
    )
    if tapped:
      out = out + taps[info.name]
    if info.fused_pool is not None:
      out = L.apply_unweighted(info.fused_pool, out, True)
    return out, None, None

  return call


def forward(net, variables, x, weighted_call, eb=None):
  """Runs the layers in order and returns the logits.

  The state threaded through the layers is ``(a, eb, d)``: the activation, and two
  optional companions that learning rules thread through the network (see
  ``rules.py``): ``eb`` passes weighted layers untouched, ``d`` (one scalar per unit,
  no K axis) is pooled and flattened like one component of ``a``.
  ``weighted_call(net, info, params, fixed, state)`` runs the weighted layers; for
  a layer with a ``fused_pool`` it returns the state after that pooling, which is
  then skipped here.
  """
  state = (x, eb, None)
  fixed = variables.get("fixed", {})
  pooled = False
  for info in net.info:
    if pooled:
      pooled = False
    elif hasattr(info.layer, "lin"):
      state = weighted_call(
        net, info, variables["params"][info.name], fixed.get(info.name, {}), state
      )
      pooled = info.fused_pool is not None
    else:
      a, eb, d = state
      a = L.apply_unweighted(info.layer, a, info.vectorized_input)
      if d is not None:
        d = L.apply_unweighted(info.layer, d, False)
      state = (a, eb, d)
  return state[0]


# The layer class of each item of a spec (``arch_spec``): its kind, its fields in order.
SPEC_LAYERS = {
  cls.kind: cls for cls in (L.Dense, L.Conv, L.LocallyConnected, L.AvgPool, L.Flatten)
}


def spec_of(layers):
  """The spec text of a tuple of ``layers`` objects, e.g. ``conv(32,3,1,1),flatten``."""
  return ",".join(
    arch_spec.token(layer.kind, dataclasses.astuple(layer)) for layer in layers
  )


def _paper_layers(arch, input_shape, vectorized):
  """Table 3's hidden layers for 1-channel inputs, Table 4's for 3-channel ones."""
  table = {1: _TABLE3, 3: _TABLE4_VECTORIZED if vectorized else _TABLE4}.get(
    input_shape[-1]
  )
  if table is None:
    raise ValueError(
      f"input_shape {input_shape} has {input_shape[-1]} channels; "
      "1 (Table 3) or 3 (Table 4) are supported"
    )
  return table[arch]


def _hidden_layers(arch, input_shape, vectorized):
  """``(name, layers, tokens)``: the hidden layers of a paper name (``grid.ARCHS``), a
  spec (``arch_spec``) or a tuple of ``layers`` objects, the architecture's name (a
  tuple's is its spec) and each layer as its spec item (as written in a spec)."""
  if isinstance(arch, (tuple, list)):
    for layer in arch:
      if type(layer) not in SPEC_LAYERS.values():
        raise arch_spec.SpecError(
          arch, f"{layer!r} is not a gevb_jax.layers layer; {arch_spec.GRAMMAR}"
        )
    arch = spec_of(arch)
  if arch in ARCHS:
    layers = _paper_layers(arch, input_shape, vectorized)
    return arch, layers, tuple(spec_of([layer]) for layer in layers)
  items = arch_spec.parse(arch)
  layers = tuple(SPEC_LAYERS[item.kind](*item.args) for item in items)
  return arch, layers, tuple(item.text for item in items)


def _with_widths(name, hidden, tokens, widths, nonneg):
  """``(hidden, tokens)`` with the weighted layers' widths replaced by ``widths``
  (None: kept); refuses an odd width in a nonnegative net, whose units are ON/OFF
  pairs."""
  hidden, tokens = list(hidden), list(tokens)
  slots = [i for i, layer in enumerate(hidden) if hasattr(layer, "features")]
  if widths is not None:
    widths = tuple(int(w) for w in widths)
    if len(widths) != len(slots):
      raise ValueError(
        f"arch {name!r} has {len(slots)} hidden weighted layers, "
        f"got {len(widths)} widths {widths}"
      )
    for i, width in zip(slots, widths):
      hidden[i] = dataclasses.replace(hidden[i], features=width)
      tokens[i] = spec_of([hidden[i]])
  for i in slots:
    if nonneg and hidden[i].features % 2:
      raise arch_spec.refuse(
        name, tokens[i], "has an odd width: a nonnegative net's units are ON/OFF pairs"
      )
  return tuple(hidden), tuple(tokens)


def _check_shapes(name, layers, tokens, input_shape):
  """Refuses, naming its token, a layer that does not fit its input: a dense layer
  (or the readout) on a map, a conv, LC or pooling layer after the flatten, or one
  that shrinks the map to nothing."""
  shape = input_shape
  for layer, token in zip(layers, tokens):
    if isinstance(layer, L.Dense) and len(shape) != 1:
      raise arch_spec.refuse(
        name, token, f"needs flat inputs, not {shape}: flatten first"
      )
    if not isinstance(layer, (L.Dense, L.Flatten)) and len(shape) != 3:
      raise arch_spec.refuse(
        name, token, "needs an (H, W, C) map: it follows the flatten"
      )
    try:
      out = layer.out_shape(shape)
    except ValueError:
      out = (0,)
    if min(out) < 1:
      size = "x".join(map(str, shape[:2]))
      raise arch_spec.refuse(name, token, f"shrinks the {size} map to nothing")
    shape = out


def _check_options(num_classes, vectorized, backward_kernels, output_code, pairing):
  """Refuses a value of ``make_network``'s other arguments, naming it."""
  if num_classes < 2:
    raise ValueError(f"num_classes must be at least 2, got {num_classes}")
  if backward_kernels not in ("", "fixed", "learned"):
    raise ValueError(
      f'unknown backward_kernels {backward_kernels!r}; choose one of "", "fixed", '
      '"learned"'
    )
  if backward_kernels and vectorized:
    raise ValueError("backward kernels are for conventional networks (vectorized=False)")
  if output_code not in OUTPUT_CODES:
    choices = ", ".join(OUTPUT_CODES)
    raise ValueError(f"unknown output_code {output_code!r}; choose one of {choices}")
  if pairing not in initializers.FLATTEN_PAIRINGS:
    choices = ", ".join(initializers.FLATTEN_PAIRINGS)
    raise ValueError(f"unknown flatten_pairing {pairing!r}; choose one of {choices}")


def make_network(
  arch,
  *,
  input_shape,
  num_classes,
  vectorized,
  nonneg,
  widths=None,
  backward_kernels="",
  output_code="onehot",
  flatten_pairing="released",
):
  """Builds one of the paper's 12 networks, or any stack of its layers, for any input
  shape and class count.

  Args:
    arch: "fc", "conv" or "lc" (Table 3's layers for one-channel inputs, Table 4's for
      three; the vectorized LC net's dense layer 256 wide, as released); a layer spec,
      ``"conv(32,3),pool(2),flatten,dense(256)"`` (``arch_spec``); or a tuple of
      ``layers`` objects. A readout is added after the layers.
    input_shape: ``(H, W, C)``; num_classes: number of classes.
    vectorized: vector units (VNN, K = the number of outputs) or conventional (K = 1).
    nonneg: nonnegative weights past the first layer, ON/OFF initialised; every
      hidden weighted layer's width must then be even (ON/OFF pairs).
    widths: optional widths (units or channels) replacing those of the hidden
      weighted layers, in order.
    output_code: "onehot" (K = num_classes outputs, the paper's) or "binary"
      (K = ceil(log2 num_classes), Section 7): ``output_codes``.
    backward_kernels: "" (none), "fixed" or "learned": see ``Network``; only for
      conventional networks. ``rules.backward_kernels(rule)`` says which a rule needs.
    flatten_pairing: "released" or "channels" (``init.FLATTEN_PAIRINGS``): the ON/OFF
      pairs of a conventional nonnegative conv/LC net's dense layer after the flatten,
      the released code's (``init.released_flatten_order``) or ON/OFF channels.

  Returns:
    A :class:`Network`.

  Raises:
    ValueError: one line naming the bad value; for an architecture (``SpecError``),
      the token at fault and the spec grammar.
  """
  input_shape = tuple(int(s) for s in input_shape)
  if len(input_shape) != 3:
    raise ValueError(f"input_shape must be (H, W, C), got {input_shape}")
  name, hidden, tokens = _hidden_layers(arch, input_shape, vectorized)
  _check_options(num_classes, vectorized, backward_kernels, output_code, flatten_pairing)
  hidden, tokens = _with_widths(name, hidden, tokens, widths, nonneg)
  readout = L.Dense(
    1 if vectorized else output_codes.num_outputs(output_code, num_classes)
  )
  _check_shapes(name, (*hidden, readout), (*tokens, "readout"), input_shape)
  return Network(
    (*hidden, readout),
    input_shape,
    int(num_classes),
    bool(vectorized),
    bool(nonneg),
    backward_kernels,
    output_code,
    flatten_pairing,
  )
