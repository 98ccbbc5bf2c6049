"""Shared machinery of the point-estimate gradient trainers (surrogate BPTT, rate backprop).

The trainers minimise the negative log joint per example (MAP):
``-mean_batch log p(y | x, W) - log p(W) / N``. Discrete priors (binary, ternary, k-bit)
are trained as continuous latent weights that the forward pass projects onto the prior's
support with a straight-through estimator; their prior term is omitted (it is flat in
the latent weight). The result is a ``Delta`` posterior on the projected weights.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import numpyro.distributions as dist
import optax

from .._checks import check_int
from ..priors import is_discrete, project


class GradientState(NamedTuple):
    params: dict
    opt_state: optax.OptState


class GradientInfo(NamedTuple):
    loss: jax.Array


@dataclass(frozen=True)
class GradientTrainer:
    """Base class: subclasses define ``name`` and ``outputs(params, x, rng_key)``.

    Adam with ``learning_rate``, decayed by a cosine schedule over all steps
    (``schedule="cosine"``) or constant; any optax ``optimizer`` replaces both.
    """

    epochs: int = 20
    batch_size: int = 64
    learning_rate: float = 1e-2
    schedule: str = "cosine"
    optimizer: optax.GradientTransformation | None = None
    map_prior: bool = True

    def __post_init__(self):
        check_int("epochs", self.epochs)
        check_int("batch_size", self.batch_size)
        if not (np.isfinite(self.learning_rate) and self.learning_rate > 0):
            raise ValueError(f"learning_rate must be positive and finite; got {self.learning_rate!r}")
        if self.schedule not in ("cosine", "constant"):
            raise ValueError(f"schedule must be 'cosine' or 'constant'; got {self.schedule!r}")

    def _opt(self) -> optax.GradientTransformation:
        if self.optimizer is not None:
            return self.optimizer
        if self.schedule == "constant":
            return optax.adam(self.learning_rate)
        # Cosine decay to 5 % over the whole run: the step count is known once init has seen N.
        total = self.epochs * -(-self._n // min(self.batch_size, self._n))
        return optax.adam(optax.cosine_decay_schedule(self.learning_rate, total, alpha=0.05))

    def init(self, rng_key, model, x, y) -> GradientState:
        # Bind the model and data size here so that step() is a pure function of its inputs.
        object.__setattr__(self, "_model", model)
        object.__setattr__(self, "_n", int(np.shape(y)[0]))
        object.__setattr__(self, "_in", int(np.shape(x)[-1]))
        priors = model.net.site_priors(self._in)
        params = model.net.init_params(rng_key, self._in)
        # Discrete sites start from a Gaussian of the prior's variance: the latent weight.
        keys = jax.random.split(jax.random.fold_in(rng_key, 1), len(params))
        for k, (site, value) in zip(keys, params.items()):
            if is_discrete(priors[site]):
                params[site] = jnp.sqrt(priors[site].variance) * jax.random.normal(k, value.shape)
        return GradientState(params, self._opt().init(params))

    def effective(self, params: dict) -> dict:
        """Weights used in the forward pass: discrete sites projected (straight-through)."""
        priors = self._model.net.site_priors(self._in)
        return {
            k: w + jax.lax.stop_gradient(project(priors[k], w) - w) if is_discrete(priors[k]) else w
            for k, w in params.items()
        }

    def loss(self, params, batch, rng_key):
        out = self.outputs(self.effective(params), batch.x, rng_key)
        ll = self._model.log_likelihood(out, batch.y)
        mask = batch.mask.astype(ll.dtype)
        loss = -jnp.sum(mask * ll) / jnp.maximum(mask.sum(), 1.0)
        if self.map_prior:
            priors = self._model.net.site_priors(self._in)
            log_prior = sum(jnp.sum(priors[k].log_prob(w)) for k, w in params.items() if not is_discrete(priors[k]))
            loss = loss - log_prior / self._n
        return loss

    def step(self, rng_key, state: GradientState, batch):
        loss, grads = jax.value_and_grad(self.loss)(state.params, batch, rng_key)
        updates, opt_state = self._opt().update(grads, state.opt_state, state.params)
        return GradientState(optax.apply_updates(state.params, updates), opt_state), GradientInfo(loss)

    def posterior(self, state: GradientState) -> dict:
        priors = self._model.net.site_priors(self._in)
        return {k: dist.Delta(project(priors[k], w)) for k, w in state.params.items()}
