"""The Yin-Yang dataset (Kriener, Göltz & Petrovici, 2021).

A 2-D, 3-class problem that a linear classifier cannot solve but a small
network can; the standard small benchmark for SNNs on analog neuromorphic
hardware. This generator reproduces the published reference generator bit for
bit (same RNG, same order of draws, same float64 arithmetic), so results are
comparable with the literature.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from numpy.typing import DTypeLike

from bayes_snn.datasets.batching import Dataset

__all__ = ["yin_yang"]

CLASSES = ("yin", "yang", "dot")
# The published (size, seed) of each split; distinct seeds keep the splits disjoint.
SPLITS = {"train": (5000, 42), "validation": (1000, 41), "test": (1000, 40)}


def _which_class(x: float, y: float, r_small: float, r_big: float) -> int:
    # Python floats are IEEE doubles and sqrt is correctly rounded, so this
    # matches the reference's NumPy float64 scalars exactly.
    d_right = math.sqrt((x - 1.5 * r_big) ** 2 + (y - r_big) ** 2)
    d_left = math.sqrt((x - 0.5 * r_big) ** 2 + (y - r_big) ** 2)
    if d_right < r_small or d_left < r_small:
        return 2
    is_yang = (
        d_right <= r_small
        or r_small < d_left <= 0.5 * r_big
        or (y > r_big and d_right > 0.5 * r_big)
    )
    return int(is_yang)


def _sample(
    rng: np.random.RandomState, goal: int, r_small: float, r_big: float
) -> tuple[float, float]:
    # Rejection sampling: one rand(2) per attempt, as in the reference.
    while True:
        x, y = (float(v) for v in rng.rand(2) * 2.0 * r_big)
        if math.sqrt((x - r_big) ** 2 + (y - r_big) ** 2) > r_big:
            continue
        if _which_class(x, y, r_small, r_big) == goal:
            return x, y


def _check_int(name: str, value: Any, lo: int, hi: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"{name} must be an int; got {value!r}")
    if value < lo or (hi is not None and value > hi):
        bounds = f"in [{lo}, {hi}]" if hi is not None else f">= {lo}"
        raise ValueError(f"{name} must be an int {bounds}; got {value}")
    return int(value)


def yin_yang(
    split: str = "train",
    *,
    size: int | None = None,
    seed: int | None = None,
    r_small: float = 0.1,
    r_big: float = 0.5,
    dtype: DTypeLike = np.float32,
) -> Dataset:
    """Generate a split of the Yin-Yang dataset.

    Each sample first draws its goal class with ``rng.randint(3)``, then
    draws points ``rng.rand(2) * 2 * r_big`` until one lies in the big disk
    and has the goal class, so the classes are balanced in expectation.

    Parameters
    ----------
    split : {"train", "validation", "test"}, default "train"
        Selects the published defaults: train 5000 samples with seed 42,
        validation 1000 with seed 41, test 1000 with seed 40.
    size : int, optional
        Number of samples; overrides the split's default.
    seed : int, optional
        Seed of ``np.random.RandomState``; overrides the split's default.
    r_small : float, default 0.1
        Radius of the two dots; must satisfy ``0 < r_small < r_big / 2``.
    r_big : float, default 0.5
        Radius of the big disk centred at ``(r_big, r_big)``.
    dtype : floating dtype, default np.float32
        dtype of ``x``; values are computed in float64 and then cast.

    Returns
    -------
    Dataset
        ``x`` of shape [size, 4] holding ``[x, y, 1 - x, 1 - y]`` (the mirrored
        coordinates let neurons without a bias solve the task; note the
        reference mirrors at 1 whatever ``r_big`` is), ``y`` int32 [size] and
        ``classes == ("yin", "yang", "dot")``.

    Examples
    --------
    >>> data = yin_yang("test", size=6)
    >>> data.x.shape, data.y.dtype, data.classes
    ((6, 4), dtype('int32'), ('yin', 'yang', 'dot'))
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {tuple(SPLITS)}; got {split!r}")
    default_size, default_seed = SPLITS[split]
    size = default_size if size is None else _check_int("size", size, 1)
    # RandomState accepts seeds in [0, 2**32 - 1]
    seed = default_seed if seed is None else _check_int("seed", seed, 0, 2**32 - 1)
    if not (math.isfinite(r_big) and r_big > 0):
        raise ValueError(f"r_big must be a finite float > 0; got {r_big!r}")
    # Outside this range some class has zero area and rejection sampling never ends.
    if not 0 < r_small < 0.5 * r_big:
        raise ValueError(
            f"r_small must lie in (0, r_big / 2) = (0, {0.5 * r_big}); got {r_small!r}"
        )
    dtype = np.dtype(dtype)
    if not np.issubdtype(dtype, np.floating):
        raise ValueError(f"dtype must be a floating dtype; got {dtype}")

    rng = np.random.RandomState(seed)
    points = np.empty((size, 2), dtype=np.float64)
    labels = np.empty(size, dtype=np.int32)
    for i in range(size):
        goal = rng.randint(3)
        points[i] = _sample(rng, goal, float(r_small), float(r_big))
        labels[i] = goal
    features = np.concatenate([points, 1.0 - points], axis=1)
    return Dataset(features.astype(dtype), labels, CLASSES)
