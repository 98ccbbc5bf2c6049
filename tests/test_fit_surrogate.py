"""``fit`` with the surrogate-gradient backend: learning, discrete weights, masks, checkpoints."""

from __future__ import annotations

import dataclasses
import importlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bayes_snn import Classifier, Dense, Sequential, datasets, encoders, inference, presets, priors, readouts
from bayes_snn.datasets.batching import Batch
from bayes_snn.inference.checkpoint import save_checkpoint
from bayes_snn.neurons import LIF

KEY = jax.random.PRNGKey(0)
TRAIN = datasets.yin_yang("train", size=500)
TEST = datasets.yin_yang("test", size=500)
SMALL = datasets.yin_yang("train", size=60)


def test_learns_yin_yang():
    # Measured test accuracy of this configuration (500 train / 500 test points, seeds 0-5):
    # 0.838, 0.830, 0.812, 0.796, 0.844, 0.844. Chance is 0.33 and logistic regression on
    # the same split reaches 0.694, so > 0.75 shows non-linear learning while leaving
    # 0.046 below the worst seed (the accuracy's sampling s.e. on 500 points is ~0.017).
    model = presets.classifier(4, 3, hidden=32, steps=8)
    method = inference.SurrogateGradient(epochs=15, batch_size=25, learning_rate=0.05)
    post = inference.fit(model, TRAIN, method, rng_key=KEY, progress_bar=False)
    metrics = post.evaluate(TEST)
    assert metrics["accuracy"] > 0.75, metrics
    assert post.method == "surrogate" and post.is_point_estimate
    assert set(post.history) == {"loss", "seconds"} and len(post.history["loss"]) == 15
    assert post.history["loss"][-1] < post.history["loss"][0]


def test_discrete_priors_give_weights_on_the_support():
    # One network with a different discrete prior in each layer (one compilation for all).
    layer_priors = {"dense_0": priors.Binary(0.5), "dense_1": priors.Ternary(1.0, 0.5), "dense_2": priors.IntegerGrid(3, 0.2)}
    net = Sequential(
        encoders.Direct(4),
        Dense(8, prior=layer_priors["dense_0"]),
        LIF(),
        Dense(8, prior=layer_priors["dense_1"]),
        LIF(),
        Dense(3, prior=layer_priors["dense_2"]),
        readouts.MeanMembrane(scale=5.0),
    )
    post = inference.fit(Classifier(net, 3), SMALL, inference.SurrogateGradient(epochs=2, batch_size=32), rng_key=KEY,
                         progress_bar=False)
    for layer, prior in layer_priors.items():
        support = set(np.asarray(prior.values).tolist())
        w = np.asarray(post.weights[f"{layer}.weight"].v)
        assert set(np.unique(w).tolist()) <= support, layer
        assert len(np.unique(w)) >= 2, layer  # not collapsed onto a single level
        # biases keep their continuous Normal prior
        assert not set(np.unique(np.asarray(post.weights[f"{layer}.bias"].v)).tolist()) <= support


def _tiny(hidden=8):
    # The tests share these shapes, so eager operations (e.g. prior draws) compile once.
    return presets.classifier(4, 3, hidden=hidden, steps=3)


