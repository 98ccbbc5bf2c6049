"""Tests for bayes_snn.datasets: Yin-Yang, digits, IDX files and batching."""

from __future__ import annotations

import gzip
import math
import re
import struct
import sys

import jax
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bayes_snn.datasets import (
    Batch,
    Dataset,
    batch_axis,
    batches,
    digits,
    idx,
    minibatch_indices,
    read_idx,
    yin_yang,
)
from bayes_snn.datasets._validate import check_features, check_labels

# ---------------------------------------------------------------- Yin-Yang


def reference_loop(size, seed, r_small=0.1, r_big=0.5):
    """Straightforward transcription of the published generation rules."""
    rng = np.random.RandomState(seed)
    rows, labels = [], []
    for _ in range(size):
        goal = rng.randint(3)
        while True:
            x, y = rng.rand(2) * 2.0 * r_big
            if np.sqrt((x - r_big) ** 2 + (y - r_big) ** 2) > r_big:
                continue
            d_r = np.sqrt((x - 1.5 * r_big) ** 2 + (y - r_big) ** 2)
            d_l = np.sqrt((x - 0.5 * r_big) ** 2 + (y - r_big) ** 2)
            if d_r < r_small or d_l < r_small:
                c = 2
            elif (
                d_r <= r_small
                or r_small < d_l <= 0.5 * r_big
                or (y > r_big and d_r > 0.5 * r_big)
            ):
                c = 1
            else:
                c = 0
            if c == goal:
                break
        rows.append([x, y, 1.0 - x, 1.0 - y])
        labels.append(c)
    return np.array(rows), np.array(labels)


def classify(x, y, r_small=0.1, r_big=0.5):
    """The class rule, vectorised, for checking generated data."""
    d_r = np.sqrt((x - 1.5 * r_big) ** 2 + (y - r_big) ** 2)
    d_l = np.sqrt((x - 0.5 * r_big) ** 2 + (y - r_big) ** 2)
    dot = (d_r < r_small) | (d_l < r_small)
    yang = (
        (d_r <= r_small)
        | ((d_l > r_small) & (d_l <= 0.5 * r_big))
        | ((y > r_big) & (d_r > 0.5 * r_big))
    )
    return np.where(dot, 2, yang.astype(int))


@pytest.fixture(scope="module")
def train64():
    return yin_yang("train", dtype=np.float64)


def test_yin_yang_matches_reference_loop(train64):
    x_ref, y_ref = reference_loop(40, 42)
    np.testing.assert_array_equal(train64.x[:40], x_ref)
    np.testing.assert_array_equal(train64.y[:40], y_ref)
    small = yin_yang("train", size=40)
    np.testing.assert_array_equal(small.x, x_ref.astype(np.float32))


def test_yin_yang_matches_reference_loop_custom_radii():
    x_ref, y_ref = reference_loop(50, 3, r_small=0.15, r_big=0.8)
    data = yin_yang(size=50, seed=3, r_small=0.15, r_big=0.8, dtype=np.float64)
    np.testing.assert_array_equal(data.x, x_ref)
    np.testing.assert_array_equal(data.y, y_ref)


def test_yin_yang_first_values_pinned(train64):
    # Pins the legacy RandomState stream and the draw order against regressions.
    expected = [
        [0.6803075385877797, 0.450499251969543],
        [0.09767211400638387, 0.6842330265121569],
        [0.7553614103176525, 0.4251558744912447],
    ]
    np.testing.assert_array_equal(train64.x[:3, :2], expected)
    np.testing.assert_array_equal(train64.y[:3], [2, 1, 2])


@pytest.mark.parametrize(
    "split, size", [("train", 5000), ("validation", 1000), ("test", 1000)]
)
def test_yin_yang_split_structure(split, size):
    data = yin_yang(split)
    assert isinstance(data, Dataset)
    assert data.x.shape == (size, 4) and data.x.dtype == np.float32
    assert data.y.shape == (size,) and data.y.dtype == np.int32
    assert data.classes == ("yin", "yang", "dot") and data.num_classes == 3
    np.testing.assert_allclose(data.x[:, 2:], 1.0 - data.x[:, :2], atol=1e-7)


