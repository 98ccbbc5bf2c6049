"""Readouts: time-major activity ``[T, B, C]`` to per-example outputs ``[B, C]``.

* ``SpikeCount``     ``scale * sum_t S[t]`` of the previous (spiking) layer.
* ``MeanMembrane``   ``scale * mean_t V[t]`` of a non-spiking leaky integrator
  ``V[t] = beta V[t-1] + I[t]`` driven by the previous (Dense) layer's currents.
* ``FirstSpikeTime`` ``-scale * t_first``, where ``t_first`` is the number of steps before a
  neuron's first spike (``T`` if it never fires): the earliest neuron wins.

For a ``Classifier`` the output is the vector of class logits.

Example
-------
>>> import jax.numpy as jnp
>>> s = jnp.array([[[0., 1.]], [[1., 1.]], [[0., 0.]]])   # [T=3, B=1, C=2]
>>> SpikeCount()(s).tolist(), FirstSpikeTime()(s).tolist()
([[1.0, 2.0]], [[-1.0, -0.0]])
"""

from __future__ import annotations

from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np

from .neurons import check_currents


def _check_scale(scale) -> None:
    if not (np.isfinite(scale) and scale > 0):
        raise ValueError(f"scale must be positive and finite; got {scale!r}")


@dataclass(frozen=True)
class _SpikeReadout:
    """A readout of the previous neuron layer's spikes, times ``scale``."""

    scale: float = 1.0
    needs_spikes = True

    def __post_init__(self):
        _check_scale(self.scale)


@dataclass(frozen=True)
class SpikeCount(_SpikeReadout):
    """Spike count over time, times ``scale``; expects spikes from a neuron layer."""

    def __call__(self, spikes: jax.Array) -> jax.Array:
        check_currents(spikes)
        return self.scale * jnp.sum(spikes, axis=0)


@dataclass(frozen=True)
class MeanMembrane:
    """Mean membrane of a leaky integrator (no spikes, no reset), times ``scale``.

    The output is linear in the input currents, which makes it the natural readout for
    moment propagation.
    """

    beta: float = 0.0
    scale: float = 1.0
    needs_spikes = False

    def __post_init__(self):
        _check_scale(self.scale)
        if not 0.0 <= self.beta <= 1.0:
            raise ValueError(f"beta must lie in [0, 1]; got {self.beta!r}")

    def time_weights(self, steps: int) -> jax.Array:
        """``c [T]`` with ``output = sum_t c[t] I[t]`` (the integrator's unrolled weights)."""
        t = jnp.arange(steps, dtype=jnp.float32)
        # V[t] = sum_{u<=t} beta^(t-u) I[u]; the mean over t sums beta^k for k < T - u.
        if self.beta == 1.0:
            c = steps - t
        else:
            c = (1.0 - self.beta ** (steps - t)) / (1.0 - self.beta)
        return self.scale * c / steps

    def __call__(self, currents: jax.Array) -> jax.Array:
        check_currents(currents)
        c = self.time_weights(currents.shape[0])
        return jnp.einsum("t,tbc->bc", c, currents)


@dataclass(frozen=True)
class FirstSpikeTime(_SpikeReadout):
    """Negative time to first spike, times ``scale``; ``T`` steps if a neuron never fires."""

    def __call__(self, spikes: jax.Array) -> jax.Array:
        check_currents(spikes)
        # 1 while no spike has happened yet; a product keeps it differentiable for
        # surrogate gradients.
        silent = jnp.cumprod(1.0 - spikes, axis=0)
        return -self.scale * jnp.sum(silent, axis=0)


READOUTS = (SpikeCount, MeanMembrane, FirstSpikeTime)

__all__ = ["SpikeCount", "MeanMembrane", "FirstSpikeTime", "READOUTS"]
