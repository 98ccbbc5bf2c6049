"""Plots of calibration and predictive uncertainty.

``matplotlib.pyplot`` is imported inside the functions, not at module level,
so importing ``bayes_snn`` never loads pyplot or selects a GUI backend for
users who do not plot. No function calls ``plt.show``; each returns the Axes
it drew on so the caller decides how to display or save it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
from numpy.typing import ArrayLike

from .metrics import (
    _check_classification,
    _check_n_bins,
    _check_probs,
    _confidence_bins,
    _entropy,
    _expected_gap,
    ood_auroc,
    reliability,
)

if TYPE_CHECKING:
    from matplotlib.axes import Axes

__all__ = ["plot_confidence_histogram", "plot_reliability", "plot_uncertainty"]

# Tags the y = x line so repeated calls on one Axes (to compare models) draw it once.
_DIAGONAL_GID = "bayes_snn-reliability-diagonal"


def _get_ax(ax: Axes | None) -> Axes:
    if ax is not None:
        return ax
    import matplotlib.pyplot as plt

    _, new_ax = plt.subplots()
    return new_ax


def plot_reliability(
    probs: ArrayLike,
    y: ArrayLike,
    n_bins: int = 15,
    ax: Axes | None = None,
    label: str | None = None,
) -> Axes:
    """Reliability diagram: accuracy per confidence bin against the diagonal.

    One bar is drawn per non-empty bin, spanning the bin and as high as the
    bin's accuracy; a calibrated model's bars touch the dashed ``y = x`` line.
    Call again with the same ``ax`` and another ``label`` to overlay models.

    Parameters
    ----------
    probs : array-like [N, C]
        Predicted class probabilities; rows sum to 1.
    y : array-like of int [N]
        True labels in ``[0, C)``.
    n_bins : int, default 15
        Number of equal-width confidence bins (see ``metrics.reliability``).
    ax : matplotlib.axes.Axes, optional
        Axes to draw on; a new figure is created if omitted.
    label : str, optional
        Legend entry for this model; the ECE is appended to it.

    Returns
    -------
    matplotlib.axes.Axes

    Examples
    --------
    >>> import numpy as np
    >>> probs = np.array([[0.9, 0.1], [0.6, 0.4], [0.1, 0.9]])
    >>> ax = plot_reliability(probs, [0, 1, 1], n_bins=5, label="SNN")
    >>> len(ax.patches)  # bins (0.8, 1] and (0.4, 0.6] are non-empty
    2
    """
    rel = reliability(probs, y, n_bins)
    ax = _get_ax(ax)
    full = rel.counts > 0
    ece_text = f"ECE = {_expected_gap(rel):.3f}"
    ax.bar(
        rel.edges[:-1][full],
        rel.accuracy[full],
        width=np.diff(rel.edges)[full],
        align="edge",
        alpha=0.6,
        edgecolor="black",
        label=ece_text if label is None else f"{label} ({ece_text})",
    )
    if not any(line.get_gid() == _DIAGONAL_GID for line in ax.lines):
        ax.plot([0, 1], [0, 1], "--", color="gray", label="perfect calibration", gid=_DIAGONAL_GID)
    ax.set(xlim=(0, 1), ylim=(0, 1), xlabel="Confidence", ylabel="Accuracy")
    ax.set_title("Reliability diagram")
    ax.legend(loc="upper left")
    return ax


def plot_confidence_histogram(
    probs: ArrayLike,
    y: ArrayLike | None = None,
    n_bins: int = 15,
    ax: Axes | None = None,
) -> Axes:
    """Histogram of top-label confidence, split into correct / incorrect if ``y`` is given.

    Bins match those of the reliability diagram, so the bar heights are its
    bin counts. Dashed line: mean confidence; solid line: accuracy (with
    ``y``). Confidence to the right of accuracy means over-confidence.

    Parameters
    ----------
    probs : array-like [N, C]
        Predicted class probabilities; rows sum to 1.
    y : array-like of int [N], optional
        True labels in ``[0, C)``.
    n_bins : int, default 15
        Number of equal-width bins over [0, 1].
    ax : matplotlib.axes.Axes, optional
        Axes to draw on; a new figure is created if omitted.

    Returns
    -------
    matplotlib.axes.Axes
        With ``n_bins`` bars, or ``2 * n_bins`` stacked bars if ``y`` is given.

    Examples
    --------
    >>> ax = plot_confidence_histogram([[0.9, 0.1], [0.4, 0.6]], [0, 0], n_bins=10)
    >>> len(ax.patches)
    20
    """
    if y is None:
        p, labels = _check_probs(probs), None
    else:
        p, labels = _check_classification(probs, y)
    _check_n_bins(n_bins)
    conf = p.max(axis=1)
    edges, idx = _confidence_bins(conf, n_bins)
    ax = _get_ax(ax)
    bar = {"width": np.diff(edges), "align": "edge", "edgecolor": "black"}
    if labels is None:
        ax.bar(edges[:-1], np.bincount(idx, minlength=n_bins), label="all", **bar)
    else:
        correct = p.argmax(axis=1) == labels
        n_right = np.bincount(idx[correct], minlength=n_bins)
        n_wrong = np.bincount(idx[~correct], minlength=n_bins)
        ax.bar(edges[:-1], n_right, color="tab:green", label="correct", **bar)
        ax.bar(edges[:-1], n_wrong, bottom=n_right, color="tab:red", label="incorrect", **bar)
        ax.axvline(correct.mean(), color="black", label=f"accuracy = {correct.mean():.3f}")
    ax.axvline(conf.mean(), color="black", linestyle="--", label=f"mean confidence = {conf.mean():.3f}")
    ax.set(xlim=(0, 1), xlabel="Top-label confidence", ylabel="Count")
    ax.set_title("Confidence histogram")
    ax.legend(loc="upper left")
    return ax


def plot_uncertainty(
    probs_in: ArrayLike,
    probs_out: ArrayLike | None = None,
    ax: Axes | None = None,
    n_bins: int = 30,
) -> Axes:
    """Histograms of predictive entropy, in-distribution vs out-of-distribution.

    Both histograms are density-normalised so sets of different sizes
    compare; the OOD legend entry reports the AUROC of entropy as an OOD
    score (see ``metrics.ood_auroc``).

    Parameters
    ----------
    probs_in : array-like [N_in, C]
        Predicted probabilities on in-distribution data.
    probs_out : array-like [N_out, C], optional
        Predicted probabilities on OOD data, from the same model (same ``C``).
    ax : matplotlib.axes.Axes, optional
        Axes to draw on; a new figure is created if omitted.
    n_bins : int, default 30
        Number of equal-width bins over ``[0, log C]``.

    Returns
    -------
    matplotlib.axes.Axes
        With ``n_bins`` bars per histogram.

    Examples
    --------
    >>> ax = plot_uncertainty([[0.9, 0.1], [0.8, 0.2]], [[0.5, 0.5], [0.6, 0.4]], n_bins=10)
    >>> len(ax.patches)
    20
    """
    p_in = _check_probs(probs_in, "probs_in", "[N_in, C]")
    _check_n_bins(n_bins)
    n_classes = p_in.shape[1]
    # Entropy lies in [0, log C]; C = 1 would give zero-width bins, so use at least log 2.
    edges = np.linspace(0.0, np.log(max(n_classes, 2)), n_bins + 1)
    h_in = _entropy(p_in)
    ax = _get_ax(ax)
    ax.hist(h_in, bins=edges, density=True, alpha=0.6, label="in-distribution")
    if probs_out is not None:
        p_out = _check_probs(probs_out, "probs_out", "[N_out, C]")
        if p_out.shape[1] != n_classes:
            raise ValueError(
                f"probs_out must have C = {n_classes} columns to match probs_in; got {p_out.shape[1]}"
            )
        h_out = _entropy(p_out)
        auroc = ood_auroc(h_in, h_out)
        ax.hist(h_out, bins=edges, density=True, alpha=0.6, label=f"OOD (AUROC = {auroc:.3f})")
    ax.set(xlim=(edges[0], edges[-1]), xlabel="Predictive entropy (nats)", ylabel="Density")
    ax.set_title("Predictive uncertainty")
    ax.legend(loc="best")  # OOD mass sits at the right edge, so let matplotlib choose
    return ax
