"""SEP's categorical algebra for any support size: K separate arrays for small K, one stacked array for large K."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bayes_snn import Classifier, Dense, Sequential, SpikeResponse, datasets, encoders, inference, priors, readouts
from bayes_snn.datasets.batching import Batch
from bayes_snn.inference import SEP, sep_sites


def _site_and_sums(k, seed=0):
    rng = np.random.default_rng(seed)
    site = sep_sites.CatSite(jnp.asarray(0.01 * rng.normal(size=(6, 5, k)), jnp.float32))
    ratio = jnp.asarray(1.0 + 0.1 * rng.normal(size=(k, 8, 6, 5)), jnp.float32)
    valid = jnp.asarray(rng.random((8, 6, 5)) > 0.1)
    log_p0 = np.log(rng.dirichlet(np.ones(k)).astype(np.float32))
    return site, sep_sites._log_ratio_sums(ratio, valid, valid), log_p0


@pytest.mark.parametrize("k", [2, 3, 15])
def test_listed_and_stacked_supports_give_the_same_update(k, monkeypatch):
    site, sums, log_p0 = _site_and_sums(k)
    out = {}
    for listed in (0, 1000):  # every support stacked, every support listed
        monkeypatch.setattr(sep_sites, "LISTED_SUPPORT", listed)
        new, stats = sep_sites._apply_cat(site, log_p0, 100.0, 132.0, sums, 0.5, 1e-5)
        out[listed] = (sep_sites.cat_logq(site, log_p0, 100.0, cavity=True), new.logf, stats.clipped, stats.rejected)
    for a, b in zip(out[0], out[1000]):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-6, atol=1e-7)
    logq = out[0][0]
    np.testing.assert_allclose(np.exp(np.asarray(logq)).sum(-1), 1.0, rtol=1e-5)


def _step_size(bits):
    """Equations in the jaxpr of one SEP step on a network with ``bits``-bit weights."""
    prior = priors.IntegerGrid(bits, 0.1)
    net = Sequential(encoders.Direct(1), Dense(8, prior=prior), SpikeResponse(), Dense(3, prior=prior),
                     readouts.MeanMembrane())
    data = datasets.yin_yang("train", size=64)
    model, method = Classifier(net, 3), SEP(batch_size=16, enumerate_limit=0)
    x, y = model.check_data(data.x, data.y)
    state = method.init(jax.random.PRNGKey(0), model, x, y)
    batch = Batch(jnp.asarray(x[:16]), jnp.asarray(y[:16]), jnp.ones(16, bool))
    return len(jax.make_jaxpr(method.step)(jax.random.PRNGKey(0), state, batch).jaxpr.eqns)


def test_step_program_does_not_grow_with_the_support():
    # 31 and 127 values (4- and 6-bit grids): a program unrolled over the support took minutes to compile.
    assert _step_size(4) == _step_size(6)


def test_six_bit_weights_train():
    data, test = datasets.yin_yang("train", size=600), datasets.yin_yang("test", size=600, seed=1)
    net = Sequential(encoders.Direct(1), Dense(32, prior=priors.IntegerGrid(6, 0.05)), SpikeResponse(),
                     Dense(3, prior=priors.IntegerGrid(6, 0.05)), readouts.MeanMembrane())
    post = inference.fit(Classifier(net, 3), data, SEP(epochs=2), rng_key=jax.random.PRNGKey(0), progress_bar=False)
    grids = [d for d in post.weights.values() if isinstance(d, priors.DiscreteGrid)]  # biases are Gaussian
    assert len(grids) == 2 and all(np.all(np.isfinite(np.asarray(d.probs))) for d in grids)
    assert post.evaluate(test, mode="moments")["accuracy"] > 0.6  # chance is 1/3