def test_padded_examples_do_not_affect_the_update():
    # The last minibatch is padded; the padding's content must change neither the loss,
    # nor its gradient, nor the step (Adam's first step is nearly sign(gradient), so the
    # gradient is compared too).
    method = inference.SurrogateGradient(epochs=1, batch_size=8)
    model = _tiny()
    x, y = model.check_data(SMALL.x[:8], SMALL.y[:8])
    state = method.init(KEY, model, x, y)
    mask = jnp.array([True] * 5 + [False] * 3)
    other_x, other_y = x.copy(), y.copy()
    other_x[5:] = 1.0 - other_x[5:]
    other_y[5:] = (other_y[5:] + 1) % 3
    real = Batch(jnp.asarray(x), jnp.asarray(y), mask)
    padded = Batch(jnp.asarray(other_x), jnp.asarray(other_y), mask)
    unmasked = Batch(jnp.asarray(other_x), jnp.asarray(other_y), jnp.ones(8, bool))
    grad = jax.jit(jax.value_and_grad(method.loss))  # one compilation for the three batches
    (l1, g1), (l2, g2), (l3, g3) = (grad(state.params, b, KEY) for b in (real, padded, unmasked))
    assert float(l1) == float(l2) and float(l1) != float(l3)
    jax.tree_util.tree_map(np.testing.assert_array_equal, g1, g2)
    assert not np.allclose(g1["dense_1.weight"], g3["dense_1.weight"])
    step = jax.jit(method.step)
    s1, _ = step(KEY, state, real)
    s2, _ = step(KEY, state, padded)
    jax.tree_util.tree_map(np.testing.assert_array_equal, s1.params, s2.params)


def _resume_and_compare(tmp_path, method, first):
    path = tmp_path / "loop.npz"
    model = _tiny()
    first(model, path)
    assert path.exists()
    resumed = inference.fit(model, SMALL, method, rng_key=KEY, progress_bar=False, checkpoint=path)
    straight = inference.fit(model, SMALL, method, rng_key=KEY, progress_bar=False)
    for site in straight.weights:
        np.testing.assert_array_equal(resumed.weights[site].v, straight.weights[site].v)
    np.testing.assert_array_equal(resumed.history["loss"], straight.history["loss"])
    assert len(resumed.history["seconds"]) == 4


def test_checkpoint_continue_to_more_epochs(tmp_path):
    # 2 epochs, then continue to 4 from the checkpoint == 4 epochs straight. A constant
    # learning rate: the default cosine schedule depends on the total number of epochs.
    method = lambda epochs: inference.SurrogateGradient(epochs=epochs, batch_size=16, schedule="constant")

    def first(model, path):
        two = inference.fit(model, SMALL, method(2), rng_key=KEY, progress_bar=False, checkpoint=path)
        assert len(two.history["loss"]) == 2

    _resume_and_compare(tmp_path, method(4), first)


class _Crash(Exception):
    pass


def test_checkpoint_resumes_an_interrupted_run(tmp_path, monkeypatch):
    # A 4-epoch run (default cosine schedule) dies right after writing its epoch-2 checkpoint;
    # rerunning the same call finishes it exactly as an uninterrupted run would.
    # the package attribute ``inference.fit`` is the function; the module is in sys.modules
    fit_module = importlib.import_module("bayes_snn.inference.fit")
    method = inference.SurrogateGradient(epochs=4, batch_size=16)

    def first(model, path):
        real_save = fit_module.save_checkpoint

        def save_then_crash(path, state, epoch, *args):
            real_save(path, state, epoch, *args)
            if epoch == 2:
                raise _Crash

        monkeypatch.setattr(fit_module, "save_checkpoint", save_then_crash)
        with pytest.raises(_Crash):
            inference.fit(model, SMALL, method, rng_key=KEY, progress_bar=False, checkpoint=path)
        monkeypatch.setattr(fit_module, "save_checkpoint", real_save)

    _resume_and_compare(tmp_path, method, first)


def test_mismatched_checkpoint_raises(tmp_path):
    path = tmp_path / "loop.npz"
    method = inference.SurrogateGradient(epochs=1, batch_size=16)
    post = inference.fit(_tiny(hidden=8), SMALL, method, rng_key=KEY, checkpoint=path)  # with a progress bar
    assert len(post.history["loss"]) == 1
    with pytest.raises(ValueError, match="state array"):
        inference.fit(_tiny(hidden=9), SMALL, method, rng_key=KEY, progress_bar=False, checkpoint=path)
    other = tmp_path / "other.npz"
    state = method.init(KEY, _tiny(), *_tiny().check_data(SMALL.x, SMALL.y))
    save_checkpoint(other, state, 1, KEY, "sep", {})
    with pytest.raises(ValueError, match="method 'sep'"):
        inference.fit(_tiny(), SMALL, method, rng_key=KEY, progress_bar=False, checkpoint=other)
    junk = tmp_path / "junk.npz"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="not a valid bayes_snn checkpoint"):
        inference.fit(_tiny(), SMALL, method, rng_key=KEY, progress_bar=False, checkpoint=junk)


