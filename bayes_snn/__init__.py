"""bayes_snn: Bayesian spiking neural networks on JAX and NumPyro.

Write an SNN with priors over its weights, fit it with one call, analyse its uncertainty::

    import jax, bayes_snn as bs
    data = bs.datasets.yin_yang("train")
    net = bs.Sequential(bs.encoders.Direct(steps=10), bs.Dense(64), bs.LIF(beta=0.9),
                        bs.Dense(3), bs.readouts.MeanMembrane())
    posterior = bs.fit(bs.Classifier(net, 3), data, rng_key=jax.random.PRNGKey(0))
    posterior.evaluate(bs.datasets.yin_yang("test"))
"""

from . import analysis, datasets, devices, encoders, inference, neurons, priors, readouts, surrogates
from .inference import Posterior, fit
from .models import Classifier, Custom, Regressor
from .network import Dense, Sequential
from .neurons import LIF, CuBaLIF, SpikeResponse, StochasticLIF

__version__ = "0.1.0"

__all__ = [
    "Classifier",
    "CuBaLIF",
    "Custom",
    "Dense",
    "LIF",
    "Posterior",
    "Regressor",
    "Sequential",
    "SpikeResponse",
    "StochasticLIF",
    "analysis",
    "datasets",
    "devices",
    "encoders",
    "fit",
    "inference",
    "neurons",
    "priors",
    "readouts",
    "surrogates",
]
