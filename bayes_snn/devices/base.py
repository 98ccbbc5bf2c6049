"""The device protocol: what a simulated substrate may change, and the ideal device.

A network never reads weights or neuron parameters directly: it asks the device.
A device may change exactly three things, each at one documented point:

1. ``weights(name, w)``: the weights a Dense layer actually uses (quantisation,
   clipping, gain error). Deterministic given the chip instance.
2. ``neuron_params(name, params)``: per-neuron parameters such as ``beta`` and
   ``threshold`` (fixed-pattern mismatch), returned as arrays broadcastable to ``[N]``.
3. ``membrane_noise(rng_key, name, shape)``: additive per-step membrane noise
   ``[T, B, N]`` (trial-to-trial noise), or ``None`` for none. A device that returns
   noise sets ``is_stochastic = True`` so that predictions average over trials.

The ideal device changes nothing; it is the empty composition, in the spirit of
``optax.chain()``. Because neurons and backends only call these hooks, a hardware
model plugs in without touching either.

Example
-------
>>> import jax.numpy as jnp
>>> Ideal().weights("dense_0", jnp.ones(2)).tolist()
[1.0, 1.0]
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import jax


@runtime_checkable
class Device(Protocol):
    """What a substrate may change in a simulation (see the module docstring)."""

    is_stochastic: bool

    def weights(self, name: str, w: jax.Array) -> jax.Array: ...

    def neuron_params(self, name: str, params: dict[str, jax.Array]) -> dict[str, jax.Array]: ...

    def membrane_noise(self, rng_key: jax.Array | None, name: str, shape: tuple[int, ...]) -> jax.Array | None: ...


@dataclass(frozen=True)
class Ideal:
    """The ideal simulation: weights, neuron parameters and membranes are used as given."""

    is_stochastic = False

    def weights(self, name: str, w: jax.Array) -> jax.Array:
        return w

    def neuron_params(self, name: str, params: dict[str, jax.Array]) -> dict[str, jax.Array]:
        return params

    def membrane_noise(self, rng_key, name, shape):
        return None


def check_device(device) -> Device:
    """Return ``device`` if it implements the protocol, else raise ``ValueError``."""
    if not isinstance(device, Device):
        raise ValueError(
            "device must implement weights(), neuron_params() and membrane_noise() "
            f"(e.g. bayes_snn.devices.Ideal()); got {type(device).__name__}"
        )
    return device
