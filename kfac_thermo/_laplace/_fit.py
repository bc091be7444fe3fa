r"""The curvature of a whole dataset at the trained parameters, as the blocks of each Laplace structure.

The posterior precision is ``P = sum_i J_i^T H_i J_i + delta I`` over the ``n_data`` training examples (the GGN
of the summed loss; ``H_i = L_i L_i^T`` the loss Hessian in the outputs, ``J_i`` the output Jacobian). The data
given may be a subset of the training set: its sum is then scaled by ``n_data / n`` (an unbiased estimate). The
structures (Daxberger et al. 2021, "Laplace Redux"):

- ``"full"``: every parameter, the GGN exactly: dense (one n x n ``eigh``) when the data's ``n m`` Jacobian rows
  (m = the loss Hessian's rank per example) outnumber the parameters, else low-rank ``W W^T`` with the rows as
  ``W`` (Woodbury: one ``eigh`` of the ``n m`` x ``n m`` Gram);
- ``"kfac"``: per layer K-FAC's ``S (x) A`` (K-FAC's own factors, ``kfac_thermo``'s Kronecker statistics), the
  parameters in no layer by their exact GGN diagonal;
- ``"diag"``: the exact GGN diagonal;
- ``"last_layer"``: the exact GGN of one layer's ``[W | b]`` (the last in program order unless named), the other
  parameters held at their trained values.

Each structure maps parameters to its blocks' coordinates with a :class:`Layout` (linear, a permutation of the
covered entries).
"""

from __future__ import annotations

import math
from typing import Callable, Literal

import jax
import jax.numpy as jnp
from jax.flatten_util import ravel_pytree
from jaxtyping import Array, Float, PyTree

from .._curvature import BatchCurvature, KFACModel, batch_statistics, factors
from .._losses import Loss
from .._model import TappedModel
from .._model._jacobian import explicit_jacobian
from ._blocks import DenseBlock, DiagonalBlock, KroneckerBlock, LowRankBlock, PrecisionBlock

Structure = Literal["full", "kfac", "diag", "last_layer"]
STRUCTURES = ("full", "kfac", "diag", "last_layer")


class Layout:
    """Parameters <-> the blocks' coordinate vectors: ``split`` (linear) and ``merge`` (its transpose: the inverse on
    the covered entries, zeros elsewhere)."""

    def __init__(self, split: Callable[[PyTree], list[Array]], like: PyTree):
        self._split, self.like = split, jax.tree_util.tree_map(
            lambda leaf: jax.ShapeDtypeStruct(jnp.shape(leaf), jnp.result_type(leaf)), like)

    def split(self, tree: PyTree) -> list[Float[Array, " n_b"]]:
        return self._split(tree)

    def merge(self, vectors: list[Float[Array, " n_b"]]) -> PyTree:
        (tree,) = jax.linear_transpose(self._split, self.like)(list(vectors))
        return tree


def flat_layout(params: PyTree) -> Layout:
    """One block over every parameter, in ``ravel_pytree``'s order."""
    return Layout(lambda tree: [ravel_pytree(tree)[0]], params)


def layer_layout(tapped: TappedModel, layers: list[int], rest: bool, params: PyTree) -> Layout:
    """One block per chosen layer (its ``[W | b]`` matrix, row-major) and, with ``rest``, one per rest leaf."""
    treedef = jax.tree_util.tree_structure(params)

    def split(tree):
        leaves = treedef.flatten_up_to(tree)
        matrices, rest_leaves = tapped.to_matrices(leaves)
        out = [matrices[i].reshape(-1) for i in layers]
        return out + ([leaf.reshape(-1) for leaf in rest_leaves] if rest else [])

    return Layout(split, params)


def batches(inputs: PyTree, targets: Array, batch_size: int):
    """Consecutive ``(inputs, targets)`` batches of at most ``batch_size`` examples."""
    n = jax.tree_util.tree_leaves(inputs)[0].shape[0]
    for start in range(0, n, batch_size):
        stop = min(n, start + batch_size)
        yield jax.tree_util.tree_map(lambda leaf: leaf[start:stop], inputs), targets[start:stop]


def _curvature(predict_fn, loss, params, inputs, targets) -> BatchCurvature:
    return BatchCurvature("ggn", predict_fn, loss, params, inputs, targets, key=None)


def _rows(predict_fn, loss, params, inputs, targets) -> Float[Array, "N bm"]:
    """The Jacobian rows ``J_i^T L_ik`` of a batch as the columns of an (N, b m) matrix."""
    b = jax.tree_util.tree_leaves(inputs)[0].shape[0]
    return _curvature(predict_fn, loss, params, inputs, targets).factor() * jnp.sqrt(b)


