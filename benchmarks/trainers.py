"""Trainer benchmark: surrogate-gradient BPTT vs rate-based backprop (rate-m, rate-s).

Two parts, each configuration in its own process (so its peak RSS is its own):

* ``sweep``: digits, Direct(T) -> Dense(512) -> LIF -> Dense(10) -> mean membrane (the
  CLI's default network, ``presets.classifier``, with 512 hidden neurons), batch 256,
  T in {8, 32, 128, 512}. Per row: the train step's compiled temporary memory (XLA's
  memory analysis of ``jit(method.step)``), the process's peak RSS up to the end of
  training (it includes the Python/JAX baseline of about 0.5 GB), the median seconds
  per epoch (the first epoch, which compiles, excluded) and test accuracy after a fixed
  number of epochs. With one hidden layer and Direct encoding the rate gradient equals
  the BPTT gradient (the hidden input is constant in time), so this part compares cost.
* ``accuracy``: Yin-Yang and digits at T=32 with two hidden layers, where the rate
  gradient is an approximation, over several seeds.

Usage::

    python benchmarks/trainers.py --out trainers.json            # full (~35 min on 2 busy cores)
    python benchmarks/trainers.py --out smoke.json --quick       # smoke run (a few minutes)

The JSON file holds a list of rows with ``part``, ``dataset``, ``method``, ``steps``,
``temp_bytes``, ``peak_rss_mb``, ``seconds_per_epoch``, ``accuracy`` and the settings.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time

METHODS = ("surrogate", "rate-m", "rate-s")


def _model(dataset: str, hidden: int, layers: int, steps: int, num_classes: int, in_features: int):
    from bayes_snn import Classifier, Dense, Sequential, encoders, neurons, presets, readouts

    if layers == 1:
        return presets.classifier(in_features, num_classes, hidden=hidden, steps=steps)
    body = []
    for _ in range(layers):
        body += [Dense(hidden), neurons.LIF(beta=0.9, threshold=1.0)]
    # Readout scale 30 as in presets.classifier (calibrated point estimates).
    net = Sequential(encoders.Direct(steps), *body, Dense(num_classes), readouts.MeanMembrane(scale=30.0))
    return Classifier(net, num_classes)


def _method(name: str, epochs: int, batch_size: int, learning_rate: float):
    from bayes_snn import inference

    kw = dict(epochs=epochs, batch_size=batch_size, learning_rate=learning_rate)
    if name == "surrogate":
        return inference.SurrogateGradient(**kw)
    return inference.RateBackprop(mode=name, **kw)


def _data(name: str, train_size: int | None):
    from bayes_snn import datasets

    if name == "digits":
        train, test = datasets.digits("train"), datasets.digits("test")
    else:
        train, test = datasets.yin_yang("train"), datasets.yin_yang("test")
    if train_size is not None:
        train = train._replace(x=train.x[:train_size], y=train.y[:train_size])
    return train, test


def run_one(cfg: dict) -> dict:
    """Fit one configuration in this process and measure it."""
    import jax
    import jax.numpy as jnp

    from bayes_snn import inference
    from bayes_snn.datasets import Batch

    train, test = _data(cfg["dataset"], cfg.get("train_size"))
    model = _model(cfg["dataset"], cfg["hidden"], cfg["layers"], cfg["steps"], train.num_classes, train.x.shape[1])
    method = _method(cfg["method"], cfg["epochs"], cfg["batch_size"], cfg["learning_rate"])
    key = jax.random.PRNGKey(cfg["seed"])

    # Compiled temporaries of one train step on a full batch (an extra compile, not timed).
    probe = _method(cfg["method"], cfg["epochs"], cfg["batch_size"], cfg["learning_rate"])
    state = probe.init(key, model, train.x, train.y)
    b = min(cfg["batch_size"], len(train.y))
    batch = Batch(jnp.asarray(train.x[:b]), jnp.asarray(train.y[:b]), jnp.ones(b, bool))
    compiled = jax.jit(probe.step).lower(key, state, batch).compile()
    temp_bytes = int(compiled.memory_analysis().temp_size_in_bytes)
    del compiled, state

    t0 = time.perf_counter()
    post = inference.fit(model, train, method, rng_key=key, progress_bar=False)
    fit_seconds = time.perf_counter() - t0
    seconds = list(post.history["seconds"])
    per_epoch = statistics.median(seconds[1:]) if len(seconds) > 1 else seconds[0]
    # Peak RSS of training, read before evaluation (which simulates the whole test set).
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    metrics = post.evaluate(test)
    return {
        **cfg,
        "temp_bytes": temp_bytes,
        "peak_rss_mb": peak_kb / 1024.0,
        "seconds_per_epoch": per_epoch,
        "fit_seconds": fit_seconds,
        "accuracy": float(metrics["accuracy"]),
        "nll": float(metrics["nll"]),
        "final_loss": float(post.history["loss"][-1]),
    }


def _spawn(cfg: dict) -> dict:
    out = subprocess.run(
        [sys.executable, __file__, "--worker", json.dumps(cfg)], capture_output=True, text=True, check=False
    )
    if out.returncode != 0:
        raise RuntimeError(f"configuration {cfg} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def configurations(args) -> list[dict]:
    cfgs = []
    for steps in args.steps:
        for method in METHODS:
            cfgs.append(dict(part="sweep", dataset="digits", method=method, steps=steps, hidden=args.hidden, layers=1,
                             batch_size=args.batch_size, epochs=args.epochs, learning_rate=args.learning_rate, seed=0,
                             train_size=args.train_size))
    if not args.skip_accuracy:
        for dataset, epochs, batch in (("yinyang", args.yy_epochs, 64), ("digits", args.digits_epochs, 32)):
            for seed in range(args.seeds):
                for method in METHODS:
                    cfgs.append(dict(part="accuracy", dataset=dataset, method=method, steps=32, hidden=args.acc_hidden,
                                     layers=2, batch_size=batch, epochs=epochs, learning_rate=1e-2, seed=seed,
                                     train_size=args.train_size))
    return cfgs


def _mb(b):
    return b / 2**20


def report(rows: list[dict]) -> str:
    lines = []
    sweep = [r for r in rows if r["part"] == "sweep"]
    if sweep:
        r0 = sweep[0]
        lines.append(f"Sweep: digits, 1 x {r0['hidden']} LIF, batch {r0['batch_size']}, {r0['epochs']} epochs, "
                     f"learning rate {r0['learning_rate']}")
        lines.append("| method | T | step temp (MB) | peak RSS (MB) | s / epoch | test acc |")
        lines.append("|---|---:|---:|---:|---:|---:|")
        for r in sorted(sweep, key=lambda r: (METHODS.index(r["method"]), r["steps"])):
            lines.append(f"| {r['method']} | {r['steps']} | {_mb(r['temp_bytes']):.1f} | {r['peak_rss_mb']:.0f} | "
                         f"{r['seconds_per_epoch']:.2f} | {100 * r['accuracy']:.1f} |")
        by = {(r["method"], r["steps"]): r for r in sweep}
        steps = sorted({r["steps"] for r in sweep})
        lines.append("")
        for t in steps:
            if ("surrogate", t) in by and ("rate-s", t) in by:
                lines.append(f"T={t}: rate-s / BPTT step memory = "
                             f"{by[('rate-s', t)]['temp_bytes'] / by[('surrogate', t)]['temp_bytes']:.4f}")
        lo, hi = steps[0], steps[-1]
        for m in METHODS:
            if (m, lo) in by and (m, hi) in by:
                lines.append(f"{m}: s/epoch T={hi} / T={lo} = "
                             f"{by[(m, hi)]['seconds_per_epoch'] / by[(m, lo)]['seconds_per_epoch']:.2f}, step memory "
                             f"T={hi} / T={lo} = {by[(m, hi)]['temp_bytes'] / by[(m, lo)]['temp_bytes']:.2f}")
    acc = [r for r in rows if r["part"] == "accuracy"]
    if acc:
        r0 = acc[0]
        lines.append("")
        lines.append(f"Accuracy at T=32, 2 x {r0['hidden']} LIF, seeds 0..{max(r['seed'] for r in acc)} (mean +- sd, "
                     "difference to BPTT)")
        lines.append("| dataset | method | epochs | test acc (%) | vs BPTT (points) | s / epoch |")
        lines.append("|---|---|---:|---:|---:|---:|")
        for dataset in sorted({r["dataset"] for r in acc}):
            base = [r["accuracy"] for r in acc if r["dataset"] == dataset and r["method"] == "surrogate"]
            for m in METHODS:
                sel = [r for r in acc if r["dataset"] == dataset and r["method"] == m]
                a = [100 * r["accuracy"] for r in sel]
                sd = statistics.stdev(a) if len(a) > 1 else 0.0
                diff = statistics.mean(a) - 100 * statistics.mean(base)
                sec = statistics.median(r["seconds_per_epoch"] for r in sel)
                lines.append(f"| {dataset} | {m} | {sel[0]['epochs']} | {statistics.mean(a):.1f} +- {sd:.1f} | "
                             f"{diff:+.1f} | {sec:.2f} |")
    return "\n".join(lines)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", help="write the rows to this JSON file")
    p.add_argument("--quick", action="store_true", help="smoke run: small T, few epochs, training subset")
    p.add_argument("--steps", type=int, nargs="+", default=[8, 32, 128, 512])
    p.add_argument("--hidden", type=int, default=512)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--epochs", type=int, default=30, help="epochs of the sweep")
    p.add_argument("--learning-rate", type=float, default=3e-2, help="Adam step of the sweep (6 steps per epoch)")
    p.add_argument("--acc-hidden", type=int, default=128)
    p.add_argument("--yy-epochs", type=int, default=20)
    p.add_argument("--digits-epochs", type=int, default=30)
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--train-size", type=int, default=None)
    p.add_argument("--skip-accuracy", action="store_true")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        print(json.dumps(run_one(json.loads(args.worker))))
        return
    if args.quick:
        args.steps, args.epochs, args.train_size = [8, 32], 3, 512
        args.yy_epochs, args.digits_epochs, args.seeds, args.acc_hidden = 2, 2, 1, 32
    rows = []
    for cfg in configurations(args):
        row = _spawn(cfg)
        rows.append(row)
        print(f"{row['part']:8s} {row['dataset']:7s} {row['method']:9s} T={row['steps']:<4d} seed={row['seed']} "
              f"temp={_mb(row['temp_bytes']):8.1f}MB rss={row['peak_rss_mb']:6.0f}MB "
              f"{row['seconds_per_epoch']:7.2f}s/epoch acc={100 * row['accuracy']:.1f}", flush=True)
        if args.out:  # rewrite after every row so a long run keeps its partial results
            with open(args.out, "w") as f:
                json.dump(rows, f, indent=1)
    print()
    print(report(rows))


if __name__ == "__main__":
    main()
