"""``fit``: the one-line front door to every backend.

A backend (``method``) is a small object of pure functions, in the style of
BlackJAX/Optax::

    state = method.init(rng_key, model, x, y)            # -> NamedTuple State
    state, info = method.step(rng_key, state, batch)      # -> (State, NamedTuple of scalars)
    weights = method.posterior(state)                      # -> {site: distribution}

and carries ``name``, ``epochs`` and ``batch_size``; optionally ``diverging(history)``, a
message (or None) that ``fit`` issues once as a ``RuntimeWarning`` when the run goes wrong.
``fit`` validates the data, shuffles it into fixed-size minibatches (the last one padded
and masked, so the jitted step compiles once), runs the epochs with a tqdm bar, records
per-epoch diagnostics, optionally checkpoints after every epoch and resumes from a
checkpoint, and returns a ``Posterior``.

Example
-------
>>> import jax
>>> from bayes_snn import Sequential, Dense, LIF, Classifier, encoders, readouts, datasets, inference
>>> data = datasets.yin_yang("train", size=200)
>>> net = Sequential(encoders.Direct(8), Dense(16), LIF(), Dense(3), readouts.MeanMembrane())
>>> post = inference.fit(Classifier(net, 3), data, inference.SurrogateGradient(epochs=1),
...                      rng_key=jax.random.PRNGKey(0), progress_bar=False)
>>> sorted(post.history)
['loss', 'seconds']
"""

from __future__ import annotations

import os
import time
import warnings
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from tqdm.auto import tqdm

from .._checks import check_key
from ..datasets.batching import Batch, batch_axis, minibatch_indices
from .checkpoint import load_checkpoint, save_checkpoint
from .result import Posterior, _unpack


def _default_method():
    from .surrogate import SurrogateGradient

    return SurrogateGradient()


def _check_method(method) -> None:
    needed = ("init", "step", "posterior", "name", "epochs", "batch_size")
    missing = [a for a in needed if not hasattr(method, a)]
    if missing:
        raise ValueError(f"method must be an inference backend such as inference.SEP(); {type(method).__name__} lacks {missing}")


def fit(
    model,
    data,
    method: Any = None,
    *,
    rng_key: jax.Array,
    progress_bar: bool = True,
    checkpoint: str | os.PathLike | None = None,
    callback=None,
) -> Posterior:
    """Fit ``model`` to ``data`` with a backend; returns a ``Posterior``.

    Parameters
    ----------
    model : Classifier or Regressor
    data : Dataset or tuple (x, y)
        ``x`` is ``[N, F]`` (static features, network with an encoder) or ``[T, N, F]``.
    method : backend, optional
        ``inference.SurrogateGradient()`` (default), ...
    rng_key : PRNG key
        Controls initialisation, shuffling and any randomness in the forward pass.
    progress_bar : bool
        Show a tqdm bar with the latest epoch's diagnostics.
    checkpoint : path, optional
        Save the loop state there after every epoch; if the file exists, resume from it.
    callback : callable, optional
        Called after every epoch as ``callback(epoch, posterior)`` (``epoch`` from 0), outside
        the epoch's timing, e.g. to record test accuracy per epoch.
    """
    method = _default_method() if method is None else method
    _check_method(method)
    check_key("rng_key", rng_key)
    if callback is not None and not callable(callback):
        raise ValueError(f"callback must be a function called as callback(epoch, posterior); got {callback!r}")
    x, y = model.check_data(*_unpack(data))
    n = x.shape[batch_axis(x)]
    key_init, key_loop = jax.random.split(rng_key)
    state = method.init(key_init, model, x, y)
    start, history = 0, {}
    if checkpoint is not None and os.path.exists(checkpoint):
        state, start, key_loop, history = load_checkpoint(checkpoint, state, method.name)
        history = {k: list(v) for k, v in history.items()}

    axis = batch_axis(x)
    xj, yj = jnp.asarray(x), jnp.asarray(y)
    fields = []  # the Info's field names, recorded when the step is traced

    @jax.jit
    def train_step(k_steps, b, state, xj, yj, idx, mask):
        # Key, indices and mask of batch ``b`` are taken inside the jitted step: done outside,
        # each is a dispatch of its own, and together they cost more than a small network's step.
        batch = Batch(jnp.take(xj, idx[b], axis=axis), yj[idx[b]], mask[b])
        state, info = method.step(jax.random.fold_in(k_steps, b), state, batch)
        fields[:] = info._fields
        return state, _packed(info)

    batch_size = min(method.batch_size, n)
    num_batches = -(-n // batch_size)
    warned = False
    bar = tqdm(total=(method.epochs - start) * num_batches, disable=not progress_bar, desc=method.name, leave=False)
    for epoch in range(start, method.epochs):
        k_perm, k_steps = jax.random.split(jax.random.fold_in(key_loop, epoch))
        idx, mask = minibatch_indices(k_perm, n, batch_size)
        t0, infos = time.perf_counter(), []
        for b in range(num_batches):
            state, info = train_step(k_steps, b, state, xj, yj, idx, mask)
            infos.append(info)
            bar.update()
        summary = _summarise(fields, infos)
        jax.block_until_ready(state)
        summary["seconds"] = time.perf_counter() - t0
        for k, v in summary.items():
            history.setdefault(k, []).append(v)
        bar.set_postfix({k: f"{v:.4g}" for k, v in summary.items()}, refresh=False)
        if checkpoint is not None:
            save_checkpoint(checkpoint, state, epoch + 1, key_loop, method.name, history)
        problem = method.diverging(history) if hasattr(method, "diverging") else None
        if problem and not warned:
            warnings.warn(problem, RuntimeWarning, stacklevel=2)
            warned = True
        if callback is not None:
            callback(epoch, _posterior(model, method, state, x, history))
    bar.close()
    return _posterior(model, method, state, x, history)


def _posterior(model, method, state, x, history: dict) -> Posterior:
    return Posterior(model, method.posterior(state), method.name, x.shape[-1], history)


def _packed(info: NamedTuple) -> jax.Array:
    """An Info of scalars as one float32 vector ``[fields]``.

    One output buffer per minibatch instead of one per field: each is a host-side cost, and
    stacking an epoch of scalar fields one by one took 14 % of a small network's epoch
    (SEP on Yin-Yang). Counts (``num_*``) stay exact up to 2^24 per minibatch.
    """
    for name, value in info._asdict().items():
        if jnp.ndim(value):
            raise ValueError(f"{type(info).__name__}.{name} must be a scalar; got shape {jnp.shape(value)}")
    return jnp.stack([jnp.asarray(v, jnp.float32) for v in info])


def _summarise(fields: list[str], infos: list[jax.Array]) -> dict[str, float]:
    """Mean of every Info field over an epoch's packed batches (counts, ``num_*``, are summed)."""
    if not infos:
        return {}
    stacked = np.stack(jax.device_get(infos)).astype(np.float64)  # [batches, fields]
    return {k: float(v.sum() if k.startswith("num_") else v.mean()) for k, v in zip(fields, stacked.T)}


__all__ = ["fit"]
