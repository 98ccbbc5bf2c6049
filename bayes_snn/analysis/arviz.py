"""Conversion of a ``Posterior`` to ``arviz.InferenceData``.

Groups: ``posterior`` (weight draws, one variable per site with named dimensions
``<layer>_in`` / ``<layer>_out``), and, when data are given, ``posterior_predictive`` and
``log_likelihood`` (variable ``y``, one value per draw and example) and
``observed_data``. ``az.summary``, ``az.plot_forest`` and ``az.loo`` work on the result.

Example
-------
>>> import jax, jax.numpy as jnp, numpyro.distributions as dist
>>> from bayes_snn import Sequential, Dense, LIF, Classifier, encoders, readouts
>>> from bayes_snn.inference import Posterior
>>> net = Sequential(encoders.Direct(2), Dense(3), LIF(), Dense(2), readouts.MeanMembrane())
>>> params = net.init_params(jax.random.PRNGKey(0), 2)
>>> post = Posterior(Classifier(net, 2), {k: dist.Normal(v, 0.1) for k, v in params.items()}, "demo", 2)
>>> idata = to_inference_data(post, (jnp.ones((4, 2)), jnp.array([0, 1, 0, 1])), num_samples=10)
>>> idata.log_likelihood["y"].shape
(1, 10, 4)
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from .._checks import check_key


def _dims(site: str, ndim: int) -> list[str]:
    layer, param = site.rsplit(".", 1)
    if param == "weight" and ndim == 2:
        return [f"{layer}_in", f"{layer}_out"]
    if param == "bias" and ndim == 1:
        return [f"{layer}_out"]
    return [f"{site}_dim_{i}" for i in range(ndim)]


def to_inference_data(post, data=None, rng_key=None, *, num_samples: int = 200):
    """Build an ``arviz.InferenceData`` from ``post`` (see the module docstring).

    Parameters
    ----------
    post : Posterior
    data : Dataset or (x, y), optional
        Adds posterior_predictive, log_likelihood and observed_data for these examples.
    rng_key : PRNG key, optional
        Default ``PRNGKey(0)``.
    num_samples : int
        Number of posterior draws (one chain).
    """
    import arviz as az

    rng_key = jax.random.PRNGKey(0) if rng_key is None else rng_key
    check_key("rng_key", rng_key)
    k_w, k_pred, k_obs = jax.random.split(rng_key, 3)
    draws = post.sample_weights(k_w, num_samples)
    posterior = {k: np.asarray(v)[None] for k, v in draws.items()}
    dims = {k: _dims(k, v.ndim - 1) for k, v in draws.items()}
    groups = {"posterior": posterior, "dims": dims}
    if data is not None:
        x, y = data[0], data[1]
        x, y = post.model.check_data(x, y)
        x = post.check_x(x)
        per_draw = _per_draw_predictions(post, draws, x, k_pred)
        obs = post.model.observation(_as_outputs(post.model, per_draw))
        log_lik = obs.log_prob(jnp.asarray(y))
        y_rep = obs.sample(k_obs)
        groups["posterior_predictive"] = {"y": np.asarray(y_rep)[None]}
        groups["log_likelihood"] = {"y": np.asarray(log_lik)[None]}
        groups["observed_data"] = {"y": np.asarray(y)}
        dims["y"] = ["example"]
    return az.from_dict(**groups)


def _per_draw_predictions(post, draws, x, rng_key):
    """Predictive quantity per weight draw: probabilities [S, N, C] or means [S, N]."""
    keys = jax.random.split(rng_key, next(iter(draws.values())).shape[0])
    random_forward = post.model.net.is_stochastic or getattr(post.model.device, "is_stochastic", False)

    def one(args):
        params, key = args
        out = post.model.net.apply(params, x, key if random_forward else None, device=post.model.device)
        return post.model.predictive(out)

    return jax.lax.map(one, (draws, keys), batch_size=min(16, keys.shape[0]))


def _as_outputs(model, predictive):
    """Invert ``model.predictive`` so ``model.observation`` can score the draws."""
    if model.task == "classification":
        return jnp.log(jnp.clip(predictive, 1e-30, 1.0))
    return predictive[..., None]


__all__ = ["to_inference_data"]
