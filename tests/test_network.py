"""The DSL: site names and shapes, forward wiring, encoders, devices, and construction errors."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest
from numpyro import handlers

from bayes_snn import Dense, Sequential, devices, encoders, priors, readouts, surrogates
from bayes_snn.neurons import LIF, CuBaLIF, SpikeResponse, StochasticLIF

KEY = jax.random.PRNGKey(0)
X = np.random.default_rng(0).random((6, 4)).astype(np.float32)  # [B, F] in [0, 1]


def small_net(encoder=None, readout=None, hidden=Dense(5), neuron=LIF(beta=0.8)):
    layers = [] if encoder is None else [encoder]
    readout = readouts.MeanMembrane() if readout is None else readout
    tail = [Dense(3), neuron, readout] if readout.needs_spikes else [Dense(3), readout]
    return Sequential(*layers, hidden, neuron, *tail)


def test_site_names_and_shapes():
    net = small_net(encoders.Direct(3))
    assert net.names == ("direct_0", "dense_0", "lif_0", "dense_1", "meanmembrane_0")
    assert net.param_shapes(4) == {
        "dense_0.weight": (4, 5),
        "dense_0.bias": (5,),
        "dense_1.weight": (5, 3),
        "dense_1.bias": (3,),
    }
    assert [(n, fan_in) for n, _, fan_in in net.dense_layers(4)] == [("dense_0", 4), ("dense_1", 5)]
    assert net.out_features == 3 and not net.is_stochastic
    params = net.init_params(KEY, 4)
    assert {k: v.shape for k, v in params.items()} == net.param_shapes(4)


def test_custom_names_and_no_bias():
    net = Sequential(Dense(5, name="hidden", bias=False), LIF(), Dense(2, name="out"), readouts.MeanMembrane())
    assert net.names == ("hidden", "lif_0", "out", "meanmembrane_0")
    assert net.param_shapes(3) == {"hidden.weight": (3, 5), "out.weight": (5, 2), "out.bias": (2,)}
    with pytest.raises(ValueError, match="unique"):
        Sequential(Dense(5, name="dense_1"), LIF(), Dense(2), readouts.MeanMembrane())


def test_sample_sites_are_registered_with_their_priors():
    w_prior, b_prior = priors.Ternary(0.5, 0.4), priors.Laplace(0.0, 0.3)
    net = Sequential(encoders.Direct(2), Dense(5, prior=w_prior, bias_prior=b_prior), LIF(), Dense(3), readouts.MeanMembrane())

    def model(x):
        numpyro.deterministic("out", net(x))

    tr = handlers.trace(handlers.seed(model, 1)).get_trace(X)
    sites = [name for name, site in tr.items() if site["type"] == "sample"]
    assert sites == ["dense_0.weight", "dense_0.bias", "dense_1.weight", "dense_1.bias"]
    w = tr["dense_0.weight"]["value"]
    assert w.shape == (4, 5) and tr["dense_0.weight"]["fn"].event_shape == (4, 5)
    assert set(np.unique(np.asarray(w))) <= {-0.5, 0.0, 0.5}
    lp = tr["dense_0.bias"]["fn"].log_prob(tr["dense_0.bias"]["value"])
    np.testing.assert_allclose(lp, b_prior.log_prob(tr["dense_0.bias"]["value"]).sum(), rtol=1e-6)
    params = {k: tr[k]["value"] for k in sites}
    np.testing.assert_allclose(tr["out"]["value"], net.apply(params, X), rtol=1e-6)


def test_prior_overrides():
    net = small_net(encoders.Direct(2))

    def model(x):
        net(x, priors={"dense_1.weight": dist.Normal(3.0, 1e-3)})

    tr = handlers.trace(handlers.seed(model, 0)).get_trace(X)
    np.testing.assert_allclose(tr["dense_1.weight"]["value"], 3.0, atol=0.01)
    with pytest.raises(ValueError, match="priors"):
        handlers.seed(lambda x: net(x, priors={"dense_7.weight": dist.Normal()}), 0)(X)


def test_dense_is_gain_times_x_at_w_plus_b():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(3, 2, 4)).astype(np.float32)  # time-major [T, B, F]
    for layer, gain in ((Dense(3), 0.5), (Dense(3, gain=2.0), 2.0)):
        net = Sequential(layer)
        params = net.init_params(KEY, 4)
        expected = gain * np.einsum("tbf,fo->tbo", x, params["dense_0.weight"]) + params["dense_0.bias"]
        np.testing.assert_allclose(net.apply(params, x), expected, rtol=1e-5, atol=1e-6)


def test_forward_pass_composes_the_layers():
    # Sequential(Direct, Dense, LIF, Dense, MeanMembrane) written out by hand.
    net = Sequential(encoders.Direct(6), Dense(5), LIF(beta=0.8), Dense(3), readouts.MeanMembrane(beta=0.5, scale=2.0))
    p = net.init_params(KEY, 4)
    p["dense_0.bias"] = p["dense_0.bias"] + 1.0  # enough drive for the hidden layer to spike
    currents = jnp.broadcast_to(0.5 * X @ p["dense_0.weight"] + p["dense_0.bias"], (6, 6, 5))
    spikes, _ = LIF(beta=0.8).run(currents)
    out_currents = spikes @ p["dense_1.weight"] / np.sqrt(5) + p["dense_1.bias"]
    expected = readouts.MeanMembrane(beta=0.5, scale=2.0)(out_currents)
    np.testing.assert_allclose(net.apply(p, X), expected, rtol=1e-5, atol=1e-6)
    assert 0.1 < float(spikes.mean()) < 0.9  # spikes vary, so the check means something


@pytest.mark.parametrize(
    "encoder, stochastic",
    [(encoders.Direct(4), False), (encoders.Rate(4), True), (encoders.Latency(4), False)],
)
@pytest.mark.parametrize("readout", [readouts.MeanMembrane(), readouts.SpikeCount(), readouts.FirstSpikeTime()])
def test_apply_shapes_with_encoders(encoder, stochastic, readout):
    net = small_net(encoder, readout)
    assert net.is_stochastic == stochastic
    out = net.apply(net.init_params(KEY, 4), X, KEY)
    assert out.shape == (6, 3) and bool(jnp.all(jnp.isfinite(out)))


def test_time_major_input_without_encoder_and_without_readout():
    x = np.random.default_rng(2).random((7, 6, 4)).astype(np.float32)
    net = Sequential(Dense(5), CuBaLIF(), Dense(3), SpikeResponse(), readouts.SpikeCount())
    p = net.init_params(KEY, 4)
    out = net.apply(p, x)
    assert out.shape == (6, 3)
    assert float(out.max()) <= 7  # at most one spike per step
    bare = Sequential(Dense(5), LIF())
    assert bare.apply(bare.init_params(KEY, 4), x).shape == (7, 6, 5)


def test_stochastic_forward_needs_a_key_and_is_reproducible():
    net = small_net(encoders.Direct(5), neuron=StochasticLIF(noise=0.5))
    assert net.is_stochastic
    p = net.init_params(KEY, 4)
    with pytest.raises(ValueError, match="rng_key"):
        net.apply(p, X)
    a, b = net.apply(p, X, KEY), net.apply(p, X, KEY)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, net.apply(p, X, jax.random.PRNGKey(9)))


def test_surrogate_spike_fn_keeps_the_forward_pass():
    net = small_net(encoders.Direct(5), readouts.SpikeCount())
    p = net.init_params(KEY, 4)
    np.testing.assert_array_equal(net.apply(p, X), net.apply(p, X, spike_fn=surrogates.fast_sigmoid()))


def test_discrete_prior_draws_lie_on_the_support():
    prior = priors.IntegerGrid(2, 0.25)
    net = Sequential(Dense(5, prior=prior), LIF(), Dense(3), readouts.MeanMembrane())
    w = np.asarray(net.init_params(KEY, 4)["dense_0.weight"])
    assert set(np.unique(w)) <= set(np.asarray(prior.values).tolist())


def test_ideal_device_is_a_no_op():
    ideal = devices.Ideal()
    w = jnp.arange(6.0).reshape(2, 3)
    assert ideal.weights("dense_0.weight", w) is w
    params = {"beta": 0.9, "threshold": 1.0}
    assert ideal.neuron_params("lif_0", params) == params
    assert ideal.membrane_noise(KEY, "lif_0", (2, 3, 4)) is None and not ideal.is_stochastic
    net = small_net(encoders.Direct(5))
    p = net.init_params(KEY, 4)
    np.testing.assert_array_equal(net.apply(p, X, device=ideal), net.apply(p, X))


@dataclasses.dataclass(frozen=True)
class DoublingDevice:
    """Doubles every weight and bias and halves every threshold (to test the hooks)."""

    is_stochastic = False

    def weights(self, name, w):
        return 2.0 * w

    def neuron_params(self, name, params):
        return {**params, "threshold": 0.5 * jnp.asarray(params["threshold"])}

    def membrane_noise(self, rng_key, name, shape):
        return None


def test_device_hooks_are_used():
    net = small_net(encoders.Direct(5))
    p = net.init_params(KEY, 4)
    doubled = {k: 2.0 * v for k, v in p.items()}
    halved = small_net(encoders.Direct(5), neuron=LIF(beta=0.8, threshold=0.5))
    np.testing.assert_allclose(net.apply(p, X, device=DoublingDevice()), halved.apply(doubled, X), rtol=1e-6)
    with pytest.raises(ValueError, match="device"):
        net.apply(p, X, device="ideal")


@pytest.mark.parametrize(
    "make, arg",
    [
        (lambda: Dense(0), "features"),
        (lambda: Dense(-2), "features"),
        (lambda: Dense(2.0), "features"),
        (lambda: Dense(True), "features"),
        (lambda: Dense(3, prior="normal"), "prior"),
        (lambda: Dense(3, prior=priors.Normal(0.0, jnp.ones(3))), "prior"),
        (lambda: Dense(3, bias_prior=None), "bias_prior"),
        (lambda: Dense(3, gain=0.0), "gain"),
        (lambda: Dense(3, gain=float("nan")), "gain"),
    ],
)
def test_invalid_dense(make, arg):
    with pytest.raises(ValueError, match=arg):
        make()


@pytest.mark.parametrize(
    "layers, match",
    [
        ((), "at least one layer"),
        ((Dense(3), readouts.MeanMembrane(), LIF()), "readout must be the last"),
        ((Dense(3), LIF(), encoders.Direct(3)), "encoder may only be the first"),
        ((encoders.Direct(3), encoders.Rate(3), Dense(3)), "encoder may only be the first"),
        ((Dense(3), readouts.SpikeCount()), "SpikeCount must follow a neuron"),
        ((Dense(3), readouts.FirstSpikeTime()), "FirstSpikeTime must follow a neuron"),
        ((Dense(3), LIF(), readouts.MeanMembrane()), "MeanMembrane must follow a Dense"),
        ((LIF(), readouts.SpikeCount()), "at least one Dense"),
        ((Dense(3), "lif"), "layer 1 must be"),
        ((Dense(3), LIF(beta=np.full(4, 0.9))), r"beta of layer 1 \(LIF\) .* \(3\); got shape \(4,\)"),
        ((Dense(4), LIF(), Dense(3), CuBaLIF(alpha=np.full(4, 0.5)), readouts.SpikeCount()),
         r"alpha of layer 3 \(CuBaLIF\) .* \(3\); got shape \(4,\)"),
    ],
)
def test_invalid_sequential(layers, match):
    with pytest.raises(ValueError, match=match):
        Sequential(*layers)


def test_per_neuron_parameters_of_the_right_width_are_accepted():
    net = Sequential(Dense(3), LIF(beta=np.array([0.5, 0.7, 0.9]), threshold=1.0), Dense(2), readouts.MeanMembrane())
    assert net.apply(net.init_params(KEY, 4), jnp.ones((5, 2, 4))).shape == (2, 2)


def test_bad_x_and_params_to_apply():
    net = small_net(encoders.Direct(3))
    p = net.init_params(KEY, 4)
    with pytest.raises(ValueError, match=r"x must be static features \[B, F\]"):
        net.apply(p, X[None])
    with pytest.raises(ValueError, match=r"x must be time-major \[T, B, F\]"):
        small_net().apply(p, X)
    with pytest.raises(ValueError, match="params must have the sites"):
        net.apply({k: v for k, v in p.items() if k != "dense_1.bias"}, X)
    with pytest.raises(ValueError, match="params must have the sites"):
        net.apply({**p, "dense_2.weight": p["dense_1.weight"]}, X)
    with pytest.raises(ValueError, match=r"params\['dense_0.weight'\] must have shape \(4, 5\)"):
        net.apply({**p, "dense_0.weight": p["dense_0.weight"].T}, X)
    with pytest.raises(ValueError, match=r"params\['dense_0.weight'\] must have shape \(3, 5\); got \(4, 5\)"):
        net.apply(p, X[:, :3])  # features disagree with the weights


@pytest.mark.parametrize("value", [np.nan, np.inf])
def test_apply_rejects_non_finite_x(value):
    net = small_net(encoders.Direct(3))
    x = X.copy()
    x[2, 1] = value
    with pytest.raises(ValueError, match="x must be finite; found 1"):
        net.apply(net.init_params(KEY, 4), x)
