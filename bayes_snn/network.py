"""The modeling DSL: ``Sequential(encoder, Dense, neuron, ..., Dense, readout)``.

A network is a description, not a container of weights. Its parameters are a plain dict
keyed by NumPyro site names (``"dense_0.weight"`` ``[F_in, F_out]``,
``"dense_0.bias"`` ``[F_out]``); inside a NumPyro model ``net(x)`` registers each as a
``numpyro.sample`` site with its prior, and ``net.apply(params, x, rng_key)`` runs fixed
weights. Dense layers compute ``gain * (x @ W) + b`` with ``gain = 1/sqrt(fan_in)`` by
default, so standard priors give O(1) currents at any width (as in PBP and EBP).

Example
-------
>>> import jax, jax.numpy as jnp
>>> from bayes_snn import encoders, neurons, readouts
>>> net = Sequential(encoders.Direct(steps=8), Dense(16), neurons.LIF(beta=0.9),
...                  Dense(3), readouts.MeanMembrane())
>>> params = net.init_params(jax.random.PRNGKey(0), in_features=4)
>>> sorted(params)
['dense_0.bias', 'dense_0.weight', 'dense_1.bias', 'dense_1.weight']
>>> net.apply(params, jnp.ones((5, 4))).shape
(5, 3)
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import numpyro

from . import encoders as enc
from ._checks import check_int
from . import neurons as nrn
from . import priors as pri
from . import readouts as rd
from .devices import Ideal, check_device


@dataclass(frozen=True)
class Dense:
    """Fully connected layer ``u = gain * (x @ W) + b`` applied at every time step.

    Parameters
    ----------
    features : int
        Number of output units.
    prior : distribution
        Prior of every weight (a scalar ``bayes_snn.priors`` distribution).
    bias : bool
        Whether the layer has a bias.
    bias_prior : distribution
        Prior of every bias.
    gain : float or None
        Fixed multiplier of ``x @ W``; ``None`` means ``1/sqrt(fan_in)``.
    name : str or None
        Site-name prefix; defaults to ``dense_<i>``.
    """

    features: int
    prior: Any = field(default_factory=lambda: pri.Normal(0.0, 1.0))
    bias: bool = True
    bias_prior: Any = field(default_factory=lambda: pri.Normal(0.0, 1.0))
    gain: float | None = None
    name: str | None = None

    def __post_init__(self):
        check_int("features", self.features)
        for arg in ("prior", "bias_prior"):
            prior = getattr(self, arg)
            if not isinstance(prior, numpyro.distributions.Distribution) or prior.batch_shape or prior.event_shape:
                raise ValueError(f"{arg} must be a scalar NumPyro distribution such as priors.Normal(0, 1); got {prior!r}")
        if self.gain is not None and not (np.isfinite(self.gain) and self.gain > 0):
            raise ValueError(f"gain must be positive and finite or None; got {self.gain!r}")

    def gain_for(self, fan_in: int) -> float:
        return float(self.gain) if self.gain is not None else 1.0 / float(np.sqrt(fan_in))

    def shapes(self, fan_in: int) -> dict[str, tuple[int, ...]]:
        out = {"weight": (fan_in, self.features)}
        if self.bias:
            out["bias"] = (self.features,)
        return out

    def priors(self) -> dict[str, Any]:
        return {"weight": self.prior, "bias": self.bias_prior} if self.bias else {"weight": self.prior}

    def __call__(self, x: jax.Array, weight: jax.Array, bias: jax.Array | None = None) -> jax.Array:
        u = self.gain_for(weight.shape[0]) * (x @ weight)
        return u if bias is None else u + bias


NEURONS = (nrn.LIF,)  # subclasses included by isinstance


def _kind(layer) -> str:
    if isinstance(layer, Dense):
        return "dense"
    return type(layer).__name__.lower()


def _check_per_neuron(cell, width: int, position: int) -> None:
    """A neuron layer's per-neuron parameters (vectors) need one value per unit of the Dense layer before it."""
    for f in fields(cell):
        value = getattr(cell, f.name)
        if not isinstance(value, jax.core.Tracer) and np.ndim(value) == 1 and np.shape(value)[0] != width:
            raise ValueError(f"{f.name} of layer {position} ({type(cell).__name__}) must be a scalar or have one value "
                             f"per unit of the Dense layer before it ({width}); got shape {np.shape(value)}")


