"""fit's per-epoch history: Info fields averaged over minibatches, counts (``num_*``) summed."""

from dataclasses import dataclass
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import bayes_snn as bs
from bayes_snn import inference, presets


class SizeInfo(NamedTuple):
    examples: jax.Array
    num_examples: jax.Array


@dataclass(frozen=True)
class Sizes(inference.SurrogateGradient):
    """Reports every minibatch's number of real examples, as a mean field and as a count."""

    per_unit: bool = False

    def step(self, rng_key, state, batch):
        state, _ = super().step(rng_key, state, batch)
        size = jnp.sum(batch.mask)
        return state, SizeInfo(jnp.full(2, size) if self.per_unit else size, size)


def test_counts_are_summed_and_other_fields_averaged_over_minibatches():
    data = bs.datasets.yin_yang("train", size=70)  # minibatches of 32, 32 and 6 (padded)
    post = bs.fit(presets.classifier(4, 3, hidden=8, steps=3), data, Sizes(epochs=2, batch_size=32),
                  rng_key=jax.random.PRNGKey(0), progress_bar=False)
    np.testing.assert_array_equal(post.history["num_examples"], [70.0, 70.0])
    np.testing.assert_allclose(post.history["examples"], [70 / 3, 70 / 3], rtol=1e-12)


def test_non_scalar_info_field_is_a_clear_error():
    data = bs.datasets.yin_yang("train", size=40)
    with pytest.raises(ValueError, match="SizeInfo.examples must be a scalar; got shape \\(2,\\)"):
        bs.fit(presets.classifier(4, 3, hidden=8, steps=3), data, Sizes(epochs=1, batch_size=32, per_unit=True),
               rng_key=jax.random.PRNGKey(0), progress_bar=False)
