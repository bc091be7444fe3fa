"""Natural-gradient optax transformations: one ``scale_by_natural_gradient`` for every curvature solver."""

from __future__ import annotations

from typing import Any, Callable, Literal, NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import optax
from jax.flatten_util import ravel_pytree
from jaxtyping import Array, Float, PRNGKeyArray, PyTree

import thermox

from ._curvature import BatchCurvature, CurvatureKind, check_curvature
from ._losses import Loss, LossSpec
from ._solvers import AbstractCurvatureSolver

NonFinitePolicy = Literal["skip", "raise"]


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


def check_damping(damping):
    """Damping must be > 0 (a concrete value raises now; a traced one at run time)."""
    if isinstance(damping, jax.core.Tracer):
        return eqx.error_if(damping, ~(damping > 0), "damping must be > 0")
    if not damping > 0:
        raise ValueError(f"damping must be > 0, got {damping!r}")
    return damping


def unpack_batch(batch, name: str) -> tuple[Any, Array]:
    if batch is None:
        raise ValueError(f"{name}.update needs the keyword argument batch=(inputs, targets)")
    if not isinstance(batch, (tuple, list)) or len(batch) != 2:
        raise ValueError(f"{name}: batch must be a pair (inputs, targets), got {type(batch).__name__}")
    return batch[0], jnp.asarray(batch[1])


def check_batch(predict_fn: Callable, loss: Loss, params: PyTree, inputs: Any, targets: Array) -> None:
    """Static shape checks: predict_fn must map the inputs to (b, dz) outputs matching the targets."""
    sizes = {leaf.shape[0] for leaf in jax.tree_util.tree_leaves(inputs)}
    if len(sizes) != 1 or targets.shape[:1] != (next(iter(sizes)),):
        raise ValueError(f"batch inputs and targets disagree on the batch size: inputs {sizes}, targets {targets.shape}")
    try:
        out = jax.eval_shape(predict_fn, params, inputs)
    except Exception as error:  # noqa: BLE001 - re-raised with the context a user needs
        raise ValueError(f"predict_fn(params, inputs) failed on this batch: {error}") from error
    if out.ndim != 2 or out.shape[0] != targets.shape[0]:
        raise ValueError(f"predict_fn must return outputs of shape (batch, dz); got {out.shape} for {targets.shape[0]} examples")
    loss.check_targets(jnp.zeros(out.shape[1:], out.dtype), targets[0])


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
    or the Monte-Carlo Fisher, see :mod:`kfac_thermo._curvature`) at the current parameters, for the batch given
    as the keyword-only extra argument ``batch=(inputs, targets)`` of ``update``. The direction has the pytree
    structure of the gradient.

    Args:
        solver: a digital solver (dense, Woodbury, CG) or :class:`ThermodynamicSolver`.
        predict_fn: ``predict_fn(params, inputs) -> outputs`` of shape (batch, dz).
        loss: "softmax_cross_entropy", "mse" or a per-example callable ``(outputs, targets) -> scalar``.
        damping: ``lambda > 0`` (may be injected with ``optax.inject_hyperparams``).
        curvature: "ggn", "empirical_fisher", "mc_fisher" or "ggn_curvature_prop".
        key: PRNG key for device noise and sampled curvature estimates (required for noisy devices, "mc_fisher"
            and "ggn_curvature_prop").
        nonfinite: "skip" leaves parameters and state unchanged (an update of zeros) when the gradient or the
            direction is not finite and counts it in ``state.skipped``; "raise" fails at run time.
        host_flops_per_s: host throughput for the modeled time of the digital work.
    """
    loss_fn = Loss(loss)
    if nonfinite not in ("skip", "raise"):
        raise ValueError(f"nonfinite must be 'skip' or 'raise', got {nonfinite!r}")
    if not callable(predict_fn):
        raise ValueError("predict_fn must be a callable predict_fn(params, inputs) -> outputs")
    check_curvature(curvature, key)
    name = type(solver).__name__
    damping = check_damping(damping)
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
        if params is None:
            raise ValueError(f"{name}: update needs params")
        inputs, targets = unpack_batch(batch, name)
        check_batch(predict_fn, loss_fn, params, inputs, targets)
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


def needs_key(device: thermox.AnalogDevice, key) -> None:
    """A noisy device draws thermal noise: insist on a caller-given key rather than a hidden seed."""
    if not device.is_noiseless and key is None:
        raise ValueError("a noisy device (kappa0 > 0) needs key= for its thermal noise")