def test_yin_yang_geometry_and_class_rule(train64):
    x, y = train64.x[:, 0], train64.x[:, 1]
    assert np.all(np.sqrt((x - 0.5) ** 2 + (y - 0.5) ** 2) <= 0.5)
    np.testing.assert_array_equal(train64.x[:, 2:], 1.0 - train64.x[:, :2])
    np.testing.assert_array_equal(classify(x, y), train64.y)


def test_yin_yang_class_balance(train64):
    fractions = np.bincount(train64.y, minlength=3) / len(train64.y)
    # 1/3 each; binomial sd is 0.0067 at N=5000, so 0.03 is > 4 sd
    np.testing.assert_allclose(fractions, 1 / 3, atol=0.03)


def test_yin_yang_custom_radii_geometry():
    data = yin_yang(size=300, seed=1, r_small=0.2, r_big=0.9, dtype=np.float64)
    x, y = data.x[:, 0], data.x[:, 1]
    assert np.all(np.hypot(x - 0.9, y - 0.9) <= 0.9 + 1e-12)
    np.testing.assert_array_equal(classify(x, y, 0.2, 0.9), data.y)


def test_yin_yang_determinism_and_overrides():
    a, b = yin_yang("test"), yin_yang("test")
    np.testing.assert_array_equal(a.x, b.x)
    np.testing.assert_array_equal(a.y, b.y)
    # size only truncates: the stream is consumed sample by sample
    np.testing.assert_array_equal(yin_yang("test", size=10).x, a.x[:10])
    # an explicit seed replaces the split's seed
    np.testing.assert_array_equal(yin_yang("train", size=20, seed=40).x, a.x[:20])


def test_yin_yang_splits_differ():
    train, val, test = (yin_yang(s, size=1000) for s in ("train", "validation", "test"))
    for p, q in [(train, val), (train, test), (val, test)]:
        assert not np.any(np.all(p.x == q.x, axis=1))


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"split": "val"}, "split must be one of"),
        ({"size": 0}, "size must be an int >= 1; got 0"),
        ({"size": 2.5}, "size must be an int; got 2.5"),
        ({"size": True}, "size must be an int; got True"),
        ({"seed": -1}, r"seed must be an int in \[0, 4294967295\]; got -1"),
        ({"r_small": 0.25}, r"r_small must lie in \(0, r_big / 2\)"),
        ({"r_small": 0.0}, r"r_small must lie in"),
        ({"r_big": 0.0}, "r_big must be a finite float > 0; got 0.0"),
        ({"r_big": float("inf")}, "r_big must be a finite float > 0"),
        ({"dtype": np.int32}, "dtype must be a floating dtype; got int32"),
    ],
)
def test_yin_yang_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        yin_yang(**kwargs)


# ---------------------------------------------------------------- digits


@pytest.fixture(scope="module")
def digit_splits():
    pytest.importorskip("sklearn")
    return digits("train"), digits("test")


def test_digits_structure(digit_splits):
    train, test = digit_splits
    assert train.x.shape == (1347, 64) and test.x.shape == (450, 64)
    for data in (train, test):
        assert data.x.dtype == np.float32 and data.y.dtype == np.int32
        assert data.x.min() >= 0.0 and data.x.max() <= 1.0
        assert data.classes == tuple("0123456789") and data.num_classes == 10


def test_digits_is_a_stratified_partition(digit_splits):
    from sklearn.datasets import load_digits

    images, labels = load_digits(return_X_y=True)
    train, test = digit_splits
    both = np.concatenate([train.x, test.x]).astype(np.float64)
    everything = (images / 16).astype(np.float32).astype(np.float64)
    assert sorted(map(tuple, both)) == sorted(map(tuple, everything))
    expected = np.bincount(labels) * 0.25
    assert np.all(np.abs(np.bincount(test.y, minlength=10) - expected) <= 1)


