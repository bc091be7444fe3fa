"""The natural-gradient family: ``scale_by_natural_gradient`` (the batch curvature ``G + damping I`` solved by any
damped solver each step), its solvers (dense, Woodbury, CG and the thermodynamic device) and its aliases TNGD,
TNGD-Adam and the digital NGD baselines."""

from ._alias import ngd as ngd
from ._alias import ngd_cg as ngd_cg
from ._alias import ngd_woodbury as ngd_woodbury
from ._alias import tngd as tngd
from ._alias import tngd_adam as tngd_adam
from ._transform import NaturalGradientState as NaturalGradientState
from ._transform import scale_by_natural_gradient as scale_by_natural_gradient
