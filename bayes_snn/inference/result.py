"""The result of ``fit``: an approximate posterior over every weight, with one API for all.

``Posterior.weights`` maps each site (``"dense_0.weight"``, ...) to a NumPyro
distribution of that site's shape: ``Delta`` for point estimates (a posterior with zero
spread), ``Normal`` for Gaussian factors, ``DiscreteGrid`` for categorical factors over a
discrete prior's support. Every backend returns this type, so predictions, metrics,
ArviZ export and files are comparable across backends.

Example
-------
>>> import jax, jax.numpy as jnp, numpyro.distributions as dist
>>> from bayes_snn import Sequential, Dense, LIF, Classifier, encoders, readouts
>>> net = Sequential(encoders.Direct(4), Dense(8), LIF(), Dense(3), readouts.MeanMembrane())
>>> model = Classifier(net, 3)
>>> params = net.init_params(jax.random.PRNGKey(0), 2)
>>> post = Posterior(model, {k: dist.Delta(v) for k, v in params.items()}, "example", 2)
>>> post.predict(jnp.ones((5, 2))).shape
(5, 3)
"""

from __future__ import annotations

from functools import partial
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
import numpyro.distributions as dist

from .._checks import check_int, check_key
from ..analysis import metrics

# Extra prediction modes contributed by backends, e.g. SEP's moment propagation:
# name -> fn(posterior, x, rng_key) returning what ``predict`` returns.
PREDICTORS: dict[str, Callable] = {}


def _is_point(d) -> bool:
    return isinstance(d, dist.Delta)


