"""Tests for bayes_snn.analysis.plots (headless, Agg backend)."""

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from matplotlib.axes import Axes  # noqa: E402

from bayes_snn.analysis.metrics import ece, reliability  # noqa: E402
from bayes_snn.analysis.plots import (  # noqa: E402
    plot_confidence_histogram,
    plot_reliability,
    plot_uncertainty,
)


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


@pytest.fixture
def data():
    rng = np.random.default_rng(0)
    probs = rng.dirichlet(np.full(5, 0.3), size=400)
    y = np.minimum((rng.random((400, 1)) > probs.cumsum(axis=1)).sum(axis=1), 4)
    return probs, y


def _is_diagonal(line):
    return np.allclose(line.get_xdata(), [0, 1]) and np.allclose(line.get_ydata(), [0, 1])


def test_reliability_artists(data, tmp_path):
    probs, y = data
    ax = plot_reliability(probs, y, n_bins=10, label="model")
    assert isinstance(ax, Axes)
    rel = reliability(probs, y, n_bins=10)
    assert len(ax.patches) == np.count_nonzero(rel.counts)
    heights = sorted(p.get_height() for p in ax.patches)
    np.testing.assert_allclose(heights, sorted(rel.accuracy[rel.counts > 0]))
    assert any(_is_diagonal(line) for line in ax.lines)
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert f"model (ECE = {ece(probs, y, n_bins=10):.3f})" in legend
    ax.figure.savefig(tmp_path / "reliability.png")
    assert (tmp_path / "reliability.png").stat().st_size > 0


def test_reliability_on_given_ax_overlays_with_one_diagonal(data):
    probs, y = data
    _, ax = plt.subplots()
    sharp = probs**4 / (probs**4).sum(axis=1, keepdims=True)
    assert plot_reliability(probs, y, ax=ax, label="a") is ax
    assert plot_reliability(sharp, y, ax=ax, label="b") is ax
    assert sum(_is_diagonal(line) for line in ax.lines) == 1
    assert len(ax.get_legend().get_texts()) == 3


def test_confidence_histogram_without_labels(data, tmp_path):
    probs, _ = data
    ax = plot_confidence_histogram(probs, n_bins=12)
    assert isinstance(ax, Axes)
    assert len(ax.patches) == 12
    assert sum(p.get_height() for p in ax.patches) == len(probs)
    ax.figure.savefig(tmp_path / "confidence.png")


def test_confidence_histogram_split_matches_reliability_counts(data, tmp_path):
    probs, y = data
    _, ax = plt.subplots()
    assert plot_confidence_histogram(probs, y, n_bins=8, ax=ax) is ax
    assert len(ax.patches) == 16  # correct and incorrect bars per bin
    # Stacked bars: the top of each "incorrect" bar is the bin's total count.
    tops = [p.get_y() + p.get_height() for p in ax.patches[8:]]
    np.testing.assert_array_equal(tops, reliability(probs, y, n_bins=8).counts)
    assert {"correct", "incorrect"} <= {t.get_text() for t in ax.get_legend().get_texts()}
    ax.figure.savefig(tmp_path / "confidence_split.png")


def test_uncertainty_in_and_out(data, tmp_path):
    probs, _ = data
    rng = np.random.default_rng(1)
    probs_out = rng.dirichlet(np.full(5, 3.0), size=200)  # flatter -> higher entropy
    ax = plot_uncertainty(probs, probs_out, n_bins=20)
    assert isinstance(ax, Axes)
    assert len(ax.patches) == 40
    texts = [t.get_text() for t in ax.get_legend().get_texts()]
    assert texts[0] == "in-distribution" and texts[1].startswith("OOD (AUROC = ")
    assert ax.get_xlim() == pytest.approx((0.0, np.log(5)))
    ax.figure.savefig(tmp_path / "uncertainty.png")


def test_uncertainty_in_only_on_given_ax(data):
    probs, _ = data
    _, ax = plt.subplots()
    assert plot_uncertainty(probs, ax=ax) is ax
    assert len(ax.patches) == 30


def test_plot_input_errors(data):
    probs, y = data
    with pytest.raises(ValueError, match=r"probs_out must have C = 5 columns to match probs_in; got 2"):
        plot_uncertainty(probs, [[0.5, 0.5]])
    with pytest.raises(ValueError, match=r"probs_in must have shape \[N_in, C\]"):
        plot_uncertainty(probs[0])
    with pytest.raises(ValueError, match=r"n_bins must be an integer >= 1"):
        plot_confidence_histogram(probs, n_bins=0)
    with pytest.raises(ValueError, match=r"y must have length N = 400"):
        plot_reliability(probs, y[:3])


def test_importing_plots_does_not_import_pyplot():
    import os
    import subprocess
    import sys
    from pathlib import Path

    import bayes_snn.analysis.plots as plots

    # A fresh interpreter is needed because this one already imported pyplot.
    root = str(Path(plots.__file__).resolve().parents[2])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([root, os.environ.get("PYTHONPATH", "")])}
    code = "import sys, bayes_snn.analysis.plots; print('matplotlib.pyplot' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env)
    assert out.stdout.strip() == "False"
