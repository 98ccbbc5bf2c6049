"""Models: a network + readout + likelihood, written as NumPyro models ``model(x, y=None)``.

``Classifier`` uses a categorical likelihood on the readout logits, ``Regressor`` a
Gaussian with fixed observation noise. Both use ``numpyro.plate("data", N,
subsample_size=batch_size)``, so minibatch log-likelihoods are scaled by ``N / batch_size``
as NumPyro users expect, and ``Predictive``, ``trace``, ``seed``, ``condition`` and
``substitute`` work as on any NumPyro model. The data's batch axis is 0 for static
features ``[N, F]`` and 1 for time-major inputs ``[T, N, F]``.

Example
-------
>>> import jax, jax.numpy as jnp
>>> from numpyro.infer import Predictive
>>> from bayes_snn import Sequential, Dense, LIF, encoders, readouts
>>> net = Sequential(encoders.Direct(4), Dense(8), LIF(), Dense(3), readouts.MeanMembrane())
>>> model = Classifier(net, num_classes=3)
>>> draws = Predictive(model, num_samples=2)(jax.random.PRNGKey(0), jnp.ones((5, 4)))
>>> draws["y"].shape, draws["dense_0.weight"].shape
((2, 5), (2, 4, 8))
"""

from __future__ import annotations

import inspect

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist

from ._checks import check_int
from .datasets._validate import check_features, check_labels
from .datasets.batching import batch_axis
from .devices import Ideal, check_device
from .network import Sequential


class _Model:
    """Shared plumbing: the NumPyro model body and data validation."""

    def __init__(self, net: Sequential, device=None):
        if not isinstance(net, Sequential):
            raise ValueError(f"net must be a bayes_snn.Sequential; got {type(net).__name__}")
        if net.readout is None:
            raise ValueError("net must end with a readout (SpikeCount, MeanMembrane or FirstSpikeTime)")
        self.net = net
        self.device = Ideal() if device is None else check_device(device)

    def __call__(self, x, y=None, *, batch_size: int | None = None):
        axis = batch_axis(x)
        n = jnp.shape(x)[axis]
        params = self.net.sample_params(jnp.shape(x)[-1])
        with numpyro.plate("data", n, subsample_size=batch_size) as idx:
            xb = jnp.take(jnp.asarray(x), idx, axis=axis)
            key = numpyro.prng_key() if self.net.is_stochastic else None
            out = self.net.apply(params, xb, key, device=self.device)
            obs = None if y is None else jnp.asarray(y)[idx]
            numpyro.sample("y", self.observation(out), obs=obs)

    def log_likelihood(self, outputs: jax.Array, y: jax.Array) -> jax.Array:
        """Per-example log-likelihood ``[B]`` of targets ``y`` given readout ``outputs``."""
        return self.observation(outputs).log_prob(y)

    def check_data(self, x, y=None):
        """Validate ``x`` (and ``y``); returns NumPy arrays. Raises ``ValueError``."""
        check_features("x", x)
        self.net.check_input(x)
        x = np.asarray(x, dtype=np.float32)
        if y is None:
            return x, None
        n = np.shape(x)[batch_axis(x)]
        if np.ndim(y) != 1 or np.shape(y)[0] != n:
            raise ValueError(f"y must have shape [{n}] to match x of shape {np.shape(x)}; got {np.shape(y)}")
        return x, self.check_targets(y)


class Classifier(_Model):
    """Categorical likelihood on the readout logits ``[B, num_classes]``.

    Parameters
    ----------
    net : Sequential
        A network whose last Dense layer has ``num_classes`` units.
    num_classes : int
    device : Device, optional
        The substrate the network runs on (default ``devices.Ideal()``).
    """

    task = "classification"

    def __init__(self, net: Sequential, num_classes: int, *, device=None):
        super().__init__(net, device)
        check_int("num_classes", num_classes, minimum=2)
        if net.out_features != num_classes:
            raise ValueError(f"the last Dense layer must have num_classes={num_classes} units; got {net.out_features}")
        self.num_classes = int(num_classes)

    def observation(self, logits: jax.Array):
        return dist.Categorical(logits=logits)

    def predictive(self, logits: jax.Array) -> jax.Array:
        """Class probabilities ``[B, C]`` from logits."""
        return jax.nn.softmax(logits, axis=-1)

    def check_targets(self, y):
        check_labels("y", y, self.num_classes)
        return np.asarray(y, dtype=np.int32)


