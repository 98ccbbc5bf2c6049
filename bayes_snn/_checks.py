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
