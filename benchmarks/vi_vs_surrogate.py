"""Benchmark: variational inference vs the surrogate-gradient point estimate (and SEP).

Every method fits the same model, the CLI's default network (``presets.classifier``:
Direct(10) -> Dense(128) -> LIF -> Dense(C) -> mean membrane x 30, unit-variance Gaussian
priors), on Yin-Yang and digits, over several seeds. Rows:

* ``surrogate``  BPTT point estimate (MAP), ``inference.SurrogateGradient()`` with its
  defaults (the CLI's trainer).
* ``svi``        ``inference.VI()`` with its defaults: the ELBO (``kl_weight=1``), Adam
  0.1 cosine-decayed to zero over the run.
* ``svi-hier``   ``VI()`` on the same network with the hierarchical prior of
  ``examples/hierarchical_vi.py``: each layer's weights ``N(0, tau_l)``,
  ``tau_l ~ HalfNormal(1)``, inferred jointly (log-normal factor).
* ``svi-t0.1``   the same with ``kl_weight=0.1``: a tempered posterior (see ``VI``).
* ``svi-select`` ``VI()`` with ``kl_weight`` chosen from ``KL_WEIGHTS`` by
  ``inference.select`` (held-out NLL on 20 % of the training data, the test set unseen),
  then refit on all training data.
* ``sep``        ``inference.SEP()`` with its CLI defaults (5 epochs), if available.

Test metrics (``Posterior.evaluate``: Monte Carlo predictive over 100 weight draws):
accuracy, NLL, ECE (15 bins), Brier, and the ECE floor: the mean ECE that a perfectly
calibrated classifier making the same predictions would score on this test set
(``metrics.ece_floor``; ECEs at or below it cannot be ranked). ``s/epoch`` is the median
wall time of an epoch after the first (which compiles; a one-epoch run reports that first
epoch). Target of issue 5: VI accuracy within 2 points of the surrogate-gradient point
estimate, with lower ECE.

Usage::

    python benchmarks/vi_vs_surrogate.py --out vi.json             # full (~15 min, 2-core CPU)
    python benchmarks/vi_vs_surrogate.py --out smoke.json --quick  # smoke run (~2 min)

The JSON file holds ``{"settings": ..., "rows": [...]}``, one row per (dataset, method,
seed) with the metrics, ``seconds_per_epoch`` and ``fit_seconds``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import time

METHODS = ("surrogate", "svi", "svi-hier", "svi-t0.1", "svi-select", "sep")
# Candidates of svi-select's kl_weight (1 = the ELBO).
KL_WEIGHTS = (1.0, 0.3, 0.1, 0.03)


def _hierarchical_model():
    """``model_fn`` of ``examples/hierarchical_vi.py``: ``W_l ~ N(0, tau_l)``, ``tau_l ~ HalfNormal(1)``."""
    import importlib.util
    import pathlib

    path = pathlib.Path(__file__).resolve().parent.parent / "examples" / "hierarchical_vi.py"
    spec = importlib.util.spec_from_file_location("hierarchical_vi", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.model_fn


def _method(name: str, epochs: int, batch_size: int):
    from bayes_snn import inference

    if name == "surrogate":
        return inference.SurrogateGradient(epochs=epochs, batch_size=batch_size)
    if name in ("svi", "svi-hier", "svi-select"):
        return inference.VI(epochs=epochs, batch_size=batch_size)
    if name == "svi-t0.1":
        return inference.VI(epochs=epochs, batch_size=batch_size, kl_weight=0.1)
    return inference.SEP(epochs=epochs, batch_size=batch_size)


def run_one(dataset: str, method: str, seed: int, args) -> dict:
    import jax
    import numpy as np

    from bayes_snn import inference, presets
    from bayes_snn.analysis import metrics
    from bayes_snn.models import Custom

    train, test = presets.load_dataset(dataset)
    if args.train_size is not None:
        train = train._replace(x=train.x[: args.train_size], y=train.y[: args.train_size])
    model = presets.classifier(train.x.shape[1], train.num_classes, hidden=args.hidden, steps=args.steps)
    if method == "svi-hier":
        model = Custom(_hierarchical_model(), model.net, num_classes=train.num_classes)
    epochs = args.sep_epochs if method == "sep" else args.epochs
    backend, chosen = _method(method, epochs, args.batch_size), None
    if method == "svi-select":
        choice = inference.select(model, train, backend, "kl_weight", KL_WEIGHTS, rng_key=jax.random.PRNGKey(1000 + seed),
                                  num_samples=50)
        backend, chosen = dataclasses.replace(backend, kl_weight=choice.best), choice.best
    t0 = time.perf_counter()
    post = inference.fit(model, train, backend, rng_key=jax.random.PRNGKey(seed), progress_bar=False)
    fit_seconds = time.perf_counter() - t0
    seconds = list(post.history["seconds"])
    probs = np.asarray(post.predict(test.x, jax.random.PRNGKey(seed + 1), num_samples=100))
    scores = metrics.classification_metrics(probs, test.y)  # = post.evaluate(test, same key, 100 draws)
    floor = metrics.ece_floor(probs)  # ECE of a perfectly calibrated model with these predictions
    scores.update(ece_floor=float(floor.mean()), ece_floor_95=float(np.quantile(floor, 0.95)))
    return {
        "dataset": dataset,
        "method": method,
        "seed": seed,
        "epochs": epochs,
        "kl_weight": getattr(backend, "kl_weight", None),
        "chosen_by_select": chosen,
        "seconds_per_epoch": statistics.median(seconds[1:]) if len(seconds) > 1 else seconds[0],
        "fit_seconds": fit_seconds,
        **{k: float(v) for k, v in scores.items()},
    }


def _mean_sd(values):
    return statistics.mean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def report(rows: list[dict]) -> str:
    lines = ["| dataset | method | epochs | accuracy (%) | vs surrogate (pts) | NLL | ECE | ECE floor | Brier | s/epoch | fit s |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    verdicts = []
    for dataset in dict.fromkeys(r["dataset"] for r in rows):
        sel = {m: [r for r in rows if r["dataset"] == dataset and r["method"] == m] for m in METHODS}
        base = sel["surrogate"]
        base_acc = statistics.mean(100 * r["accuracy"] for r in base) if base else None
        base_ece = statistics.mean(r["ece"] for r in base) if base else None
        for m, rs in sel.items():
            if not rs:
                continue
            acc, acc_sd = _mean_sd([100 * r["accuracy"] for r in rs])
            nll, ece, brier = (statistics.mean(r[k] for r in rs) for k in ("nll", "ece", "brier"))
            floor = statistics.mean(r.get("ece_floor", float("nan")) for r in rs)
            diff = "" if base_acc is None else f"{acc - base_acc:+.1f}"
            label = m
            if any(r.get("chosen_by_select") is not None for r in rs):
                label += " (kl_weight " + "/".join(f"{r['chosen_by_select']:g}" for r in rs) + ")"
            lines.append(f"| {dataset} | {label} | {rs[0]['epochs']} | {acc:.1f} +- {acc_sd:.1f} | {diff} | {nll:.3f} | "
                         f"{ece:.3f} | {floor:.3f} | {brier:.3f} | {statistics.median(r['seconds_per_epoch'] for r in rs):.2f} | "
                         f"{statistics.median(r['fit_seconds'] for r in rs):.0f} |")
            if m.startswith("svi") and base_acc is not None:
                ok_acc, ok_ece = acc >= base_acc - 2.0, ece < base_ece
                verdicts.append(f"{dataset} {m}: accuracy within 2 points {'yes' if ok_acc else 'NO'} ({acc - base_acc:+.1f}), "
                                f"lower ECE {'yes' if ok_ece else 'NO'} ({ece:.3f} vs {base_ece:.3f})")
    return "\n".join(lines + ["", "Target (issue 5):"] + verdicts)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", help="write the settings and rows to this JSON file")
    p.add_argument("--quick", action="store_true", help="smoke run: small network, few epochs, training subset, one seed")
    p.add_argument("--datasets", nargs="+", default=["yinyang", "digits"], choices=["yinyang", "digits"])
    p.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    p.add_argument("--epochs", type=int, default=40, help="epochs of the gradient methods")
    p.add_argument("--sep-epochs", type=int, default=5)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--hidden", type=int, default=128)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--train-size", type=int, default=None, help="use the first N training examples")
    args = p.parse_args(argv)
    if args.quick:
        args.epochs, args.sep_epochs, args.hidden, args.seeds = 3, 1, 32, 1
        args.train_size = args.train_size or 500
    methods = list(args.methods)
    if "sep" in methods:
        from bayes_snn import inference

        if not hasattr(inference, "SEP"):
            print("inference.SEP is not available: skipping the SEP rows")
            methods.remove("sep")
    rows = []
    for dataset in args.datasets:
        for seed in range(args.seeds):
            for method in methods:
                row = run_one(dataset, method, seed, args)
                print(f"{dataset} {method} seed {seed}: acc {row['accuracy']:.3f} nll {row['nll']:.3f} "
                      f"ece {row['ece']:.3f} {row['seconds_per_epoch']:.2f} s/epoch", flush=True)
                rows.append(row)
    print()
    print(report(rows))
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"settings": vars(args), "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
