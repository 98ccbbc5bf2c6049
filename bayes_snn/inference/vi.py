"""Variational inference (``method="svi"``): NumPyro's SVI with a mean-field guide.

The ELBO is NumPyro's ``TraceMeanField_ELBO`` (analytic KL terms, a Monte Carlo
likelihood term) optimised with optax through ``SVI.init``/``SVI.update``; ``fit`` drives
the loop (minibatches, progress bar, checkpoint/resume). The guide is
``vi_guide.MeanFieldGuide``: Gaussian factors for the network's continuous weights,
categorical factors with a straight-through Gumbel-softmax estimator for discrete ones,
and, for any other latent site of a hand-written model (for example a hierarchical
weight scale), a factor of NumPyro ``AutoNormal``'s family (a Gaussian in the site's
unconstrained space). That last factor is ours rather than ``AutoNormal`` itself because
``AutoNormal``'s set-up runs the model op by op, which on a 2-core CPU spends ~10 s
compiling every operation of the network separately; ours is initialised inside one
compiled program.

Three pieces make a spiking network trainable by SVI:

* **Derivatives through spikes.** The model runs a view of its network whose spike
  function carries a surrogate derivative; forward values are unchanged, so the ELBO is
  that of the exact model and only its gradient is approximate. Predictions use the
  plain network.
* **Minibatch scaling.** ``fit`` hands the step pre-sliced, fixed-size batches with a
  padding mask. Every sample site inside ``numpyro.plate("data", ...)`` is masked by it
  and its log-likelihood scaled by ``N / (number of valid examples)``, so the minibatch
  ELBO is an unbiased estimate of the full-data ELBO and padding has no effect.
* **Models.** ``Classifier``/``Regressor``, or ``models.Custom(model_fn, net, ...)`` for a
  hand-written model; its observed sites must lie in the ``"data"`` plate and its other
  latent sites must be global and continuous.

Example
-------
>>> import jax
>>> from bayes_snn import Sequential, Dense, LIF, Classifier, encoders, readouts, datasets, inference
>>> data = datasets.yin_yang("train", size=200)
>>> net = Sequential(encoders.Direct(4), Dense(8), LIF(), Dense(3), readouts.MeanMembrane())
>>> post = inference.fit(Classifier(net, 3), data, inference.VI(epochs=1, batch_size=50),
...                      rng_key=jax.random.PRNGKey(0), progress_bar=False)
>>> type(post.weights["dense_0.weight"]).__name__, post.method
('Normal', 'svi')
"""

from __future__ import annotations

import copy
import re
import warnings
from collections import namedtuple
from dataclasses import dataclass
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from numpyro import handlers
from numpyro.infer import SVI, TraceMeanField_ELBO
from numpyro.infer.initialization import init_to_median
from numpyro.infer.svi import SVIState
from numpyro.optim import optax_to_numpyro
from numpyro.primitives import Messenger

from .. import surrogates
from ..datasets.batching import batch_axis
from ..network import Sequential
from .._checks import check_int
from .vi_guide import MeanFieldGuide, extra_factor, init_weight, weight_factor

DATA_PLATE = "data"
# Raised while NumPyro traces our guide; both are expected and handled (see _quiet).
_EXPECTED_WARNINGS = (
    "Failed to verify mean field restriction",  # the guide is fully factorised: the condition holds
    "does not support models with discrete latent variables",  # GumbelGrid reparameterises them
)


class VIState(NamedTuple):
    """Optimiser state of SVI: ``(step, (unconstrained guide params, optax state))``."""

    optim_state: tuple


class _DataPlate(Messenger):
    """Mask and rescale every sample site inside ``plate("data")`` to the full data size."""

    def __init__(self, fn=None, *, num_data: int, mask: jax.Array):
        self.mask = mask
        self.scale = num_data / jnp.maximum(jnp.sum(mask), 1)
        super().__init__(fn)

    def process_message(self, msg):
        if msg["type"] != "sample" or not any(f.name == DATA_PLATE for f in msg["cond_indep_stack"]):
            return
        msg["fn"] = msg["fn"].mask(self.mask)
        msg["scale"] = self.scale if msg["scale"] is None else msg["scale"] * self.scale


