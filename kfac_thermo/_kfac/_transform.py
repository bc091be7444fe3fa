r"""K-FAC as an optax transformation: ``scale_by_kfac`` for any block solver, ``kfac`` and ``thermo_kfac``.

Per step ``k`` (counting skipped steps), with the batch given as ``update(..., batch=(inputs, targets))``:

1. every ``curvature_period`` steps: the batch's factors (``kfac_thermo._curvature``) enter exponential moving averages
   ``F <- ema_decay F + (1 - ema_decay) F_batch`` (the first refresh takes ``F_batch`` as it is);
2. every ``inverse_period`` steps: the block solver refreshes its state from the averaged factors (digital
   inverses / eigendecompositions, or programming the analog device);
3. every step: each layer's gradient block ``[W | b]`` is replaced by the solver's ``(A (x) S + damping)^-1``
   applied to it; fallback parameters are divided by ``D + damping`` (diagonal) or ``1 + damping`` (identity).

Periodic work runs under ``lax.cond`` on the step counter in the state (a period of 1 has no cond), so a whole
train step jits once. The update has the pytree structure of the gradient.
"""

from __future__ import annotations

import math
from typing import Callable, NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import optax
from jax.sharding import Mesh
from jaxtyping import Array, Float, PRNGKeyArray, PyTree

from .._common import NonFinitePolicy, all_finite, batch_of, check_damping, check_transform, needs_key, periodic
from .._curvature import CurvatureKind, Fallback, KFACModel, LayerStatistics, batch_statistics, factors
from .._kfac_solvers import AbstractKroneckerSolver, BlockWork, ThermoKronecker, block_work
from .._losses import LossSpec
from .._parallel import axis_size, distribute


class KFACState(NamedTuple):
    """State of :func:`scale_by_kfac`.

    Attributes:
        count: steps taken (skipped ones included); drives the refresh periods.
        key: PRNG key (Monte-Carlo targets, device noise), split every step.
        factors: per layer ``(A, S)``, exponential moving averages.
        diagonals: per fallback leaf its averaged diagonal curvature (empty for the identity fallback).
        curvature_updates: factor refreshes so far (the first one replaces the zero initial factors).
        inverses: per layer the block solver's state (inverses, eigendecompositions, programmed drifts).
        modeled_time_s: modeled hardware seconds of the last step: host flops (model calls at ``2 b N`` each,
            statistics, digital inverses and products) at ``host_flops_per_s``, plus the device's transfers
            (summed over layers: one link) and analog run time (maximum over layers: one solver per layer).
        model_calls: model calls of the last step (the gradient's one included).
        skipped: steps skipped because the gradient, the statistics or the direction was not finite.
    """

    count: Array
    key: PRNGKeyArray
    factors: tuple
    diagonals: tuple
    curvature_updates: Array
    inverses: tuple
    modeled_time_s: Float[Array, ""]
    model_calls: Float[Array, ""]
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


def _combine(works: list[BlockWork]) -> BlockWork:
    """Layers on separate solvers: flops and transfers add up, analog run times overlap (maximum)."""
    if not works:
        return block_work()
    return BlockWork(sum(w.host_flops for w in works), sum(w.transfer_s for w in works),
                     jnp.max(jnp.stack([w.analog_s for w in works])))


