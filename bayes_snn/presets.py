"""Ready-made pieces: named weight priors, datasets and the default classifier network.

The CLI and the benchmarks build their models here, so that "the default Yin-Yang run"
means the same network everywhere.

Example
-------
>>> model = classifier(4, 3, hidden=32, steps=8, weights="ternary")
>>> model.net.names
('direct_0', 'dense_0', 'lif_0', 'dense_1', 'meanmembrane_0')
"""

from __future__ import annotations

import math
from pathlib import Path

from . import datasets, encoders, priors, readouts
from .models import Classifier
from .network import Dense, Sequential
from .neurons import LIF, SpikeResponse

WEIGHTS = ("gaussian", "laplace", "binary", "ternary", "int:K")
DATASETS = ("yinyang", "digits", "idx:PATH")
# First-layer gain x sqrt(fan_in) for discrete weights with LIF neurons (``classifier``).
DISCRETE_LIF_GAIN = 16.0


def weight_prior(spec: str):
    """Prior named by ``spec``, each with unit variance so one network serves all.

    ``gaussian`` N(0, 1); ``laplace`` Laplace(0, 1/sqrt 2); ``binary`` {-1, +1};
    ``ternary`` {-s, 0, s} with P(0) = 1/3 and s = sqrt(3/2); ``int:K`` the signed K-bit
    grid scaled to span [-sqrt 3, sqrt 3] (variance ~1).
    """
    if spec == "gaussian":
        return priors.Normal(0.0, 1.0)
    if spec == "laplace":
        return priors.Laplace(0.0, 1.0 / math.sqrt(2.0))
    if spec == "binary":
        return priors.Binary(1.0)
    if spec == "ternary":
        return priors.Ternary(math.sqrt(1.5), 1.0 / 3.0)
    if spec.startswith("int:"):
        try:
            bits = int(spec[4:])
        except ValueError:
            raise ValueError(f"weights must look like int:K with an integer K; got {spec!r}") from None
        if not 1 <= bits <= 12:
            raise ValueError(f"weights int:K needs K in [1, 12]; got {spec!r}")
        return priors.IntegerGrid(bits, math.sqrt(3.0) / (2**bits - 1))
    raise ValueError(f"weights must be one of {', '.join(WEIGHTS)}; got {spec!r}")


def classifier(
    in_features: int,
    num_classes: int,
    *,
    hidden: int = 128,
    steps: int = 10,
    weights: str = "gaussian",
    neuron: str = "lif",
    readout_scale: float = 30.0,
    input_gain: float | None = None,
    device=None,
) -> Classifier:
    """Direct encoding -> Dense(hidden) -> LIF -> Dense(num_classes) -> mean membrane.

    ``neuron="single-step"`` gives the EP paper's model (one step, ``SpikeResponse``).
    ``readout_scale`` multiplies the logits; 30 gave calibrated point estimates on
    Yin-Yang and digits (smaller values make the fitted network underconfident).
    ``input_gain`` is the first Dense layer's gain and the standard deviation of its bias
    prior. By default it is ``DISCRETE_LIF_GAIN / sqrt(in_features)`` for discrete weights
    with LIF neurons, and otherwise the Dense default ``1 / sqrt(in_features)`` with a unit
    bias prior. The reason: a LIF unit's spike count rises from 0 to ``steps`` as its
    current crosses about one threshold, so how sharply a unit divides the input space is
    the slope of its current. Gaussian weights learn that slope; weights on a grid have a
    fixed size, and at the default gain a unit's count rose over the whole Yin-Yang square
    (SEP 88 % with binary weights, 99 % with gain 8).
    """
    prior = weight_prior(weights)
    if neuron == "lif":
        enc, cell = encoders.Direct(steps), LIF(beta=0.9, threshold=1.0)
    elif neuron == "single-step":
        enc, cell = encoders.Direct(1), SpikeResponse()
    else:
        raise ValueError(f"neuron must be 'lif' or 'single-step'; got {neuron!r}")
    if input_gain is None and neuron == "lif" and isinstance(prior, priors.DiscreteGrid):
        input_gain = DISCRETE_LIF_GAIN / math.sqrt(in_features)
    if input_gain is None:
        first = Dense(hidden, prior=prior)
    elif isinstance(input_gain, (int, float)) and not isinstance(input_gain, bool) and math.isfinite(input_gain) \
            and input_gain > 0:
        first = Dense(hidden, prior=prior, gain=float(input_gain), bias_prior=priors.Normal(0.0, float(input_gain)))
    else:
        raise ValueError(f"input_gain must be a positive finite number or None; got {input_gain!r}")
    net = Sequential(enc, first, cell, Dense(num_classes, prior=prior), readouts.MeanMembrane(scale=readout_scale))
    return Classifier(net, num_classes, device=device)


def load_dataset(spec: str) -> tuple[datasets.Dataset, datasets.Dataset]:
    """``(train, test)`` for ``yinyang``, ``digits`` or ``idx:DIR``.

    ``idx:DIR`` reads MNIST-named IDX files in DIR: ``train-images-idx3-ubyte``,
    ``train-labels-idx1-ubyte``, ``t10k-images-idx3-ubyte``, ``t10k-labels-idx1-ubyte``
    (each optionally with ``.gz``).
    """
    if spec == "yinyang":
        return datasets.yin_yang("train"), datasets.yin_yang("test")
    if spec == "digits":
        return datasets.digits("train"), datasets.digits("test")
    if spec.startswith("idx:"):
        folder = Path(spec[4:])
        if not folder.is_dir():
            raise ValueError(f"dataset idx:PATH needs a directory of IDX files; {folder} is not one")

        def find(stem):
            for name in (stem, stem + ".gz"):
                if (folder / name).is_file():
                    return folder / name
            raise ValueError(f"dataset {spec}: missing {stem}[.gz] in {folder}")

        train = datasets.idx(find("train-images-idx3-ubyte"), find("train-labels-idx1-ubyte"))
        test = datasets.idx(find("t10k-images-idx3-ubyte"), find("t10k-labels-idx1-ubyte"))
        classes = max(train.classes, test.classes, key=len)
        return train._replace(classes=classes), test._replace(classes=classes)
    raise ValueError(f"dataset must be one of {', '.join(DATASETS)}; got {spec!r}")


__all__ = ["WEIGHTS", "DATASETS", "weight_prior", "classifier", "load_dataset"]