def directions_per_example(predict_fn, loss: Loss, params, inputs, targets) -> int:
    """m: the loss Hessian factor's columns for one example (dz, or dz - 1 for softmax cross-entropy)."""
    z = jax.eval_shape(predict_fn, params, jax.tree_util.tree_map(lambda leaf: leaf[:1], inputs))
    return jax.eval_shape(loss.hessian_factor, jax.ShapeDtypeStruct(z.shape[1:], z.dtype),
                          jax.ShapeDtypeStruct(targets.shape[1:], targets.dtype)).shape[-1]


def full_blocks(predict_fn, loss, params, inputs, targets, scale: float, batch_size: int) -> list[PrecisionBlock]:
    """The exact GGN: dense when the rows ``n m`` reach the parameters N, else the rows as a low-rank factor."""
    rows = jax.jit(lambda p, x, y: _rows(predict_fn, loss, p, x, y))
    N = ravel_pytree(params)[0].shape[0]
    n = jax.tree_util.tree_leaves(inputs)[0].shape[0]
    if n * directions_per_example(predict_fn, loss, params, inputs, targets) >= N:
        G = 0.0
        for x, y in batches(inputs, targets, batch_size):
            W = rows(params, x, y)
            G = G + W @ W.T
        return [DenseBlock.from_matrix(scale * G)]
    W = jnp.concatenate([rows(params, x, y) for x, y in batches(inputs, targets, batch_size)], axis=1)
    return [LowRankBlock.from_factor(math.sqrt(scale) * W)]


def diagonal_blocks(predict_fn, loss, params, inputs, targets, scale: float, batch_size: int) -> list[PrecisionBlock]:
    """The exact GGN diagonal ``sum_{i,k} (J_i^T L_ik)^2``."""
    squares = jax.jit(lambda p, x, y: jnp.sum(_rows(predict_fn, loss, p, x, y) ** 2, axis=1))
    d = sum(squares(params, x, y) for x, y in batches(inputs, targets, batch_size))
    return [DiagonalBlock(scale * d)]


def kronecker_blocks(predict_fn, loss, params, inputs, targets, scale: float, batch_size: int):
    """K-FAC's factors over the data (each the example-weighted mean of the batches' ``A`` and ``S``), times the
    number of examples: ``sum_i J_i^T H_i J_i ~ n (S (x) A)`` per layer; the rest leaves' exact GGN diagonal."""
    model = KFACModel(predict_fn, params, inputs, "diagonal")

    @jax.jit
    def batch_factors(p, x, y):
        A, S, D = factors(model, batch_statistics(model, p, x, y, "ggn", loss, None))
        b = jax.tree_util.tree_leaves(x)[0].shape[0]
        return [a * b for a in A], [s * b for s in S], [d * b for d in D]

    totals = None
    for x, y in batches(inputs, targets, batch_size):
        sums = batch_factors(params, x, y)
        totals = sums if totals is None else jax.tree_util.tree_map(jnp.add, totals, sums)
    A, S, D = totals
    n = jax.tree_util.tree_leaves(inputs)[0].shape[0]
    blocks = [KroneckerBlock.from_factors(scale * s, a / n) for a, s in zip(A, S)]
    blocks += [DiagonalBlock(scale * d.reshape(-1)) for d in D]
    layout = layer_layout(model.tapped, list(range(len(model.layers))), True, params)
    return blocks, layout


def last_layer_index(tapped: TappedModel, name: str | None) -> int:
    """The layer whose weight leaf has path ``name`` (the last layer in program order when None)."""
    if not tapped.layers:
        raise ValueError("laplace: structure='last_layer' needs a layer (a dense product or convolution with a "
                         "parameter weight) in predict_fn; none was found")
    if name is None:
        return len(tapped.layers) - 1
    weights = [tapped.paths[layer.weight] for layer in tapped.layers]
    if name not in weights:
        raise ValueError(f"laplace: last_layer={name!r} is not the weight of a layer the curvature covers; "
                         f"the layers' weights are {weights}")
    return weights.index(name)


def last_layer_blocks(predict_fn, loss, params, inputs, targets, scale: float, batch_size: int,
                      name: str | None):
    """The exact GGN of one layer's ``[W | b]``: ``sum_{i,k} vec(J_ik) vec(J_ik)^T`` from its Jacobian rows."""
    example = jax.tree_util.tree_map(lambda leaf: leaf[0], inputs)
    tapped = TappedModel(predict_fn, params, example)
    index = last_layer_index(tapped, name)

    @jax.jit
    def batch_gram(p, x, y):
        rows = _curvature(predict_fn, loss, p, x, y).jacobian_rows()
        layer = rows.layers[index]
        J = layer[0] if len(layer) == 1 else explicit_jacobian(*layer)
        J = J.reshape(J.shape[0], -1)
        b = jax.tree_util.tree_leaves(x)[0].shape[0]
        return b * (J.T @ J)

    G = sum(batch_gram(params, x, y) for x, y in batches(inputs, targets, batch_size))
    return [DenseBlock.from_matrix(scale * G)], layer_layout(tapped, [index], False, params)
