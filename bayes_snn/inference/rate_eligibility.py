"""Firing rates and eligibilities: the per-layer quantities of rate-based backpropagation.

For a spiking layer driven by currents ``I [T, B, N]`` and time weights ``w [T]``
(``1/T`` each for the mean rate), the layer's *rate* and *eligibility* are::

    r = sum_t w[t] S[t]            e = d r / d delta

where ``delta [B, N]`` is a constant shift added to every step's current,
``I[t] -> I[t] + delta``, and the derivative is the BPTT derivative with the spike's
surrogate derivative ``sg_t``. Writing ``eps_t = dV[t] / d delta`` (the eligibility
trace), ``dS[t] / d delta = sg_t * eps_t`` and ``e = sum_t w[t] sg_t eps_t``.

The trace follows the neuron's own recursion. For the project's LIF (reset outside the
leak, ``V[t] = beta V[t-1] + I[t] - thr S[t-1]``) it is ``eps_0 = 1``,
``eps_t = 1 + kappa_t eps_{t-1}`` with

* subtractive reset, reset detached:      ``kappa_t = beta``
* subtractive reset, reset not detached:  ``kappa_t = beta - thr * sg_{t-1}``
* reset to zero, reset detached:          ``kappa_t = beta (1 - S[t-1])``
* reset to zero, reset not detached:      ``kappa_t = beta (1 - S[t-1]) - beta V[t-1] sg_{t-1}``

(``beta (1 - sg)``, quoted for the second case in notes on Yu et al. 2024, is the
derivative for a neuron whose leak also acts on the reset, ``V[t] = beta (V[t-1] - S[t-1])
+ I[t]`` with threshold 1; the project's LIF keeps the reset outside the leak.) Rather than
hand-code one recursion per neuron type, the traces are carried by forward-mode
differentiation (``jax.jvp``) of the neuron's own step with tangent 1 on the current:
the result is the recursion above for LIF, and the correct one for CuBa-LIF (whose
synaptic current adds its own trace), escape-noise LIF and the single-step neuron, with
each neuron's reset and ``detach_reset`` semantics, at the cost of one extra tangent
per state variable and no storage over time.

Example
-------
>>> import jax.numpy as jnp
>>> from bayes_snn import neurons, surrogates
>>> lif, sg = neurons.LIF(beta=0.9), surrogates.fast_sigmoid()
>>> spikes, r, e = layer_rate(lif, jnp.full((8, 1, 2), 0.6), spike_fn=sg)
>>> spikes.shape, r.shape, e.shape
((8, 1, 2), (1, 2), (1, 2))
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp

from ..neurons import check_currents


def uniform_weights(steps: int) -> jax.Array:
    """Time weights ``[T]`` of the mean rate: ``1/T`` each."""
    return jnp.full((steps,), 1.0 / steps, jnp.float32)


class Trace(NamedTuple):
    """A spiking layer's running quantities: carried through time, nothing stored per step.

    ``state`` and ``tangent`` (``d state / d delta``, the eligibility traces) are the
    neuron's state pytrees; ``rate`` and ``eligibility`` (``[B, N]``) are running sums of
    ``w[t] S[t]`` and ``w[t] dS[t] / d delta``.
    """

    state: Any
    tangent: Any
    rate: jax.Array
    eligibility: jax.Array


def init_trace(neuron, shape: tuple[int, int]) -> Trace:
    """Zero state and traces for a layer of ``shape`` ``[B, N]`` (the state starts at zero)."""
    state = neuron.init_state(shape, jnp.float32)
    zeros = jnp.zeros(shape, jnp.float32)
    return Trace(state, jax.tree_util.tree_map(jnp.zeros_like, state), zeros, zeros)


def advance(neuron, trace: Trace, current, weight, *, spike_fn, noise=None, key=None):
    """One time step of ``neuron`` and of its traces; returns ``(spikes [B, N], trace)``.

    ``neuron.step`` is differentiated forward with tangent 1 on the current (a constant
    shift ``delta``), so ``dS[t] / d delta = sg_t * eps_t`` follows the neuron's own
    recursion; ``weight`` is ``w[t]``.
    """

    def step(state, cur):
        return neuron.step(state, cur, spike_fn=spike_fn, noise=noise, key=key)

    (spikes, state), (dspikes, tangent) = jax.jvp(step, (trace.state, current), (trace.tangent, jnp.ones_like(current)))
    return spikes, Trace(state, tangent, trace.rate + weight * spikes, trace.eligibility + weight * dspikes)


def layer_rate(
    neuron,
    currents: jax.Array,
    *,
    spike_fn: Callable,
    time_weights: jax.Array | None = None,
    noise: jax.Array | None = None,
    rng_key: jax.Array | None = None,
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Spikes, weighted rate and eligibility of one layer over all ``T`` steps.

    The spikes are those of ``neuron.run(currents, spike_fn=spike_fn, noise=noise,
    rng_key=rng_key)``; rate and eligibility are accumulated inside the same scan.

    Parameters
    ----------
    neuron : LIF or a subclass
    currents : array [T, B, N]
        Input currents.
    spike_fn : callable
        Surrogate spike function; its derivative is ``sg_t``.
    time_weights : array [T], optional
        ``w`` in ``r = sum_t w[t] S[t]``; the mean rate (``1/T``) if None.
    noise : array [T, B, N], optional
        Membrane noise added at every step.
    rng_key : PRNG key, optional
        For neurons that draw random numbers (escape noise).

    Returns
    -------
    spikes : array [T, B, N]
    rate : array [B, N]
    eligibility : array [B, N]
        ``d rate / d delta`` for a constant shift ``delta`` of every step's current.
    """
    check_currents(currents)
    currents = jnp.asarray(currents)
    steps = currents.shape[0]
    w = uniform_weights(steps) if time_weights is None else jnp.asarray(time_weights, jnp.float32)
    if w.shape != (steps,):
        raise ValueError(f"time_weights must have shape ({steps},); got {w.shape}")
    keys = neuron._step_keys(rng_key, steps)  # the neuron's own per-step keys, as in run()

    def body(trace, inputs):
        cur, weight, eps, key = inputs
        spikes, trace = advance(neuron, trace, cur, weight, spike_fn=spike_fn, noise=eps, key=key)
        return trace, spikes

    trace, spikes = jax.lax.scan(body, init_trace(neuron, currents.shape[1:]), (currents, w, noise, keys))
    return spikes, trace.rate, trace.eligibility


def rate_unit(current: jax.Array, rate: jax.Array, eligibility: jax.Array) -> jax.Array:
    """A spiking layer in the rate pass: value ``rate``, derivative ``diag(eligibility)``.

    ``current`` is the layer's time-averaged input (it carries the gradient); ``rate`` and
    ``eligibility`` come from the spike pass and are constants.
    """
    rate, eligibility = jax.lax.stop_gradient(rate), jax.lax.stop_gradient(eligibility)
    linear = current * eligibility
    # The two linear terms cancel exactly in value, so the forward value is the true rate.
    return rate + (linear - jax.lax.stop_gradient(linear))


__all__ = ["Trace", "uniform_weights", "init_trace", "advance", "layer_rate", "rate_unit"]
