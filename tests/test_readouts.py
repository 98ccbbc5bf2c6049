"""Readouts against hand-written references: counts, a simulated leaky integrator, first spikes."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bayes_snn import readouts

RNG = np.random.default_rng(0)


def test_spike_count():
    spikes = (RNG.random((7, 3, 4)) < 0.4).astype(np.float32)
    np.testing.assert_array_equal(readouts.SpikeCount()(spikes), spikes.sum(0))
    np.testing.assert_allclose(readouts.SpikeCount(scale=0.25)(spikes), 0.25 * spikes.sum(0))


def simulate_integrator(currents, beta):
    """``V[t] = beta V[t-1] + I[t]`` from ``V[-1] = 0``; returns ``mean_t V[t]``."""
    v = np.zeros(currents.shape[1:])
    total = np.zeros_like(v)
    for t in range(currents.shape[0]):
        v = beta * v + currents[t]
        total += v
    return total / currents.shape[0]


@pytest.mark.parametrize("beta", [0.0, 0.3, 0.9, 1.0])
@pytest.mark.parametrize("steps", [1, 6])
def test_mean_membrane_equals_a_simulated_integrator(beta, steps):
    currents = RNG.normal(0.0, 1.0, (steps, 2, 3))
    readout = readouts.MeanMembrane(beta=beta, scale=1.7)
    expected = 1.7 * simulate_integrator(currents, beta)
    np.testing.assert_allclose(readout(jnp.asarray(currents, jnp.float32)), expected, rtol=1e-5, atol=1e-6)
    # time_weights c[t]: the output is sum_t c[t] I[t]
    c = np.asarray(readout.time_weights(steps))
    assert c.shape == (steps,)
    np.testing.assert_allclose(np.einsum("t,tbc->bc", c, currents), expected, rtol=1e-5, atol=1e-6)


def test_mean_membrane_weights_by_hand():
    # T=3, beta=0.5: mean of V = (I0, 0.5 I0 + I1, 0.25 I0 + 0.5 I1 + I2) / 3
    np.testing.assert_allclose(readouts.MeanMembrane(beta=0.5).time_weights(3), [1.75 / 3, 1.5 / 3, 1 / 3], rtol=1e-6)


def test_first_spike_time():
    spikes = np.zeros((5, 1, 4), np.float32)
    spikes[0, 0, 0] = 1  # first step: t_first = 0
    spikes[[2, 3], 0, 1] = 1  # t_first = 2 (later spikes ignored)
    spikes[4, 0, 2] = 1  # last step: t_first = 4
    # neuron 3 never fires: t_first = T = 5
    out = readouts.FirstSpikeTime(scale=0.5)(spikes)
    np.testing.assert_array_equal(out, -0.5 * np.array([[0.0, 2.0, 4.0, 5.0]]))


def test_first_spike_time_random_against_argmax():
    spikes = (RNG.random((9, 4, 5)) < 0.2).astype(np.float32)
    fired = spikes.any(0)
    t_first = np.where(fired, spikes.argmax(0), 9)
    np.testing.assert_array_equal(readouts.FirstSpikeTime()(spikes), -t_first)


def test_readouts_are_differentiable():
    x = jnp.asarray(RNG.random((4, 2, 3)), jnp.float32)
    for readout in (readouts.SpikeCount(), readouts.MeanMembrane(beta=0.5), readouts.FirstSpikeTime()):
        g = jax.grad(lambda v: readout(v).sum())(x)
        assert g.shape == x.shape and bool(jnp.all(jnp.isfinite(g)))


@pytest.mark.parametrize("cls", [readouts.SpikeCount, readouts.MeanMembrane, readouts.FirstSpikeTime])
@pytest.mark.parametrize("scale", [0.0, -1.0, float("nan"), float("inf")])
def test_bad_scale(cls, scale):
    with pytest.raises(ValueError, match="scale"):
        cls(scale=scale)


@pytest.mark.parametrize("beta", [-0.1, 1.5])
def test_bad_integrator_beta(beta):
    with pytest.raises(ValueError, match="beta"):
        readouts.MeanMembrane(beta=beta)


@pytest.mark.parametrize("cls", [readouts.SpikeCount, readouts.MeanMembrane, readouts.FirstSpikeTime])
def test_input_must_be_time_major(cls):
    with pytest.raises(ValueError, match=r"time-major \[T, B, N\]"):
        cls()(jnp.ones((3, 4)))
