"""What both optimizer families need: argument, parameter and batch checks, the non-finite policy (and its skip
reaching every transformation of an alias chain), periodic work, the conditioning warning, the alias tail
(momentum and learning rate). Neither family imports the other; both import this."""

from __future__ import annotations

import warnings
from typing import Any, Callable, Literal

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jaxtyping import Array, Float, PRNGKeyArray, PyTree

from ._curvature import CurvatureKind, check_curvature
from ._losses import Loss, LossSpec, as_loss
from ._predict import check_predict_fn
from ._solver import AbstractDampedSolver

NonFinitePolicy = Literal["skip", "raise"]
NONFINITE_POLICIES = ("skip", "raise")
ScalarOrSchedule = float | Float[Array, ""] | optax.Schedule


# ------------------------------------------------------------------------------------------ construction time


def check_damping(damping):
    """Damping must be > 0 (a concrete value raises now; a traced one at run time)."""
    if isinstance(damping, jax.core.Tracer):
        return eqx.error_if(damping, ~(damping > 0), "damping must be > 0")
    if not damping > 0:
        raise ValueError(f"damping must be > 0, got {damping!r}")
    return damping


def needs_key(solver: AbstractDampedSolver, key) -> None:
    """A solver that draws random numbers (a noisy device's thermal noise) gets them from a caller-given key,
    never from a hidden seed."""
    if solver.needs_key and key is None:
        what = "a noisy device (kappa0 > 0)" if not solver.device.is_noiseless else "a diffrax simulation"
        raise ValueError(f"{what} draws random numbers: {type(solver).__name__} needs key=")


def split_key(key: PRNGKeyArray | None, num: int) -> list:
    """``num`` keys from ``key``, or ``num`` Nones for a deterministic configuration (which holds no key)."""
    return [None] * num if key is None else list(jax.random.split(key, num))


def check_transform(solver: AbstractDampedSolver, *, predict_fn: Callable, loss: LossSpec, damping,
                    curvature: CurvatureKind, key: PRNGKeyArray | None,
                    nonfinite: NonFinitePolicy) -> tuple[Loss, Any]:
    """The arguments every transform of both families takes, checked at construction: ``(loss, damping)``."""
    if not isinstance(solver, AbstractDampedSolver):
        raise ValueError(f"solver must be a kfac_thermo.AbstractDampedSolver, got {type(solver).__name__}")
    needs_key(solver, key)
    loss_fn = as_loss(loss)
    check_predict_fn(predict_fn)
    if nonfinite not in NONFINITE_POLICIES:
        raise ValueError(f"nonfinite must be 'skip' or 'raise', got {nonfinite!r}")
    check_curvature(curvature, key)
    return loss_fn, check_damping(damping)


# ----------------------------------------------------------------------------------------------- update time


def check_params(params: PyTree, name: str) -> None:
    """Every parameter leaf must be a float32 or float64 array: the curvature solves need that precision, and an
    integer or boolean leaf has no gradient (split such leaves off, e.g. with ``eqx.partition``)."""
    for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]:
        dtype = jnp.result_type(leaf)
        where = f"{name}: params leaf {jax.tree_util.keystr(path) or '(root)'} has dtype {dtype}"
        if not jnp.issubdtype(dtype, jnp.floating):
            raise ValueError(f"{where}; the optimizers need floating-point parameters: split integer and boolean "
                             "leaves off the params (e.g. eqx.partition(model, eqx.is_inexact_array))")
        if jnp.finfo(dtype).bits < 32:
            raise ValueError(f"{where}; curvature solves need float32 or float64 (keep float32 master parameters "
                             "and cast them to the low precision inside predict_fn)")


def unpack_batch(batch, name: str) -> tuple[Any, Array]:
    """``(inputs, targets)`` of the ``batch=`` extra argument, or a ValueError naming what is missing."""
    if batch is None:
        raise ValueError(f"{name}.update needs the keyword argument batch=(inputs, targets)")
    if not isinstance(batch, (tuple, list)) or len(batch) != 2:
        raise ValueError(f"{name}: batch must be a pair (inputs, targets), got {type(batch).__name__}")
    return batch[0], jnp.asarray(batch[1])


