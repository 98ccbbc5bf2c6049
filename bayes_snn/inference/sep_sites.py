"""Site algebra of SEP: tied Gaussian and categorical sites, their updates and safety rules.

A tied site ``f`` stands for the average likelihood factor of one example; the posterior
approximation is ``q = p0 * f^N`` and the cavity of an example is ``q / f = p0 * f^(N-1)``.

* Gaussian site (``Normal`` prior): natural parameters ``(r, lam)`` (precision times mean,
  precision), so ``q`` has ``lam_q = lam_0 + N lam`` and ``r_q = r_0 + N r``.
* Categorical site (discrete prior on values ``a_1..a_K``): log-potentials ``[..., K]``,
  ``log q = log p0 + N log f`` (normalised). Sites are kept centred over ``K`` because their
  normaliser is irrelevant.

The SEP update of a minibatch: each valid example ``n`` gives a site ``f_n`` moment-matched
from the common cavity, and ``eta_f <- eta_f + damping / N * sum_n (eta_{f_n} - eta_f)``,
which with ``damping = 1`` is ``(1 - M/N) eta_f + 1/N sum_n eta_{f_n}``.

Example
-------
>>> import jax.numpy as jnp
>>> site = GaussSite(jnp.zeros(2), jnp.zeros(2))
>>> m, v = gauss_moments(site, (0.0, 1.0), n=10, cavity=False)
>>> m.tolist(), v.tolist()
([0.0, 0.0], [1.0, 1.0])
"""

from __future__ import annotations

import functools
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import numpyro.distributions as dist

from ..priors import DiscreteGrid
from .moments_grad import OuterDerivatives


class GaussSite(NamedTuple):
    """Natural parameters of a tied Gaussian site: ``r`` (precision x mean) and ``lam`` (precision)."""

    r: jax.Array
    lam: jax.Array


class CatSite(NamedTuple):
    """Centred log-potentials ``[..., K]`` of a tied categorical site."""

    logf: jax.Array


def prior_natural(prior):
    """``(r0, lam0)`` for a ``Normal`` prior, ``log p0 [K]`` for a discrete prior (NumPy values).

    ``None`` for a ``Laplace`` prior, whose Gaussian site lives in the state
    (``sep_laplace``).
    """
    if isinstance(prior, DiscreteGrid):
        return np.log(np.asarray(prior.probs, np.float32))
    if isinstance(prior, dist.Normal):
        var = float(prior.scale) ** 2
        return (np.float32(float(prior.loc) / var), np.float32(1.0 / var))
    if isinstance(prior, dist.Laplace):
        return None
    raise ValueError(
        "SEP needs a Normal or Laplace prior (Gaussian sites) or a discrete prior (Binary, Ternary, "
        f"IntegerGrid; categorical sites); got {type(prior).__name__}"
    )


def gauss_natural(site: GaussSite, prior_nat, n: float, cavity: bool):
    """Natural parameters ``(r, lam)`` of ``q`` (``cavity=False``) or of the cavity ``q / f``."""
    k = n - 1.0 if cavity else n
    return prior_nat[0] + k * site.r, prior_nat[1] + k * site.lam


def gauss_moments(site: GaussSite, prior_nat, n: float, cavity: bool):
    """``(mean, var)`` of ``q`` or of the cavity."""
    r, lam = gauss_natural(site, prior_nat, n, cavity)
    return r / lam, 1.0 / lam


def cat_logq(site: CatSite, log_p0, n: float, cavity: bool):
    """Normalised log-probabilities ``[..., K]`` of ``q`` or of the cavity."""
    k = n - 1.0 if cavity else n
    logf = _per_value(site.logf)
    return _joined(_normalised(jax.tree.map(lambda a, f: a + k * f, _prior_per_value(log_p0, logf), logf)))


# The categorical algebra works value by value: for small K on a list of K arrays ``[...]``
# (XLA on CPU reduces over a trailing support axis of K = 2 or 3 several times more slowly
# than it combines separate arrays: ternary digits, the categorical update 3x slower), for
# larger K on one support-first array ``[K, ...]`` (a list of 127 arrays for a 6-bit grid
# took minutes to compile). ``jax.tree.map`` applies an elementwise step to either form.
LISTED_SUPPORT = 8


def _per_value(a: jax.Array):
    """``[..., K]`` -> its values: a list of ``[...]`` or one ``[K, ...]`` array (see above)."""
    k = a.shape[-1]
    return [a[..., i] for i in range(k)] if k <= LISTED_SUPPORT else jnp.moveaxis(a, -1, 0)


def _prior_per_value(log_p0, values):
    """``log p0`` ``[K]`` (NumPy) in the form of ``values``: its entries, or ``[K, 1, ...]``."""
    if isinstance(values, list):
        return list(log_p0)
    return jnp.reshape(jnp.asarray(log_p0), (-1,) + (1,) * (values.ndim - 1))


