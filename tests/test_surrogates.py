"""Surrogate spike functions: Heaviside forward value, documented derivative backward."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bayes_snn import surrogates
from bayes_snn.neurons import LIF, heaviside

POINTS = np.array([-2.0, -0.5, -0.07, -1e-3, 0.0, 1e-3, 0.07, 0.5, 2.0], np.float32)


def _sigmoid(z):
    return 1.0 / (1.0 + np.exp(-z))


# The formulas as written in each factory's docstring, in float64 NumPy.
FORMULAS = {
    "fast_sigmoid": lambda x, k: 1.0 / (1.0 + k * np.abs(x)) ** 2,
    "arctan": lambda x, k: 1.0 / (1.0 + (np.pi / 2 * k * x) ** 2),
    "sigmoid": lambda x, k: 4.0 * _sigmoid(k * x) * _sigmoid(-k * x),
    "triangle": lambda x, k: np.maximum(0.0, 1.0 - k * np.abs(x)),
}
DEFAULT_SLOPES = {"fast_sigmoid": 25.0, "arctan": 2.0, "sigmoid": 25.0, "triangle": 1.0}


def test_every_surrogate_has_a_formula():
    assert set(FORMULAS) == set(surrogates.SURROGATES)


@pytest.mark.parametrize("name", sorted(FORMULAS))
@pytest.mark.parametrize("slope", [None, 0.7, 10.0])
def test_value_is_heaviside_and_gradient_is_the_formula(name, slope):
    f = surrogates.get(name, slope)
    k = DEFAULT_SLOPES[name] if slope is None else slope
    x = jnp.asarray(POINTS)
    np.testing.assert_array_equal(f(x), (POINTS > 0).astype(np.float32))
    grads = jax.vmap(jax.grad(f))(x)
    np.testing.assert_allclose(grads, FORMULAS[name](POINTS.astype(float), k), rtol=1e-5, atol=1e-7)


def test_peak_derivatives():
    # fast_sigmoid, arctan and sigmoid peak at 1 at x = 0 (as documented); triangle too.
    for name in FORMULAS:
        assert float(jax.grad(surrogates.get(name))(0.0)) == pytest.approx(1.0, rel=1e-6)


def test_surrogate_leaves_the_simulation_unchanged_and_makes_it_differentiable():
    currents = jnp.asarray(np.random.default_rng(0).normal(0.6, 0.6, (12, 2, 3)), jnp.float32)
    neuron = LIF(beta=0.8)
    exact, _ = neuron.run(currents)
    spike_fn = surrogates.arctan()
    surrogate, _ = neuron.run(currents, spike_fn=spike_fn)
    np.testing.assert_array_equal(exact, surrogate)
    count = lambda c, fn: neuron.run(c, spike_fn=fn)[0].sum()
    assert float(jnp.abs(jax.grad(count)(currents, spike_fn)).sum()) > 0
    assert float(jnp.abs(jax.grad(count)(currents, heaviside)).sum()) == 0


def test_unknown_name():
    with pytest.raises(ValueError, match="surrogate"):
        surrogates.get("relu")


@pytest.mark.parametrize("slope", [0.0, -1.0, float("nan"), float("inf"), "25"])
def test_bad_slope(slope):
    with pytest.raises(ValueError, match="slope"):
        surrogates.get("fast_sigmoid", slope)
