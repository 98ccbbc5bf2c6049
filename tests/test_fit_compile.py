"""fit compiles the training step once per run, whatever the number of batches and epochs."""

from dataclasses import dataclass

import jax

import bayes_snn as bs
from bayes_snn import inference, presets

TRACES = []


@dataclass(frozen=True)
class CountingSurrogate(inference.SurrogateGradient):
    """Records every trace of ``step``: a retrace means a recompilation."""

    def step(self, rng_key, state, batch):
        TRACES.append(batch.x.shape)
        return super().step(rng_key, state, batch)


def test_step_traced_once_with_partial_last_batch():
    data = bs.datasets.yin_yang("train", size=70)  # 70 = 2 * 32 + 6: a padded last batch
    model = presets.classifier(4, 3, hidden=8, steps=3)
    TRACES.clear()
    post = bs.fit(model, data, CountingSurrogate(epochs=3, batch_size=32), rng_key=jax.random.PRNGKey(0),
                  progress_bar=False)
    assert TRACES == [(32, 4)]
    assert len(post.history["loss"]) == 3
