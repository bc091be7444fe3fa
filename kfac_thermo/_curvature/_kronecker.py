r"""K-FAC's view of a model: one Kronecker block per layer found in its jaxpr, a fallback block for the rest leaves.

A layer ``y = op(x, W) + b`` (dense product, convolution, or a :func:`register_dense` mark; see
:class:`LayerTap` and the glossary of ``kfac_thermo._model``) sees its weight as a matrix ``W`` (n_out x n_in)
acting on inputs ``a`` (n_in: a layer input, or a convolution patch) at every position (token, pixel). The bias is folded in as one more input
column fed by a constant 1 (homogeneous coordinates), so the block covers ``[W | b]`` (n_out x (n_in + 1)) and its
curvature is approximated by ``A (x) S`` with (b examples, T positions, m output directions per example)

    A = (1 / (b T)) sum_{i,t} a_it a_it^T,        S = (1 / b) sum_{i,k,t} s_ikt s_ikt^T,

``s_ikt`` the derivative of output direction ``k`` of example ``i`` with respect to the layer output at ``t``
(Grosse & Martens 2016's convention for weight sharing over positions: inputs averaged, output derivatives
summed over positions). For one position and the MSE loss of a single dense layer this is the GGN block exactly.

Parameters in no such layer get a fallback block: "diagonal" (the diagonal of the curvature, from per-example
Jacobian rows) or "identity" (unit curvature: the update is ``g / (1 + damping)``, as kfac-jax's scaled identity).
"""

from __future__ import annotations

import math
from typing import Callable, Literal, NamedTuple

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, PyTree

from .._model import LayerTap, TappedModel
from .._predict import check_predict_fn

Fallback = Literal["diagonal", "identity"]
FALLBACKS = ("diagonal", "identity")


class ParameterBlock(NamedTuple):
    """One parameter leaf of :func:`kfac_blocks`: its path, shape and curvature block."""

    path: str
    shape: tuple[int, ...]
    block: str


class BlockTable(tuple):
    """The :class:`ParameterBlock` of every leaf (:func:`kfac_blocks`); ``str()`` prints them as a table."""

    def __str__(self) -> str:
        width = max([len("parameter")] + [len(entry.path) for entry in self])
        lines = [f"{'parameter':<{width}}  {'shape':<16}  block"]
        lines += [f"{entry.path:<{width}}  {str(entry.shape):<16}  {entry.block}" for entry in self]
        return "\n".join(lines)


def _first_example(inputs: PyTree) -> PyTree:
    return jax.tree_util.tree_map(lambda leaf: jax.ShapeDtypeStruct(jnp.shape(leaf)[1:], jnp.result_type(leaf)), inputs)


class KFACModel:
    """The K-FAC blocks of ``predict_fn`` at ``params`` for inputs shaped like ``example_inputs`` (with batch axis).

    Raises ValueError when no layer can be Kronecker-factored, listing each parameter and what reads it.
    """

    def __init__(self, predict_fn: Callable, params: PyTree, example_inputs: PyTree, fallback: Fallback):
        if fallback not in FALLBACKS:
            raise ValueError(f"unknown fallback {fallback!r}; choose one of {FALLBACKS}")
        self.fallback = fallback
        self.tapped = TappedModel(predict_fn, params, _first_example(example_inputs))
        self.layers: list[LayerTap] = self.tapped.layers
        self.shapes = self.tapped.shapes
        if not self.layers:
            uses = self.tapped.uses()
            found = "; ".join(f"{path} {shape}: {', '.join(use) or 'unused'}"
                              for path, shape, use in zip(self.tapped.paths, self.shapes, uses))
            raise ValueError(
                "kfac: predict_fn has no layer K-FAC can factor (a dot_general or conv_general_dilated with a "
                "parameter operand used nowhere else, or a kfac_thermo.register_dense mark, at the top level of "
                f"the traced model). Parameters and the operations reading them: {found}"
            )
        self.rest = self.tapped.rest

    def dims(self, layer: LayerTap) -> tuple[int, int]:
        """``(n_out, n_in)`` of the block, the bias column included in n_in."""
        shape = self.shapes[layer.weight]
        n_out = math.prod(shape[d] for d in layer.weight_out)
        n_in = math.prod(shape[d] for d in layer.weight_in)
        return n_out, n_in + (layer.bias is not None)

    # ---------------------------------------------------------------------------- parameters <-> layer matrices

    def to_matrices(self, leaves: list[Array]) -> list[Float[Array, "out in"]]:
        """Each layer's layer matrix ``[W | b]`` from the (gradient) leaves (:meth:`TappedModel.to_matrices`)."""
        return self.tapped.to_matrices(leaves)[0]

    def from_matrices(self, matrices: list[Array], leaves: list[Array]) -> list[Array]:
        """``leaves`` with every layer's weight and bias replaced by the entries of its layer matrix."""
        matrices = [M.astype(leaves[layer.weight].dtype) for layer, M in zip(self.layers, matrices)]
        return self.tapped.from_matrices(matrices, [leaves[i] for i in self.rest], leaves)

    # ---------------------------------------------------------------------------------------------- table

    def table(self) -> BlockTable:
        """The curvature block of every parameter leaf."""
        blocks = {}
        paths = self.tapped.paths
        for layer in self.layers:
            n_out, n_in = self.dims(layer)
            bias = "" if layer.bias is None else f" + bias {paths[layer.bias]}"
            blocks[layer.weight] = f"kronecker {layer.kind}: S {n_out}x{n_out} (outputs) x A {n_in}x{n_in} (inputs{bias})"
            if layer.bias is not None:
                blocks[layer.bias] = f"kronecker: bias column of {paths[layer.weight]}"
        for i in self.rest:
            blocks[i] = self.fallback
        return BlockTable(ParameterBlock(path, shape, blocks[i]) for i, (path, shape) in enumerate(zip(paths, self.shapes)))


def kfac_blocks(predict_fn: Callable, params: PyTree, example_inputs: PyTree, *,
                fallback: Fallback = "diagonal") -> BlockTable:
    """Which curvature block K-FAC gives each parameter of ``predict_fn`` (``print`` it for a table).

    Args:
        predict_fn: ``predict_fn(params, inputs) -> outputs`` over a batch.
        params: the parameter pytree.
        example_inputs: a batch of inputs (arrays or ``jax.ShapeDtypeStruct`` with the batch axis first).
        fallback: the block of parameters outside every factored layer: "diagonal" or "identity".
    """
    check_predict_fn(predict_fn)
    return KFACModel(predict_fn, params, example_inputs, fallback).table()
