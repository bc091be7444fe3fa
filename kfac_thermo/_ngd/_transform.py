"""Natural-gradient optax transformations: one ``scale_by_natural_gradient`` for every curvature solver."""

from __future__ import annotations

from typing import Callable, NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import optax
from jax.flatten_util import ravel_pytree
from jaxtyping import Array, Float, PRNGKeyArray, PyTree

from .._common import NonFinitePolicy, batch_of, check_damping, check_transform, needs_key
from .._curvature import BatchCurvature, CurvatureKind
from .._losses import LossSpec
from .._solvers import AbstractCurvatureSolver


class NaturalGradientState(NamedTuple):
    """State of :func:`scale_by_natural_gradient`.

    Attributes:
        count: steps taken (skipped ones included).
        key: PRNG key for the device noise and Monte-Carlo targets; split every step.
        solver_state: the solver's own state (device voltages, CG warm start).
        modeled_time_s: modeled hardware seconds of the last step: host work (model calls at
            ``2 b N`` flops each plus the solver's flops, at ``host_flops_per_s``) plus the device's run and
            transfer time from the thermox cost model.
        model_calls: model calls of the last step (the gradient's one included).
        skipped: steps skipped because the gradient or the direction was not finite.
    """

    count: Array
    key: PRNGKeyArray
    solver_state: PyTree
    modeled_time_s: Float[Array, ""]
    model_calls: Float[Array, ""]
    skipped: Array


def scale_by_natural_gradient(
    solver: AbstractCurvatureSolver,
    *,
    predict_fn: Callable,
    loss: LossSpec,
    damping: float | Float[Array, ""],
    curvature: CurvatureKind = "ggn",
    key: PRNGKeyArray | None = None,
    nonfinite: NonFinitePolicy = "skip",
    host_flops_per_s: float = 1e13,
) -> optax.GradientTransformationExtraArgs:
    r"""Replace the gradient ``g`` by ``solver``'s solution of ``(G + damping I) d = g``.

    ``G`` is the batch curvature (``curvature``: the GGN, its curvature-propagation estimate, the empirical Fisher
    or the Monte-Carlo Fisher, see ``kfac_thermo._curvature``) at the current parameters, for the batch given
    as the keyword-only extra argument ``batch=(inputs, targets)`` of ``update``. The direction has the pytree
    structure of the gradient.

    Args:
        solver: a digital solver (dense, Woodbury, CG) or :class:`ThermodynamicSolver`.
        predict_fn: ``predict_fn(params, inputs) -> outputs`` of shape (batch, dz).
        loss: a :class:`kfac_thermo.Loss`, "softmax_cross_entropy", "mse" or a per-example callable
            ``(outputs, targets) -> scalar``.
        damping: ``lambda > 0`` (may be injected with ``optax.inject_hyperparams``).
        curvature: "ggn", "empirical_fisher", "mc_fisher" or "ggn_curvature_prop".
        key: PRNG key for device noise and sampled curvature estimates (required for noisy devices, "mc_fisher"
            and "ggn_curvature_prop").
        nonfinite: "skip" leaves parameters and state unchanged (an update of zeros) when the gradient or the
            direction is not finite and counts it in ``state.skipped``; "raise" fails at run time.
        host_flops_per_s: host throughput for the modeled time of the digital work.
    """
    loss_fn, damping = check_transform(predict_fn=predict_fn, loss=loss, damping=damping, curvature=curvature,
                                       key=key, nonfinite=nonfinite)
    name = type(solver).__name__
    device = getattr(solver, "device", None)
    if device is not None:
        needs_key(device, key)

    def init_fn(params):
        flat, _ = ravel_pytree(params)
        return NaturalGradientState(
            count=jnp.zeros([], jnp.int32),
            key=jr.key(0) if key is None else key,
            solver_state=solver.init(flat),
            modeled_time_s=jnp.zeros([], jnp.float32),
            model_calls=jnp.zeros([], jnp.float32),
            skipped=jnp.zeros([], jnp.int32),
        )

    def update_fn(updates, state, params=None, *, batch=None, **extra_args):
        del extra_args
        inputs, targets = batch_of(name, predict_fn, loss_fn, params, batch)
        g, unravel = ravel_pytree(updates)
        key_curvature, key_solve, next_key = jr.split(state.key, 3)
        curv = BatchCurvature(curvature, predict_fn, loss_fn, params, inputs, targets, key_curvature)
        # The solver sees the number of steps it has actually taken: a skipped step must not count, or a
        # skipped first step would leave TNGD's next run starting from stale (zero) voltages.
        applied = state.count - state.skipped
        direction, solver_state, work = solver(curv, g, check_damping(damping), state.solver_state, applied, key_solve)
        finite = jnp.all(jnp.isfinite(g)) & jnp.all(jnp.isfinite(direction))
        if nonfinite == "raise":
            direction = eqx.error_if(direction, ~finite, "non-finite gradient or natural-gradient direction")
        else:
            direction = jnp.where(finite, direction, 0.0)
            solver_state = jax.tree_util.tree_map(
                lambda new, old: jnp.where(finite, new, old), solver_state, state.solver_state
            )
        model_calls = 1.0 + work.model_calls
        batch_size = targets.shape[0]
        host_s = (model_calls * 2.0 * batch_size * g.size + work.host_flops) / host_flops_per_s
        new_state = NaturalGradientState(
            count=state.count + 1,
            key=next_key,
            solver_state=solver_state,
            modeled_time_s=(host_s + work.device_s).astype(jnp.float32),
            model_calls=model_calls.astype(jnp.float32),
            skipped=state.skipped + (~finite).astype(jnp.int32),
        )
        return unravel(direction.astype(g.dtype)), new_state

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)
