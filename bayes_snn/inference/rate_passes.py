"""The two passes of rate-based backpropagation over a ``Sequential`` network.

1. **Spike pass** (no gradients): the network's own T-step simulation, up to its last
   spiking layer, collecting for every spiking layer its weighted rate and eligibility
   (``rate_eligibility``), and the weighted time average of the network's input.
   ``spike_pass_layers`` (rate-m) runs one layer at a time over all steps (Dense layers
   and encoders through ``Sequential.apply_layer``, neurons through their own ``step``);
   ``spike_pass_stream`` (rate-s) runs one scan over time of the whole network carrying
   only states, eligibility traces and running sums. Both reproduce ``Sequential.apply``'s
   spikes exactly, random draws included (same keys).
2. **Rate pass** (with gradients, ``rate_pass``): the network once on time averages.
   Dense layers act on rates; each spiking layer outputs its true rate with derivative
   ``diag(eligibility)``; the readout scales the last value into the true readout.

Time weights. Because Dense layers and both supported readouts are linear in time, the
rate pass reproduces the SNN's output exactly if every quantity is the right weighted
time sum. A spiking layer's *input* enters as the mean current (weights ``1/T``), so
every layer up to the last spiking one uses mean rates. The last spiking layer (or the
input, in a network without one) feeds the readout and uses the readout's weights:

* ``SpikeCount(scale)``: ``out = scale * sum_t S[t] = (scale T) * mean rate``;
* ``MeanMembrane``: ``out = sum_t c[t] I[t]`` with ``c = time_weights(T)``, so with
  ``w = c / C``, ``C = sum_t c[t]``, ``out = C * Dense(sum_t w[t] S[t])``; the last
  spiking layer's rate and eligibility are weighted by ``w`` (the eligibility is then the
  exact derivative of the readout's own input, not of the plain mean rate). For
  ``beta=0`` the weights are uniform and this is the plain mean rate.

``FirstSpikeTime`` is not a time-weighted sum of spikes and is not supported.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from .. import encoders as enc
from .. import readouts as rd
from ..network import NEURONS, Dense
from ..neurons import heaviside
from .rate_eligibility import advance, init_trace, layer_rate, rate_unit, uniform_weights


class RatePlan(NamedTuple):
    """Static description of the passes for one network and number of steps.

    Attributes
    ----------
    steps : int
    source_weights : array [T]
        Weights of the network input's time average.
    neuron_weights : dict[str, array [T]]
        Weights of each spiking layer's rate and eligibility.
    readout_factor : float
        Multiplies the last Dense layer's (or spiking layer's) rate-pass value.
    last_neuron : int
        Index in ``net.layers`` of the last spiking layer, -1 if there is none.
    """

    steps: int
    source_weights: jax.Array
    neuron_weights: dict
    readout_factor: float
    last_neuron: int


def check_rate_expressible(net) -> None:
    """Raise ``ValueError`` unless ``net``'s readout is a time-weighted sum."""
    readout = net.readout
    if readout is None or not isinstance(readout, (rd.SpikeCount, rd.MeanMembrane)):
        got = "no readout" if readout is None else type(readout).__name__
        raise ValueError(
            "rate-based backprop needs a readout that is a time-weighted sum of activity "
            f"(readouts.SpikeCount or readouts.MeanMembrane); got {got}: the first-spike time "
            "is not a function of firing rates"
        )


def make_plan(net, steps: int) -> RatePlan:
    """The time weights and readout factor of ``net`` simulated for ``steps`` steps."""
    check_rate_expressible(net)
    readout = net.readout
    if isinstance(readout, rd.SpikeCount):
        w_out, factor = uniform_weights(steps), float(readout.scale) * steps
    else:
        c = readout.time_weights(steps)
        total = jnp.sum(c)
        w_out, factor = c / total, total
    spiking = [i for i, layer in enumerate(net.layers) if isinstance(layer, NEURONS)]
    last = spiking[-1] if spiking else -1
    uniform = uniform_weights(steps)
    weights = {net.names[i]: (w_out if i == last else uniform) for i in spiking}
    return RatePlan(steps, w_out if last < 0 else uniform, weights, factor, last)


def num_steps(net, x) -> int:
    """``T``: the encoder's steps, or the leading axis of time-major input."""
    return net.encoder.steps if net.encoder is not None else int(jnp.shape(x)[0])


def _layer_keys(rng_key, n):
    # The same per-layer keys as Sequential.apply, so draws match the network's own.
    return [None if rng_key is None else jax.random.fold_in(rng_key, i) for i in range(n)]


def _on_device(name, layer, key, device, shape):
    """The neuron and its membrane noise as ``Sequential.apply_layer`` sets them up."""
    neuron = layer.replace(**device.neuron_params(name, {"beta": layer.beta, "threshold": layer.threshold}))
    noise = device.membrane_noise(None if key is None else jax.random.fold_in(key, 1), name, shape)
    return neuron, noise