def _joined(values) -> jax.Array:
    """Inverse of ``_per_value``: ``[..., K]``."""
    return jnp.stack(values, axis=-1) if isinstance(values, list) else jnp.moveaxis(values, 0, -1)


_REDUCTIONS = {jnp.add: jnp.sum, jnp.maximum: jnp.max, jnp.logical_or: jnp.any, jnp.logical_and: jnp.all}


def _over_values(op, values) -> jax.Array:
    """Reduce per-value ``values`` over the support with the binary ``op`` (``jnp.add``, ...)."""
    if isinstance(values, list):
        return sum(values) if op is jnp.add else functools.reduce(op, values)
    return _REDUCTIONS[op](values, axis=0)


def _normalised(logits):
    """``logits - logsumexp(logits)`` over the support, for per-value ``logits``."""
    top = _over_values(jnp.maximum, logits)
    top = jnp.where(jnp.isfinite(top), top, 0.0)
    norm = top + jnp.log(_over_values(jnp.add, jax.tree.map(lambda a: jnp.exp(a - top), logits)))
    return jax.tree.map(lambda a: a - norm, logits)


def cat_probs(site: CatSite, log_p0, n, cavity: bool):
    """Probabilities ``[..., K]`` of a categorical ``q`` or cavity."""
    return jnp.exp(cat_logq(site, log_p0, n, cavity))


def init_gauss(rng: np.random.Generator, prior_nat, shape, n: float, init_scale: float) -> GaussSite:
    """A site whose ``q`` has the prior's variance and random means ``N(prior mean, (init_scale*sd)^2)``.

    Random means break the symmetry between hidden units (otherwise every unit of a layer
    gets the same moments and the same update). The site stands for ``n`` examples; SEP's
    updates average it away within about an epoch. NumPy draws (seeded from the caller's
    PRNG key) avoid compiling a kernel per site.
    """
    r0, lam0 = (float(v) for v in prior_nat)
    mean = r0 / lam0 + init_scale / np.sqrt(lam0) * rng.standard_normal(shape)
    r = (mean * lam0 - r0) / n
    return GaussSite(jnp.asarray(r, jnp.float32), jnp.zeros(shape, jnp.float32))


def init_cat(rng: np.random.Generator, log_p0, values, shape, n: float, init_scale: float) -> CatSite:
    """A site tilting ``q`` by ``exp(eps * a / sd)``, ``eps ~ N(0, init_scale^2)`` per weight (symmetry breaking)."""
    values = np.asarray(values, np.float64)
    eps = init_scale * rng.standard_normal(shape)
    logf = eps[..., None] * values / values.std() / n
    return CatSite(jnp.asarray(logf - logf.mean(-1, keepdims=True), jnp.float32))


# q and every cavity keep a precision of at least this fraction of the prior's.
PRECISION_FLOOR = 1e-3
# Smallest per-example likelihood ratio Z_n(a) / Z_n used by a categorical site (about
# 7 nats of evidence against one value from one example).
RATIO_FLOOR = 1e-3


class UpdateStats(NamedTuple):
    """Counts of one site update: example contributions dropped, weight updates rejected, clips."""

    dropped: jax.Array
    rejected: jax.Array
    clipped: jax.Array
    change: jax.Array  # sum of squared changes of q's natural parameters
    size: jax.Array  # number of natural parameters


def _bcast(mask, x):
    return mask.reshape(mask.shape + (1,) * (x.ndim - mask.ndim))


class GaussSums(NamedTuple):
    """Minibatch sums of per-example Gaussian sites over the valid examples (``[...]`` per weight).

    ``r``, ``lam``: sums of the sites' natural parameters; ``count``: valid examples per
    weight (broadcastable to the weights); ``clipped``, ``dropped``: totals (int32) of
    per-example contributions whose negative precision was clipped, or that were dropped.
    """

    r: jax.Array
    lam: jax.Array
    count: jax.Array
    clipped: jax.Array
    dropped: jax.Array


def _dense_derivatives(derivs) -> tuple:
    """``(dlogZ/dm, dlogZ/dv)`` ``[B, ...]`` from a pair or a factored ``OuterDerivatives``."""
    return derivs.expand() if isinstance(derivs, OuterDerivatives) else derivs


