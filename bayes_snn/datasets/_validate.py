"""Input checks shared by the dataset loaders, batching and the models.

The checks run on concrete (host) arrays, so call them before tracing, not
inside a jitted function.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike

__all__ = ["check_features", "check_labels"]


def check_features(
    name: str, x: ArrayLike, *, ndim: int | tuple[int, ...] = (2, 3)
) -> None:
    """Raise ``ValueError`` unless ``x`` is a finite real array of an allowed rank.

    Parameters
    ----------
    name : str
        Argument name used in the error message.
    x : array_like, shape [N, F] or time-major [T, N, F]
        Features to check.
    ndim : int or tuple of int, default (2, 3)
        Allowed numbers of dimensions.

    Raises
    ------
    ValueError
        If ``x`` has a disallowed rank, a non-numeric dtype, or NaN/inf values.

    Examples
    --------
    >>> import numpy as np
    >>> check_features("x", np.zeros((4, 2)))
    >>> check_features("x", np.array([[0.0, np.nan]]))
    Traceback (most recent call last):
    ...
    ValueError: x must be finite; found 1 NaN/inf values
    """
    allowed = (ndim,) if isinstance(ndim, int) else tuple(ndim)
    arr = np.asarray(x)
    if arr.ndim not in allowed:
        raise ValueError(
            f"{name} must have ndim in {allowed} ([N, F] or time-major [T, N, F]); "
            f"got ndim {arr.ndim} with shape {arr.shape}"
        )
    if not (np.issubdtype(arr.dtype, np.number) or arr.dtype == np.bool_):
        raise ValueError(f"{name} must be a numeric array; got dtype {arr.dtype}")
    if np.issubdtype(arr.dtype, np.inexact):
        bad = int(arr.size - np.count_nonzero(np.isfinite(arr)))
        if bad:
            raise ValueError(f"{name} must be finite; found {bad} NaN/inf values")


def check_labels(name: str, y: ArrayLike, num_classes: int) -> None:
    """Raise ``ValueError`` unless ``y`` holds integer labels in ``[0, num_classes)``.

    Parameters
    ----------
    name : str
        Argument name used in the error message.
    y : array_like, shape [N]
        Class labels; the dtype must be an integer type.
    num_classes : int
        Number of classes, at least 1.

    Raises
    ------
    ValueError
        If ``y`` is not 1-D, not of integer dtype, or has labels out of range.

    Examples
    --------
    >>> import numpy as np
    >>> check_labels("y", np.array([0, 2, 1]), 3)
    >>> check_labels("y", np.array([0, 5]), 3)
    Traceback (most recent call last):
    ...
    ValueError: y must hold integer class labels in [0, 3); found values in [0, 5]
    """
    if isinstance(num_classes, bool) or not isinstance(num_classes, (int, np.integer)):
        raise ValueError(f"num_classes must be an int; got {num_classes!r}")
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1; got {num_classes}")
    arr = np.asarray(y)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D [N]; got shape {arr.shape}")
    if not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(
            f"{name} must hold integer class labels in [0, {num_classes}); "
            f"got dtype {arr.dtype}"
        )
    if arr.size == 0:
        return
    lo, hi = int(arr.min()), int(arr.max())
    if lo < 0 or hi >= num_classes:
        raise ValueError(
            f"{name} must hold integer class labels in [0, {num_classes}); "
            f"found values in [{lo}, {hi}]"
        )
