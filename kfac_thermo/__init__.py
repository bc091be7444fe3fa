"""kfac_thermo: thermodynamic and digital second-order optimizers as optax gradient transformations."""

from ._alias import ngd as ngd
from ._alias import ngd_cg as ngd_cg
from ._alias import ngd_woodbury as ngd_woodbury
from ._alias import tngd as tngd
from ._alias import tngd_adam as tngd_adam
from ._curvature import BatchCurvature as BatchCurvature
from ._losses import Loss as Loss
from ._solvers import AbstractCurvatureSolver as AbstractCurvatureSolver
from ._solvers import CGSolver as CGSolver
from ._solvers import DenseSolver as DenseSolver
from ._solvers import ThermodynamicSolver as ThermodynamicSolver
from ._solvers import WoodburySolver as WoodburySolver
from ._transform import NaturalGradientState as NaturalGradientState
from ._transform import scale_by_natural_gradient as scale_by_natural_gradient

__all__ = [
    "AbstractCurvatureSolver",
    "BatchCurvature",
    "CGSolver",
    "DenseSolver",
    "Loss",
    "NaturalGradientState",
    "ThermodynamicSolver",
    "WoodburySolver",
    "ngd",
    "ngd_cg",
    "ngd_woodbury",
    "scale_by_natural_gradient",
    "tngd",
    "tngd_adam",
]
