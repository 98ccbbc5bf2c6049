"""The ADF filter's hand-written derivative (subtract reset) against autodiff of the same formulas."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bayes_snn import LIF, StochasticLIF
from bayes_snn.inference import adf


def _autodiff_run(cell, inputs, steps):
    body = adf.step(cell)  # the same formulas, differentiated by JAX
    zero = jnp.zeros(inputs[0].shape[-1])
    inputs = tuple(jnp.broadcast_to(v, (steps,) + v.shape[1:]) for v in inputs)
    return jax.lax.scan(body, (zero, zero, zero), inputs)[1]


def _inputs(t_in: int, n: int, seed: int):
    """Random currents; the first units are deterministic (``var = max(s, c^2)`` and the sqrt floor tie there)."""
    rng = np.random.default_rng(seed)
    mean, static, dyn = rng.normal(0.3, 0.6, (t_in, n)), rng.normal(0, 0.3, (t_in, n)), rng.exponential(0.1, (t_in, n))
    static[:, :20], dyn[:, :40] = 0.0, 0.0
    return tuple(jnp.asarray(v, jnp.float32) for v in (mean, static, dyn))


@pytest.mark.parametrize("cell", [LIF(beta=0.9, threshold=0.5), StochasticLIF(beta=0.8, threshold=0.7, noise=0.3)],
                         ids=["lif", "stochastic"])
@pytest.mark.parametrize("t_in", [1, 10], ids=["constant", "time-varying"])
def test_subtract_filter_and_its_derivative_equal_autodiff(cell, t_in):
    inputs = _inputs(t_in, 200, seed=t_in)
    rng = np.random.default_rng(7)
    weights = tuple(jnp.asarray(rng.normal(size=(10, 200)), jnp.float32) for _ in range(3))
    out = adf.run(cell, inputs, 10)
    ref = _autodiff_run(cell, inputs, 10)
    for a, b in zip(out, ref):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    assert float(jnp.std(out[0])) > 0.1  # spiking and silent units both present
    loss = lambda run, *x: sum(jnp.sum(w * o) for w, o in zip(weights, run(cell, x, 10)))
    grads = jax.grad(lambda *x: loss(adf.run, *x), argnums=(0, 1, 2))(*inputs)
    expected = jax.grad(lambda *x: loss(_autodiff_run, *x), argnums=(0, 1, 2))(*inputs)
    for a, b in zip(grads, expected):
        assert a.shape == b.shape and np.all(np.isfinite(a))
        # float32 rounding of different orderings of the same sums over 10 steps
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4 * float(jnp.max(jnp.abs(b))))
