"""A spiking network inside a hand-written NumPyro model, with a hierarchical weight scale.

The parameter scale is itself uncertain: ``tau ~ HalfNormal(1)`` and every weight and bias
of both Dense layers is ``Normal(0, tau)``. The network's parameters are NumPyro sample
sites, ``net.sample_params(F, priors={...})`` (``net(x, priors=...)`` does the same and
runs the network), so the usual NumPyro tools apply unchanged:

1. ``Predictive`` (prior predictive): how the scale ``tau`` shapes the network's logits;
2. ``SVI`` with an ``AutoNormal`` guide: a posterior over ``tau`` and every weight.

Spikes are Heaviside steps, whose derivative is zero almost everywhere, so the SVI
gradient would never reach the hidden layer. The model therefore passes a surrogate
spike function (``surrogates.arctan()``): forward values (and so the likelihood) are exact,
only the ELBO's gradient through the spikes is the surrogate's approximation.

Run: ``python examples/hierarchical_prior.py`` (about 30 s on a 2-core CPU, most of it
compilation).
"""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
from numpyro.infer import SVI, Predictive, Trace_ELBO
from numpyro.infer.autoguide import AutoNormal

import bayes_snn as bs
from bayes_snn import encoders, readouts, surrogates
from bayes_snn.analysis import metrics

NET = bs.Sequential(
    encoders.Direct(steps=8),
    bs.Dense(16),
    bs.LIF(beta=0.9, threshold=1.0),
    bs.Dense(3),
    readouts.MeanMembrane(scale=10.0),
)
SPIKE_FN = surrogates.arctan()
# NumPyro runs the model eagerly while it sets up the guide (op by op, each op compiled on
# its own); jitted, the simulation is compiled as one program instead.
FORWARD = jax.jit(lambda params, x: NET.apply(params, x, spike_fn=SPIKE_FN))


def model(x, y=None):
    """Hierarchical prior on the parameter scale; categorical likelihood on the logits."""
    tau = numpyro.sample("tau", dist.HalfNormal(1.0))
    shared = {site: dist.Normal(0.0, tau) for site in NET.param_shapes(x.shape[-1])}
    params = NET.sample_params(x.shape[-1], priors=shared)  # the sites "dense_0.weight", ...
    logits = FORWARD(params, x)
    numpyro.deterministic("logits", logits)
    with numpyro.plate("data", x.shape[0]):
        numpyro.sample("y", dist.Categorical(logits=logits), obs=y)


def predictive_probs(draws) -> np.ndarray:
    """Posterior (or prior) predictive class probabilities ``[N, C]``: mean softmax over draws."""
    return np.asarray(jax.nn.softmax(draws["logits"], axis=-1).mean(axis=0))


def prior_predictive(x_test, rng_key) -> None:
    draws = Predictive(model, num_samples=300)(rng_key, x_test)
    tau = np.asarray(draws["tau"])
    spread = np.asarray(draws["logits"].std(axis=(1, 2)))  # logit spread of each draw
    print("prior predictive (300 draws): the scale tau sets the logits' spread")
    print("  tau quantile range     median tau   median logit s.d.")
    edges = np.quantile(tau, [0.0, 0.25, 0.5, 0.75, 1.0])
    for lo, hi in zip(edges[:-1], edges[1:]):
        sel = (tau >= lo) & (tau <= hi)
        print(f"  [{lo:5.2f}, {hi:5.2f}]          {np.median(tau[sel]):6.2f}       {np.median(spread[sel]):8.2f}")
    print(f"  rank correlation(tau, spread) = {_spearman(tau, spread):.2f}")
    entropy = metrics.entropy(predictive_probs(draws)).mean()
    print(f"  mean entropy of the prior predictive {entropy:.3f} nats (uniform: {np.log(3):.3f})")


def _spearman(a, b) -> float:
    ra, rb = np.argsort(np.argsort(a)), np.argsort(np.argsort(b))
    return float(np.corrcoef(ra, rb)[0, 1])


def fit_svi(x_train, y_train, rng_key, num_steps=800):
    guide = AutoNormal(model, init_scale=0.05)
    svi = SVI(model, guide, numpyro.optim.Adam(0.03), Trace_ELBO())
    result = svi.run(rng_key, num_steps, x_train, y_train, progress_bar=False)
    return guide, result


def main(seed: int = 0) -> dict[str, float]:
    t0 = time.perf_counter()
    train = bs.datasets.yin_yang("train", size=300)
    test = bs.datasets.yin_yang("test", size=400)
    k_prior, k_svi, k_post = jax.random.split(jax.random.PRNGKey(seed), 3)

    prior_predictive(test.x, k_prior)
    print(f"  ({time.perf_counter() - t0:.1f} s)")

    guide, result = fit_svi(jnp.asarray(train.x), jnp.asarray(train.y), k_svi)
    losses = np.asarray(result.losses)
    print(f"SVI (AutoNormal, {len(losses)} steps): ELBO loss {losses[:50].mean():.1f} -> {losses[-50:].mean():.1f}")

    print(f"  ({time.perf_counter() - t0:.1f} s)")
    post = Predictive(model, guide=guide, params=result.params, num_samples=200, return_sites=["tau", "logits"])(
        k_post, test.x
    )
    tau = np.asarray(post["tau"])
    lo, med, hi = np.quantile(tau, [0.05, 0.5, 0.95])
    print(f"posterior of tau: median {med:.2f}, 90% interval [{lo:.2f}, {hi:.2f}] (prior median 0.67)")
    probs = predictive_probs(post)
    scores = metrics.classification_metrics(probs, test.y)
    print("posterior predictive on 400 test points: "
          + ", ".join(f"{k} {v:.3f}" for k, v in scores.items()))
    print(f"total {time.perf_counter() - t0:.1f} s")
    return {"tau_median": float(med), **scores}


if __name__ == "__main__":
    main()
