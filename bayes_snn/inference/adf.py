"""Assumed-density filtering (ADF) of a LIF-type neuron over time, and its derivative.

Each step, the membrane ``V ~ N(mu, var)`` with ``Cov(V, z) = c`` (``z`` the unit's static
standard normal, see ``moments``) receives the current ``I = mu_i + k_i z + e``,
``Var e = dyn_i``; the neuron spikes with ``S = 1[V + eta > theta]`` (``eta ~ N(0,
noise_var)``: escape noise) and resets; the membrane after the step is projected back onto
a Gaussian with the exact mean, variance and covariance with ``z`` of the thresholded
mixture. ``run(cell, (mu_i, k_i, dyn_i), steps)`` returns the spike's probability ``p``,
static deviation ``kappa = Cov(S, z)`` and ``p (1 - p)`` at every step, ``[T, N]`` each.

For the subtract reset (the default ``LIF``) the filter's derivative is written out
(``_subtract_filter``): SEP differentiates every example through every step, and reverse
mode through the scan stores ten intermediates per step, whose buffers cost more than the
arithmetic on CPU (Yin-Yang LIF, the whole network: the derivative pass took 3.6x the
moment pass's time, now 2.3x). It equals autodiff of the same formulas (tested),
including JAX's split of ``max`` ties.

Example
-------
>>> import jax.numpy as jnp
>>> from bayes_snn.neurons import LIF
>>> p, kappa, pq = run(LIF(0.9, 1.0), (jnp.array([[0.5, 2.0]]), jnp.zeros((1, 2)), jnp.zeros((1, 2))), steps=3)
>>> p.tolist()
[[0.0, 1.0], [0.0, 1.0], [1.0, 1.0]]
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.special import erfc

from .. import neurons as nrn

# Variances below this are treated as zero; keeps sqrt and its derivative finite.
TINY = 1e-10
# sigmoid(x) ~ Phi(sqrt(pi/8) x): escape noise of scale s acts like Gaussian noise of
# variance s^2 * 8/pi on the membrane.
PROBIT_VAR = 8.0 / np.pi
SQRT_HALF = 0.7071067811865476
INV_SQRT_2PI = 0.3989422804014327


def safe_sqrt(x):
    return jnp.sqrt(jnp.maximum(x, TINY))


def threshold(mu, var, theta, noise_var):
    """Spike statistics of ``S = 1[V + eta > theta]``, ``V ~ N(mu, var)``, ``eta ~ N(0, noise_var)``.

    Returns ``p``, ``p(1-p)``, ``phi(a)/tau`` (density of ``V + eta`` at ``theta``), ``tau``, ``a``.
    Safe tails: the smaller of ``p`` and ``1 - p`` is ``erfc`` of ``|a|``, so it keeps full
    relative precision far out in the tail (``p (1 - p)`` never cancels to a spurious 0);
    one ``erfc`` costs less than half of ``log_ndtr`` here and no quantity needs ``log p``.
    """
    tau, a, dens = _standardised(mu, var, theta, noise_var)
    tail = 0.5 * erfc(jnp.abs(a) * SQRT_HALF)  # the smaller of p and 1 - p, to full precision
    p = jnp.where(a > 0, 1.0 - tail, tail)
    q = jnp.where(a > 0, tail, 1.0 - tail)
    return p, p * q, dens, tau, a


def _standardised(mu, var, theta, noise_var):
    """``tau = sd(V + eta)``, ``a = (mu - theta) / tau`` and the density ``phi(a) / tau``."""
    tau = safe_sqrt(var + noise_var)
    a = (mu - theta) / tau
    return tau, a, jnp.exp(-0.5 * a**2) * INV_SQRT_2PI / tau


def constants(cell):
    """``(beta, theta, noise_var)`` as NumPy values: the derivative closes over them, and jnp
    values would be traced under jit."""
    beta, theta = np.asarray(cell.beta, np.float32), np.asarray(cell.threshold, np.float32)
    noise_var = PROBIT_VAR * cell.noise**2 if isinstance(cell, nrn.StochasticLIF) else 0.0
    return beta, theta, np.float32(noise_var)


def step(cell):
    """The ADF step of ``cell`` (``LIF``, ``StochasticLIF`` or ``SpikeResponse``), differentiable by autodiff."""
    beta, theta, noise_var = constants(cell)
    return lambda carry, current: _generic(cell.reset, beta, theta, noise_var, carry, current)


def run(cell, inputs: tuple, steps: int) -> tuple:
    """``(p, kappa, pq)`` ``[T, N]`` of a neuron driven by ``inputs = (mu_i, k_i, dyn_i)``, each
    ``[T_in, N]`` with ``T_in`` 1 (a current constant in time) or ``steps``."""
    if steps > 1 and cell.reset == "subtract":
        return _subtract_filter(*constants(cell), steps)(*inputs)
    body = step(cell)
    if steps == 1:  # the single-step model: no loop to compile or run
        zero = jnp.zeros(inputs[0].shape[-1], jnp.float32)
        return tuple(v[None] for v in body((zero, zero, zero), tuple(v[0] for v in inputs))[1])
    return _scan(body, inputs, steps)


def _scan(body, inputs: tuple, steps: int):
    """Outputs of ``body(membrane, current) -> (membrane, out)`` over ``steps`` from a resting membrane."""
    const, xs = _split(inputs)
    zero = jnp.zeros(inputs[0].shape[-1], jnp.float32)
    return jax.lax.scan(lambda carry, x: body(carry, const or x), (zero, zero, zero), xs, length=steps)[1]


def _split(inputs: tuple):
    """``(const, xs)``: a current constant in time enters a loop as a constant, not as a
    broadcast sequence (differentiating a scan over a broadcast input is 3x slower on CPU)."""
    if inputs[0].shape[0] == 1:
        return tuple(v[0] for v in inputs), None
    return None, inputs


def _membrane(carry, current):
    """``mu, c, s, var`` of the membrane before the threshold (``s``: ``var`` before its floor ``c^2``)."""
    (mu_p, var_p, c_p), (mu_i, k_i, dyn_i) = carry, current
    c = c_p + k_i  # Cov(V, z): z has unit variance
    s = var_p + k_i**2 + 2.0 * k_i * c_p + dyn_i
    return mu_p + mu_i, c, s, jnp.maximum(s, c**2)


def _generic(reset, beta, theta, noise_var, carry, current):
    mu, c, _, var = _membrane(carry, current)
    p, pq, dens, tau, a = threshold(mu, var, theta, noise_var)
    kappa = c * dens  # Cov(S, z) by Stein's lemma
    if reset == "zero":
        k = var / tau**2  # regression of V on V + eta
        e_sv = p * mu + var * dens
        e_sv2 = mu**2 * p + 2.0 * mu * k * tau**2 * dens + k**2 * tau**2 * (p - a * tau * dens) + (var - k**2 * tau**2) * p
        mu_n = beta * (mu - e_sv)
        var_n = beta**2 * (var + mu**2 - e_sv2) - mu_n**2
        cov_sv_z = c * (p + dens * (mu + k * (theta - mu)))
        c_n = beta * (c - cov_sv_z)
    elif reset == "subtract":
        mu_n, var_n, c_n = beta * mu - theta * p, _subtract_var(beta, theta, var, pq, dens), beta * c - theta * kappa
    else:
        mu_n, var_n, c_n = beta * mu, beta**2 * var, beta * c
    return (mu_n, jnp.maximum(var_n, 0.0), c_n), (p, kappa, pq)


def _subtract_var(beta, theta, var, pq, dens):
    """Membrane variance after a subtract reset (before its floor at 0)."""
    return beta**2 * var + theta**2 * pq - 2.0 * beta * theta * var * dens


def _max_weight(x, y):
    """Share of ``d max(x, y)`` that goes to ``x``: 1, 0, or 1/2 at a tie (as JAX's ``max``)."""
    return jnp.where(x > y, 1.0, jnp.where(x == y, 0.5, 0.0))


def _subtract_filter(beta, theta, noise_var, steps: int):
    """The subtract-reset filter with its derivative written out.

    The forward pass keeps only each step's incoming membrane ``(mu, var, c)`` besides the
    outputs; the backward pass runs back over time, recomputes the step's density from
    them (one ``exp``; ``p`` and ``p (1 - p)`` are outputs) and applies the chain rule.
    """

    def run(mean, static, dyn):
        def body(carry, current):
            new, out = _generic("subtract", beta, theta, noise_var, carry, current)
            return new, (out, carry)

        return _scan(body, (mean, static, dyn), steps)

    @jax.custom_vjp
    def f(mean, static, dyn):
        return run(mean, static, dyn)[0]

    def fwd(mean, static, dyn):
        out, membranes = run(mean, static, dyn)
        return out, ((mean, static, dyn), membranes, out[0], out[2])

    def bwd(res, cotangent):
        inputs, membranes, p, pq = res
        const, xs = _split(inputs)

        def body(carry, x):
            g_next, g_const = carry
            membrane, p, pq, g_out, current = x
            current = const or current
            g_prev, g_cur = _subtract_backward(beta, theta, noise_var, membrane, current, p, pq, g_next, g_out)
            if const is None:
                return (g_prev, g_const), g_cur
            return (g_prev, tuple(a + b for a, b in zip(g_const, g_cur))), None

        zero = jnp.zeros_like(p[0])
        init = ((zero, zero, zero), (zero, zero, zero))
        (_, g_const), g_xs = jax.lax.scan(body, init, (membranes, p, pq, cotangent, xs), reverse=True)
        return tuple(g[None] for g in g_const) if const is not None else g_xs

    f.defvjp(fwd, bwd)
    return f


def _subtract_backward(beta, theta, noise_var, membrane, current, p, pq, g_next, g_out):
    """Cotangents of one step's incoming membrane and current from those of its outputs."""
    (g_mu_n, g_var_n, g_c_n), (g_p, g_kappa, g_pq) = g_next, g_out
    k_i, c_p = current[1], membrane[2]
    mu, c, s, var = _membrane(membrane, current)
    tau, a, dens = _standardised(mu, var, theta, noise_var)
    var_n = _subtract_var(beta, theta, var, pq, dens)
    g_vn = g_var_n * _max_weight(var_n, 0.0)
    g_kap = g_kappa - theta * g_c_n
    g_dens = c * g_kap - 2.0 * beta * theta * var * g_vn
    g_c = beta * g_c_n + dens * g_kap
    # p = Phi(a), pq = p (1 - p), dens = phi(a) / tau with a = (mu - theta) / tau.
    g_a = dens * tau * ((g_p - theta * g_mu_n) + (1.0 - 2.0 * p) * (g_pq + theta**2 * g_vn)) - a * dens * g_dens
    g_tau = -(dens * g_dens + a * g_a) / tau
    g_mu = beta * g_mu_n + g_a / tau
    g_var = (beta**2 - 2.0 * beta * theta * dens) * g_vn + 0.5 * g_tau / tau * _max_weight(var + noise_var, TINY)
    w = _max_weight(s, c**2)  # var = max(s, c^2)
    g_s = w * g_var
    g_c = g_c + (1.0 - w) * g_var * 2.0 * c
    return (g_mu, g_s, g_c + 2.0 * k_i * g_s), (g_mu, g_c + 2.0 * (k_i + c_p) * g_s, g_s)