def spike_pass_layers(net, layers, plan: RatePlan, params, x, rng_key, device, spike_fn):
    """rate-m: run each layer over all ``T`` steps; returns ``(source [B, F], stats)``.

    ``layers`` is ``net.layers`` with the trainer's reset treatment; ``stats`` maps each
    spiking layer's name to ``(rate, eligibility)``, both ``[B, N]``.
    """
    keys = _layer_keys(rng_key, len(layers))
    h, start = jnp.asarray(x, jnp.float32), 0
    if net.encoder is not None:
        h, start = net.apply_layer(net.names[0], layers[0], h, params, keys[0], device, spike_fn), 1
    source = jnp.einsum("t,tbf->bf", plan.source_weights, h)
    stats = {}
    for i in range(start, plan.last_neuron + 1):
        name, layer, key = net.names[i], layers[i], keys[i]
        if isinstance(layer, NEURONS):
            neuron, noise = _on_device(name, layer, key, device, h.shape)
            h, rate, elig = layer_rate(
                neuron, h, spike_fn=spike_fn, time_weights=plan.neuron_weights[name], noise=noise, rng_key=key
            )
            stats[name] = (rate, elig)
        else:
            h = net.apply_layer(name, layer, h, params, key, device, spike_fn)
    return source, stats


def _features(net, in_features):
    """Width of every layer's output (encoders, neurons and readouts keep their input's)."""
    widths, f = [], in_features
    for layer in net.layers:
        f = layer.features if isinstance(layer, Dense) else f
        widths.append(f)
    return widths


def spike_pass_stream(net, layers, plan: RatePlan, params, x, rng_key, device, spike_fn):
    """rate-s: one scan over time of the whole network; same return as ``spike_pass_layers``.

    Only the neuron states, their eligibility traces and running sums are carried, so the
    memory does not grow with ``T``, except for inputs that exist as ``[T, ...]`` arrays
    anyway: time-major data, a ``Rate``/``Latency`` encoder's output (kept bit-identical to
    the network's own encoding) and a noisy device's membrane noise.
    """
    x = jnp.asarray(x, jnp.float32)
    keys = _layer_keys(rng_key, len(layers))
    batch, widths = x.shape[-2], _features(net, x.shape[-1])
    first = layers[0]
    xs = {"w_src": plan.source_weights, "input": None, "layers": {}}
    if isinstance(first, enc.Direct):
        constant = x  # a Direct encoder's output is x at every step: no [T, B, F] array
    elif isinstance(first, enc.ENCODERS):
        constant, xs["input"] = None, net.apply_layer(net.names[0], first, x, params, keys[0], device, spike_fn)
    else:
        constant, xs["input"] = None, x
    start = 1 if net.encoder is not None else 0

    neurons, traces = {}, {}
    for i in range(start, plan.last_neuron + 1):
        name, layer, key = net.names[i], layers[i], keys[i]
        if isinstance(layer, NEURONS):
            shape = (batch, widths[i])
            neuron, noise = _on_device(name, layer, key, device, (plan.steps, *shape))
            # The neuron's own per-step keys (escape noise), as in neuron.run.
            xs["layers"][name] = (plan.neuron_weights[name], noise, neuron._step_keys(key, plan.steps))
            neurons[name], traces[name] = neuron, init_trace(neuron, shape)

    def body(carry, inp):
        source, traces = carry
        h = constant if constant is not None else inp["input"]
        source = source + inp["w_src"] * h
        new = {}
        for i in range(start, plan.last_neuron + 1):
            name = net.names[i]
            if name in neurons:
                weight, noise, key = inp["layers"][name]
                h, new[name] = advance(neurons[name], traces[name], h, weight, spike_fn=spike_fn, noise=noise, key=key)
            else:
                h = net.apply_layer(name, layers[i], h, params, None, device, spike_fn)
        return (source, new), None

    source0 = jnp.zeros((batch, x.shape[-1]), jnp.float32)
    (source, final), _ = jax.lax.scan(body, (source0, traces), xs, length=plan.steps)
    return source, {name: (trace.rate, trace.eligibility) for name, trace in final.items()}


def rate_pass(net, plan: RatePlan, params, source, stats, device) -> jax.Array:
    """The differentiable pass on time averages; returns the readout ``[B, C]``.

    Its value equals the SNN's readout (up to float rounding); its gradient is the
    rate-domain estimator.
    """
    h = jax.lax.stop_gradient(source)
    for name, layer in zip(net.names, net.layers):
        if isinstance(layer, enc.ENCODERS):
            continue
        if isinstance(layer, Dense):
            h = net.apply_layer(name, layer, h, params, None, device, heaviside)
        elif isinstance(layer, NEURONS):
            h = rate_unit(h, *stats[name])
        else:
            h = plan.readout_factor * h
    return h


__all__ = [
    "RatePlan",
    "check_rate_expressible",
    "make_plan",
    "num_steps",
    "spike_pass_layers",
    "spike_pass_stream",
    "rate_pass",
]
