"""Inference: ``fit`` and its backends, and the ``Posterior`` result type."""

from .fit import fit
from .rate import RateBackprop
from .result import Posterior
from .selection import Selection, select
from .sep import SEP
from .surrogate import SurrogateGradient
from .vi import VI

__all__ = ["fit", "Posterior", "RateBackprop", "SEP", "Selection", "SurrogateGradient", "VI", "select"]
