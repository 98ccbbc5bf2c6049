"""Spiking neuron models: discrete-time LIF, current-based LIF, escape-noise LIF, single-step.

Every neuron is a frozen dataclass with ``init_state(shape)``, a pure
``step(state, current, ...) -> (spikes, state)`` and a ``run`` that scans ``step`` over
time. Arrays are time-major ``[T, B, N]``. Parameters (``beta``, ``threshold``, ...) are
scalars or per-neuron arrays ``[N]`` (a chip's fixed-pattern mismatch needs the latter).

The LIF recursion is the contract of the project and matches snnTorch's ``Leaky``::

    S[t] = 1 if V[t] > threshold else 0                        (strict)
    reset="subtract":  V[t] = beta * V[t-1] + I[t] - threshold * S[t-1]
    reset="zero":      V[t] = beta * (1 - S[t-1]) * V[t-1] + I[t]
    reset="none":      V[t] = beta * V[t-1] + I[t]

with ``V[-1] = S[-1] = 0``.

Example
-------
>>> import jax.numpy as jnp
>>> spikes, v = LIF(beta=0.9).run(jnp.full((5, 1, 2), 0.6))
>>> spikes[:, 0, 0].tolist()
[0.0, 1.0, 0.0, 1.0, 0.0]
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

Array = jax.Array
SpikeFn = Callable[[Array], Array]
RESETS = ("subtract", "zero", "none")


def heaviside(x: Array) -> Array:
    """Strict step ``1[x > 0]`` with zero derivative (the ideal forward spike)."""
    x = jnp.asarray(x)
    return (x > 0).astype(jnp.result_type(x.dtype, jnp.float32))


class LIFState(NamedTuple):
    """Membrane ``v`` and the previous step's spikes ``s`` (both ``[B, N]``)."""

    v: Array
    s: Array


class CuBaState(NamedTuple):
    """Synaptic current ``i``, membrane ``v`` and previous spikes ``s`` (``[B, N]``)."""

    i: Array
    v: Array
    s: Array


def _check_param(name: str, value, low: float | None, high: float | None, inclusive_low=True):
    """Validate a scalar or per-neuron parameter given as a concrete number or array."""
    if isinstance(value, jax.core.Tracer):
        return value
    arr = np.asarray(value, dtype=float)
    if arr.ndim > 1:
        raise ValueError(f"{name} must be a scalar or a per-neuron vector [N]; got shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} must be finite; got {value!r}")
    if low is not None and (np.any(arr < low) if inclusive_low else np.any(arr <= low)):
        op = ">=" if inclusive_low else ">"
        raise ValueError(f"{name} must be {op} {low}; got {value!r}")
    if high is not None and np.any(arr > high):
        raise ValueError(f"{name} must be <= {high}; got {value!r}")
    return value


def _check_reset(reset: str) -> None:
    if reset not in RESETS:
        raise ValueError(f"reset must be one of {RESETS}; got {reset!r}")


def check_currents(currents: Array, n: int | None = None) -> None:
    """Raise ``ValueError`` unless ``currents`` is time-major ``[T, B, N]``."""
    shape = jnp.shape(currents)
    if len(shape) != 3:
        raise ValueError(f"currents must be time-major [T, B, N]; got shape {shape}")
    if n is not None and shape[-1] != n:
        raise ValueError(f"currents must have {n} features (last axis); got shape {shape}")


def _scan(step, state, currents, noise, keys):
    """Run ``step`` over the leading (time) axis; ``noise``/``keys`` may be None."""

    def body(carry, inputs):
        current, eps, key = inputs
        spikes, carry = step(carry, current, eps, key)
        return carry, (spikes, carry.v)

    _, (spikes, membrane) = jax.lax.scan(body, state, (currents, noise, keys))
    return spikes, membrane


