"""Tests for bayes_snn.analysis.metrics.

Tiers: exact values on hand-computed tiny inputs, limiting cases (perfect,
uniform, calibrated predictors), cross-checks against brute force, every
validation error path, and hypothesis property tests on random inputs.
"""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bayes_snn.analysis.metrics import (
    PROB_FLOOR,
    Reliability,
    _confidence_bins,
    accuracy,
    brier,
    classification_metrics,
    ece,
    ece_floor,
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

# Four examples, three classes. Top label / confidence / correct?
#   row 0: class 0, 0.70, y=0 -> correct
#   row 1: class 1, 0.60, y=0 -> wrong
#   row 2: class 2, 0.80, y=2 -> correct
#   row 3: class 0, 0.95, y=1 -> wrong
PROBS4 = np.array(
    [
        [0.70, 0.20, 0.10],
        [0.30, 0.60, 0.10],
        [0.10, 0.10, 0.80],
        [0.95, 0.05, 0.00],
    ]
)
Y4 = np.array([0, 0, 2, 1])


# ---------------------------------------------------------------- exact tier


def test_accuracy_hand():
    assert accuracy(PROBS4, Y4) == 0.5


def test_nll_hand():
    # -log of the true-class probabilities 0.70, 0.30, 0.80, 0.05, averaged.
    expected = -(math.log(0.7) + math.log(0.3) + math.log(0.8) + math.log(0.05)) / 4
    assert nll(PROBS4, Y4) == pytest.approx(expected, rel=1e-12)


def test_nll_zero_probability_is_large_but_finite():
    value = nll([[1.0, 0.0]], [1])
    assert value == pytest.approx(-math.log(PROB_FLOOR))
    assert math.isfinite(value)


def test_brier_hand():
    # row 0: 0.3^2 + 0.2^2 + 0.1^2          = 0.14
    # row 1: 0.7^2 + 0.6^2 + 0.1^2          = 0.86
    # row 2: 0.1^2 + 0.1^2 + 0.2^2          = 0.06
    # row 3: 0.95^2 + 0.95^2 + 0^2          = 1.805
    expected = (0.14 + 0.86 + 0.06 + 1.805) / 4
    assert brier(PROBS4, Y4) == pytest.approx(expected, rel=1e-12)


def test_reliability_and_ece_hand():
    # n_bins = 4: edges 0, .25, .5, .75, 1.
    #   bin (.5, .75]: rows 0, 1 -> confidence (.7 + .6)/2 = .65,  accuracy 1/2, gap .15
    #   bin (.75, 1]:  rows 2, 3 -> confidence (.8 + .95)/2 = .875, accuracy 1/2, gap .375
    # ECE = 2/4 * .15 + 2/4 * .375 = .2625;  MCE = .375.
    rel = reliability(PROBS4, Y4, n_bins=4)
    assert isinstance(rel, Reliability)
    np.testing.assert_allclose(rel.edges, [0, 0.25, 0.5, 0.75, 1.0])
    np.testing.assert_array_equal(rel.counts, [0, 0, 2, 2])
    np.testing.assert_allclose(rel.confidence, [np.nan, np.nan, 0.65, 0.875])
    np.testing.assert_allclose(rel.accuracy, [np.nan, np.nan, 0.5, 0.5])
    assert ece(PROBS4, Y4, n_bins=4) == pytest.approx(0.2625)
    assert mce(PROBS4, Y4, n_bins=4) == pytest.approx(0.375)


def test_ece_single_bin_is_gap_of_means():
    # With one bin, ECE = |mean accuracy - mean confidence| = |0.5 - 0.7625|.
    assert ece(PROBS4, Y4, n_bins=1) == pytest.approx(0.2625)


@pytest.mark.parametrize("n_bins", [1, 2, 3, 7, 10, 15, 99])
def test_bins_are_left_open_right_closed(n_bins):
    # A confidence equal to edge k / n_bins belongs to bin k - 1, and 0 to bin 0.
    conf = np.arange(n_bins + 1) / n_bins
    _, idx = _confidence_bins(conf, n_bins)
    np.testing.assert_array_equal(idx, np.r_[0, np.arange(n_bins)])


def test_edge_confidence_through_public_api():
    # Confidence exactly 0.5 with two bins falls in the first bin (0, 0.5].
    rel = reliability([[0.5, 0.5], [1.0, 0.0]], [0, 0], n_bins=2)
    np.testing.assert_array_equal(rel.counts, [1, 1])


def test_perfect_predictions():
    y = np.array([0, 2, 1, 2])
    probs = np.eye(3)[y]
    assert accuracy(probs, y) == 1.0
    assert nll(probs, y) == pytest.approx(0.0, abs=1e-12)
    assert brier(probs, y) == 0.0
    assert ece(probs, y) == 0.0
    assert mce(probs, y) == 0.0
    np.testing.assert_allclose(entropy(probs), 0.0, atol=1e-12)


@pytest.mark.parametrize("n_classes", [2, 3, 10])
def test_uniform_predictor(n_classes):
    y = np.arange(4 * n_classes) % n_classes  # balanced labels
    probs = np.full((y.size, n_classes), 1.0 / n_classes)
    assert nll(probs, y) == pytest.approx(math.log(n_classes))
    assert brier(probs, y) == pytest.approx(1.0 - 1.0 / n_classes)
    np.testing.assert_allclose(entropy(probs), math.log(n_classes))
    # argmax picks class 0 on ties, right 1/C of the time at confidence 1/C.
    assert ece(probs, y) == pytest.approx(0.0, abs=1e-12)


def test_calibrated_predictor_has_small_ece():
    rng = np.random.default_rng(0)
    n, n_classes, n_bins = 20_000, 4, 15
    probs = rng.dirichlet(np.full(n_classes, 0.5), size=n)
    # Drawing labels from the predicted probabilities makes the predictor
    # calibrated by construction: E[correct | confidence] = confidence.
    # Inverse-CDF sampling; the clip guards against a last cumsum of 1 - 1ulp.
    y = np.minimum((rng.random((n, 1)) > probs.cumsum(axis=1)).sum(axis=1), n_classes - 1)
    # So each bin's gap is pure Monte Carlo noise with sd sqrt(a(1-a)/n_b)
    # <= 0.5/sqrt(n_b), and E[ECE] <= sum_b (n_b/N) sqrt(2/pi) 0.5/sqrt(n_b)
    # <= 0.4 sqrt(n_bins / N) ~= 0.011 (Cauchy-Schwarz). 0.03 is ~3x that bound.
    assert ece(probs, y, n_bins) < 0.03
    # Sanity check that the tolerance is discriminative: sharpening the same
    # probabilities (over-confidence) must push ECE well past it.
    sharp = probs**3 / (probs**3).sum(axis=1, keepdims=True)
    assert ece(sharp, y, n_bins) > 0.06


def test_entropy_hand():
    h = entropy([[0.5, 0.25, 0.25], [1.0, 0.0, 0.0]])
    np.testing.assert_allclose(h, [1.5 * math.log(2), 0.0], atol=1e-15)
    assert h.shape == (2,)


def test_mutual_information_zero_when_samples_agree():
    p = np.array([[0.7, 0.2, 0.1], [0.1, 0.1, 0.8]])
    mi = mutual_information(np.stack([p, p, p]))
    assert mi.shape == (2,)
    np.testing.assert_allclose(mi, 0.0, atol=1e-12)


def test_mutual_information_positive_when_samples_disagree():
    # Two confident draws that disagree: H(mean) = log 2, mean H = 0.
    samples = np.array([[[1.0, 0.0], [0.6, 0.4]], [[0.0, 1.0], [0.4, 0.6]]])
    mi = mutual_information(samples)
    assert mi[0] == pytest.approx(math.log(2))
    # Second example: H(0.5, 0.5) - H(0.6, 0.4) > 0.
    h_06 = -(0.6 * math.log(0.6) + 0.4 * math.log(0.4))
    assert mi[1] == pytest.approx(math.log(2) - h_06)
    assert mi[1] > 0


def test_auroc_extremes():
    assert ood_auroc([0.0, 0.1, 0.2], [0.5, 0.9]) == 1.0
    assert ood_auroc([0.5, 0.9], [0.0, 0.1, 0.2]) == 0.0
    assert ood_auroc([0.3, 0.3, 0.3], [0.3, 0.3]) == 0.5


def test_auroc_tie_counts_half():
    # Pairs (in, out): (1,1) tie -> 1/2, (2,1) -> 0. AUROC = 0.5 / 2.
    assert ood_auroc([1.0, 2.0], [1.0]) == 0.25


def _brute_force_auroc(s_in, s_out):
    diff = s_out[None, :] - s_in[:, None]
    return (np.sum(diff > 0) + 0.5 * np.sum(diff == 0)) / diff.size


@pytest.mark.parametrize("seed", range(5))
def test_auroc_matches_pairwise_count(seed):
    rng = np.random.default_rng(seed)
    # Small integers produce many ties; normals exercise the tie-free path.
    s_in = rng.integers(0, 6, size=rng.integers(1, 60)).astype(float)
    s_out = rng.integers(1, 8, size=rng.integers(1, 60)).astype(float)
    assert ood_auroc(s_in, s_out) == pytest.approx(_brute_force_auroc(s_in, s_out))
    c_in, c_out = rng.normal(size=50), rng.normal(0.5, size=70)
    assert ood_auroc(c_in, c_out) == pytest.approx(_brute_force_auroc(c_in, c_out))


def test_classification_metrics_dict():
    m = classification_metrics(PROBS4, Y4, n_bins=4)
    assert set(m) == {"accuracy", "nll", "ece", "brier"}
    assert all(type(v) is float for v in m.values())
    assert m["accuracy"] == accuracy(PROBS4, Y4)
    assert m["nll"] == nll(PROBS4, Y4)
    assert m["ece"] == ece(PROBS4, Y4, n_bins=4)
    assert m["brier"] == brier(PROBS4, Y4)


def test_regression_hand():
    mean, var, y = [0.0, 1.0], [1.0, 4.0], [1.0, 1.0]
    assert rmse(mean, y) == pytest.approx(math.sqrt(0.5))
    # Example 0: 0.5 log(2 pi) + 1/2; example 1: 0.5 log(8 pi) + 0.
    expected = (0.5 * math.log(2 * math.pi) + 0.5 + 0.5 * math.log(8 * math.pi)) / 2
    assert gaussian_nll(mean, var, y) == pytest.approx(expected)
    m = regression_metrics(mean, var, y)
    assert m == {"rmse": pytest.approx(math.sqrt(0.5)), "nll": pytest.approx(expected)}
    assert all(type(v) is float for v in m.values())


def test_gaussian_nll_scalar_variance_broadcasts():
    assert gaussian_nll([0.0, 1.0], 2.0, [1.0, 0.0]) == gaussian_nll([0.0, 1.0], [2.0, 2.0], [1.0, 0.0])


def test_accepts_jax_float32_and_lists():
    jnp = pytest.importorskip("jax.numpy")
    import jax

    logits = jax.random.normal(jax.random.PRNGKey(0), (64, 5))
    probs = jax.nn.softmax(logits, axis=-1)  # float32: rows miss 1 by ~1e-7
    y = jnp.arange(64) % 5
    m = classification_metrics(probs, y)
    assert m == classification_metrics(np.asarray(probs).tolist(), np.asarray(y).tolist())
    assert mutual_information(probs[None]).shape == (64,)
    # Float labels with integral values are accepted too.
    assert accuracy(probs, y.astype(jnp.float32)) == m["accuracy"]


# ------------------------------------------------------------- error paths

GOOD_P = np.array([[0.6, 0.4], [0.2, 0.8]])
GOOD_Y = np.array([0, 1])

BAD_CLASSIFICATION = [
    (np.array([0.5, 0.3, 0.2, 0.0, 0.0]), GOOD_Y, r"probs must have shape \[N, C\]; got \(5,\)"),
    (np.zeros((0, 3)), [], r"probs must be non-empty; got shape \(0, 3\)"),
    ([[0.5, np.nan], [0.2, 0.8]], GOOD_Y, r"probs must be finite; got 1 non-finite"),
    ([[1.2, -0.2], [0.2, 0.8]], GOOD_Y, r"probs must contain probabilities in \[0, 1\]; got values in \[-0.2, 1.2\]"),
    ([[0.6, 0.4], [0.2, 0.7]], GOOD_Y, r"rows of probs must sum to 1 \(tolerance 0.0001\); got worst row sum 0.9 at row 1"),
    (GOOD_P, [0, 1, 1], r"y must have length N = 2 to match probs; got 3"),
    (GOOD_P, [[0, 1]], r"y must have shape \[N\]; got \(1, 2\)"),
    (GOOD_P, [0, 0.5], r"y must contain integer class labels; got non-integer value 0.5"),
    (GOOD_P, [0, np.nan], r"y must be finite"),
    (GOOD_P, [0, 2], r"y must contain labels in \[0, 2\) .*got labels in \[0, 2\]"),
    (GOOD_P, [-1, 1], r"y must contain labels in \[0, 2\) .*got labels in \[-1, 1\]"),
    ([["a", "b"], ["c", "d"]], GOOD_Y, r"probs must be a numeric array \[N, C\]; got list"),
]
CLASSIFIERS = [accuracy, nll, brier, ece, mce, reliability, classification_metrics]


@pytest.mark.parametrize("fn", CLASSIFIERS, ids=lambda f: f.__name__)
@pytest.mark.parametrize("probs, y, match", BAD_CLASSIFICATION)
def test_classification_input_errors(fn, probs, y, match):
    with pytest.raises(ValueError, match=match):
        fn(probs, y)


@pytest.mark.parametrize("fn", [ece, mce, reliability, classification_metrics], ids=lambda f: f.__name__)
@pytest.mark.parametrize("n_bins", [0, -3, 2.5, True, "15"])
def test_n_bins_errors(fn, n_bins):
    with pytest.raises(ValueError, match=r"n_bins must be an integer >= 1; got"):
        fn(GOOD_P, GOOD_Y, n_bins=n_bins)


def test_entropy_errors():
    with pytest.raises(ValueError, match=r"probs must have shape \[N, C\]; got \(2, 2, 2\)"):
        entropy(np.full((2, 2, 2), 0.5))
    with pytest.raises(ValueError, match=r"rows of probs must sum to 1"):
        entropy([[0.5, 0.6]])


@pytest.mark.parametrize(
    "samples, match",
    [
        (GOOD_P, r"prob_samples must have shape \[S, N, C\]; got \(2, 2\)"),
        (np.zeros((0, 2, 2)), r"prob_samples must be non-empty"),
        ([[[0.5, np.inf]]], r"prob_samples must be finite"),
        ([[[0.5, 0.5]], [[1.2, -0.2]]], r"prob_samples must contain probabilities in \[0, 1\]"),
        ([[[0.5, 0.5]], [[0.5, 0.3]]], r"rows of prob_samples must sum to 1 .*worst row sum 0.8 at row \(1, 0\)"),
    ],
)
def test_mutual_information_errors(samples, match):
    with pytest.raises(ValueError, match=match):
        mutual_information(samples)


@pytest.mark.parametrize(
    "s_in, s_out, match",
    [
        ([[1.0, 2.0]], [1.0], r"scores_in must have shape \[N_in\]; got \(1, 2\)"),
        ([1.0], 3.0, r"scores_out must have shape \[N_out\]; got \(\)"),
        ([], [1.0], r"scores_in must be non-empty"),
        ([1.0], [np.nan], r"scores_out must be finite"),
    ],
)
def test_auroc_errors(s_in, s_out, match):
    with pytest.raises(ValueError, match=match):
        ood_auroc(s_in, s_out)


@pytest.mark.parametrize(
    "mean, var, y, match",
    [
        ([[0.0]], 1.0, [0.0], r"mean must have shape \[N\]; got \(1, 1\)"),
        ([], 1.0, [], r"mean must be non-empty"),
        ([0.0, 1.0], 1.0, [0.0], r"y must have length N = 2 to match mean; got 1"),
        ([0.0], 1.0, [np.inf], r"y must be finite"),
        ([0.0, 1.0], [1.0, 0.0], [0.0, 1.0], r"var must be > 0; got minimum 0"),
        ([0.0, 1.0], -1.0, [0.0, 1.0], r"var must be > 0; got minimum -1"),
        ([0.0, 1.0], [1.0, 1.0, 1.0], [0.0, 1.0], r"var must be a scalar or have length N = 2; got shape \(3,\)"),
        ([0.0, 1.0], [[1.0, 1.0]], [0.0, 1.0], r"var must have shape \[N\]; got \(1, 2\)"),
        ([0.0, 1.0], np.nan, [0.0, 1.0], r"var must be finite"),
    ],
)
def test_regression_errors(mean, var, y, match):
    with pytest.raises(ValueError, match=match):
        gaussian_nll(mean, var, y)
    with pytest.raises(ValueError, match=match):
        regression_metrics(mean, var, y)


def test_rmse_errors():
    with pytest.raises(ValueError, match=r"y must have length N = 1 to match mean; got 2"):
        rmse([0.0], [0.0, 1.0])


# --------------------------------------------------------- property tests


@st.composite
def classification_data(draw):
    n = draw(st.integers(1, 40))
    n_classes = draw(st.integers(1, 6))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    # A Dirichlet with a drawn concentration covers near-one-hot to near-uniform rows.
    alpha = draw(st.floats(0.05, 5.0))
    probs = rng.dirichlet(np.full(n_classes, alpha), size=n)
    y = rng.integers(0, n_classes, size=n)
    n_bins = draw(st.integers(1, 30))
    return probs, y, n_bins


@settings(max_examples=60, deadline=None)
@given(classification_data())
def test_metric_ranges(data):
    probs, y, n_bins = data
    n_classes = probs.shape[1]
    e, m = ece(probs, y, n_bins), mce(probs, y, n_bins)
    assert 0.0 <= e <= m + 1e-12 <= 1.0 + 1e-12
    assert 0.0 <= brier(probs, y) <= 2.0 + 1e-12
    assert 0.0 <= nll(probs, y) <= -math.log(PROB_FLOOR) + 1e-9
    assert 0.0 <= accuracy(probs, y) <= 1.0
    h = entropy(probs)
    assert np.all(h >= 0.0) and np.all(h <= math.log(n_classes) + 1e-9)
    rel = reliability(probs, y, n_bins)
    assert rel.counts.sum() == probs.shape[0]


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.floats(-1e6, 1e6), min_size=1, max_size=30),
    st.lists(st.floats(-1e6, 1e6), min_size=1, max_size=30),
)
def test_auroc_antisymmetric_and_matches_brute_force(s_in, s_out):
    s_in, s_out = np.array(s_in), np.array(s_out)
    a = ood_auroc(s_in, s_out)
    assert 0.0 <= a <= 1.0
    assert a + ood_auroc(s_out, s_in) == pytest.approx(1.0)
    assert a == pytest.approx(_brute_force_auroc(s_in, s_out))


