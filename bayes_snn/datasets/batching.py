"""Data containers and fixed-size minibatching.

Every minibatch has the same shape, including the last one, which is padded
with valid examples and marked by a ``mask``. A jitted training step therefore
compiles once per run instead of once more for the ragged final batch.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from .._checks import check_int

__all__ = ["Batch", "Dataset", "batch_axis", "batches", "minibatch_indices"]


class Dataset(NamedTuple):
    """An in-memory dataset.

    Attributes
    ----------
    x : np.ndarray, shape [N, F] or time-major [T, N, F]
        float32 features.
    y : np.ndarray, shape [N]
        int32 class labels for classification, float32 targets for regression.
    classes : tuple of str
        Class names in label order; empty for regression or unlabelled data.

    Examples
    --------
    >>> import numpy as np
    >>> data = Dataset(np.zeros((2, 3), np.float32), np.array([0, 1], np.int32), ("a", "b"))
    >>> data.num_classes
    2
    """

    x: np.ndarray
    y: np.ndarray
    classes: tuple[str, ...] = ()

    @property
    def num_classes(self) -> int:
        """Number of classes, ``len(classes)``."""
        return len(self.classes)


class Batch(NamedTuple):
    """One fixed-size minibatch.

    Attributes
    ----------
    x : jax.Array, shape [B, F] or time-major [T, B, F]
        Features.
    y : jax.Array, shape [B]
        Labels or targets.
    mask : jax.Array, shape [B], bool
        ``False`` marks padding in the last batch; weight losses by it.
    """

    x: jax.Array
    y: jax.Array
    mask: jax.Array


def batch_axis(x: Any) -> int:
    """Return the example (batch) axis of ``x``.

    Parameters
    ----------
    x : array, shape [N], [N, F] or time-major [T, N, F]
        Labels, features or a spike/current sequence.

    Returns
    -------
    int
        0 for 1-D and 2-D arrays, 1 for time-major 3-D arrays.

    Raises
    ------
    ValueError
        If ``x`` has 0 or more than 3 dimensions.

    Examples
    --------
    >>> import numpy as np
    >>> batch_axis(np.zeros((10, 4))), batch_axis(np.zeros((25, 10, 4)))
    (0, 1)
    """
    ndim = np.ndim(x)
    if ndim in (1, 2):
        return 0
    if ndim == 3:
        return 1
    raise ValueError(
        f"x must have shape [N], [N, F] or time-major [T, N, F]; got shape {np.shape(x)}"
    )


def minibatch_indices(
    rng_key: jax.Array | None, n: int, batch_size: int, *, shuffle: bool = True
) -> tuple[jax.Array, jax.Array]:
    """Split ``n`` examples into fixed-size minibatches of indices.

    Every index in ``range(n)`` appears exactly once with ``mask`` True. The
    last batch, if partial, is filled up by wrapping around to the start of the
    (shuffled) order; those slots hold valid indices but have ``mask`` False.
    A ``batch_size`` larger than ``n`` is clipped to ``n`` (one full batch).

    Parameters
    ----------
    rng_key : jax.Array or None
        PRNG key for the shuffle; ignored (and may be None) if ``shuffle`` is False.
    n : int
        Number of examples, at least 1.
    batch_size : int
        Examples per batch, at least 1.
    shuffle : bool, default True
        Permute the examples with ``jax.random.permutation(rng_key, n)``.

    Returns
    -------
    idx : jax.Array, shape [num_batches, B], int32
        Example indices, with ``B = min(batch_size, n)`` and
        ``num_batches = ceil(n / B)``.
    mask : jax.Array, shape [num_batches, B], bool
        False for padding slots.

    Examples
    --------
    >>> idx, mask = minibatch_indices(None, 5, 2, shuffle=False)
    >>> idx.tolist(), mask.tolist()
    ([[0, 1], [2, 3], [4, 0]], [[True, True], [True, True], [True, False]])
    """
    n = check_int("n", n)
    batch_size = min(check_int("batch_size", batch_size), n)
    if shuffle:
        if rng_key is None:
            raise ValueError("rng_key must be a PRNG key when shuffle=True; got None")
        order = np.asarray(jax.random.permutation(rng_key, n))
    else:
        order = np.arange(n)
    # The padding arithmetic runs in NumPy: eager jnp ops would compile afresh
    # for every new (n, batch_size), while this is cheap host work once per epoch.
    num_batches = math.ceil(n / batch_size)
    slots = np.arange(num_batches * batch_size)
    idx = order[slots % n].astype(np.int32).reshape(num_batches, batch_size)
    mask = (slots < n).reshape(num_batches, batch_size)
    return jnp.asarray(idx), jnp.asarray(mask)


def batches(
    rng_key: jax.Array | None,
    data: Dataset | tuple[Any, Any],
    batch_size: int,
    *,
    shuffle: bool = True,
) -> Iterator[Batch]:
    """Iterate over one epoch of fixed-size minibatches.

    Parameters
    ----------
    rng_key : jax.Array or None
        PRNG key for the shuffle; ignored (and may be None) if ``shuffle`` is False.
    data : Dataset or tuple (x, y)
        ``x`` of shape [N, F] (batch axis 0) or time-major [T, N, F] (batch
        axis 1); ``y`` of shape [N, ...] (batch axis 0).
    batch_size : int
        Examples per batch; clipped to N as in :func:`minibatch_indices`.
    shuffle : bool, default True
        Visit the examples in a random order.

    Yields
    ------
    Batch
        ``x`` [B, F] or [T, B, F], ``y`` [B, ...] and ``mask`` [B], with
        ``B = min(batch_size, N)`` for every batch.

    Raises
    ------
    ValueError
        If ``data`` is not a Dataset or pair, or ``x`` and ``y`` disagree on N.
        Raised at the call, not at the first ``next``.

    Examples
    --------
    >>> import jax, numpy as np
    >>> x, y = np.zeros((5, 3), np.float32), np.arange(5, dtype=np.int32)
    >>> [b.x.shape for b in batches(jax.random.key(0), (x, y), 2)]
    [(2, 3), (2, 3), (2, 3)]
    """
    if isinstance(data, Dataset):
        x, y = data.x, data.y
    elif isinstance(data, tuple) and len(data) == 2:
        x, y = data
    else:
        raise ValueError(
            f"data must be a Dataset or an (x, y) tuple; got {type(data).__name__}"
        )
    axis = batch_axis(x)
    if np.ndim(y) < 1 or np.shape(x)[axis] != np.shape(y)[0]:
        raise ValueError(
            f"x and y must agree on the number of examples N: x has shape "
            f"{np.shape(x)} (batch axis {axis}), y has shape {np.shape(y)} "
            f"(batch axis 0)"
        )
    idx, mask = minibatch_indices(rng_key, np.shape(y)[0], batch_size, shuffle=shuffle)
    # Move the data to the device once; each batch is then an on-device gather
    # of constant shape.
    x, y = jnp.asarray(x), jnp.asarray(y)
    return _iterate(x, y, axis, idx, mask)


def _iterate(
    x: jax.Array, y: jax.Array, axis: int, idx: jax.Array, mask: jax.Array
) -> Iterator[Batch]:
    for rows, valid in zip(idx, mask):
        yield Batch(jnp.take(x, rows, axis=axis), jnp.take(y, rows, axis=0), valid)