def test_digits_seed(digit_splits):
    np.testing.assert_array_equal(digits("test").y, digit_splits[1].y)
    assert not np.array_equal(digits("test", seed=1).y, digit_splits[1].y)
    assert digits("test", test_size=0.5, dtype=np.float64).x.dtype == np.float64


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"split": "validation"}, "split must be one of"),
        ({"test_size": 0.0}, r"test_size must be a float in \(0, 1\); got 0.0"),
        ({"test_size": 1.5}, "test_size must be a float"),
        ({"seed": -1}, "seed must be an int >= 0; got -1"),
        ({"dtype": np.uint8}, "dtype must be a floating dtype"),
    ],
)
def test_digits_errors(kwargs, match):
    pytest.importorskip("sklearn")
    with pytest.raises(ValueError, match=match):
        digits(**kwargs)


def test_digits_without_sklearn(monkeypatch):
    # None in sys.modules makes the import fail even if sklearn is loaded.
    for name in ("sklearn", "sklearn.datasets", "sklearn.model_selection"):
        monkeypatch.setitem(sys.modules, name, None)
    with pytest.raises(ImportError, match=r"pip install 'bayes-snn\[datasets\]'"):
        digits()


# ---------------------------------------------------------------- IDX files

TYPE_CODES = {
    np.uint8: 0x08,
    np.int8: 0x09,
    np.int16: 0x0B,
    np.int32: 0x0C,
    np.float32: 0x0D,
    np.float64: 0x0E,
}


