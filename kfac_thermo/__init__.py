"""kfac_thermo: thermodynamic and digital second-order optimizers as optax gradient transformations."""

from ._alias import ngd as ngd
from ._alias import ngd_cg as ngd_cg
from ._alias import ngd_woodbury as ngd_woodbury
from ._alias import tngd as tngd
from ._alias import tngd_adam as tngd_adam
from ._curvature import BatchCurvature as BatchCurvature
from ._kfac_alias import kfac as kfac
from ._kfac_alias import thermo_kfac as thermo_kfac
from ._kfac_layers import BlockTable as BlockTable
from ._kfac_layers import kfac_blocks as kfac_blocks
from ._kfac_solvers import AbstractKroneckerSolver as AbstractKroneckerSolver
from ._kfac_solvers import DigitalKronecker as DigitalKronecker
from ._kfac_solvers import ThermoKronecker as ThermoKronecker
from ._kfac_stats import LayerStatistics as LayerStatistics
from ._kfac_stats import loss_grads_and_statistics as loss_grads_and_statistics
from ._kfac_transform import KFACState as KFACState
from ._kfac_transform import scale_by_kfac as scale_by_kfac
from ._losses import Loss as Loss
from ._parallel import data_mesh as data_mesh
from ._parallel import distribute as distribute
from ._parallel import replicate as replicate
from ._parallel import shard_batch as shard_batch
from ._solvers import AbstractCurvatureSolver as AbstractCurvatureSolver
from ._solvers import CGSolver as CGSolver
from ._solvers import DenseSolver as DenseSolver
from ._solvers import ThermodynamicSolver as ThermodynamicSolver
from ._solvers import WoodburySolver as WoodburySolver
from ._tap import register_dense as register_dense
from ._transform import NaturalGradientState as NaturalGradientState
from ._transform import scale_by_natural_gradient as scale_by_natural_gradient

__all__ = [
    "AbstractCurvatureSolver",
    "AbstractKroneckerSolver",
    "BlockTable",
    "DigitalKronecker",
    "KFACState",
    "LayerStatistics",
    "ThermoKronecker",
    "kfac",
    "kfac_blocks",
    "loss_grads_and_statistics",
    "register_dense",
    "scale_by_kfac",
    "thermo_kfac",
    "BatchCurvature",
    "CGSolver",
    "DenseSolver",
    "Loss",
    "NaturalGradientState",
    "ThermodynamicSolver",
    "WoodburySolver",
    "data_mesh",
    "distribute",
    "replicate",
    "shard_batch",
    "ngd",
    "ngd_cg",
    "ngd_woodbury",
    "scale_by_natural_gradient",
    "tngd",
    "tngd_adam",
]
