"""The Posterior API (shapes, moments, predictions) and its files (round trips, tampering)."""

from __future__ import annotations

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest

from bayes_snn import Classifier, Dense, Regressor, Sequential, encoders, priors, readouts
from bayes_snn.config import to_config
from bayes_snn.inference import Posterior
from bayes_snn.neurons import LIF

KEY = jax.random.PRNGKey(0)
F, C, N = 3, 2, 10
S = 6  # weight draws everywhere: eager sampling then compiles once per site shape
RNG = np.random.default_rng(0)
X = RNG.random((N, F)).astype(np.float32)
Y = (np.arange(N) % C).astype(np.int32)
TERNARY = priors.Ternary(0.5, 0.4)


def make_net(out=C):
    return Sequential(encoders.Direct(4), Dense(4, prior=TERNARY, bias_prior=priors.Normal(1.0, 0.5)), LIF(), Dense(out), readouts.MeanMembrane())


CLS = Classifier(make_net(), C)
PARAMS = CLS.net.init_params(KEY, F)
SHAPES = CLS.net.param_shapes(F)
HISTORY = {"loss": [1.0, 0.5], "seconds": [0.1, 0.2]}


def delta_post(model=CLS, params=PARAMS):
    return Posterior(model, {k: dist.Delta(v) for k, v in params.items()}, "demo", F, HISTORY)


def normal_post():
    return Posterior(CLS, {k: dist.Normal(v, 0.1 + 0.05 * jnp.abs(v)) for k, v in PARAMS.items()}, "gauss", F, HISTORY)


def grid_post():
    # Categorical factors on the Ternary support for the hidden weights, Gaussians elsewhere.
    probs = RNG.dirichlet(np.ones(3), size=SHAPES["dense_0.weight"]).astype(np.float32)
    weights = {k: dist.Normal(v, 0.2) for k, v in PARAMS.items()}
    weights["dense_0.weight"] = priors.DiscreteGrid(TERNARY.values, probs)
    return Posterior(CLS, weights, "grid", F, HISTORY)


FACTORIES = {"delta": delta_post, "normal": normal_post, "grid": grid_post}


@pytest.mark.parametrize("kind", sorted(FACTORIES))
def test_shapes_and_moments(kind):
    post = FACTORIES[kind]()
    assert post.is_point_estimate == (kind == "delta")
    mean, std = post.mean(), post.std()
    assert {k: v.shape for k, v in mean.items()} == SHAPES == {k: v.shape for k, v in std.items()}
    draws = post.sample_weights(KEY, S)
    assert {k: v.shape for k, v in draws.items()} == {k: (S, *s) for k, s in SHAPES.items()}
    if kind == "delta":
        for k in SHAPES:
            np.testing.assert_array_equal(mean[k], PARAMS[k])
            assert float(jnp.abs(std[k]).max()) == 0.0
            np.testing.assert_array_equal(draws[k][3], PARAMS[k])
    if kind == "normal":
        np.testing.assert_allclose(std["dense_1.bias"], 0.1 + 0.05 * jnp.abs(PARAMS["dense_1.bias"]), rtol=1e-6)
    if kind == "grid":
        d = post.weights["dense_0.weight"]
        vals = np.asarray(TERNARY.values)
        np.testing.assert_allclose(mean["dense_0.weight"], np.asarray(d.probs) @ vals, rtol=1e-5, atol=1e-7)
        var = np.asarray(d.probs) @ vals**2 - (np.asarray(d.probs) @ vals) ** 2
        np.testing.assert_allclose(std["dense_0.weight"], np.sqrt(var), rtol=1e-4, atol=1e-6)
        assert set(np.unique(np.asarray(draws["dense_0.weight"]))) <= set(vals.tolist())


