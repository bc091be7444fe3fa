"""The K-FAC family: ``scale_by_kfac`` (Kronecker-factored curvature blocks refreshed periodically, each solved by
a damped solver) and its aliases digital ``kfac`` and ``thermo_kfac``. Its solvers live in
``kfac_thermo._kfac_solvers`` for now."""

from ._alias import kfac as kfac
from ._alias import thermo_kfac as thermo_kfac
from ._transform import KFACState as KFACState
from ._transform import scale_by_kfac as scale_by_kfac
