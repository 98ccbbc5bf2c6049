"""Surrogate-gradient BPTT: a point estimate trained through ``lax.scan`` over time.

The forward pass is the network's own simulation; only the spike's derivative is
replaced by a surrogate (``bayes_snn.surrogates``). Adam by default (any optax optimiser).

Example
-------
>>> from bayes_snn import inference
>>> method = inference.SurrogateGradient(epochs=10, batch_size=64, surrogate="arctan")
>>> method.name
'surrogate'
"""

from __future__ import annotations

from dataclasses import dataclass

from .. import surrogates
from .gradient import GradientTrainer


@dataclass(frozen=True)
class SurrogateGradient(GradientTrainer):
    """Backpropagation through time with a surrogate spike derivative.

    Parameters
    ----------
    epochs, batch_size, learning_rate, schedule, optimizer, map_prior
        See ``GradientTrainer``: Adam with a cosine-decayed ``learning_rate`` unless
        ``optimizer`` is given; ``map_prior`` adds the prior's log density (MAP) to the loss.
    surrogate : str
        One of ``surrogates.SURROGATES`` (default ``"arctan"``, snnTorch's default).
    slope : float or None
        Surrogate sharpness (the surrogate's default if None).
    """

    surrogate: str = "arctan"
    slope: float | None = None
    name = "surrogate"

    def __post_init__(self):
        super().__post_init__()
        surrogates.get(self.surrogate, self.slope)  # validates both

    def outputs(self, params, x, rng_key):
        spike_fn = surrogates.get(self.surrogate, self.slope)
        return self._model.net.apply(params, x, rng_key, device=self._model.device, spike_fn=spike_fn)
