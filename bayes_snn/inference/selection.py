"""``select``: choose settings of a backend by its held-out log-likelihood.

Some settings cannot be chosen by the posterior itself: the power of a tempered likelihood
(``SEP(likelihood_weight=...)``, ``VI(kl_weight=...)``), the damping, the number of epochs.
``select`` holds out a random ``valid_fraction`` of the training data, fits the backend
once per candidate value on the rest (same seed for every candidate), and scores each
predictive on the held-out part by its negative log-likelihood, a proper scoring rule
the fits never see. The test data stay untouched; refit on all training data with the
chosen value. Several settings are chosen jointly by naming them together
(``param=("likelihood_weight", "batch_size")``) and listing one tuple per candidate.

Example
-------
>>> import jax
>>> from bayes_snn import Sequential, Dense, LIF, Classifier, encoders, readouts, datasets, inference
>>> data = datasets.yin_yang("train", size=300)
>>> net = Sequential(encoders.Direct(4), Dense(16), LIF(), Dense(3), readouts.MeanMembrane())
>>> choice = inference.select(Classifier(net, 3), data, inference.SEP(epochs=2), "likelihood_weight", [1, 2],
...                           rng_key=jax.random.PRNGKey(0), num_samples=20)
>>> choice.best in (1, 2), sorted(choice.scores[1])
(True, ['accuracy', 'brier', 'ece', 'nll'])
>>> pairs = [(1, 16), (2, 32)]  # (likelihood_weight, batch_size); a full grid: itertools.product
>>> choice = inference.select(Classifier(net, 3), data, inference.SEP(epochs=2), ("likelihood_weight", "batch_size"),
...                           pairs, rng_key=jax.random.PRNGKey(0), num_samples=20)
>>> choice.best in pairs
True
"""

from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple, Sequence

import jax
import numpy as np

from .._checks import check_key
from ..datasets.batching import batch_axis
from .fit import fit
from .result import _unpack


class Selection(NamedTuple):
    """The chosen value ``best`` of ``param`` and the held-out metrics of every candidate.

    ``scores`` maps each candidate value to ``Posterior.evaluate``'s metrics on the held-out
    part (``nll`` decides; ties go to the earlier candidate). With several settings
    (``param`` a tuple of names) every candidate, and ``best``, is a tuple of their values.
    """

    param: str | tuple[str, ...]
    best: Any
    scores: dict


def split(data, valid_fraction: float, rng_key: jax.Array):
    """``((x_fit, y_fit), (x_valid, y_valid))``: a random split along the example axis."""
    x, y = (np.asarray(a) for a in _unpack(data))
    axis = batch_axis(x)
    n = x.shape[axis]
    n_valid = int(round(valid_fraction * n))
    if not (1 <= n_valid < n):
        raise ValueError(f"valid_fraction={valid_fraction} of {n} examples leaves no example to fit or to score; "
                         f"it must give between 1 and {n - 1} held-out examples")
    order = np.asarray(jax.random.permutation(rng_key, n))
    fit_idx, valid_idx = np.sort(order[n_valid:]), np.sort(order[:n_valid])
    return (np.take(x, fit_idx, axis=axis), y[fit_idx]), (np.take(x, valid_idx, axis=axis), y[valid_idx])


def select(model, data, method, param: str | tuple[str, ...], values: Sequence, *, rng_key: jax.Array,
           valid_fraction: float = 0.2, mode: str = "sample", num_samples: int = 100) -> Selection:
    """Fit ``method`` with ``param`` set to each of ``values``; keep the best held-out NLL.

    Parameters
    ----------
    model, data
        As for ``fit``; ``data`` is split into a fitting and a held-out part.
    method : backend dataclass
        ``param`` must be one of its fields (``dataclasses.replace`` sets it, so the
        backend validates every candidate).
    param : str or tuple of str
        The setting to choose, or several distinct settings chosen jointly.
    values : sequence
        Candidate values (at least one, distinct); for a tuple ``param``, tuples with one
        value per setting (for a full grid, ``itertools.product`` of each setting's values).
    rng_key : PRNG key
        Fixes the split, the fits (the same key for every candidate) and the scoring draws.
    valid_fraction : float in (0, 1)
        Share of ``data`` held out for scoring.
    mode, num_samples
        The predictive used for scoring (``Posterior.evaluate``).
    """
    if not dataclasses.is_dataclass(method):
        raise ValueError(f"method must be a backend such as inference.SEP(); got {type(method).__name__}")
    fields = [f.name for f in dataclasses.fields(method)]
    joint = isinstance(param, (tuple, list))
    names = tuple(param) if joint else (param,)
    for name in names:
        if name not in fields:
            raise ValueError(f"param must be a field of {type(method).__name__} ({', '.join(fields)}); got {name!r}")
    if not names or len(set(names)) != len(names):
        raise ValueError(f"param must name distinct fields of {type(method).__name__}; got {param!r}")
    values = list(values)
    if joint:
        for value in values:
            if not isinstance(value, (tuple, list)) or len(value) != len(names):
                raise ValueError(f"values must hold one tuple of {len(names)} values (one per name in param={names}) "
                                 f"per candidate; got {value!r}")
        values = [tuple(v) for v in values]
    if not values or len(set(map(repr, values))) != len(values):
        raise ValueError(f"values must be a non-empty sequence of distinct candidates; got {values!r}")
    if not isinstance(valid_fraction, (int, float)) or not (0.0 < valid_fraction < 1.0):
        raise ValueError(f"valid_fraction must be in (0, 1); got {valid_fraction!r}")
    # dataclasses.replace validates every candidate
    candidates = [dataclasses.replace(method, **dict(zip(names, v if joint else (v,)))) for v in values]
    x, y = model.check_data(*_unpack(data))
    check_key("rng_key", rng_key)
    k_split, k_fit, k_eval = jax.random.split(rng_key, 3)
    fit_part, valid_part = split((x, y), valid_fraction, k_split)
    scores = {}
    for value, candidate in zip(values, candidates):
        post = fit(model, fit_part, candidate, rng_key=k_fit, progress_bar=False)
        scores[value] = post.evaluate(valid_part, k_eval, num_samples=num_samples, mode=mode)
    nll = np.array([scores[v]["nll"] for v in values])
    best = values[int(np.argmin(np.where(np.isfinite(nll), nll, np.inf)))]
    return Selection(names if joint else param, best, scores)


__all__ = ["select", "Selection", "split"]
