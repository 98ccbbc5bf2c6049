"""Encoders: exact outputs for Direct and Latency, binomial frequencies for Rate."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bayes_snn import encoders

KEY = jax.random.PRNGKey(0)


def test_direct_repeats_the_features():
    x = np.array([[-1.5, 0.0, 2.0], [0.25, 3.0, -0.5]], np.float32)  # any real values
    out = encoders.Direct(steps=4)(x)
    assert out.shape == (4, 2, 3) and out.dtype == jnp.float32
    for t in range(4):
        np.testing.assert_array_equal(out[t], x)


def test_rate_frequencies_match_probabilities():
    # Each of the B*F cells is T independent Bernoulli(p) draws; the frequency must lie
    # within 5 binomial standard errors of p (false alarm ~6e-7 per cell; fixed seed).
    T = 2000
    x = np.array([[0.0, 0.1, 0.5], [0.8, 1.0, 0.33]], np.float32)
    for gain in (1.0, 1.5):
        out = np.asarray(encoders.Rate(steps=T, gain=gain)(x, KEY))
        assert out.shape == (T, 2, 3)
        assert set(np.unique(out)) <= {0.0, 1.0}
        p = np.clip(gain * x.astype(float), 0.0, 1.0)
        se = np.sqrt(p * (1 - p) / T)
        freq = out.mean(axis=0)
        assert np.all(np.abs(freq - p) <= 5 * se), (gain, freq, p)
    # p = 0 and p = 1 are deterministic
    out = np.asarray(encoders.Rate(steps=50, gain=2.0)(x, KEY))
    assert out[:, 0, 0].sum() == 0 and out[:, 1, 0].sum() == 50 and out[:, 1, 1].sum() == 50


def test_rate_is_reproducible_per_key_and_varies_across_keys():
    x = np.full((3, 4), 0.5, np.float32)
    enc = encoders.Rate(steps=20)
    np.testing.assert_array_equal(enc(x, KEY), enc(x, KEY))
    assert not np.array_equal(enc(x, KEY), enc(x, jax.random.PRNGKey(1)))


@pytest.mark.parametrize("steps", [1, 2, 5, 10])
def test_latency_spike_times(steps):
    x = np.array([[0.0, 1.0, 0.5, 0.26, 0.74, 0.9]], np.float32)
    out = np.asarray(encoders.Latency(steps=steps)(x))
    assert out.shape == (steps, 1, 6)
    np.testing.assert_array_equal(out.sum(axis=0), 1.0)  # exactly one spike per feature
    expected = np.round((1.0 - x[0].astype(float)) * (steps - 1))
    np.testing.assert_array_equal(np.argmax(out[:, 0, :], axis=0), expected)
    assert out[0, 0, 1] == 1.0 and out[steps - 1, 0, 0] == 1.0  # x=1 first, x=0 last


def test_encoders_work_under_jit():
    x = jnp.full((2, 3), 0.5)
    for enc in (encoders.Direct(3), encoders.Rate(3), encoders.Latency(3)):
        assert jax.jit(lambda v, k: enc(v, k))(x, KEY).shape == (3, 2, 3)


@pytest.mark.parametrize("enc", [encoders.Direct(3), encoders.Rate(3), encoders.Latency(3)])
@pytest.mark.parametrize("shape", [(4,), (2, 2, 2), ()])
def test_x_must_be_static_features(enc, shape):
    with pytest.raises(ValueError, match="x must"):
        enc(np.full(shape, 0.5, np.float32), KEY)


@pytest.mark.parametrize("enc", [encoders.Rate(3), encoders.Latency(3)])
@pytest.mark.parametrize("value", [-0.1, 1.5])
def test_rate_and_latency_need_unit_interval(enc, value):
    with pytest.raises(ValueError, match=r"x must lie in \[0, 1\]"):
        enc(np.array([[0.5, value]], np.float32), KEY)


def test_rate_needs_a_key():
    with pytest.raises(ValueError, match="rng_key"):
        encoders.Rate(3)(np.zeros((1, 2), np.float32))


@pytest.mark.parametrize("cls", [encoders.Direct, encoders.Rate, encoders.Latency])
@pytest.mark.parametrize("steps", [0, -3, 2.0, True, "4"])
def test_bad_steps(cls, steps):
    with pytest.raises(ValueError, match="steps"):
        cls(steps=steps)


@pytest.mark.parametrize("gain", [0.0, -1.0, float("nan"), float("inf")])
def test_bad_gain(gain):
    with pytest.raises(ValueError, match="gain"):
        encoders.Rate(steps=3, gain=gain)