class _SurrogateView(Sequential):
    """The same network; its spikes carry ``spike_fn``'s derivative (forward values unchanged)."""

    def __init__(self, net: Sequential, spike_fn):
        self.__dict__.update(net.__dict__)
        self._spike_fn = spike_fn

    def apply(self, params, x, rng_key=None, *, device=None, spike_fn=None):
        return super().apply(params, x, rng_key, device=device, spike_fn=self._spike_fn)


@dataclass(frozen=True)
class VI:
    """Stochastic variational inference with a mean-field guide (NumPyro SVI + optax).

    Parameters
    ----------
    epochs, batch_size : int
        Passes over the data and minibatch size (``fit`` slices the batches).
    learning_rate : float
        Initial Adam step. Unless ``optimizer`` is given, the step decays to zero along a
        cosine over the run (``epochs`` x batches): the ELBO's gradient is noisy, and a
        constant step leaves the factors jittering (94.5% vs 98.1% Yin-Yang accuracy in
        ``benchmarks/vi_vs_surrogate.py``'s setting, fast_sigmoid surrogate). Resuming a checkpoint with a
        different ``epochs`` therefore changes the remaining schedule. The default, 0.1,
        was chosen by the training objective: over 40 epochs of the benchmark's setting
        (seeds 0-2) its negative ELBO per example was 2.02 on digits (0.03: 2.75, 0.05:
        2.32, 0.15: 1.82, 0.3: 3.24) and 0.369 on Yin-Yang (0.03: 0.398, 0.05: 0.361,
        0.15: 0.419): near the best on both.
        The predictive stays underconfident, more so nearer the ELBO's optimum (digits,
        200 epochs: ECE 0.051); more particles, per-example weight draws, other
        ``init_scale`` and full-covariance factors per unit did not change that.
    optimizer : optax.GradientTransformation, optional
        Any optax optimiser (wrapped with ``numpyro.optim.optax_to_numpyro``).
    num_particles : int
        Monte Carlo draws of the weights per ELBO evaluation.
    init_scale : float
        Initial spread of each factor relative to its prior's standard deviation.
    temperature : float
        Gumbel-softmax temperature of discrete factors (gradient only; the forward pass
        always uses exact draws on the grid).
    surrogate, slope
        Surrogate spike derivative used for the gradient (``bayes_snn.surrogates``). The
        default, arctan, is the point-estimate trainer's; on the benchmark's Yin-Yang
        network (``learning_rate`` 0.03) it gave VI 98.5% accuracy and ECE 0.043 where
        fast_sigmoid gave 97.8% and 0.072 (digits: 97.6% / 0.047 vs 96.9% / 0.154).
    kl_weight : float
        Weight of the KL term: 1 (default) is the ELBO and its optimum the mean-field
        approximation of the posterior; ``kl_weight < 1`` fits a tempered ("cold")
        posterior, ``p(W) p(D | W)^(1 / kl_weight)`` up to normalisation, a common remedy
        for the underconfidence of mean-field VI in wide networks (it is not the
        Bayesian posterior of the model); ``inference.select`` chooses it on held-out
        data.

    ``model`` (given to ``fit``) is a ``Classifier``, a ``Regressor`` or a
    ``models.Custom`` hand-written model. The fitted ``Posterior`` holds ``dist.Normal`` /
    ``priors.DiscreteGrid`` factors for the
    network's weights; ``history`` has the per-example negative ELBO (``loss``; with
    ``kl_weight`` it is ``-E[log lik] / N + kl_weight * KL / N``) and, for
    every scalar extra latent site of a hand-written model, its posterior median
    (``<site>_median``, averaged over the epoch's steps).
    """

    epochs: int = 30
    batch_size: int = 64
    learning_rate: float = 0.1
    optimizer: optax.GradientTransformation | None = None
    num_particles: int = 1
    init_scale: float = 0.1
    temperature: float = 0.5
    surrogate: str = "arctan"
    slope: float | None = None
    kl_weight: float = 1.0
    name = "svi"

    def __post_init__(self):
        check_int("epochs", self.epochs)
        check_int("batch_size", self.batch_size)
        check_int("num_particles", self.num_particles)
        for arg in ("learning_rate", "init_scale", "temperature", "kl_weight"):
            value = getattr(self, arg)
            if not isinstance(value, (int, float)) or not (np.isfinite(value) and value > 0):
                raise ValueError(f"{arg} must be a positive finite number; got {value!r}")
        surrogates.get(self.surrogate, self.slope)  # validates both

    # ---- the NumPyro program -------------------------------------------------------------
    def _svi_model(self, x, y, mask):
        # Tempering by kl_weight = counting every example 1 / kl_weight times.
        with _DataPlate(num_data=self._n / self.kl_weight, mask=mask):
            self._train_model(x, y)

    def _svi_guide(self, x, y, mask):
        self._guide()

    # ---- backend protocol ------------------------------------------------------------------
    def init(self, rng_key, model, x, y) -> VIState:
        """Build the guide from the model's structure and initialise SVI on the first minibatch."""
        if not hasattr(model, "net") or not callable(model):
            raise ValueError(f"model must be a Classifier, Regressor or models.Custom; got {type(model).__name__}")
        sites = model.net.param_shapes(int(np.shape(x)[-1]))
        n, b = int(np.shape(y)[0]), min(self.batch_size, int(np.shape(y)[0]))
        batch = (np.take(x, np.arange(b), axis=batch_axis(x)), np.asarray(y[:b]), np.ones(b, bool))
        train_model = copy.copy(model)
        train_model.net = _SurrogateView(model.net, surrogates.get(self.surrogate, self.slope))
        # Bind the model and data size here so that step() is a pure function of its inputs.
        for attr, value in (("_model", model), ("_train_model", train_model), ("_n", n), ("_sites", tuple(sites))):
            object.__setattr__(self, attr, value)
        k_trace, k_weights, k_svi = jax.random.split(rng_key, 3)
        tr = _probe_trace(model, k_trace, batch, sites)
        extras = _check_trace(tr, sites)
        factors, init = {}, {}
        for name, site in tr.items():  # in the model's order
            if name in sites:
                factors[name] = weight_factor(name, site["fn"])
            elif name in extras:
                factors[name], init[name] = extra_factor(name, site, self.init_scale)

        def init_weights(key):
            keys = dict(zip(sites, jax.random.split(key, len(sites))))
            return {s: init_weight(keys[s], factors[s], tr[s]["fn"], self.init_scale) for s in sites}

        # The guide's own init values are valid placeholders of the right shapes: VI always
        # substitutes the real initial values (below).
        shapes = jax.eval_shape(init_weights, k_weights)
        placeholders = {s: {k: np.full(v.shape, 1.0 if k == "scale" else 0.0, v.dtype) for k, v in p.items()} for s, p in shapes.items()}
        object.__setattr__(self, "_guide", MeanFieldGuide(list(factors.values()), {**init, **placeholders}, self.temperature))
        scalar_extras = [e for e in extras if np.size(tr[e]["value"]) == 1]
        object.__setattr__(self, "_scalar_extras", scalar_extras)
        object.__setattr__(self, "_info", _info_type(scalar_extras))
        optim = optax_to_numpyro(self.optimizer if self.optimizer is not None else self._default_optimizer(n))
        object.__setattr__(self, "_svi", SVI(self._svi_model, self._svi_guide, optim, TraceMeanField_ELBO(self.num_particles)))

        def svi_init(k_weights, k_svi, extra_init, *args):
            values = {**extra_init, **init_weights(k_weights)}
            flat = {f"{site}.{k}": v for site, params in values.items() for k, v in params.items()}
            return self._svi.init(k_svi, *args, init_params=flat)

        # One compiled program: run op by op, the initialisation would compile every
        # operation of the network separately (~10 s on a 2-core CPU). The initial values
        # are traced (as constants, NumPyro would validate the guide's distributions
        # eagerly, one compiled check each).
        with _quiet():
            state = jax.jit(svi_init)(k_weights, k_svi, init, *batch)
        return VIState(state.optim_state)

    def step(self, rng_key, state: VIState, batch):
        """One SVI update on ``batch``; ``Info.loss`` is the negative ELBO per example (see ``VI``)."""
        with _quiet():
            new, loss = self._svi.update(SVIState(state.optim_state, None, rng_key), batch.x, batch.y, batch.mask)
        params = self._svi.get_params(new)
        medians = [jnp.reshape(self._guide.median(params, e), ()) for e in self._scalar_extras]
        return VIState(new.optim_state), self._info(loss * self.kl_weight / self._n, *medians)

    def _default_optimizer(self, n: int) -> optax.GradientTransformation:
        steps = self.epochs * -(-n // min(self.batch_size, n))  # fit's number of updates
        return optax.adam(optax.cosine_decay_schedule(self.learning_rate, steps))

    def params(self, state: VIState) -> dict:
        """Constrained guide parameters ``{"<site>.loc" | "<site>.scale" | "<site>.logits": array}``.

        For a non-weight site, ``loc``/``scale`` are those of the Gaussian in its
        unconstrained space (as in NumPyro's ``AutoNormal``).
        """
        return jax.jit(self._svi.get_params)(SVIState(state.optim_state, None, None))

    def posterior(self, state: VIState) -> dict:
        """``{site: dist.Normal or priors.DiscreteGrid}`` for the network's weights."""
        return self._guide.weights(self.params(state), self._sites)


class _ShapeProbe(Sequential):
    """Stands in for the network while reading a model's structure: zeros of the readout's shape."""

    def __init__(self, net: Sequential):
        self.__dict__.update(net.__dict__)

    def apply(self, params, x, rng_key=None, *, device=None, spike_fn=None):
        self.check_input(x)
        return np.zeros((np.shape(x)[batch_axis(x)], self.out_features), np.float32)


def _probe_trace(model, rng_key, batch, sites: dict):
    """Trace ``model`` once to read its sites and priors, without simulating the network.

    Weight sites are set to zeros (only their priors are needed) and other latent sites to
    their prior medians, so hierarchical priors are read at a typical value.
    """
    probe = copy.copy(model)
    probe.net = _ShapeProbe(model.net)

    def initial_value(site):
        if site["name"] in sites:
            return np.zeros(sites[site["name"]], np.float32)
        return init_to_median(site, num_samples=15)

    # seed inside substitute: the init strategy draws with the site's key.
    with _quiet():
        seeded = handlers.seed(probe, rng_key)
        return handlers.trace(handlers.substitute(seeded, substitute_fn=initial_value)).get_trace(*batch[:2])


def _check_trace(tr, sites: dict) -> list[str]:
    """Validate a model trace for VI; returns the latent sites that are not network weights."""
    missing = [s for s in sites if s not in tr or tr[s]["type"] != "sample" or tr[s]["is_observed"]]
    if missing:
        raise ValueError(f"the model must sample every network weight as a latent site (call net(x, ...)); missing {missing}")
    samples = {n: s for n, s in tr.items() if s["type"] == "sample"}
    observed = [n for n, s in samples.items() if s["is_observed"]]
    if not observed:
        raise ValueError("the model observes nothing: pass y to a sample site inside numpyro.plate('data', ...)")
    in_data = {n for n, s in samples.items() if any(f.name == DATA_PLATE for f in s["cond_indep_stack"])}
    outside = [n for n in observed if n not in in_data]
    if outside:
        raise ValueError(f"observed sites must lie inside numpyro.plate('data', ...) so minibatches scale; {outside} do not")
    extras = [n for n, s in samples.items() if not s["is_observed"] and n not in sites]
    local = [n for n in extras if n in in_data]
    if local:
        raise ValueError(f"VI supports global latent sites only; {local} lie inside the 'data' plate")
    discrete = [n for n in extras if samples[n]["fn"].support.is_discrete]
    if discrete:
        raise ValueError(f"latent sites other than network weights must be continuous; {discrete} are discrete")
    return extras


def _info_type(extras: list[str]):
    names = [re.sub(r"\W", "_", n) + "_median" for n in extras]
    if len(set(names)) != len(names) or "loss" in names:
        raise ValueError(f"extra latent site names {extras} collide after sanitising to {names}")
    return namedtuple("VIInfo", ["loss", *names])


class _quiet(warnings.catch_warnings):
    """Silence the two NumPyro warnings that do not apply to this guide (see module top)."""

    def __enter__(self):
        out = super().__enter__()
        for message in _EXPECTED_WARNINGS:
            warnings.filterwarnings("ignore", message=f".*{re.escape(message)}.*")
        return out


__all__ = ["VI", "VIState"]
