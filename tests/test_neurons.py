"""Exact tests of the neuron dynamics against hand-written NumPy recursions.

The references below are the contract equations of ``bayes_snn.neurons`` written out in
float64 NumPy, step by step. Inputs are random, so a spike decision can in principle sit
within float32 rounding of the threshold; such draws are rejected (``assume``) instead of
loosening the comparison: everywhere else spikes must agree exactly.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from bayes_snn import surrogates
from bayes_snn.neurons import LIF, CuBaLIF, SpikeResponse, StochasticLIF, heaviside

# A membrane within this distance of the threshold could flip between float32 and float64.
MARGIN = 1e-4
HYPO = settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def reference_lif(currents, beta, threshold, reset):
    """Contract recursion from ``V[-1] = S[-1] = 0``; returns spikes, membranes, min margin."""
    T, B, N = currents.shape
    beta = np.broadcast_to(np.asarray(beta, float), (N,))
    threshold = np.broadcast_to(np.asarray(threshold, float), (N,))
    v, s = np.zeros((B, N)), np.zeros((B, N))
    spikes, mem = np.zeros((T, B, N)), np.zeros((T, B, N))
    margin = np.inf
    for t in range(T):
        if reset == "subtract":
            v = beta * v + currents[t] - threshold * s
        elif reset == "zero":
            v = beta * (1.0 - s) * v + currents[t]
        else:
            v = beta * v + currents[t]
        margin = min(margin, float(np.min(np.abs(v - threshold))))
        s = (v > threshold).astype(float)
        spikes[t], mem[t] = s, v
    return spikes, mem, margin


def reference_cuba(currents, alpha, beta, threshold, reset):
    """``i[t] = alpha i[t-1] + I[t]``, then the LIF recursion driven by ``i``."""
    syn = np.zeros_like(currents)
    i = np.zeros(currents.shape[1:])
    for t in range(currents.shape[0]):
        i = alpha * i + currents[t]
        syn[t] = i
    return reference_lif(syn, beta, threshold, reset)


def _draw(seed, shape, per_neuron):
    T, B, N = shape
    rng = np.random.default_rng(seed)
    currents = rng.normal(0.6, 0.8, size=(T, B, N))
    if per_neuron:
        beta = rng.uniform(0.0, 1.0, size=N)
        threshold = rng.uniform(0.3, 1.5, size=N)
    else:
        beta, threshold = float(rng.uniform(0.0, 1.0)), float(rng.uniform(0.3, 1.5))
    return currents, beta, threshold


# Parameters are traced arguments of one jitted runner per reset mode, and shapes come
# from a short list, so hypothesis' examples reuse a handful of compilations.
@functools.lru_cache(maxsize=None)
def _runner(kind, reset):
    if kind == "lif":
        return jax.jit(lambda c, beta, thr: LIF(beta=beta, threshold=thr, reset=reset).run(c))
    return jax.jit(lambda c, alpha, beta, thr: CuBaLIF(alpha=alpha, beta=beta, threshold=thr, reset=reset).run(c))


def _f32(a):
    return jnp.asarray(a, jnp.float32)


cases = dict(
    seed=st.integers(0, 2**31 - 1),
    shape=st.sampled_from([(1, 1, 1), (4, 3, 1), (11, 2, 4)]),
    per_neuron=st.booleans(),
    reset=st.sampled_from(["subtract", "zero", "none"]),
)


@HYPO
@given(**cases)
def test_lif_matches_recursion(seed, shape, per_neuron, reset):
    currents, beta, threshold = _draw(seed, shape, per_neuron)
    ref_s, ref_v, margin = reference_lif(currents, beta, threshold, reset)
    assume(margin > MARGIN)
    spikes, mem = _runner("lif", reset)(_f32(currents), _f32(beta), _f32(threshold))
    assert spikes.shape == mem.shape == shape
    np.testing.assert_array_equal(np.asarray(spikes), ref_s)
    np.testing.assert_allclose(np.asarray(mem), ref_v, rtol=1e-5, atol=1e-5)


@HYPO
@given(**cases, alpha=st.floats(0.0, 1.0))
def test_cuba_matches_recursion(seed, shape, per_neuron, reset, alpha):
    currents, beta, threshold = _draw(seed, shape, per_neuron)
    ref_s, ref_v, margin = reference_cuba(currents, alpha, beta, threshold, reset)
    assume(margin > MARGIN)
    spikes, mem = _runner("cuba", reset)(_f32(currents), _f32(alpha), _f32(beta), _f32(threshold))
    np.testing.assert_array_equal(np.asarray(spikes), ref_s)
    np.testing.assert_allclose(np.asarray(mem), ref_v, rtol=1e-5, atol=1e-5)


def test_lif_matches_recursion_with_concrete_parameters():
    # The hypothesis tests trace beta/threshold; this runs the eager, validated path.
    currents, beta, threshold = _draw(11, (9, 2, 3), per_neuron=True)
    for reset in ("subtract", "zero", "none"):
        ref_s, ref_v, margin = reference_lif(currents, beta, threshold, reset)
        assert margin > MARGIN
        spikes, mem = LIF(beta=beta, threshold=threshold, reset=reset).run(_f32(currents))
        np.testing.assert_array_equal(np.asarray(spikes), ref_s)
        np.testing.assert_allclose(np.asarray(mem), ref_v, rtol=1e-5, atol=1e-5)


def test_lif_hand_computed_trace():
    # beta=0.5, threshold=1, constant input 0.75 (subtract reset; all values exact in
    # binary floating point), by hand: V = 0.75, 1.125 (spike), 0.5625 + 0.75 - 1 = 0.3125,
    # 0.90625, 1.203125 (spike)
    spikes, mem = LIF(beta=0.5, threshold=1.0).run(jnp.full((5, 1, 1), 0.75))
    assert spikes[:, 0, 0].tolist() == [0.0, 1.0, 0.0, 0.0, 1.0]
    assert mem[:, 0, 0].tolist() == [0.75, 1.125, 0.3125, 0.90625, 1.203125]


def test_threshold_is_strict():
    spikes, _ = LIF(beta=0.0, threshold=1.0).run(jnp.ones((3, 1, 1)))
    assert float(spikes.sum()) == 0.0


def test_step_by_step_equals_run():
    currents, beta, threshold = _draw(3, (6, 2, 3), per_neuron=True)
    neuron = CuBaLIF(alpha=0.7, beta=beta, threshold=threshold)
    currents = jnp.asarray(currents, jnp.float32)
    run_s, run_v = neuron.run(currents)
    state = neuron.init_state((2, 3))
    for t in range(6):
        s, state = neuron.step(state, currents[t])
        np.testing.assert_array_equal(s, run_s[t])
        np.testing.assert_allclose(state.v, run_v[t], rtol=1e-6)


def test_step_overrides_equal_replaced_neuron():
    currents, beta, threshold = _draw(4, (1, 2, 3), per_neuron=True)
    base = LIF(beta=0.9, threshold=1.0)
    state = base.init_state((2, 3))
    i0 = jnp.asarray(currents[0], jnp.float32)
    s1, st1 = base.step(state, i0, beta=jnp.asarray(beta), threshold=jnp.asarray(threshold))
    s2, st2 = base.replace(beta=beta, threshold=threshold).step(state, i0)
    np.testing.assert_array_equal(s1, s2)
    np.testing.assert_array_equal(st1.v, st2.v)
    assert base.replace(threshold=2.0) == LIF(beta=0.9, threshold=2.0)


def test_membrane_noise_is_added_to_the_input():
    # V[t] = beta V[t-1] + I[t] + eps[t] - ...: noise enters exactly like extra input current.
    rng = np.random.default_rng(5)
    currents = jnp.asarray(rng.normal(0.5, 1.0, (8, 2, 3)), jnp.float32)
    noise = jnp.asarray(rng.normal(0.0, 0.3, (8, 2, 3)), jnp.float32)
    for reset in ("subtract", "zero", "none"):
        neuron = LIF(beta=0.8, reset=reset)
        s1, v1 = neuron.run(currents, noise=noise)
        s2, v2 = neuron.run(currents + noise)
        np.testing.assert_array_equal(s1, s2)
        np.testing.assert_allclose(v1, v2, atol=1e-6)


def test_spike_response_is_a_strict_threshold_per_step():
    rng = np.random.default_rng(0)
    currents = rng.normal(0.0, 1.0, (6, 4, 5)).astype(np.float32)
    currents[0, 0, :] = 0.0  # exactly at the default threshold 0: no spike (strict)
    spikes, mem = SpikeResponse().run(jnp.asarray(currents))
    np.testing.assert_array_equal(spikes, (currents > 0).astype(np.float32))
    np.testing.assert_array_equal(mem, currents)  # no leak, no reset, no memory
    thr = np.linspace(-0.5, 0.5, 5).astype(np.float32)
    spikes, _ = SpikeResponse(threshold=thr).run(jnp.asarray(currents))
    np.testing.assert_array_equal(spikes, (currents > thr).astype(np.float32))


def test_stochastic_lif_fires_with_sigmoid_probability():
    # With reset="none" the membrane is deterministic, V[t] = I (1 - beta^(t+1)) / (1 - beta),
    # so every step's spike is Bernoulli(sigmoid((V[t] - thr) / noise)) independently of the
    # past. Frequencies over B independent rows must match within 5 binomial standard
    # errors (two-sided false-alarm rate ~6e-7 per cell; 24 cells; the seed is fixed).
    T, B, beta, thr, noise = 6, 4000, 0.5, 1.0, 0.3
    drive = jnp.array([0.2, 0.45, 0.5, 0.8], jnp.float32)
    currents = jnp.broadcast_to(drive, (T, B, 4))
    neuron = StochasticLIF(beta=beta, threshold=thr, reset="none", noise=noise)
    spikes, mem = jax.jit(lambda c, k: neuron.run(c, rng_key=k))(currents, jax.random.PRNGKey(0))
    t = np.arange(T)[:, None]
    v = np.asarray(drive)[None] * (1 - beta ** (t + 1)) / (1 - beta)
    np.testing.assert_allclose(mem[:, 0, :], v, rtol=1e-5)
    p = 1.0 / (1.0 + np.exp(-(v - thr) / noise))
    freq = np.asarray(spikes).mean(axis=1)
    se = np.sqrt(p * (1 - p) / B)
    assert np.all(np.abs(freq - p) < 5 * se + 1e-9), (freq, p)
    assert 0.05 < p.min() and p.max() < 0.95  # the check is informative at every cell


def test_stochastic_lif_needs_a_key():
    with pytest.raises(ValueError, match="rng_key"):
        StochasticLIF().run(jnp.ones((2, 1, 1)))


def test_detach_reset_changes_gradients_not_spikes():
    currents = jnp.asarray(np.random.default_rng(1).normal(0.8, 0.5, (10, 1, 3)), jnp.float32)
    spike_fn = surrogates.fast_sigmoid()

    def total_membrane(c, detach):
        return LIF(beta=0.9, detach_reset=detach).run(c, spike_fn=spike_fn)[1].sum()

    s_a, _ = LIF(detach_reset=True).run(currents, spike_fn=spike_fn)
    s_b, _ = LIF(detach_reset=False).run(currents, spike_fn=spike_fn)
    np.testing.assert_array_equal(s_a, s_b)
    g_detached = jax.grad(total_membrane)(currents, True)
    g_attached = jax.grad(total_membrane)(currents, False)
    # Detached: V is linear in I with d sum V / d I[u] = sum_{t>=u} beta^(t-u) exactly.
    T = currents.shape[0]
    expected = np.array([sum(0.9**k for k in range(T - u)) for u in range(T)])
    np.testing.assert_allclose(g_detached[:, 0, 0], expected, rtol=1e-5)
    assert not np.allclose(g_detached, g_attached)


def test_heaviside_has_zero_gradient():
    assert float(jax.grad(lambda x: heaviside(x))(0.3)) == 0.0
    assert heaviside(jnp.array([-1.0, 0.0, 1e-6])).tolist() == [0.0, 0.0, 1.0]


@pytest.mark.parametrize(
    "make, arg",
    [
        (lambda: LIF(beta=1.5), "beta"),
        (lambda: LIF(beta=-0.1), "beta"),
        (lambda: LIF(beta=np.array([0.5, 1.2])), "beta"),
        (lambda: LIF(beta=np.ones((2, 2)) * 0.5), "beta"),
        (lambda: LIF(beta=float("nan")), "beta"),
        (lambda: LIF(threshold=0.0), "threshold"),
        (lambda: LIF(threshold=-1.0), "threshold"),
        (lambda: LIF(threshold=np.array([1.0, 0.0])), "threshold"),
        (lambda: LIF(threshold=float("inf")), "threshold"),
        (lambda: LIF(reset="hard"), "reset"),
        (lambda: CuBaLIF(alpha=1.1), "alpha"),
        (lambda: StochasticLIF(noise=0.0), "noise"),
        (lambda: SpikeResponse(beta=0.5), "beta"),
        (lambda: SpikeResponse(reset="subtract"), "reset"),
        (lambda: LIF().replace(beta=2.0), "beta"),
    ],
)
def test_invalid_neuron_parameters(make, arg):
    with pytest.raises(ValueError, match=arg):
        make()


@pytest.mark.parametrize("shape", [(4, 3), (2, 4, 3, 1), ()])
def test_currents_must_be_time_major(shape):
    with pytest.raises(ValueError, match="currents"):
        LIF().run(jnp.ones(shape))
