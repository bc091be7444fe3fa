"""The optimizers users pick by name: TNGD, TNGD-Adam and the digital NGD baselines, as optax chains."""

from __future__ import annotations

from typing import Callable

import diffrax
import optax
from jaxtyping import PRNGKeyArray

import thermox

from .._common import NonFinitePolicy, ScalarOrSchedule, skip_nonfinite, with_learning_rate
from .._curvature import CurvatureKind
from .._losses import LossSpec
from ._solvers import CGSolver, DenseSolver, ThermodynamicSolver, WoodburySolver
from ._transform import NaturalGradientState, scale_by_natural_gradient


def _device_method(method, dt, sde_solver) -> thermox.AbstractMethod:
    """The thermox method of the aliases' arguments: ``method="diffrax"`` integrates with ``sde_solver`` (Euler by
    default) at step ``dt``; any other name or method object is passed to thermox as it is."""
    if isinstance(method, str) and method == "diffrax":
        return thermox.Diffrax(diffrax.Euler() if sde_solver is None else sde_solver, dt)
    return thermox.as_method(method)


def tngd(
    learning_rate: ScalarOrSchedule,
    *,
    predict_fn: Callable,
    loss: LossSpec,
    damping: float = 0.01,
    t: float = 50.0,
    delay: float = 0.0,
    device: thermox.AnalogDevice = thermox.AnalogDevice(),
    key: PRNGKeyArray | None = None,
    momentum: float | None = None,
    curvature: CurvatureKind = "ggn",
    reset: bool | None = None,
    method: str | thermox.AbstractMethod = "auto",
    dt: float = 0.1,
    sde_solver: diffrax.AbstractSolver | None = None,
    nonfinite: NonFinitePolicy = "skip",
) -> optax.GradientTransformationExtraArgs:
    r"""Thermodynamic natural-gradient descent (Donatella et al. 2024, Algorithm 1).

    Each step the simulated device relaxes towards ``(G + damping I)^-1 g`` for ``t`` tau from its previous
    state; its readout ``g~`` replaces the gradient in SGD (with optional heavy-ball ``momentum``):
    ``theta <- theta - learning_rate g~``. ``t -> 0`` is SGD, ``t -> inf`` exact NGD. ``method="diffrax"`` with
    ``dt=0.1`` and the default Euler solver is the paper's own Euler-Maruyama simulation; the default is the
    exact law from the low-rank structure of ``G``. See :class:`ThermodynamicSolver` for ``delay`` and ``reset``
    and :func:`scale_by_natural_gradient` for the rest. ``update`` needs ``batch=(inputs, targets)``.
    """
    solver = ThermodynamicSolver(device=device, t=t, delay=delay, reset=reset,
                                 method=_device_method(method, dt, sde_solver))
    direction = scale_by_natural_gradient(solver, predict_fn=predict_fn, loss=loss, damping=damping,
                                          curvature=curvature, key=key, nonfinite=nonfinite)
    return with_learning_rate(direction, learning_rate, momentum, NaturalGradientState)


def tngd_adam(
    learning_rate: ScalarOrSchedule,
    *,
    predict_fn: Callable,
    loss: LossSpec,
    damping: float = 1.0,
    t: float = 0.4,
    b1: float = 0.0,
    b2: float = 0.0,
    eps: float = 1e-8,
    delay: float = 0.0,
    device: thermox.AnalogDevice = thermox.AnalogDevice(),
    key: PRNGKeyArray | None = None,
    curvature: CurvatureKind = "ggn",
    reset: bool | None = None,
    method: str | thermox.AbstractMethod = "auto",
    dt: float = 0.02,
    sde_solver: diffrax.AbstractSolver | None = None,
    nonfinite: NonFinitePolicy = "skip",
) -> optax.GradientTransformationExtraArgs:
    """TNGD-Adam: the device's estimate ``g~`` fed to Adam in place of the gradient (the paper's QA runs used
    ``b1 = b2 = 0``, the defaults here). Arguments as in :func:`tngd`."""
    solver = ThermodynamicSolver(device=device, t=t, delay=delay, reset=reset,
                                 method=_device_method(method, dt, sde_solver))
    direction = scale_by_natural_gradient(solver, predict_fn=predict_fn, loss=loss, damping=damping,
                                          curvature=curvature, key=key, nonfinite=nonfinite)
    return skip_nonfinite(optax.chain(direction, optax.scale_by_adam(b1=b1, b2=b2, eps=eps),
                                      optax.scale_by_learning_rate(learning_rate)), (NaturalGradientState,))


def _digital(solver, learning_rate, predict_fn, loss, damping, curvature, key, momentum, nonfinite):
    """A digital solver's natural-gradient direction followed by (heavy-ball momentum and) the learning rate."""
    direction = scale_by_natural_gradient(solver, predict_fn=predict_fn, loss=loss, damping=damping,
                                          curvature=curvature, key=key, nonfinite=nonfinite)
    return with_learning_rate(direction, learning_rate, momentum, NaturalGradientState)


def ngd(
    learning_rate: ScalarOrSchedule,
    *,
    predict_fn: Callable,
    loss: LossSpec,
    damping: float = 0.01,
    curvature: CurvatureKind = "ggn",
    key: PRNGKeyArray | None = None,
    momentum: float | None = None,
    nonfinite: NonFinitePolicy = "skip",
) -> optax.GradientTransformationExtraArgs:
    """Exact NGD: ``theta <- theta - learning_rate (G + damping I)^-1 g`` by a dense Cholesky solve (small N)."""
    return _digital(DenseSolver(), learning_rate, predict_fn, loss, damping, curvature, key, momentum, nonfinite)


def ngd_woodbury(
    learning_rate: ScalarOrSchedule,
    *,
    predict_fn: Callable,
    loss: LossSpec,
    damping: float = 0.01,
    curvature: CurvatureKind = "ggn",
    key: PRNGKeyArray | None = None,
    momentum: float | None = None,
    nonfinite: NonFinitePolicy = "skip",
) -> optax.GradientTransformationExtraArgs:
    """NGD through the Woodbury identity on the rank-(b dz) curvature: O(b^2 dz^2 N + b^3 dz^3)."""
    return _digital(WoodburySolver(), learning_rate, predict_fn, loss, damping, curvature, key, momentum, nonfinite)


def ngd_cg(
    learning_rate: ScalarOrSchedule,
    *,
    predict_fn: Callable,
    loss: LossSpec,
    damping: float = 0.01,
    iterations: int = 10,
    curvature: CurvatureKind = "ggn",
    key: PRNGKeyArray | None = None,
    momentum: float | None = None,
    nonfinite: NonFinitePolicy = "skip",
) -> optax.GradientTransformationExtraArgs:
    """NGD-CG: ``iterations`` warm-started conjugate-gradient steps on matrix-free curvature products."""
    return _digital(CGSolver(iterations), learning_rate, predict_fn, loss, damping, curvature, key, momentum,
                    nonfinite)
