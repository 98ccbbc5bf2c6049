"""Rate-based backpropagation (``inference.RateBackprop``, modes rate-m and rate-s).

Exact tier: the eligibility equals the BPTT derivative of the (weighted) rate with
respect to a constant shift of the input current, and the closed-form trace recursions;
the loss value equals the SNN's own loss; with one hidden layer and a Direct encoder the
hidden layer's input is constant in time, so the rate gradient must equal surrogate BPTT.
All comparisons are float32 against float32 computations of the same quantity in
another summation order, hence rtol 1e-4 / atol 1e-6.
"""

from __future__ import annotations

import dataclasses
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bayes_snn import (Classifier, Dense, Sequential, datasets, encoders, inference, neurons, presets, readouts,
                       surrogates)
from bayes_snn.datasets import Batch
from bayes_snn.inference.rate_eligibility import layer_rate

RTOL, ATOL = 1e-4, 1e-6
KEY = jax.random.PRNGKey(0)

NEURON_CASES = {
    "subtract-detached": neurons.LIF(beta=0.9, threshold=0.8),
    "subtract-attached": neurons.LIF(beta=0.9, threshold=0.8, detach_reset=False),
    "zero-detached": neurons.LIF(beta=0.8, reset="zero"),
    "zero-attached": neurons.LIF(beta=0.8, reset="zero", detach_reset=False),
    "no-reset": neurons.LIF(beta=0.7, reset="none"),
    "cuba": neurons.CuBaLIF(alpha=0.7, beta=0.85, threshold=0.9, detach_reset=False),
    "single-step": neurons.SpikeResponse(threshold=0.3),
    "escape-noise": neurons.StochasticLIF(beta=0.9, noise=0.3),
}


def _currents(steps=24, batch=3, n=5, seed=1):
    return 1.6 * jax.random.uniform(jax.random.PRNGKey(seed), (steps, batch, n)) - 0.2