# --------------------------------------------------------------------------
# ece_floor: the ECE distribution of a perfectly calibrated classifier
# --------------------------------------------------------------------------


def test_ece_floor_single_example_has_the_exact_two_point_distribution():
    # One example, one bin: ECE = |1{y = 0} - 0.7| is 0.3 with probability 0.7, else 0.7.
    draws = ece_floor([[0.7, 0.3]], n_bins=1, num_draws=20000, seed=1)
    assert set(np.round(np.unique(draws), 12)) == {0.3, 0.7}
    se = np.sqrt(0.21 * 0.4**2 / 20000)  # sd of the two-point law / sqrt(draws)
    assert abs(draws.mean() - 0.42) < 4 * se


def test_ece_floor_matches_scoring_labels_drawn_one_by_one():
    rng = np.random.default_rng(2)
    probs = rng.dirichlet([0.3] * 4, size=60)
    fast = ece_floor(probs, num_draws=3000, seed=3)
    slow = np.array([ece(probs, [rng.choice(4, p=p / p.sum()) for p in probs]) for _ in range(1000)])
    se = np.sqrt(fast.var() / fast.size + slow.var() / slow.size)
    assert abs(fast.mean() - slow.mean()) < 4 * se


def test_ece_floor_separates_calibrated_from_overconfident_predictions():
    rng = np.random.default_rng(4)
    probs = rng.dirichlet([0.5] * 3, size=400)
    y = np.array([rng.choice(3, p=p / p.sum()) for p in probs])  # labels from the predictions: calibrated
    floor = ece_floor(probs, num_draws=2000)
    assert np.quantile(floor, 0.01) <= ece(probs, y) <= np.quantile(floor, 0.99)
    sharp = probs**3 / np.sum(probs**3, axis=1, keepdims=True)  # same argmax, overconfident
    assert ece(sharp, y) > np.quantile(ece_floor(sharp, num_draws=2000), 0.99)


@pytest.mark.parametrize("kwargs, match", [({"num_draws": 0}, "num_draws"), ({"num_draws": 2.5}, "num_draws"),
                                           ({"n_bins": 0}, "n_bins")])
def test_ece_floor_rejects_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ece_floor([[0.5, 0.5]], **kwargs)
