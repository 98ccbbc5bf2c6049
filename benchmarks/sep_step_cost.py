"""Benchmark: where the time of one SEP minibatch update goes, against one surrogate-gradient step.

For the CLI's network (``presets.classifier``, 128 hidden units, batch 32) on Yin-Yang and
digits (or ``random:F``: ``F`` uniform random features), with Gaussian, binary and ternary
weights, single-step and LIF (10 steps), it times with warm caches (median of ``--repeats`` blocks of ``--calls`` calls each, milliseconds
per call):

* ``moments``: the moment pass alone (``log Z`` of every example of the batch);
* ``moments+grad``: the same with each example's derivatives (``moments_grad.evidence_derivatives``,
  what the SEP step uses);
* ``sep step``: the whole jitted SEP update (derivatives, site algebra, safety rules), and
  the seconds XLA took to compile it;
* ``surrogate step``: the whole jitted surrogate-gradient training step (BPTT + Adam);
* ``ratio``: SEP step over surrogate step, and ``floor``: ``moments+grad`` over the surrogate
  step. Every SEP update needs those derivatives, so ``floor`` bounds from below what any
  site algebra on top of them could reach: propagating a mean and a variance costs about
  two forward passes and two backward passes where the surrogate trainer makes one of each.

Per-epoch ratios in ``sep_vs_surrogate.py`` are somewhat smaller than these per-step
ratios because ``fit``'s one dispatch per minibatch is a fixed cost for both methods.

Usage::

    python benchmarks/sep_step_cost.py --out step_cost.json
    python benchmarks/sep_step_cost.py --out cost.json --datasets digits --weights ternary
    python benchmarks/sep_step_cost.py --out taylor.json --weights gaussian --gaussian-update taylor
    python benchmarks/sep_step_cost.py --out warm.json --weights gaussian --warm-steps 40
        # the SEP step after 40 updates (see below)
    python benchmarks/sep_step_cost.py --out wide.json --datasets random:784 --weights gaussian
        # MNIST-sized input (784 uniform random features, 10 classes)
    python benchmarks/sep_step_cost.py --out per_example.json --weights binary --categorical-update per_example
    python benchmarks/sep_step_cost.py --out grid.json --weights int:6 --calls 5 --repeats 3
        # signed 6-bit weights (127 values)

The SEP step is timed at its initial state, where ``categorical_update="series"`` rarely
needs per-example logarithms, or after ``--warm-steps S`` updates on the training data
(trained weights have smaller cavity variances, which changes how often the series of
``sep_sites.outer_matched_sums`` falls back to per-example terms); ``sep_vs_surrogate.py``
times whole runs.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time


def _time(fn, args, calls: int, repeats: int) -> float:
    import jax

    jax.block_until_ready(fn(*args))  # compile and warm up
    blocks = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(calls):
            out = fn(*args)
        jax.block_until_ready(out)
        blocks.append((time.perf_counter() - t0) / calls * 1e3)
    return statistics.median(blocks)


def run(dataset: str, weights: str, neuron: str, calls: int, repeats: int, batch_size: int,
        gaussian_update: str = "moment_match", categorical_update: str = "series", warm_steps: int = 0) -> dict:
    import jax
    import jax.numpy as jnp
    import numpy as np

    from bayes_snn import inference, presets
    from bayes_snn.datasets.batching import Batch
    from bayes_snn.inference import moments
    from bayes_snn.inference.moments_grad import evidence_derivatives

    if dataset.startswith("random:"):  # F uniform features, 10 classes: the cost of wide inputs
        features = int(dataset.split(":")[1])
        rng = np.random.default_rng(0)
        x, y, classes = rng.uniform(size=(256, features)).astype(np.float32), rng.integers(0, 10, 256), 10
    else:
        train, _ = presets.load_dataset(dataset)
        x, y, classes = train.x, train.y, train.num_classes
    model = presets.classifier(x.shape[1], classes, neuron=neuron, weights=weights)
    x, y = model.check_data(x, y)
    batch = Batch(jnp.asarray(x[:batch_size]), jnp.asarray(y[:batch_size]), jnp.ones(batch_size, bool))
    key = jax.random.PRNGKey(0)
    sep = inference.SEP(batch_size=batch_size, gaussian_update=gaussian_update, categorical_update=categorical_update)
    sep_state = sep.init(key, model, x, y)
    t0 = time.perf_counter()
    sep_step = jax.jit(sep.step).lower(key, sep_state, batch).compile()
    compile_s = time.perf_counter() - t0
    for i in range(warm_steps):  # successive minibatches, cycling through the data
        rows = np.arange(i * batch_size, (i + 1) * batch_size) % len(y)
        sep_state, _ = sep_step(key, sep_state, Batch(jnp.asarray(x[rows]), jnp.asarray(y[rows]), batch.mask))
    _, inputs, _ = sep.pass_inputs(sep_state)  # what the SEP step differentiates
    log_z = lambda mom, xi, yi: moments.log_evidence(model, mom, xi, yi)
    forward = jax.jit(jax.vmap(log_z, in_axes=(None, 0, 0)))
    with_grad = jax.jit(lambda mom, xb, yb: evidence_derivatives(model, mom, xb, yb, factored=True))
    surrogate = inference.SurrogateGradient(batch_size=batch_size)
    sur_state = surrogate.init(key, model, x, y)
    row = {
        "dataset": dataset,
        "weights": weights,
        "neuron": neuron,
        "batch_size": batch_size,
        "gaussian_update": gaussian_update,
        "categorical_update": categorical_update,
        "warm_steps": warm_steps,
        "moments_ms": _time(forward, (inputs, batch.x, batch.y), calls, repeats),
        "moments_grad_ms": _time(with_grad, (inputs, batch.x, batch.y), calls, repeats),
        "sep_step_ms": _time(sep_step, (key, sep_state, batch), calls, repeats),
        "sep_compile_s": compile_s,
        "surrogate_step_ms": _time(jax.jit(surrogate.step), (key, sur_state, batch), calls, repeats),
    }
    row["ratio"] = row["sep_step_ms"] / row["surrogate_step_ms"]
    row["floor"] = row["moments_grad_ms"] / row["surrogate_step_ms"]
    return row


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True, help="JSON file for the rows")
    p.add_argument("--calls", type=int, default=100)
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--datasets", nargs="+", default=["yinyang", "digits"])
    p.add_argument("--weights", nargs="+", default=["gaussian", "binary", "ternary"])
    p.add_argument("--gaussian-update", choices=["moment_match", "taylor"], default="moment_match",
                   help="SEP's gaussian_update")
    p.add_argument("--categorical-update", choices=["per_example", "series", "taylor"], default="series",
                   help="SEP's categorical_update")
    p.add_argument("--warm-steps", type=int, default=0, help="SEP updates made before the SEP step is timed")
    args = p.parse_args(argv)
    rows = [run(d, w, neuron, args.calls, args.repeats, args.batch_size, args.gaussian_update,
                args.categorical_update, args.warm_steps)
            for d in args.datasets for w in args.weights for neuron in ("single-step", "lif")]
    with open(args.out, "w") as f:
        json.dump(rows, f, indent=1)
    print(f"{'dataset':10} {'weights':9} {'neuron':12} {'moments':>8} {'+grad':>8} {'SEP step':>9} {'surrogate':>9} "
          f"{'ratio':>6} {'floor':>6}  (ms per call)  {'compile':>7} (s, SEP step)")
    for r in rows:
        print(f"{r['dataset']:10} {r['weights']:9} {r['neuron']:12} {r['moments_ms']:8.3f} {r['moments_grad_ms']:8.3f} {r['sep_step_ms']:9.3f} "
              f"{r['surrogate_step_ms']:9.3f} {r['ratio']:6.1f} {r['floor']:6.1f}  {'':13} {r['sep_compile_s']:7.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
