r"""K-FAC's statistics: layer inputs and output derivatives of a batch, and the factors they give.

The model runs once, with zero probes added to every factored layer's output (:class:`TappedModel`); the
probes' cotangents are the output derivatives. For output cotangents ``R[:, :, k]`` (b x dz each) one reverse
pass gives ``s_ik`` for all examples; the curvature kinds differ only in ``R`` (see ``_directions.py``):

- ``"ggn"``: the columns of ``L_i`` with ``L_i L_i^T`` the loss Hessian in the outputs (m = dz, or dz - 1 for
  softmax cross-entropy), so ``sum_k s_ik s_ik^T`` is the GGN's output-side factor;
- ``"mc_fisher"``: the loss gradient at a target sampled from the model (m = 1);
- ``"ggn_curvature_prop"``: ``L_i v_i`` with a Rademacher vector ``v_i`` (m = 1): unbiased GGN factors;
- ``"empirical_fisher"``: the loss gradient at the data (m = 1): the derivatives the gradient's own reverse pass
  computes, so :func:`loss_grads_and_statistics` gets them at no extra model call.

Fallback ("diagonal") parameters are given per-example copies, so the same reverse passes return their
per-example Jacobian rows ``J_i^T R_ik``; the diagonal curvature is ``(1/b) sum_{i,k} rows^2``.
"""

from __future__ import annotations

from typing import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, PRNGKeyArray, PyTree

from .._losses import Loss, LossSpec, as_loss
from .._model import layer_inputs, output_derivatives
from .._predict import check_predict_fn
from .._work import Work, digital
from ._directions import CurvatureKind, check_curvature, output_directions
from ._kronecker import Fallback, KFACModel


class LayerStatistics(eqx.Module):
    """Per-example layer inputs and output derivatives of one batch, before reduction to factors.

    Attributes:
        inputs: per factored layer, its input operand for every example, (b, ...).
        deltas: per factored layer, output derivatives (m, b, ...), one slice per output direction.
        rows: per fallback leaf (diagonal fallback only), its per-example Jacobian rows (m, b, *leaf shape).
        work: the model passes spent beyond the gradient's forward and reverse pass (:class:`kfac_thermo.Work`).
        curvature: the curvature kind the deltas estimate.
    """

    inputs: tuple[Array, ...]
    deltas: tuple[Array, ...]
    rows: tuple[Array, ...]
    work: Work
    curvature: str = eqx.field(static=True)


def _forward(model: KFACModel, leaves: list[Array], inputs: PyTree):
    """``(f, shared, own, probes, per_example)`` (:meth:`TappedModel.batched`): the fallback leaves (diagonal
    fallback) given per example, the other leaves shared."""
    per_example = model.rest if model.fallback == "diagonal" else []
    return (*model.tapped.batched(leaves, inputs, per_example), per_example)


def _passes(forward: int, reverse: int, z: Array, leaves: list[Array]) -> Work:
    """``forward`` and ``reverse`` passes of the model over the batch of outputs ``z``."""
    return digital(forward_passes=forward, reverse_passes=reverse, examples=z.shape[0],
                   params=sum(leaf.size for leaf in leaves))


def _directions(curvature: str, loss: Loss, z: Array, targets: Array, key) -> Float[Array, "m b dz"]:
    """The output cotangents ``R`` of each curvature kind (:func:`output_directions`), direction axis first."""
    return jnp.moveaxis(output_directions(curvature, loss, z, targets, key), 2, 0)


def batch_statistics(model: KFACModel, params: PyTree, inputs: PyTree, targets: Array, curvature: CurvatureKind,
                     loss: Loss, key: PRNGKeyArray) -> LayerStatistics:
    """The statistics of one batch: one forward pass and m reverse passes (probe and fallback cotangents only)."""
    leaves = jax.tree_util.tree_leaves(params)
    f, shared, own, probes, _ = _forward(model, leaves, inputs)
    z, vjp_fn, acts = jax.vjp(lambda own, probes: f(shared, own, probes), own, probes, has_aux=True)
    R = _directions(curvature, loss, z, targets, key)
    rows, deltas = jax.vmap(vjp_fn)(R)
    return LayerStatistics(tuple(acts), tuple(deltas), tuple(rows), _passes(1, R.shape[0], z, leaves), curvature)


