"""thermox: a simulated analog thermodynamic (Ornstein-Uhlenbeck) linear-algebra device.

The device obeys ``dx = -(A x - b) dt/tau + sqrt(2 kappa0/tau) dW``; all run times here are in units of tau.

Note: the public PyPI package ``thermox`` has the same import name; this one is the project's own.
"""

from . import cost as cost
from . import linalg as linalg
from ._device import AnalogDevice as AnalogDevice
from ._drift import AbstractDrift as AbstractDrift
from ._drift import DenseDrift as DenseDrift
from ._drift import EigenDrift as EigenDrift
from ._drift import LowRankDrift as LowRankDrift
from ._drift import OperatorDrift as OperatorDrift
from ._eigh import eigh as eigh
from ._evolve import evolve as evolve
from ._path import sample_path as sample_path
from ._quantize import quantize as quantize
from ._spectral import OULaw as OULaw

__all__ = [
    "AbstractDrift",
    "AnalogDevice",
    "DenseDrift",
    "EigenDrift",
    "LowRankDrift",
    "OULaw",
    "OperatorDrift",
    "cost",
    "eigh",
    "evolve",
    "linalg",
    "quantize",
    "sample_path",
]
