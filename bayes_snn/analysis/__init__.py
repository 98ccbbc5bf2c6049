"""Uncertainty analysis: calibration metrics ArviZ lacks, plots, and ArviZ conversion.

Plotting functions import matplotlib's pyplot only when called.
"""

from .metrics import (
    Reliability,
    accuracy,
    brier,
    classification_metrics,
    ece,
    entropy,
    gaussian_nll,
    mce,
    mutual_information,
    nll,
    ood_auroc,
    regression_metrics,
    reliability,
    rmse,
)
from .plots import plot_confidence_histogram, plot_reliability, plot_uncertainty

__all__ = [
    "Reliability",
    "accuracy",
    "brier",
    "classification_metrics",
    "ece",
    "entropy",
    "gaussian_nll",
    "mce",
    "mutual_information",
    "nll",
    "ood_auroc",
    "regression_metrics",
    "reliability",
    "rmse",
    "plot_confidence_histogram",
    "plot_reliability",
    "plot_uncertainty",
]
