"""Laplace priors in SEP: the prior as one more EP factor with a Gaussian site.

A Laplace prior is not Gaussian, so ``q = p0 f^N`` would leave the Gaussian family. As in
EP for sparse linear models (Seeger 2008; Hernandez-Lobato et al. 2013), the prior itself
gets a Gaussian site ``g``: ``q = g f^N``. After every minibatch ``g`` is refined by an EP
step on the prior factor: cavity ``c = q / g = f^N`` (Gaussian), tilted ``c(w) Laplace(w)``,
``q' = `` its moment match, ``g' = q' / c``, applied with damping. The tilted normaliser
has a closed form in log-normal-CDFs,

    Z = [e^{-u + s} Phi((m - v/b)/sqrt v) + e^{u + s} Phi(-(m + v/b)/sqrt v)] / (2b),
    u = (m - loc)/b,  s = v/(2 b^2),  m, v measured from ``loc``,

evaluated in the log domain with ``log_ndtr`` (whose asymptotic series keeps the far tail
finite), and its moments follow from ``d log Z / d(m, v)`` (the PBP rule again).

Example
-------
>>> import jax.numpy as jnp
>>> site = init_site(0.0, 1.0, (2,))  # Laplace(0, 1): Gaussian site of variance 2
>>> (1.0 / site.lam).tolist()
[2.0, 2.0]
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.special import log_ndtr

from .sep_sites import PRECISION_FLOOR, GaussSite, UpdateStats


def log_z(m, v, loc, scale):
    """``log E_{N(w; m, v)}[Laplace(w; loc, scale)]`` (elementwise, stable in both tails)."""
    m = m - loc
    sd = jnp.sqrt(v)
    s = v / (2.0 * scale**2)
    pos = -m / scale + s + log_ndtr((m - v / scale) / sd)
    neg = m / scale + s + log_ndtr(-(m + v / scale) / sd)
    return jnp.logaddexp(pos, neg) - jnp.log(2.0 * scale)


def moment_natural(loc, scale) -> tuple[float, float]:
    """``(r, lam)`` of the Gaussian with the Laplace prior's mean and variance ``2 scale^2``."""
    var = 2.0 * float(scale) ** 2
    return float(loc) / var, 1.0 / var


def init_site(loc, scale, shape) -> GaussSite:
    """The moment-matched Gaussian site of every weight, before any refinement."""
    r, lam = moment_natural(loc, scale)
    return GaussSite(jnp.full(shape, r, jnp.float32), jnp.full(shape, lam, jnp.float32))


def refine(prior_site: GaussSite, data_site: GaussSite, n, loc, scale, damping: float):
    """One damped EP update of the prior site ``g`` given the data site ``f`` (``q = g f^n``).

    Weights whose cavity ``f^n`` is not a proper Gaussian yet (precision below the floor)
    keep their site; an update that would leave ``q`` or the data cavity ``g f^(n-1)``
    below the precision floor is rejected (counted).
    """
    lam0 = 1.0 / (2.0 * float(scale) ** 2)
    r_c, lam_c = n * data_site.r, n * data_site.lam
    proper = lam_c > PRECISION_FLOOR * lam0
    m_c = jnp.where(proper, r_c / jnp.where(proper, lam_c, 1.0), 0.0)
    v_c = jnp.where(proper, 1.0 / jnp.where(proper, lam_c, 1.0), 1.0)
    g_m, g_v = jax.grad(lambda m, v: jnp.sum(log_z(m, v, loc, scale)), argnums=(0, 1))(m_c, v_c)
    shrink = 1.0 - v_c * (g_m**2 - 2.0 * g_v)  # tilted variance / cavity variance
    m_t = m_c + v_c * g_m
    v_t = v_c * shrink
    new_lam = 1.0 / v_t - lam_c
    new_r = m_t / v_t - r_c
    lam = prior_site.lam + damping * (new_lam - prior_site.lam)
    r = prior_site.r + damping * (new_r - prior_site.r)
    floor = PRECISION_FLOOR * lam0
    ok = proper & (shrink > 0) & jnp.isfinite(r) & jnp.isfinite(lam)
    ok = ok & (lam + n * data_site.lam >= floor) & (lam + (n - 1.0) * data_site.lam >= floor)
    new = GaussSite(jnp.where(ok, r, prior_site.r), jnp.where(ok, lam, prior_site.lam))
    change = jnp.sum((new.r - prior_site.r) ** 2) + jnp.sum((new.lam - prior_site.lam) ** 2)
    zero = jnp.zeros((), jnp.int32)
    return new, UpdateStats(zero, jnp.sum(proper & ~ok), zero, change, jnp.asarray(2 * np.size(prior_site.r)))


__all__ = ["log_z", "moment_natural", "init_site", "refine"]
