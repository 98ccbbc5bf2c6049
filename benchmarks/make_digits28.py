"""Write scikit-learn's digits at MNIST's size as MNIST-named IDX files (for ``idx:DIR``).

Each 8x8 image is enlarged to 24x24 (3x3 blocks) with a 2-pixel border: 28x28 = 784 inputs,
the width of MNIST, with the same train/test split as ``presets.load_dataset("digits")``.
This measures what a wide input costs (for example SEP's ``gaussian_update``) on a real
classification task without downloading MNIST; the benchmarks read it through the same
IDX loader as ``bayes-snn fit --dataset idx:DIR``.

Usage::

    python benchmarks/make_digits28.py DIR
    python benchmarks/sep_vs_surrogate.py --out wide.json --datasets idx:DIR --weights gaussian \
        --gaussian-update taylor
"""

from __future__ import annotations

import argparse
import struct
import sys
from pathlib import Path

import numpy as np


def _write_idx(path: Path, array: np.ndarray) -> None:
    """An unsigned-byte IDX file: magic ``0 0 0x08 ndim``, big-endian sizes, then the data."""
    with open(path, "wb") as f:
        f.write(struct.pack(">BBBB", 0, 0, 0x08, array.ndim))
        f.write(struct.pack(f">{array.ndim}I", *array.shape))
        f.write(array.astype(np.uint8).tobytes())


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("dir", type=Path, help="folder for the four IDX files (created if missing)")
    args = p.parse_args(argv)

    from bayes_snn import datasets

    args.dir.mkdir(parents=True, exist_ok=True)
    for split, stem in (("train", "train"), ("test", "t10k")):
        data = datasets.digits(split)
        images = np.kron(np.rint(255 * data.x.reshape(-1, 8, 8)), np.ones((1, 3, 3)))
        images = np.pad(images, ((0, 0), (2, 2), (2, 2)))
        _write_idx(args.dir / f"{stem}-images-idx3-ubyte", images)
        _write_idx(args.dir / f"{stem}-labels-idx1-ubyte", np.asarray(data.y))
        print(f"{split}: {images.shape[0]} images of {images.shape[1]}x{images.shape[2]} -> {args.dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
