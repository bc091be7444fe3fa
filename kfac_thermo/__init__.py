"""kfac_thermo: thermodynamic and digital second-order optimizers as optax gradient transformations."""

from ._common import ConditioningWarning as ConditioningWarning
from ._composition import STATIC_ARGS as STATIC_ARGS
from ._composition import WithWorkState as WithWorkState
from ._composition import inject_hyperparams as inject_hyperparams
from ._composition import skip_nonfinite as skip_nonfinite
from ._composition import total_work as total_work
from ._composition import with_work as with_work
from ._composition import work_records as work_records
from ._curvature import BatchCurvature as BatchCurvature
from ._curvature import BlockTable as BlockTable
from ._curvature import LayerStatistics as LayerStatistics
from ._curvature import kfac_blocks as kfac_blocks
from ._curvature import loss_grads_and_statistics as loss_grads_and_statistics
from ._kfac import KFACState as KFACState
from ._kfac import kfac as kfac
from ._kfac import scale_by_kfac as scale_by_kfac
from ._kfac import thermo_kfac as thermo_kfac
from ._kfac._solvers import DigitalKronecker as DigitalKronecker
from ._kfac._solvers import ThermoKronecker as ThermoKronecker
from ._kfac._solvers import factored_damping as factored_damping
from ._laplace import STRUCTURES as LAPLACE_STRUCTURES
from ._laplace import LaplacePosterior as LaplacePosterior
from ._laplace import laplace as laplace
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
from ._solver import AbstractDampedSolver as AbstractDampedSolver
from ._sophia import SophiaGState as SophiaGState
from ._sophia import gnb_diagonal as gnb_diagonal
from ._sophia import scale_by_sophia_g as scale_by_sophia_g
from ._sophia import sophia_g as sophia_g
from ._ngd._solvers import CGSolver as CGSolver
from ._ngd._solvers import DenseSolver as DenseSolver
from ._ngd._solvers import ThermodynamicSolver as ThermodynamicSolver
from ._ngd._solvers import WoodburySolver as WoodburySolver
from ._work import DIGITAL_KINDS as DIGITAL_KINDS
from ._work import Work as Work
from ._work import analog as analog_work
from ._work import digital as digital_work
from ._work import parallel as parallel_work
from ._work import sequential as sequential_work

__all__ = [
    "AbstractDampedSolver",
    "BatchCurvature",
    "BlockTable",
    "CGSolver",
    "CallableLoss",
    "ConditioningWarning",
    "DIGITAL_KINDS",
    "DenseSolver",
    "DigitalKronecker",
    "KFACState",
    "LAPLACE_STRUCTURES",
    "LaplacePosterior",
    "LayerStatistics",
    "Loss",
    "MeanSquaredError",
    "NaturalGradientState",
    "STATIC_ARGS",
    "SoftmaxCrossEntropy",
    "SophiaGState",
    "ThermoKronecker",
    "ThermodynamicSolver",
    "WithWorkState",
    "WoodburySolver",
    "Work",
    "analog_work",
    "as_loss",
    "data_mesh",
    "digital_work",
    "factored_damping",
    "gnb_diagonal",
    "inject_hyperparams",
    "parallel_work",
    "sequential_work",
    "distribute",
    "kfac",
    "kfac_blocks",
    "laplace",
    "loss_grads_and_statistics",
    "ngd",
    "ngd_cg",
    "ngd_woodbury",
    "register_dense",
    "replicate",
    "scale_by_kfac",
    "scale_by_natural_gradient",
    "scale_by_sophia_g",
    "shard_batch",
    "skip_nonfinite",
    "sophia_g",
    "thermo_kfac",
    "tngd",
    "tngd_adam",
    "total_work",
    "with_work",
    "work_records",
]
