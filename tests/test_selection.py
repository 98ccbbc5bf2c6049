"""``inference.select``: held-out choice of a backend setting."""

import jax
import numpy as np
import pytest

from bayes_snn import Classifier, Dense, LIF, Sequential, datasets, encoders, inference, readouts
from bayes_snn.inference.selection import split


@pytest.fixture(scope="module")
def data():
    return datasets.yin_yang("train", size=150)


def _model():
    return Classifier(Sequential(encoders.Direct(4), Dense(12), LIF(), Dense(3), readouts.MeanMembrane()), 3)


def test_split_is_a_random_partition_along_the_example_axis():
    x = np.arange(2 * 10 * 3, dtype=np.float32).reshape(2, 10, 3)  # time-major [T, N, F]
    y = np.arange(10)
    (xf, yf), (xv, yv) = split((x, y), 0.3, jax.random.PRNGKey(0))
    assert xf.shape == (2, 7, 3) and xv.shape == (2, 3, 3)
    assert sorted(np.concatenate([yf, yv]).tolist()) == list(range(10))
    np.testing.assert_array_equal(xv[0, :, 0], x[0, yv, 0])  # rows travel with their labels
    (_, same), (_, other) = split((x, y), 0.3, jax.random.PRNGKey(0))[1], split((x, y), 0.3, jax.random.PRNGKey(1))[1]
    np.testing.assert_array_equal(same, yv)  # the key fixes the split
    assert other.tolist() != yv.tolist()


def test_select_keeps_the_candidate_with_the_lowest_held_out_nll(data):
    model, key = _model(), jax.random.PRNGKey(3)
    choice = inference.select(model, data, inference.SEP(epochs=2), "likelihood_weight", [1.0, 2.0],
                              rng_key=key, num_samples=10)
    assert choice.param == "likelihood_weight" and set(choice.scores) == {1.0, 2.0}
    nll = {v: s["nll"] for v, s in choice.scores.items()}
    assert choice.best == min(nll, key=nll.get)
    # The score is the held-out NLL of a fit on the rest: reproduce the chosen candidate's.
    k_split, k_fit, k_eval = jax.random.split(key, 3)
    fit_part, valid_part = split(data, 0.2, k_split)
    post = inference.fit(model, fit_part, inference.SEP(epochs=2, likelihood_weight=choice.best), rng_key=k_fit,
                         progress_bar=False)
    again = post.evaluate(valid_part, k_eval, num_samples=10)
    assert again["nll"] == pytest.approx(nll[choice.best], rel=1e-5)


def test_select_chooses_several_settings_jointly(data):
    model, key = _model(), jax.random.PRNGKey(4)
    pairs = [(1.0, 16), (2.0, 16), (1.0, 32)]
    choice = inference.select(model, data, inference.SEP(epochs=2), ("likelihood_weight", "batch_size"), pairs,
                              rng_key=key, num_samples=10)
    assert choice.param == ("likelihood_weight", "batch_size") and list(choice.scores) == pairs
    nll = {v: s["nll"] for v, s in choice.scores.items()}
    assert choice.best == min(nll, key=nll.get)
    assert len(set(nll.values())) == 3  # each candidate is a different fit
    # Each score belongs to a fit with both settings applied: reproduce one that is not the first.
    k_split, k_fit, k_eval = jax.random.split(key, 3)
    fit_part, valid_part = split(data, 0.2, k_split)
    post = inference.fit(model, fit_part, inference.SEP(epochs=2, likelihood_weight=2.0, batch_size=16),
                         rng_key=k_fit, progress_bar=False)
    assert post.evaluate(valid_part, k_eval, num_samples=10)["nll"] == pytest.approx(nll[(2.0, 16)], rel=1e-5)


@pytest.mark.parametrize(
    "method, param, values, kwargs, match",
    [
        (inference.SEP(epochs=1), "learning_rate", [0.1], {}, "param must be a field of SEP"),
        (inference.SEP(epochs=1), "damping", [], {}, "non-empty sequence of distinct"),
        (inference.SEP(epochs=1), "damping", [0.5, 0.5], {}, "non-empty sequence of distinct"),
        (inference.SEP(epochs=1), "damping", [0.5, 2.0], {}, "damping"),
        (inference.SEP(epochs=1), "damping", [0.5], {"valid_fraction": 1.0}, "valid_fraction"),
        (inference.SEP(epochs=1), "damping", [0.5], {"valid_fraction": 0.001}, "valid_fraction"),
        ("sep", "damping", [0.5], {}, "method must be a backend"),
        (inference.SEP(epochs=1), ("damping", "batch_size"), [(0.5, 16), 0.5], {}, "one tuple of 2 values"),
        (inference.SEP(epochs=1), ("damping", "batch_size"), [(0.5,)], {}, "one tuple of 2 values"),
        (inference.SEP(epochs=1), ("damping", "damping"), [(0.5, 0.5)], {}, "distinct fields"),
        (inference.SEP(epochs=1), (), [()], {}, "distinct fields"),
        (inference.SEP(epochs=1), ("damping", "rate"), [(0.5, 1)], {}, "param must be a field of SEP.*'rate'"),
        (inference.SEP(epochs=1), ("damping", "batch_size"), [(0.5, 16), [0.5, 16]], {}, "distinct candidates"),
        (inference.SEP(epochs=1), ("damping", "batch_size"), [(0.5, 0)], {}, "batch_size"),
    ],
)
def test_bad_arguments_raise_clear_errors(data, method, param, values, kwargs, match):
    with pytest.raises(ValueError, match=match):
        inference.select(_model(), data, method, param, values, rng_key=jax.random.PRNGKey(0), **kwargs)
