"""Reader for MNIST-format IDX files supplied by the user (plain or gzip).

The files are parsed as raw bytes with ``np.frombuffer`` and checked
thoroughly, so a malformed or tampered file raises a clear ``ValueError`` and
nothing in it is ever executed.
"""

from __future__ import annotations

import gzip
import math
import os
import zlib

import numpy as np
from numpy.typing import DTypeLike

from bayes_snn.datasets._validate import check_features, check_labels
from bayes_snn.datasets.batching import Dataset

__all__ = ["idx", "read_idx"]

GZIP_MAGIC = b"\x1f\x8b"
# IDX type byte -> big-endian element type
IDX_TYPES = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
# magic (2 zero bytes), type byte, ndim byte
PREFIX_BYTES = 4
DIM_BYTES = 4


def read_idx(path: str | os.PathLike[str]) -> np.ndarray:
    """Read an IDX file (optionally gzip-compressed) into an array.

    Layout: two zero bytes, a type byte (0x08 uint8, 0x09 int8, 0x0B int16,
    0x0C int32, 0x0D float32, 0x0E float64), a byte with the number of
    dimensions, each dimension as a big-endian uint32, then the values in
    big-endian C order. Compression is detected from the gzip magic bytes,
    not the file name.

    Parameters
    ----------
    path : str or os.PathLike
        File to read.

    Returns
    -------
    np.ndarray, shape given by the header
        Values in native byte order with the dtype given by the type byte.

    Raises
    ------
    ValueError
        If the magic bytes or type byte are wrong, ndim is 0, the data size
        does not match the header exactly, or float data holds NaN/inf.

    Examples
    --------
    >>> import os, tempfile
    >>> path = os.path.join(tempfile.mkdtemp(), "labels.idx1-ubyte")
    >>> with open(path, "wb") as f:
    ...     _ = f.write(bytes([0, 0, 0x08, 1, 0, 0, 0, 3, 7, 2, 1]))
    >>> read_idx(path)
    array([7, 2, 1], dtype=uint8)
    """
    with open(path, "rb") as f:
        raw = f.read()
    if raw[:2] == GZIP_MAGIC:
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as err:
            raise ValueError(f"IDX file {path}: corrupt gzip stream ({err})") from err
        where = f"IDX file {path} (after gzip decompression)"
    else:
        where = f"IDX file {path}"

    if len(raw) < PREFIX_BYTES:
        raise ValueError(
            f"{where} is truncated: expected at least {PREFIX_BYTES} header bytes, "
            f"found {len(raw)}"
        )
    if raw[:2] != b"\x00\x00":
        raise ValueError(
            f"{where} has bad magic bytes: expected 00 00, found {raw[:2].hex(' ')}"
        )
    code, ndim = raw[2], raw[3]
    if code not in IDX_TYPES:
        known = ", ".join(f"0x{c:02X}" for c in IDX_TYPES)
        raise ValueError(
            f"{where} has unknown type byte: expected one of {known}, found 0x{code:02X}"
        )
    if ndim < 1:
        raise ValueError(f"{where} must have ndim >= 1; found ndim {ndim}")
    header = PREFIX_BYTES + DIM_BYTES * ndim
    if len(raw) < header:
        raise ValueError(
            f"{where} is truncated: expected at least {header} header bytes for "
            f"{ndim} dimensions, found {len(raw)}"
        )
    shape = tuple(int(d) for d in np.frombuffer(raw, ">u4", count=ndim, offset=4))
    dtype = IDX_TYPES[code]
    # Python ints, so huge headers cannot overflow the expected size.
    expected = header + math.prod(shape) * dtype.itemsize
    if len(raw) != expected:
        problem = "is truncated" if len(raw) < expected else "has trailing bytes"
        raise ValueError(
            f"{where} {problem}: expected {expected} bytes ({header}-byte header + "
            f"{shape} values of {dtype.itemsize} bytes), found {len(raw)}"
        )
    data = np.frombuffer(raw, dtype, offset=header).reshape(shape)
    # astype copies into native byte order and a writable buffer.
    data = data.astype(dtype.newbyteorder("="))
    if data.dtype.kind == "f":
        bad = int(data.size - np.count_nonzero(np.isfinite(data)))
        if bad:
            raise ValueError(f"{where} must be finite; found {bad} NaN/inf values")
    return data


def idx(
    images: str | os.PathLike[str],
    labels: str | os.PathLike[str] | None = None,
    *,
    dtype: DTypeLike = np.float32,
) -> Dataset:
    """Load an image IDX file and an optional label IDX file as a Dataset.

    Parameters
    ----------
    images : str or os.PathLike
        IDX file of shape [N, ...] (e.g. [N, 28, 28] for MNIST).
    labels : str or os.PathLike, optional
        IDX file of integer labels, shape [N]. Without it the data is
        unlabelled: ``y`` is all -1 (scikit-learn's convention) and
        ``classes`` is empty.
    dtype : floating dtype, default np.float32
        dtype of ``x``.

    Returns
    -------
    Dataset
        ``x`` [N, prod(...)] (uint8 images divided by 255, other types kept
        as they are), ``y`` int32 [N] and ``classes == ("0", ..., str(max_label))``.

    Raises
    ------
    ValueError
        On malformed files (see :func:`read_idx`), labels that are not 1-D
        non-negative integers, or a label count that differs from N.

    Examples
    --------
    >>> import os, tempfile
    >>> folder = tempfile.mkdtemp()
    >>> header = bytes([0, 0, 8, 3, 0, 0, 0, 2, 0, 0, 0, 1, 0, 0, 0, 2])  # uint8 [2, 1, 2]
    >>> with open(os.path.join(folder, "images"), "wb") as f:
    ...     _ = f.write(header + bytes([0, 255, 51, 0]))
    >>> with open(os.path.join(folder, "labels"), "wb") as f:
    ...     _ = f.write(bytes([0, 0, 0x08, 1, 0, 0, 0, 2, 1, 0]))
    >>> data = idx(os.path.join(folder, "images"), os.path.join(folder, "labels"))
    >>> data.x.tolist(), data.y.tolist(), data.classes
    ([[0.0, 1.0], [0.20000000298023224, 0.0]], [1, 0], ('0', '1'))
    """
    dtype = np.dtype(dtype)
    if not np.issubdtype(dtype, np.floating):
        raise ValueError(f"dtype must be a floating dtype; got {dtype}")
    pixels = read_idx(images)
    n = pixels.shape[0]
    x = pixels.reshape(n, math.prod(pixels.shape[1:]))
    # uint8 is the MNIST pixel convention (0..255); other types carry real values.
    x = x / 255.0 if x.dtype == np.uint8 else x
    x = x.astype(dtype)
    check_features("images", x, ndim=2)

    if labels is None:
        return Dataset(x, np.full(n, -1, dtype=np.int32), ())
    y = read_idx(labels)
    if y.ndim != 1:
        raise ValueError(f"labels in {labels} must be 1-D [N]; got shape {y.shape}")
    if y.shape[0] != n:
        raise ValueError(
            f"images and labels must have the same N: images {images} has shape "
            f"{pixels.shape}, labels {labels} has shape {y.shape}"
        )
    num_classes = int(y.max()) + 1 if n else 0
    # max(..., 1) so all-negative labels report their range, not num_classes.
    check_labels(f"labels in {labels}", y, max(num_classes, 1))
    return Dataset(x, y.astype(np.int32), tuple(str(k) for k in range(num_classes)))
