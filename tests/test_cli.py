"""The bayes-snn command: metrics.json contract, evaluate round trip, one-line errors."""

import gzip
import json
import shutil
import subprocess
import sys

import numpy as np
import pytest

from bayes_snn import cli

REQUIRED = {"dataset", "method", "weights", "device", "epochs", "accuracy", "nll", "ece", "brier",
            "train_seconds", "peak_rss_mb"}
SMALL = ["--epochs", "1", "--hidden", "8", "--steps", "4", "--no-progress"]


def run(argv, capsys):
    code = cli.main(argv)
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    out = tmp_path_factory.mktemp("fit")
    assert cli.main(["fit", *SMALL, "--out", str(out)]) == 0
    return out


def test_fit_writes_metrics_contract(fitted):
    metrics = json.loads((fitted / "metrics.json").read_text())
    assert REQUIRED <= set(metrics)
    assert metrics["dataset"] == "yinyang" and metrics["method"] == cli.DEFAULT_METHOD
    assert metrics["epochs"] == 1 and metrics["weights"] == "gaussian" and metrics["device"] == "ideal"
    assert 0.0 <= metrics["accuracy"] <= 1.0 and metrics["nll"] > 0 and metrics["peak_rss_mb"] > 0
    assert (fitted / "posterior.npz").is_file()


def test_evaluate_reproduces_fit_metrics(fitted, capsys):
    code, out, err = run(["evaluate", str(fitted)], capsys)
    assert code == 0, err
    metrics = json.loads((fitted / "metrics.json").read_text())
    assert f"accuracy {metrics['accuracy']:.4f}" in out
    assert f"nll {metrics['nll']:.4f}" in out


@pytest.mark.parametrize(
    "argv, fragment",
    [
        (["fit", "--method", "nope"], "--method must be one of"),
        (["fit", "--dataset", "mnist"], "dataset must be one of"),
        (["fit", "--weights", "int:99"], "int:K needs K in [1, 12]"),
        (["fit", "--weights", "quaternary"], "weights must be one of"),
        (["fit", "--hidden", "-3"], "--hidden must be a positive integer"),
        (["fit", "--device", "quantum"], "--device must be one of"),
        (["fit", "--dataset", "idx:/no/such/dir"], "is not one"),
        (["evaluate", "/no/such/dir"], "missing metrics.json"),
        (["fit", "--method", "surrogate", "--likelihood-weight", "3"], "--likelihood-weight applies to --method sep or svi"),
        (["fit", "--likelihood-weight", "0"], "--likelihood-weight must be a positive number"),
        (["fit", "--likelihood-weight", "nan"], "--likelihood-weight must be a positive number"),
        (["fit", "--method", "surrogate", "--damping", "0.3"], "--damping applies to --method sep"),
        (["fit", "--method", "svi", "--anneal"], "--anneal applies to --method sep"),
        (["fit", "--damping", "1.5"], "--damping must be a number in (0.0, 1.0]; got 1.5"),
        (["fit", "--damping", "-1"], "--damping must be a positive number"),
        (["fit", "--backtrack", "1"], "--backtrack must be a number in [0.0, 0.999]; got 1.0"),
        (["fit", "--method", "surrogate", "--backtrack", "0.5"], "--backtrack applies to --method sep"),
        (["fit", "--enumerate-limit", "-1"], "--enumerate-limit must be a non-negative integer; got '-1'"),
        (["fit", "--enumerate-limit", "2.5"], "--enumerate-limit must be a non-negative integer; got '2.5'"),
        (["fit", "--method", "svi", "--enumerate-limit", "0"], "--enumerate-limit applies to --method sep"),
        (["fit", "--gaussian-update", "newton"], "--gaussian-update: invalid choice: 'newton'"),
        (["fit", "--method", "surrogate", "--gaussian-update", "taylor"], "--gaussian-update applies to --method sep"),
        (["fit", "--categorical-update", "log"], "--categorical-update: invalid choice: 'log'"),
        (["fit", "--method", "svi", "--categorical-update", "series"], "--categorical-update applies to --method sep"),
        (["fit", "--input-gain", "0"], "--input-gain must be a positive number"),
        (["frobnicate"], "invalid choice"),
    ],
)
def test_user_mistakes_are_one_line_exit_2(argv, fragment, capsys):
    code, out, err = run(argv, capsys)
    assert code == 2
    assert fragment in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_evaluate_rejects_tampered_posterior(fitted, tmp_path, capsys):
    bad = tmp_path / "bad"
    shutil.copytree(fitted, bad)
    (bad / "posterior.npz").write_bytes(b"not a zip archive")
    code, _, err = run(["evaluate", str(bad)], capsys)
    assert code == 2 and "not a valid bayes_snn posterior file" in err


def _write_idx(path, array):
    codes = {np.dtype(np.uint8): 0x08}
    header = bytes([0, 0, codes[array.dtype], array.ndim]) + b"".join(
        int(d).to_bytes(4, "big") for d in array.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + array.tobytes())