def loss_grads_and_statistics(
    predict_fn: Callable,
    loss: LossSpec,
    example_inputs: PyTree,
    *,
    curvature: CurvatureKind = "ggn",
    fallback: Fallback = "diagonal",
) -> Callable[..., tuple[Float[Array, ""], PyTree, LayerStatistics]]:
    r"""``f(params, batch, key=None) -> (loss, grads, statistics)``: the K-FAC statistics in the gradient's pass.

    The batch loss (mean of the per-example ``loss``) and its gradient come from one forward and one reverse
    pass through the tapped model, whose probe cotangents are the empirical-Fisher output derivatives (scaled by
    ``1/b``): with ``curvature="empirical_fisher"`` the statistics cost no extra model call. "mc_fisher" and
    "ggn_curvature_prop" add one reverse pass (they need ``key``), "ggn" adds m (the loss Hessian's rank), all from
    the same forward pass.
    Pass the result to the optimizer as ``update(grads, state, params, batch=batch, statistics=statistics)``;
    it is used on curvature-refresh steps only. ``curvature`` and ``fallback`` must match the optimizer's.

    Args:
        predict_fn: ``predict_fn(params, inputs) -> outputs`` over a batch.
        loss: a :class:`kfac_thermo.Loss`, "softmax_cross_entropy", "mse" or a per-example callable
            ``(outputs, targets) -> scalar``.
        example_inputs: a batch of inputs (or shape structs) fixing the per-example input shape.
        curvature: "ggn", "empirical_fisher", "mc_fisher" or "ggn_curvature_prop".
        fallback: "diagonal" or "identity", as given to the optimizer.
    """
    loss_fn = as_loss(loss)
    check_predict_fn(predict_fn)
    check_curvature(curvature, key_now=False)

    def value_grads_statistics(params, batch, key=None):
        inputs, targets = batch
        targets = jnp.asarray(targets)
        check_curvature(curvature, key)
        model = KFACModel(predict_fn, params, example_inputs, fallback)
        leaves, treedef = jax.tree_util.tree_flatten(params)
        f, shared, own, probes, per_example = _forward(model, leaves, inputs)
        shared_index = [i for i in range(len(leaves)) if i not in per_example]
        z, vjp_fn, acts = jax.vjp(f, shared, own, probes, has_aux=True)
        b = z.shape[0]
        value, gz = jax.value_and_grad(lambda z: jnp.mean(jax.vmap(loss_fn)(z, targets)))(z)
        g_shared, g_own, g_probes = vjp_fn(gz)
        grads = list(leaves)
        for i, g in zip(shared_index, g_shared):
            grads[i] = g
        for i, g in zip(per_example, g_own):
            grads[i] = jnp.sum(g, axis=0)
        if curvature == "empirical_fisher":
            rows, deltas, extra = [b * g[None] for g in g_own], [b * g[None] for g in g_probes], 0
        else:
            R = _directions(curvature, loss_fn, z, targets, key)
            _, rows, deltas = jax.vmap(vjp_fn)(R)
            extra = R.shape[0]
        statistics = LayerStatistics(tuple(acts), tuple(deltas), tuple(rows), _passes(0, extra, z, leaves),
                                     curvature)
        return value, jax.tree_util.tree_unflatten(treedef, grads), statistics

    return value_grads_statistics


_GRAM_BLOCK = 192


def gram(X: Float[Array, "r n"]) -> Float[Array, "n n"]:
    """``X^T X`` from the products of column blocks ``X_i^T X_j`` on and below the block diagonal, mirrored above
    it (BLAS syrk's saving): with ``k`` blocks of at most ``_GRAM_BLOCK`` columns, ``(k + 1) / 2k`` of the plain
    product's flops. Each block is the plain product's block (the same sums)."""
    n = X.shape[1]
    k = -(-n // _GRAM_BLOCK)
    if k == 1:
        return X.T @ X
    edges = [round(i * n / k) for i in range(k + 1)]
    columns = [X[:, start:stop] for start, stop in zip(edges[:-1], edges[1:])]
    lower = {(i, j): columns[i].T @ columns[j] for i in range(k) for j in range(i + 1)}
    return jnp.block([[lower[i, j] if j <= i else lower[j, i].T for j in range(k)] for i in range(k)])


def _samples(x: Float[Array, "... n T"]) -> Float[Array, "r n"]:
    """The vectors ``x[..., :, t]`` stacked as the rows of a matrix (a reshape when T = 1)."""
    return jnp.swapaxes(x, -1, -2).reshape(-1, x.shape[-2])


def factors(model: KFACModel, statistics: LayerStatistics) -> tuple[list, list, list]:
    """``(A, S, D)``: per layer the input and output factors, per fallback leaf its diagonal curvature (empty for
    the identity fallback). Definitions in ``_kronecker.py``; ``a`` and ``s`` from :func:`layer_inputs` and
    :func:`output_derivatives`."""
    A, S = [], []
    for layer, act, delta in zip(model.layers, statistics.inputs, statistics.deltas):
        a = layer_inputs(layer, act, model.shapes[layer.weight])  # (b, n_in, T)
        s = output_derivatives(layer, delta)  # (m, b, n_out, T)
        b, T = a.shape[0], a.shape[2]
        A.append(gram(_samples(a)) / (b * T))
        S.append(gram(_samples(s)) / b)
    b = jax.tree_util.tree_leaves(statistics.inputs)[0].shape[0]
    D = [jnp.sum(r * r, axis=(0, 1)) / b for r in statistics.rows]
    return A, S, D
