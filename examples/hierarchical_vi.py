"""Variational inference on a hand-written NumPyro model: a spiking classifier whose
weight scales are learned (a hierarchical prior, one scale per layer).

    tau_l ~ HalfNormal(1)                       (per layer)
    W_l   ~ Normal(0, tau_l)                    (every weight of layer l)
    y     ~ Categorical(logits = SNN(x; W))

The model is an ordinary NumPyro function that calls the network it is given;
``models.Custom`` tells ``fit`` its likelihood. VI fits a mean-field guide: Gaussian
factors for the weights and a log-normal factor for each scale. The scales' posterior
medians per epoch are in ``posterior.history``.

Run: ``python examples/hierarchical_vi.py`` (about half a minute on a 2-core CPU).
"""

import argparse
import os
import tempfile

import jax
import numpyro
import numpyro.distributions as dist

from bayes_snn import LIF, Dense, Sequential, datasets, encoders, inference, readouts
from bayes_snn.models import Custom


def model_fn(x, y=None, *, net):
    tau0 = numpyro.sample("tau0", dist.HalfNormal(1.0))
    tau1 = numpyro.sample("tau1", dist.HalfNormal(1.0))
    logits = net(x, priors={"dense_0.weight": dist.Normal(0.0, tau0), "dense_1.weight": dist.Normal(0.0, tau1)})
    with numpyro.plate("data", x.shape[0]):
        numpyro.sample("y", dist.Categorical(logits=logits), obs=y)


def main(epochs: int, train_size: int) -> None:
    train = datasets.yin_yang("train", size=train_size)
    test = datasets.yin_yang("test")
    net = Sequential(encoders.Direct(10), Dense(64), LIF(beta=0.9), Dense(3), readouts.MeanMembrane(scale=30.0))
    model = Custom(model_fn, net, num_classes=3)
    method = inference.VI(epochs=epochs, batch_size=32)
    posterior = inference.fit(model, train, method, rng_key=jax.random.PRNGKey(0))

    print("epoch  -ELBO/N  tau0   tau1")
    for e in range(0, epochs, max(1, epochs // 5)):
        h = posterior.history
        print(f"{e + 1:5d}  {h['loss'][e]:7.3f}  {h['tau0_median'][e]:.3f}  {h['tau1_median'][e]:.3f}")
    metrics = posterior.evaluate(test, num_samples=50)
    print("test " + ", ".join(f"{k} {v:.3f}" for k, v in metrics.items()))

    # A hand-written model is not stored in the file: pass it back when loading.
    path = os.path.join(tempfile.mkdtemp(), "hierarchical.npz")
    posterior.save(path)
    loaded = inference.Posterior.load(path, model=model)
    print(f"reloaded from {path}: {loaded}")
    idata = loaded.to_arviz(num_samples=100)
    print(f"ArviZ posterior groups: {list(idata.posterior.data_vars)}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--train-size", type=int, default=2000)
    args = parser.parse_args()
    main(args.epochs, args.train_size)