class Sequential:
    """A feed-forward spiking network: optional encoder, layers, readout.

    Rules (checked at construction): an encoder may only come first; the readout must
    come last; ``SpikeCount``/``FirstSpikeTime`` must follow a neuron layer and
    ``MeanMembrane`` a Dense layer; a neuron layer's per-neuron parameters have one value
    per unit of the Dense layer before it.
    """

    def __init__(self, *layers):
        if not layers:
            raise ValueError("Sequential needs at least one layer; got none")
        self.layers = tuple(layers)
        known = (Dense, *NEURONS, *enc.ENCODERS, *rd.READOUTS)
        for i, layer in enumerate(layers):
            if not isinstance(layer, known):
                raise ValueError(f"layer {i} must be a Dense, neuron, encoder or readout; got {type(layer).__name__}")
            if isinstance(layer, enc.ENCODERS) and i != 0:
                raise ValueError(f"an encoder may only be the first layer; got {type(layer).__name__} at position {i}")
            if isinstance(layer, rd.READOUTS) and i != len(layers) - 1:
                raise ValueError(f"a readout must be the last layer; got {type(layer).__name__} at position {i}")
        if not any(isinstance(layer, Dense) for layer in layers):
            raise ValueError("Sequential needs at least one Dense layer")
        width = None
        for i, layer in enumerate(layers):
            if isinstance(layer, Dense):
                width = layer.features
            elif isinstance(layer, NEURONS) and width is not None:
                _check_per_neuron(layer, width, i)
        last, prev = layers[-1], layers[-2] if len(layers) > 1 else None
        if isinstance(last, rd.READOUTS):
            wanted = NEURONS if last.needs_spikes else (Dense,)
            if not isinstance(prev, wanted):
                raise ValueError(
                    f"{type(last).__name__} must follow a {'neuron' if last.needs_spikes else 'Dense'} layer; "
                    f"got {type(prev).__name__}"
                )
        counts: dict[str, int] = {}
        names = []
        for layer in layers:
            kind = _kind(layer)
            names.append(getattr(layer, "name", None) or f"{kind}_{counts.get(kind, 0)}")
            counts[kind] = counts.get(kind, 0) + 1
        if len(set(names)) != len(names):
            raise ValueError(f"layer names must be unique; got {names}")
        self.names = tuple(names)

    def __repr__(self):
        return "Sequential(" + ", ".join(repr(layer) for layer in self.layers) + ")"

    # ---- structure -------------------------------------------------------------------
    @property
    def encoder(self):
        return self.layers[0] if isinstance(self.layers[0], enc.ENCODERS) else None

    @property
    def readout(self):
        return self.layers[-1] if isinstance(self.layers[-1], rd.READOUTS) else None

    @property
    def out_features(self) -> int:
        return [layer for layer in self.layers if isinstance(layer, Dense)][-1].features

    @property
    def is_stochastic(self) -> bool:
        """True if a forward pass draws random numbers (rate encoding, escape noise)."""
        return any(isinstance(layer, (enc.Rate, nrn.StochasticLIF)) for layer in self.layers)

    def dense_layers(self, in_features: int):
        """Yield ``(name, layer, fan_in)`` for every Dense layer."""
        fan_in = in_features
        for name, layer in zip(self.names, self.layers):
            if isinstance(layer, Dense):
                yield name, layer, fan_in
                fan_in = layer.features

    def param_shapes(self, in_features: int) -> dict[str, tuple[int, ...]]:
        """Site name to shape, e.g. ``{"dense_0.weight": (4, 16), ...}``."""
        return {
            f"{name}.{p}": shape
            for name, layer, fan_in in self.dense_layers(in_features)
            for p, shape in layer.shapes(fan_in).items()
        }

    def site_priors(self, in_features: int) -> dict[str, Any]:
        """Site name to its scalar prior (the same for every entry of the site)."""
        return {f"{name}.{p}": prior for name, layer, _ in self.dense_layers(in_features) for p, prior in layer.priors().items()}

    # ---- probabilistic use ---------------------------------------------------------------
    def sample_params(self, in_features: int, priors: dict[str, Any] | None = None) -> dict[str, jax.Array]:
        """Register every parameter as a ``numpyro.sample`` site; returns the values.

        ``priors`` overrides the scalar prior of named sites, e.g.
        ``{"dense_0.weight": dist.Normal(0, tau)}`` for a hierarchical scale.
        """
        overrides = dict(priors or {})
        shapes = self.param_shapes(in_features)
        unknown = set(overrides) - set(shapes)
        if unknown:
            raise ValueError(f"priors names unknown sites {sorted(unknown)}; the sites are {sorted(shapes)}")
        params = {}
        for site, prior in self.site_priors(in_features).items():
            prior = overrides.get(site, prior)
            shape = shapes[site]
            params[site] = numpyro.sample(site, prior.expand(shape).to_event(len(shape)))
        return params

    def init_params(self, rng_key: jax.Array, in_features: int) -> dict[str, jax.Array]:
        """One draw of every parameter from its prior."""
        shapes, priors = self.param_shapes(in_features), self.site_priors(in_features)
        keys = jax.random.split(rng_key, len(shapes))
        return {site: priors[site].sample(k, shapes[site]) for k, site in zip(keys, shapes)}

    def __call__(self, x, rng_key=None, *, priors=None, device=None, spike_fn=nrn.heaviside):
        """Sample the parameters as NumPyro sites and run the network on ``x``.

        Inside a NumPyro model; randomness in the forward pass uses ``numpyro.prng_key()``
        unless ``rng_key`` is given.
        """
        params = self.sample_params(jnp.shape(x)[-1], priors)
        if rng_key is None and self.is_stochastic:
            rng_key = numpyro.prng_key()
        return self.apply(params, x, rng_key, device=device, spike_fn=spike_fn)

    # ---- simulation ------------------------------------------------------------------
    def check_params(self, params: dict[str, jax.Array], in_features: int) -> None:
        """Raise ``ValueError`` unless ``params`` has exactly the right sites and shapes."""
        shapes = self.param_shapes(in_features)
        if set(params) != set(shapes):
            raise ValueError(f"params must have the sites {sorted(shapes)}; got {sorted(params)}")
        for site, shape in shapes.items():
            if tuple(jnp.shape(params[site])) != shape:
                raise ValueError(f"params[{site!r}] must have shape {shape}; got {tuple(jnp.shape(params[site]))}")

    def check_input(self, x) -> None:
        """Raise ``ValueError`` unless ``x`` is ``[B, F]`` (with an encoder) or ``[T, B, F]``."""
        wanted = 2 if self.encoder is not None else 3
        if jnp.ndim(x) != wanted:
            form = "static features [B, F] (the network starts with an encoder)" if wanted == 2 else (
                "time-major [T, B, F] (the network has no encoder)")
            raise ValueError(f"x must be {form}; got shape {jnp.shape(x)}")
        # Concrete inputs only (under jit x is a tracer): NaN would otherwise give silently
        # wrong spikes, since NaN > threshold is False.
        if not isinstance(x, jax.core.Tracer):
            bad = int(np.size(x) - np.count_nonzero(np.isfinite(np.asarray(x, dtype=float))))
            if bad:
                raise ValueError(f"x must be finite; found {bad} NaN/inf values")

    def apply(
        self,
        params: dict[str, jax.Array],
        x: jax.Array,
        rng_key: jax.Array | None = None,
        *,
        device=None,
        spike_fn=nrn.heaviside,
    ) -> jax.Array:
        """Run fixed parameters on ``x``; returns the readout ``[B, C]``.

        ``x`` is ``[B, F]`` if the network starts with an encoder, else ``[T, B, F]``.
        Without a readout the last layer's time-major activity ``[T, B, N]`` is returned.
        ``spike_fn`` replaces the Heaviside spike (surrogate-gradient training).
        """
        device = Ideal() if device is None else check_device(device)
        self.check_input(x)
        self.check_params(params, jnp.shape(x)[-1])
        if rng_key is None and self.is_stochastic:
            raise ValueError("this network draws random numbers (rate encoding or escape noise): rng_key is required")
        h = jnp.asarray(x, jnp.float32)
        for i, (name, layer) in enumerate(zip(self.names, self.layers)):
            key = None if rng_key is None else jax.random.fold_in(rng_key, i)
            h = self.apply_layer(name, layer, h, params, key, device, spike_fn)
        return h

    def apply_layer(self, name, layer, h, params, key, device, spike_fn):
        """Run one layer (see ``apply``); backends reuse this to share forward semantics."""
        if isinstance(layer, enc.ENCODERS):
            return layer(h, key)
        if isinstance(layer, Dense):
            w = device.weights(f"{name}.weight", params[f"{name}.weight"])
            b = device.weights(f"{name}.bias", params[f"{name}.bias"]) if layer.bias else None
            return layer(h, w, b)
        if isinstance(layer, NEURONS):
            neuron = layer.replace(**device.neuron_params(name, {"beta": layer.beta, "threshold": layer.threshold}))
            noise = device.membrane_noise(None if key is None else jax.random.fold_in(key, 1), name, h.shape)
            spikes, _ = neuron.run(h, spike_fn=spike_fn, noise=noise, rng_key=key)
            return spikes
        return layer(h)


__all__ = ["Dense", "Sequential"]
