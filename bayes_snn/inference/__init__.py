"""Inference: ``fit`` and its backends, and the ``Posterior`` result type."""

from .fit import fit
from .result import Posterior
from .surrogate import SurrogateGradient

__all__ = ["fit", "Posterior", "SurrogateGradient"]
