"""scikit-learn's 8x8 handwritten digits, a small MNIST stand-in needing no download."""

from __future__ import annotations

import numpy as np
from numpy.typing import DTypeLike

from bayes_snn.datasets.batching import Dataset

__all__ = ["digits"]

CLASSES = tuple(str(k) for k in range(10))
# load_digits pixels are counts of set pixels in 4x4 blocks, so they lie in [0, 16].
MAX_PIXEL = 16.0


def digits(
    split: str = "train",
    *,
    test_size: float = 0.25,
    seed: int = 0,
    dtype: DTypeLike = np.float32,
) -> Dataset:
    """Load a fixed, stratified split of scikit-learn's digits (1797 8x8 images).

    Parameters
    ----------
    split : {"train", "test"}, default "train"
        Which part of the split to return.
    test_size : float, default 0.25
        Fraction of the images in the test part, in (0, 1).
    seed : int, default 0
        ``random_state`` of ``train_test_split``; train and test calls must
        use the same ``seed`` and ``test_size`` to be disjoint.
    dtype : floating dtype, default np.float32
        dtype of ``x``.

    Returns
    -------
    Dataset
        ``x`` [N, 64] with pixels scaled to [0, 1], ``y`` int32 [N] and
        ``classes == ("0", ..., "9")``. With the defaults N is 1347 (train)
        or 450 (test).

    Raises
    ------
    ImportError
        If scikit-learn (the optional ``datasets`` extra) is not installed.

    Examples
    --------
    >>> data = digits("test")
    >>> data.x.shape, data.num_classes
    ((450, 64), 10)
    """
    # Imported here because scikit-learn is an optional extra.
    try:
        from sklearn.datasets import load_digits
        from sklearn.model_selection import train_test_split
    except ImportError as err:
        raise ImportError(
            "digits() needs scikit-learn: pip install 'bayes-snn[datasets]'"
        ) from err
    if split not in ("train", "test"):
        raise ValueError(f"split must be one of ('train', 'test'); got {split!r}")
    if isinstance(test_size, bool) or not (
        isinstance(test_size, (float, int)) and 0 < test_size < 1
    ):
        raise ValueError(f"test_size must be a float in (0, 1); got {test_size!r}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be an int >= 0; got {seed!r}")
    dtype = np.dtype(dtype)
    if not np.issubdtype(dtype, np.floating):
        raise ValueError(f"dtype must be a floating dtype; got {dtype}")

    images, labels = load_digits(return_X_y=True)
    x_train, x_test, y_train, y_test = train_test_split(
        images,
        labels,
        test_size=float(test_size),
        stratify=labels,
        random_state=int(seed),
    )
    x, y = (x_train, y_train) if split == "train" else (x_test, y_test)
    return Dataset((x / MAX_PIXEL).astype(dtype), y.astype(np.int32), CLASSES)