@jax.tree_util.register_pytree_node_class
class Posterior:
    """Approximate posterior over a model's weights; what every backend returns.

    Attributes
    ----------
    model : Classifier or Regressor
    weights : dict[str, numpyro.distributions.Distribution]
        One distribution per site with ``batch_shape`` equal to the site's shape.
    method : str
        The backend that produced it (``"surrogate"``, ``"sep"``, ...).
    in_features : int
        Number of input features the network was fitted on.
    history : dict[str, numpy.ndarray]
        Per-epoch diagnostics of the fit (loss, seconds, ...).
    """

    def __init__(self, model, weights: dict[str, Any], method: str, in_features: int, history=None):
        model.net.check_params({k: jnp.zeros(d.batch_shape) for k, d in weights.items()}, in_features)
        self.model = model
        self.weights = dict(weights)
        self.method = method
        self.in_features = int(in_features)
        self.history = {k: np.asarray(v) for k, v in (history or {}).items()}

    def tree_flatten(self):
        return (self.weights, self.history), (self.model, self.method, self.in_features)

    @classmethod
    def tree_unflatten(cls, aux, children):
        obj = object.__new__(cls)
        obj.weights, obj.history = children
        obj.model, obj.method, obj.in_features = aux
        return obj

    def __repr__(self):
        kinds = {k: type(d).__name__ for k, d in self.weights.items()}
        return f"Posterior(method={self.method!r}, weights={kinds})"

    # ---- weights -------------------------------------------------------------------
    @property
    def is_point_estimate(self) -> bool:
        return all(_is_point(d) for d in self.weights.values())

    def mean(self) -> dict[str, jax.Array]:
        """Posterior mean of every site."""
        return {k: d.v if _is_point(d) else d.mean for k, d in self.weights.items()}

    def std(self) -> dict[str, jax.Array]:
        """Posterior standard deviation of every site (zero for point estimates)."""
        return {k: jnp.zeros(d.batch_shape) if _is_point(d) else jnp.sqrt(d.variance) for k, d in self.weights.items()}

    def sample_weights(self, rng_key: jax.Array, num_samples: int) -> dict[str, jax.Array]:
        """Draw ``num_samples`` weight sets; each site gets a leading axis ``[S, ...]``."""
        check_int("num_samples", num_samples)
        check_key("rng_key", rng_key)
        keys = jax.random.split(rng_key, len(self.weights))
        # Sorted sites: the draws must not depend on the dict's order (pytree round trips sort it).
        return {k: self.weights[k].sample(key, (num_samples,)) for key, k in zip(keys, sorted(self.weights))}

    # ---- prediction ------------------------------------------------------------------
    def predict_samples(
        self, x, rng_key: jax.Array | None = None, *, num_samples: int = 100, chunk_size: int = 16
    ) -> jax.Array:
        """Per-draw predictions ``[S, B, C]`` (probabilities) or ``[S, B]`` (regression means).

        Weight draws are processed ``chunk_size`` at a time, so memory stays bounded.
        A point estimate of a deterministic network is evaluated once (``S = 1``).
        """
        x = self.check_x(x)
        check_int("num_samples", num_samples)
        check_int("chunk_size", chunk_size)
        if self.is_point_estimate and not self._random_forward:
            return _predict_point(self.model, self.mean(), x)[None]
        if rng_key is None:
            rng_key = jax.random.PRNGKey(0)
        check_key("rng_key", rng_key)
        k_w, k_f = jax.random.split(rng_key)
        draws = self.sample_weights(k_w, num_samples)
        keys = jax.random.split(k_f, num_samples)
        return _predict_draws(self.model, self._random_forward, min(chunk_size, num_samples), draws, x, keys)

    def check_x(self, x) -> np.ndarray:
        """``x`` validated by the model and checked to have the ``in_features`` the posterior was fitted on."""
        x, _ = self.model.check_data(x)
        if x.shape[-1] != self.in_features:
            raise ValueError(f"x must have {self.in_features} features (the last axis), as in the data the posterior "
                             f"was fitted on; got shape {x.shape}")
        return x

    @property
    def _random_forward(self) -> bool:
        return self.model.net.is_stochastic or getattr(self.model.device, "is_stochastic", False)

    def predict(self, x, rng_key: jax.Array | None = None, *, num_samples: int = 100, mode: str = "sample"):
        """Posterior predictive: class probabilities ``[B, C]`` or regression means ``[B]``.

        ``mode="sample"`` averages over weight draws (Monte Carlo; the default key is
        ``PRNGKey(0)`` for reproducibility). Backends may add modes, e.g. SEP's
        ``mode="moments"`` (moment propagation, no sampling) and ``mode="quadrature"`` (the
        same, with a ``Direct``-driven first LIF layer integrated by quadrature).
        """
        if mode == "sample":
            return jnp.mean(self.predict_samples(x, rng_key, num_samples=num_samples), axis=0)
        if mode not in PREDICTORS:
            raise ValueError(f"mode must be one of {['sample', *sorted(PREDICTORS)]}; got {mode!r}")
        return PREDICTORS[mode](self, x, rng_key)

    def evaluate(self, data, rng_key: jax.Array | None = None, *, num_samples: int = 100, mode: str = "sample", n_bins: int = 15) -> dict[str, float]:
        """Metrics on ``data`` (a ``Dataset`` or ``(x, y)``).

        Classification: accuracy, nll, ece, brier. Regression: rmse, nll (Gaussian, with
        the model's observation noise added to the predictive variance across draws).
        """
        x, y = _unpack(data)
        x, y = self.model.check_data(x, y)
        if self.model.task == "classification":
            probs = self.predict(x, rng_key, num_samples=num_samples, mode=mode)
            return metrics.classification_metrics(np.asarray(probs), y, n_bins=n_bins)
        draws = self.predict_samples(x, rng_key, num_samples=num_samples)
        var = jnp.var(draws, axis=0) + self.model.noise**2
        return metrics.regression_metrics(np.asarray(draws.mean(0)), np.asarray(var), y)

    # ---- export -----------------------------------------------------------------------
    def to_arviz(self, data=None, rng_key: jax.Array | None = None, *, num_samples: int = 200):
        """``arviz.InferenceData`` with weight draws, and predictive groups if ``data`` is given."""
        from ..analysis.arviz import to_inference_data

        return to_inference_data(self, data, rng_key, num_samples=num_samples)

    def save(self, path) -> None:
        """Write to ``path`` (a NumPy ``.npz`` with a JSON header; no pickle)."""
        from .io import save_posterior

        save_posterior(self, path)

    @classmethod
    def load(cls, path, model=None) -> "Posterior":
        """Read a file written by ``save``; ``model`` is needed only for hand-written models."""
        from .io import load_posterior

        return load_posterior(path, model)


def _unpack(data):
    # A bare array also supports data[0], data[1] (its first two rows): reject it here.
    if not isinstance(data, (tuple, list)) or len(data) < 2:
        raise ValueError(f"data must be a Dataset or a tuple (x, y); got {type(data).__name__}")
    return data[0], data[1]


# Jitted with the model static: one compilation per (model, shapes), reused by every call
# (eagerly, lax.map would trace afresh each call and run its remainder chunk op by op).
@partial(jax.jit, static_argnums=0)
def _predict_point(model, params, x):
    return model.predictive(model.net.apply(params, x, None, device=model.device))


@partial(jax.jit, static_argnums=(0, 1, 2))
def _predict_draws(model, random_forward, chunk_size, draws, x, keys):
    def one(args):
        params, key = args
        return model.predictive(model.net.apply(params, x, key if random_forward else None, device=model.device))

    # lax.map with batch_size vmaps chunk_size draws at a time: bounded memory, one trace.
    return jax.lax.map(one, (draws, keys), batch_size=chunk_size)


__all__ = ["Posterior", "PREDICTORS"]
