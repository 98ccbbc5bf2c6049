"""Structural tests of the SEP backend: API, shapes, masks, safety, save/load, moments vs MC."""

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import numpyro.distributions as dist
import pytest

from bayes_snn import Classifier, CuBaLIF, Dense, LIF, Regressor, Sequential, SpikeResponse, StochasticLIF
from bayes_snn import datasets, encoders, inference, priors, readouts
from bayes_snn.datasets.batching import Batch
from bayes_snn.inference import SEP, Posterior
from bayes_snn.inference import moments, sep, sep_laplace, sep_sites
from bayes_snn.inference.moments_grad import OuterDerivatives
from bayes_snn.inference.sep import SEPInfo


@pytest.fixture(scope="module")
def data():
    return datasets.yin_yang("train", size=120)


def _single_step(hidden=8, prior=None):
    prior = priors.Normal(0.0, 1.0) if prior is None else prior
    return Sequential(encoders.Direct(1), Dense(hidden, prior=prior), SpikeResponse(), Dense(3, prior=prior),
                      readouts.MeanMembrane())


@pytest.fixture(scope="module")
def gauss_post(data):
    model = Classifier(_single_step(), 3)
    return inference.fit(model, data, SEP(epochs=2, batch_size=16), rng_key=jax.random.PRNGKey(0), progress_bar=False)


def _finite(tree):
    return all(bool(jnp.all(jnp.isfinite(leaf))) for leaf in jax.tree_util.tree_leaves(tree))


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"epochs": 0}, "epochs"),
        ({"batch_size": 2.5}, "batch_size"),
        ({"damping": 0.0}, "damping"),
        ({"damping": 1.5}, "damping"),
        ({"min_prob": 0.7}, "min_prob"),
        ({"mesh": "cpu"}, "mesh"),
        ({"anneal": 1}, "anneal"),
        ({"likelihood_weight": 0.0}, "likelihood_weight"),
        ({"likelihood_weight": float("nan")}, "likelihood_weight"),
        ({"gaussian_update": "newton"}, "gaussian_update"),
    ],
)
def test_invalid_arguments_raise(kwargs, match):
    with pytest.raises(ValueError, match=match):
        SEP(**kwargs)


def test_fit_returns_gaussian_factors_and_diagnostics(gauss_post):
    post = gauss_post
    assert post.method == "sep"
    shapes = post.model.net.param_shapes(4)
    for site, d in post.weights.items():
        assert isinstance(d, dist.Normal) and d.batch_shape == shapes[site]
        assert bool(jnp.all(d.scale > 0)) and _finite((d.loc, d.scale))
    for key in ("log_lik", "delta_eta", "num_dropped", "num_rejected", "num_clipped", "seconds"):
        assert len(post.history[key]) == 2 and np.all(np.isfinite(post.history[key]))
    # A data term was learned: the posterior of some weight is narrower than the N(0, 1) prior.
    assert float(jnp.min(post.weights["dense_1.weight"].scale)) < 0.99


@pytest.fixture(scope="module", params=["moment_match", "taylor"])
def stepper(data, request):
    """A bound SEP backend, its jitted step (compiled once for batches of 8) and an initial state."""
    method = SEP(batch_size=8, gaussian_update=request.param)
    state = method.init(jax.random.PRNGKey(1), Classifier(_single_step(), 3), data.x, data.y)
    return jax.jit(method.step), state


def test_padded_examples_do_not_affect_the_update(data, stepper):
    step, state = stepper
    x, y = jnp.asarray(data.x), jnp.asarray(data.y)
    # Padding rows carry wild inputs and other labels; masked out they must change nothing,
    # so the update equals that of the same batch with the padding rows replaced.
    valid = Batch(jnp.concatenate([x[:6], x[:2]]), jnp.concatenate([y[:6], y[:2]]), jnp.arange(8) < 6)
    padded = Batch(jnp.concatenate([x[:6], 50.0 * x[6:8]]), jnp.concatenate([y[:6], (y[6:8] + 1) % 3]),
                   jnp.arange(8) < 6)
    s1, i1 = step(None, state, valid)
    s2, i2 = step(None, state, padded)
    for a, b in zip(jax.tree_util.tree_leaves(s1), jax.tree_util.tree_leaves(s2)):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(i1.log_lik, i2.log_lik, rtol=1e-6)
    # ... and differ from an update that uses all eight rows.
    s3, _ = step(None, state, valid._replace(mask=jnp.ones(8, bool)))
    assert not np.allclose(s1.sites["dense_1.weight"].r, s3.sites["dense_1.weight"].r)


def test_annealed_damping_follows_its_cosine_and_drives_the_update(data):
    model = Classifier(_single_step(), 3)
    method = SEP(epochs=2, batch_size=8, damping=0.8, anneal=True)
    state = method.init(jax.random.PRNGKey(1), model, data.x, data.y)  # 2 x 15 = 30 updates in the run
    schedule = np.array([float(method.current_damping(jnp.asarray(t))) for t in range(31)])
    np.testing.assert_allclose(schedule[[0, 15, 30]], [0.8, 0.8 * (0.05 + 0.95 / 2), 0.8 * 0.05], rtol=1e-6)
    assert np.all(np.diff(schedule) < 0)
    batch = Batch(jnp.asarray(data.x[:8]), jnp.asarray(data.y[:8]), jnp.ones(8, bool))
    plain = SEP(epochs=2, batch_size=8, damping=0.8)
    plain_state = plain.init(jax.random.PRNGKey(1), model, data.x, data.y)
    # Update 0 uses the full damping, so it equals the constant-damping update ...
    first, _ = method.step(None, state, batch)
    np.testing.assert_allclose(first.sites["dense_1.weight"].r, plain.step(None, plain_state, batch)[0].sites[
        "dense_1.weight"].r, rtol=1e-6)
    assert int(first.updates) == 1
    # ... while the same update made late in the run moves the site 20x less.
    late, _ = method.step(None, state._replace(updates=jnp.asarray(30)), batch)
    plain_change = plain.step(None, plain_state, batch)[0].sites["dense_1.weight"].r - state.sites["dense_1.weight"].r
    np.testing.assert_allclose(late.sites["dense_1.weight"].r - state.sites["dense_1.weight"].r, 0.05 * plain_change,
                               rtol=1e-4, atol=1e-7)


