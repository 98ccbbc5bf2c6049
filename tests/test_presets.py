"""``presets.classifier``: the first layer's gain, by weight type and neuron, and its validation."""

import math

import jax
import pytest

from bayes_snn import inference, presets


def _first(model):
    return model.net.layers[model.net.names.index("dense_0")]


@pytest.mark.parametrize("weights", ["gaussian", "laplace"])
@pytest.mark.parametrize("neuron", ["lif", "single-step"])
def test_continuous_weights_keep_the_variance_preserving_first_layer(weights, neuron):
    layer = _first(presets.classifier(4, 3, weights=weights, neuron=neuron))
    assert layer.gain_for(4) == 0.5 and float(layer.bias_prior.scale) == 1.0


@pytest.mark.parametrize("weights", ["binary", "ternary", "int:6"])
def test_discrete_lif_networks_get_a_steep_first_layer(weights):
    for fan_in in (4, 64):
        layer = _first(presets.classifier(fan_in, 3, weights=weights))
        gain = presets.DISCRETE_LIF_GAIN / math.sqrt(fan_in)
        assert layer.gain_for(fan_in) == pytest.approx(gain) and float(layer.bias_prior.scale) == pytest.approx(gain)
    # the single-step neuron is a Heaviside step already: unchanged
    assert _first(presets.classifier(4, 3, weights=weights, neuron="single-step")).gain_for(4) == 0.5


def test_an_explicit_input_gain_sets_the_gain_and_the_bias_prior():
    layer = _first(presets.classifier(4, 3, weights="binary", input_gain=2.5))
    assert layer.gain_for(4) == 2.5 and float(layer.bias_prior.scale) == 2.5


@pytest.mark.parametrize("bad", [0.0, -1.0, float("nan"), float("inf"), "2", True])
def test_invalid_input_gain_is_rejected(bad):
    with pytest.raises(ValueError, match=r"input_gain must be a positive finite number or None; got"):
        presets.classifier(4, 3, input_gain=bad)


@pytest.mark.slow
def test_binary_lif_fits_yin_yang_with_the_steep_first_layer():
    # 1000 training examples, 32 hidden units, 3 epochs of SEP (seed 0): measured 0.909 with
    # the preset's gain and 0.783 with the variance-preserving 0.5; 1000 test points give a
    # binomial standard error of 0.01.
    train, test = presets.load_dataset("yinyang")
    accuracy = {}
    for gain in (None, 0.5):
        model = presets.classifier(4, 3, hidden=32, weights="binary", input_gain=gain)
        post = inference.fit(model, (train.x[:1000], train.y[:1000]), inference.SEP(epochs=3, batch_size=32),
                             rng_key=jax.random.PRNGKey(0), progress_bar=False)
        accuracy[gain] = post.evaluate(test, mode="moments")["accuracy"]
    assert accuracy[None] > 0.87 > accuracy[0.5]
