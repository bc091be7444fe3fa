"""Composing optimizers: work records across a chain (:func:`with_work` gives any optax transformation one, such as
Adam or SGD; :func:`work_records` and :func:`total_work` collect them from a chained state, by type), a
transform's skipped step reaching every transformation chained with it (:func:`skip_nonfinite`), and
``optax.inject_hyperparams`` told which arguments are static (:func:`inject_hyperparams`)."""

from __future__ import annotations

import inspect
from collections.abc import Iterable
from typing import Callable, NamedTuple

import jax
import optax
from jaxtyping import PyTree

from . import _common
from ._kfac import KFACState
from ._ngd import NaturalGradientState
from ._work import Work, digital, sequential


class WithWorkState(NamedTuple):
    """State of :func:`with_work`: the wrapped transformation's state and the work of its last update."""

    inner: PyTree
    work: Work


def with_work(transformation: optax.GradientTransformation, *, flops_per_param: float,
              bytes_per_param: float,
              leaf_work: Callable[[tuple[int, ...]], Work] | None = None) -> optax.GradientTransformationExtraArgs:
    """``transformation`` reporting the work of its update in its state: ``flops_per_param`` flops and
    ``bytes_per_param`` bytes of memory traffic per parameter (kind "update"), one kernel per leaf, then
    ``leaf_work(shape)`` for each leaf's shape when given (work that is not element-wise, e.g. Muon's
    Newton-Schulz matrix products).

    For the optax baselines, whose work does not depend on the batch; e.g. Adam in float32 reads the gradient and
    both moments and writes the moments and the update (``bytes_per_param = 6 * 4``).
    """
    if not flops_per_param >= 0 or not bytes_per_param >= 0:
        raise ValueError(f"with_work: flops_per_param and bytes_per_param must be >= 0, got {flops_per_param!r} "
                         f"and {bytes_per_param!r}")
    inner = optax.with_extra_args_support(transformation)

    def init_fn(params):
        return WithWorkState(inner.init(params), Work.zero())

    def update_fn(updates, state, params=None, **extra_args):
        new_updates, inner_state = inner.update(updates, state.inner, params, **extra_args)
        leaves = jax.tree_util.tree_leaves(updates)
        size = float(sum(leaf.size for leaf in leaves))
        work = digital(flops={"update": flops_per_param * size}, bytes={"update": bytes_per_param * size},
                       kernels={"update": len(leaves)})
        if leaf_work is not None:
            work = sequential([work, *(leaf_work(leaf.shape) for leaf in leaves)])
        return new_updates, WithWorkState(inner_state, work)

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def _is_work(node) -> bool:
    return isinstance(node, Work)


def work_records(opt_state: PyTree) -> list[Work]:
    """Every :class:`Work` record in an optimizer state (a chain, ``inject_hyperparams``, ...), in tree order."""
    return [node for node in jax.tree_util.tree_leaves(opt_state, is_leaf=_is_work) if _is_work(node)]


def total_work(opt_state: PyTree) -> Work:
    """The work of the last update of a whole (chained) optimizer: its records one after the other."""
    return sequential(work_records(opt_state))


def skip_nonfinite(transformation: optax.GradientTransformation) -> optax.GradientTransformationExtraArgs:
    """``transformation`` (a chain containing ``scale_by_natural_gradient`` or ``scale_by_kfac``) skipping as a
    whole when that transform skips a step for a non-finite gradient, curvature or direction: a zero update and
    every other state in the chain unchanged (the aliases ``tngd``, ``kfac``, ... already do this). E.g.
    ``skip_nonfinite(optax.chain(scale_by_natural_gradient(...), optax.scale_by_adam(), optax.scale(-lr)))``."""
    return _common.skip_nonfinite(transformation, (NaturalGradientState, KFACState))


STATIC_ARGS = frozenset({
    # functions, losses, data and parameter examples, devices, solvers, methods, keys, meshes
    "predict_fn", "loss", "example_inputs", "example_params", "device", "solver", "method", "sde_solver", "key",
    "mesh",
    # names of options (strings) and flags
    "curvature", "fallback", "damping_mode", "nonfinite", "solver_axis", "reset",
    # integers that fix loop lengths, periods or shapes; the Euler-Maruyama step (its step count is ceil(t / dt))
    "iterations", "num_samples", "curvature_period", "inverse_period", "dt",
})
"""The arguments of kfac_thermo's optimizers that must stay Python values under ``optax.inject_hyperparams``; the
others (``learning_rate``, ``damping``, ``t``, ``delay``, ``momentum``, ``ema_decay``, ``b1``, ``b2``, ``eps``,
``interval``) may be scheduled or set in ``state.hyperparams``."""


def inject_hyperparams(factory: Callable[..., optax.GradientTransformation], static_args: str | Iterable[str] = (),
                       hyperparam_dtype=None) -> Callable[..., optax.GradientTransformationExtraArgs]:
    """``optax.inject_hyperparams(factory, ...)`` with the arguments of :data:`STATIC_ARGS` that ``factory`` takes
    marked static, and ``static_args`` besides (e.g. a user factory's own callables, or ``"t"`` for TNGD's
    ``method="diffrax"``, whose step count needs a concrete ``t``).

    optax takes every callable argument for a schedule and every number or array for an injectable value; a
    ``predict_fn``, a loss object, ``example_inputs`` or a key is neither. With this wrapper
    ``kfac_thermo.inject_hyperparams(kfac_thermo.kfac)(learning_rate=optax.cosine_decay_schedule(0.1, 1000),
    predict_fn=..., loss=..., damping=1e-2, example_inputs=x)`` schedules the learning rate and keeps the damping
    in ``state.hyperparams``, where it may be changed between steps.
    """
    extra = {static_args} if isinstance(static_args, str) else set(static_args)
    static = (STATIC_ARGS & set(inspect.signature(factory).parameters)) | extra
    return optax.inject_hyperparams(factory, static_args=static, hyperparam_dtype=hyperparam_dtype)