def test_extreme_inputs_never_put_nan_in_the_state(data, stepper):
    step, state = stepper
    x = jnp.asarray(data.x[:8]) * jnp.array([1e6, -1e6, 1e3, 0.0])
    for _ in range(3):
        state, info = step(None, state, Batch(x, jnp.asarray(data.y[:8]), jnp.ones(8, bool)))
        assert _finite(state) and _finite(info)
    assert isinstance(info, SEPInfo)


@pytest.mark.parametrize("gaussian_update", ["moment_match", "taylor"])
def test_discrete_and_laplace_priors(data, gaussian_update):
    net = Sequential(encoders.Direct(1), Dense(6, prior=priors.Binary(1.0), bias_prior=priors.IntegerGrid(2, 0.5)),
                     SpikeResponse(), Dense(3, prior=priors.Ternary(1.0, 0.5), bias_prior=priors.Laplace(0.0, 1.0)),
                     readouts.MeanMembrane())
    method = SEP(epochs=1, batch_size=40, gaussian_update=gaussian_update)
    post = inference.fit(Classifier(net, 3), data, method, rng_key=jax.random.PRNGKey(0), progress_bar=False)
    for site, shape in [("dense_0.weight", (4, 6, 2)), ("dense_0.bias", (6, 7)), ("dense_1.weight", (6, 3, 3))]:
        w = post.weights[site]
        assert isinstance(w, priors.DiscreteGrid) and w.probs.shape == shape
        np.testing.assert_allclose(w.probs.sum(-1), 1.0, atol=1e-5)
        assert bool(jnp.all(w.probs >= 0.99 * SEP().min_prob))
    # A Laplace prior gets a Gaussian factor (its prior site is refined by EP).
    b = post.weights["dense_1.bias"]
    assert isinstance(b, dist.Normal) and _finite((b.loc, b.scale)) and bool(jnp.all(b.scale > 0))


def test_rate_stochastic_reset_and_spike_count_network(data):
    # Rate inputs, escape noise with zero reset, a subtract-reset spiking output layer and
    # a spike-count readout, in one network (one compilation).
    net = Sequential(encoders.Rate(3), Dense(4), StochasticLIF(beta=0.9, noise=0.3, reset="zero"), Dense(3), LIF(),
                     readouts.SpikeCount())
    post = inference.fit(Classifier(net, 3), data, SEP(epochs=1, batch_size=40), rng_key=jax.random.PRNGKey(0),
                         progress_bar=False)
    probs = post.predict(data.x[:10], mode="moments")
    assert probs.shape == (10, 3) and _finite(probs)
    np.testing.assert_allclose(probs.sum(-1), 1.0, atol=1e-5)