def moment_matched_sums(m, v, derivs, mask, min_ratio: float) -> GaussSums:
    """Sites moment-matched from the cavity ``(m, v)`` with ``derivs = (g, h)``, ``g = dlogZ/dm``, ``h = dlogZ/dv``.

    ``derivs`` are ``[B, ...]`` or a factored ``OuterDerivatives`` (summed by matrix
    products, ``outer_matched_sums``).

    Each example's tilted distribution has the PBP/ADF moments ``m_n = m + v g`` and
    ``v_n = v (1 - v k)`` with ``k = g^2 - 2h``; its site is ``(m_n / v_n - m / v, 1 / v_n - 1 / v)``.
    ``k < 0`` (the example asks for a *larger* variance, a negative site precision) is
    clipped to 0 and counted: allowing it made minibatch updates diverge in practice. An
    example with non-finite derivatives or ``v_n <= min_ratio * v`` is dropped for that
    weight (counted).
    """
    if isinstance(derivs, OuterDerivatives):
        return outer_matched_sums(m, v, derivs, mask, min_ratio)
    g, h = derivs
    per_example = _matched_sites(m, v, g, h, _bcast(mask, g), min_ratio)
    r, lam, count, clipped, dropped = _batch_sum(*per_example)
    return GaussSums(r, lam, count, _count(clipped), _count(dropped))


def _matched_sites(m, v, g, h, live, min_ratio: float):
    """Per-example terms of ``moment_matched_sums`` (``m``, ``v`` broadcast against ``g``, ``h``):
    the sites ``r_n``, ``lam_n`` (0 where not valid) and the flags valid, clipped, dropped."""
    k = g**2 - 2.0 * h
    shrink = 1.0 - v * jnp.maximum(k, 0.0)
    valid = live & jnp.isfinite(g) & jnp.isfinite(h) & (shrink > min_ratio)
    shrink = jnp.where(valid, shrink, 1.0)
    g = jnp.where(valid, g, 0.0)
    lam_n = jnp.where(valid, jnp.maximum(k, 0.0), 0.0) / shrink  # 1/v_n - 1/v
    r_n = m * lam_n + g / shrink  # = m_n / v_n - m / v without the cancellation
    return jnp.where(valid, r_n, 0.0), jnp.where(valid, lam_n, 0.0), valid, live & (k < 0), live & ~valid


# ``outer_matched_sums``: terms of the geometric series, and the largest relative remainder it
# leaves (about float32's own rounding of a sum of a minibatch of terms).
MATCH_TERMS = 4
MATCH_TOLERANCE = 1e-6


def outer_matched_sums(m, v, d: OuterDerivatives, mask, min_ratio: float) -> GaussSums:
    """``moment_matched_sums`` of factored derivatives, by matrix products where a series is exact enough.

    With ``g_n = x_ni G_nj``, ``h_n = x_ni^2 s_nj`` and ``t_n = v x_ni^2 kappa_nj``
    (``kappa = max(G^2 - 2 s, 0)``: the clip acts per unit), an example's site is
    ``lam_n = x^2 kappa / (1 - t_n)`` and ``r_n = m lam_n + x G / (1 - t_n)``. Expanding
    ``1 / (1 - t) = sum_p t^p`` to ``MATCH_TERMS = P`` terms makes each minibatch sum a sum of
    matrix products, ``sum_p v^p (x^(2p+2))^T kappa^(p+1)`` and ``sum_p v^p (x^(2p+1))^T (G kappa^p)``.
    The last of them gives ``S = sum_n t_n^P >= max_n t_n^P``; the remainder is at most
    ``S / (1 - S^(1/P))`` of ``lam`` and of ``sum_n |x G|``. A weight keeps the series where ``S``
    is small enough for that to be at most ``MATCH_TOLERANCE`` and for no example to be dropped
    (``S^(1/P) < 1 - min_ratio``); the others (where one example carries a large share of the
    weight's evidence: 2-4 % of Yin-Yang's 4-input layer, none of digits' 64 or 784 inputs
    in three-epoch fits) get the per-example terms, a chunk of weights at a time
    (``_per_weight_fallback``).
    """
    ok, x, count, _ = _outer_validity(d, mask)
    curvature = d.g**2 - 2.0 * d.s  # [B, H]
    kappa = jnp.where(ok, jnp.maximum(curvature, 0.0), 0.0)
    g = jnp.where(ok, d.g, 0.0)
    terms = range(MATCH_TERMS)
    left = jnp.stack([x ** (2 * p + 2) for p in terms] + [x ** (2 * p + 1) for p in terms])
    right = jnp.stack([kappa ** (p + 1) for p in terms] + [g * kappa**p for p in terms])
    products = jnp.einsum("tbf,tbh->tfh", left, right)  # [2P, F, H]
    horner = lambda first: functools.reduce(lambda acc, p: acc * v + products[first + p], reversed(terms), 0.0)
    lam = horner(0)
    r = m * lam + horner(MATCH_TERMS)
    # S <= limit gives S^(1/P) <= MATCH_TOLERANCE^(1/P), so S / (1 - S^(1/P)) <= MATCH_TOLERANCE,
    # and S^(1/P) < 1 - min_ratio (no root per weight: pow is slow on CPU).
    limit = min(MATCH_TOLERANCE * (1.0 - MATCH_TOLERANCE ** (1.0 / MATCH_TERMS)), (1.0 - min_ratio) ** MATCH_TERMS / 2)
    trusted = v**MATCH_TERMS * products[MATCH_TERMS - 1] <= limit  # S = sum_n t_n^P
    clipped = _outer_clip_count(x, curvature < 0)  # as the per-example rule counts: live, non-finite or not
    dropped = jnp.broadcast_to(jnp.sum(mask[:, None] & ~ok, axis=0, dtype=jnp.float32), m.shape)

    def per_example(ci, cj, real):  # [chunk] weights, the example axis last
        x_r = d.x.T[ci]
        live = mask[None, :] & real[:, None]
        r_n, lam_n, valid, _, dropped_n = _matched_sites(m[ci, cj][:, None], v[ci, cj][:, None], x_r * d.g.T[cj],
                                                         x_r**2 * d.s.T[cj], live, min_ratio)
        return tuple(jnp.sum(a.astype(jnp.float32), axis=-1) for a in (r_n, lam_n, valid, dropped_n)), jnp.int32(0)

    count = jnp.broadcast_to(count, m.shape)
    (r, lam, count, dropped), _ = _per_weight_fallback(~trusted, per_example, (r, lam, count, dropped), jnp.int32(0))
    return GaussSums(r, lam, count, clipped, _count(dropped))


