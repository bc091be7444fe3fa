r"""K-FAC as an optax transformation: ``scale_by_kfac`` for any damped solver of a Kronecker block.

Per step ``k`` (counting skipped steps), with the batch given as ``update(..., batch=(inputs, targets))``:

1. every ``curvature_period`` steps (:func:`_refresh_curvature`): the batch's factors
   (``kfac_thermo._curvature._statistics``) enter exponential moving averages
   ``F <- ema_decay F + (1 - ema_decay) F_batch`` (the first refresh takes ``F_batch`` as it is);
2. every ``inverse_period`` steps (:func:`_refresh_inverses`): each layer's solver refreshes its prepared arrays
   from the averaged factors (digital inverses / eigendecompositions, or programming the analog device);
3. every step (:func:`_precondition`): each layer's gradient layer matrix ``[W | b]`` is replaced by the solver's
   ``(A (x) S + damping)^-1`` applied to it; the rest leaves (:func:`_fallback`) are divided by ``D + damping``
   (diagonal) or ``1 + damping`` (identity).

Periodic work runs under ``lax.cond`` on the step counter in the state (a period of 1 has no cond), so a whole
train step jits once. The update has the pytree structure of the gradient. The step's :class:`kfac_thermo.Work`
is the statistics' passes and factor Grams, then the layers' refresh and solve, each layer on its own solver
(``parallel``).
"""

from __future__ import annotations

import math
from typing import Callable, NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import optax
from jax.sharding import Mesh
from jaxtyping import Array, Float, PRNGKeyArray, PyTree

from .._common import (NonFinitePolicy, all_finite, batch_of, check_damping, check_params, check_transform, keep_where,
                       periodic, split_key)
from .._curvature import CurvatureKind, Fallback, KFACModel, LayerStatistics, batch_statistics, factors
from .._kernels import kernel_work
from .._losses import LossSpec
from .._parallel import axis_size, distribute
from .._predict import branch_predict
from .._solver import AbstractDampedSolver
from .._work import Work, parallel, sequential


class KFACState(NamedTuple):
    """State of :func:`scale_by_kfac`.

    Attributes:
        count: steps taken (skipped ones included); drives the refresh periods.
        key: PRNG key (Monte-Carlo targets, device noise), split every step; None for a deterministic
            configuration.
        factors: per layer ``(A, S)``, exponential moving averages.
        diagonals: per fallback leaf its averaged diagonal curvature (empty for the identity fallback).
        curvature_updates: factor refreshes so far (the first one replaces the zero initial factors).
        inverses: per layer the solver's prepared arrays (inverses, eigendecompositions, programmed laws).
        solver_states: per layer the solver's own state between steps.
        work: the :class:`kfac_thermo.Work` of the last step (the gradient's own passes excluded).
        skipped: steps skipped because the gradient, the statistics or the direction was not finite.
    """

    count: Array
    key: PRNGKeyArray | None
    factors: tuple
    diagonals: tuple
    curvature_updates: Array
    inverses: tuple
    solver_states: tuple
    work: Work
    skipped: Array