def test_fit_on_idx_directory(tmp_path, capsys):
    rng = np.random.default_rng(0)
    for split, n in (("train", 40), ("t10k", 20)):
        labels = rng.integers(0, 3, n).astype(np.uint8)
        images = (rng.random((n, 4, 4)) * 255).astype(np.uint8)
        _write_idx(tmp_path / f"{split}-images-idx3-ubyte.gz", images)
        _write_idx(tmp_path / f"{split}-labels-idx1-ubyte.gz", labels)
    code, out, err = run(["fit", "--dataset", f"idx:{tmp_path}", *SMALL], capsys)
    assert code == 0, err
    assert f"idx:{tmp_path} test: accuracy" in out


@pytest.mark.parametrize("method, param", [("sep", "likelihood_weight"), ("svi", "kl_weight")])
def test_likelihood_weight_is_chosen_on_held_out_data_and_recorded(method, param, tmp_path, capsys, monkeypatch):
    fits = []
    real_fit = cli.fit
    monkeypatch.setattr(cli, "fit", lambda model, data, m, **kw: fits.append(m) or real_fit(model, data, m, **kw))
    code, out, err = run(["fit", *SMALL, "--epochs", "2", "--method", method, "--likelihood-weight", "1", "4",
                          "--out", str(tmp_path)], capsys)
    assert code == 0, err
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    held_out = metrics["held_out_nll"]
    assert set(held_out) == {"1", "4"} and metrics["likelihood_weight"] == float(min(held_out, key=held_out.get))
    # The final fit (on all training data) uses the chosen value, converted for the backend.
    chosen = metrics["likelihood_weight"]
    assert getattr(fits[-1], param) == pytest.approx(chosen if method == "sep" else 1.0 / chosen)
    assert f"likelihood_weight {chosen:g}" in out


@pytest.mark.parametrize("method, tempering", [("sep", ["--likelihood-weight", "1", "4"]), ("surrogate", [])])
def test_several_batch_sizes_are_chosen_jointly_on_held_out_data(method, tempering, tmp_path, capsys, monkeypatch):
    fits = []
    real_fit = cli.fit
    monkeypatch.setattr(cli, "fit", lambda model, data, m, **kw: fits.append(m) or real_fit(model, data, m, **kw))
    code, out, err = run(["fit", *SMALL, "--method", method, *tempering, "--batch-size", "8", "16",
                          "--out", str(tmp_path)], capsys)
    assert code == 0, err
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    held_out = metrics["held_out_nll"]
    sizes = ["8", "16"]
    assert set(held_out) == ({f"{lam}/{b}" for lam in ("1", "4") for b in sizes} if tempering else set(sizes))
    best = min(held_out, key=held_out.get).split("/")
    assert metrics["batch_size"] == int(best[-1]) == fits[-1].batch_size  # the final fit uses the choice
    if tempering:
        assert metrics["likelihood_weight"] == float(best[0]) == fits[-1].likelihood_weight
        assert metrics["chosen_on_held_out_data"] == ["likelihood_weight", "batch_size"]
    assert f"batch_size {best[-1]}" in out


def test_sep_settings_reach_the_backend_and_are_recorded(tmp_path, capsys, monkeypatch):
    fits = []
    real_fit = cli.fit
    monkeypatch.setattr(cli, "fit", lambda model, data, m, **kw: fits.append(m) or real_fit(model, data, m, **kw))
    code, _, err = run(["fit", *SMALL, "--damping", "1", "--anneal", "--enumerate-limit", "0", "--gaussian-update",
                        "taylor", "--categorical-update", "series", "--backtrack", "0.5", "--out", str(tmp_path)], capsys)
    assert code == 0, err
    settings = ("damping", "anneal", "enumerate_limit", "gaussian_update", "categorical_update", "backtrack")
    assert tuple(getattr(fits[-1], name) for name in settings) == (1.0, True, 0, "taylor", "series", 0.5)
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert tuple(metrics[name] for name in settings) == (1.0, True, 0, "taylor", "series", 0.5)


def test_input_gain_reaches_the_model_and_is_recorded(tmp_path, capsys, monkeypatch):
    models = []
    real_fit = cli.fit
    monkeypatch.setattr(cli, "fit", lambda model, data, m, **kw: models.append(model) or real_fit(model, data, m, **kw))
    for argv, gain in [([], 0.5), (["--weights", "binary"], 8.0), (["--input-gain", "3"], 3.0)]:
        # the gain belongs to the model, whatever the method; the surrogate trainer is the quickest
        code, _, err = run(["fit", *SMALL, "--method", "surrogate", *argv, "--out", str(tmp_path)], capsys)
        assert code == 0, err
        first = models[-1].net.layers[1]
        assert first.gain_for(4) == gain  # Yin-Yang: 4 inputs
        assert json.loads((tmp_path / "metrics.json").read_text())["input_gain"] == gain


def test_console_script_is_installed():
    exe = shutil.which("bayes-snn")
    if exe is None:
        pytest.skip("package not installed as a distribution (bayes-snn not on PATH)")
    proc = subprocess.run([exe, "fit", "--method", "nope"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().startswith("bayes-snn: error: --method must be one of")


def test_module_entry_point_help():
    proc = subprocess.run([sys.executable, "-m", "bayes_snn.cli", "--help"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and "fit" in proc.stdout and "evaluate" in proc.stdout
