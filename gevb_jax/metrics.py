"""Gradient-alignment measurements of Section 4 and Appendices E-F.

Angles compare each hidden layer's backpropagated signal per example, with the
postsynaptic derivative term excluded as in the paper (Launay et al.'s convention):

* GEVB in a vectorized net: the true signal is ``delta_hat`` of Eq. 12-13, GEVB's is
  the constant vector 1, so ``cos theta = delta_hat . 1 / (|delta_hat| sqrt(n))``
  (Eq. 20) and ``tan theta = r`` (Eq. 24).
* DFA in a conventional net: the true signal ``dL/da^l`` against DFA's ``e B_l``.
* FA, KP and sign symmetry in a conventional net: ``dL/da^l`` against the signal the
  rule's backward kernels send to the layer's units.

Angles are computed per example and averaged over the batch, in degrees. Conv and LC
layers count every (position, channel) as a unit.
"""

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np

from gevb_jax import output_codes, rules

# Signals of smaller norm have no direction to measure (compute_angle's 1e-6).
MIN_NORM = 1e-6


def _tap_gradients(net, variables, x, objective):
  """``d objective / d a^l`` for every hidden layer, ``{name: (B, K, *S, C)}``."""
  k = net.num_components
  taps = {
    info.name: jnp.zeros((x.shape[0], k, *info.out_shape), x.dtype) for info in net.hidden
  }
  return jax.grad(lambda t: objective(net.apply(variables, x, t)))(taps)


@functools.partial(jax.jit, static_argnames="net")
def delta_hat(net, variables, x):
  """Per-example ``delta_hat^l_i`` (Eq. 12) of a vectorized net, ``{name: (B, n_l)}``.

  Uses ``d(sum_mu a^L_mu) / d a^l_{i nu} = delta_hat_i`` for every ``nu`` (the Jacobian
  is ``delta_hat I``) and reads component 0.
  """
  grads = _tap_gradients(net, variables, x, jnp.sum)
  return _first_component(net, grads)


def _first_component(net, grads):
  """``{name: (B, n_l)}`` from tap gradients ``(B, K, *S, C)``, in layer order."""
  return {
    info.name: grads[info.name][:, 0].reshape(len(grads[info.name]), -1)
    for info in net.hidden
  }


def _angles_deg(u, v):
  """Per-row angle between ``u`` and ``v``, ``(B, n)`` each, in degrees."""
  cos = jnp.sum(u * v, -1) / (jnp.linalg.norm(u, axis=-1) * jnp.linalg.norm(v, axis=-1))
  return jnp.degrees(jnp.arccos(jnp.clip(cos, -1.0, 1.0)))


def _chunks(n, batch_size):
  """Slices covering ``range(n)`` in steps of ``batch_size`` (all at once if None)."""
  step = batch_size or max(n, 1)
  return [slice(start, start + step) for start in range(0, n, step)]


def alignment(net, variables, x, labels, rule, batch_size=None):
  """Mean angle (degrees) between ``rule``'s signal and the gradient, per hidden layer.

  Returns ``{layer name: degrees}`` for "gevb" (vectorized) and "dfa", "fa", "kp" and
  "sign" (conventional), and ``{}`` for "bp", whose updates are the gradient, or for no
  examples. Examples where either signal's norm is at most ``MIN_NORM`` (no active
  path, Appendix C) are left out of the mean, as the released analysis does
  (``alignment_and_concentration_viz.ipynb``, cell 3, ``compute_angle``).
  ``batch_size`` bounds the examples measured at once (the gradient here is the K-wide
  one of plain autodiff); the mean is over all of ``x``.
  """
  if rule == "bp" or not len(x):
    return {}
  sums = counts = None
  for part in _chunks(len(x), batch_size):
    s, c = _alignment_sums(
      net, variables, x[part], None if labels is None else labels[part], rule
    )
    sums = s if sums is None else jax.tree_util.tree_map(jnp.add, sums, s)
    counts = c if counts is None else jax.tree_util.tree_map(jnp.add, counts, c)
  return {
    info.name: float(sums[info.name] / max(int(counts[info.name]), 1))
    for info in net.hidden
  }


