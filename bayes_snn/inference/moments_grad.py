"""Per-example derivatives of ``log Z`` with respect to every site's moments (SEP's hot loop).

SEP needs, for every example ``n`` of a minibatch, ``d log Z_n / d m`` and ``d log Z_n / d v``
of every weight: ``[B, fan_in, fan_out]`` per Dense layer. ``vmap(grad(log Z))`` builds them
inside the backward pass of every example, which XLA on CPU does slowly. For a central-limit
Dense layer (``moments.dense``) the chain rule through the layer has a closed form: with
``G_mu``, ``G_s``, ``G_d`` the derivatives with respect to the current's mean and the
variances of its static and dynamic parts (``[B, T, H]``, from one batched backward pass to a
zero ``tap`` on the current) and ``a`` the layer's input moments ``[B, T, F]``,

    d log Z / d m_ij = gain sum_t E[a_i] G_mu_j + 2 gain^2 m_ij sum_t (Cov(a_i, z)^2 G_s_j + D[a_i] G_d_j)
    d log Z / d v_ij = gain^2 sum_t ((E[a_i]^2 + Cov(a_i, z)^2) G_s_j + D[a_i] G_d_j)

(``D`` the dynamic variance). For a deterministic input (the data, a direct or latency code)
only the first terms remain, and with one input step each is an outer product that XLA
fuses into the site update instead of storing it; with ``factored=True`` it is returned
as the two factors (``OuterDerivatives``), so that SEP's minibatch sums become matrix
products (``sep_sites.outer_matched_sums``, ``taylor_sums``, ``outer_series_sums``). Every
other site (biases, readout weights, enumerated layers) is differentiated per example by
autodiff as before.

Example
-------
>>> import jax, jax.numpy as jnp
>>> from bayes_snn import Classifier, Sequential, Dense, SpikeResponse, encoders, readouts
>>> net = Sequential(encoders.Direct(1), Dense(8), SpikeResponse(), Dense(3), readouts.MeanMembrane())
>>> mom = {k: (v, jnp.full(v.shape, 0.1)) for k, v in net.init_params(jax.random.PRNGKey(0), 4).items()}
>>> logz, grads = evidence_derivatives(Classifier(net, 3), mom, jnp.ones((5, 4)), jnp.zeros(5, jnp.int32))
>>> logz.shape, grads["dense_0.weight"][0].shape
((5,), (5, 4, 8))
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from . import moments as mp


class OuterDerivatives(NamedTuple):
    """Per-example derivatives of a Dense layer fed by a static deterministic input, factored.

    ``d log Z_n / d m_ij = x[n, i] g[n, j]`` and ``d log Z_n / d v_ij = x[n, i]^2 s[n, j]``
    with ``x`` ``[B, F]`` the layer's input and ``g``, ``s`` ``[B, H]`` (gains included).
    """

    x: jax.Array
    g: jax.Array
    s: jax.Array

    def expand(self) -> tuple[jax.Array, jax.Array]:
        """``(d log Z / d m, d log Z / d v)`` ``[B, F, H]``."""
        x = self.x[:, :, None]
        return x * self.g[:, None, :], x**2 * self.s[:, None, :]


def evidence_derivatives(model, mom: dict, x: jax.Array, y: jax.Array, enumerate_limit: int = mp.ENUMERATE_LIMIT,
                         axis: int = 0, factored: bool = False) -> tuple[jax.Array, dict]:
    """``log Z`` ``[B]`` of every example and its derivatives with respect to ``mom``.

    ``mom`` as in ``moments.output_logits``; ``x`` holds the examples along ``axis`` (1 for
    time-major ``[T, B, F]`` input). The derivatives have ``mom``'s structure with a leading
    example axis: ``(d/dmean, d/dvar)`` ``[B, ...]`` for ``(mean, var)`` entries and
    ``[B, ..., K]`` for probabilities. Equal to ``vmap(value_and_grad(log_evidence))``,
    except that every derivative is zero when no ``log Z`` of the batch is finite. With
    ``factored``, a Dense layer fed by a deterministic input with one step (``Direct``)
    gets an ``OuterDerivatives`` instead of the pair.
    """
    net = model.net
    one_x = jax.eval_shape(lambda v: jnp.take(v, 0, axis=axis), x)
    _, shapes = jax.eval_shape(lambda m, v: mp.tapped_logits(net, m, v, enumerate_limit, {}), mom, one_x)
    tapped = {name: f"{name}.weight" for name in shapes}
    rest = {site: entry for site, entry in mom.items() if site not in tapped.values()}

    def one(taps, rest, xi, yi):
        full = {**rest, **{site: mom[site] for site in tapped.values()}}
        logits, inputs = mp.tapped_logits(net, full, xi, enumerate_limit, taps)
        return mp.evidence_of(model, logits, yi), inputs

    batch = jnp.shape(y)[0]
    zero_taps = {name: (jnp.zeros((batch,) + a.mean.shape[:-1] + (mom[site][0].shape[-1],), jnp.float32),) * 3
                 for (name, site), a in zip(tapped.items(), shapes.values())}
    grad = jax.value_and_grad(one, argnums=(0, 1), has_aux=True)
    (logz, inputs), (g_taps, grads) = jax.vmap(grad, in_axes=(0, None, axis, 0))(zero_taps, rest, x, y)
    inputs, g_taps, grads = _materialised((inputs, g_taps, grads), jnp.any(jnp.isfinite(logz)))
    deterministic = mp.deterministic_input(net)
    for name, site in tapped.items():
        layer = net.layers[net.names.index(name)]
        gain = layer.gain_for(mom[site][0].shape[0])
        a, g_cur = inputs[name], g_taps[name]
        if factored and name == deterministic and a.mean.shape[1] == 1:  # taps share the input's steps
            grads[site] = OuterDerivatives(a.mean[:, 0], gain * g_cur[0][:, 0], gain**2 * g_cur[1][:, 0])
        else:
            grads[site] = _weight_derivatives(a, g_cur, mom[site][0], gain, name == deterministic)
    return logz, grads


def _materialised(tree, token: jax.Array):
    """``tree``, computed into memory before any of its consumers runs (zeros if ``token`` is False).

    XLA on CPU fuses the backward pass's elementwise work into the ``[B, F, H]`` products
    that consume it and recomputes it for every weight (4x slower on digits). An
    optimisation barrier is removed before fusion on CPU; a conditional on a runtime
    predicate is a fusion boundary. ``token`` is "some ``log Z`` is finite": when none is,
    SEP drops every example anyway.
    """
    return jax.lax.cond(token, lambda t: t, lambda t: jax.tree.map(jnp.zeros_like, t), tree)


def _outer_sum(u: jax.Array, g: jax.Array) -> jax.Array:
    """``sum_t u[b, t, i] g[b, t, j]`` ``[B, F, H]``; a broadcast product when ``T = 1`` (fusible)."""
    if u.shape[1] == 1:
        return u[:, 0, :, None] * g[:, 0, None, :]
    return jnp.einsum("bti,btj->bij", u, g)


def _weight_derivatives(a: mp.Act, g_cur: tuple, m: jax.Array, gain: float, deterministic: bool):
    """``(d log Z / d m, d log Z / d v)`` ``[B, F, H]`` of a central-limit Dense layer (module docstring)."""
    g_mean, g_static, g_dyn = g_cur
    d_mean = gain * _outer_sum(a.mean, g_mean)
    d_var = gain**2 * _outer_sum(a.mean**2, g_static)
    if not deterministic:
        spread = _outer_sum(a.static**2, g_static) + _outer_sum(mp._dyn(a), g_dyn)
        d_mean = d_mean + 2.0 * gain**2 * m * spread
        d_var = d_var + gain**2 * spread
    return d_mean, d_var


__all__ = ["OuterDerivatives", "evidence_derivatives"]
