"""The K-FAC optimizers users pick by name: digital ``kfac`` and thermodynamic ``thermo_kfac``, as optax chains."""

from __future__ import annotations

from typing import Callable

import optax
from jax.sharding import Mesh
from jaxtyping import Array, Float, PRNGKeyArray, PyTree

import thermox

from .._common import NonFinitePolicy, ScalarOrSchedule, with_learning_rate
from .._curvature import CurvatureKind, Fallback
from ._solvers import DampingMode, DigitalKronecker, ThermoKronecker, ThermoMethod
from .._losses import LossSpec
from ._transform import KFACState, scale_by_kfac


def kfac(
    learning_rate: ScalarOrSchedule,
    *,
    predict_fn: Callable,
    loss: LossSpec,
    damping: float | Float[Array, ""],
    example_inputs: PyTree,
    damping_mode: DampingMode = "factored",
    curvature: CurvatureKind = "ggn",
    ema_decay: float | Float[Array, ""] = 0.95,
    curvature_period: int = 1,
    inverse_period: int = 1,
    fallback: Fallback = "diagonal",
    key: PRNGKeyArray | None = None,
    momentum: float | None = None,
    nonfinite: NonFinitePolicy = "skip",
    mesh: Mesh | None = None,
    solver_axis: str = "data",
    example_params: PyTree | None = None,
) -> optax.GradientTransformationExtraArgs:
    r"""Digital K-FAC: ``theta <- theta - learning_rate (A (x) S + damping)^-1 g`` block by block.

    ``mesh`` / ``solver_axis`` spread the per-layer work over devices (:func:`scale_by_kfac`).
    ``damping_mode="factored"`` splits the damping between the factors with Martens & Grosse's ``pi`` and inverts
    them by Cholesky; ``"exact"`` adds ``damping`` to the Kronecker product's eigenvalues (two eigendecompositions
    per layer at each inverse refresh, twice the products per step). Weight decay: chain
    ``optax.add_decayed_weights`` before it. See :func:`scale_by_kfac` for the other arguments (``example_params``
    and ``update``'s ``model_params`` for a branch of ``optax.multi_transform``); ``update`` needs
    ``batch=(inputs, targets)``.
    """
    direction = scale_by_kfac(
        DigitalKronecker(damping_mode), predict_fn=predict_fn, loss=loss, damping=damping,
        example_inputs=example_inputs, curvature=curvature, ema_decay=ema_decay, curvature_period=curvature_period,
        inverse_period=inverse_period, fallback=fallback, key=key, nonfinite=nonfinite, mesh=mesh,
        solver_axis=solver_axis, example_params=example_params,
    )
    return with_learning_rate(direction, learning_rate, momentum, KFACState)


def thermo_kfac(
    learning_rate: ScalarOrSchedule,
    *,
    predict_fn: Callable,
    loss: LossSpec,
    damping: float | Float[Array, ""],
    example_inputs: PyTree,
    device: thermox.AnalogDevice = thermox.AnalogDevice(),
    key: PRNGKeyArray | None = None,
    method: ThermoMethod = "solve",
    t: float | Float[Array, ""] = 1000.0,
    num_samples: int | None = None,
    interval: float = 1.0,
    damping_mode: DampingMode = "factored",
    curvature: CurvatureKind = "ggn",
    ema_decay: float | Float[Array, ""] = 0.95,
    curvature_period: int = 1,
    inverse_period: int = 1,
    fallback: Fallback = "diagonal",
    momentum: float | None = None,
    nonfinite: NonFinitePolicy = "skip",
    mesh: Mesh | None = None,
    solver_axis: str = "data",
    example_params: PyTree | None = None,
) -> optax.GradientTransformationExtraArgs:
    r"""Thermodynamic K-FAC: :func:`kfac`'s factored-damping update with the per-layer solves (``method="solve"``)
    or factor inversions (``method="invert"``) done by the simulated analog ``device``; see
    :class:`ThermoKronecker` for the protocol, ``t`` (units of tau of the drift normalised to unit largest
    coupling), ``num_samples`` and ``interval``, and for the work each step records.

    Only factored damping maps onto the device (two solves with the damped factors); exact damping needs the
    factors' eigendecompositions, which no solve provides, and is refused.
    """
    if damping_mode != "factored":
        raise ValueError(
            f"thermo_kfac supports damping_mode='factored' only (got {damping_mode!r}): the device solves with "
            "the damped factors A + pi sqrt(damping) I and S + sqrt(damping)/pi I; exact damping needs their "
            "eigendecompositions (use kfac(damping_mode='exact'))"
        )
    solver = ThermoKronecker(device=device, method=method, t=t, num_samples=num_samples, interval=interval)
    direction = scale_by_kfac(
        solver, predict_fn=predict_fn, loss=loss, damping=damping, example_inputs=example_inputs,
        curvature=curvature, ema_decay=ema_decay, curvature_period=curvature_period, inverse_period=inverse_period,
        fallback=fallback, key=key, nonfinite=nonfinite, mesh=mesh, solver_axis=solver_axis,
        example_params=example_params,
    )
    return with_learning_rate(direction, learning_rate, momentum, KFACState)