@functools.partial(jax.jit, static_argnames=("net", "rule"))
def _alignment_sums(net, variables, x, labels, rule):
  """Per layer: the sum of the valid examples' angles, and how many are valid."""
  if rule == "gevb":
    true = delta_hat(net, variables, x)
    rule_signal = {n: jnp.ones_like(d) for n, d in true.items()}
  else:

    def total_loss(logits):
      return net.loss(logits, labels) * len(labels)

    grads = _tap_gradients(net, variables, x, total_loss)
    true = _first_component(net, grads)
    if rule == "dfa":
      logits = net.apply(variables, x)
      e = output_codes.error_vector(logits, labels, net.output_code, net.num_classes)
      rule_signal = {n: e @ variables["fixed"][n]["feedback"] for n in true}
    else:  # FA, KP, sign: what their kernels send back to each layer's units.
      taps = {
        info.name: jnp.zeros((x.shape[0], *info.out_shape), x.dtype)
        for info in net.hidden
      }
      sent = jax.grad(
        lambda t: total_loss(rules.logits_with_rule(net, variables, x, rule, d_taps=t))
      )(taps)
      rule_signal = {n: sent[n].reshape(len(x), -1) for n in true}
  sums, counts = {}, {}
  for name, d in true.items():
    angles = _angles_deg(rule_signal[name], d)
    valid = (jnp.linalg.norm(d, axis=-1) > MIN_NORM) & (
      jnp.linalg.norm(rule_signal[name], axis=-1) > MIN_NORM
    )
    sums[name] = jnp.sum(jnp.where(valid, angles, 0.0))
    counts[name] = valid.sum()
  return sums, counts


def sign_agreement(net, variables, x, labels, rule):
  """Per hidden layer, the fraction of weight entries whose update under ``rule`` has
  the sign of the gradient's, over the entries where the gradient is not zero.

  Both are the updates of one step on the batch ``x`` (sums over its examples). For
  GEVB in a nonnegative VNN the signs agree for every single example (Section 4;
  ``tests/test_rules.py``); summed over a batch, examples weigh differently in the
  two, and this measures how often the sum keeps the sign. ``{}`` for "bp" or no
  examples.
  """
  if rule == "bp" or not len(x):
    return {}
  matches, counts = _sign_matches(net, variables, x, labels, rule)
  return {name: float(matches[name]) / max(int(counts[name]), 1) for name in matches}


@functools.partial(jax.jit, static_argnames=("net", "rule"))
def _sign_matches(net, variables, x, labels, rule):
  """Per hidden layer: matching signs, and nonzero gradient entries."""
  _, updates = rules.loss_and_updates(net, variables, x, labels, rule)
  _, grads = rules.loss_and_updates(net, variables, x, labels, "bp")
  matches, counts = {}, {}
  for info in net.hidden:
    u, g = updates[info.name]["w"], grads[info.name]["w"]
    nonzero = g != 0
    matches[info.name] = jnp.sum(nonzero & (jnp.sign(u) == jnp.sign(g)))
    counts[info.name] = jnp.sum(nonzero)
  return matches, counts


def relative_std(net, variables, x, batch_size=None):
  """``r^l = sigma / mu`` of ``delta_hat^l`` over units (Eq. 21), batch-averaged
  (``{}`` for no examples)."""
  sums = {}
  for part in _chunks(len(x), batch_size):
    for name, d in delta_hat(net, variables, x[part]).items():
      ratio = jnp.sum(jnp.std(d, axis=-1) / jnp.mean(d, axis=-1))
      sums[name] = sums.get(name, 0.0) + float(ratio)
  return {name: total / len(x) for name, total in sums.items()}


def _fan_out(info):
  """Connections leaving each input unit of a weighted layer: ``n_{l+1}`` of Eq. 15."""
  if info.layer.kind == "dense":
    return info.layer.features
  return info.layer.kernel**2 * info.layer.features / info.layer.stride**2


def eq15_prediction(net, variables):
  """Eq. 15's ``r^l`` for every hidden layer from the weights' empirical statistics.

  ``r^{L-1} = sigma_{w^L} / mu_{w^L}`` and
  ``r^l = sqrt(2 / n_{l+1}) sigma_{w^{l+1}} / mu_{w^{l+1}} sqrt(1 + (r^{l+1})^2)``.
  For conv and LC layers ``n_{l+1}`` is the fan-out ``k^2 C_out / stride^2``; pooling
  scales ``delta_hat`` uniformly and leaves ``r`` unchanged.

  Returns ``{layer name: r}``; layers whose downstream weights have nonpositive mean
  (Eq. 15's assumption ``mu_w > 0`` fails, e.g. mixed-sign nets) map to ``nan``.
  """
  weighted = net.weighted
  out, r = {}, None
  for below, above in zip(reversed(weighted[:-1]), reversed(weighted[1:])):
    w = np.asarray(variables["params"][above.name]["w"])
    ratio = w.std() / w.mean() if w.mean() > 0 else math.nan
    if above.readout:
      r = ratio
    else:
      r = math.sqrt(2.0 / _fan_out(above)) * ratio * math.sqrt(1.0 + r**2)
    out[below.name] = float(r)
  return dict(reversed(out.items()))


def angle_from_r(r):
  """``theta = arctan r`` in degrees (Eq. 24)."""
  return math.degrees(math.atan(r))
