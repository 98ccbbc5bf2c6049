"""JSON configs for models: how a saved result remembers its network without pickle.

``to_config(obj)`` turns a model, network, layer, prior or device into plain JSON data;
``from_config(cfg)`` rebuilds it from a fixed registry of classes. Nothing else is ever
constructed, so a tampered file can fail to load but cannot run code.

Example
-------
>>> from bayes_snn import Sequential, Dense, LIF, encoders, readouts
>>> net = Sequential(encoders.Direct(4), Dense(3), LIF(), readouts.SpikeCount())
>>> from_config(to_config(net)).names
('direct_0', 'dense_0', 'lif_0', 'spikecount_0')
"""

from __future__ import annotations

import dataclasses

import numpy as np

from . import encoders, neurons, priors, readouts
from .devices import Ideal
from .models import Classifier, Regressor
from .network import Dense, Sequential

_DATACLASSES = {
    cls.__name__: cls
    for cls in (
        Dense,
        neurons.LIF,
        neurons.CuBaLIF,
        neurons.StochasticLIF,
        neurons.SpikeResponse,
        *encoders.ENCODERS,
        *readouts.READOUTS,
        Ideal,
    )
}
_PRIORS = {
    "Normal": ("loc", "scale"),
    "Laplace": ("loc", "scale"),
    "Binary": ("scale",),
    "Ternary": ("scale", "p_zero"),
    "IntegerGrid": ("bits", "scale"),
}
_PRIOR_CLASSES = {name: getattr(priors, name) for name in _PRIORS}


def register_device(cls) -> type:
    """Allow a dataclass device type in saved configs (used by device modules)."""
    _DATACLASSES[cls.__name__] = cls
    return cls


def _value(v):
    if isinstance(v, (bool, int, float, str)) or v is None:
        return v
    arr = np.asarray(v)
    return arr.item() if arr.ndim == 0 else arr.tolist()


def to_config(obj) -> dict:
    """Plain-JSON description of ``obj``."""
    name = type(obj).__name__
    if isinstance(obj, Classifier):
        return {"type": name, "net": to_config(obj.net), "num_classes": obj.num_classes, "device": to_config(obj.device)}
    if isinstance(obj, Regressor):
        return {"type": name, "net": to_config(obj.net), "noise": obj.noise, "device": to_config(obj.device)}
    if isinstance(obj, Sequential):
        return {"type": name, "layers": [to_config(layer) for layer in obj.layers]}
    if name in _PRIORS and isinstance(obj, _PRIOR_CLASSES[name]):
        return {"type": name, **{k: _value(getattr(obj, k)) for k in _PRIORS[name]}}
    if name in _DATACLASSES and dataclasses.is_dataclass(obj):
        out = {"type": name}
        for f in dataclasses.fields(obj):
            v = getattr(obj, f.name)
            out[f.name] = to_config(v) if f.name.endswith("prior") or f.name == "device" else _value(v)
        return out
    raise ValueError(f"cannot describe an object of type {name} in a saved config")


def _expect(cfg, what: str) -> dict:
    if not isinstance(cfg, dict) or not isinstance(cfg.get("type"), str):
        raise ValueError(f"malformed config for {what}: expected an object with a 'type'; got {cfg!r:.200}")
    return cfg


def from_config(cfg: dict):
    """Rebuild an object described by ``to_config``; raises ``ValueError`` if malformed."""
    cfg = _expect(cfg, "an object")
    name = cfg["type"]
    args = {k: v for k, v in cfg.items() if k != "type"}
    try:
        if name == "Classifier":
            return Classifier(from_config(args["net"]), args["num_classes"], device=from_config(args["device"]))
        if name == "Regressor":
            return Regressor(from_config(args["net"]), noise=args["noise"], device=from_config(args["device"]))
        if name == "Sequential":
            return Sequential(*[from_config(layer) for layer in args["layers"]])
        if name in _PRIORS:
            return _PRIOR_CLASSES[name](**{k: args[k] for k in _PRIORS[name]})
        if name in _DATACLASSES:
            cls = _DATACLASSES[name]
            fields = {f.name for f in dataclasses.fields(cls)}
            unknown = set(args) - fields
            if unknown:
                raise ValueError(f"unknown fields {sorted(unknown)}")
            for k, v in args.items():
                if k.endswith("prior") or k == "device":
                    args[k] = from_config(v)
                elif isinstance(v, list):
                    args[k] = np.asarray(v, dtype=np.float32)
            return cls(**args)
    except (KeyError, TypeError) as err:
        raise ValueError(f"malformed config for {name}: {err}") from None
    raise ValueError(f"unknown type {name!r} in config")


__all__ = ["to_config", "from_config", "register_device"]
