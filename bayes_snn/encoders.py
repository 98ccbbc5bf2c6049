"""Encoders: static features ``[B, F]`` to time-major inputs ``[T, B, F]``.

* ``Rate``    Bernoulli spikes with probability ``clip(gain * x, 0, 1)`` per step (random).
* ``Latency`` one spike per feature at step ``round((1 - x) * (T - 1))``: larger is earlier.
* ``Direct``  the feature value as a constant input current at every step.

Rate and latency coding expect features in [0, 1].

Example
-------
>>> import jax, jax.numpy as jnp
>>> Latency(steps=4)(jnp.array([[0.0, 1.0]])).tolist()
[[[0.0, 1.0]], [[0.0, 0.0]], [[0.0, 0.0]], [[1.0, 0.0]]]
"""

from __future__ import annotations

from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np

from ._checks import check_int


def _check_static(x, unit_interval: bool) -> jax.Array:
    if jnp.ndim(x) != 2:
        raise ValueError(f"x must be static features [B, F] for an encoder; got shape {jnp.shape(x)}")
    if unit_interval and not isinstance(x, jax.core.Tracer):
        arr = np.asarray(x)
        if arr.size and (np.nanmin(arr) < 0 or np.nanmax(arr) > 1):
            raise ValueError(
                f"x must lie in [0, 1] for this encoder; got values in [{arr.min():.4g}, {arr.max():.4g}]"
            )
    return jnp.asarray(x, jnp.float32)


@dataclass(frozen=True)
class Direct:
    """Constant current: ``out[t] = x`` for ``t < steps``."""

    steps: int = 1

    def __post_init__(self):
        check_int("steps", self.steps)

    def __call__(self, x, rng_key=None) -> jax.Array:
        x = _check_static(x, unit_interval=False)
        return jnp.broadcast_to(x, (self.steps, *x.shape))


@dataclass(frozen=True)
class Rate:
    """Bernoulli rate code: ``out[t] ~ Bernoulli(clip(gain * x, 0, 1))``; needs ``rng_key``."""

    steps: int = 10
    gain: float = 1.0

    def __post_init__(self):
        check_int("steps", self.steps)
        if not (np.isfinite(self.gain) and self.gain > 0):
            raise ValueError(f"gain must be positive and finite; got {self.gain!r}")

    def __call__(self, x, rng_key=None) -> jax.Array:
        if rng_key is None:
            raise ValueError("Rate encoding is random: rng_key must be a PRNG key; got None")
        x = _check_static(x, unit_interval=True)
        p = jnp.clip(self.gain * x, 0.0, 1.0)
        return jax.random.bernoulli(rng_key, p, (self.steps, *x.shape)).astype(jnp.float32)


@dataclass(frozen=True)
class Latency:
    """Latency code: one spike per feature at ``round((1 - x) * (steps - 1))``."""

    steps: int = 10

    def __post_init__(self):
        check_int("steps", self.steps)

    def __call__(self, x, rng_key=None) -> jax.Array:
        x = _check_static(x, unit_interval=True)
        t_spike = jnp.round((1.0 - jnp.clip(x, 0.0, 1.0)) * (self.steps - 1))
        t = jnp.arange(self.steps, dtype=jnp.float32)[:, None, None]
        return (t == t_spike[None]).astype(jnp.float32)


ENCODERS = (Direct, Rate, Latency)

__all__ = ["Direct", "Rate", "Latency", "ENCODERS"]