def idx_bytes(array, code=None):
    array = np.asarray(array)
    code = TYPE_CODES[array.dtype.type] if code is None else code
    header = bytes([0, 0, code, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(array.dtype.newbyteorder(">")).tobytes()


def write(path, payload, compress=False):
    path.write_bytes(gzip.compress(payload) if compress else payload)
    return path


@pytest.mark.parametrize("compress", [False, True])
@pytest.mark.parametrize("dtype", list(TYPE_CODES))
def test_read_idx_round_trip(tmp_path, dtype, compress):
    rng = np.random.default_rng(0)
    array = (rng.normal(size=(3, 4, 2)) * 50).astype(dtype)
    path = write(tmp_path / "a.idx", idx_bytes(array), compress)
    out = read_idx(path)
    assert out.dtype == np.dtype(dtype) and out.dtype.isnative
    np.testing.assert_array_equal(out, array)
    out[0, 0, 0] = 1  # writable, not a view of the file buffer


def test_read_idx_empty_dimension(tmp_path):
    out = read_idx(write(tmp_path / "e.idx", idx_bytes(np.zeros((0, 5), np.uint8))))
    assert out.shape == (0, 5)


@pytest.mark.parametrize("compress", [False, True])
def test_idx_dataset(tmp_path, compress):
    images = np.arange(4 * 3 * 2, dtype=np.uint8).reshape(4, 3, 2) * 10
    labels = np.array([2, 0, 1, 2], np.uint8)
    img = write(tmp_path / "img", idx_bytes(images), compress)
    lab = write(tmp_path / "lab", idx_bytes(labels), compress)
    data = idx(img, lab)
    assert data.x.shape == (4, 6) and data.x.dtype == np.float32
    np.testing.assert_allclose(data.x, images.reshape(4, 6) / 255.0, rtol=1e-7)
    assert data.y.dtype == np.int32 and data.y.tolist() == [2, 0, 1, 2]
    assert data.classes == ("0", "1", "2")


def test_idx_keeps_float_images_and_unlabelled(tmp_path):
    images = np.array([[0.5, 2.0], [-1.0, 3.0]], np.float32)
    data = idx(write(tmp_path / "img", idx_bytes(images)), dtype=np.float64)
    np.testing.assert_array_equal(data.x, images)
    assert data.x.dtype == np.float64
    assert data.y.tolist() == [-1, -1] and data.classes == ()


def header_cut(tmp_path):
    return write(tmp_path / "h.idx", bytes([0, 0, 0x08, 2, 0, 0, 0]))


@pytest.mark.parametrize(
    "payload, match",
    [
        (b"\x00\x00", "truncated: expected at least 4 header bytes, found 2"),
        (bytes([1, 0, 8, 1, 0, 0, 0, 0]), "bad magic bytes: expected 00 00, found 01 00"),
        (bytes([0, 0, 0x0A, 1, 0, 0, 0, 0]), "unknown type byte: expected .*found 0x0A"),
        (bytes([0, 0, 8, 0]), "must have ndim >= 1; found ndim 0"),
        (bytes([0, 0, 8, 2, 0, 0, 0, 1]), "expected at least 12 header bytes .* found 8"),
        (
            idx_bytes(np.zeros((2, 3), np.uint8))[:-1],
            "is truncated: expected 18 bytes .* found 17",
        ),
        (
            idx_bytes(np.zeros((2, 3), np.int16)) + b"\x00",
            "trailing bytes: expected 24 bytes .* found 25",
        ),
        (idx_bytes(np.array([1.0, np.nan, np.inf])), "must be finite; found 2 NaN/inf"),
    ],
)
@pytest.mark.parametrize("compress", [False, True])
def test_read_idx_errors(tmp_path, payload, match, compress):
    path = write(tmp_path / "bad.idx", payload, compress)
    with pytest.raises(ValueError, match=match) as info:
        read_idx(path)
    assert str(path) in str(info.value)
    assert ("gzip" in str(info.value)) == compress


def test_read_idx_corrupt_gzip(tmp_path):
    path = write(tmp_path / "bad.gz", gzip.compress(idx_bytes(np.zeros(3, np.uint8)))[:-6])
    with pytest.raises(ValueError, match="corrupt gzip stream"):
        read_idx(path)


def test_idx_label_errors(tmp_path):
    img = write(tmp_path / "img", idx_bytes(np.zeros((3, 2, 2), np.uint8)))
    cases = {
        "short": (
            np.zeros(2, np.uint8),
            r"same N: images .*img has shape \(3, 2, 2\), labels .*short has shape \(2,\)",
        ),
        "matrix": (np.zeros((3, 1), np.uint8), r"must be 1-D \[N\]; got shape \(3, 1\)"),
        "floats": (np.zeros(3, np.float32), "integer class labels .* got dtype float32"),
        "negative": (np.array([0, -2, 1], np.int8), r"found values in \[-2, 1\]"),
    }
    for name, (labels, match) in cases.items():
        lab = write(tmp_path / name, idx_bytes(labels))
        with pytest.raises(ValueError, match=match):
            idx(img, lab)
    with pytest.raises(ValueError, match="dtype must be a floating dtype"):
        idx(img, dtype=np.int32)


# ---------------------------------------------------------------- batching


@settings(max_examples=30, deadline=None)
@given(
    n=st.integers(1, 40),
    batch_size=st.integers(1, 50),
    shuffle=st.booleans(),
    seed=st.integers(0, 2**31 - 1),
)
def test_minibatch_indices_cover_each_example_once(n, batch_size, shuffle, seed):
    idx_, mask = minibatch_indices(jax.random.key(seed), n, batch_size, shuffle=shuffle)
    b = min(batch_size, n)
    assert idx_.shape == mask.shape == (math.ceil(n / b), b)
    assert idx_.dtype == np.int32 and mask.dtype == np.bool_
    idx_, mask = np.asarray(idx_), np.asarray(mask)
    assert sorted(idx_[mask].tolist()) == list(range(n))
    assert np.all((idx_ >= 0) & (idx_ < n))
    # padding only at the tail of the last batch
    assert mask.ravel().tolist() == [True] * n + [False] * (mask.size - n)


def test_minibatch_indices_determinism():
    key = jax.random.key(3)
    a = minibatch_indices(key, 100, 16)
    b = minibatch_indices(key, 100, 16)
    c = minibatch_indices(jax.random.key(4), 100, 16)
    np.testing.assert_array_equal(a[0], b[0])
    assert not np.array_equal(a[0], c[0])
    assert not np.array_equal(a[0].ravel()[:100], np.arange(100))
    ordered, _ = minibatch_indices(None, 7, 3, shuffle=False)
    assert ordered.tolist() == [[0, 1, 2], [3, 4, 5], [6, 0, 1]]


@pytest.mark.parametrize(
    "args, kwargs, match",
    [
        ((None, 0, 2), {"shuffle": False}, "n must be an int >= 1; got 0"),
        ((None, 5, 0), {"shuffle": False}, "batch_size must be an int >= 1; got 0"),
        ((None, 5, 2.0), {"shuffle": False}, "batch_size must be an int >= 1; got 2.0"),
        ((None, 5, True), {"shuffle": False}, "batch_size must be an int >= 1; got True"),
        ((None, 5, 2), {}, "rng_key must be a PRNG key when shuffle=True; got None"),
    ],
)
def test_minibatch_indices_errors(args, kwargs, match):
    with pytest.raises(ValueError, match=match):
        minibatch_indices(*args, **kwargs)


def test_batches_static_features():
    x = np.arange(11 * 2, dtype=np.float32).reshape(11, 2)
    y = np.arange(11, dtype=np.int32)
    out = list(batches(jax.random.key(0), Dataset(x, y, ()), 4))
    assert len(out) == 3 and all(isinstance(b, Batch) for b in out)
    for b in out:
        assert b.x.shape == (4, 2) and b.y.shape == b.mask.shape == (4,)
    xs = np.concatenate([np.asarray(b.x)[np.asarray(b.mask)] for b in out])
    ys = np.concatenate([np.asarray(b.y)[np.asarray(b.mask)] for b in out])
    np.testing.assert_array_equal(xs, x[ys])  # rows stay paired with labels
    assert sorted(ys.tolist()) == list(range(11))


def test_batches_time_major():
    x = np.random.default_rng(0).normal(size=(5, 7, 3)).astype(np.float32)
    y = np.arange(7, dtype=np.int32)
    key = jax.random.key(1)
    idx_, _ = minibatch_indices(key, 7, 3)
    out = list(batches(key, (x, y), 3))
    for b, rows in zip(out, np.asarray(idx_)):
        assert b.x.shape == (5, 3, 3)
        np.testing.assert_array_equal(b.x, x[:, rows])
        np.testing.assert_array_equal(b.y, rows)


def test_batches_clips_and_is_deterministic():
    x, y = np.zeros((3, 2), np.float32), np.arange(3, dtype=np.int32)
    (only,) = batches(None, (x, y), 10, shuffle=False)
    assert only.x.shape == (3, 2) and only.y.tolist() == [0, 1, 2]
    first = [b.y.tolist() for b in batches(jax.random.key(5), (x, y), 2)]
    again = [b.y.tolist() for b in batches(jax.random.key(5), (x, y), 2)]
    assert first == again


def test_batches_errors():
    key = jax.random.key(0)
    # x is time-major, so its N is on axis 1 and disagrees with y
    match = r"x has shape \(4, 6, 2\) \(batch axis 1\), y has shape \(4,\)"
    with pytest.raises(ValueError, match=match):
        batches(key, (np.zeros((4, 6, 2)), np.zeros(4)), 2)
    with pytest.raises(ValueError, match=r"x has shape \(5, 2\) .* y has shape \(4,\)"):
        batches(key, (np.zeros((5, 2)), np.zeros(4)), 2)
    expected = re.escape("data must be a Dataset or an (x, y) tuple; got ")
    with pytest.raises(ValueError, match=expected + "list"):
        batches(key, [np.zeros((4, 2)), np.zeros(4)], 2)
    with pytest.raises(ValueError, match=expected + "tuple"):
        batches(key, (np.zeros((4, 2)),), 2)


def test_batch_axis():
    assert batch_axis(np.zeros(4)) == 0
    assert batch_axis(np.zeros((4, 2))) == 0
    assert batch_axis(jax.numpy.zeros((9, 4, 2))) == 1
    for shape in [(), (1, 2, 3, 4)]:
        with pytest.raises(ValueError, match=re.escape(f"got shape {shape}")):
            batch_axis(np.zeros(shape))


# ---------------------------------------------------------------- validation


def test_check_features():
    check_features("x", np.zeros((2, 3)))
    check_features("x", np.zeros((4, 2, 3), np.int32))
    with pytest.raises(ValueError, match="x must be finite; found 3 NaN/inf values"):
        check_features("x", np.array([[np.nan, np.inf], [-np.inf, 0.0]]))
    with pytest.raises(ValueError, match=r"inputs must have ndim in \(2, 3\).*got ndim 1"):
        check_features("inputs", np.zeros(3))
    with pytest.raises(ValueError, match=r"ndim in \(1,\)"):
        check_features("x", np.zeros((2, 2)), ndim=1)
    with pytest.raises(ValueError, match="x must be a numeric array; got dtype <U1"):
        check_features("x", np.array([["a"]]))


def test_check_labels():
    check_labels("y", np.array([0, 1, 2], np.int64), 3)
    check_labels("y", np.zeros(0, np.int32), 3)
    with pytest.raises(
        ValueError,
        match=r"^y must hold integer class labels in \[0, 3\); found values in \[0, 5\]$",
    ):
        check_labels("y", np.array([0, 5, 1]), 3)
    with pytest.raises(ValueError, match=r"found values in \[-1, 1\]"):
        check_labels("y", np.array([-1, 1]), 3)
    with pytest.raises(ValueError, match="got dtype float64"):
        check_labels("y", np.array([0.0, 1.0]), 3)
    with pytest.raises(ValueError, match=r"y must be 1-D \[N\]; got shape \(2, 1\)"):
        check_labels("y", np.zeros((2, 1), np.int32), 3)
    with pytest.raises(ValueError, match="num_classes must be >= 1; got 0"):
        check_labels("y", np.zeros(2, np.int32), 0)


def test_dataset_defaults():
    data = Dataset(np.zeros((1, 1), np.float32), np.zeros(1, np.float32))
    assert data.classes == () and data.num_classes == 0


def test_benchmark_digits28_files_load_as_mnist_sized_digits(tmp_path):
    # benchmarks/make_digits28.py writes the IDX files that the wide-input benchmark reads.
    import subprocess
    from pathlib import Path

    from bayes_snn import presets

    script = Path(__file__).resolve().parents[1] / "benchmarks" / "make_digits28.py"
    run = subprocess.run([sys.executable, str(script), str(tmp_path)], capture_output=True, text=True, timeout=300,
                         check=False)
    assert run.returncode == 0, run.stderr[-2000:]
    for wide, small in zip(presets.load_dataset(f"idx:{tmp_path}"), presets.load_dataset("digits")):
        assert wide.x.shape == (small.x.shape[0], 784)
        np.testing.assert_array_equal(wide.y, small.y)
        images = wide.x.reshape(-1, 28, 28)
        np.testing.assert_allclose(images[:, 2:26:3, 2:26:3].reshape(-1, 64), small.x, atol=0.5 / 255)
        assert images[:, :2].max() == 0.0 and images[:, 26:].max() == 0.0  # the border
