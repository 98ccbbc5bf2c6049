"""Argument checks shared across the package (one wording for one mistake)."""

from __future__ import annotations

import numpy as np


def check_int(name: str, value, minimum: int = 1) -> int:
    """Return ``value`` as an int if it is an integer ``>= minimum``, else raise ``ValueError``.

    ``bool`` is rejected although it subclasses ``int``: ``batch_size=True`` is a mistake.

    >>> check_int("steps", 3)
    3
    """
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}; got {value!r}")
    return int(value)


def check_key(name: str, key) -> None:
    """Raise ``ValueError`` unless ``key`` is a JAX PRNG key: ``jax.random.key(0)`` or the raw
    ``uint32 [2]`` of ``jax.random.PRNGKey(0)``.

    >>> import jax
    >>> check_key("rng_key", jax.random.PRNGKey(0))
    """
    import jax
    import jax.numpy as jnp

    dtype, shape = getattr(key, "dtype", None), np.shape(key) if hasattr(key, "shape") else None
    typed = dtype is not None and jnp.issubdtype(dtype, jax.dtypes.prng_key) and shape == ()
    raw = dtype == np.uint32 and shape == (2,)
    if not (typed or raw):
        what = f"{type(key).__name__} of dtype {dtype} and shape {shape}" if dtype is not None else \
            f"{type(key).__name__} {key!r}"
        raise ValueError(f"{name} must be a JAX PRNG key such as jax.random.PRNGKey(0); got {what}")
