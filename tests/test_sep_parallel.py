"""SEP's data-parallel minibatch update: four forced host CPU devices reproduce one device.

XLA fixes the number of host devices when JAX starts, so the comparison runs in a fresh
interpreter with ``XLA_FLAGS=--xla_force_host_platform_device_count=4``.
"""

import json
import os
import subprocess
import sys
import textwrap

import jax
import numpy as np
import pytest
from jax.sharding import Mesh

from bayes_snn.inference import SEP

SCRIPT = textwrap.dedent(
    """
    import json, sys, jax, jax.numpy as jnp, numpy as np
    from jax.sharding import Mesh
    from bayes_snn import Classifier, Dense, LIF, Sequential, datasets, encoders, inference, priors, readouts

    assert jax.device_count() == 4, jax.devices()
    data = datasets.yin_yang("train", size=100)  # 100 = 3 batches of 32 + a padded one
    net = Sequential(encoders.Direct(3), Dense(6), LIF(beta=0.9), Dense(3), readouts.MeanMembrane(scale=4.0))
    binary = Sequential(encoders.Direct(1), Dense(6, prior=priors.Binary(0.5), gain=2.0), LIF(beta=0.9),
                        Dense(3, prior=priors.Binary(0.5)), readouts.MeanMembrane(scale=4.0))
    # Every rule sums the Direct-fed layer's sites over a sharded batch by matrix products.
    rules = {"moment_match": (net, {}), "taylor": (net, {"gaussian_update": "taylor"}),
             "series": (binary, {"enumerate_limit": 0, "categorical_update": "series"}),
             "categorical_taylor": (binary, {"enumerate_limit": 0, "categorical_update": "taylor"})}
    out = {}
    for rule in sys.argv[1:]:
        model_net, options = rules[rule]
        for devices, mesh in [("one", None), ("four", Mesh(np.array(jax.devices()), ("batch",)))]:
            method = inference.SEP(epochs=1, batch_size=32, mesh=mesh, **options)
            post = inference.fit(Classifier(model_net, 3), data, method, rng_key=jax.random.PRNGKey(0),
                                 progress_bar=False)
            out[rule, devices] = {k: [np.asarray(d.mean).tolist(), np.asarray(d.variance).tolist()]
                                  for k, d in post.weights.items()}
            out[rule, devices]["log_lik"] = post.history["log_lik"].tolist()
    print(json.dumps({" ".join(key): value for key, value in out.items()}))
    """
)


# The default rules run by default; the opt-in Taylor rules compile as much again (-m slow).
@pytest.mark.parametrize("rules", [("moment_match", "series"),
                                   pytest.param(("taylor", "categorical_taylor"), marks=pytest.mark.slow)])
def test_four_devices_reproduce_one_device(rules):
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4", JAX_PLATFORMS="cpu")
    run = subprocess.run([sys.executable, "-c", SCRIPT, *rules], capture_output=True, text=True, env=env,
                         timeout=600)
    assert run.returncode == 0, run.stderr[-2000:]
    out = json.loads(run.stdout.strip().splitlines()[-1])
    assert sorted(out) == sorted(f"{rule} {devices}" for rule in rules for devices in ("one", "four"))
    for rule in rules:
        one, four = out[f"{rule} one"], out[f"{rule} four"]
        np.testing.assert_allclose(four.pop("log_lik"), one.pop("log_lik"), rtol=1e-4)
        for site, (mean, var) in one.items():
            mean4, var4 = four[site]
            # Only the order of the float32 sums over the batch differs (an all-reduce across
            # devices); four updates amplify ~1e-7 relative rounding to at most ~1e-5.
            np.testing.assert_allclose(mean4, mean, rtol=1e-4, atol=1e-4)
            np.testing.assert_allclose(var4, var, rtol=2e-4, atol=1e-5)


def test_mesh_must_divide_the_batch():
    mesh = Mesh(np.array(jax.devices()[:1]), ("batch",))
    assert SEP(batch_size=5, mesh=mesh).mesh is mesh  # one device divides everything
    with pytest.raises(ValueError, match="mesh"):
        SEP(mesh=[jax.devices()[0]])

