"""Calibration and uncertainty metrics for posterior predictions.

ArviZ diagnoses the posterior itself (R-hat, ESS, LOO); the functions here
score the *predictions* that a posterior makes: accuracy, proper scoring
rules (NLL, Brier), calibration (ECE, MCE, reliability bins), uncertainty
decomposition (entropy, mutual information) and out-of-distribution detection
(AUROC).

Conventions
-----------
* Classification inputs are ``probs`` float [N, C], one probability vector
  per row (e.g. the posterior predictive mean), and ``y`` int [N].
* Any array-like is accepted (NumPy, JAX, nested lists); computation is done
  in float64 NumPy because these are evaluation functions, not hot loops.
* Every function validates its inputs and raises ``ValueError`` naming the
  argument, what was expected and what was received.
* Scalar metrics are returned as Python ``float``.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from numpy.typing import ArrayLike

__all__ = [
    "Reliability",
    "accuracy",
    "brier",
    "classification_metrics",
    "ece",
    "ece_floor",
    "entropy",
    "gaussian_nll",
    "mce",
    "mutual_information",
    "nll",
    "ood_auroc",
    "regression_metrics",
    "reliability",
    "rmse",
]

# Probabilities are clipped here before taking logs so that a confident wrong
# prediction costs -log(1e-12) ~= 27.6 nats instead of inf, which would make
# any average over a test set useless.
PROB_FLOOR = 1e-12
# Float32 softmax outputs (the JAX default) routinely miss 1 by ~1e-7, and
# averaging posterior draws adds more rounding; 1e-4 tolerates that while
# still catching logits or unnormalised scores passed by mistake.
ROW_SUM_TOL = 1e-4


class Reliability(NamedTuple):
    """Per-bin statistics of a reliability diagram.

    Attributes
    ----------
    edges : np.ndarray [n_bins + 1]
        Bin edges, equally spaced over [0, 1]. Bin ``b`` is
        ``(edges[b], edges[b + 1]]``; the first bin also contains 0.
    confidence : np.ndarray [n_bins]
        Mean top-label confidence of the examples in each bin (NaN if empty).
    accuracy : np.ndarray [n_bins]
        Fraction of correct top-label predictions in each bin (NaN if empty).
    counts : np.ndarray [n_bins]
        Number of examples in each bin (int).
    """

    edges: np.ndarray
    confidence: np.ndarray
    accuracy: np.ndarray
    counts: np.ndarray


# --------------------------------------------------------------------------
# Validation helpers
# --------------------------------------------------------------------------


def _as_array(x: ArrayLike, name: str, spec: str) -> np.ndarray:
    """Convert to float64; check the rank given by ``spec`` (e.g. "[N, C]"), size and finiteness."""
    try:
        arr = np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{name} must be a numeric array {spec}; got {type(x).__name__}") from err
    ndim = spec.count(",") + 1
    if arr.ndim != ndim:
        raise ValueError(f"{name} must have shape {spec}; got {arr.shape}")
    if arr.size == 0:
        raise ValueError(f"{name} must be non-empty; got shape {arr.shape}")
    n_bad = int(np.count_nonzero(~np.isfinite(arr)))
    if n_bad:
        raise ValueError(f"{name} must be finite; got {n_bad} non-finite value(s)")
    return arr


def _check_simplex(arr: np.ndarray, name: str) -> None:
    """Check that every vector along the last axis is a probability vector."""
    lo, hi = arr.min(), arr.max()
    if lo < 0.0 or hi > 1.0:
        raise ValueError(
            f"{name} must contain probabilities in [0, 1]; got values in [{lo:.6g}, {hi:.6g}]"
        )
    sums = arr.sum(axis=-1)
    worst = np.unravel_index(np.argmax(np.abs(sums - 1.0)), sums.shape)
    if abs(sums[worst] - 1.0) > ROW_SUM_TOL:
        where = tuple(int(i) for i in worst)
        row = where[0] if len(where) == 1 else where
        raise ValueError(
            f"rows of {name} must sum to 1 (tolerance {ROW_SUM_TOL:g}); "
            f"got worst row sum {sums[worst]:.6g} at row {row}"
        )


def _check_probs(probs: ArrayLike, name: str = "probs", spec: str = "[N, C]") -> np.ndarray:
    arr = _as_array(probs, name, spec)
    _check_simplex(arr, name)
    return arr


def _check_labels(y: ArrayLike, n: int, n_classes: int) -> np.ndarray:
    """Validate labels against the ``n`` rows and ``n_classes`` columns of probs."""
    arr = _as_array(y, "y", "[N]")
    if arr.shape[0] != n:
        raise ValueError(f"y must have length N = {n} to match probs; got {arr.shape[0]}")
    # Float labels are accepted when integral because JAX pipelines often
    # carry labels as float arrays.
    frac = arr[arr != np.round(arr)]
    if frac.size:
        raise ValueError(f"y must contain integer class labels; got non-integer value {frac[0]:g}")
    lo, hi = int(arr.min()), int(arr.max())
    if lo < 0 or hi >= n_classes:
        raise ValueError(
            f"y must contain labels in [0, {n_classes}) (C = {n_classes} columns of probs); "
            f"got labels in [{lo}, {hi}]"
        )
    return arr.astype(np.int64)


def _check_classification(probs: ArrayLike, y: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    p = _check_probs(probs)
    return p, _check_labels(y, p.shape[0], p.shape[1])


def _check_n_bins(n_bins: int) -> None:
    if isinstance(n_bins, bool) or not isinstance(n_bins, (int, np.integer)) or n_bins < 1:
        raise ValueError(f"n_bins must be an integer >= 1; got {n_bins!r}")


def _entropy(p: np.ndarray) -> np.ndarray:
    """Entropy in nats along the last axis, with 0 log 0 = 0 (no validation)."""
    safe = np.where(p > 0, p, 1.0)  # log(1) = 0 makes zero-probability terms vanish
    # 0.0 - x rather than -x so that certain predictions give +0.0, not -0.0.
    return 0.0 - np.sum(p * np.log(safe), axis=-1)


# --------------------------------------------------------------------------
# Classification
# --------------------------------------------------------------------------


def accuracy(probs: ArrayLike, y: ArrayLike) -> float:
    """Top-1 accuracy.

    Parameters
    ----------
    probs : array-like [N, C]
        Predicted class probabilities; rows sum to 1.
    y : array-like of int [N]
        True labels in ``[0, C)``.

    Returns
    -------
    float
        Fraction of examples whose most probable class (first one on ties)
        equals the label.

    Examples
    --------
    >>> accuracy([[0.9, 0.1], [0.3, 0.7], [0.6, 0.4]], [0, 1, 1])
    0.6666666666666666
    """
    p, y = _check_classification(probs, y)
    return float(np.mean(p.argmax(axis=1) == y))


def nll(probs: ArrayLike, y: ArrayLike) -> float:
    """Mean negative log-likelihood of the labels, in nats.

    Probabilities are clipped below at ``PROB_FLOOR`` (1e-12) before the log,
    so an example whose true class got probability 0 contributes about 27.6
    nats rather than ``inf``.

    Parameters
    ----------
    probs : array-like [N, C]
        Predicted class probabilities; rows sum to 1.
    y : array-like of int [N]
        True labels in ``[0, C)``.

    Returns
    -------
    float
        ``mean_i -log max(probs[i, y[i]], 1e-12)``.

    Examples
    --------
    >>> round(nll([[0.5, 0.5], [0.25, 0.75]], [0, 1]), 6)  # (log 2 + log 4/3) / 2
    0.490415
    """
    p, y = _check_classification(probs, y)
    p_true = p[np.arange(p.shape[0]), y]
    return float(-np.mean(np.log(np.maximum(p_true, PROB_FLOOR))))


def brier(probs: ArrayLike, y: ArrayLike) -> float:
    """Multi-class Brier score.

    Parameters
    ----------
    probs : array-like [N, C]
        Predicted class probabilities; rows sum to 1.
    y : array-like of int [N]
        True labels in ``[0, C)``.

    Returns
    -------
    float
        ``mean_i sum_c (probs[i, c] - onehot(y[i])_c)^2``, in ``[0, 2]``:
        0 for confident correct predictions, 2 for confident wrong ones and
        ``1 - 1/C`` for the uniform predictor.

    Examples
    --------
    >>> round(brier([[1.0, 0.0], [0.5, 0.5]], [0, 0]), 6)  # (0 + 0.5) / 2
    0.25
    """
    p, y = _check_classification(probs, y)
    onehot = np.eye(p.shape[1])[y]
    return float(np.mean(np.sum((p - onehot) ** 2, axis=1)))


def _confidence_bins(conf: np.ndarray, n_bins: int) -> tuple[np.ndarray, np.ndarray]:
    """Equal-width edges [n_bins + 1] over [0, 1] and the bin index [N] of each confidence."""
    # k / n_bins is correctly rounded, so a confidence written as, e.g., 0.3
    # equals its edge exactly (linspace's k * (1 / n_bins) can be an ulp off).
    edges = np.arange(n_bins + 1) / n_bins
    # side="left" sends a confidence equal to an edge into the bin that edge
    # closes, giving (lo, hi] bins; 0 lands at index -1 and joins the first bin.
    return edges, np.maximum(np.searchsorted(edges, conf, side="left") - 1, 0)


def reliability(probs: ArrayLike, y: ArrayLike, n_bins: int = 15) -> Reliability:
    """Bin top-label confidence and accuracy for a reliability diagram.

    Parameters
    ----------
    probs : array-like [N, C]
        Predicted class probabilities; rows sum to 1.
    y : array-like of int [N]
        True labels in ``[0, C)``.
    n_bins : int, default 15
        Number of equal-width bins over [0, 1]. Bin ``b`` is
        ``(b / n_bins, (b + 1) / n_bins]``; the first bin also contains 0.

    Returns
    -------
    Reliability
        ``edges`` [n_bins + 1], ``confidence`` [n_bins], ``accuracy``
        [n_bins], ``counts`` [n_bins]. ``confidence`` and ``accuracy`` are
        NaN for empty bins.

    Examples
    --------
    >>> r = reliability([[0.9, 0.1], [0.6, 0.4], [0.3, 0.7]], [0, 1, 1], n_bins=2)
    >>> r.counts.tolist(), r.accuracy.tolist()
    ([0, 3], [nan, 0.6666666666666666])
    """
    p, y = _check_classification(probs, y)
    _check_n_bins(n_bins)
    conf = p.max(axis=1)
    correct = (p.argmax(axis=1) == y).astype(np.float64)
    edges, idx = _confidence_bins(conf, n_bins)
    counts = np.bincount(idx, minlength=n_bins)
    with np.errstate(invalid="ignore"):  # 0 / 0 -> NaN for empty bins, by design
        mean_conf = np.bincount(idx, weights=conf, minlength=n_bins) / counts
        mean_acc = np.bincount(idx, weights=correct, minlength=n_bins) / counts
    return Reliability(edges=edges, confidence=mean_conf, accuracy=mean_acc, counts=counts)


def _bin_gaps(rel: Reliability) -> tuple[np.ndarray, np.ndarray]:
    """|accuracy - confidence| and counts of the non-empty bins."""
    full = rel.counts > 0
    return np.abs(rel.accuracy[full] - rel.confidence[full]), rel.counts[full]


def _expected_gap(rel: Reliability) -> float:
    """ECE from already computed bins (shared with the reliability plot)."""
    gaps, counts = _bin_gaps(rel)
    return float(np.sum(gaps * counts) / np.sum(counts))


def ece(probs: ArrayLike, y: ArrayLike, n_bins: int = 15) -> float:
    """Expected calibration error of the top-label confidence.

    Parameters
    ----------
    probs : array-like [N, C]
        Predicted class probabilities; rows sum to 1.
    y : array-like of int [N]
        True labels in ``[0, C)``.
    n_bins : int, default 15
        Number of equal-width bins; see :func:`reliability`.

    Returns
    -------
    float
        ``sum_b (n_b / N) |accuracy_b - confidence_b|`` over non-empty bins,
        in ``[0, 1]``.

    Examples
    --------
    >>> probs = [[0.9, 0.1], [0.8, 0.2], [0.3, 0.7], [0.4, 0.6]]
    >>> round(ece(probs, [0, 1, 1, 1], n_bins=4), 6)  # |0.5 - 0.85|/2 + |1 - 0.65|/2
    0.35
    """
    return _expected_gap(reliability(probs, y, n_bins))


def mce(probs: ArrayLike, y: ArrayLike, n_bins: int = 15) -> float:
    """Maximum calibration error: the largest bin gap.

    Parameters
    ----------
    probs : array-like [N, C]
        Predicted class probabilities; rows sum to 1.
    y : array-like of int [N]
        True labels in ``[0, C)``.
    n_bins : int, default 15
        Number of equal-width bins; see :func:`reliability`.

    Returns
    -------
    float
        ``max_b |accuracy_b - confidence_b|`` over non-empty bins, in ``[0, 1]``.

    Examples
    --------
    >>> probs = [[0.9, 0.1], [0.8, 0.2], [0.3, 0.7], [0.4, 0.6]]
    >>> round(mce(probs, [0, 1, 1, 1], n_bins=4), 6)
    0.35
    """
    gaps, _ = _bin_gaps(reliability(probs, y, n_bins))
    return float(np.max(gaps))


def entropy(probs: ArrayLike) -> np.ndarray:
    """Predictive (total) entropy of each probability vector, in nats.

    Parameters
    ----------
    probs : array-like [N, C]
        Predicted class probabilities; rows sum to 1.

    Returns
    -------
    np.ndarray [N]
        ``-sum_c p_c log p_c`` with ``0 log 0 = 0``; in ``[0, log C]``.

    Examples
    --------
    >>> entropy([[1.0, 0.0], [0.5, 0.5]]).round(6).tolist()
    [0.0, 0.693147]
    """
    return _entropy(_check_probs(probs))


def mutual_information(prob_samples: ArrayLike) -> np.ndarray:
    """Epistemic uncertainty: mutual information between label and parameters.

    Parameters
    ----------
    prob_samples : array-like [S, N, C]
        Class probabilities for each of ``S`` posterior draws.

    Returns
    -------
    np.ndarray [N]
        ``H(mean_s p_s) - mean_s H(p_s)`` in nats (the BALD score): zero when
        all draws agree, large when confident draws disagree. Bounded by
        ``log C``.

    Examples
    --------
    >>> agree = [[[0.9, 0.1]], [[0.9, 0.1]]]
    >>> disagree = [[[1.0, 0.0]], [[0.0, 1.0]]]
    >>> mutual_information(agree).tolist(), mutual_information(disagree).round(6).tolist()
    ([0.0], [0.693147])
    """
    ps = _check_probs(prob_samples, "prob_samples", "[S, N, C]")
    mi = _entropy(ps.mean(axis=0)) - _entropy(ps).mean(axis=0)
    # Entropy is concave so MI >= 0 exactly; clip the ~1e-16 rounding negatives.
    return np.maximum(mi, 0.0)


def ood_auroc(scores_in: ArrayLike, scores_out: ArrayLike) -> float:
    """AUROC for separating out-of-distribution from in-distribution examples.

    Higher scores should mean "more likely OOD" (e.g. predictive entropy or
    mutual information).

    Parameters
    ----------
    scores_in : array-like [N_in]
        Scores of in-distribution examples.
    scores_out : array-like [N_out]
        Scores of out-of-distribution examples.

    Returns
    -------
    float
        ``P(score_out > score_in) + 0.5 P(score_out == score_in)`` for a
        random pair; 1 is perfect separation, 0.5 chance. Computed from
        tie-averaged ranks (Mann-Whitney U) in O(n log n).

    Examples
    --------
    >>> ood_auroc([0.1, 0.2, 0.5], [0.4, 0.9])
    0.8333333333333334
    """
    s_in = _as_array(scores_in, "scores_in", "[N_in]")
    s_out = _as_array(scores_out, "scores_out", "[N_out]")
    n_in, n_out = s_in.size, s_out.size
    _, inverse, tie_counts = np.unique(
        np.concatenate([s_in, s_out]), return_inverse=True, return_counts=True
    )
    # 1-based rank of each distinct value, averaged over its ties, so a tied
    # in/out pair contributes exactly 1/2 to U.
    avg_rank = np.cumsum(tie_counts) - (tie_counts - 1) / 2.0
    rank_sum_out = np.sum(avg_rank[inverse[n_in:]])
    u_out = rank_sum_out - n_out * (n_out + 1) / 2.0
    return float(u_out / (float(n_in) * float(n_out)))


def ece_floor(probs: ArrayLike, n_bins: int = 15, num_draws: int = 1000, seed: int = 0) -> np.ndarray:
    """ECE of a *perfectly calibrated* classifier that predicts ``probs``: the sampling floor.

    Labels are drawn from ``probs`` themselves ``num_draws`` times and each draw is scored
    with :func:`ece`. On a finite test set even a calibrated model has ECE > 0; an observed
    ECE inside this distribution cannot be told apart from perfect calibration with this
    many examples, and two models whose ECEs both lie inside it cannot be ranked by ECE.

    Parameters
    ----------
    probs : array-like [N, C]
        Predicted class probabilities; rows sum to 1.
    n_bins : int, default 15
        Number of bins, as for :func:`ece`.
    num_draws : int, default 1000
        Label draws (Monte Carlo size of the returned distribution).
    seed : int, default 0
        Seed of the NumPy generator drawing the labels.

    Returns
    -------
    np.ndarray [num_draws]
        The ECE of every draw.

    Examples
    --------
    >>> probs = [[0.9, 0.1]] * 100
    >>> floor = ece_floor(probs, num_draws=2000)
    >>> 0.01 < float(floor.mean()) < 0.04   # sd of a 100-label accuracy at p = 0.9 is 0.03
    True
    """
    p = _check_probs(probs)
    _check_n_bins(n_bins)
    if isinstance(num_draws, bool) or not isinstance(num_draws, (int, np.integer)) or num_draws < 1:
        raise ValueError(f"num_draws must be a positive integer; got {num_draws!r}")
    conf, top = p.max(axis=1), p.argmax(axis=1)
    _, idx = _confidence_bins(conf, n_bins)
    onehot = np.eye(n_bins)[idx]  # [N, n_bins]
    counts = onehot.sum(axis=0)
    full = counts > 0
    # Inverse-CDF draws of every label at once: y = number of cumulative probabilities below u.
    u = np.random.default_rng(seed).random((num_draws, p.shape[0], 1))
    labels = np.minimum(np.sum(u > np.cumsum(p, axis=1)[None], axis=-1), p.shape[1] - 1)
    correct_per_bin = (labels == top).astype(np.float64) @ onehot  # [num_draws, n_bins]
    conf_per_bin = conf @ onehot
    gaps = np.abs(correct_per_bin[:, full] - conf_per_bin[full]) / counts[full]
    return np.sum(gaps * counts[full], axis=1) / p.shape[0]


def classification_metrics(probs: ArrayLike, y: ArrayLike, n_bins: int = 15) -> dict[str, float]:
    """Standard summary of a probabilistic classifier.

    Parameters
    ----------
    probs : array-like [N, C]
        Predicted class probabilities; rows sum to 1.
    y : array-like of int [N]
        True labels in ``[0, C)``.
    n_bins : int, default 15
        Number of bins for the ECE.

    Returns
    -------
    dict
        ``{"accuracy", "nll", "ece", "brier"}`` mapped to Python floats.

    Examples
    --------
    >>> m = classification_metrics([[0.8, 0.2], [0.3, 0.7]], [0, 1])
    >>> sorted(m), round(m["accuracy"], 3)
    (['accuracy', 'brier', 'ece', 'nll'], 1.0)
    """
    return {
        "accuracy": accuracy(probs, y),
        "nll": nll(probs, y),
        "ece": ece(probs, y, n_bins),
        "brier": brier(probs, y),
    }


# --------------------------------------------------------------------------
# Regression
# --------------------------------------------------------------------------


def _check_regression(mean: ArrayLike, y: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    m = _as_array(mean, "mean", "[N]")
    t = _as_array(y, "y", "[N]")
    if t.shape != m.shape:
        raise ValueError(f"y must have length N = {m.shape[0]} to match mean; got {t.shape[0]}")
    return m, t


def rmse(mean: ArrayLike, y: ArrayLike) -> float:
    """Root mean squared error of point predictions.

    Parameters
    ----------
    mean : array-like [N]
        Predicted means.
    y : array-like [N]
        Targets.

    Returns
    -------
    float
        ``sqrt(mean_i (mean[i] - y[i])^2)``.

    Examples
    --------
    >>> rmse([0.0, 0.0], [3.0, 4.0])  # sqrt((9 + 16) / 2)
    3.5355339059327378
    """
    m, t = _check_regression(mean, y)
    return float(np.sqrt(np.mean((m - t) ** 2)))


def gaussian_nll(mean: ArrayLike, var: ArrayLike, y: ArrayLike) -> float:
    """Mean Gaussian negative log density of the targets, in nats.

    Parameters
    ----------
    mean : array-like [N]
        Predictive means.
    var : float or array-like [N]
        Predictive variances (> 0); a scalar is shared by all examples
        (homoscedastic noise).
    y : array-like [N]
        Targets.

    Returns
    -------
    float
        ``mean_i [0.5 log(2 pi var_i) + (y_i - mean_i)^2 / (2 var_i)]``.

    Examples
    --------
    >>> round(gaussian_nll([0.0], [1.0], [0.0]), 6)  # 0.5 log(2 pi)
    0.918939
    """
    m, t = _check_regression(mean, y)
    v = np.asarray(var, dtype=np.float64)
    if v.ndim == 0:
        v = np.full_like(m, v)
    v = _as_array(v, "var", "[N]")
    if v.shape != m.shape:
        raise ValueError(f"var must be a scalar or have length N = {m.shape[0]}; got shape {v.shape}")
    if v.min() <= 0.0:
        raise ValueError(f"var must be > 0; got minimum {v.min():.6g}")
    return float(np.mean(0.5 * np.log(2.0 * np.pi * v) + (t - m) ** 2 / (2.0 * v)))


def regression_metrics(mean: ArrayLike, var: ArrayLike, y: ArrayLike) -> dict[str, float]:
    """Standard summary of a probabilistic regressor.

    Parameters
    ----------
    mean : array-like [N]
        Predictive means.
    var : float or array-like [N]
        Predictive variances (> 0).
    y : array-like [N]
        Targets.

    Returns
    -------
    dict
        ``{"rmse", "nll"}`` mapped to Python floats; ``nll`` is
        :func:`gaussian_nll`.

    Examples
    --------
    >>> m = regression_metrics([0.0, 1.0], 1.0, [0.0, 1.0])
    >>> m["rmse"], round(m["nll"], 6)
    (0.0, 0.918939)
    """
    return {"rmse": rmse(mean, y), "nll": gaussian_nll(mean, var, y)}
