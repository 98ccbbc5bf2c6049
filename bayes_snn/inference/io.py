"""Save and load ``Posterior`` files: ``.npz`` arrays plus a JSON header, never pickle.

Layout: ``__meta__`` holds a JSON string (format, version, method, model config, and for
every site its family); ``w/<site>/<param>`` hold the distribution parameters;
``h/<name>`` the per-epoch history. ``load`` checks every key, shape and value against
the model before building anything, and raises ``ValueError`` on any mismatch.

Example
-------
>>> import tempfile, os, jax, jax.numpy as jnp, numpyro.distributions as dist
>>> from bayes_snn import Sequential, Dense, LIF, Classifier, encoders, readouts
>>> from bayes_snn.inference import Posterior
>>> net = Sequential(encoders.Direct(2), Dense(4), LIF(), Dense(2), LIF(), readouts.SpikeCount())
>>> p = Posterior(Classifier(net, 2), {k: dist.Delta(v) for k, v in net.init_params(jax.random.PRNGKey(0), 3).items()}, "demo", 3)
>>> path = os.path.join(tempfile.mkdtemp(), "fit.npz"); p.save(path)
>>> Posterior.load(path).method
'demo'
"""

from __future__ import annotations

import json
import zipfile
import zlib
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import numpyro.distributions as dist

from ..config import from_config, to_config
from ..priors import DiscreteGrid

FORMAT, VERSION = "bayes_snn.posterior", 1
_FAMILIES = {"delta": ("v",), "normal": ("loc", "scale"), "categorical": ("values", "probs")}


def _family(d) -> tuple[str, dict[str, np.ndarray]]:
    if isinstance(d, dist.Delta):
        return "delta", {"v": d.v}
    if isinstance(d, dist.Normal):
        # NumPyro keeps loc and scale unbroadcast (e.g. a scalar scale has shape (1, 1)).
        return "normal", {"loc": jnp.broadcast_to(d.loc, d.batch_shape), "scale": jnp.broadcast_to(d.scale, d.batch_shape)}
    if isinstance(d, DiscreteGrid):
        return "categorical", {"values": d.values, "probs": jnp.broadcast_to(d.probs, d.batch_shape + d.values.shape)}
    raise ValueError(f"cannot save a posterior factor of type {type(d).__name__}")


def save_posterior(post, path) -> None:
    sites, arrays = {}, {}
    for site, d in post.weights.items():
        family, params = _family(d)
        sites[site] = family
        for name, value in params.items():
            arrays[f"w/{site}/{name}"] = np.asarray(value)
    for name, value in post.history.items():
        arrays[f"h/{name}"] = np.asarray(value)
    try:
        model_cfg = to_config(post.model)
    except ValueError:
        model_cfg = None  # a hand-written model: load() then needs model=
    meta = {"format": FORMAT, "version": VERSION, "method": post.method, "in_features": post.in_features,
            "model": model_cfg, "sites": sites, "history": sorted(post.history)}
    arrays["__meta__"] = np.array(json.dumps(meta))
    with open(path, "wb") as f:
        np.savez_compressed(f, **arrays)


def _fail(path, msg) -> ValueError:
    return ValueError(f"{path} is not a valid bayes_snn posterior file: {msg}")


def _read(path) -> tuple[dict, dict[str, np.ndarray]]:
    try:
        loaded = np.load(path, allow_pickle=False)
        if not isinstance(loaded, np.lib.npyio.NpzFile):
            raise ValueError("it holds a single .npy array")
        with loaded as npz:
            arrays = {k: npz[k] for k in npz.files}
    except FileNotFoundError:
        raise ValueError(f"no such file: {path}") from None
    except (ValueError, OSError, EOFError, NotImplementedError, zipfile.BadZipFile, zlib.error) as err:
        raise _fail(path, f"cannot read it as a NumPy .npz archive without pickle ({err})") from None
    if "__meta__" not in arrays:
        raise _fail(path, "missing the __meta__ header")
    try:
        meta = json.loads(str(arrays.pop("__meta__")))
    except (json.JSONDecodeError, RecursionError) as err:
        raise _fail(path, f"the header is not JSON ({err})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise _fail(path, f"format must be {FORMAT!r}; got {meta.get('format') if isinstance(meta, dict) else meta!r}")
    if meta.get("version") != VERSION:
        raise _fail(path, f"version must be {VERSION}; got {meta.get('version')!r}")
    return meta, arrays


def _factor(path, site, family, params, shape):
    for name, value in params.items():
        if not np.issubdtype(value.dtype, np.floating) or not np.all(np.isfinite(value)):
            raise _fail(path, f"{site}.{name} must hold finite floats")
    if family == "delta":
        _check_shape(path, site, "v", params["v"], shape)
        return dist.Delta(jnp.asarray(params["v"]))
    if family == "normal":
        for name in ("loc", "scale"):
            _check_shape(path, site, name, params[name], shape)
        if np.any(params["scale"] <= 0):
            raise _fail(path, f"{site}.scale must be > 0")
        return dist.Normal(jnp.asarray(params["loc"]), jnp.asarray(params["scale"]))
    values, probs = params["values"], params["probs"]
    if values.ndim != 1:
        raise _fail(path, f"{site}.values must be 1-D; got shape {values.shape}")
    _check_shape(path, site, "probs", probs, shape + values.shape)
    if np.any(probs < 0) or not np.allclose(probs.sum(-1), 1.0, atol=1e-4):
        raise _fail(path, f"{site}.probs must be non-negative and sum to 1")
    return DiscreteGrid(values, probs)


def _check_shape(path, site, name, value, shape):
    if value.shape != tuple(shape):
        raise _fail(path, f"{site}.{name} must have shape {tuple(shape)}; got {value.shape}")


def load_posterior(path, model=None):
    from .result import Posterior

    path = Path(path)
    meta, arrays = _read(path)
    try:
        method, in_features, sites = str(meta["method"]), int(meta["in_features"]), dict(meta["sites"])
        history_keys = list(meta["history"])
    except (KeyError, TypeError, ValueError) as err:
        raise _fail(path, f"incomplete header ({err})") from None
    if model is None:
        if meta.get("model") is None:
            raise ValueError(f"{path} was fitted on a hand-written model: pass it as load(path, model=...)")
        try:
            model = from_config(meta["model"])
        except (ValueError, RecursionError) as err:
            raise _fail(path, str(err)) from None
    shapes = model.net.param_shapes(in_features)
    if set(sites) != set(shapes):
        raise _fail(path, f"sites must be {sorted(shapes)}; got {sorted(sites)}")
    expected = {f"h/{k}" for k in history_keys}
    missing = sorted(expected - set(arrays))
    if missing:
        raise _fail(path, f"missing arrays {missing}")
    weights = {}
    for site, family in sites.items():
        if not isinstance(family, str) or family not in _FAMILIES:
            raise _fail(path, f"{site} has unknown family {family!r}")
        keys = {name: f"w/{site}/{name}" for name in _FAMILIES[family]}
        missing = [k for k in keys.values() if k not in arrays]
        if missing:
            raise _fail(path, f"missing arrays {missing}")
        expected |= set(keys.values())
        weights[site] = _factor(path, site, family, {n: arrays[k] for n, k in keys.items()}, shapes[site])
    extra = set(arrays) - expected
    if extra:
        raise _fail(path, f"unexpected arrays {sorted(extra)}")
    history = {k: arrays[f"h/{k}"] for k in history_keys}
    return Posterior(model, weights, method, in_features, history)


__all__ = ["save_posterior", "load_posterior"]
