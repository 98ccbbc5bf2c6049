"""Rate-based backpropagation (rateM / rateS; Yu et al., NeurIPS 2024).

A point-estimate trainer like ``SurrogateGradient`` (same MAP loss, discrete weights,
optax optimiser) that differs only in the derivative: instead of backpropagating through
the T steps, it

1. runs the network's own T-step simulation without gradients, recording each spiking
   layer's firing rate ``r`` and eligibility ``e``, the derivative of ``r`` with respect to
   a constant shift of the layer's input current (``rate_eligibility``);
2. runs the network once more on time averages with gradients: Dense layers act on
   rates, each spiking layer outputs ``r`` with derivative ``diag(e)``, and the readout
   turns the last value into the SNN's output (``rate_passes``).

The loss value is the true SNN loss; its gradient costs one ANN-like backward pass, and
the gradient's storage does not depend on T. The estimator drops the temporal
correlation between errors and presynaptic spikes that BPTT keeps. With one hidden
layer and a ``Direct`` encoder the hidden layer's input is constant in time, and the
gradient equals the surrogate BPTT gradient exactly.

``mode="rate-m"`` simulates layer by layer (a layer's T steps exist transiently);
``mode="rate-s"`` scans the whole network over time keeping only running sums, so its
memory is flat in T.

Supported: ``Direct``, ``Rate`` and ``Latency`` encoders or time-major input; every
neuron (``LIF`` with any reset, ``CuBaLIF``, ``StochasticLIF``, ``SpikeResponse``); the
``SpikeCount`` and ``MeanMembrane`` readouts (``FirstSpikeTime`` raises ``ValueError``:
it is not a function of rates; with ``MeanMembrane(beta > 0)`` the last spiking layer's
rate is weighted by the readout's time weights, see ``rate_passes``); any device. rate-s
memory is flat in T for ``Direct`` encoding on a noiseless device; ``Rate``/``Latency``
encodings, time-major data and device membrane noise are ``[T, ...]`` inputs that it
keeps (the network's own draws), so they add memory linear in T (but no activations).

Example
-------
>>> from bayes_snn import inference
>>> method = inference.RateBackprop(mode="rate-s", epochs=10, batch_size=64)
>>> method.name
'rate-s'
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import jax

from .. import surrogates
from ..network import NEURONS
from .gradient import GradientTrainer
from .rate_passes import check_rate_expressible, make_plan, num_steps, rate_pass, spike_pass_layers, spike_pass_stream

MODES = ("rate-m", "rate-s")


@dataclass(frozen=True)
class RateBackprop(GradientTrainer):
    """Rate-based backpropagation: true SNN loss, rate-domain gradient.

    Parameters
    ----------
    mode : {"rate-m", "rate-s"}
        Layer-by-layer simulation (rate-m) or one scan of the whole network over time
        with memory flat in T (rate-s). Both give the same values and gradients.
    epochs, batch_size, learning_rate, schedule, optimizer, map_prior
        See ``GradientTrainer``: Adam with a cosine-decayed ``learning_rate`` unless
        ``optimizer`` is given; ``map_prior`` adds the prior's log density (MAP) to the loss.
    surrogate : str
        Surrogate derivative ``sg_t`` of the spike in the eligibility (one of
        ``surrogates.SURROGATES``); the same default as ``SurrogateGradient``.
    slope : float or None
        Surrogate sharpness (the surrogate's default if None).
    detach_reset : bool
        Treat the reset as a constant in the eligibility (for a subtractive reset the
        trace is then ``eps_t = 1 + beta eps_{t-1}``). Replaces the neuron layers' own
        ``detach_reset`` here; it never changes the forward spikes.
    scale_grad_by_T : bool
        Divide the data term's gradient by ``T``, as the reference implementation does,
        so that learning rates tuned there transfer. The prior term is not scaled. Off
        by default: the gradient then has the scale of the loss it differentiates (and
        of BPTT's gradient).
    """

    mode: str = "rate-s"
    surrogate: str = "arctan"
    slope: float | None = None
    detach_reset: bool = True
    scale_grad_by_T: bool = False

    def __post_init__(self):
        super().__post_init__()
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}; got {self.mode!r}")
        surrogates.get(self.surrogate, self.slope)  # validates both
        for flag in ("detach_reset", "scale_grad_by_T"):
            if not isinstance(getattr(self, flag), bool):
                raise ValueError(f"{flag} must be True or False; got {getattr(self, flag)!r}")

    @property
    def name(self) -> str:
        return self.mode

    def init(self, rng_key, model, x, y):
        check_rate_expressible(model.net)
        return super().init(rng_key, model, x, y)

    def outputs(self, params, x, rng_key):
        """Readout ``[B, C]`` with the true SNN value and the rate-domain gradient."""
        net, device = self._model.net, self._model.device
        net.check_input(x)
        net.check_params(params, x.shape[-1])
        if rng_key is None and net.is_stochastic:
            raise ValueError("this network draws random numbers (rate encoding or escape noise): rng_key is required")
        spike_fn = surrogates.get(self.surrogate, self.slope)
        layers = tuple(
            dataclasses.replace(layer, detach_reset=self.detach_reset) if isinstance(layer, NEURONS) else layer
            for layer in net.layers
        )
        steps = num_steps(net, x)
        plan = make_plan(net, steps)
        spike_pass = spike_pass_layers if self.mode == "rate-m" else spike_pass_stream
        # No gradient flows into the spike pass: nothing of its T steps is kept for backward.
        frozen = jax.lax.stop_gradient(params)
        source, stats = spike_pass(net, layers, plan, frozen, x, rng_key, device, spike_fn)
        out = rate_pass(net, plan, params, source, stats, device)
        if self.scale_grad_by_T:
            out = jax.lax.stop_gradient(out) + (out - jax.lax.stop_gradient(out)) / steps
        return out


__all__ = ["RateBackprop", "MODES"]
