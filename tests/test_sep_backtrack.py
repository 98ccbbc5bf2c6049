"""SEP's step check: overshooting minibatch updates are redone shorter (``backtrack``) and flagged by ``fit``."""

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bayes_snn import datasets, inference, presets
from bayes_snn.datasets.batching import Batch
from bayes_snn.inference import SEP
from bayes_snn.inference.sep import BACKTRACK_TRIES

# Minibatches of a quarter of the data with the default damping: the first steps overshoot.
BIG_BATCH = 500


@pytest.fixture(scope="module")
def data():
    return datasets.yin_yang("train", size=2000, seed=0), datasets.yin_yang("test", size=1000, seed=1)


@pytest.fixture(scope="module")
def model():
    return presets.classifier(4, 3, hidden=64, neuron="single-step", weights="gaussian")


def _first_step(method, model, train):
    x, y = model.check_data(train.x, train.y)
    state = method.init(jax.random.PRNGKey(0), model, x, y)
    batch = Batch(jnp.asarray(x[:BIG_BATCH]), jnp.asarray(y[:BIG_BATCH]), jnp.ones(BIG_BATCH, bool))
    new, info = jax.jit(method.step)(jax.random.PRNGKey(1), state, batch)
    return state, batch, new, info


def _sites(state):
    return {site: np.asarray(leaf) for site, s in state.sites.items() for leaf in s}


@pytest.mark.parametrize("backtrack", [0.25, 0.5])
def test_an_overshooting_step_is_redone_with_a_shorter_damping(data, model, backtrack):
    train, _ = data
    _, batch, new, info = _first_step(SEP(batch_size=BIG_BATCH, backtrack=backtrack), model, train)
    tries = int(info.num_backtracked)
    assert 1 <= tries <= BACKTRACK_TRIES
    # The same update as a plain step with the shortened damping ...
    _, _, plain, plain_info = _first_step(SEP(batch_size=BIG_BATCH, damping=0.5 * backtrack**tries), model, train)
    for site, value in _sites(new).items():
        np.testing.assert_allclose(value, _sites(plain)[site], rtol=1e-5, atol=1e-6, err_msg=site)
    assert int(plain_info.num_backtracked) == 0
    # ... and the first damping on that ladder whose update does not lower the minibatch's log Z.
    method = SEP(batch_size=BIG_BATCH, backtrack=backtrack)
    method.init(jax.random.PRNGKey(0), model, *model.check_data(train.x, train.y))
    mask = batch.mask
    after = float(method._batch_log_lik(new, batch, mask))
    if tries < BACKTRACK_TRIES:
        assert after >= float(info.log_lik)
    _, _, longer, _ = _first_step(SEP(batch_size=BIG_BATCH, damping=0.5 * backtrack ** (tries - 1)), model, train)
    assert float(method._batch_log_lik(longer, batch, mask)) < float(info.log_lik)


def test_a_step_that_does_not_overshoot_is_left_alone(data, model):
    # A short step at a fixed count (during the online start the count grows whatever the damping)
    train, _ = data
    settings = dict(batch_size=BIG_BATCH, damping=0.01, online_start=False)
    _, _, new, info = _first_step(SEP(backtrack=0.25, **settings), model, train)
    _, _, plain, _ = _first_step(SEP(**settings), model, train)
    assert int(info.num_backtracked) == 0
    for site, value in _sites(new).items():
        np.testing.assert_array_equal(value, _sites(plain)[site], err_msg=site)


def test_overshooting_run_warns_and_backtracking_rescues_it(data, model):
    train, test = data
    runs = {}
    for backtrack in (0.0, 0.25):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            post = inference.fit(model, train, SEP(epochs=3, batch_size=BIG_BATCH, backtrack=backtrack),
                                 rng_key=jax.random.PRNGKey(0), progress_bar=False)
        messages = [str(w.message) for w in caught if w.category is RuntimeWarning]
        runs[backtrack] = post, messages, post.evaluate(test, mode="moments")["accuracy"]
    post, messages, accuracy = runs[0.0]
    assert len(messages) == 1 and "training log-likelihood per example fell" in messages[0]
    assert "backtrack=0.25" in messages[0] and np.sum(post.history["num_backtracked"]) == 0
    assert accuracy < 0.45  # chance is 1/3 on Yin-Yang
    post, messages, accuracy = runs[0.25]
    assert messages == [] and np.all(np.asarray(post.history["num_backtracked"]) > 0)
    assert post.history["log_lik"][-1] > post.history["log_lik"][0] and accuracy > 0.6


@pytest.mark.parametrize("log_lik, warns", [
    ([-1.0], False),
    ([-1.0, -0.5, -0.4], False),
    ([-1.0, -0.5, -1.9], False),  # within DIVERGENCE_NATS (1) of the first epoch
    ([-1.0, -0.5, -2.1], True),
    ([-1.0, float("nan")], True),
])
def test_diverging_compares_the_latest_epoch_with_the_first(log_lik, warns):
    message = SEP(damping=0.7, batch_size=64).diverging({"log_lik": log_lik})
    assert (message is not None) == warns
    if warns:
        assert f"from -1 (epoch 1) to {log_lik[-1]:.4g} (epoch {len(log_lik)})" in message
        assert "damping (now 0.7)" in message and "batch_size (now 64)" in message


@pytest.mark.parametrize("value", [-0.1, 1.0, True, float("nan")])
def test_invalid_backtrack_raises(value):
    with pytest.raises(ValueError, match="backtrack must be a number in"):
        SEP(backtrack=value)
