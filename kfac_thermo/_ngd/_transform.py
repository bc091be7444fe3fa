"""Natural-gradient optax transformations: one ``scale_by_natural_gradient`` for every damped solver.

Each step the solver is refreshed with the batch curvature ``G`` and the damping (a factorisation, or the device
programmed with ``G``), then applied to the flat gradient with its own state carried between steps; the step's
:class:`kfac_thermo.Work` is the refresh followed by the solve.
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import equinox as eqx
import jax.numpy as jnp
import jax.random as jr
import optax
from jax.flatten_util import ravel_pytree
from jaxtyping import Array, Float, PRNGKeyArray, PyTree

from .._common import NonFinitePolicy, batch_of, check_damping, check_params, check_transform, keep_where, split_key
from .._curvature import BatchCurvature, CurvatureKind
from .._losses import LossSpec
from .._predict import branch_predict
from .._solver import AbstractDampedSolver
from .._work import Work


class NaturalGradientState(NamedTuple):
    """State of :func:`scale_by_natural_gradient`.

    Attributes:
        count: steps taken (skipped ones included).
        key: PRNG key for the device noise and Monte-Carlo targets, split every step; None for a deterministic
            configuration.
        solver_state: the solver's own state (device voltages, CG warm start).
        work: the :class:`kfac_thermo.Work` of the last step (the gradient's own passes excluded).
        skipped: steps skipped because the gradient or the direction was not finite.
    """

    count: Array
    key: PRNGKeyArray | None
    solver_state: PyTree
    work: Work
    skipped: Array


def scale_by_natural_gradient(
    solver: AbstractDampedSolver,
    *,
    predict_fn: Callable,
    loss: LossSpec,
    damping: float | Float[Array, ""],
    curvature: CurvatureKind = "ggn",
    key: PRNGKeyArray | None = None,
    nonfinite: NonFinitePolicy = "skip",
) -> optax.GradientTransformationExtraArgs:
    r"""Replace the gradient ``g`` by ``solver``'s solution of ``(G + damping I) d = g``.

    ``G`` is the batch curvature (``curvature``: the GGN, its curvature-propagation estimate, the empirical Fisher
    or the Monte-Carlo Fisher, see ``kfac_thermo._curvature``) at the current parameters, for the batch given
    as the keyword-only extra argument ``batch=(inputs, targets)`` of ``update``. The direction has the pytree
    structure of the gradient.

    As a branch of ``optax.multi_transform`` / ``optax.masked`` (params with ``optax.MaskedNode`` leaves),
    ``update`` also needs ``model_params=params``, the whole model's parameters: the curvature is then over the
    branch's parameters, the others held at their values (``kfac_thermo._predict``).

    Args:
        solver: a damped solver of the batch curvature: digital (dense, Woodbury, CG) or
            :class:`ThermodynamicSolver`.
        predict_fn: ``predict_fn(params, inputs) -> outputs`` of shape (batch, dz).
        loss: a :class:`kfac_thermo.Loss`, "softmax_cross_entropy", "mse" or a per-example callable
            ``(outputs, targets) -> scalar``.
        damping: ``lambda > 0`` (may be injected with ``optax.inject_hyperparams``).
        curvature: "ggn", "empirical_fisher", "mc_fisher" or "ggn_curvature_prop".
        key: PRNG key for device noise and sampled curvature estimates (required for noisy devices, "mc_fisher"
            and "ggn_curvature_prop"; a deterministic configuration needs none and holds none). The state holds
            a copy, so a step jitted with ``donate_argnums`` leaves the caller's key usable.
        nonfinite: "skip" leaves parameters and state unchanged (an update of zeros) when the gradient or the
            direction is not finite and counts it in ``state.skipped``; "raise" fails at run time.
    """
    loss_fn, damping = check_transform(solver, predict_fn=predict_fn, loss=loss, damping=damping,
                                       curvature=curvature, key=key, nonfinite=nonfinite)
    name = type(solver).__name__

    def init_fn(params):
        check_params(params, name)
        flat, _ = ravel_pytree(params)
        _, solver_state = solver.init(flat)
        return NaturalGradientState(
            count=jnp.zeros([], jnp.int32),
            key=None if key is None else jnp.copy(key),  # a copy: a donated state must not delete the caller's key
            solver_state=solver_state,
            work=Work.zero(),
            skipped=jnp.zeros([], jnp.int32),
        )

    def update_fn(updates, state, params=None, *, batch=None, model_params=None, **extra_args):
        del extra_args
        predict = branch_predict(name, predict_fn, params, model_params, "pass update(..., model_params=params)")
        inputs, targets, updates = batch_of(name, predict, loss_fn, params, batch, updates)
        g, unravel = ravel_pytree(updates)
        key_curvature, key_solve, next_key = split_key(state.key, 3)
        curv = BatchCurvature(curvature, predict, loss_fn, params, inputs, targets, key_curvature)
        prepared, refresh_work = solver.refresh(curv, check_damping(damping),
                                                None if key_solve is None else jr.fold_in(key_solve, 1))
        # The solver sees the number of steps it has actually taken: a skipped step must not count, or a
        # skipped first step would leave TNGD's next run starting from stale (zero) voltages.
        applied = state.count - state.skipped
        direction, solver_state, apply_work = solver.apply(prepared, g, state.solver_state, step=applied,
                                                           key=key_solve)
        finite = jnp.all(jnp.isfinite(g)) & jnp.all(jnp.isfinite(direction))
        if nonfinite == "raise":
            direction = eqx.error_if(direction, ~finite, "non-finite gradient or natural-gradient direction")
        else:
            direction = jnp.where(finite, direction, 0.0)
            solver_state = keep_where(finite, solver_state, state.solver_state)
        new_state = NaturalGradientState(
            count=state.count + 1,
            key=next_key,
            solver_state=solver_state,
            work=refresh_work.then(apply_work),
            skipped=state.skipped + (~finite).astype(jnp.int32),
        )
        return unravel(direction.astype(g.dtype)), new_state

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)