@dataclass(frozen=True)
class LIF:
    """Leaky integrate-and-fire neuron (snnTorch ``Leaky`` semantics).

    Parameters
    ----------
    beta : float or array [N]
        Membrane decay per step, in [0, 1].
    threshold : float or array [N]
        Firing threshold, > 0.
    reset : {"subtract", "zero", "none"}
        Reset mechanism after a spike.
    detach_reset : bool
        Stop gradients through the reset term (snnTorch and most surrogate-gradient work
        do; it changes derivatives only, never the forward spikes).
    """

    beta: float | Array = 0.9
    threshold: float | Array = 1.0
    reset: str = "subtract"
    detach_reset: bool = True

    def __post_init__(self):
        _check_param("beta", self.beta, 0.0, 1.0)
        _check_param("threshold", self.threshold, 0.0, None, inclusive_low=False)
        _check_reset(self.reset)

    def init_state(self, shape: tuple[int, ...], dtype=jnp.float32) -> LIFState:
        """Zero membrane and no previous spike, each of ``shape`` (``[B, N]``)."""
        return LIFState(jnp.zeros(shape, dtype), jnp.zeros(shape, dtype))

    def fire(self, v: Array, key: Array | None, spike_fn: SpikeFn) -> Array:
        """Spikes for membrane ``v`` (deterministic threshold crossing)."""
        return spike_fn(v - self.threshold)

    def step(
        self,
        state: LIFState,
        current: Array,
        *,
        spike_fn: SpikeFn = heaviside,
        noise: Array | None = None,
        key: Array | None = None,
        beta: Array | None = None,
        threshold: Array | None = None,
    ) -> tuple[Array, LIFState]:
        """One time step ``(state, I[t]) -> (S[t], state)``; shapes ``[B, N]``.

        ``noise`` is added to the membrane (a device's per-step noise); ``beta`` and
        ``threshold`` override the layer's values (a device's per-neuron mismatch).
        """
        neuron = self if beta is None and threshold is None else self.replace(beta=beta, threshold=threshold)
        return neuron._step(state, current, noise, key, spike_fn)

    def replace(self, beta=None, threshold=None) -> "LIF":
        """A copy with per-neuron ``beta`` / ``threshold`` substituted (``None`` keeps)."""
        fields = dict(self.__dict__)
        if beta is not None:
            fields["beta"] = beta
        if threshold is not None:
            fields["threshold"] = threshold
        return type(self)(**fields)

    def _leak(self, state: LIFState, current: Array, noise: Array | None) -> Array:
        s_prev = jax.lax.stop_gradient(state.s) if self.detach_reset else state.s
        if self.reset == "subtract":
            v = self.beta * state.v + current - self.threshold * s_prev
        elif self.reset == "zero":
            v = self.beta * (1.0 - s_prev) * state.v + current
        else:
            v = self.beta * state.v + current
        return v if noise is None else v + noise

    def _step(self, state, current, noise, key, spike_fn):
        v = self._leak(state, current, noise)
        s = self.fire(v, key, spike_fn)
        return s, LIFState(v, s)

    def run(
        self,
        currents: Array,
        *,
        spike_fn: SpikeFn = heaviside,
        noise: Array | None = None,
        rng_key: Array | None = None,
    ) -> tuple[Array, Array]:
        """Simulate ``currents [T, B, N]``; returns ``(spikes, membrane)``, both ``[T, B, N]``.

        ``noise [T, B, N]`` is added to the membrane at each step (optional).
        """
        check_currents(currents)
        currents = jnp.asarray(currents)
        T = currents.shape[0]
        keys = self._step_keys(rng_key, T)
        state = self.init_state(currents.shape[1:], currents.dtype)
        return _scan(lambda st, c, e, k: self._step(st, c, e, k, spike_fn), state, currents, noise, keys)

    def _step_keys(self, rng_key, T):
        return None


@dataclass(frozen=True)
class StochasticLIF(LIF):
    """Escape-noise LIF: spikes with probability ``sigmoid((V - threshold) / noise)``.

    The membrane follows the LIF recursion. ``run`` needs ``rng_key``. With a
    surrogate ``spike_fn`` the derivative flows through the firing probability.

    Example
    -------
    >>> import jax, jax.numpy as jnp
    >>> s, _ = StochasticLIF(noise=0.1).run(jnp.ones((4, 2, 3)), rng_key=jax.random.PRNGKey(0))
    >>> s.shape
    (4, 2, 3)
    """

    noise: float = 0.2

    def __post_init__(self):
        super().__post_init__()
        _check_param("noise", self.noise, 0.0, None, inclusive_low=False)

    def fire(self, v, key, spike_fn):
        if key is None:
            raise ValueError("StochasticLIF needs rng_key; got None")
        p = jax.nn.sigmoid((v - self.threshold) / self.noise)
        return spike_fn(p - jax.random.uniform(key, v.shape, v.dtype))

    def _step_keys(self, rng_key, T):
        if rng_key is None:
            raise ValueError("StochasticLIF.run needs rng_key; got None")
        return jax.random.split(rng_key, T)


@dataclass(frozen=True)
class CuBaLIF(LIF):
    """Current-based LIF (snnTorch ``Synaptic``): a leaky synaptic current drives the LIF.

    ``i[t] = alpha * i[t-1] + I[t]``, then the LIF recursion with ``i[t]`` as input.
    """

    alpha: float | Array = 0.8

    def __post_init__(self):
        super().__post_init__()
        _check_param("alpha", self.alpha, 0.0, 1.0)

    def init_state(self, shape, dtype=jnp.float32) -> CuBaState:
        z = jnp.zeros(shape, dtype)
        return CuBaState(z, z, z)

    def _step(self, state, current, noise, key, spike_fn):
        i = self.alpha * state.i + current
        v = self._leak(LIFState(state.v, state.s), i, noise)
        s = self.fire(v, key, spike_fn)
        return s, CuBaState(i, v, s)


@dataclass(frozen=True)
class SpikeResponse(LIF):
    """Single-step spike-response neuron of the EP paper: ``S[t] = 1[I[t] > threshold]``.

    No leak and no reset (``beta=0``, ``reset="none"``); with one time step this is the
    model of Yao, McLaughlin & Altmann (2025). Threshold 0 by convention.
    """

    beta: float | Array = 0.0
    threshold: float | Array = 0.0
    reset: str = "none"

    def __post_init__(self):
        _check_param("threshold", self.threshold, None, None)
        if not isinstance(self.beta, jax.core.Tracer) and np.any(np.asarray(self.beta) != 0):
            raise ValueError(f"SpikeResponse has no leak: beta must be 0; got {self.beta!r}")
        if self.reset != "none":
            raise ValueError(f"SpikeResponse has no reset: reset must be 'none'; got {self.reset!r}")


__all__ = [
    "LIF",
    "CuBaLIF",
    "StochasticLIF",
    "SpikeResponse",
    "LIFState",
    "CuBaState",
    "heaviside",
    "check_currents",
]
