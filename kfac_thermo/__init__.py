"""kfac_thermo: thermodynamic and digital second-order optimizers as optax gradient transformations."""

from ._curvature import BatchCurvature as BatchCurvature
from ._curvature import BlockTable as BlockTable
from ._curvature import LayerStatistics as LayerStatistics
from ._curvature import kfac_blocks as kfac_blocks
from ._curvature import loss_grads_and_statistics as loss_grads_and_statistics
from ._kfac import KFACState as KFACState
from ._kfac import kfac as kfac
from ._kfac import scale_by_kfac as scale_by_kfac
from ._kfac import thermo_kfac as thermo_kfac
from ._kfac_solvers import AbstractKroneckerSolver as AbstractKroneckerSolver
from ._kfac_solvers import DigitalKronecker as DigitalKronecker
from ._kfac_solvers import ThermoKronecker as ThermoKronecker
from ._losses import CallableLoss as CallableLoss
from ._losses import Loss as Loss
from ._losses import MeanSquaredError as MeanSquaredError
from ._losses import SoftmaxCrossEntropy as SoftmaxCrossEntropy
from ._losses import as_loss as as_loss
from ._model import register_dense as register_dense
from ._ngd import NaturalGradientState as NaturalGradientState
from ._ngd import ngd as ngd
from ._ngd import ngd_cg as ngd_cg
from ._ngd import ngd_woodbury as ngd_woodbury
from ._ngd import scale_by_natural_gradient as scale_by_natural_gradient
from ._ngd import tngd as tngd
from ._ngd import tngd_adam as tngd_adam
from ._parallel import data_mesh as data_mesh
from ._parallel import distribute as distribute
from ._parallel import replicate as replicate
from ._parallel import shard_batch as shard_batch
from ._solvers import AbstractCurvatureSolver as AbstractCurvatureSolver
from ._solvers import CGSolver as CGSolver
from ._solvers import DenseSolver as DenseSolver
from ._solvers import ThermodynamicSolver as ThermodynamicSolver
from ._solvers import WoodburySolver as WoodburySolver

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
    "CallableLoss",
    "DenseSolver",
    "Loss",
    "MeanSquaredError",
    "SoftmaxCrossEntropy",
    "as_loss",
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
