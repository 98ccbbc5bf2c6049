"""``moments_grad.evidence_derivatives`` against per-example autodiff of ``log Z``."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bayes_snn import Classifier, Dense, LIF, Regressor, Sequential, SpikeResponse, StochasticLIF, encoders, priors
from bayes_snn import readouts
from bayes_snn.inference import moments
from bayes_snn.inference.moments_grad import OuterDerivatives, evidence_derivatives

NETS = {
    # first layer with a deterministic, constant input: rank-one products
    "single-step": lambda: Sequential(encoders.Direct(1), Dense(8), SpikeResponse(), Dense(3), readouts.MeanMembrane()),
    "lif": lambda: Sequential(encoders.Direct(5), Dense(8), LIF(beta=0.9, threshold=0.5), Dense(3),
                              readouts.MeanMembrane()),
    # stochastic input, a hidden-to-hidden layer over time, no bias, spike-count readout
    "rate, two hidden": lambda: Sequential(encoders.Rate(4, gain=1.0), Dense(8), LIF(beta=0.9, threshold=0.5),
                                           Dense(6, bias=False), StochasticLIF(noise=0.3), Dense(3),
                                           LIF(beta=0.9, threshold=0.2), readouts.SpikeCount()),
    # time-major data without an encoder, zero reset
    "raw input": lambda: Sequential(Dense(8), LIF(beta=0.8, threshold=0.3, reset="zero"), Dense(7),
                                    LIF(beta=0.8, threshold=0.3), Dense(3), readouts.MeanMembrane()),
    # an enumerated discrete first layer followed by a central-limit discrete layer
    "binary, enumerated": lambda: Sequential(encoders.Direct(3), Dense(8, prior=priors.Binary()),
                                             LIF(beta=0.9, threshold=0.5), Dense(6, prior=priors.Binary()),
                                             LIF(beta=0.9, threshold=0.5), Dense(3), readouts.MeanMembrane()),
}


def _moments(net, in_features, key):
    """Cavity-like inputs: ``(mean, var)`` per site, probabilities for enumerable discrete layers."""
    out = {}
    for i, (site, value) in enumerate(sorted(net.init_params(key, in_features).items())):
        var = 0.05 + 0.1 * jax.random.uniform(jax.random.fold_in(key, i), value.shape)
        out[site] = (value, var)
    prior = net.layers[net.names.index("dense_0")].prior
    if hasattr(prior, "values"):  # probabilities over the support
        logits = jax.random.normal(jax.random.fold_in(key, 99), out["dense_0.weight"][0].shape + (len(prior.values),))
        out["dense_0.weight"] = jax.nn.softmax(logits)
    return out


@pytest.mark.parametrize("name, task", [(name, "classification") for name in NETS] + [("lif", "regression")])
def test_derivatives_equal_per_example_autodiff(name, task):
    net = NETS[name]()
    key = jax.random.PRNGKey(1)
    mom = _moments(net, 4, key)
    raw = name == "raw input"
    x = jax.random.uniform(key, (5, 6, 4) if raw else (6, 4))
    axis = 1 if raw else 0
    if task == "classification":
        model, y = Classifier(net, 3), jnp.arange(6) % 3
    else:
        net = Sequential(*net.layers[:-2], Dense(1), net.layers[-1])  # one mean-membrane output
        mom = _moments(net, 4, key)
        model, y = Regressor(net, noise=0.3), jnp.linspace(-1.0, 1.0, 6)
    per_example = jax.value_and_grad(lambda m, xi, yi: moments.log_evidence(model, m, xi, yi))
    want = jax.jit(jax.vmap(per_example, in_axes=(None, axis, 0)))(mom, x, y)
    got = jax.jit(lambda m, x, y: evidence_derivatives(model, m, x, y, axis=axis))(mom, x, y)
    assert jax.tree.structure(got) == jax.tree.structure(want)
    for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
        assert g.shape == w.shape
        assert float(jnp.max(jnp.abs(w))) > 0.0  # the comparison is not vacuous
        np.testing.assert_allclose(g, w, rtol=2e-5, atol=1e-6 * float(jnp.max(jnp.abs(w))))


def test_derivatives_are_zero_when_no_log_evidence_is_finite():
    # The fusion barrier keeps its promise: a batch of non-finite log Z gives zero derivatives.
    net = NETS["single-step"]()
    mom = _moments(net, 4, jax.random.PRNGKey(0))
    mom["dense_0.weight"] = (mom["dense_0.weight"][0], jnp.full_like(mom["dense_0.weight"][1], jnp.nan))
    logz, grads = jax.jit(lambda m: evidence_derivatives(Classifier(net, 3), m, jnp.ones((4, 4)), jnp.zeros(4, jnp.int32)))(mom)
    assert not bool(jnp.any(jnp.isfinite(logz)))
    assert all(float(jnp.max(jnp.abs(leaf))) == 0.0 for leaf in jax.tree.leaves(grads))


@pytest.mark.parametrize("name", ["single-step", "lif", "rate, two hidden"])
def test_factored_derivatives_expand_to_the_dense_ones(name):
    # Only a Dense layer fed by the Direct-encoded data (one input step) is factored.
    net = NETS[name]()
    mom = _moments(net, 4, jax.random.PRNGKey(2))
    x, y = jax.random.uniform(jax.random.PRNGKey(3), (6, 4)), jnp.arange(6) % 3
    model = Classifier(net, 3)
    _, dense = jax.jit(lambda m: evidence_derivatives(model, m, x, y))(mom)
    _, factored = jax.jit(lambda m: evidence_derivatives(model, m, x, y, factored=True))(mom)
    direct = isinstance(net.layers[0], encoders.Direct)
    for site, want in dense.items():
        got = factored[site]
        assert isinstance(got, OuterDerivatives) == (direct and site == "dense_0.weight")
        got = got.expand() if isinstance(got, OuterDerivatives) else got
        for g, w in zip(got, want):
            np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-7 * float(jnp.max(jnp.abs(w))))