def check_batch(predict_fn: Callable, loss: Loss, params: PyTree, inputs: Any, targets: Array) -> int:
    """Static shape checks: predict_fn must map the inputs to (b, dz) outputs matching the targets; returns dz."""
    sizes = {leaf.shape[0] if jnp.ndim(leaf) else None for leaf in jax.tree_util.tree_leaves(inputs)}
    if len(sizes) != 1 or None in sizes or targets.shape[:1] != (next(iter(sizes)),):
        raise ValueError(f"batch inputs and targets disagree on the batch size: inputs {sizes}, "
                         f"targets {targets.shape}")
    if targets.shape[0] == 0:
        raise ValueError(f"the batch is empty (inputs and targets of shape {targets.shape}): a curvature needs at "
                         "least one example")
    try:
        out = jax.eval_shape(predict_fn, params, inputs)
    except Exception as error:  # noqa: BLE001 - re-raised with the context a user needs
        raise ValueError(f"predict_fn(params, inputs) failed on this batch: {error}") from error
    if out.ndim != 2 or out.shape[0] != targets.shape[0]:
        raise ValueError(f"predict_fn must return outputs of shape (batch, dz); got {out.shape} for "
                         f"{targets.shape[0]} examples")
    loss.check_targets(jnp.zeros(out.shape[1:], out.dtype), targets[0])
    return out.shape[1]


def batch_of(name: str, predict_fn: Callable, loss: Loss, params: PyTree, batch,
             updates: PyTree) -> tuple[Any, Array, PyTree]:
    """``update``'s common checks: params given, ``batch=(inputs, targets)`` matching ``predict_fn``; returns
    ``(inputs, targets, updates)``, the updates carrying the run-time check of the targets' values
    (:meth:`Loss.check_target_values`: e.g. labels out of range), which every direction depends on."""
    if params is None:
        raise ValueError(f"{name}: update needs params")
    check_params(params, name)
    inputs, targets = unpack_batch(batch, name)
    num_outputs = check_batch(predict_fn, loss, params, inputs, targets)
    return inputs, targets, loss.check_target_values(updates, targets, num_outputs)


def all_finite(tree: PyTree) -> Array:
    """Whether every entry of every leaf is finite (True for an empty tree)."""
    return jnp.all(jnp.asarray([jnp.all(jnp.isfinite(leaf)) for leaf in jax.tree_util.tree_leaves(tree)] or [True]))


def keep_where(ok: Array, new: PyTree, old: PyTree) -> PyTree:
    """``new`` where ``ok`` holds, else ``old``, leaf by leaf."""
    return jax.tree_util.tree_map(lambda a, b: jnp.where(ok, a, b), new, old)


def periodic(period: int, count: Array, fn: Callable, keep: Callable, operand):
    """``fn(operand)`` on steps ``count % period == 0``, else ``keep(operand)`` (no cond for a period of 1)."""
    if period == 1:
        return fn(operand)
    return jax.lax.cond(count % period == 0, fn, keep, operand)


class ConditioningWarning(UserWarning):
    """The damped curvature is too ill-conditioned for the working precision: the direction is untrustworthy."""


CONDITIONING_LIMIT = 0.1
"""Largest accepted ``cond(G + damping I) * eps``: the first-order relative error bound of a backward-stable solve
in the working precision (Higham, Accuracy and Stability, Thm 7.2), up to its modest constant."""


def _warn_ill_conditioned(name: str, dtype: str, condition, norm, damping) -> None:
    condition, norm, damping = (np.max(np.asarray(v, np.float64)) for v in (condition, norm, damping))
    error = condition * float(np.finfo(dtype).eps)
    if error > CONDITIONING_LIMIT:
        warnings.warn(f"{name}: in {dtype} the damped curvature's condition number is about {condition:.0e} "
                      f"(|G| ~ {norm:.0e}, damping {damping:.0e}), so rounding alone may move the direction by "
                      f"~{error:.0e} of its size; use float64 (jax.config.update('jax_enable_x64', True)) or a "
                      "larger damping", ConditioningWarning, stacklevel=2)


