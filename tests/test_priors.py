"""Weight priors: moments against closed forms, normalisation, sampling, shapes, validation."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest
from numpyro import handlers
from numpyro.infer.util import log_density
from scipy import stats

from bayes_snn import priors

KEY = jax.random.PRNGKey(0)


def _grid_cases():
    """(prior, values, probs) with the support written out by hand."""
    m3 = np.arange(-7, 8, dtype=float)
    return [
        (priors.Binary(0.5), [-0.5, 0.5], [0.5, 0.5]),
        (priors.Ternary(2.0, p_zero=0.6), [-2.0, 0.0, 2.0], [0.2, 0.6, 0.2]),
        (priors.Ternary(1.0), [-1.0, 0.0, 1.0], [1 / 3, 1 / 3, 1 / 3]),
        (priors.IntegerGrid(3, 0.25), 0.25 * m3, np.full(15, 1 / 15)),
        (priors.IntegerGrid(1, 1.0), [-1.0, 0.0, 1.0], [1 / 3, 1 / 3, 1 / 3]),
        (priors.DiscreteGrid([-1.0, 0.5, 3.0], [0.1, 0.6, 0.3]), [-1.0, 0.5, 3.0], [0.1, 0.6, 0.3]),
    ]


GRIDS = _grid_cases()
GRID_IDS = ["binary", "ternary", "ternary-default", "int3", "int1", "custom"]


@pytest.mark.parametrize("prior, values, probs", GRIDS, ids=GRID_IDS)
def test_support_and_probabilities(prior, values, probs):
    assert priors.is_discrete(prior)
    np.testing.assert_allclose(prior.values, values, rtol=1e-6)
    np.testing.assert_allclose(prior.probs, probs, rtol=1e-6)


@pytest.mark.parametrize("prior, values, probs", GRIDS, ids=GRID_IDS)
def test_moments_match_the_support(prior, values, probs):
    values, probs = np.asarray(values), np.asarray(probs)
    mean = np.sum(probs * values)
    np.testing.assert_allclose(prior.mean, mean, atol=1e-6)
    np.testing.assert_allclose(prior.variance, np.sum(probs * (values - mean) ** 2), rtol=1e-5)


def test_closed_form_variances():
    # Ternary: (1 - p0) s^2. IntegerGrid: uniform on s*{-M..M} has variance s^2 M (M+1) / 3.
    assert float(priors.Ternary(0.5, 0.2).variance) == pytest.approx(0.8 * 0.25, rel=1e-6)
    assert float(priors.Binary(3.0).variance) == pytest.approx(9.0, rel=1e-6)
    assert float(priors.IntegerGrid(6, 0.1).variance) == pytest.approx(0.01 * 63 * 64 / 3, rel=1e-5)
    assert float(priors.Normal(1.0, 2.0).mean) == 1.0 and float(priors.Normal(1.0, 2.0).variance) == 4.0
    assert float(priors.Laplace(-1.0, 0.5).mean) == -1.0
    assert float(priors.Laplace(-1.0, 0.5).variance) == pytest.approx(2 * 0.25)


def test_six_bit_grid():
    p = priors.IntegerGrid(6, scale=0.01)
    assert p.values.shape == (127,)
    np.testing.assert_allclose(np.asarray(p.values)[[0, 63, 126]], [-0.63, 0.0, 0.63], atol=1e-7)
    np.testing.assert_allclose(np.diff(np.asarray(p.values)), 0.01, rtol=1e-4)
    np.testing.assert_allclose(p.probs, 1 / 127, rtol=1e-6)


@pytest.mark.parametrize("prior, values, probs", GRIDS, ids=GRID_IDS)
def test_log_prob_is_normalised_and_minus_inf_off_grid(prior, values, probs):
    v = np.asarray(values)
    off = np.concatenate([(v[:-1] + v[1:]) / 2, [v[0] - 1.0, v[-1] + 1.0, v[0] + 1e-3]])
    lp = np.asarray(prior.log_prob(jnp.asarray(np.concatenate([v, off]), jnp.float32)))
    on_grid, off_grid = lp[: len(v)], lp[len(v) :]
    np.testing.assert_allclose(np.exp(on_grid), probs, rtol=1e-5)
    assert np.exp(on_grid).sum() == pytest.approx(1.0, abs=1e-5)
    assert np.all(off_grid == -np.inf)


@pytest.mark.parametrize("prior", [priors.Normal(0.5, 0.7), priors.Laplace(-0.3, 0.4)])
def test_continuous_densities_integrate_to_one(prior):
    grid = np.linspace(-12.0, 12.0, 200001)
    dens = np.exp(np.asarray(prior.log_prob(jnp.asarray(grid)), float))
    assert np.trapezoid(dens, grid) == pytest.approx(1.0, abs=1e-4)


@pytest.mark.parametrize("prior, values, probs", GRIDS, ids=GRID_IDS)
def test_sampling_frequencies(prior, values, probs):
    # Chi-square goodness of fit of 20000 draws; with a fixed seed we require p > 1e-4,
    # so a correct sampler fails with probability 1e-4 if the seed were random.
    n = 20000
    draws = np.asarray(prior.sample(KEY, (n,)))
    idx = np.argmin(np.abs(draws[:, None] - np.asarray(values)[None]), axis=1)
    np.testing.assert_allclose(draws, np.asarray(values)[idx], atol=1e-6)  # on the support
    counts = np.bincount(idx, minlength=len(values))
    assert stats.chisquare(counts, n * np.asarray(probs)).pvalue > 1e-4


def test_sampling_with_batched_probs():
    probs = np.array([[0.9, 0.1], [0.2, 0.8], [0.5, 0.5]])
    p = priors.DiscreteGrid([-1.0, 1.0], probs)
    assert p.batch_shape == (3,)
    n = 20000
    draws = np.asarray(p.sample(KEY, (n,)))
    assert draws.shape == (n, 3)
    freq = (draws == 1.0).mean(0)
    se = np.sqrt(probs[:, 1] * probs[:, 0] / n)
    assert np.all(np.abs(freq - probs[:, 1]) < 5 * se)
    np.testing.assert_allclose(p.mean, probs @ np.array([-1.0, 1.0]), rtol=1e-6)
    lp = p.log_prob(jnp.array([1.0, -1.0, 0.0]))
    np.testing.assert_allclose(lp, [np.log(0.1), np.log(0.2), -np.inf], rtol=1e-6)


@pytest.mark.parametrize("prior", [priors.Normal(0.0, 1.0), priors.Laplace(0.0, 1.0), priors.Ternary(0.5), priors.IntegerGrid(2, 0.1)])
def test_expand_to_event_shapes(prior):
    d = prior.expand((4, 3)).to_event(1)
    assert d.batch_shape == (4,) and d.event_shape == (3,)

    @jax.jit  # one compilation instead of one per eager operation
    def draw_and_score(key):
        w = d.sample(key, (5,))
        return w, d.log_prob(w), prior.log_prob(w).sum(-1)

    w, lp, reference = draw_and_score(KEY)
    assert w.shape == (5, 4, 3) and lp.shape == (5, 4)
    np.testing.assert_allclose(lp, reference, rtol=1e-5)
    full = prior.expand((4, 3)).to_event(2)
    assert full.batch_shape == () and full.event_shape == (4, 3)


@pytest.mark.parametrize("prior, values, probs", GRIDS, ids=GRID_IDS)
def test_enumerate_support(prior, values, probs):
    np.testing.assert_allclose(prior.enumerate_support(), values, rtol=1e-6)
    expanded = prior.expand((2, 3))
    support = expanded.enumerate_support()
    K = len(values)
    assert support.shape == (K, 2, 3)
    np.testing.assert_allclose(support, np.broadcast_to(np.asarray(values)[:, None, None], (K, 2, 3)), rtol=1e-6)
    assert expanded.enumerate_support(expand=False).shape == (K, 1, 1)


def test_project_onto_support():
    p = priors.Ternary(0.5)
    w = jnp.array([-3.0, -0.3, -0.2, 0.1, 0.26, 9.0])
    np.testing.assert_allclose(priors.project(p, w), [-0.5, -0.5, 0.0, 0.0, 0.5, 0.5])
    np.testing.assert_allclose(priors.project(priors.IntegerGrid(2, 1.0), jnp.array([-7.2, 1.4, 2.6])), [-3, 1, 3])
    w = jnp.array([0.123, -4.0])
    assert priors.project(priors.Normal(), w) is w
    assert not priors.is_discrete(priors.Laplace())


@pytest.mark.parametrize("bits, scale", [(1, 1.0), (3, 0.25), (6, 0.01)])
def test_integer_grid_rounds_to_the_same_level_as_the_general_nearest_value(bits, scale):
    p = priors.IntegerGrid(bits, scale)
    w = jax.random.normal(jax.random.PRNGKey(bits), (4000,)) * scale * 2**bits  # on the grid and far beyond it
    w = jnp.concatenate([w, p.values])  # the levels themselves
    general = priors.DiscreteGrid.index_of(p, w)  # argmin over the distances to every level
    np.testing.assert_array_equal(p.index_of(w), general)
    np.testing.assert_array_equal(priors.project(p, w), p.values[general])


def test_priors_are_pytrees():
    # Distributions cross jit boundaries (e.g. inside a Posterior): flattening must
    # rebuild an equal prior.
    for p in (priors.Binary(0.5), priors.Ternary(0.5, 0.2), priors.IntegerGrid(3, 0.1),
              priors.DiscreteGrid([0.0, 1.0], [0.3, 0.7])):
        q = jax.tree_util.tree_map(lambda a: a, p)
        assert type(q) is type(p)
        np.testing.assert_array_equal(q.values, p.values)
        np.testing.assert_array_equal(q.probs, p.probs)
        s = jax.jit(lambda d, k: d.sample(k, (3,)))(p, KEY)  # the prior crosses the jit boundary
        assert set(np.asarray(s).tolist()) <= set(np.asarray(p.values).tolist())


def test_prior_as_a_numpyro_site():
    def model():
        numpyro.sample("w", priors.Ternary(0.5, 0.5).expand((2, 3)).to_event(2))

    tr = handlers.trace(handlers.seed(model, 0)).get_trace()
    w = tr["w"]["value"]
    assert w.shape == (2, 3)
    lp = jax.jit(lambda v: log_density(model, (), {}, {"w": v})[0])(w)
    expected = np.sum(np.where(np.asarray(w) == 0.0, np.log(0.5), np.log(0.25)))
    assert float(lp) == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize(
    "make, arg",
    [
        (lambda: priors.Normal(0.0, 0.0), "scale"),
        (lambda: priors.Normal(0.0, -1.0), "scale"),
        (lambda: priors.Normal(0.0, float("nan")), "scale"),
        (lambda: priors.Normal(float("inf"), 1.0), "loc"),
        (lambda: priors.Laplace(0.0, 0.0), "scale"),
        (lambda: priors.Binary(0.0), "scale"),
        (lambda: priors.Binary(np.array([1.0, 2.0])), "scale"),
        (lambda: priors.Ternary(1.0, 0.0), "p_zero"),
        (lambda: priors.Ternary(1.0, 1.0), "p_zero"),
        (lambda: priors.Ternary(1.0, -0.2), "p_zero"),
        (lambda: priors.Ternary(1.0, float("nan")), "p_zero"),
        (lambda: priors.Ternary(-1.0), "scale"),
        (lambda: priors.IntegerGrid(0), "bits"),
        (lambda: priors.IntegerGrid(13), "bits"),
        (lambda: priors.IntegerGrid(2.0), "bits"),
        (lambda: priors.IntegerGrid(True), "bits"),
        (lambda: priors.IntegerGrid(6, 0.0), "scale"),
        (lambda: priors.IntegerGrid(6, np.array([0.1, 0.2])), "scale"),
        (lambda: priors.DiscreteGrid([0.0, 1.0], [0.2, 0.7]), "probs"),
        (lambda: priors.DiscreteGrid([0.0, 1.0], [1.2, -0.2]), "probs"),
        (lambda: priors.DiscreteGrid([0.0, 1.0], [0.2, 0.3, 0.5]), "probs"),
        (lambda: priors.DiscreteGrid([0.0, 1.0], [np.nan, 0.5]), "probs"),
        (lambda: priors.DiscreteGrid([1.0, 0.0], [0.5, 0.5]), "values"),
        (lambda: priors.DiscreteGrid([0.0, 0.0], [0.5, 0.5]), "values"),
        (lambda: priors.DiscreteGrid([1.0], [1.0]), "values"),
        (lambda: priors.DiscreteGrid([[0.0, 1.0]], [0.5, 0.5]), "values"),
    ],
)
def test_invalid_parameters(make, arg):
    with pytest.raises(ValueError, match=arg):
        make()


def test_traced_parameters_are_allowed():
    # A hierarchical scale is a tracer inside jit / MCMC: validation must let it through.
    f = jax.jit(lambda s: priors.Normal(0.0, s).log_prob(1.0) + priors.Ternary(s, 0.5).variance)
    assert np.isfinite(float(f(jnp.float32(0.5))))
    assert isinstance(priors.Normal(0.0, 1.0), dist.Normal)
