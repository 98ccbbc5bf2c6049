"""Classifier / Regressor as NumPyro models: effect handlers, likelihood scaling, data checks."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import numpyro.distributions as dist
import pytest
from numpyro import handlers
from numpyro.infer import Predictive
from numpyro.infer.util import log_density
from scipy.special import log_softmax

from bayes_snn import Classifier, Dense, Regressor, Sequential, encoders, priors, readouts
from bayes_snn.neurons import LIF

KEY = jax.random.PRNGKey(0)
N, F, C = 12, 3, 3
RNG = np.random.default_rng(0)
X = RNG.random((N, F)).astype(np.float32)
Y = (np.arange(N) % C).astype(np.int32)
YR = RNG.normal(size=N).astype(np.float32)


def make_net(out=C, encoder=encoders.Direct(4)):
    # A positive hidden bias keeps the hidden layer spiking, so the logits depend on x.
    return Sequential(encoder, Dense(6, bias_prior=priors.Normal(1.0, 0.5)), LIF(beta=0.8), Dense(out), readouts.MeanMembrane())


CLS = Classifier(make_net(), num_classes=C)
REG = Regressor(make_net(out=1), noise=0.5)
PARAMS = CLS.net.init_params(KEY, F)
PARAMS_R = REG.net.init_params(KEY, F)


# jitted: one compilation per input shape instead of one per eager operation
APPLY_CLS = jax.jit(lambda params, x: CLS.net.apply(params, x))
APPLY_REG = jax.jit(lambda params, x: REG.net.apply(params, x))


def hand_log_lik_cls(params, x, y):
    logits = np.asarray(APPLY_CLS(params, x), float)
    return log_softmax(logits, axis=-1)[np.arange(len(y)), y]


def hand_log_lik_reg(params, x, y):
    mean = np.asarray(APPLY_REG(params, x), float)[:, 0]
    return -0.5 * ((y - mean) / 0.5) ** 2 - np.log(0.5) - 0.5 * np.log(2 * np.pi)


def predictive(model, *args, **kwargs):
    """``Predictive(model, num_samples=2)`` compiled as one program (faster than eager)."""
    return jax.jit(lambda key: Predictive(model, num_samples=2)(key, *args, **kwargs))(KEY)


def test_prior_predictive_shapes():
    draws = predictive(CLS, X)
    assert {k: v.shape for k, v in draws.items()} == {
        "dense_0.weight": (2, F, 6),
        "dense_0.bias": (2, 6),
        "dense_1.weight": (2, 6, C),
        "dense_1.bias": (2, C),
        "y": (2, N),
    }
    assert draws["y"].min() >= 0 and draws["y"].max() < C
    reg = predictive(REG, X)
    assert reg["y"].shape == (2, N) and reg["y"].dtype == jnp.float32


def test_posterior_predictive_with_given_weights():
    samples = {k: jnp.stack([v, v]) for k, v in PARAMS.items()}
    draws = Predictive(CLS, posterior_samples=samples)(KEY, X)
    assert draws["y"].shape == (2, N)


@pytest.mark.parametrize("model, params, y, hand", [(CLS, PARAMS, Y, hand_log_lik_cls), (REG, PARAMS_R, YR, hand_log_lik_reg)])
def test_substituted_log_likelihood_matches_hand_computation(model, params, y, hand):
    tr = handlers.trace(handlers.substitute(handlers.seed(model, 0), params)).get_trace(X, y)
    site = tr["y"]
    assert site["is_observed"]
    np.testing.assert_allclose(site["fn"].log_prob(site["value"]), hand(params, X, y), rtol=1e-5, atol=1e-5)
    apply = APPLY_CLS if model is CLS else APPLY_REG
    np.testing.assert_allclose(model.log_likelihood(apply(params, X), y), hand(params, X, y), rtol=1e-5, atol=1e-5)
    for k, v in params.items():
        np.testing.assert_array_equal(tr[k]["value"], v)
    # the logits depend on x, so a wrong wiring of x would change the likelihood
    assert np.ptp(hand(params, X, y)) > 1e-3


def test_minibatch_log_likelihood_is_scaled_by_n_over_b():
    B = 4
    tr = handlers.trace(handlers.substitute(handlers.seed(CLS, 3), PARAMS)).get_trace(X, Y, batch_size=B)
    idx = np.asarray(tr["data"]["value"])
    assert tr["data"]["args"] == (N, B) and idx.shape == (B,) and len(set(idx.tolist())) == B
    assert tr["y"]["scale"] == pytest.approx(N / B)
    np.testing.assert_array_equal(tr["y"]["value"], Y[idx])
    ll_batch = hand_log_lik_cls(PARAMS, X[idx], Y[idx])
    np.testing.assert_allclose(tr["y"]["fn"].log_prob(tr["y"]["value"]), ll_batch, rtol=1e-5, atol=1e-5)
    # The log joint NumPyro optimises: log prior + N/B * (batch log-likelihood).
    log_prior = sum(float(CLS.net.site_priors(F)[k].log_prob(v).sum()) for k, v in PARAMS.items())
    lj = jax.jit(lambda p: log_density(handlers.seed(CLS, 3), (X, Y), {"batch_size": B}, p)[0])(PARAMS)
    assert float(lj) == pytest.approx(log_prior + N / B * ll_batch.sum(), rel=1e-5)
    lj_full = jax.jit(lambda p: log_density(CLS, (X, Y), {}, p)[0])(PARAMS)
    assert float(lj_full) == pytest.approx(log_prior + hand_log_lik_cls(PARAMS, X, Y).sum(), rel=1e-5)


def test_seed_and_condition():
    def draw(seed):
        return handlers.trace(handlers.seed(CLS, seed)).get_trace(X)["dense_0.weight"]["value"]

    np.testing.assert_array_equal(draw(1), draw(1))
    assert not np.array_equal(draw(1), draw(2))
    w = jnp.full((F, 6), 0.25)
    tr = handlers.trace(handlers.condition(handlers.seed(CLS, 0), {"dense_0.weight": w})).get_trace(X, Y)
    assert tr["dense_0.weight"]["is_observed"]
    np.testing.assert_array_equal(tr["dense_0.weight"]["value"], w)


def test_time_major_data_and_stochastic_networks():
    net = Sequential(Dense(6), LIF(), Dense(C), readouts.MeanMembrane())
    xt = RNG.random((5, N, F)).astype(np.float32)  # [T, N, F]: the batch axis is 1
    draws = predictive(Classifier(net, C), xt, batch_size=4)
    assert draws["y"].shape == (2, 4)
    rate = Classifier(make_net(encoder=encoders.Rate(6)), C)
    draws = predictive(rate, X)
    assert draws["y"].shape == (2, N)


def test_predictive_outputs():
    logits = APPLY_CLS(PARAMS, X)
    probs = CLS.predictive(logits)
    np.testing.assert_allclose(probs.sum(-1), 1.0, rtol=1e-6)
    np.testing.assert_allclose(np.log(probs), log_softmax(np.asarray(logits, float), -1), rtol=1e-4, atol=1e-5)
    assert REG.predictive(APPLY_REG(PARAMS_R, X)).shape == (N,)
    assert isinstance(REG.observation(jnp.zeros((N, 1))), dist.Normal)
    assert CLS.task == "classification" and REG.task == "regression"


def test_check_data_returns_numpy():
    x, y = CLS.check_data(X.astype(np.float64), Y.astype(np.int64))
    assert x.dtype == np.float32 and y.dtype == np.int32
    x, y = REG.check_data(X, YR.astype(np.float64))
    assert y.dtype == np.float32
    assert CLS.check_data(X)[1] is None


@pytest.mark.parametrize(
    "x, y, match",
    [
        (X[0], Y, "x must have ndim"),
        (X[None, None], Y, "x must have ndim"),
        (X[None], Y, r"x must be static features \[B, F\]"),
        (np.where(X > 0.9, np.nan, X), Y, "x must be finite"),
        (np.where(X > 0.9, np.inf, X), Y, "x must be finite"),
        (X.astype(str), Y, "x must be a numeric"),
        (X, np.where(Y == 2, 3, Y), r"y must hold integer class labels in \[0, 3\)"),
        (X, np.where(Y == 2, -1, Y), r"y must hold integer class labels in \[0, 3\)"),
        (X, Y.astype(np.float32), r"y must hold integer class labels"),
        (X, Y[:-1], r"y must have shape \[12\]"),
        (X, Y[:, None], r"y must have shape \[12\]"),
    ],
)
def test_classifier_rejects_bad_data(x, y, match):
    with pytest.raises(ValueError, match=match):
        CLS.check_data(x, y)


def test_regressor_rejects_bad_targets():
    with pytest.raises(ValueError, match="y must be finite"):
        REG.check_data(X, np.where(YR > 1, np.nan, YR))
    with pytest.raises(ValueError, match=r"y must have shape \[12\]"):
        REG.check_data(X, YR[:5])


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda: Classifier(make_net(), num_classes=4), "num_classes=4"),
        (lambda: Classifier(make_net(), num_classes=1), "num_classes"),
        (lambda: Classifier(make_net(), num_classes=3.0), "num_classes"),
        (lambda: Classifier(make_net(), num_classes=True), "num_classes"),
        (lambda: Classifier("net", num_classes=3), "net must be"),
        (lambda: Classifier(Sequential(Dense(3), LIF()), num_classes=3), "readout"),
        (lambda: Classifier(make_net(), num_classes=3, device=object()), "device"),
        (lambda: Regressor(make_net()), "1 unit"),
        (lambda: Regressor(make_net(out=1), noise=0.0), "noise"),
        (lambda: Regressor(make_net(out=1), noise=float("inf")), "noise"),
    ],
)
def test_invalid_models(make, match):
    with pytest.raises(ValueError, match=match):
        make()