def warn_if_ill_conditioned(gram: Float[Array, "r r"], damping, name: str) -> None:
    """Warn at run time (a :class:`ConditioningWarning`) when ``cond(G + damping I) * eps`` exceeds
    :data:`CONDITIONING_LIMIT` in the Gram's dtype.

    ``G = W W^T`` and the Gram ``W^T W`` share their nonzero eigenvalues, so ``cond(G + damping I) =
    (lambda_max + damping) / damping`` (N > r: ``G`` is singular). ``lambda_max`` is bounded above by the Gram's
    largest absolute row sum (r^2 flops); only when that bound crosses the limit is it estimated by 16 power
    iterations (a lower bound), and only when the estimate crosses it too is the host called. The check is
    compiled for float32 only: in float64 the limit needs ``cond > 4.5e14`` (a damping ~1e-15 of ``|G|``), and the
    conditional host callback costs a step about a millisecond even when it is not taken.
    """
    dtype = jnp.result_type(gram)
    if jnp.finfo(dtype).bits > 32:
        return
    eps = jnp.finfo(dtype).eps
    condition = lambda norm: (norm + damping) / damping

    def power_step(_, v):
        w = gram @ v
        return w / jnp.maximum(jnp.linalg.norm(w), jnp.finfo(dtype).tiny)

    def estimate():
        v = jax.lax.fori_loop(0, 16, power_step, jnp.ones(gram.shape[0], dtype) / np.sqrt(gram.shape[0]))
        norm = jnp.abs(v @ gram @ v)
        report = lambda: jax.debug.callback(_warn_ill_conditioned, name, str(dtype), condition(norm), norm, damping)
        jax.lax.cond(condition(norm) * eps > CONDITIONING_LIMIT, report, lambda: None)

    bound = jnp.max(jnp.sum(jnp.abs(gram), axis=1))
    jax.lax.cond(condition(bound) * eps > CONDITIONING_LIMIT, estimate, lambda: None)


# --------------------------------------------------------------------------------------------------- aliases


def skip_nonfinite(transformation: optax.GradientTransformation,
                   state_types: tuple[type, ...]) -> optax.GradientTransformationExtraArgs:
    r"""``transformation`` (a chain around transforms whose states are of ``state_types``) skipping as a whole.

    On a step one of those transforms skips (its non-finite policy: its ``skipped`` count grows), the update is
    zero and every other state in the chain (momentum traces, Adam's moments and counts) keeps its old value,
    so the parameters and the optimizer stand still; the transform's own state is as it left it (its counts and
    key advance, its solver state is kept). Without this a zero direction fed to ``optax.trace`` or
    ``optax.scale_by_adam`` still moves the parameters by the decayed momentum. Like ``optax.apply_if_finite``,
    with the skip decided by the transform, which knows whether its curvature and direction were finite.
    """
    inner = optax.with_extra_args_support(transformation)
    is_transform = lambda node: isinstance(node, state_types)
    transform_states = lambda state: [node for node in jax.tree_util.tree_leaves(state, is_leaf=is_transform)
                                      if is_transform(node)]

    def update_fn(updates, state, params=None, **extra_args):
        new_updates, new_state = inner.update(updates, state, params, **extra_args)
        skipped = jnp.any(jnp.asarray([new.skipped != old.skipped for new, old in
                                       zip(transform_states(new_state), transform_states(state))] or [False]))
        new_updates = jax.tree_util.tree_map(lambda u: jnp.where(skipped, jnp.zeros_like(u), u), new_updates)
        keep = lambda new, old: new if is_transform(new) else jnp.where(skipped, old, new)
        return new_updates, jax.tree_util.tree_map(keep, new_state, state, is_leaf=is_transform)

    return optax.GradientTransformationExtraArgs(inner.init, update_fn)


def with_learning_rate(direction: optax.GradientTransformation, learning_rate: ScalarOrSchedule,
                       momentum: float | None, state_type: type) -> optax.GradientTransformationExtraArgs:
    """``direction``, then heavy-ball ``momentum`` (when given), then ``-learning_rate``: the aliases' tail, skipping
    as a whole when ``direction`` (whose state is a ``state_type``) skips a step (:func:`skip_nonfinite`)."""
    parts = [direction]
    if momentum is not None:
        parts.append(optax.trace(decay=momentum))
    parts.append(optax.scale_by_learning_rate(learning_rate))
    return skip_nonfinite(optax.chain(*parts), (state_type,))
