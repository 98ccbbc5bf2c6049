"""Datasets and fixed-size minibatching.

- :func:`yin_yang`: the Yin-Yang benchmark, bit-identical to the published generator.
- :func:`digits`: scikit-learn's 8x8 digits (needs the ``datasets`` extra).
- :func:`idx` / :func:`read_idx`: user-supplied MNIST-format IDX files.
- :func:`batches` / :func:`minibatch_indices`: equal-shape minibatches with a
  padding mask, so a jitted step compiles once.

Examples
--------
>>> import jax
>>> from bayes_snn.datasets import batches, yin_yang
>>> train = yin_yang("train", size=100)
>>> batch = next(batches(jax.random.key(0), train, 32))
>>> batch.x.shape, batch.mask.shape
((32, 4), (32,))
"""

from bayes_snn.datasets.batching import (
    Batch,
    Dataset,
    batch_axis,
    batches,
    minibatch_indices,
)
from bayes_snn.datasets.digits import digits
from bayes_snn.datasets.idx import idx, read_idx
from bayes_snn.datasets.yinyang import yin_yang

__all__ = [
    "Batch",
    "Dataset",
    "batch_axis",
    "batches",
    "digits",
    "idx",
    "minibatch_indices",
    "read_idx",
    "yin_yang",
]
