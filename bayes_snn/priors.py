"""Weight priors: NumPyro distributions that also expose their moments and support.

Continuous: ``Normal(loc, scale)``, ``Laplace(loc, scale)``.
Discrete (finite sets of real values): ``Binary(scale)`` on {-s, +s},
``Ternary(scale, p_zero)`` on {-s, 0, +s}, ``IntegerGrid(bits, scale)`` on the signed grid
``scale * {-(2**bits - 1), ..., 2**bits - 1}`` (``bits=6`` gives the +-63 levels of analog
chips such as BrainScaleS-2). Discrete priors are ``DiscreteGrid`` instances: they expose
``values [K]`` and ``probs [..., K]`` (what expectation propagation needs) and support
NumPyro enumeration.

Every prior has ``mean`` and ``variance``. Invalid parameters raise ``ValueError``
naming the parameter, what was expected and what was given.

Example
-------
>>> import jax
>>> p = Ternary(scale=0.5, p_zero=0.5)
>>> p.values.tolist(), p.probs.tolist(), float(p.variance)
([-0.5, 0.0, 0.5], [0.25, 0.5, 0.25], 0.125)
>>> p.sample(jax.random.PRNGKey(0), (3,)).shape
(3,)
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import numpyro.distributions as dist
from numpyro.distributions import constraints


def _concrete(value) -> bool:
    return not isinstance(value, jax.core.Tracer)


def _check_finite(name: str, value) -> None:
    if _concrete(value) and not np.all(np.isfinite(np.asarray(value, dtype=float))):
        raise ValueError(f"{name} must be finite; got {value!r}")


def _check_positive(name: str, value) -> None:
    _check_finite(name, value)
    if _concrete(value) and not np.all(np.asarray(value, dtype=float) > 0):
        raise ValueError(f"{name} must be > 0; got {value!r}")


def _check_scalar_positive(name: str, value) -> None:
    # A grid prior's values [K] are shared by all weights: an array scale would silently
    # combine elementwise with the K levels instead.
    if jnp.ndim(value) != 0:
        raise ValueError(f"{name} must be a scalar; got shape {jnp.shape(value)}")
    _check_positive(name, value)


class Normal(dist.Normal):
    """Gaussian prior ``N(loc, scale**2)`` (NumPyro's ``Normal`` with validated parameters)."""

    def __init__(self, loc=0.0, scale=1.0, *, validate_args=None):
        _check_finite("loc", loc)
        _check_positive("scale", scale)
        super().__init__(loc, scale, validate_args=validate_args)


class Laplace(dist.Laplace):
    """Laplace prior with density ``exp(-|w - loc| / scale) / (2 scale)``."""

    def __init__(self, loc=0.0, scale=1.0, *, validate_args=None):
        _check_finite("loc", loc)
        _check_positive("scale", scale)
        super().__init__(loc, scale, validate_args=validate_args)


class _FiniteSet(constraints.Constraint):
    """Constraint: the value equals one of ``values`` (within float tolerance)."""

    is_discrete = True
    event_dim = 0

    def __init__(self, values):
        self.values = values

    def __call__(self, x):
        x = jnp.asarray(x)
        return jnp.any(jnp.isclose(x[..., None], self.values, rtol=1e-6, atol=1e-7), axis=-1)

    def feasible_like(self, prototype):
        return jnp.full(jnp.shape(prototype), self.values[jnp.argmin(jnp.abs(self.values))])

    def tree_flatten(self):
        return (self.values,), (("values",), {})


class DiscreteGrid(dist.Distribution):
    """A distribution over a finite set of real ``values [K]`` with ``probs [..., K]``.

    The batch shape is ``probs.shape[:-1]``. ``log_prob`` of a value off the grid is
    ``-inf``. ``enumerate_support`` returns the values, so NumPyro's exact enumeration
    works on models with these priors.
    """

    arg_constraints = {"probs": constraints.simplex}
    has_enumerate_support = True
    pytree_data_fields = ("values", "probs")

    def __init__(self, values, probs, *, validate_args=None):
        values = jnp.asarray(values, jnp.float32)
        probs = jnp.asarray(probs, jnp.float32)
        if _concrete(values):
            v = np.asarray(values)
            if v.ndim != 1 or v.size < 2:
                raise ValueError(f"values must be a vector of at least 2 support points; got shape {v.shape}")
            if not np.all(np.isfinite(v)) or np.any(np.diff(v) <= 0):
                raise ValueError(f"values must be finite and strictly increasing; got {v.tolist()}")
        if _concrete(probs):
            p = np.asarray(probs)
            if p.ndim < 1 or p.shape[-1] != values.shape[0]:
                raise ValueError(f"probs must have shape [..., {values.shape[0]}]; got {p.shape}")
            if not np.all(np.isfinite(p)) or np.any(p < 0) or not np.allclose(p.sum(-1), 1.0, atol=1e-5):
                raise ValueError(f"probs must be non-negative and sum to 1 over the last axis; got {p.tolist()}")
        self.values = values
        self.probs = probs
        super().__init__(batch_shape=jnp.shape(probs)[:-1], validate_args=validate_args)

    @constraints.dependent_property(is_discrete=True, event_dim=0)
    def support(self):
        return _FiniteSet(self.values)

    @property
    def logits(self) -> jax.Array:
        return jnp.log(self.probs)

    def sample(self, key, sample_shape=()):
        shape = tuple(sample_shape) + self.batch_shape
        idx = jax.random.categorical(key, jnp.log(self.probs), shape=shape)
        return self.values[idx]

    def index_of(self, value) -> jax.Array:
        """Index of the nearest support value for each element of ``value``."""
        return jnp.argmin(jnp.abs(jnp.asarray(value)[..., None] - self.values), axis=-1)

    def log_prob(self, value):
        value = jnp.asarray(value)
        idx = self.index_of(value)
        on_grid = jnp.isclose(value, self.values[idx], rtol=1e-6, atol=1e-7)
        probs = jnp.broadcast_to(self.probs, jnp.broadcast_shapes(value.shape + (1,), self.probs.shape))
        lp = jnp.log(jnp.take_along_axis(probs, idx[..., None], axis=-1)[..., 0])
        return jnp.where(on_grid, lp, -jnp.inf)

    def enumerate_support(self, expand=True):
        values = self.values.reshape((-1,) + (1,) * len(self.batch_shape))
        if expand:
            values = jnp.broadcast_to(values, values.shape[:1] + self.batch_shape)
        return values

    @property
    def mean(self):
        return jnp.sum(self.probs * self.values, -1)

    @property
    def variance(self):
        return jnp.sum(self.probs * self.values**2, -1) - self.mean**2


class Binary(DiscreteGrid):
    """Uniform prior on {-scale, +scale}."""

    def __init__(self, scale=1.0, *, validate_args=None):
        _check_scalar_positive("scale", scale)
        self.scale = scale
        super().__init__(jnp.array([-1.0, 1.0]) * scale, jnp.full(2, 0.5), validate_args=validate_args)

    def tree_flatten(self):
        return (self.scale,), None

    @classmethod
    def tree_unflatten(cls, aux, params):
        return cls(*params)


class Ternary(DiscreteGrid):
    """Prior on {-scale, 0, +scale} with ``P(0) = p_zero`` and symmetric signs."""

    def __init__(self, scale=1.0, p_zero=1.0 / 3.0, *, validate_args=None):
        _check_scalar_positive("scale", scale)
        if jnp.ndim(p_zero) != 0:
            raise ValueError(f"p_zero must be a scalar; got shape {jnp.shape(p_zero)}")
        _check_finite("p_zero", p_zero)
        if _concrete(p_zero) and not 0.0 < float(p_zero) < 1.0:
            raise ValueError(f"p_zero must lie in (0, 1); got {p_zero!r}")
        self.scale, self.p_zero = scale, p_zero
        side = (1.0 - p_zero) / 2.0
        probs = jnp.stack([jnp.asarray(side), jnp.asarray(p_zero), jnp.asarray(side)]).astype(jnp.float32)
        super().__init__(jnp.array([-1.0, 0.0, 1.0]) * scale, probs, validate_args=validate_args)

    def tree_flatten(self):
        return (self.scale, self.p_zero), None

    @classmethod
    def tree_unflatten(cls, aux, params):
        return cls(*params)


class IntegerGrid(DiscreteGrid):
    """Uniform prior on ``scale * {-(2**bits - 1), ..., 2**bits - 1}`` (sign + ``bits`` magnitude).

    ``bits=6`` is the signed 6-bit synapse of BrainScaleS-2: integers in [-63, 63].
    """

    def __init__(self, bits=6, scale=1.0, *, validate_args=None):
        if not isinstance(bits, (int, np.integer)) or isinstance(bits, bool) or not 1 <= bits <= 12:
            raise ValueError(f"bits must be an integer in [1, 12]; got {bits!r}")
        _check_scalar_positive("scale", scale)
        self.bits, self.scale = int(bits), scale
        top = 2**self.bits - 1
        levels = jnp.arange(-top, top + 1, dtype=jnp.float32)
        super().__init__(levels * scale, jnp.full(levels.shape, 1.0 / levels.size), validate_args=validate_args)

    def index_of(self, value) -> jax.Array:
        """Index of the nearest level: rounding, without the ``[..., K]`` distances of the general grid."""
        top = 2**self.bits - 1
        return (jnp.clip(jnp.round(jnp.asarray(value) / self.scale), -top, top) + top).astype(jnp.int32)

    def tree_flatten(self):
        return (self.scale,), self.bits

    @classmethod
    def tree_unflatten(cls, aux, params):
        return cls(aux, *params)


def is_discrete(prior) -> bool:
    """True for priors over a finite set of values (``DiscreteGrid`` and subclasses)."""
    return isinstance(prior, DiscreteGrid)


def project(prior, w: jax.Array) -> jax.Array:
    """Nearest support value of a discrete ``prior`` for each entry of ``w`` (identity if continuous)."""
    if not is_discrete(prior):
        return w
    return prior.values[prior.index_of(w)]


__all__ = ["Normal", "Laplace", "DiscreteGrid", "Binary", "Ternary", "IntegerGrid", "is_discrete", "project"]