def _per_weight_fallback(untrusted, per_example, targets: tuple, extra):
    """Recompute ``targets`` (``[F, H, ...]`` each) at the ``untrusted`` weights ``[F, H]`` from per-example terms.

    ``per_example(ci, cj, real)`` gets the indices ``[chunk]`` of up to ``chunk`` weights (one
    in ``SERIES_CHUNK`` of the layer; ``real`` is False for padding) and returns their new
    values (one ``[chunk, ...]`` per target) and an amount added to ``extra`` (a counter).
    A loop over chunks rather than a branch to the whole layer's per-example update: XLA on
    CPU pays for the largest branch's buffers on every call (784 inputs: 3 ms per step).
    """
    shape = untrusted.shape
    chunk = max(1, untrusted.size // SERIES_CHUNK)

    def one_chunk(carry):
        targets, untrusted, extra = carry
        # Padding indices (F, H) are out of range: the index clip makes gathers safe, the scatters drop them.
        i, j = jnp.nonzero(untrusted, size=chunk, fill_value=shape)
        real = i < shape[0]
        values, more = per_example(jnp.minimum(i, shape[0] - 1), jnp.minimum(j, shape[1] - 1), real)
        targets = tuple(t.at[i, j].set(val, mode="drop") for t, val in zip(targets, values))
        return targets, untrusted.at[i, j].set(False, mode="drop"), extra + more

    targets, _, extra = jax.lax.while_loop(lambda carry: jnp.any(carry[1]), one_chunk, (targets, untrusted, extra))
    return targets, extra


def taylor_sums(m, derivs, mask, clip: bool = True) -> GaussSums:
    """Sites from the second-order expansion of each ``log Z_n`` in the weight's cavity mean ``m``.

    ``derivs`` is ``(g, h)`` ``[B, ...]`` as in ``moment_matched_sums`` or a factored
    ``moments_grad.OuterDerivatives``. The site of example ``n`` has precision
    ``k_n = g^2 - 2h = -d^2 log Z_n / dm^2`` (clipped at 0 and counted, as in
    ``moment_matched_sums``) and ``r_n = m k_n + g``: the moment-matched site to first order
    in ``v k_n``, the example's share of the cavity's precision (about ``1 / N`` once ``q``
    has seen the data). Non-finite derivatives drop the example for that weight (counted).
    ``clip=False`` keeps negative ``k_n`` (for ``taylor_cat_sums``; ``clipped`` is then 0).
    For ``OuterDerivatives`` (``k_n = x_n^2 (g_n^2 - 2 s_n)``: the clip acts per unit) the
    sums over the minibatch are matrix products, and nothing of size ``[B, F, H]`` is built.
    """
    if isinstance(derivs, OuterDerivatives):
        return _outer_taylor_sums(m, derivs, mask, clip)
    g, h = derivs
    k = g**2 - 2.0 * h
    live = _bcast(mask, g)
    valid = live & jnp.isfinite(g) & jnp.isfinite(h)
    lam, g_sum, count, dropped, *clipped = _batch_sum(
        jnp.where(valid, jnp.maximum(k, 0.0) if clip else k, 0.0), jnp.where(valid, g, 0.0), valid, live & ~valid,
        *([valid & (k < 0)] if clip else []))
    return GaussSums(m * lam + g_sum, lam, count, _count(clipped[0]) if clip else jnp.int32(0), _count(dropped))


def _outer_validity(d: OuterDerivatives, mask):
    """For factored derivatives: ``ok`` ``[B, H]`` (live example, finite unit derivatives), the
    input with padded examples zeroed ``[B, F]``, valid examples per unit ``[H]`` (the same for
    every input) and the dropped contributions (int32; a unit's drop covers all its inputs).
    """
    ok = mask[:, None] & jnp.isfinite(d.g) & jnp.isfinite(d.s)
    x = jnp.where(mask[:, None], d.x, 0.0)
    dropped = (d.x.shape[1] * jnp.sum(mask[:, None] & ~ok, dtype=jnp.float32)).astype(jnp.int32)
    return ok, x, jnp.sum(ok, axis=0, dtype=jnp.float32), dropped


def _outer_taylor_sums(m, d: OuterDerivatives, mask, clip: bool) -> GaussSums:
    """``taylor_sums`` of factored derivatives: every sum over examples is a matrix product."""
    kappa = d.g**2 - 2.0 * d.s  # [B, H]
    ok, x, count, dropped = _outer_validity(d, mask)
    lam = (x**2).T @ jnp.where(ok, jnp.maximum(kappa, 0.0) if clip else kappa, 0.0)
    g_sum = x.T @ jnp.where(ok, d.g, 0.0)
    clipped = _outer_clip_count(x, ok & (kappa < 0)) if clip else jnp.int32(0)
    return GaussSums(m * lam + g_sum, lam, count, clipped, dropped)


def _outer_clip_count(x, negative) -> jax.Array:
    """Total (int32) of the contributions ``k_n = x_ni^2 kappa_nj < 0`` of factored derivatives:
    ``x_ni != 0`` (``x`` ``[B, F]`` with padded examples zeroed) for every unit with ``negative`` ``[B, H]``."""
    nonzero = jnp.sum(x != 0, axis=1, dtype=jnp.float32)
    return (nonzero @ jnp.sum(negative, axis=1, dtype=jnp.float32)).astype(jnp.int32)


def update_gauss(site: GaussSite, prior_nat, n, n_new, sums: GaussSums, damping: float, n_max):
    """SEP update of a Gaussian site from the minibatch's per-example ``sums``.

    ``n`` is the number of examples the site stands for before the update (the cavity is
    ``p0 f^(n-1)``), ``n_new`` after it, and ``n_max`` the most it will ever stand for (the
    count only grows). An averaged update that would give the cavity or ``q``, at any count
    from ``n_new`` to ``n_max``, a precision below ``PRECISION_FLOOR`` times the prior's (a
    variance above 1000x the prior's, or a non-positive one) is rejected for that weight
    (counted). The precision is linear in the count, so the two ends decide; a site of
    negative precision that is safe now can fail at a larger count.
    """
    dr = sums.r - sums.count * site.r
    dlam = sums.lam - sums.count * site.lam
    new = GaussSite(site.r + damping * dr / n_new, site.lam + damping * dlam / n_new)
    floor = jnp.maximum(PRECISION_FLOOR * jnp.abs(prior_nat[1]), 1e-12)
    ok = (prior_nat[1] + (n_new - 1.0) * new.lam >= floor) & (prior_nat[1] + n_max * new.lam >= floor)
    ok = ok & jnp.isfinite(new.r) & jnp.isfinite(new.lam)
    new = GaussSite(jnp.where(ok, new.r, site.r), jnp.where(ok, new.lam, site.lam))
    change = jnp.sum((n_new * new.r - n * site.r) ** 2) + jnp.sum((n_new * new.lam - n * site.lam) ** 2)
    stats = UpdateStats(sums.dropped, jnp.sum(~ok), sums.clipped, change, jnp.asarray(2 * site.r.size))
    return new, stats


def _count(x: jax.Array) -> jax.Array:
    """Total of a float array of counts from ``_batch_sum``, as int32."""
    return jnp.sum(x).astype(jnp.int32)


def _batch_sum(*per_example):
    """Sums over the example axis (0) of ``[B, ...]`` arrays (booleans count as 0/1), as float32.

    Float rather than integer sums, which XLA on CPU reduces faster. One reduction per array:
    stacking them first stores every per-example array (ternary digits steps 2x slower).
    """
    return tuple(jnp.sum(x.astype(jnp.float32), axis=0) for x in per_example)


class CatSums(NamedTuple):
    """Minibatch sums of per-example categorical sites over the valid examples.

    ``log_sum``: ``sum_n log f_n`` ``[..., K]``; ``count``: valid examples per weight
    ``[...]``; ``floored``, ``dropped``: totals (int32) of per-example ratios floored at
    ``RATIO_FLOOR`` (once per example and weight; none for ``taylor_cat_sums``) and of
    dropped contributions.
    """

    log_sum: jax.Array
    count: jax.Array
    floored: jax.Array
    dropped: jax.Array


def update_cat(site: CatSite, log_p0, n, n_new, probs, dz, mask, damping: float, min_prob: float):
    """SEP update of a categorical site from ``dz = dlogZ/dq(a_k)`` ``[B, ..., K]`` at the cavity ``probs``.

    The tilted distribution of example ``n`` is ``cavity(a_k) Z_n(a_k) / Z_n``. Because
    ``Z_n = sum_k cavity(a_k) Z_n(a_k)`` is linear in each weight's probabilities,
    ``Z_n(a_k) / Z_n = 1 + dz_k - sum_j cavity(a_j) dz_j`` exactly when the moment pass is
    exact in that weight (an enumerated layer, ``moments.enumerated``). Weights that enter
    the moment pass only through their mean and variance use ``update_cat_moments``.
    """
    valid = _bcast(mask, dz[..., 0]) & jnp.all(jnp.isfinite(dz), axis=-1)
    dz = jnp.where(valid[..., None], dz, 0.0)
    ratio = 1.0 + dz - jnp.sum(probs * dz, axis=-1, keepdims=True)
    sums = _log_ratio_sums(jnp.moveaxis(ratio, -1, 0), valid, _bcast(mask, valid))
    return _apply_cat(site, log_p0, n, n_new, sums, damping, min_prob)


def update_cat_moments(site: CatSite, log_p0, values, n, n_new, moments, derivs, mask, damping: float,
                       min_prob: float, rule: str = "per_example"):
    """SEP update of a categorical site from ``derivs = (dlogZ/dm, dlogZ/dv)`` ``[B, ...]`` at the cavity ``moments``.

    For a weight seen by the moment pass only through its cavity mean ``m`` and variance
    ``v`` (central-limit layers), ``dlogZ/dq(a_k) = g_m a_k + g_v (a_k^2 - 2 m a_k)`` and the
    ratio of ``update_cat`` becomes ``Z_n(a_k) / Z_n = 1 + eps_nk`` with
    ``eps_nk = g_m (a_k - m) + g_v ((a_k - m)^2 - v)``, the first-order estimate (for binary
    weights the first-order effect is EBP's ``q(w) ~ exp(h w)``). It is the same update as
    ``update_cat`` fed with those ``dz``, but every array is ``[B, ...]`` per support value:
    the per-example derivatives are ``2`` numbers per weight instead of ``K``, and nothing
    reduces over ``K`` per example. ``derivs`` may be a factored
    ``moments_grad.OuterDerivatives``; with ``rule="series"`` its minibatch sums of
    ``log(1 + eps)`` are matrix products (``outer_series_sums``), otherwise it is expanded.
    ``rule="taylor"`` replaces ``log(1 + eps)`` by its second-order counterpart
    (``taylor_cat_sums``).
    """
    if rule == "taylor":
        sums = taylor_cat_sums(values, moments, derivs, mask)
    elif rule == "series" and isinstance(derivs, OuterDerivatives):
        sums = outer_series_sums(values, moments, derivs, mask)
    else:
        ratio, valid = _moment_form_ratio(values, moments, *_dense_derivatives(derivs), mask)
        sums = _log_ratio_sums(ratio, valid, _bcast(mask, valid))
    return _apply_cat(site, log_p0, n, n_new, sums, damping, min_prob)


def taylor_cat_sums(values, moments, derivs, mask) -> CatSums:
    """``sum_n log f_n(a_k)`` with ``f_n`` the example's Taylor Gaussian site (``taylor_sums``) on the support.

    ``log f_n(a) = g_n (a - m) - k_n (a - m)^2 / 2`` (up to a constant), ``k_n = g_n^2 - 2 h_n``:
    the second-order expansion of ``log Z_n(a)`` in the weight's value around its cavity
    mean ``m``. The first-order ratio ``1 + eps_n`` of ``update_cat_moments`` is the same
    order of expansion of ``Z_n(a) / Z_n`` itself, so the two logarithms differ by
    ``O(eps^3)``; this one is finite for every value (no ratio to floor), and its minibatch
    sums are those of ``taylor_sums``: matrix products for factored derivatives. Unlike a
    Gaussian site, a categorical site may be log-convex, so ``k_n < 0`` is kept (clipping it,
    as ``taylor_sums`` does by default, gave 89 % against 93 % on digits in one run). The expansion
    needs each weight's share of its unit's input to be small: on Yin-Yang's 4-input first
    layer in moment form it trained to 72 % against 98 % per example.
    """
    mean, _ = moments
    sums = taylor_sums(mean, derivs, mask, clip=False)
    a = np.asarray(values, np.float32)
    log_sum = sums.r[..., None] * a - 0.5 * sums.lam[..., None] * a**2
    return CatSums(log_sum, jnp.broadcast_to(sums.count, mean.shape), sums.clipped, sums.dropped)


def _moment_form_ratio(values, moments, g_mean, g_var, mask):
    """``1 + eps`` ``[K, B, ...]`` of ``update_cat_moments`` and the valid entries ``[B, ...]``."""
    values = np.asarray(values, np.float32)
    mean, var = moments  # the cavity's, as the moment pass saw them
    valid = _bcast(mask, g_mean) & jnp.isfinite(g_mean) & jnp.isfinite(g_var)
    g_mean, g_var = jnp.where(valid, g_mean, 0.0), jnp.where(valid, g_var, 0.0)
    dev = values.reshape((-1,) + (1,) * mean.ndim) - mean  # a_k - m, [K, ...]
    return _first_order_ratio(dev[:, None], var, g_mean[None], g_var[None]), valid


def _first_order_ratio(dev, var, g_mean, g_var):
    """``1 + eps = 1 + g_m (a_k - m) + g_v ((a_k - m)^2 - v)`` with ``dev = a_k - m`` (broadcast)."""
    return 1.0 + g_mean * dev + g_var * (dev**2 - var)


def _floored_log(ratio):
    """``log ratio`` with ratios below ``RATIO_FLOOR`` floored (a linear estimate can go non-positive)."""
    return jnp.log(jnp.maximum(ratio, RATIO_FLOOR))


# ``outer_series_sums``: the order of the series, the largest |eps| it is used for, the share
# of the second-order term its remainder may reach, and the weights (1 in SERIES_CHUNK of the
# layer) that take per-example logarithms together where the series does not hold.
SERIES_ORDER = 3
SERIES_RADIUS = 0.5
SERIES_SHARE = 0.1
SERIES_CHUNK = 16


def outer_series_sums(values, moments, d: OuterDerivatives, mask) -> CatSums:
    """``sum_n log(1 + eps_n)`` of ``update_cat_moments`` for factored derivatives, by matrix products.

    With ``d log Z_n / d m_ij = x_ni g_nj`` and ``d log Z_n / d v_ij = x_ni^2 s_nj``,
    ``eps_nijk = x_ni g_nj D_ijk + x_ni^2 s_nj E_ijk`` (``D = a_k - m``, ``E = D^2 - v``), so
    every power sum ``sum_n eps^p = sum_q C(p, q) D^q E^(p-q) [(x^(2p-q))^T (g^q s^(p-q))]_ij``
    is a sum of ``p + 1`` matrix products, and ``log(1 + eps) = eps - eps^2 / 2 + eps^3 / 3 - ...``
    is summed over the minibatch without building ``[B, F, H]``. The same products bound
    ``S = sum_n |eps_n|^4 >= max_n |eps_n|^4`` (``SERIES_ORDER = 3``). A weight keeps the
    series where, for every value, ``r = S^(1/4) <= SERIES_RADIUS`` and the remainder
    bound ``S / (4 (1 - r))`` is at most ``SERIES_SHARE`` of the second-order term
    ``sum_n eps_n^2 / 2``. The ratio ``1 + eps`` is a first-order estimate whose own error
    is of that second order, so the series adds at most a tenth of it. The other weights get
    per-example logarithms, gathered by index, one in ``SERIES_CHUNK`` of the layer at a time.
    """
    values = np.asarray(values, np.float32)
    mean, var = moments  # [F, H]
    ok, x, count, dropped = _outer_validity(d, mask)
    count = jnp.broadcast_to(count, mean.shape)
    g, s = jnp.where(ok, d.g, 0.0), jnp.where(ok, d.s, 0.0)
    dev = values[:, None, None] - mean  # [K, F, H]
    sq = dev**2 - var
    order = SERIES_ORDER
    signed = [(p, q) for p in range(1, order + 1) for q in range(p + 1)]
    absolute = [(order + 1, q) for q in range(order + 2)]
    left = jnp.stack([x ** (2 * p - q) for p, q in signed] + [jnp.abs(x) ** (2 * p - q) for p, q in absolute])
    right = jnp.stack([g**q * s ** (p - q) for p, q in signed]
                      + [jnp.abs(g) ** q * jnp.abs(s) ** (p - q) for p, q in absolute])
    products = iter(jnp.einsum("tbf,tbh->tfh", left, right))  # [T, F, H]

    def power_sum(p, d_, e_):  # sum_n eps^p (or its bound, with |D| and |E|), [K, F, H]
        return sum(math.comb(p, q) * d_**q * e_ ** (p - q) * next(products) for q in range(p + 1))

    powers = [power_sum(p, dev, sq) for p in range(1, order + 1)]
    log_sum = sum((-1) ** p / (p + 1) * eps_p for p, eps_p in enumerate(powers))  # eps - eps^2/2 + ...
    bound = power_sum(order + 1, jnp.abs(dev), jnp.abs(sq))
    radius = bound ** (1.0 / (order + 1))
    remainder = bound / ((order + 1) * (1.0 - jnp.minimum(radius, SERIES_RADIUS)))
    trusted = (radius <= SERIES_RADIUS) & (remainder <= SERIES_SHARE * powers[1] / 2)
    trusted = jnp.all(trusted, axis=0)  # [F, H]: for every support value

    def per_example(ci, cj, real):  # logarithms for ``[chunk]`` weights
        # Rows of the transposed factors are gathered, and the example axis stays last: XLA on
        # CPU fuses column gathers into the elementwise work, element by element (7x slower).
        x_r, g_r, s_r = x.T[ci], g.T[cj], s.T[cj]  # [chunk, B]
        dev_r = values[:, None] - mean[ci, cj]  # [K, chunk]
        ratio = _first_order_ratio(dev_r[..., None], var[ci, cj][:, None], (x_r * g_r)[None], (x_r**2 * s_r)[None])
        live = ok.T[cj] & real[:, None]  # [chunk, B]
        exact = jnp.sum(jnp.where(live, _floored_log(ratio), 0.0), axis=-1)  # [K, chunk]
        return (exact.T,), _count(live & jnp.any(ratio < RATIO_FLOOR, axis=0))

    (log_sum,), floored = _per_weight_fallback(~trusted, per_example, (jnp.moveaxis(log_sum, 0, -1),), jnp.int32(0))
    return CatSums(log_sum, count, floored, dropped)


def _log_ratio_sums(ratio, valid, live) -> CatSums:
    """Sums of ``log ratio`` (``ratio`` ``[K, B, ...]``: support value first) over the valid examples.

    Ratios below ``RATIO_FLOOR`` (a linear estimate that went non-positive) are floored and
    counted. The support axis comes first because XLA on CPU fuses a per-example reduction
    over a trailing ``K`` axis badly (several times slower).
    """
    log_sum = jnp.sum(jnp.where(valid, _floored_log(ratio), 0.0), axis=1)
    count, floored, dropped = _batch_sum(valid, valid & jnp.any(ratio < RATIO_FLOOR, axis=0), live & ~valid)
    return CatSums(jnp.moveaxis(log_sum, 0, -1), count, _count(floored), _count(dropped))


def _apply_cat(site: CatSite, log_p0, n, n_new, sums: CatSums, damping: float, min_prob: float):
    """Average the per-example sites of the minibatch ``sums`` into the SEP update of ``site``.

    After the averaged update every probability of ``q`` is kept ``>= min_prob`` (counted)
    so that no value becomes impossible. Sites are centred over ``K``; centring commutes
    with the sum over examples, so it is applied once to the sum.
    """
    logf_old, log_sum = _per_value(site.logf), _per_value(sums.log_sum)
    log_p0 = _prior_per_value(log_p0, logf_old)
    k = site.logf.shape[-1]
    centre = _over_values(jnp.add, log_sum) / k
    logq = _normalised(jax.tree.map(lambda a, f, t: a + n_new * (f + damping * (t - centre - sums.count * f) / n_new),
                                    log_p0, logf_old, log_sum))
    floor = np.log(min_prob)
    clipped = _count(_over_values(jnp.logical_or, jax.tree.map(lambda q: q < floor, logq))) + sums.floored
    logf = jax.tree.map(lambda a, q: (jnp.maximum(q, floor) - a) / n_new, log_p0, logq)
    centre = _over_values(jnp.add, logf) / k
    logf = jax.tree.map(lambda f: f - centre, logf)
    ok = _over_values(jnp.logical_and, jax.tree.map(jnp.isfinite, logf))
    new = CatSite(_joined(jax.tree.map(lambda f, f_old: jnp.where(ok, f, f_old), logf, logf_old)))
    change = jnp.sum((n_new * new.logf - n * site.logf) ** 2)
    return new, UpdateStats(sums.dropped, jnp.sum(~ok), clipped, change, jnp.asarray(site.logf.size))


__all__ = [
    "GaussSite",
    "CatSite",
    "UpdateStats",
    "prior_natural",
    "gauss_natural",
    "gauss_moments",
    "cat_logq",
    "cat_probs",
    "init_gauss",
    "init_cat",
    "GaussSums",
    "moment_matched_sums",
    "outer_matched_sums",
    "taylor_sums",
    "update_gauss",
    "update_cat",
    "update_cat_moments",
    "CatSums",
    "outer_series_sums",
    "taylor_cat_sums",
]
