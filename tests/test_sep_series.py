"""SEP's ``categorical_update="series"``: a discrete first layer's log ratios summed by matrix products.

The reference is the per-example update (a logarithm per example, weight and value). Where
the series is used, it may differ from it by at most its remainder bound, which is at most
``SERIES_SHARE`` of the second-order term ``sum_n eps_n^2 / 2``; elsewhere it must agree to
float precision.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bayes_snn import Classifier, Dense, Sequential, SpikeResponse, datasets, encoders, inference, presets, priors
from bayes_snn import readouts
from bayes_snn.datasets.batching import Batch
from bayes_snn.inference import SEP, sep_sites
from bayes_snn.inference.moments_grad import OuterDerivatives, evidence_derivatives

BINARY, TERNARY, GRID = [-1.0, 1.0], [-1.0, 0.0, 1.0], [-0.5, -0.25, 0.0, 0.25]


def _case(key, values, scale, batch=24, fan_in=16, units=8):
    """Factored derivatives (zero and negative inputs, a non-finite unit, 4 padded examples) and cavity moments."""
    k = jax.random.split(key, 5)
    x = jax.random.uniform(k[0], (batch, fan_in), minval=-0.3, maxval=1.0)
    x = x * (jax.random.uniform(k[1], (batch, fan_in)) > 0.2)
    g = scale * jax.random.normal(k[2], (batch, units))
    s = 0.3 * scale**2 * jax.random.normal(k[3], (batch, units))
    g = g.at[3, 5].set(jnp.nan)
    probs = jax.random.dirichlet(k[4], jnp.ones(len(values)), (fan_in, units))
    a = jnp.asarray(values)
    mean = probs @ a
    var = probs @ a**2 - mean**2
    return OuterDerivatives(x, g, s), (mean, var), jnp.arange(batch) < batch - 4


def _reference(values, moments, d, mask):
    """The per-example sums and the second-order terms ``sum_n eps_n^2 / 2`` ``[F, H, K]``."""
    ratio, valid = sep_sites._moment_form_ratio(np.asarray(values), moments, *d.expand(), mask)
    sums = sep_sites._log_ratio_sums(ratio, valid, sep_sites._bcast(mask, valid))
    second = jnp.moveaxis(jnp.sum(jnp.where(valid, (ratio - 1.0) ** 2, 0.0), axis=1) / 2, 0, -1)
    return sums, second


def _assert_counts_equal(got, want):
    np.testing.assert_array_equal(got.count, want.count)
    assert int(got.dropped) == int(want.dropped) == 16 * 1  # unit 5 of example 3, for each input
    assert int(got.floored) == int(want.floored)


@pytest.mark.parametrize("values", [BINARY, TERNARY, GRID])
def test_series_stays_within_its_remainder_bound(values):
    d, moments, mask = _case(jax.random.PRNGKey(0), values, scale=0.1)  # a few weights leave the series
    got = sep_sites.outer_series_sums(values, moments, d, mask)
    want, second = _reference(values, moments, d, mask)
    err = jnp.abs(got.log_sum - want.log_sum)
    # float32 rounding of sums of ~20 terms of size <= |log_sum| + second
    rounding = 1e-5 * (1.0 + jnp.abs(want.log_sum) + second)
    assert bool(jnp.all(err <= sep_sites.SERIES_SHARE * second + rounding))
    assert float(jnp.max(err)) > 1e-6  # the series was used: it is not the per-example sum
    _assert_counts_equal(got, want)


@pytest.mark.parametrize("values", [BINARY, TERNARY])
def test_weights_beyond_the_series_get_per_example_logs(values):
    d, moments, mask = _case(jax.random.PRNGKey(1), values, scale=0.02)
    # Unit 0 sees large derivatives: its 16 weights leave the series (two chunks of
    # 16 * 8 / SERIES_CHUNK = 8), some of its ratios fall below the floor, and no other unit is affected.
    d = d._replace(g=d.g.at[:, 0].mul(400.0), s=d.s.at[:, 0].mul(400.0**2))
    got = sep_sites.outer_series_sums(values, moments, d, mask)
    want, second = _reference(values, moments, d, mask)
    np.testing.assert_allclose(got.log_sum[:, 0], want.log_sum[:, 0], rtol=1e-5, atol=1e-4)
    rounding = 1e-5 * (1.0 + jnp.abs(want.log_sum) + second)
    assert bool(jnp.all(jnp.abs(got.log_sum - want.log_sum) <= sep_sites.SERIES_SHARE * second + rounding))
    assert not np.allclose(got.log_sum[:, 1:], want.log_sum[:, 1:], rtol=0, atol=1e-7)  # the series elsewhere
    assert int(want.floored) > 0
    _assert_counts_equal(got, want)


def test_a_layer_beyond_the_series_takes_per_example_logs_everywhere():
    d, moments, mask = _case(jax.random.PRNGKey(2), TERNARY, scale=3.0)
    got = sep_sites.outer_series_sums(TERNARY, moments, d, mask)
    want, _ = _reference(TERNARY, moments, d, mask)
    np.testing.assert_allclose(got.log_sum, want.log_sum, rtol=1e-5, atol=1e-5)
    _assert_counts_equal(got, want)


def _model(prior):
    net = Sequential(encoders.Direct(1), Dense(32, prior=prior), SpikeResponse(), Dense(3, prior=prior),
                     readouts.MeanMembrane())
    return Classifier(net, 3)


@pytest.mark.parametrize("prior", [priors.Binary(0.5), priors.Ternary(1.0, 0.5)])
def test_series_step_is_the_per_example_step_within_the_bound(prior):
    # A step maps the minibatch sums to the centred site
    # logf + damping (sum_n log f_n - c logf) / n_new, so each weight moves by at most
    # 2 damping max_k |error of its sum| / n_new more than under the per-example update.
    # Where a probability of q is floored at min_prob, the normalisation before the floor
    # and the centring after it can each double that: 8x.
    data = datasets.yin_yang("train", size=200)
    model = _model(prior)
    x, y = model.check_data(data.x, data.y)
    batch = Batch(jnp.asarray(x[:32]), jnp.asarray(y[:32]), jnp.arange(32) < 29)
    per_example = SEP(batch_size=32, enumerate_limit=0, categorical_update="per_example")
    series = SEP(batch_size=32, enumerate_limit=0, categorical_update="series")
    state = per_example.init(jax.random.PRNGKey(0), model, x, y)
    series.init(jax.random.PRNGKey(0), model, x, y)  # binds the model
    for _ in range(3):  # train a little, so that the layer's evidence is not negligible
        state, _ = jax.jit(per_example.step)(None, state, batch._replace(x=batch.x[::-1], y=batch.y[::-1]))
    want, _ = jax.jit(per_example.step)(None, state, batch)
    got, _ = jax.jit(series.step)(None, state, batch)
    _, inputs, _ = series.pass_inputs(state)
    site = "dense_0.weight"
    logz, grads = evidence_derivatives(model, inputs, batch.x, batch.y, enumerate_limit=0, factored=True)
    _, second = _reference(prior.values, inputs[site], grads[site], batch.mask & jnp.isfinite(logz))
    n_new = float(state.seen) + 29
    bound = 2 * per_example.damping * sep_sites.SERIES_SHARE * jnp.max(second, -1) / n_new  # [F, H]
    probs = sep_sites.cat_probs(want.sites[site], series._nat[site], n_new, False)
    floored = jnp.any(probs < 1.01 * series.min_prob, -1)
    assert not bool(jnp.all(floored))
    bound = jnp.where(floored, 4 * bound, bound)
    err = jnp.max(jnp.abs(got.sites[site].logf - want.sites[site].logf), -1)
    assert bool(jnp.all(err <= bound + 1e-6 * float(jnp.abs(want.sites[site].logf).max())))
    assert float(jnp.max(err)) > 0  # the series was used
    np.testing.assert_allclose(got.sites["dense_1.weight"].logf, want.sites["dense_1.weight"].logf, rtol=1e-5,
                               atol=1e-7)


def _accuracy_by_rule(train, test, hidden, rules):
    """Test accuracy of a 2-epoch binary single-step SEP fit in moment form, per ``categorical_update``."""
    accuracy = {}
    for rule in rules:
        model = presets.classifier(train.x.shape[1], train.num_classes, hidden=hidden, weights="binary",
                                   neuron="single-step")
        post = inference.fit(model, train, SEP(epochs=2, enumerate_limit=0, categorical_update=rule),
                             rng_key=jax.random.PRNGKey(0), progress_bar=False)
        accuracy[rule] = post.evaluate(test, mode="moments")["accuracy"]
    return accuracy


def test_series_trains_like_the_per_example_update():
    accuracy = _accuracy_by_rule(datasets.yin_yang("train", size=1000), datasets.yin_yang("test", size=500), 32,
                                 ("per_example", "series"))
    assert accuracy["series"] > 0.8
    assert abs(accuracy["series"] - accuracy["per_example"]) < 0.03


@pytest.mark.parametrize("prior, enumerate_limit", [(priors.Normal(0.0, 1.0), 0), (priors.Binary(0.5), 256)])
def test_the_series_default_changes_nothing_without_a_moment_form_first_layer(prior, enumerate_limit):
    # Gaussian weights, or an enumerated discrete first layer: the series only ever replaces the
    # per-example logarithms of the Direct-fed layer in moment form, so the step is bit for bit the same.
    data = datasets.yin_yang("train", size=64)
    model = _model(prior)
    x, y = model.check_data(data.x, data.y)
    batch = Batch(jnp.asarray(x[:32]), jnp.asarray(y[:32]), jnp.ones(32, bool))
    default, per_example = SEP(enumerate_limit=enumerate_limit), SEP(enumerate_limit=enumerate_limit,
                                                                     categorical_update="per_example")
    assert default.categorical_update == "series"
    state = default.init(jax.random.PRNGKey(0), model, x, y)
    per_example.init(jax.random.PRNGKey(0), model, x, y)
    assert "dense_0.weight" not in default.pass_inputs(state)[2]  # the moment-form sites
    got, want = (jax.jit(m.step)(None, state, batch)[0] for m in (default, per_example))
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_invalid_categorical_update_raises():
    with pytest.raises(ValueError, match="categorical_update must be one of"):
        SEP(categorical_update="log")


# ``categorical_update="taylor"``: the example's Taylor Gaussian site evaluated on the support.


def _taylor_reference(values, moments, d, mask):
    """``sum_n log f_n(a_k)``, centred over ``k``, per example in float64 (``[F, H, K]``), and the count."""
    x, g, s = (np.asarray(v, np.float64) for v in d)
    mean, mask = np.asarray(moments[0], np.float64), np.asarray(mask)
    gm = x[:, :, None] * g[:, None, :]  # [B, F, H]
    k = gm**2 - 2.0 * x[:, :, None] ** 2 * s[:, None, :]
    ok = np.broadcast_to(mask[:, None, None] & np.isfinite(g)[:, None, :] & np.isfinite(s)[:, None, :], gm.shape)
    dev = np.asarray(values)[:, None, None] - mean  # [K, F, H]
    per_example = gm[None] * dev[:, None] - 0.5 * k[None] * dev[:, None] ** 2
    total = np.moveaxis(np.where(ok[None], per_example, 0.0).sum(1), 0, -1)
    return total - total.mean(-1, keepdims=True), ok.sum(0)


@pytest.mark.parametrize("values", [BINARY, TERNARY, GRID])
@pytest.mark.parametrize("factored", [True, False])
def test_taylor_sums_are_the_second_order_log_sites(values, factored):
    d, moments, mask = _case(jax.random.PRNGKey(4), values, scale=0.5)  # k_n of both signs, none clipped
    got = sep_sites.taylor_cat_sums(values, moments, d if factored else d.expand(), mask)
    want, count = _taylor_reference(values, moments, d, mask)
    centred = got.log_sum - jnp.mean(got.log_sum, -1, keepdims=True)
    np.testing.assert_allclose(centred, want, rtol=1e-4, atol=1e-5 * np.abs(want).max())
    np.testing.assert_array_equal(jnp.broadcast_to(got.count, count.shape), count)
    assert int(got.dropped) == 16  # unit 5 of example 3, for each input
    assert int(got.floored) == 0


@pytest.mark.parametrize("values", [BINARY, TERNARY])
def test_taylor_sums_agree_with_the_log_ratios_to_third_order(values):
    # log(1 + eps_n) and the Taylor log site differ by O(eps^3): halving the derivatives'
    # scale (g by 2, s by 4) divides the difference of the centred sums by about 8.
    d, moments, mask = _case(jax.random.PRNGKey(5), values, scale=1.0)
    d = d._replace(g=jnp.nan_to_num(d.g))
    gaps = []
    for t in (0.02, 0.01):
        scaled = d._replace(g=t * d.g, s=t**2 * d.s)
        taylor = sep_sites.taylor_cat_sums(values, moments, scaled, mask).log_sum
        ratio, valid = sep_sites._moment_form_ratio(np.asarray(values), moments, *scaled.expand(), mask)
        logs = sep_sites._log_ratio_sums(ratio, valid, sep_sites._bcast(mask, valid)).log_sum
        gap = (taylor - taylor.mean(-1, keepdims=True)) - (logs - logs.mean(-1, keepdims=True))
        gaps.append(float(jnp.max(jnp.abs(gap))))
    assert 6.0 < gaps[0] / gaps[1] < 10.0


def test_taylor_trains_like_the_per_example_update_on_a_wide_layer():
    # digits: 64 inputs per first-layer unit, where a second-order expansion in one weight holds
    accuracy = _accuracy_by_rule(*presets.load_dataset("digits"), 64, ("per_example", "taylor"))
    assert accuracy["taylor"] > 0.85
    assert accuracy["taylor"] > accuracy["per_example"] - 0.03  # seed 0: 0.900 against 0.858