def _check_period(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{name} must be a Python int >= 1 (it is static: list it in inject_hyperparams' "
                         f"static_args), got {value!r}")
    if value < 1:
        raise ValueError(f"{name} must be >= 1, got {value}")
    return value


def _check_decay(decay):
    if isinstance(decay, jax.core.Tracer):
        return eqx.error_if(decay, ~((decay >= 0) & (decay < 1)), "ema_decay must be in [0, 1)")
    if not 0 <= decay < 1:
        raise ValueError(f"ema_decay must be in [0, 1), got {decay!r}")
    return decay


def _factor_work(model: KFACModel, stats: LayerStatistics) -> Work:
    """The factor Grams of one refresh: ``2 b T n_in^2`` flops for ``A`` and ``2 m b T n_out^2`` for ``S`` per
    layer."""
    works = []
    for layer, act, delta in zip(model.layers, stats.inputs, stats.deltas):
        n_out, n_in = model.dims(layer)
        derivatives = math.prod(delta.shape) // n_out  # m b T output derivatives
        inputs = derivatives // delta.shape[0]  # b T inputs
        works += [kernel_work("gram", 2.0 * inputs * n_in**2, inputs * n_in + n_in**2, act.dtype),
                  kernel_work("gram", 2.0 * derivatives * n_out**2, derivatives * n_out + n_out**2, delta.dtype)]
    return sequential(works)


def _refresh_curvature(model: KFACModel, statistics: Callable[[], LayerStatistics], decay, g_finite: Array,
                       operand: tuple) -> tuple[tuple, Work, Array]:
    """Step 1: the factor and diagonal moving averages, their refresh count, the work, and whether the new ones
    were accepted (a non-finite gradient or statistic leaves ``operand`` as it was)."""
    stats = statistics()
    A, S, D = factors(model, stats)
    old_factors, old_diagonals, count = operand
    weight = jnp.where(count == 0, 1.0, 1.0 - decay)
    ema = lambda old, new: (old + weight * (new - old)).astype(old.dtype)
    new = (tuple((ema(a0, a), ema(s0, s)) for (a0, s0), a, s in zip(old_factors, A, S)),
           tuple(ema(d0, d) for d0, d in zip(old_diagonals, D)), count + 1)
    ok = g_finite & all_finite(new[:2])
    return keep_where(ok, new, operand), stats.work.then(_factor_work(model, stats)), ok


def _keep_curvature(operand: tuple) -> tuple[tuple, Work, Array]:
    return operand, Work.zero(), jnp.asarray(True)


def _refresh_inverses(solvers: list[AbstractDampedSolver], per_layer: Callable, damping, keys: list,
                      accepted: Array, old: tuple, factor_pairs: tuple) -> tuple[tuple, list[Work]]:
    """Step 2: each layer's solver refreshed from its accepted factors ``(A, S)``; a non-finite refresh keeps
    ``old``."""
    results = per_layer([lambda op, s=s: s.refresh(*op) for s in solvers],
                        [(pair, damping, key) for pair, key in zip(factor_pairs, keys)])
    new = tuple(prepared for prepared, _ in results)
    return keep_where(accepted & all_finite(new), new, old), [work for _, work in results]


def _precondition(solvers: list[AbstractDampedSolver], per_layer: Callable, inverses: tuple, solver_states: tuple,
                  G: list[Array], keys: list, step: Array) -> tuple[list[Array], tuple, list[Work]]:
    """Step 3: each layer's gradient matrix solved by its solver: directions, new solver states, work."""
    results = per_layer([lambda op, s=s: s.apply(*op[:3], step=step, key=op[3]) for s in solvers],
                        list(zip(inverses, G, solver_states, keys)))
    return ([direction for direction, _, _ in results], tuple(state for _, state, _ in results),
            [work for _, _, work in results])


def _fallback(g: Array, diagonal: Array | None, damping) -> Array:
    """A rest leaf's direction: ``g / (D + damping)`` (diagonal) or ``g / (1 + damping)`` (identity, ``None``)."""
    return (g / ((1.0 if diagonal is None else diagonal) + damping)).astype(g.dtype)


def scale_by_kfac(
    solver: AbstractDampedSolver,
    *,
    predict_fn: Callable,
    loss: LossSpec,
    damping: float | Float[Array, ""],
    example_inputs: PyTree,
    curvature: CurvatureKind = "ggn",
    ema_decay: float | Float[Array, ""] = 0.95,
    curvature_period: int = 1,
    inverse_period: int = 1,
    fallback: Fallback = "diagonal",
    key: PRNGKeyArray | None = None,
    nonfinite: NonFinitePolicy = "skip",
    mesh: Mesh | None = None,
    solver_axis: str = "data",
    example_params: PyTree | None = None,
) -> optax.GradientTransformationExtraArgs:
    r"""Precondition the gradient with K-FAC's block-diagonal Kronecker curvature (module docstring).

    ``update(updates, state, params, *, batch=(inputs, targets), statistics=None, model_params=None)``:
    ``statistics`` from :func:`loss_grads_and_statistics` (same params and batch) replace the optimizer's own
    statistics pass; ``model_params`` are the whole model's parameters when this is a branch of
    ``optax.multi_transform`` / ``optax.masked`` (params with ``optax.MaskedNode`` leaves): the layers and
    factors are then those of the branch's parameters, the others held at their values (``kfac_thermo._predict``).

    Args:
        solver: the damped solver of one Kronecker block (``curvature = (A, S)``): ``DigitalKronecker`` or
            ``ThermoKronecker``.
        predict_fn: ``predict_fn(params, inputs) -> outputs`` of shape (batch, dz).
        loss: a :class:`kfac_thermo.Loss`, "softmax_cross_entropy", "mse" or a per-example callable
            ``(outputs, targets) -> scalar``.
        damping: ``lambda > 0`` (may be injected); it takes effect at the next inverse refresh.
        example_inputs: a batch of inputs (arrays or shape structs, batch axis first): ``init`` traces the model
            on one example to find its layers and size the factors. Batches must match its per-example shape.
        curvature: "ggn", "empirical_fisher", "mc_fisher" or "ggn_curvature_prop" (output derivatives, see
            ``kfac_thermo._curvature``).
        ema_decay: in [0, 1): weight of the old factors at each curvature refresh (may be injected).
        curvature_period: refresh the factors every this many steps (static int >= 1).
        inverse_period: refresh the solver's inverses every this many steps (static int >= 1).
        fallback: block of parameters in no factored layer: "diagonal" or "identity".
        key: PRNG key for sampled curvature estimates and device noise (required for "mc_fisher",
            "ggn_curvature_prop" and noisy devices; a deterministic configuration needs none and holds none).
        nonfinite: "skip" makes the update zero when the gradient, the statistics or the direction is not finite
            and counts it in ``state.skipped``; factors and inverses are only replaced by finite ones computed
            from a finite gradient's step. "raise" fails at run time instead.
        mesh: with ``solver_axis``, spread the per-layer refreshes and applications over that axis's devices
            (layer ``i`` on device ``i mod n``: one solver per device; ``kfac_thermo.distribute``), for a train step
            jit-compiled on this mesh with replicated optimizer state. The result is the same as without.
        solver_axis: the mesh axis the layers are spread over (the data axis in data-parallel training).
        example_params: the whole model's parameters (arrays or shape structs), needed only as a branch of
            ``optax.multi_transform`` / ``optax.masked``: ``init`` then sees the branch's parameters only and
            traces the model with the others taken from here.
    """
    loss_fn, damping = check_transform(solver, predict_fn=predict_fn, loss=loss, damping=damping,
                                       curvature=curvature, key=key, nonfinite=nonfinite)
    curvature_period = _check_period("curvature_period", curvature_period)
    inverse_period = _check_period("inverse_period", inverse_period)
    ema_decay = _check_decay(ema_decay)
    name = "kfac"
    if mesh is None:
        per_layer = lambda fns, operands: [fn(operand) for fn, operand in zip(fns, operands)]
    else:
        axis_size(mesh, solver_axis)  # fails early, naming the mesh's axes
        per_layer = lambda fns, operands: distribute(fns, operands, mesh, solver_axis)

    def init_fn(params):
        check_params(params, name)
        predict = branch_predict(name, predict_fn, params, example_params,
                                 "give example_params=params (the whole model's, or their shapes) at construction")
        model = KFACModel(predict, params, example_inputs, fallback)
        leaves = jax.tree_util.tree_leaves(params)
        pairs, inverses, solver_states = [], [], []
        for index, layer in enumerate(model.layers):
            n_out, n_in = model.dims(layer)
            dtype = jnp.result_type(leaves[layer.weight])
            pairs.append((jnp.zeros((n_in, n_in), dtype), jnp.zeros((n_out, n_out), dtype)))
            prepared, state = solver.for_layer(index).init(jax.ShapeDtypeStruct((n_out, n_in), dtype))
            inverses.append(prepared)
            solver_states.append(state)
        return KFACState(
            count=jnp.zeros([], jnp.int32),
            key=None if key is None else jnp.copy(key),  # a copy: a donated state must not delete the caller's key
            factors=tuple(pairs),
            diagonals=tuple(jnp.zeros_like(leaves[i]) for i in model.rest) if fallback == "diagonal" else (),
            curvature_updates=jnp.zeros([], jnp.int32),
            inverses=tuple(inverses),
            solver_states=tuple(solver_states),
            work=Work.zero(),
            skipped=jnp.zeros([], jnp.int32),
        )

    def update_fn(updates, state, params=None, *, batch=None, statistics=None, model_params=None, **extra_args):
        del extra_args
        predict = branch_predict(name, predict_fn, params, model_params, "pass update(..., model_params=params)")
        inputs, targets, updates = batch_of(name, predict, loss_fn, params, batch, updates)
        model = KFACModel(predict, params, inputs, fallback)
        shapes = [(A.shape[0], S.shape[0]) for A, S in state.factors]
        if shapes != [model.dims(layer)[::-1] for layer in model.layers]:
            raise ValueError(f"{name}: the batch's layers {[model.dims(l)[::-1] for l in model.layers]} differ from "
                             f"those found at init {shapes}: inputs must have example_inputs' per-example shape")
        num_fallback = len(model.rest) if fallback == "diagonal" else 0
        if statistics is not None and (not isinstance(statistics, LayerStatistics) or statistics.curvature != curvature
                                       or len(statistics.inputs) != len(model.layers)
                                       or len(statistics.rows) != num_fallback):
            raise ValueError(f"{name}: statistics must come from loss_grads_and_statistics with curvature="
                             f"{curvature!r} and fallback={fallback!r} for this model")
        damping_value = check_damping(damping)
        decay = _check_decay(ema_decay)
        num_layers = len(model.layers)
        solvers = [solver.for_layer(i) for i in range(num_layers)]
        key_stats, key_refresh, key_apply, next_key = split_key(state.key, 4)
        g_leaves, treedef = jax.tree_util.tree_flatten(updates)
        g_finite = all_finite(g_leaves)
        g_leaves = [jnp.where(g_finite, g, 0.0) for g in g_leaves]

        batch_stats = (lambda: statistics) if statistics is not None else (
            lambda: batch_statistics(model, params, inputs, targets, curvature, loss_fn, key_stats))
        refresh = lambda operand: _refresh_curvature(model, batch_stats, decay, g_finite, operand)
        (pairs, diagonals, curvature_updates), curvature_work, stats_ok = periodic(
            curvature_period, state.count, refresh, _keep_curvature,
            (state.factors, state.diagonals, state.curvature_updates))
        accepted = g_finite & stats_ok

        inverses, refresh_works = periodic(
            inverse_period, state.count,
            lambda pairs: _refresh_inverses(solvers, per_layer, damping_value, split_key(key_refresh, num_layers),
                                            accepted, state.inverses, pairs),
            lambda pairs: (state.inverses, [Work.zero() for _ in pairs]), pairs)

        directions, solver_states, apply_works = _precondition(
            solvers, per_layer, inverses, state.solver_states, model.to_matrices(g_leaves),
            split_key(key_apply, num_layers), state.count - state.skipped)
        direction = model.from_matrices(directions, g_leaves)
        for i, d in zip(model.rest, diagonals if fallback == "diagonal" else [None] * len(model.rest)):
            direction[i] = _fallback(g_leaves[i], d, damping_value)

        finite = accepted & all_finite(direction)
        if nonfinite == "raise":
            direction = [eqx.error_if(d, ~finite, "kfac: non-finite gradient, statistics or direction")
                         for d in direction]
        else:
            direction = [jnp.where(finite, d, 0.0) for d in direction]
            solver_states = keep_where(finite, solver_states, state.solver_states)

        layer_works = [refreshed.then(applied) for refreshed, applied in zip(refresh_works, apply_works)]
        new_state = KFACState(
            count=state.count + 1,
            key=next_key,
            factors=pairs,
            diagonals=diagonals,
            curvature_updates=curvature_updates,
            inverses=inverses,
            solver_states=solver_states,
            work=curvature_work.then(parallel(layer_works)),
            skipped=state.skipped + (~finite).astype(jnp.int32),
        )
        return jax.tree_util.tree_unflatten(treedef, direction), new_state

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)
