"""The ``bayes-snn`` command.

``bayes-snn fit`` with no arguments fits the default network on Yin-Yang with the default
backend and prints test accuracy, NLL and ECE. ``--out DIR`` writes ``DIR/metrics.json``
and the fitted posterior ``DIR/posterior.npz``; ``bayes-snn evaluate DIR`` re-evaluates it.
User mistakes print one line on stderr and exit with code 2.
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import math
import resource
import sys
import time
from pathlib import Path

from . import presets
from .inference import SEP, VI, Posterior, RateBackprop, SurrogateGradient, fit, select
from .inference.sep import CATEGORICAL_UPDATES, GAUSSIAN_UPDATES


def _surrogate(epochs, batch_size):
    return SurrogateGradient(epochs=epochs or 40, batch_size=batch_size or 32)


def _sep(epochs, batch_size):
    return SEP(epochs=epochs or 5, batch_size=batch_size or 32)


def _svi(epochs, batch_size):
    return VI(epochs=epochs or 40, batch_size=batch_size or 32)


def _rate(mode):
    def make(epochs, batch_size):
        return RateBackprop(mode=mode, epochs=epochs or 40, batch_size=batch_size or 32)

    return make


# CLI method name -> make(epochs or None, batch_size or None) -> backend.
METHODS = {
    "sep": _sep,
    "surrogate": _surrogate,
    "rate-m": _rate("rate-m"),
    "rate-s": _rate("rate-s"),
    "svi": _svi,
}
DEFAULT_METHOD = "sep"
# The backend setting that --likelihood-weight sets, and how: SEP takes the power itself,
# VI its inverse as the KL weight (both fit p0(W) p(D | W)^likelihood_weight).
TEMPERING = {"sep": ("likelihood_weight", lambda lam: lam), "svi": ("kl_weight", lambda lam: 1.0 / lam)}
# Backend settings the CLI passes through as they are: flag destination -> methods that have it.
METHOD_SETTINGS = {"damping": ("sep",), "anneal": ("sep",), "enumerate_limit": ("sep",), "gaussian_update": ("sep",),
                   "categorical_update": ("sep",), "backtrack": ("sep",)}
DEVICES = ("ideal",)


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, exit code 2, no usage dump
        raise _UsageError(message)


class _UsageError(Exception):
    pass


def _positive(name, kind=int, zero_ok=False):
    """argparse type: a positive (``zero_ok``: non-negative) finite ``kind`` (int or float),
    with a one-line error naming ``name``."""
    what = f"a {'non-negative' if zero_ok else 'positive'} {'integer' if kind is int else 'number'}"

    def parse(text):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{name} must be {what}; got {text!r}") from None
        if not (math.isfinite(value) and (value >= 0 if zero_ok else value > 0)):
            raise argparse.ArgumentTypeError(f"{name} must be {what}; got {text!r}")
        return value

    return parse


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="bayes-snn", description="Bayesian spiking neural networks.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    f = sub.add_parser("fit", help="fit a network and report test metrics")
    f.add_argument("--dataset", default="yinyang", help="yinyang, digits or idx:DIR (MNIST-named IDX files)")
    f.add_argument("--method", default=DEFAULT_METHOD, help=f"one of {', '.join(METHODS)}")
    f.add_argument("--weights", default="gaussian", help=f"one of {', '.join(presets.WEIGHTS)}")
    f.add_argument("--neuron", default="lif", choices=("lif", "single-step"), help="hidden neuron model")
    f.add_argument("--hidden", type=_positive("--hidden"), default=128, help="hidden units")
    f.add_argument("--steps", type=_positive("--steps"), default=10, help="time steps")
    f.add_argument("--input-gain", type=_positive("--input-gain", float), default=None,
                   help="gain of the first layer and sd of its bias prior (default: presets.classifier's, "
                        "16/sqrt(inputs) for discrete weights with LIF neurons, else 1/sqrt(inputs))")
    f.add_argument("--epochs", type=_positive("--epochs"), default=None, help="epochs (method default if omitted)")
    f.add_argument("--batch-size", type=_positive("--batch-size"), nargs="+", default=None,
                   help="minibatch size; several values: the best held-out NLL on 20%% of the training data, "
                        "chosen jointly with --likelihood-weight (inference.select)")
    f.add_argument("--seed", type=int, default=0, help="random seed")
    f.add_argument("--likelihood-weight", type=_positive("--likelihood-weight", float), nargs="+", default=None,
                   help="sep/svi: fit the tempered posterior p0(W) p(D|W)^VALUE (svi: kl_weight = 1/VALUE); "
                        "several values: the best held-out NLL on 20%% of the training data (inference.select)")
    f.add_argument("--damping", type=_positive("--damping", float), default=None,
                   help="sep: step size of the site update, in (0, 1] (default 0.5)")
    f.add_argument("--anneal", action="store_true", default=None,
                   help="sep: decay the damping along a cosine over the run")
    f.add_argument("--enumerate-limit", type=_positive("--enumerate-limit", zero_ok=True), default=None,
                   help="sep: sum over a discrete first layer exactly when its K^inputs joint weight values per "
                        "unit are at most this (default 256); 0 puts it through the central limit (faster, less "
                        "well calibrated)")
    f.add_argument("--gaussian-update", choices=GAUSSIAN_UPDATES, default=None,
                   help="sep: how each example's Gaussian site is formed: moment_match (default, exact) or taylor "
                        "(second order in the cavity mean; both are summed by matrix products in the first layer, "
                        "taylor's steps take about 0.7 of the time on digits and with 784 inputs)")
    f.add_argument("--categorical-update", choices=CATEGORICAL_UPDATES, default=None,
                   help="sep: how the per-example sites of discrete weights in moment form are summed: "
                        "series (default: in the first layer a power series summed by matrix products where its "
                        "remainder bound allows, per-example logarithms elsewhere), per_example (a logarithm each) "
                        "or taylor "
                        "(the second-order expansion of log Z in the weight's value, summed by matrix products)")
    f.add_argument("--backtrack", type=_positive("--backtrack", float, zero_ok=True), default=None,
                   help="sep: redo an update that lowers its minibatch's log-likelihood with the damping times "
                        "this, in [0, 1) (default 0: off); for large --batch-size, where steps overshoot")
    f.add_argument("--device", default="ideal", help=f"one of {', '.join(DEVICES)}")
    f.add_argument("--out", type=Path, default=None, help="write metrics.json and posterior.npz here")
    f.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    e = sub.add_parser("evaluate", help="re-evaluate a fitted result directory")
    e.add_argument("dir", type=Path, help="a directory written by 'bayes-snn fit --out'")
    return parser


def _make_device(name: str):
    from .devices import Ideal

    if name not in DEVICES:
        raise ValueError(f"--device must be one of {', '.join(DEVICES)}; got {name!r}")
    return Ideal()


def _require_method(flag: str, methods, method: str) -> None:
    """Raise ``ValueError`` unless ``flag`` applies to ``method`` (one of ``methods``)."""
    if method not in methods:
        raise ValueError(f"{flag} applies to --method {' or '.join(methods)}; got {method!r}")


def cmd_fit(args) -> dict:
    import jax

    if args.method not in METHODS:
        raise ValueError(f"--method must be one of {', '.join(METHODS)}; got {args.method!r}")
    device = _make_device(args.device)
    train, test = presets.load_dataset(args.dataset)
    model = presets.classifier(
        train.x.shape[-1], max(train.num_classes, 2), hidden=args.hidden, steps=args.steps,
        weights=args.weights, neuron=args.neuron, input_gain=args.input_gain, device=device,
    )
    method = METHODS[args.method](args.epochs, args.batch_size[0] if args.batch_size else None)
    settings = {name: getattr(args, name) for name in METHOD_SETTINGS if getattr(args, name) is not None}
    for name in settings:
        _require_method(f"--{name.replace('_', '-')}", METHOD_SETTINGS[name], args.method)
    try:
        method = dataclasses.replace(method, **settings)
    except ValueError as err:
        raise ValueError(f"--{err}") from None
    method, chosen = _choose(args, model, train, method)
    t0 = time.perf_counter()
    post = fit(model, train, method, rng_key=jax.random.PRNGKey(args.seed), progress_bar=not args.no_progress)
    seconds = time.perf_counter() - t0
    scores = post.evaluate(test, jax.random.PRNGKey(args.seed + 1))
    input_gain = model.net.layers[model.net.names.index("dense_0")].gain_for(train.x.shape[-1])  # the default resolved
    metrics = {
        "dataset": args.dataset, "method": args.method, "weights": args.weights, "device": args.device,
        "neuron": args.neuron, "hidden": args.hidden, "steps": args.steps, "input_gain": input_gain,
        "epochs": method.epochs, "batch_size": method.batch_size, "seed": args.seed,
        **{name: getattr(method, name) for name in METHOD_SETTINGS if args.method in METHOD_SETTINGS[name]},
        **chosen, **scores, "train_seconds": seconds,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0,
        "history": {k: v.tolist() for k, v in post.history.items()},
    }
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        post.save(args.out / "posterior.npz")
        (args.out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    return metrics


def _choose(args, model, train, method):
    """Apply ``--likelihood-weight`` and ``--batch-size``, choosing among several values of either
    jointly by ``inference.select``; returns the backend and what ``metrics.json`` records."""
    import jax

    flags = {}  # backend setting -> (metrics.json name, the values given, as the backend takes them)
    if args.likelihood_weight:
        _require_method("--likelihood-weight", TEMPERING, args.method)
        param, convert = TEMPERING[args.method]
        given = list(dict.fromkeys(args.likelihood_weight))
        flags[param] = ("likelihood_weight", given, [convert(v) for v in given])
    if args.batch_size:
        given = list(dict.fromkeys(args.batch_size))
        flags["batch_size"] = ("batch_size", given, given)
    names = tuple(flags)
    labels = list(itertools.product(*(given for _, given, _ in flags.values())))
    values = list(itertools.product(*(taken for _, _, taken in flags.values())))
    best, record = labels[0], {}
    if len(values) > 1:
        choice = select(model, train, method, names, values, rng_key=jax.random.PRNGKey(args.seed + 2))
        best = labels[values.index(choice.best)]
        record["chosen_on_held_out_data"] = [name for name, _, _ in flags.values()]
        record["held_out_nll"] = {"/".join(f"{v:g}" for v in label): choice.scores[value]["nll"]
                                  for label, value in zip(labels, values)}
    record.update((name, value) for (name, _, _), value in zip(flags.values(), best))
    return dataclasses.replace(method, **dict(zip(names, values[labels.index(best)]))), record


def cmd_evaluate(args) -> dict:
    import jax

    folder = args.dir
    meta_path, post_path = folder / "metrics.json", folder / "posterior.npz"
    for p in (meta_path, post_path):
        if not p.is_file():
            raise ValueError(f"{folder} is not a fit directory: missing {p.name}")
    try:
        meta = json.loads(meta_path.read_text())
        dataset, seed = meta["dataset"], int(meta.get("seed", 0))
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as err:
        raise ValueError(f"{meta_path} is malformed ({err})") from None
    post = Posterior.load(post_path)
    _, test = presets.load_dataset(dataset)
    return {"dataset": dataset, "method": post.method, **post.evaluate(test, jax.random.PRNGKey(seed + 1))}


def _report(metrics: dict) -> None:
    print(f"{metrics['dataset']} test: accuracy {metrics['accuracy']:.4f}  nll {metrics['nll']:.4f}  "
          f"ece {metrics['ece']:.4f}  brier {metrics['brier']:.4f}")
    if "train_seconds" in metrics:
        print(f"method {metrics['method']}, {metrics['epochs']} epochs in {metrics['train_seconds']:.1f} s, "
              f"peak RSS {metrics['peak_rss_mb']:.0f} MB")
    if "likelihood_weight" in metrics:
        print(f"tempered posterior: likelihood_weight {metrics['likelihood_weight']:g}")
    if "held_out_nll" in metrics:
        chosen = ", ".join(f"{name} {metrics[name]:g}" for name in metrics["chosen_on_held_out_data"])
        scores = ", ".join(f"{k}: {v:.4f}" for k, v in metrics["held_out_nll"].items())
        print(f"chosen on held-out data: {chosen} (held-out NLL {'/'.join(metrics['chosen_on_held_out_data'])} "
              f"{scores})")


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
        metrics = cmd_fit(args) if args.command == "fit" else cmd_evaluate(args)
    except (_UsageError, ValueError, ImportError, OSError) as err:
        print(f"bayes-snn: error: {err}", file=sys.stderr)
        return 2
    _report(metrics)
    return 0


if __name__ == "__main__":
    sys.exit(main())
