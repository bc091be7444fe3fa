"""The K-FAC family: ``scale_by_kfac`` (Kronecker-factored curvature blocks refreshed periodically, each solved by
a damped solver: digital inverses or eigendecompositions, or the thermodynamic device) and its aliases digital
``kfac`` and ``thermo_kfac``."""

from ._alias import kfac as kfac
from ._alias import thermo_kfac as thermo_kfac
from ._transform import KFACState as KFACState
from ._transform import scale_by_kfac as scale_by_kfac