class Regressor(_Model):
    """Gaussian likelihood ``y ~ N(readout, noise**2)`` for a network with one output."""

    task = "regression"

    def __init__(self, net: Sequential, *, noise: float = 1.0, device=None):
        super().__init__(net, device)
        if net.out_features != 1:
            raise ValueError(f"a Regressor's last Dense layer must have 1 unit; got {net.out_features}")
        if not (np.isfinite(noise) and noise > 0):
            raise ValueError(f"noise must be a positive finite standard deviation; got {noise!r}")
        self.noise = float(noise)

    def observation(self, outputs: jax.Array):
        return dist.Normal(outputs[..., 0], self.noise)

    def predictive(self, outputs: jax.Array) -> jax.Array:
        """Predictive mean ``[B]`` given the network's fixed weights."""
        return outputs[..., 0]

    def check_targets(self, y):
        y = np.asarray(y, dtype=np.float32)
        if not np.all(np.isfinite(y)):
            raise ValueError(f"y must be finite; found {int(np.sum(~np.isfinite(y)))} NaN/inf values")
        return y


class Custom(_Model):
    """A hand-written NumPyro model around a DSL network, e.g. with a hierarchical prior.

    ``model_fn(x, y=None, *, net, **kwargs)`` is an ordinary NumPyro model that samples
    the network's weights by calling the ``net`` it is *given* (``net(x, priors=...)``),
    and observes the targets inside ``numpyro.plate("data", ...)``. The network is passed
    in, rather than taken from a closure, so that a backend can run it with its own
    derivative (VI passes a view whose spikes carry a surrogate gradient; the forward
    values are the same). Exactly one of ``num_classes`` (categorical likelihood on the
    logits) and ``noise`` (Gaussian likelihood) states the likelihood that
    ``model_fn`` uses: predictions, ``evaluate`` and the result file use the network
    and this likelihood directly. A ``Custom`` model runs on the ideal device, and a
    saved result needs ``Posterior.load(path, model=...)``.

    Example
    -------
    >>> import jax, jax.numpy as jnp, numpyro, numpyro.distributions as dist
    >>> from numpyro.infer import Predictive
    >>> from bayes_snn import Sequential, Dense, LIF, encoders, readouts
    >>> def model_fn(x, y=None, *, net):
    ...     tau = numpyro.sample("tau", dist.HalfNormal(1.0))
    ...     logits = net(x, priors={"dense_0.weight": dist.Normal(0.0, tau)})
    ...     with numpyro.plate("data", x.shape[0]):
    ...         numpyro.sample("y", dist.Categorical(logits=logits), obs=y)
    >>> net = Sequential(encoders.Direct(4), Dense(8), LIF(), Dense(3), readouts.MeanMembrane())
    >>> model = Custom(model_fn, net, num_classes=3)
    >>> Predictive(model, num_samples=2)(jax.random.PRNGKey(0), jnp.ones((5, 2)))["tau"].shape
    (2,)
    """

    def __init__(self, model_fn, net: Sequential, *, num_classes: int | None = None, noise: float | None = None):
        super().__init__(net)
        if not callable(model_fn):
            raise ValueError(f"model_fn must be a NumPyro model function; got {type(model_fn).__name__}")
        params = inspect.signature(model_fn).parameters
        if "net" not in params and not any(p.kind is p.VAR_KEYWORD for p in params.values()):
            raise ValueError("model_fn must accept the network as a keyword argument: model_fn(x, y=None, *, net)")
        if (num_classes is None) == (noise is None):
            raise ValueError(f"give exactly one of num_classes (classification) and noise (regression); got {num_classes=}, {noise=}")
        self.model_fn = model_fn
        self._likelihood = Classifier(net, num_classes) if noise is None else Regressor(net, noise=noise)
        self.task = self._likelihood.task

    def __call__(self, x, y=None, **kwargs):
        return self.model_fn(x, y, net=self.net, **kwargs)

    @property
    def num_classes(self) -> int:
        return self._likelihood.num_classes

    @property
    def noise(self) -> float:
        return self._likelihood.noise

    def observation(self, outputs: jax.Array):
        return self._likelihood.observation(outputs)

    def predictive(self, outputs: jax.Array) -> jax.Array:
        """Class probabilities ``[B, C]`` or the regression mean ``[B]``."""
        return self._likelihood.predictive(outputs)

    def check_targets(self, y):
        return self._likelihood.check_targets(y)


__all__ = ["Classifier", "Regressor", "Custom"]
