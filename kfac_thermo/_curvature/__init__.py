r"""Curvature of a batch, shared by both optimizer families.

- The batch curvature ``G = W W^T`` of the natural-gradient family (:mod:`._batch`: :class:`BatchCurvature`, with
  the curvature kinds and their output cotangents in :mod:`._directions`).
- The Kronecker side of K-FAC: which layer gets which curvature block (:mod:`._kronecker`: :class:`KFACModel`,
  :func:`kfac_blocks`) and the per-layer statistics and factors ``A``, ``S`` of a batch (:mod:`._statistics`).

Both build on the model's layer structure (``kfac_thermo._model``, whose glossary fixes the words used here).
"""

from ._batch import BatchCurvature as BatchCurvature
from ._directions import CURVATURES as CURVATURES
from ._directions import CurvatureKind as CurvatureKind
from ._directions import check_curvature as check_curvature
from ._directions import output_directions as output_directions
from ._kronecker import FALLBACKS as FALLBACKS
from ._kronecker import BlockTable as BlockTable
from ._kronecker import Fallback as Fallback
from ._kronecker import KFACModel as KFACModel
from ._kronecker import ParameterBlock as ParameterBlock
from ._kronecker import kfac_blocks as kfac_blocks
from ._statistics import LayerStatistics as LayerStatistics
from ._statistics import batch_statistics as batch_statistics
from ._statistics import factors as factors
from ._statistics import gram as gram
from ._statistics import loss_grads_and_statistics as loss_grads_and_statistics
