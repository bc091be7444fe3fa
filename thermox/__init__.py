"""thermox: a simulated analog thermodynamic (Ornstein-Uhlenbeck) linear-algebra device.

The device obeys ``dx = -(A x - b) dt/tau + sqrt(2 kappa0/tau) dW``; all run times here are in units of tau.
Program a drift once (``thermox.program``), then run and read it out for any right-hand side (``Programmed``).
With a nonlinear drift ``-grad U`` the device samples ``exp(-U / kappa0)`` (``thermox.langevin``).

Note: the public PyPI package ``thermox`` has the same import name; this one is the project's own.
"""

from . import cost as cost
from . import linalg as linalg
from ._conditioning import ConditioningWarning as ConditioningWarning
from ._dense_law import OULawOperators as OULawOperators
from ._dense_law import ou_law_operators as ou_law_operators
from ._dense_law import spd_inverse as spd_inverse
from ._dense_law import spd_inverse_flops as spd_inverse_flops
from ._device import AnalogDevice as AnalogDevice
from ._drift import AbstractDrift as AbstractDrift
from ._drift import DenseDrift as DenseDrift
from ._drift import DiagonalDrift as DiagonalDrift
from ._drift import EigenDrift as EigenDrift
from ._drift import KroneckerDrift as KroneckerDrift
from ._drift import LowRankDrift as LowRankDrift
from ._drift import OperatorDrift as OperatorDrift
from ._eigh import eigh as eigh
from ._evolve import check_time as check_time
from ._evolve import evolve as evolve
from ._langevin import langevin as langevin
from ._methods import AbstractMethod as AbstractMethod
from ._methods import Auto as Auto
from ._methods import Diffrax as Diffrax
from ._methods import EulerMaruyama as EulerMaruyama
from ._methods import Exact as Exact
from ._methods import Krylov as Krylov
from ._methods import as_method as as_method
from ._path import sample_path as sample_path
from ._program import FixedTimeLaw as FixedTimeLaw
from ._program import Programmed as Programmed
from ._program import Readout as Readout
from ._program import program as program
from ._quantize import quantize as quantize
from ._spectral import OULaw as OULaw

__all__ = [
    "AbstractDrift",
    "AbstractMethod",
    "AnalogDevice",
    "Auto",
    "ConditioningWarning",
    "DenseDrift",
    "DiagonalDrift",
    "Diffrax",
    "EigenDrift",
    "EulerMaruyama",
    "Exact",
    "FixedTimeLaw",
    "KroneckerDrift",
    "Krylov",
    "LowRankDrift",
    "OULaw",
    "OULawOperators",
    "OperatorDrift",
    "Programmed",
    "Readout",
    "as_method",
    "check_time",
    "cost",
    "eigh",
    "evolve",
    "langevin",
    "linalg",
    "ou_law_operators",
    "program",
    "quantize",
    "sample_path",
    "spd_inverse",
    "spd_inverse_flops",
]
