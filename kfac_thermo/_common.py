"""What both optimizer families need: argument and batch checks, the non-finite policy, periodic work, the alias
tail (momentum and learning rate). Neither family imports the other; both import this."""

from __future__ import annotations

from typing import Any, Callable, Literal

import equinox as eqx
import jax
import jax.numpy as jnp
import optax
from jaxtyping import Array, Float, PRNGKeyArray, PyTree

import thermox

from ._curvature import CurvatureKind, check_curvature
from ._losses import Loss, LossSpec, as_loss

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


def needs_key(device: thermox.AnalogDevice, key) -> None:
    """A noisy device draws thermal noise: insist on a caller-given key rather than a hidden seed."""
    if not device.is_noiseless and key is None:
        raise ValueError("a noisy device (kappa0 > 0) needs key= for its thermal noise")


def check_transform(*, predict_fn: Callable, loss: LossSpec, damping, curvature: CurvatureKind,
                    key: PRNGKeyArray | None, nonfinite: NonFinitePolicy) -> tuple[Loss, Any]:
    """The arguments every transform of both families takes, checked at construction: ``(loss, damping)``."""
    loss_fn = as_loss(loss)
    if not callable(predict_fn):
        raise ValueError("predict_fn must be a callable predict_fn(params, inputs) -> outputs")
    if nonfinite not in NONFINITE_POLICIES:
        raise ValueError(f"nonfinite must be 'skip' or 'raise', got {nonfinite!r}")
    check_curvature(curvature, key)
    return loss_fn, check_damping(damping)


# ----------------------------------------------------------------------------------------------- update time


def unpack_batch(batch, name: str) -> tuple[Any, Array]:
    """``(inputs, targets)`` of the ``batch=`` extra argument, or a ValueError naming what is missing."""
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


def batch_of(name: str, predict_fn: Callable, loss: Loss, params: PyTree, batch) -> tuple[Any, Array]:
    """``update``'s common checks: params given, ``batch=(inputs, targets)`` matching ``predict_fn``."""
    if params is None:
        raise ValueError(f"{name}: update needs params")
    inputs, targets = unpack_batch(batch, name)
    check_batch(predict_fn, loss, params, inputs, targets)
    return inputs, targets


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


# --------------------------------------------------------------------------------------------------- aliases


def with_learning_rate(direction: optax.GradientTransformation, learning_rate: ScalarOrSchedule,
                       momentum: float | None = None) -> optax.GradientTransformationExtraArgs:
    """``direction``, then heavy-ball ``momentum`` (when given), then ``-learning_rate``: the aliases' tail."""
    parts = [direction]
    if momentum is not None:
        parts.append(optax.trace(decay=momentum))
    parts.append(optax.scale_by_learning_rate(learning_rate))
    return optax.chain(*parts)