@pytest.mark.parametrize(
    "case,weighted", [(case, False) for case in NEURON_CASES] + [("subtract-attached", True), ("cuba", True)]
)
def test_eligibility_is_bptt_derivative_of_rate(case, weighted):
    neuron, sg = NEURON_CASES[case], surrogates.fast_sigmoid(10.0)
    currents = _currents()
    steps = currents.shape[0]
    w = readouts.MeanMembrane(beta=0.6).time_weights(steps) if weighted else jnp.full(steps, 1.0 / steps)
    key = jax.random.PRNGKey(3)
    spikes, rate, elig = layer_rate(neuron, currents, spike_fn=sg, time_weights=w, rng_key=key)

    def weighted_rate(shift):  # BPTT through the neuron's own run
        s, _ = neuron.run(currents + shift, spike_fn=sg, rng_key=key)
        return jnp.einsum("t,tbn->bn", w, s)

    shift = jnp.zeros(currents.shape[1:])
    # Each neuron's rate depends on its own shift only, so the gradient of the sum is e.
    bptt = jax.grad(lambda d: weighted_rate(d).sum())(shift)
    np.testing.assert_array_equal(spikes, neuron.run(currents, spike_fn=sg, rng_key=key)[0])
    np.testing.assert_allclose(rate, weighted_rate(shift), rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(elig, bptt, rtol=RTOL, atol=ATOL)
    assert float(jnp.abs(elig).max()) > 1e-2  # the case exercises non-trivial derivatives


@pytest.mark.parametrize("case", ["subtract-detached", "subtract-attached", "zero-detached", "zero-attached"])
def test_eligibility_trace_closed_form(case):
    """``eps_t = 1 + kappa_t eps_{t-1}`` (module docstring), in float64 NumPy."""
    neuron, slope = NEURON_CASES[case], 10.0
    currents = _currents(seed=2)
    spikes, v = (np.asarray(a, np.float64) for a in neuron.run(currents))
    sg = 1.0 / (1.0 + slope * np.abs(v - neuron.threshold)) ** 2
    eps, elig = np.zeros_like(v[0]), np.zeros_like(v[0])
    for t in range(v.shape[0]):
        if t == 0:
            eps = np.ones_like(eps)
        else:
            s, vp, gp = spikes[t - 1], v[t - 1], sg[t - 1]
            if neuron.reset == "subtract":
                kappa = neuron.beta - (0.0 if neuron.detach_reset else neuron.threshold * gp)
            else:
                kappa = neuron.beta * (1 - s) - (0.0 if neuron.detach_reset else neuron.beta * vp * gp)
            eps = 1.0 + kappa * eps
        elig += sg[t] * eps / v.shape[0]
    _, _, e = layer_rate(neuron, currents, spike_fn=surrogates.fast_sigmoid(slope))
    np.testing.assert_allclose(e, elig, rtol=RTOL, atol=ATOL)


def _loss_and_grads(method, model, x, y, key=KEY):
    state = method.init(KEY, model, np.asarray(x), np.asarray(y))
    batch = Batch(jnp.asarray(x), jnp.asarray(y), jnp.ones(len(y), bool))
    return jax.jit(jax.value_and_grad(method.loss))(state.params, batch, key)


def _xy(n=12, features=4, classes=3):
    x = 2.0 * jax.random.uniform(jax.random.PRNGKey(5), (n, features))
    return x, jnp.arange(n) % classes


@pytest.mark.parametrize(
    "neuron,readout",
    [
        (neurons.LIF(beta=0.9, threshold=0.5), readouts.MeanMembrane(beta=0.7)),
        (neurons.LIF(reset="zero"), readouts.SpikeCount(0.2)),
        (neurons.CuBaLIF(alpha=0.6), readouts.MeanMembrane(beta=1.0, scale=2.0)),
    ],
)
def test_one_hidden_layer_gradient_equals_bptt(neuron, readout):
    if isinstance(readout, readouts.SpikeCount):
        net = Sequential(encoders.Direct(20), Dense(3), neuron, readout)
    else:
        net = Sequential(encoders.Direct(20), Dense(16), neuron, Dense(3), readout)
    model, (x, y) = Classifier(net, 3), _xy()
    loss_bptt, g_bptt = _loss_and_grads(inference.SurrogateGradient(), model, x, y)
    for mode in ("rate-m", "rate-s"):
        loss_rate, g_rate = _loss_and_grads(inference.RateBackprop(mode=mode), model, x, y)
        np.testing.assert_allclose(loss_rate, loss_bptt, rtol=RTOL)
        for site in g_bptt:
            assert float(jnp.abs(g_bptt[site]).max()) > 1e-3, site
            np.testing.assert_allclose(g_rate[site], g_bptt[site], rtol=RTOL, atol=1e-5, err_msg=f"{mode} {site}")


class _NoisyChip:
    """A stochastic test device: weight gain, per-neuron mismatch and membrane noise."""

    is_stochastic = True

    def weights(self, name, w):
        return 1.1 * w

    def neuron_params(self, name, params):
        return {"beta": params["beta"] * jnp.linspace(0.9, 1.0, 16), "threshold": params["threshold"] * 1.05}

    def membrane_noise(self, rng_key, name, shape):
        return 0.1 * jax.random.normal(rng_key, shape)


NETS = {
    "two-layer-direct": (Sequential(encoders.Direct(12), Dense(16), neurons.LIF(), Dense(16), neurons.CuBaLIF(),
                                    Dense(3), readouts.MeanMembrane(beta=0.5)), None, False),
    "rate-encoder-spikecount": (Sequential(encoders.Rate(12), Dense(16), neurons.StochasticLIF(), Dense(3),
                                           neurons.LIF(threshold=0.3), readouts.SpikeCount(0.5)), None, False),
    "latency-noisy-device": (Sequential(encoders.Latency(10), Dense(16), neurons.LIF(beta=0.8), Dense(3),
                                        readouts.MeanMembrane()), _NoisyChip(), False),
    "time-major-input": (Sequential(Dense(16), neurons.LIF(reset="zero"), Dense(3), neurons.LIF(threshold=0.2),
                                  readouts.SpikeCount()), None, True),
    "no-spiking-layer": (Sequential(encoders.Direct(6), Dense(3), readouts.MeanMembrane(beta=0.9)), None, False),
}


@pytest.mark.parametrize("name", list(NETS))
def test_loss_value_is_the_snn_loss_and_modes_agree(name):
    net, device, time_major = NETS[name]
    model = Classifier(net, 3, device=device)
    x, y = _xy()
    x = x / 2.0  # the rate and latency encoders need [0, 1]
    if time_major:
        x = jax.random.bernoulli(jax.random.PRNGKey(6), 0.4, (9, *x.shape)).astype(jnp.float32)
    key = jax.random.PRNGKey(7)
    method = inference.RateBackprop(mode="rate-m", map_prior=False)
    state = method.init(KEY, model, np.asarray(x), np.asarray(y))
    # fit passes the step key to the forward pass: the SNN run with that key is the truth.
    apply = jax.jit(lambda p, x, k: net.apply(p, x, k, device=model.device))
    truth = -model.log_likelihood(apply(state.params, x, key), y).mean()
    results = {mode: _loss_and_grads(inference.RateBackprop(mode=mode, map_prior=False), model, x, y, key)
               for mode in ("rate-m", "rate-s")}
    for mode, (loss, _) in results.items():
        np.testing.assert_allclose(loss, truth, rtol=1e-5, err_msg=mode)
    for site, g in results["rate-m"][1].items():
        np.testing.assert_allclose(results["rate-s"][1][site], g, rtol=RTOL, atol=1e-5, err_msg=site)
    assert any(float(jnp.abs(g).max()) > 1e-3 for g in results["rate-m"][1].values())


def test_scale_grad_by_T_divides_the_data_gradient():
    net = Sequential(encoders.Direct(16), Dense(8), neurons.LIF(), Dense(3), readouts.MeanMembrane())
    model, (x, y) = Classifier(net, 3), _xy()
    _, plain = _loss_and_grads(inference.RateBackprop(map_prior=False), model, x, y)
    _, scaled = _loss_and_grads(inference.RateBackprop(map_prior=False, scale_grad_by_T=True), model, x, y)
    for site in plain:
        np.testing.assert_allclose(scaled[site], plain[site] / 16, rtol=1e-6, atol=1e-9)


def test_detach_reset_option_overrides_the_neurons():
    net = Sequential(encoders.Direct(16), Dense(8), neurons.LIF(threshold=0.5), Dense(3), readouts.MeanMembrane())
    attached = Sequential(*(dataclasses.replace(layer, detach_reset=False) if isinstance(layer, neurons.LIF)
                            else layer for layer in net.layers))
    x, y = _xy()
    _, g_bptt = _loss_and_grads(inference.SurrogateGradient(), Classifier(attached, 3), x, y)
    _, g_detached = _loss_and_grads(inference.RateBackprop(), Classifier(attached, 3), x, y)
    _, g_attached = _loss_and_grads(inference.RateBackprop(detach_reset=False), Classifier(net, 3), x, y)
    np.testing.assert_allclose(g_attached["dense_0.weight"], g_bptt["dense_0.weight"], rtol=RTOL, atol=1e-5)
    assert not np.allclose(g_detached["dense_0.weight"], g_bptt["dense_0.weight"], rtol=1e-2, atol=1e-4)


def test_rate_s_step_memory_does_not_grow_with_steps():
    """The compiled step's temporaries (a deterministic compile-time figure, not a timing)."""
    data = datasets.yin_yang("train", size=64)

    def temp_bytes(method, steps):
        net = Sequential(encoders.Direct(steps), Dense(32), neurons.LIF(), Dense(3), readouts.MeanMembrane())
        state = method.init(KEY, Classifier(net, 3), data.x, data.y)
        batch = Batch(jnp.asarray(data.x), jnp.asarray(data.y), jnp.ones(64, bool))
        return jax.jit(method.step).lower(KEY, state, batch).compile().memory_analysis().temp_size_in_bytes

    rate_s = inference.RateBackprop(mode="rate-s")
    assert temp_bytes(rate_s, 64) <= 1.05 * temp_bytes(rate_s, 8)


def test_fit_learns_yinyang_with_ternary_weights():
    train, test = datasets.yin_yang("train", size=600), datasets.yin_yang("test", size=300)
    # The variance-preserving first layer (gain 1/sqrt(4), unit bias prior), which
    # presets.classifier no longer uses for discrete LIF networks: with its steep layer
    # this short straight-through run measured 0.37.
    prior = presets.weight_prior("ternary")
    model = Classifier(Sequential(encoders.Direct(8), Dense(32, prior=prior), neurons.LIF(beta=0.9, threshold=1.0),
                                  Dense(3, prior=prior), readouts.MeanMembrane(scale=30.0)), 3)
    method = inference.RateBackprop(mode="rate-s", epochs=8, batch_size=32)
    post = inference.fit(model, train, method, rng_key=KEY, progress_bar=False)
    assert post.method == "rate-s"
    assert post.history["loss"][-1] < 0.5 * post.history["loss"][0]
    support = np.asarray(model.net.site_priors(4)["dense_0.weight"].values)
    assert np.isin(np.asarray(post.weights["dense_0.weight"].v), support).all()
    # Chance is 1/3; 300 test points give a standard error of about 0.029 near 0.55.
    assert post.evaluate(test)["accuracy"] > 0.45


def test_cli_fit_with_rate_backprop(tmp_path):
    from bayes_snn import cli

    argv = ["fit", "--method", "rate-m", "--epochs", "1", "--hidden", "8", "--steps", "4", "--no-progress"]
    assert cli.main([*argv, "--out", str(tmp_path)]) == 0
    assert json.loads((tmp_path / "metrics.json").read_text())["method"] == "rate-m"


def test_errors():
    with pytest.raises(ValueError, match="mode"):
        inference.RateBackprop(mode="rate")
    with pytest.raises(ValueError, match="surrogate"):
        inference.RateBackprop(surrogate="relu")
    with pytest.raises(ValueError, match="detach_reset"):
        inference.RateBackprop(detach_reset=1)
    assert inference.RateBackprop(mode="rate-m").name == "rate-m"
    net = Sequential(encoders.Direct(8), Dense(3), neurons.LIF(), readouts.FirstSpikeTime())
    train = datasets.yin_yang("train", size=16)
    with pytest.raises(ValueError, match="FirstSpikeTime"):
        inference.fit(Classifier(net, 3), train, inference.RateBackprop(epochs=1), rng_key=KEY, progress_bar=False)