def scale_by_kfac(
    solver: AbstractKroneckerSolver,
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
    host_flops_per_s: float = 1e13,
    mesh: Mesh | None = None,
    solver_axis: str = "data",
) -> optax.GradientTransformationExtraArgs:
    r"""Precondition the gradient with K-FAC's block-diagonal Kronecker curvature (module docstring).

    ``update(updates, state, params, *, batch=(inputs, targets), statistics=None)``: ``statistics`` from
    :func:`loss_grads_and_statistics` (same params and batch) replace the optimizer's own statistics pass.

    Args:
        solver: the block solver: ``DigitalKronecker`` or ``ThermoKronecker`` (``_kfac_solvers.py``).
        predict_fn: ``predict_fn(params, inputs) -> outputs`` of shape (batch, dz).
        loss: "softmax_cross_entropy", "mse" or a per-example callable ``(outputs, targets) -> scalar``.
        damping: ``lambda > 0`` (may be injected); it takes effect at the next inverse refresh.
        example_inputs: a batch of inputs (arrays or shape structs, batch axis first): ``init`` traces the model
            on one example to find its layers and size the factors. Batches must match its per-example shape.
        curvature: "ggn", "empirical_fisher", "mc_fisher" or "ggn_curvature_prop" (output derivatives, see
            ``kfac_thermo._curvature._statistics``).
        ema_decay: in [0, 1): weight of the old factors at each curvature refresh (may be injected).
        curvature_period: refresh the factors every this many steps (static int >= 1).
        inverse_period: refresh the solver's inverses every this many steps (static int >= 1).
        fallback: block of parameters in no factored layer: "diagonal" or "identity".
        key: PRNG key for sampled curvature estimates and device noise (required for "mc_fisher",
            "ggn_curvature_prop" and noisy devices).
        nonfinite: "skip" makes the update zero when the gradient, the statistics or the direction is not finite
            and counts it in ``state.skipped``; factors and inverses are only replaced by finite ones computed
            from a finite gradient's step. "raise" fails at run time instead.
        host_flops_per_s: host throughput for the modeled time of the digital work.
        mesh: with ``solver_axis``, spread the per-layer refreshes and applications over that axis's devices
            (layer ``i`` on device ``i mod n``: one solver per device; ``kfac_thermo.distribute``), for a train step
            jit-compiled on this mesh with replicated optimizer state. The result is the same as without.
        solver_axis: the mesh axis the layers are spread over (the data axis in data-parallel training).
    """
    loss_fn, damping = check_transform(predict_fn=predict_fn, loss=loss, damping=damping, curvature=curvature,
                                       key=key, nonfinite=nonfinite)
    curvature_period = _check_period("curvature_period", curvature_period)
    inverse_period = _check_period("inverse_period", inverse_period)
    ema_decay = _check_decay(ema_decay)
    if isinstance(solver, ThermoKronecker):
        needs_key(solver.device, key)
    name = "kfac"
    if mesh is None:
        per_layer = lambda fns, operands: [fn(operand) for fn, operand in zip(fns, operands)]
    else:
        axis_size(mesh, solver_axis)  # fails early, naming the mesh's axes
        per_layer = lambda fns, operands: distribute(fns, operands, mesh, solver_axis)

    def init_fn(params):
        model = KFACModel(predict_fn, params, example_inputs, fallback)
        leaves = jax.tree_util.tree_leaves(params)
        blocks, inverses = [], []
        for index, layer in enumerate(model.layers):
            n_out, n_in = model.dims(layer)
            dtype = jnp.result_type(leaves[layer.weight])
            blocks.append((jnp.zeros((n_in, n_in), dtype), jnp.zeros((n_out, n_out), dtype)))
            inverses.append(solver.for_layer(index).init(n_out, n_in, dtype))
        return KFACState(
            count=jnp.zeros([], jnp.int32),
            key=jr.key(0) if key is None else jnp.copy(key),  # a copy: a donated state must not delete the caller's key
            factors=tuple(blocks),
            diagonals=tuple(jnp.zeros_like(leaves[i]) for i in model.rest) if fallback == "diagonal" else (),
            curvature_updates=jnp.zeros([], jnp.int32),
            inverses=tuple(inverses),
            modeled_time_s=jnp.zeros([], jnp.float32),
            model_calls=jnp.zeros([], jnp.float32),
            skipped=jnp.zeros([], jnp.int32),
        )

    def update_fn(updates, state, params=None, *, batch=None, statistics=None, **extra_args):
        del extra_args
        inputs, targets = batch_of(name, predict_fn, loss_fn, params, batch)
        model = KFACModel(predict_fn, params, inputs, fallback)
        shapes = [(A.shape[0], S.shape[0]) for A, S in state.factors]
        if shapes != [model.dims(layer)[::-1] for layer in model.layers]:
            raise ValueError(f"{name}: the batch's layers {[model.dims(l)[::-1] for l in model.layers]} differ from "
                             f"those found at init {shapes}: inputs must have example_inputs' per-example shape")
        num_rows = len(model.rest) if fallback == "diagonal" else 0
        if statistics is not None and (not isinstance(statistics, LayerStatistics) or statistics.curvature != curvature
                                       or len(statistics.inputs) != len(model.layers)
                                       or len(statistics.rows) != num_rows):
            raise ValueError(f"{name}: statistics must come from loss_grads_and_statistics with curvature="
                             f"{curvature!r} and fallback={fallback!r} for this model")
        damping_value = check_damping(damping)
        decay = _check_decay(ema_decay)
        solvers = [solver.for_layer(i) for i in range(len(model.layers))]
        key_stats, key_refresh, key_apply, next_key = jr.split(state.key, 4)
        g_leaves, treedef = jax.tree_util.tree_flatten(updates)
        g_finite = all_finite(g_leaves)
        g_leaves = [jnp.where(g_finite, g, 0.0) for g in g_leaves]
        batch_size = targets.shape[0]

        # 1. Curvature statistics. Non-finite ones (or a non-finite gradient) leave the factors as they were.
        def refresh_curvature(operand):
            stats = statistics if statistics is not None else batch_statistics(
                model, params, inputs, targets, curvature, loss_fn, key_stats)
            A, S, D = factors(model, stats)
            blocks, diagonals, n = operand
            weight = jnp.where(n == 0, 1.0, 1.0 - decay)
            ema = lambda old, new: (old + weight * (new - old)).astype(old.dtype)
            new = (tuple((ema(a0, a), ema(s0, s)) for (a0, s0), a, s in zip(blocks, A, S)),
                   tuple(ema(d0, d) for d0, d in zip(diagonals, D)), n + 1)
            ok = g_finite & all_finite(new[:2])
            new = jax.tree_util.tree_map(lambda new, old: jnp.where(ok, new, old), new, operand)
            return new, (stats.model_calls, _stats_flops(model, stats)), ok

        def keep_curvature(operand):
            return operand, (jnp.zeros([], jnp.float32), jnp.zeros([], jnp.float32)), jnp.asarray(True)

        (blocks, diagonals, curvature_updates), (stats_calls, stats_flops), stats_ok = periodic(
            curvature_period, state.count, refresh_curvature, keep_curvature,
            (state.factors, state.diagonals, state.curvature_updates))
        accepted = g_finite & stats_ok

        # 2. Inverses, from the accepted factors; a non-finite refresh keeps the previous ones.
        def refresh_inverses(blocks):
            keys = jr.split(key_refresh, len(blocks))
            results = per_layer([lambda op, s=s: s.refresh(*op) for s in solvers],
                                [(A, S, damping_value, k) for (A, S), k in zip(blocks, keys)])
            new = tuple(r[0] for r in results)
            ok = accepted & all_finite(new)
            return (jax.tree_util.tree_map(lambda new, old: jnp.where(ok, new, old), new, state.inverses),
                    tuple(r[1] for r in results))

        def keep_inverses(blocks):
            return state.inverses, tuple(block_work() for _ in blocks)

        inverses, refresh_works = periodic(inverse_period, state.count, refresh_inverses, keep_inverses, blocks)

        # 3. Directions.
        G = model.to_matrices(g_leaves)
        keys = jr.split(key_apply, len(G))
        applied = per_layer([lambda op, s=s: s.apply(*op) for s in solvers], list(zip(inverses, G, keys)))
        direction = model.from_matrices([a[0] for a in applied], g_leaves)
        for i, d in zip(model.rest, diagonals if fallback == "diagonal" else [None] * len(model.rest)):
            curvature_i = 1.0 if d is None else d
            direction[i] = (g_leaves[i] / (curvature_i + damping_value)).astype(g_leaves[i].dtype)

        finite = accepted & all_finite(direction)
        if nonfinite == "raise":
            direction = [eqx.error_if(d, ~finite, "kfac: non-finite gradient, statistics or direction")
                         for d in direction]
        else:
            direction = [jnp.where(finite, d, 0.0) for d in direction]

        work = _combine([BlockWork(*(r + a for r, a in zip(refresh, apply[1])))
                         for refresh, apply in zip(refresh_works, applied)])
        model_calls = 1.0 + stats_calls
        num_params = sum(g.size for g in g_leaves)
        host_s = (model_calls * 2.0 * batch_size * num_params + stats_flops + work.host_flops) / host_flops_per_s
        new_state = KFACState(
            count=state.count + 1,
            key=next_key,
            factors=blocks,
            diagonals=diagonals,
            curvature_updates=curvature_updates,
            inverses=inverses,
            modeled_time_s=(host_s + work.transfer_s + work.analog_s).astype(jnp.float32),
            model_calls=jnp.asarray(model_calls, jnp.float32),
            skipped=state.skipped + (~finite).astype(jnp.int32),
        )
        return jax.tree_util.tree_unflatten(treedef, direction), new_state

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def _stats_flops(model: KFACModel, stats: LayerStatistics) -> Float[Array, ""]:
    """Flops of the factor products: ``2 b T n_in^2`` for ``A`` and ``2 m b T n_out^2`` for ``S`` per layer."""
    flops = 0.0
    for layer, act, delta in zip(model.layers, stats.inputs, stats.deltas):
        n_out, n_in = model.dims(layer)
        rows = math.prod(delta.shape) // n_out
        flops += 2.0 * rows * n_out**2 + 2.0 * (rows // delta.shape[0]) * n_in**2
    return jnp.asarray(flops, jnp.float32)
