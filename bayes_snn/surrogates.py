"""Surrogate derivatives for the spike function (used by gradient trainers only).

Each factory returns a spike function ``f(x)`` whose forward value is the strict step
``1[x > 0]`` (so simulations are unchanged) and whose derivative is a smooth surrogate.
``x`` is the membrane minus the threshold.

Example
-------
>>> import jax
>>> f = fast_sigmoid(slope=25.0)
>>> float(f(0.1)), round(float(jax.grad(f)(0.0)), 3)
(1.0, 1.0)
"""

from __future__ import annotations

import math
from typing import Callable

import jax
import jax.numpy as jnp

from .neurons import heaviside


def _surrogate(derivative: Callable[[jax.Array], jax.Array]):
    @jax.custom_jvp
    def spike(x):
        return heaviside(x)

    @spike.defjvp
    def _jvp(primals, tangents):
        (x,), (dx,) = primals, tangents
        return spike(x), derivative(x) * dx

    return spike


def _check_slope(slope: float) -> float:
    if not (isinstance(slope, (int, float)) and math.isfinite(slope) and slope > 0):
        raise ValueError(f"slope must be a positive finite number; got {slope!r}")
    return float(slope)


def fast_sigmoid(slope: float = 25.0):
    """SuperSpike (Zenke & Ganguli 2018): ``d/dx = 1 / (1 + slope |x|)^2``."""
    k = _check_slope(slope)
    return _surrogate(lambda x: 1.0 / (1.0 + k * jnp.abs(x)) ** 2)


def arctan(slope: float = 2.0):
    """Arctan surrogate: ``d/dx = 1 / (1 + (pi/2 * slope * x)^2)``, peak 1 at ``x = 0``.

    snnTorch's ``atan(alpha)`` is this times ``alpha / 2``: the same at its default
    ``alpha = slope = 2``.
    """
    k = _check_slope(slope)
    return _surrogate(lambda x: 1.0 / (1.0 + (jnp.pi / 2 * k * x) ** 2))


def sigmoid(slope: float = 25.0):
    """Derivative of ``sigmoid(slope x)``, normalised to peak 1 at ``x = 0``."""
    k = _check_slope(slope)
    return _surrogate(lambda x: 4.0 * jax.nn.sigmoid(k * x) * jax.nn.sigmoid(-k * x))


def triangle(slope: float = 1.0):
    """Piecewise linear (Esser et al. 2016): ``d/dx = max(0, 1 - slope |x|)``."""
    k = _check_slope(slope)
    return _surrogate(lambda x: jnp.maximum(0.0, 1.0 - k * jnp.abs(x)))


SURROGATES = {"fast_sigmoid": fast_sigmoid, "arctan": arctan, "sigmoid": sigmoid, "triangle": triangle}


def get(name: str, slope: float | None = None):
    """Surrogate spike function by name (one of ``SURROGATES``)."""
    if name not in SURROGATES:
        raise ValueError(f"surrogate must be one of {sorted(SURROGATES)}; got {name!r}")
    return SURROGATES[name]() if slope is None else SURROGATES[name](slope)


__all__ = ["fast_sigmoid", "arctan", "sigmoid", "triangle", "get", "SURROGATES"]