def test_moments_are_exact_for_deterministic_weights(data):
    # Zero weight variance and deterministic inputs: assumed-density filtering must reproduce
    # the simulation spike for spike (p in {0, 1}), including leak, both resets and readout.
    net = Sequential(encoders.Latency(6), Dense(5, gain=2.0), LIF(beta=0.9, threshold=0.3, reset="zero"), Dense(5),
                     LIF(beta=0.8, threshold=0.5), Dense(3), readouts.MeanMembrane(beta=0.5, scale=2.0))
    params = net.init_params(jax.random.PRNGKey(3), 4)
    mom = {k: (v, jnp.zeros_like(v)) for k, v in params.items()}
    x = jnp.asarray(data.x[:20])
    mean, cov = jax.jit(jax.vmap(lambda xi: moments.output_moments(net, mom, xi)))(x)
    assert float(jnp.std(net.apply(params, x))) > 0.1  # the spikes do vary between examples
    np.testing.assert_allclose(mean, net.apply(params, x), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(cov, 0.0, atol=1e-6)


def test_threshold_of_a_gaussian_current_matches_monte_carlo():
    # One Heaviside step of a Gaussian current is exact: P(spike) = Phi(mu / sd).
    # The 3-step LIF with a static Gaussian current is assumed-density filtering: the membrane
    # after a reset is bimodal but projected on a Gaussian. 200000 simulated currents give a
    # Monte Carlo error < 0.0012; the ADF gap measured 0.052 (step 2, mean 0.3 current).
    mu, sd = jnp.array([-0.5, 0.2, 1.5]), jnp.array([0.3, 1.0, 0.8])
    cur = moments.Act(mu[None], sd[None], sd[None] ** 2)
    p1 = moments.neuron(SpikeResponse(), cur, 1).mean[0]
    np.testing.assert_allclose(p1, jax.scipy.stats.norm.cdf(mu / sd), rtol=1e-5)
    z = jax.random.normal(jax.random.PRNGKey(0), (200000, 3))
    current = jnp.broadcast_to(mu + sd * z, (3, 200000, 3))
    cell = LIF(beta=0.9, threshold=1.0)
    spikes, _ = cell.run(current)
    adf = moments.neuron(cell, cur, 3).mean
    assert np.abs(adf - spikes.mean(1)).max() < 0.07
    np.testing.assert_allclose(adf[0], spikes.mean(1)[0], atol=0.005)  # the first step is exact


def test_regression_learns_a_linear_function():
    rng = np.random.default_rng(0)
    x = rng.uniform(-1, 1, (200, 2)).astype(np.float32)
    y = (1.5 * x[:, 0] - x[:, 1]).astype(np.float32)
    net = Sequential(encoders.Direct(1), Dense(1, gain=1.0), readouts.MeanMembrane())
    post = inference.fit(Regressor(net, noise=0.1), (x, y), SEP(epochs=3, batch_size=50), rng_key=jax.random.PRNGKey(0),
                         progress_bar=False)
    np.testing.assert_allclose(post.mean()["dense_0.weight"][:, 0], [1.5, -1.0], atol=0.05)
    assert post.predict(x[:5], mode="moments").shape == (5,)


def _taylor_fixed_point(x, y, noise, lam):
    """The fixed point of full-batch SEP with Taylor sites on ``y ~ N(w x, noise^2)``, ``w ~ N(0, 1)``.

    Each example's site has precision ``k_n = x_n^2 / (noise^2 + x_n^2 v)`` (``v`` the cavity
    variance; moment matching gives ``x_n^2 / noise^2``) and ``r_n = m k_n + g_n``; the tied
    site is their average. Returns q's mean and variance.
    """
    count = lam * len(x)
    site_lam = site_r = 0.0
    for _ in range(500):  # a contraction: converges to float64 precision long before
        cavity = 1.0 + (count - 1) * site_lam
        m, v = (count - 1) * site_r / cavity, 1.0 / cavity
        k = x**2 / (noise**2 + x**2 * v)
        g = x * (y - x * m) / (noise**2 + x**2 * v)
        site_lam, site_r = k.mean(), (m * k + g).mean()
    precision = 1.0 + count * site_lam
    return count * site_r / precision, 1.0 / precision


@pytest.mark.parametrize("gaussian_update", ["moment_match", "taylor"])
@pytest.mark.parametrize("lam", [1.0, 3.0])
def test_likelihood_weight_gives_the_exact_tempered_posterior_of_a_linear_gaussian_model(lam, gaussian_update):
    # One weight, Gaussian likelihood: every moment-matched per-example site is exact, so SEP's
    # fixed point is the exact posterior of p0(w) prod_n N(y_n; w x_n, s^2)^lam =
    # N(y_n; w x_n, s^2 / lam)^1. Taylor sites have their own fixed point, computed here in
    # float64; it is broader than the exact posterior by O(1 / N).
    rng = np.random.default_rng(1)
    x = rng.uniform(-1, 1, (64, 1)).astype(np.float32)
    y = (0.7 * x[:, 0] + 0.5 * rng.standard_normal(64)).astype(np.float32)
    net = Sequential(encoders.Direct(1), Dense(1, gain=1.0, bias=False), readouts.MeanMembrane())
    noise = 0.5
    # Full batches: after the online ramp (lam epochs) the init site decays by 1 - 1/lam per epoch.
    method = SEP(epochs=60, batch_size=64, damping=1.0, likelihood_weight=lam, gaussian_update=gaussian_update)
    post = inference.fit(Regressor(net, noise=noise), (x, y), method, rng_key=jax.random.PRNGKey(0), progress_bar=False)
    xs, ys = x[:, 0].astype(np.float64), y.astype(np.float64)
    precision = 1.0 + lam * float(np.sum(xs**2)) / noise**2
    exact = lam * float(np.sum(xs * ys)) / noise**2 / precision, 1.0 / precision
    mean, var = _taylor_fixed_point(xs, ys, noise, lam) if gaussian_update == "taylor" else exact
    if gaussian_update == "taylor":
        # Each site's precision is short by the factor 1 - v k_n, v k_n ~ 1 / (lam N): the
        # variance is broader by 1.9 / (lam N) here (2.9 % and 0.9 %).
        assert 1.0 < var / exact[1] < 1.0 + 3.0 / (lam * len(xs))
    q = post.weights["dense_0.weight"]
    np.testing.assert_allclose(float(q.loc[0, 0]), mean, rtol=1e-4)
    np.testing.assert_allclose(float(q.scale[0, 0]) ** 2, var, rtol=1e-4)


@pytest.mark.parametrize("seen, full_step", [(32.0, False), (64.0, True), (160.0, True), (192.0, False)])
def test_tempered_ramp_takes_full_steps(seen, full_step):
    # Linear-Gaussian model: each example's site is exact and independent of the cavity,
    # f_n = (x_n y_n / s^2, x_n^2 / s^2). A full step accumulates, q_new = q + sum_b f_b; a
    # damped one moves the site halfway, n_new f_new = n_new f + 0.5 (sum_b f_b - M f).
    # With N = 64 and lam = 3 the ramp is 64 <= n < 192; before it and at the cap, damping 0.5.
    rng = np.random.default_rng(2)
    x = rng.uniform(-1, 1, (64, 1)).astype(np.float32)
    y = (0.7 * x[:, 0] + 0.5 * rng.standard_normal(64)).astype(np.float32)
    net = Sequential(encoders.Direct(1), Dense(1, gain=1.0, bias=False), readouts.MeanMembrane())
    model, noise = Regressor(net, noise=0.5), 0.5
    sep = SEP(batch_size=16, damping=0.5, likelihood_weight=3.0)
    state = sep.init(jax.random.PRNGKey(0), model, x, y)._replace(seen=jnp.asarray(seen))
    batch = Batch(jnp.asarray(x[:16]), jnp.asarray(y[:16]), jnp.ones(16, bool))
    new, _ = sep.step(jax.random.PRNGKey(1), state, batch)
    n_new = min(seen + 16.0, 192.0)
    assert float(new.seen) == n_new
    site = state.sites["dense_0.weight"]
    f = np.array([float(site.r[0, 0]), float(site.lam[0, 0])])
    f_batch = np.array([np.sum(x[:16, 0] * y[:16]), np.sum(x[:16, 0] ** 2)]) / noise**2
    expected = (seen * f + f_batch) / n_new if full_step else f + 0.5 * (f_batch - 16.0 * f) / n_new
    got = new.sites["dense_0.weight"]
    np.testing.assert_allclose([float(got.r[0, 0]), float(got.lam[0, 0])], expected, rtol=1e-4)


@pytest.mark.parametrize("epochs, lam, counts", [
    (3, 10.0, [136.0, 424.0, 640.0]),  # ramp_rate (10 - 1) / (3 - 1) = 4.5: lam N in the third epoch
    (20, 10.0, [80.0, 144.0, 208.0]),  # long enough at one per example (lam N = 640 in epoch 10)
    (3, 1.0, [64.0, 64.0, 64.0]),  # untempered: the count stops at N
    (1, 10.0, [80.0]),  # one epoch: no ramp to spread, one per example (and a warning)
])
def test_tempered_count_reaches_lam_n_within_the_run(epochs, lam, counts):
    # N = 64, M = 16: the online start stands for M examples and adds one per example up to
    # N (after three minibatches); then ``ramp_rate`` per example, up to lam N.
    x = np.linspace(-1, 1, 64, dtype=np.float32)[:, None]
    y = 0.5 * x[:, 0]
    net = Sequential(encoders.Direct(1), Dense(1, gain=1.0, bias=False), readouts.MeanMembrane())
    with pytest.warns(UserWarning, match="epochs >= 2") if epochs == 1 else warnings.catch_warnings():
        sep = SEP(epochs=epochs, batch_size=16, likelihood_weight=lam)
    state = sep.init(jax.random.PRNGKey(0), Regressor(net, noise=0.5), x, y)
    batch = Batch(jnp.asarray(x[:16]), jnp.asarray(y[:16]), jnp.ones(16, bool))
    step, seen = jax.jit(sep.step), []
    for _ in range(min(epochs, 3)):
        for _ in range(4):
            state, _ = step(jax.random.PRNGKey(1), state, batch)
        seen.append(float(state.seen))
    assert seen == counts


def test_one_epoch_tempered_run_warns_that_the_count_stays_near_n():
    with pytest.warns(UserWarning, match="epochs >= 2"):
        SEP(epochs=1, likelihood_weight=3.0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # each of these reaches its count lam N
        SEP(epochs=2, likelihood_weight=3.0)
        SEP(epochs=1, likelihood_weight=3.0, online_start=False)
        SEP(epochs=1)


def test_likelihood_weight_below_one_minibatch_per_copy_raises(data):
    # A minibatch would move q by more than all of it: damping M / (lam N) > 1.
    with pytest.raises(ValueError, match="likelihood_weight"):
        inference.fit(Classifier(_single_step(), 3), data, SEP(batch_size=64, likelihood_weight=0.25),
                      rng_key=jax.random.PRNGKey(0), progress_bar=False)


@pytest.mark.parametrize(
    "net, match",
    [
        (Sequential(encoders.Direct(2), Dense(4), CuBaLIF(), Dense(3), readouts.MeanMembrane()), "CuBaLIF"),
        (Sequential(encoders.Direct(2), Dense(4), LIF(), Dense(3), LIF(), readouts.FirstSpikeTime()), "FirstSpikeTime"),
        (Sequential(encoders.Direct(2), Dense(4, prior=dist.Cauchy(0.0, 1.0)), LIF(), Dense(3), readouts.MeanMembrane()),
         "Cauchy"),
    ],
)
def test_unsupported_models_raise_clear_errors(data, net, match):
    with pytest.raises(ValueError, match=match):
        SEP().init(jax.random.PRNGKey(0), Classifier(net, 3), data.x, data.y)


def test_laplace_prior_site_is_moment_matched_exactly():
    # The tilted distribution N(w; m, v) Laplace(w; 0, b): log Z and its moments from the
    # closed form against a fine quadrature (trapezoid on 600001 points over [-30, 30]).
    m, v, b = np.array([0.0, 2.0, -1.0, 5.0]), np.array([1.0, 0.1, 4.0, 0.01]), 1 / np.sqrt(2)
    w = np.linspace(-30, 30, 600001)
    for mi, vi in zip(m, v):
        dens = np.exp(-(w - mi) ** 2 / (2 * vi) - np.abs(w) / b) / (np.sqrt(2 * np.pi * vi) * 2 * b)
        z = np.trapezoid(dens, w)
        mean = np.trapezoid(w * dens, w) / z
        g_m, g_v = jax.grad(lambda a, c: sep_laplace.log_z(a, c, 0.0, b), argnums=(0, 1))(jnp.float32(mi), jnp.float32(vi))
        np.testing.assert_allclose(sep_laplace.log_z(mi, vi, 0.0, b), np.log(z), rtol=1e-4)
        np.testing.assert_allclose(mi + vi * g_m, mean, atol=1e-4)
        var = np.trapezoid(w**2 * dens, w) / z - mean**2
        np.testing.assert_allclose(vi - vi**2 * (g_m**2 - 2 * g_v), var, rtol=1e-3)
    # Far tail: finite value and derivatives (log_ndtr's asymptotic series).
    vals = jax.grad(lambda a: sep_laplace.log_z(a, 1e-4, 0.0, b))(jnp.float32(40.0))
    assert np.isfinite(float(sep_laplace.log_z(40.0, 1e-4, 0.0, b))) and np.isfinite(float(vals))


def test_save_load_round_trip(gauss_post, data, tmp_path):
    path = tmp_path / "sep.npz"
    gauss_post.save(path)
    loaded = Posterior.load(path)
    assert loaded.method == "sep"
    np.testing.assert_allclose(loaded.predict(data.x[:20], mode="moments"), gauss_post.predict(data.x[:20], mode="moments"),
                               rtol=1e-6)
    np.testing.assert_allclose(loaded.history["log_lik"], gauss_post.history["log_lik"])


def test_moment_predictive_agrees_with_monte_carlo(gauss_post, data):
    x = data.x[:60]
    moments = np.asarray(gauss_post.predict(x, mode="moments"))
    mc = np.asarray(gauss_post.predict(x, jax.random.PRNGKey(3), num_samples=4000))
    # MC standard error of a probability is <= 0.5/sqrt(4000) = 0.008 (0.03 at 4 standard
    # errors over 180 probabilities); the rest is the central limit over the 8 hidden units
    # and the fixed-draw softmax average (the hidden layer itself is exact: Gaussian weights
    # times fixed inputs). Measured: max 0.019, mean 0.0051 (0.022 / 0.0066 with the
    # pairwise probit that the predictive used before).
    gap = np.abs(moments - mc)
    assert gap.max() < 0.045 and gap.mean() < 0.012
    assert np.mean(moments.argmax(1) == mc.argmax(1)) > 0.95


def test_softmax_average_matches_a_long_monte_carlo_reference():
    """E[softmax(o)] over Gaussian logits given as independent + shared parts, against 400k draws."""
    rng = np.random.default_rng(7)
    c, r = 4, 6
    for _ in range(10):
        logits = moments.Logits(jnp.asarray(rng.uniform(-3, 3, c), jnp.float32),
                                jnp.asarray(rng.uniform(0.5, 4.0, c), jnp.float32),
                                jnp.asarray(rng.standard_normal((c, r)), jnp.float32),
                                jnp.asarray(rng.uniform(0.1, 2.0, r), jnp.float32))
        mean, cov = (np.asarray(v, np.float64) for v in (logits.mean, logits.cov))
        cov = (cov + cov.T) / 2  # exactly symmetric for NumPy's sampler
        o = rng.multivariate_normal(mean, cov, size=400_000)
        e = np.exp(o - o.max(1, keepdims=True))
        soft = e / e.sum(1, keepdims=True)
        reference, sd = soft.mean(0), soft.std(0)
        # Antithetic pairs: the average of S/2 pairs has a standard error <= sd / sqrt(S/2);
        # 4 standard errors of both estimates.
        bound = 4 * sd / np.sqrt(moments.SOFTMAX_DRAWS / 2) + 4 * sd / np.sqrt(len(o))
        got = np.asarray(moments.softmax_average(logits))
        assert np.all(np.abs(got - reference) <= bound), (got, reference, bound)
        np.testing.assert_allclose(got.sum(), 1.0, atol=1e-5)
    # No noise at all: the plain softmax.
    mean = jnp.asarray([0.3, -1.0, 2.0])
    quiet = moments.Logits(mean, jnp.zeros(3), jnp.zeros((3, 2)), jnp.zeros(2))
    np.testing.assert_allclose(moments.softmax_average(quiet), jax.nn.softmax(mean), rtol=1e-5)


def test_moments_predictor_works_for_point_estimates(data):
    net = _single_step()
    params = net.init_params(jax.random.PRNGKey(0), 4)
    post = Posterior(Classifier(net, 3), {k: dist.Delta(v) for k, v in params.items()}, "point", 4)
    # With zero weight variance the moment pass is the deterministic simulation.
    np.testing.assert_allclose(post.predict(data.x, mode="moments"), post.predict(data.x), atol=1e-5)


def test_to_arviz_draws_from_the_sep_factors(gauss_post):
    idata = gauss_post.to_arviz(rng_key=jax.random.PRNGKey(0), num_samples=400)
    draws = idata.posterior["dense_1.weight"].values  # [chain, draw, in, out]
    assert draws.shape == (1, 400, 8, 3)
    q = gauss_post.weights["dense_1.weight"]
    # 400 draws: the standard error of a mean is scale/20, so 5 standard errors is scale/4.
    assert np.all(np.abs(draws.mean((0, 1)) - np.asarray(q.loc)) < np.asarray(q.scale) / 4)


def test_enumerated_sites_follow_the_layer_rules():
    """Only a discrete Dense layer on deterministic inputs, before a neuron, with K^F <= limit."""
    def sites(encoder, prior, limit=moments.ENUMERATE_LIMIT):
        net = Sequential(encoder, Dense(5, prior=prior), SpikeResponse(), Dense(3, prior=prior), readouts.MeanMembrane())
        k = len(prior.values) if priors.is_discrete(prior) else None
        mom = {site: jnp.full(shape + (k,), 1.0 / k) if k else (jnp.zeros(shape), jnp.ones(shape))
               for site, shape in net.param_shapes(4).items()}
        return moments.enumerated_sites(net, mom, limit)

    assert sites(encoders.Direct(1), priors.Binary()) == {"dense_0.weight"}  # 2^4 joint values per unit
    assert sites(encoders.Direct(1), priors.Binary(), limit=15) == set()
    assert sites(encoders.Rate(4), priors.Binary()) == set()  # random inputs: central limit
    assert sites(encoders.Direct(1), priors.Normal(0.0, 1.0)) == set()


@pytest.mark.parametrize("cell", [LIF(beta=0.9, threshold=1.0), LIF(beta=np.array([0.9, 0.6]),
                                                                    threshold=np.array([1.0, 0.7]))],
                         ids=["shared", "per-neuron"])
def test_enumerated_lif_layer_gives_the_exact_readout_moments(data, cell):
    """Deterministic components through a 12-step LIF, a fixed readout: mean and covariance are exact.

    Every joint value of the 6 binary weights is simulated and weighted by its probability.
    The hidden units' components fire at different phases, so this checks that the static
    loading reproduces the variance of the time-weighted readout, not only per-step variances.
    Per-neuron ``beta``/``threshold`` apply to every component of their unit.
    """
    prior = priors.Binary()
    net = Sequential(encoders.Direct(12), Dense(2, prior=prior, bias=False), cell,
                     Dense(3, bias=False), readouts.MeanMembrane(beta=0.8, scale=2.0))
    probs = jax.random.dirichlet(jax.random.PRNGKey(0), jnp.ones(2), (3, 2))  # q(w) [F, H, K]
    readout = jax.random.normal(jax.random.PRNGKey(1), (2, 3))
    mom = {"dense_0.weight": probs, "dense_1.weight": (readout, jnp.zeros_like(readout))}
    x = jnp.asarray(data.x[:10, :3]) * 2.0
    configs = np.stack(np.unravel_index(np.arange(2**6), (2,) * 6), -1).reshape(-1, 3, 2)  # [64, F, H] indices
    outs = jnp.stack([net.apply({"dense_0.weight": prior.values[c], "dense_1.weight": readout}, x) for c in configs])
    weight = jnp.prod(jnp.take_along_axis(probs[None], configs[..., None], -1)[..., 0], axis=(1, 2))  # [64]
    exact_mean = jnp.einsum("c,cbk->bk", weight, outs)
    dev = outs - exact_mean
    exact_cov = jnp.einsum("c,cbk,cbj->bkj", weight, dev, dev)
    mean, cov = jax.vmap(lambda xi: moments.output_moments(net, mom, xi))(x)
    assert float(jnp.max(jnp.abs(exact_cov))) > 0.1  # the readout does vary with the hidden weights
    np.testing.assert_allclose(mean, exact_mean, atol=1e-4)
    np.testing.assert_allclose(cov, exact_cov, atol=1e-4)


def test_quadrature_readout_matches_monte_carlo_over_a_gaussian_first_layer(data):
    """A Direct-driven 12-step LIF layer with Gaussian weights, a fixed readout: with the
    quadrature the readout's mean and covariance match 40,000 weight draws within their
    Monte Carlo error; the filter alone misses the variance by more than that (here it
    understates it; on the Yin-Yang benchmark network it overstates it 1.34x)."""
    net = Sequential(encoders.Direct(12), Dense(4), LIF(beta=0.9, threshold=1.0), Dense(3, bias=False),
                     readouts.MeanMembrane(beta=0.8, scale=2.0))
    keys = jax.random.split(jax.random.PRNGKey(0), 4)
    w_mean, b_mean = 2.0 * jax.random.normal(keys[0], (4, 4)), jax.random.normal(keys[1], (4,))
    w_sd, b_sd = 0.7, 0.5
    readout = jax.random.normal(keys[2], (4, 3))
    mom = {"dense_0.weight": (w_mean, jnp.full((4, 4), w_sd**2)), "dense_0.bias": (b_mean, jnp.full(4, b_sd**2)),
           "dense_1.weight": (readout, jnp.zeros_like(readout))}
    x = jnp.asarray(data.x[:6]) * 2.0
    draws = 40_000
    w = w_mean + w_sd * jax.random.normal(keys[3], (draws, 4, 4))
    b = b_mean + b_sd * jax.random.normal(jax.random.fold_in(keys[3], 1), (draws, 4))
    outs = jax.lax.map(lambda wb: net.apply({"dense_0.weight": wb[0], "dense_0.bias": wb[1], "dense_1.weight": readout},
                                            x), (w, b), batch_size=2000)  # [S, B, 3]
    mc_mean, mc_var = outs.mean(0), outs.var(0)
    se_mean, se_var = jnp.sqrt(mc_var / draws), mc_var * np.sqrt(2.0 / draws) * 2.0  # x2: heavy-tailed counts
    quad = jax.vmap(lambda xi: moments.output_logits(net, mom, xi, quadrature=512))(x)
    filt = jax.vmap(lambda xi: moments.output_logits(net, mom, xi))(x)
    quad_var, filt_var = (jax.vmap(lambda lg: jnp.diagonal(lg.cov))(lg) for lg in (quad, filt))
    # 4 standard errors plus the quadrature's own error (each spike probability within 1/512)
    np.testing.assert_array_less(jnp.abs(quad.mean - mc_mean), 4 * se_mean + 12 * 2.0 * jnp.abs(readout).sum(0) / 512)
    np.testing.assert_array_less(jnp.abs(quad_var - mc_var), 4 * se_var + 0.02 * mc_var)
    assert float(jnp.max(jnp.abs(filt_var - mc_var) / (4 * se_var + 0.02 * mc_var))) > 1.0  # the filter fails


def test_quadrature_neuron_gives_the_exact_spike_sum_of_a_static_current():
    """Units whose spike count hardly varies while their spike times do: the quadrature's
    sums match 100,000 draws of the static variable, the mixed ``Act`` alone (per-step
    variances as if independent over time) overstates them."""
    hidden, steps = 40, 10
    cell = LIF(beta=0.9, threshold=1.0)
    c = readouts.MeanMembrane(beta=0.8, scale=1.0).time_weights(steps)
    mu, k = jnp.linspace(0.3, 3.0, hidden)[None], jnp.full((1, hidden), 0.08)
    act, (r_mean, r_var) = moments.quadrature_neuron(moments.Act(mu, k, k**2), cell, steps, c, 512)
    current = mu + k * jax.random.normal(jax.random.PRNGKey(0), (100_000, 1))
    spikes, _ = cell.run(jnp.broadcast_to(current, (steps,) + current.shape))
    r = jnp.einsum("t,tsh->sh", c, spikes)
    # each spike probability is within 1/512 of exact; the draws' own error is below 1e-3 here
    tol = float(jnp.sum(c)) / 512 + 1e-3
    np.testing.assert_allclose(r_mean, r.mean(0), atol=tol)
    np.testing.assert_allclose(r_var, r.var(0), atol=tol)
    _, act_var = moments._time_sum(act, c)
    assert float(jnp.max(act_var - r.var(0))) > 0.05
    # The same units as a network's first layer (one input equal to 1): its readout uses the sums.
    net = Sequential(encoders.Direct(steps), Dense(hidden, bias=False), cell, Dense(3, bias=False),
                     readouts.MeanMembrane(beta=0.8, scale=1.0))
    readout = jax.random.normal(jax.random.PRNGKey(1), (hidden, 3))
    mom = {"dense_0.weight": (mu, k**2), "dense_1.weight": (readout, jnp.zeros_like(readout))}
    _, cov = moments.output_moments(net, mom, jnp.ones(1), quadrature=512)
    gain = net.layers[3].gain_for(hidden)
    bound = gain**2 * jnp.abs(readout).T @ jnp.abs(readout) * tol  # each unit's variance within tol
    np.testing.assert_array_less(jnp.abs(cov - gain**2 * (readout.T * r.var(0)) @ readout), bound)


def test_quadrature_mode_equals_moments_where_no_layer_is_statically_driven(data):
    """Single-step networks: the filter is exact there, so both predictives agree; a second
    hidden layer's readout must not reuse the first layer's quadrature sums."""
    train = (data.x[:200], data.y[:200])
    for net in (Sequential(encoders.Direct(1), Dense(8), SpikeResponse(), Dense(3), readouts.MeanMembrane()),
                Sequential(encoders.Direct(6), Dense(8), LIF(), Dense(8), LIF(), Dense(3), readouts.MeanMembrane())):
        post = inference.fit(Classifier(net, 3), train, SEP(epochs=1), rng_key=jax.random.PRNGKey(0), progress_bar=False)
        if isinstance(net.layers[2], SpikeResponse):
            np.testing.assert_allclose(post.predict(data.x[:50], mode="moments"),
                                       post.predict(data.x[:50], mode="quadrature"), atol=0.01)
        else:  # the quadrature changes the first layer's moments only; the readout uses the second layer's
            mom = moments.site_moments(post.weights)
            xi = jnp.asarray(data.x[0])
            cur = moments.dense(moments.encode(net.layers[0], xi), mom["dense_0.weight"], mom["dense_0.bias"],
                                net.layers[1].gain_for(4))
            h, _ = moments.quadrature_neuron(cur, net.layers[2], 6, net.layers[-1].time_weights(6),
                                             sep.QUADRATURE_NODES)
            h = moments.neuron(net.layers[4], moments.dense(h, mom["dense_1.weight"], mom["dense_1.bias"],
                                                            net.layers[3].gain_for(8)), 6)
            want = moments._readout_membrane(h, net.layers[-1], mom["dense_2.weight"], mom["dense_2.bias"],
                                             net.layers[5].gain_for(8), 6)
            got = moments.output_logits(net, mom, xi, quadrature=sep.QUADRATURE_NODES)
            np.testing.assert_allclose(got.mean, want.mean, rtol=1e-5, atol=1e-5)
            np.testing.assert_allclose(got.cov, want.cov, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("prior", [priors.Binary(0.5), priors.Ternary(1.0, 0.3), priors.IntegerGrid(2, 0.25)])
def test_moment_form_categorical_update_equals_the_probability_form(data, prior):
    """Differentiating log Z w.r.t. each weight's (mean, var) gives the same site update as
    differentiating w.r.t. its K probabilities (chain rule), for central-limit layers."""
    net = Sequential(encoders.Direct(1), Dense(16, prior=prior), SpikeResponse(), Dense(3, prior=prior),
                     readouts.MeanMembrane())
    model = Classifier(net, 3)
    x, y = model.check_data(data.x, data.y)
    # No enumeration: every weight is in moment form.
    sep = SEP(batch_size=16, enumerate_limit=0, categorical_update="per_example")
    state = sep.init(jax.random.PRNGKey(3), model, x, y)
    batch = Batch(jnp.asarray(x[:16]), jnp.asarray(y[:16]), jnp.arange(16) < 13)
    for _ in range(2):  # the second step starts from a non-trivial site
        cav, _, moment_form = sep.pass_inputs(state)
        assert moment_form == {"dense_0.weight", "dense_1.weight"}
        log_z = lambda mom, xi, yi: moments.log_evidence(model, mom, xi, yi, 0)
        _, dz = jax.vmap(jax.value_and_grad(log_z), in_axes=(None, 0, 0))(cav, batch.x, batch.y)
        new, _ = sep.step(None, state, batch)
        n_new = state.seen + 13
        for site in moment_form:
            ref, _ = sep_sites.update_cat(state.sites[site], sep._nat[site], state.seen, n_new, cav[site], dz[site],
                                          batch.mask, sep.damping, sep.min_prob)
            scale = float(jnp.max(jnp.abs(ref.logf)))
            np.testing.assert_allclose(new.sites[site].logf, ref.logf, atol=1e-5 * scale)
        state = new


def _factored_derivatives(key, batch=12, fan_in=5, units=7):
    """Random ``OuterDerivatives`` with zero inputs, negative and positive curvature, non-finite units."""
    k1, k2, k3 = jax.random.split(key, 3)
    x = jax.random.normal(k1, (batch, fan_in)) * (jax.random.uniform(k1, (batch, fan_in)) > 0.3)
    g = jax.random.normal(k2, (batch, units))
    s = 0.6 * jax.random.normal(k3, (batch, units))  # g^2 - 2s takes both signs
    g = g.at[2, 3].set(jnp.nan).at[5, 0].set(jnp.inf)
    s = s.at[11, 6].set(jnp.nan)  # in a padded example below: not counted
    return OuterDerivatives(x, g, s)


def test_factored_taylor_sums_equal_the_per_example_sums():
    d = _factored_derivatives(jax.random.PRNGKey(0))
    mask = jnp.arange(12) < 10  # two padded examples
    m = jax.random.normal(jax.random.PRNGKey(1), (5, 7))
    got = sep_sites.taylor_sums(m, d, mask)
    want = sep_sites.taylor_sums(m, d.expand(), mask)
    np.testing.assert_allclose(got.r, want.r, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(got.lam, want.lam, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(jnp.broadcast_to(got.count, (5, 7)), want.count)
    assert int(got.clipped) == int(want.clipped) > 0
    assert int(got.dropped) == int(want.dropped) == 2 * 5  # units (2, 3) and (5, 0), each for 5 inputs


def test_taylor_sites_are_moment_matching_to_first_order_in_the_cavity_variance():
    # Moment matching gives lam_n = k / (1 - v k) = k + v k^2 + O(v^2) and
    # r_n = m lam_n + g / (1 - v k) = m lam_n + g + v g k + O(v^2); the Taylor site keeps
    # the O(1) terms. Here every k > 0, so neither form clips.
    key = jax.random.PRNGKey(3)
    g = jax.random.normal(key, (16, 4, 3))
    h = -0.5 * jnp.abs(jax.random.normal(jax.random.fold_in(key, 1), (16, 4, 3)))  # k = g^2 - 2h > 0
    m = jax.random.normal(jax.random.fold_in(key, 2), (4, 3))
    mask = jnp.ones(16, bool)
    k = g**2 - 2 * h
    taylor = sep_sites.taylor_sums(m, (g, h), mask)
    for v in (1e-2, 1e-3):
        exact = sep_sites.moment_matched_sums(m, jnp.full((4, 3), v), (g, h), mask, 1e-3)
        lam_first = v * jnp.sum(k**2, 0)
        r_first = m * lam_first + v * jnp.sum(g * k, 0)
        # The remainders are geometric series in v k: relative to the first-order terms they
        # are at most about v max(k) / (1 - v max(k)); twice that is the tolerance.
        bound = 2 * v * float(k.max()) / (1 - v * float(k.max()))
        np.testing.assert_allclose(exact.lam - taylor.lam, lam_first, rtol=bound)
        np.testing.assert_allclose(exact.r - taylor.r, r_first, rtol=bound, atol=bound * float(jnp.max(jnp.abs(r_first))))
    assert int(taylor.clipped) == int(exact.clipped) == 0


def test_taylor_leaves_categorical_sites_unchanged(data):
    # A discrete first layer in moment form gets factored derivatives under "taylor"; its
    # categorical update must be the one it gets under "moment_match".
    model = Classifier(_single_step(prior=priors.Ternary(1.0, 0.5)), 3)
    batch = Batch(jnp.asarray(data.x[:16]), jnp.asarray(data.y[:16]), jnp.ones(16, bool))
    new = {}
    for rule in ("moment_match", "taylor"):
        method = SEP(batch_size=16, enumerate_limit=0, gaussian_update=rule)
        state = method.init(jax.random.PRNGKey(0), model, data.x, data.y)
        new[rule], _ = jax.jit(method.step)(None, state, batch)
    for site in ("dense_0.weight", "dense_1.weight"):
        before = method.init(jax.random.PRNGKey(0), model, data.x, data.y).sites[site].logf
        assert not np.allclose(new["taylor"].sites[site].logf, before)  # the step did move it
        np.testing.assert_allclose(new["taylor"].sites[site].logf, new["moment_match"].sites[site].logf,
                                   rtol=1e-5, atol=1e-6)


def test_taylor_update_trains_and_matches_moment_matching():
    train, test = datasets.yin_yang("train", size=1000), datasets.yin_yang("test", size=500)
    model = Classifier(Sequential(encoders.Direct(1), Dense(16), SpikeResponse(), Dense(3), readouts.MeanMembrane()), 3)
    accuracy = {}
    for rule in ("moment_match", "taylor"):
        post = inference.fit(model, train, SEP(epochs=2, gaussian_update=rule), rng_key=jax.random.PRNGKey(0),
                             progress_bar=False)
        assert np.all(np.isfinite(post.history["log_lik"]))
        accuracy[rule] = post.evaluate(test, mode="moments")["accuracy"]
    assert accuracy["taylor"] > 0.8
    assert abs(accuracy["taylor"] - accuracy["moment_match"]) < 0.05


def test_gaussian_update_is_rejected_if_q_would_lose_its_precision_at_a_later_count():
    # prior N(0, 1); the count grows from n_new = 10 to n_max = 100 examples. Site precisions
    # per example: -0.005 keeps q proper at every count (1 - 100 x 0.005 = 0.5), -0.05 only
    # up to 20 examples, so it must be rejected now although q is proper at n_new = 10.
    prior = (jnp.zeros(3), jnp.ones(3))
    site = sep_sites.GaussSite(jnp.zeros(3), jnp.zeros(3))
    target = jnp.array([0.2, -0.005, -0.05])  # the site precision each weight moves to
    # Ten examples, each with the target's site, and a full step: the site becomes their average.
    sums = sep_sites.GaussSums(jnp.zeros(3), 10.0 * target, jnp.full(3, 10.0), jnp.int32(0), jnp.int32(0))
    new, stats = sep_sites.update_gauss(site, prior, 9.0, 10.0, sums, damping=1.0, n_max=100.0)
    np.testing.assert_allclose(new.lam, [0.2, -0.005, 0.0], rtol=1e-6)  # the last keeps its old site
    assert int(stats.rejected) == 1
    for count in (10.0, 100.0):  # q stays proper at every count the run reaches
        assert np.all(np.asarray(prior[1] + count * new.lam) > 0)
    # Without the later count in view (n_max = n_new), the same update was accepted.
    accepted, stats = sep_sites.update_gauss(site, prior, 9.0, 10.0, sums, damping=1.0, n_max=10.0)
    assert int(stats.rejected) == 0 and float(accepted.lam[2]) == pytest.approx(-0.05)


@pytest.mark.parametrize("scale", ["small", "large", "mixed"])
def test_factored_moment_matched_sums_equal_the_per_example_sums(scale):
    # small: every weight's series is within tolerance; large: none is, and some examples are
    # dropped for a tilted variance below min_ratio (only the per-example terms can do that);
    # mixed: cavity variances from 1e-8 to 1, both.
    d = _factored_derivatives(jax.random.PRNGKey(0))
    mask = jnp.arange(12) < 10  # two padded examples
    key = jax.random.PRNGKey(1)
    m = jax.random.normal(key, (5, 7))
    log_v = {"small": -7.0, "large": 0.0, "mixed": jax.random.uniform(jax.random.fold_in(key, 1), (5, 7), minval=-8.0,
                                                                       maxval=0.0)}[scale]
    v = jnp.broadcast_to(10.0**log_v, (5, 7))
    got = sep_sites.moment_matched_sums(m, v, d, mask, 0.5)
    want = sep_sites.moment_matched_sums(m, v, d.expand(), mask, 0.5)
    np.testing.assert_allclose(got.lam, want.lam, rtol=2e-5, atol=1e-6 * float(jnp.max(want.lam)))
    np.testing.assert_allclose(got.r, want.r, rtol=2e-5, atol=1e-6 * float(jnp.max(jnp.abs(want.r))))
    np.testing.assert_array_equal(jnp.broadcast_to(got.count, (5, 7)), want.count)
    assert int(got.clipped) == int(want.clipped) > 0
    dropped = int(want.dropped)
    assert int(got.dropped) == dropped and (dropped > 2 * 5 if scale != "small" else dropped == 2 * 5)


def test_factored_moment_matched_series_is_accurate_to_its_tolerance():
    # Against float64 moment matching: the series leaves at most MATCH_TOLERANCE of lam and
    # of sum_n |x g|; float32 rounding of the 4-term sums adds a few 1e-7.
    d = _factored_derivatives(jax.random.PRNGKey(4))
    d = OuterDerivatives(d.x, jnp.nan_to_num(d.g, posinf=1.0), jnp.nan_to_num(d.s))
    mask = jnp.ones(12, bool)
    m = jax.random.normal(jax.random.PRNGKey(5), (5, 7))
    v = jnp.full((5, 7), 1e-3)
    got = sep_sites.moment_matched_sums(m, v, d, mask, 0.5)
    x, g, s = (np.asarray(a, np.float64) for a in d)
    k = np.maximum(g**2 - 2 * s, 0.0)[:, None, :] * x[:, :, None] ** 2  # [B, F, H]
    t = 1e-3 * k
    assert np.max(np.sum(t**4, axis=0)) < 0.5 * sep_sites.MATCH_TOLERANCE  # the series is used for every weight
    lam = np.sum(k / (1 - t), axis=0)
    scale = np.sum(np.abs(x[:, :, None] * g[:, None, :]), axis=0)
    r = np.asarray(m, np.float64) * lam + np.sum(x[:, :, None] * g[:, None, :] / (1 - t), axis=0)
    tol = sep_sites.MATCH_TOLERANCE + 1e-6
    assert np.all(np.abs(np.asarray(got.lam) - lam) <= tol * lam + 1e-30)
    assert np.all(np.abs(np.asarray(got.r) - r) <= tol * (np.abs(np.asarray(m)) * lam + scale))


def test_moment_matched_site_keeps_a_tiny_share_of_precision():
    # lam_n = k / (1 - v k): computed as (1 - shrink) / (v shrink) it rounded to 0 for v k < 6e-8.
    g, h = jnp.ones((1, 3)), jnp.zeros((1, 3))  # k = 1
    v = jnp.asarray([1e-9, 1e-7, 1e-5])
    sums = sep_sites.moment_matched_sums(jnp.zeros(3), v, (g, h), jnp.ones(1, bool), 1e-3)
    np.testing.assert_allclose(sums.lam, 1.0 / (1.0 - np.asarray(v, np.float64)), rtol=1e-7)