BAD_X = np.where(SMALL.x > 0.9, np.nan, SMALL.x)


@pytest.mark.parametrize(
    "data, match",
    [
        ((BAD_X, SMALL.y), "x must be finite"),
        ((np.where(SMALL.x > 0.9, np.inf, SMALL.x), SMALL.y), "x must be finite"),
        ((SMALL.x[None], SMALL.y), r"x must be static features"),
        ((SMALL.x[:, 0], SMALL.y), "x must have ndim"),
        ((SMALL.x, SMALL.y + 1), r"y must hold integer class labels in \[0, 3\)"),
        ((SMALL.x, SMALL.y.astype(np.float32)), "y must hold integer class labels"),
        ((SMALL.x, SMALL.y[:-2]), r"y must have shape \[60\]"),
        (SMALL.x, "data must be"),
    ],
)
def test_fit_rejects_bad_data(data, match):
    with pytest.raises(ValueError, match=match):
        inference.fit(_tiny(), data, inference.SurrogateGradient(epochs=1), rng_key=KEY, progress_bar=False)


def test_fit_rejects_a_key_that_is_not_a_prng_key():
    with pytest.raises(ValueError, match="rng_key must be a JAX PRNG key such as jax.random.PRNGKey\\(0\\); got int 0"):
        inference.fit(_tiny(), SMALL, inference.SurrogateGradient(epochs=1), rng_key=0, progress_bar=False)


@pytest.mark.parametrize(
    "kwargs, arg",
    [
        (dict(epochs=0), "epochs"),
        (dict(epochs=1.5), "epochs"),
        (dict(batch_size=0), "batch_size"),
        (dict(learning_rate=-1.0), "learning_rate"),
        (dict(schedule="linear"), "schedule"),
        (dict(surrogate="relu"), "surrogate"),
        (dict(slope=0.0), "slope"),
    ],
)
def test_bad_trainer_settings(kwargs, arg):
    with pytest.raises(ValueError, match=arg):
        inference.SurrogateGradient(**kwargs)


def test_fit_rejects_a_non_backend():
    @dataclasses.dataclass(frozen=True)
    class NotABackend:
        epochs: int = 1

    with pytest.raises(ValueError, match="method"):
        inference.fit(_tiny(), SMALL, NotABackend(), rng_key=KEY, progress_bar=False)


def test_callback_sees_every_epochs_posterior():
    # The posterior handed over after each epoch is the one fit returns after that many epochs.
    method = lambda epochs: inference.SurrogateGradient(epochs=epochs, batch_size=16, schedule="constant")
    seen = []
    full = inference.fit(_tiny(), SMALL, method(3), rng_key=KEY, progress_bar=False,
                         callback=lambda epoch, post: seen.append((epoch, post)))
    assert [epoch for epoch, _ in seen] == [0, 1, 2]
    two = inference.fit(_tiny(), SMALL, method(2), rng_key=KEY, progress_bar=False)
    for site in full.weights:
        np.testing.assert_array_equal(seen[1][1].weights[site].v, two.weights[site].v)
        np.testing.assert_array_equal(seen[2][1].weights[site].v, full.weights[site].v)
    assert len(seen[1][1].history["loss"]) == 2


def test_fit_rejects_a_callback_that_is_not_callable():
    with pytest.raises(ValueError, match="callback must be a function called as callback\\(epoch, posterior\\); got 3"):
        inference.fit(_tiny(), SMALL, inference.SurrogateGradient(epochs=1), rng_key=KEY, progress_bar=False,
                      callback=3)
