"""Mean-field guide of the VI backend: one factor per latent site of the model.

* Network weights with continuous priors (Normal, Laplace, or any real-valued prior a
  hand-written model gives a site): a Gaussian factor ``N(loc, scale)``, reparameterised.
* Network weights with discrete priors (``Binary``, ``Ternary``, ``IntegerGrid``, any
  ``DiscreteGrid``): a categorical factor over the prior's support with free logits,
  sampled with a **straight-through Gumbel-softmax** estimator (``GumbelGrid``).
* Other latent sites of a hand-written model (e.g. a hierarchical scale): NumPyro
  ``AutoNormal``'s family, a Gaussian in the unconstrained space mapped through
  ``biject_to(support)``, initialised at the prior median with scale ``init_scale``.

All factors of one guide evaluation draw their noise from one uniform draw
(``guide_noise``), which keeps the compiled step small.

Why straight-through Gumbel-softmax. The sample used in the forward pass is an exact
draw from the categorical factor, a value *on the grid*, so every layer of the network
runs exactly the model it will be evaluated with (the local reparameterisation of
pre-activations instead replaces a layer's input sum by a Gaussian, which is poor at the
fan-in of 4-5 of Yin-Yang's first layer, and it changes the forward pass rather than the
sample, which a NumPyro sample site cannot express). The gradient flows through the
relaxed sample ``softmax((log q + g) / temperature) @ values``: biased, but with far
lower variance than the score-function estimator (``tests/test_vi.py`` measures both
against the exact gradient of an enumerated expectation). The KL term of every factor is
analytic (``TraceMeanField_ELBO`` picks up the divergences registered here), so only the
likelihood term is estimated.

Initialisation keeps spikes from dying or saturating: Gaussian locs are a draw from the
prior (the same fan-in-scaled start as the point-estimate trainers, which also breaks
the symmetry between hidden units) and scales are ``init_scale`` times the prior's
standard deviation; categorical logits are the prior's log-probabilities plus a
discretised Gaussian bump around a random point ``w0`` drawn with the prior's mean and
variance, of width ``max(init_scale * prior std, half the grid spacing)``. For a binary
weight that gives ``q(+s) = sigmoid(2 w0 / s)``, confident but not certain.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
from jax.scipy.special import ndtr, ndtri
from numpyro.distributions import constraints
from numpyro.distributions.transforms import biject_to
from numpyro.distributions.kl import kl_divergence

from ..priors import DiscreteGrid


class GumbelGrid(DiscreteGrid):
    """Categorical factor over ``values [K]`` with ``logits [..., K]``; reparameterised samples.

    ``sample`` returns exact draws (values on the grid) whose derivative with respect to
    the logits is that of the relaxed draw ``softmax((log q + g) / temperature) @ values``
    with Gumbel noise ``g`` (straight-through Gumbel-softmax, Jang et al. 2017).

    Example
    -------
    >>> import jax, jax.numpy as jnp
    >>> q = GumbelGrid(jnp.array([-1.0, 1.0]), jnp.zeros((3, 2)))
    >>> q.sample(jax.random.PRNGKey(0)).shape, float(q.probs[0, 1])
    ((3,), 0.5)
    """

    pytree_data_fields = ("log_probs", "gumbel")
    pytree_aux_fields = ("temperature",)
    # Samples carry a (straight-through) pathwise derivative.
    has_rsample = True

    def __init__(self, values, logits, temperature: float = 1.0, gumbel=None, *, validate_args=None):
        self.log_probs = jax.nn.log_softmax(jnp.asarray(logits, jnp.float32), axis=-1)
        self.temperature = float(temperature)
        self.gumbel = gumbel
        super().__init__(values, jnp.exp(self.log_probs), validate_args=validate_args)

    @property
    def logits(self) -> jax.Array:
        return self.log_probs

    def sample(self, key, sample_shape=()):
        shape = tuple(sample_shape) + jnp.shape(self.log_probs)
        z = self.log_probs + _noise(self.gumbel, key, shape, jax.random.gumbel)
        soft = jax.nn.softmax(z / self.temperature, axis=-1)
        hard = jax.nn.one_hot(jnp.argmax(z, axis=-1), self.values.shape[0], dtype=soft.dtype)
        # Forward: exactly the one-hot draw (soft - stop_gradient(soft) is exactly 0.0, but
        # (hard + soft) - soft would round off the grid); backward: d soft.
        onehot = hard + (soft - jax.lax.stop_gradient(soft))
        return onehot @ self.values


class GaussianFactor(dist.Normal):
    """The guide's Gaussian factor: a ``Normal`` with an analytic KL to Laplace priors too.

    A subclass (rather than registering ``KL(Normal, Laplace)`` on NumPyro's ``Normal``)
    so that importing bayes_snn changes nothing in users' other NumPyro models. Like
    ``GumbelGrid`` it may be given its standard noise (``noise``, of the batch shape):
    ``sample`` then returns ``loc + scale * noise``.
    """

    pytree_data_fields = ("noise",)

    def __init__(self, loc=0.0, scale=1.0, noise=None, *, validate_args=None):
        self.noise = noise
        super().__init__(loc, scale, validate_args=validate_args)

    def sample(self, key, sample_shape=()):
        shape = tuple(sample_shape) + self.batch_shape
        return self.loc + self.scale * _noise(self.noise, key, shape, jax.random.normal)


def _noise(given, key, shape, draw):
    """``given`` (checked against ``shape``) or a fresh ``draw(key, shape)``."""
    if given is None:
        return draw(key, shape)
    if jnp.shape(given) != tuple(shape):
        raise ValueError(f"pre-drawn noise has shape {jnp.shape(given)}; sampling needs {tuple(shape)}")
    return given


def guide_noise(rng_key, factors: list["SiteFactor"]) -> dict[str, jax.Array]:
    """Standard noise for every factor from one uniform draw.

    Gaussian factors get ``ndtri(u)``, categorical ones Gumbel noise ``-log(-log u)``
    of shape ``shape + [K]``. On CPU every ``jax.random`` call of a new shape compiles
    its own ~0.5 s threefry loop, so one call per step instead of one per site keeps
    the step's compile time down.
    """
    gaussian = [f for f in factors if f.values is None]
    grid = [f for f in factors if f.values is not None]
    shapes = [f.shape for f in gaussian] + [f.shape + (len(f.values),) for f in grid]
    sizes = [int(np.prod(shape)) for shape in shapes]
    n_gauss = sum(sizes[: len(gaussian)])
    u = jax.random.uniform(rng_key, (sum(sizes),), minval=jnp.finfo(jnp.float32).tiny, maxval=1.0)
    # Transform each kind once, then slice: per-site transforms would repeat ndtri's
    # polynomial in the compiled program.
    z = jnp.concatenate([ndtri(u[:n_gauss]), -jnp.log(-jnp.log(u[n_gauss:]))])
    out, start = {}, 0
    for f, shape, size in zip(gaussian + grid, shapes, sizes):
        out[f.name] = z[start : start + size].reshape(shape)
        start += size
    return out


@kl_divergence.register(GumbelGrid, DiscreteGrid)
def _kl_grid(q, p):
    # Both factors live on the same support (the guide is built from the prior's values).
    return jnp.sum(q.probs * (q.log_probs - jnp.log(p.probs)), axis=-1)


@kl_divergence.register(GaussianFactor, dist.Laplace)
def _kl_normal_laplace(q, p):
    # KL = -H[N(m, s)] - E_q[log Laplace(w; mu, b)], with E|w - mu| the folded-normal mean.
    d, s = q.loc - p.loc, q.scale
    mean_abs = s * math.sqrt(2.0 / math.pi) * jnp.exp(-0.5 * (d / s) ** 2) + d * (1.0 - 2.0 * ndtr(-d / s))
    return -0.5 * jnp.log(2.0 * math.pi * math.e * s**2) + jnp.log(2.0 * p.scale) + mean_abs / p.scale


def base_prior(fn):
    """The scalar (or broadcastable) prior under NumPyro's ``expand``/``to_event`` wrappers."""
    while isinstance(fn, (dist.Independent, dist.ExpandedDistribution)):
        fn = fn.base_dist
    return fn


class SiteFactor(NamedTuple):
    """Static description of one site's factor.

    ``values`` is the support of a categorical factor (None for Gaussian ones);
    ``transform`` maps a Gaussian factor's unconstrained space to the site's support
    (None for real-valued sites).
    """

    name: str
    shape: tuple[int, ...]
    values: np.ndarray | None = None
    transform: Any = None


def weight_factor(name: str, fn) -> SiteFactor:
    """The factor of a network-weight site whose model prior is ``fn``."""
    prior = base_prior(fn)
    if prior.support.is_discrete:
        if not isinstance(prior, DiscreteGrid):
            raise ValueError(f"a discrete weight prior must be a bayes_snn.priors.DiscreteGrid; site {name!r} has {type(prior).__name__}")
        return SiteFactor(name, tuple(fn.shape()), np.asarray(prior.values))
    if prior.support is not constraints.real:
        raise ValueError(f"a continuous weight prior must have real support for the Gaussian guide; site {name!r} has {prior.support}")
    return SiteFactor(name, tuple(fn.shape()))


def init_weight(rng_key, factor: SiteFactor, fn, init_scale: float) -> dict[str, jax.Array]:
    """Initial parameters of a weight factor (see the module docstring)."""
    prior = base_prior(fn)
    mean = jnp.broadcast_to(prior.mean, factor.shape)
    std = jnp.sqrt(jnp.broadcast_to(prior.variance, factor.shape))
    if factor.values is None:
        # A prior without finite variance (e.g. Cauchy) falls back to unit width.
        return {"loc": fn.sample(rng_key), "scale": init_scale * jnp.where(jnp.isfinite(std), std, 1.0)}
    values = jnp.asarray(factor.values)
    w0 = mean + std * jax.random.normal(rng_key, factor.shape)
    width = jnp.maximum(init_scale * std, 0.5 * float(np.min(np.diff(factor.values))))[..., None]
    log_prior = jnp.broadcast_to(jnp.log(prior.probs), factor.shape + values.shape)
    return {"logits": log_prior - 0.5 * ((values - w0[..., None]) / width) ** 2}


def extra_factor(name: str, site: dict, init_scale: float) -> tuple[SiteFactor, dict[str, np.ndarray]]:
    """Factor and initial parameters of a non-weight latent site traced at its initial value.

    AutoNormal's family: a Gaussian in the unconstrained space (mean at the initial
    value, scale ``init_scale``) pushed through ``biject_to(support)``.
    """
    support = site["fn"].support
    transform = None if support is constraints.real else biject_to(support)
    loc = np.asarray(site["value"] if transform is None else transform.inv(site["value"]), np.float32)
    return SiteFactor(name, loc.shape, None, transform), {"loc": loc, "scale": np.full(loc.shape, init_scale, np.float32)}


class MeanFieldGuide:
    """NumPyro guide registering ``<site>.loc``/``<site>.scale`` or ``<site>.logits`` params.

    Parameters
    ----------
    factors : list of SiteFactor
        One per latent site of the model.
    init : dict
        ``{site: {param: array}}`` initial (constrained) parameter values, used where the
        parameters are not substituted (``VI`` substitutes its own initial values).
    temperature : float
        Gumbel-softmax temperature of the categorical factors.
    """

    def __init__(self, factors: list[SiteFactor], init: dict, temperature: float):
        self.factors, self.init, self.temperature = factors, init, temperature

    def __call__(self) -> None:
        noise = guide_noise(numpyro.prng_key(), self.factors)
        for f in self.factors:
            params = {k: numpyro.param(f"{f.name}.{k}", v, **_constraint(k)) for k, v in self.init[f.name].items()}
            numpyro.sample(f.name, self.site_distribution(f, params, noise[f.name]))

    def site_distribution(self, f: SiteFactor, params: dict, noise=None):
        """The factor of site ``f`` from its constrained parameters (and pre-drawn noise)."""
        if f.values is not None:
            return GumbelGrid(f.values, params["logits"], self.temperature, noise).to_event(len(f.shape))
        gaussian = GaussianFactor(params["loc"], params["scale"], noise).to_event(len(f.shape))
        return gaussian if f.transform is None else dist.TransformedDistribution(gaussian, f.transform)

    def weights(self, params: dict, names) -> dict:
        """``{site: dist.Normal or priors.DiscreteGrid}`` for the weight sites ``names``."""
        out = {}
        for f in self.factors:
            if f.name not in names:
                continue
            if f.values is None:
                out[f.name] = dist.Normal(params[f"{f.name}.loc"], params[f"{f.name}.scale"])
            else:
                out[f.name] = DiscreteGrid(f.values, jax.nn.softmax(params[f"{f.name}.logits"], axis=-1))
        return out

    def median(self, params: dict, name: str) -> jax.Array:
        """Posterior median of a Gaussian (possibly transformed) factor."""
        f = next(f for f in self.factors if f.name == name)
        loc = params[f"{name}.loc"]
        return loc if f.transform is None else f.transform(loc)


def _constraint(param: str) -> dict:
    return {"constraint": constraints.softplus_positive} if param == "scale" else {}


__all__ = ["GumbelGrid", "GaussianFactor", "guide_noise", "MeanFieldGuide", "SiteFactor", "weight_factor", "init_weight", "extra_factor", "base_prior"]