@pytest.mark.parametrize("kind", sorted(FACTORIES))
def test_predictions(kind):
    post = FACTORIES[kind]()
    samples = post.predict_samples(X, KEY, num_samples=S, chunk_size=4)
    assert samples.shape == ((1, N, C) if kind == "delta" else (S, N, C))
    probs = post.predict(X, KEY, num_samples=S)
    assert probs.shape == (N, C)
    np.testing.assert_allclose(probs.sum(-1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(probs, samples.mean(0), rtol=1e-5)
    if kind == "delta":
        logits = CLS.net.apply(PARAMS, X)
        np.testing.assert_allclose(probs, jax.nn.softmax(logits, -1), rtol=1e-5)
    else:
        # the draws differ, so the average really is over weight samples
        assert float(jnp.abs(samples - samples[0]).max()) > 1e-4
    metrics = post.evaluate((X, Y), KEY, num_samples=S)
    assert set(metrics) == {"accuracy", "nll", "ece", "brier"}
    assert 0.0 <= metrics["accuracy"] <= 1.0 and np.isfinite(metrics["nll"])


def test_prediction_chunks_do_not_change_results():
    post = normal_post()
    a = post.predict_samples(X, KEY, num_samples=S, chunk_size=4)  # a full chunk and a remainder
    b = post.predict_samples(X, KEY, num_samples=S, chunk_size=16)
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_regressor_posterior():
    reg = Regressor(make_net(out=1), noise=0.3)
    params = reg.net.init_params(KEY, F)
    post = Posterior(reg, {k: dist.Normal(v, 0.1) for k, v in params.items()}, "gauss", F)
    assert post.predict_samples(X, KEY, num_samples=S).shape == (S, N)
    assert post.predict(X, KEY, num_samples=S).shape == (N,)
    metrics = post.evaluate((X, RNG.normal(size=N).astype(np.float32)), KEY, num_samples=S)
    assert {"rmse", "nll"} <= set(metrics)


def test_bad_arguments():
    post = normal_post()
    with pytest.raises(ValueError, match="mode"):
        post.predict(X, mode="moments-that-do-not-exist")
    with pytest.raises(ValueError, match="num_samples"):
        post.predict(X, num_samples=0)
    with pytest.raises(ValueError, match="chunk_size"):
        post.predict_samples(X, chunk_size=0)
    with pytest.raises(ValueError, match="num_samples"):
        post.sample_weights(KEY, 2.5)
    with pytest.raises(ValueError, match="x must be finite"):
        post.predict(np.where(X > 0.5, np.nan, X))
    with pytest.raises(ValueError, match="x must"):
        post.predict(X[None])
    with pytest.raises(ValueError, match="data must be"):
        post.evaluate(X)
    with pytest.raises(ValueError, match="y must"):
        post.evaluate((X, Y[:3]))
    with pytest.raises(ValueError, match=r"params\['dense_0.weight'\] must have shape"):
        Posterior(CLS, {k: dist.Delta(v.T) for k, v in PARAMS.items()}, "demo", F)
    with pytest.raises(ValueError, match=rf"x must have {F} features .* got shape \({N}, 2\)"):
        post.predict(X[:, :2])
    with pytest.raises(ValueError, match=rf"x must have {F} features"):
        post.evaluate((X[:, :2], Y))
    with pytest.raises(ValueError, match=rf"x must have {F} features"):
        post.to_arviz((X[:, :2], Y), KEY, num_samples=2)
    for key, shown in [(3, "int 3"), (np.zeros(2, np.float32), "dtype float32 and shape \\(2,\\)"),
                       (jax.random.split(KEY, 3), "shape \\(3, 2\\)")]:
        with pytest.raises(ValueError, match=f"rng_key must be a JAX PRNG key .* got .*{shown}"):
            post.predict(X, key)
        with pytest.raises(ValueError, match="rng_key must be a JAX PRNG key"):
            post.sample_weights(key, 2)
        with pytest.raises(ValueError, match="rng_key must be a JAX PRNG key"):
            post.to_arviz(None, key, num_samples=2)
    assert post.predict(X, jax.random.key(1), num_samples=2).shape == (N, C)  # typed keys work too


def test_posterior_is_a_pytree():
    post = normal_post()
    leaves, treedef = jax.tree_util.tree_flatten(post)
    back = jax.tree_util.tree_unflatten(treedef, leaves)
    np.testing.assert_array_equal(back.predict(X, KEY, num_samples=S), post.predict(X, KEY, num_samples=S))


# ---- files -----------------------------------------------------------------------------


def _roundtrip(post, tmp_path, **load_kw):
    path = tmp_path / "post.npz"
    post.save(path)
    return Posterior.load(path, **load_kw)


@pytest.mark.parametrize("kind", sorted(FACTORIES))
def test_save_load_round_trip(kind, tmp_path):
    post = FACTORIES[kind]()
    back = _roundtrip(post, tmp_path)
    assert back.method == post.method and back.in_features == F
    assert {k: type(d) for k, d in back.weights.items()} == {k: type(d) for k, d in post.weights.items()}
    assert set(back.history) == set(HISTORY)
    np.testing.assert_array_equal(back.history["loss"], HISTORY["loss"])
    np.testing.assert_array_equal(back.predict(X, KEY, num_samples=S), post.predict(X, KEY, num_samples=S))
    for k in SHAPES:
        np.testing.assert_array_equal(back.mean()[k], post.mean()[k])
        np.testing.assert_array_equal(back.std()[k], post.std()[k])


def test_round_trip_keeps_the_network_description(tmp_path):
    net = Sequential(
        encoders.Latency(5),
        Dense(4, prior=priors.IntegerGrid(3, 0.1), bias=False, name="hidden"),
        LIF(beta=np.array([0.5, 0.6, 0.7, 0.8], np.float32), threshold=0.7, reset="zero"),
        Dense(C, gain=0.3, prior=priors.Laplace(0.0, 0.5)),
        LIF(),
        readouts.FirstSpikeTime(scale=2.0),
    )
    model = Classifier(net, C)
    params = net.init_params(KEY, F)
    post = delta_post(model, params)
    back = _roundtrip(post, tmp_path)
    assert to_config(back.model) == to_config(model)
    np.testing.assert_array_equal(back.predict(X), post.predict(X))


def test_regressor_round_trip(tmp_path):
    reg = Regressor(make_net(out=1), noise=0.3)
    params = reg.net.init_params(KEY, F)
    post = Posterior(reg, {k: dist.Normal(v, 0.1) for k, v in params.items()}, "gauss", F)
    back = _roundtrip(post, tmp_path)
    assert isinstance(back.model, Regressor) and back.model.noise == 0.3
    np.testing.assert_array_equal(back.predict(X, KEY, num_samples=S), post.predict(X, KEY, num_samples=S))


class _HandWritten:
    """A model wrapper that the config registry does not know."""

    def __init__(self, inner):
        self._inner = inner
        self.net, self.device, self.task = inner.net, inner.device, inner.task

    def __getattr__(self, name):
        return getattr(self._inner, name)


def test_hand_written_model_needs_model_argument(tmp_path):
    post = delta_post(_HandWritten(CLS))
    path = tmp_path / "hand.npz"
    post.save(path)
    with pytest.raises(ValueError, match="model="):
        Posterior.load(path)
    back = Posterior.load(path, model=CLS)
    np.testing.assert_array_equal(back.predict(X), post.predict(X))


# ---- tampered files: every one must raise ValueError, nothing is executed ----------------


def _arrays_and_meta(path):
    with np.load(path, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    return arrays, json.loads(str(arrays.pop("__meta__")))


def _write(path, arrays, meta=None):
    out = dict(arrays)
    if meta is not None:
        out["__meta__"] = np.array(json.dumps(meta))
    with open(path, "wb") as f:
        np.savez(f, **out)


def _tamper(arrays, meta, how):
    """Apply one named corruption to ``(arrays, meta)`` in place."""
    w0 = "w/dense_0.weight/loc"
    if how == "wrong-format":
        meta["format"] = "something.else"
    elif how == "wrong-version":
        meta["version"] = 99
    elif how == "wrong-shape":
        arrays[w0] = arrays[w0][:, :2]
    elif how == "nan":
        arrays[w0] = np.where(arrays[w0] > 0, np.nan, arrays[w0])
    elif how == "inf":
        arrays[w0] = np.full_like(arrays[w0], np.inf)
    elif how == "negative-scale":
        arrays["w/dense_1.bias/scale"] = -arrays["w/dense_1.bias/scale"]
    elif how == "integer-values":
        arrays[w0] = arrays[w0].astype(np.int64)
    elif how == "unknown-family":
        meta["sites"]["dense_1.bias"] = "cauchy"
    elif how == "unhashable-family":
        meta["sites"]["dense_1.bias"] = ["normal"]
    elif how == "extra-array":
        arrays["w/dense_9.weight/loc"] = np.zeros(3, np.float32)
    elif how == "missing-array":
        del arrays["w/dense_1.bias/scale"]
    elif how == "missing-history":
        del arrays["h/loss"]
    elif how == "missing-site":
        del meta["sites"]["dense_1.bias"]
    elif how == "missing-key":
        del meta["in_features"]
    elif how == "wrong-in-features":
        meta["in_features"] = F + 1
    elif how == "unknown-layer":
        meta["model"]["net"]["layers"][0]["type"] = "os.system"
    elif how == "bad-layer-field":
        meta["model"]["net"]["layers"][2]["beta"] = 7.0
    elif how == "unknown-layer-field":
        meta["model"]["net"]["layers"][2]["__class__"] = "x"
    elif how == "bad-prior":
        meta["model"]["net"]["layers"][1]["prior"] = {"type": "Normal", "loc": 0.0, "scale": -1.0}
    elif how == "model-not-object":
        meta["model"] = [1, 2]
    elif how == "meta-not-object":
        return "[1, 2, 3]"
    elif how == "meta-not-json":
        return "{not json"
    elif how == "deep-json":
        return "[" * 100000 + "]" * 100000
    else:
        raise AssertionError(how)
    return None


TAMPERINGS = [
    "wrong-format", "wrong-version", "wrong-shape", "nan", "inf", "negative-scale", "integer-values",
    "unknown-family", "unhashable-family", "extra-array", "missing-array", "missing-history",
    "missing-site", "missing-key", "wrong-in-features", "unknown-layer", "bad-layer-field",
    "unknown-layer-field", "bad-prior", "model-not-object", "meta-not-object", "meta-not-json", "deep-json",
]


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    path = tmp_path_factory.mktemp("saved") / "post.npz"
    normal_post().save(path)
    return path


@pytest.mark.parametrize("how", TAMPERINGS)
def test_tampered_header_or_arrays(saved, tmp_path, how):
    arrays, meta = _arrays_and_meta(saved)
    raw_meta = _tamper(arrays, meta, how)
    path = tmp_path / "bad.npz"
    if raw_meta is None:
        _write(path, arrays, meta)
    else:
        _write(path, {**arrays, "__meta__": np.array(raw_meta)})
    with pytest.raises(ValueError, match="not a valid bayes_snn posterior file"):
        Posterior.load(path)


def test_missing_header(saved, tmp_path):
    arrays, _ = _arrays_and_meta(saved)
    _write(tmp_path / "bad.npz", arrays)
    with pytest.raises(ValueError, match="__meta__"):
        Posterior.load(tmp_path / "bad.npz")


@pytest.mark.parametrize("cut", [0, 10, 0.5, -30])
def test_truncated_file(saved, tmp_path, cut):
    raw = saved.read_bytes()
    n = int(len(raw) * cut) if isinstance(cut, float) else cut % len(raw)
    (tmp_path / "bad.npz").write_bytes(raw[:n])
    with pytest.raises(ValueError, match="not a valid bayes_snn posterior file"):
        Posterior.load(tmp_path / "bad.npz")


def test_corrupted_bytes(saved, tmp_path):
    # Flipped bytes anywhere in the (compressed) archive must raise ValueError, unless they
    # hit a field nothing reads (e.g. a zip timestamp): then the loaded posterior is intact.
    raw = saved.read_bytes()
    reference = Posterior.load(saved)
    rng = np.random.default_rng(1)
    failures = 0
    for i, pos in enumerate(rng.integers(0, len(raw), 40)):
        bad = bytearray(raw)
        bad[pos : pos + 4] = bytes((b ^ 0xA5) for b in bad[pos : pos + 4])
        path = tmp_path / f"bad{i}.npz"
        path.write_bytes(bytes(bad))
        try:
            back = Posterior.load(path)
        except ValueError:
            failures += 1
            continue
        for k in SHAPES:
            np.testing.assert_array_equal(back.mean()[k], reference.mean()[k])
            np.testing.assert_array_equal(back.std()[k], reference.std()[k])
    assert failures >= 30  # most of the file is CRC-checked data or structure


@pytest.mark.parametrize("content", [b"hello, not a zip file", b"\x80\x04K\x01."])  # text; a pickle
def test_not_a_zip(tmp_path, content):
    (tmp_path / "bad.npz").write_bytes(content)
    with pytest.raises(ValueError, match="not a valid bayes_snn posterior file"):
        Posterior.load(tmp_path / "bad.npz")


def test_single_npy_array(tmp_path):
    np.save(tmp_path / "arr.npy", np.zeros(3))
    with pytest.raises(ValueError, match="not a valid bayes_snn posterior file"):
        Posterior.load(tmp_path / "arr.npy")


def test_missing_file(tmp_path):
    with pytest.raises(ValueError, match="no such file"):
        Posterior.load(tmp_path / "nope.npz")


class _Bomb:
    """Unpickling this creates a directory: proof that pickle ran."""

    marker = ""

    def __reduce__(self):
        return (os.mkdir, (self.marker,))


@pytest.mark.parametrize("where", ["w/dense_0.weight/loc", "h/loss", "__meta__"])
def test_object_arrays_are_never_unpickled(saved, tmp_path, where):
    arrays, meta = _arrays_and_meta(saved)
    arrays["__meta__"] = np.array(json.dumps(meta))
    bomb = _Bomb()
    bomb.marker = str(tmp_path / "pickle-ran")
    arrays[where] = np.array([bomb, 1], dtype=object)
    path = tmp_path / "bad.npz"
    with open(path, "wb") as f:
        np.savez(f, **arrays)  # numpy pickles object arrays when writing
    with pytest.raises(ValueError, match="not a valid bayes_snn posterior file"):
        Posterior.load(path)
    assert not os.path.exists(bomb.marker)
    # the file really holds a working pickle: loading it unsafely would have run it
    with np.load(path, allow_pickle=True) as z:
        z[where]
    assert os.path.exists(bomb.marker)


def test_posterior_factors_are_numpyro_distributions():
    # Posterior weights are ordinary NumPyro distributions: usable as priors of a new model.
    post = grid_post()

    def model():
        for k, d in post.weights.items():
            numpyro.sample(k, d.to_event(len(d.batch_shape)))

    tr = numpyro.handlers.trace(numpyro.handlers.seed(model, 0)).get_trace()
    assert {k: tr[k]["value"].shape for k in SHAPES} == SHAPES
