r"""K-FAC's view of a model: one Kronecker block per layer found in its jaxpr, a fallback block for the rest.

A layer ``y = op(x, W) + b`` (dense product, convolution, or a :func:`register_dense` mark; see
:class:`LayerTap`) sees its weight as a matrix ``W`` (n_out x n_in) acting on input rows ``a`` (n_in: a
layer input, or a convolution patch) at every position (token, pixel). The bias is folded in as one more input
column fed by a constant 1 (homogeneous coordinates), so the block covers ``[W | b]`` (n_out x (n_in + 1)) and its
curvature is approximated by ``A (x) S`` with (b examples, T positions, m output directions per example)

    A = (1 / (b T)) sum_{i,t} a_it a_it^T,        S = (1 / b) sum_{i,k,t} s_ikt s_ikt^T,

``s_ikt`` the derivative of output direction ``k`` of example ``i`` with respect to the layer output at ``t``
(Grosse & Martens 2016's convention for weight sharing over positions: inputs averaged, output derivatives
summed over positions). For one position and the MSE loss of a single dense layer this is the GGN block exactly.

Parameters in no such layer get a fallback block: "diagonal" (the diagonal of the curvature, from per-example
rows) or "identity" (unit curvature: the update is ``g / (1 + damping)``, as kfac-jax's scaled identity).
"""

from __future__ import annotations

import math
from typing import Callable, Literal, NamedTuple

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, PyTree

from ._tap import LayerTap, TappedModel

Fallback = Literal["diagonal", "identity"]
FALLBACKS = ("diagonal", "identity")


class BlockRow(NamedTuple):
    """One parameter leaf of :func:`kfac_blocks`: its path, shape and curvature block."""

    path: str
    shape: tuple[int, ...]
    block: str


class BlockTable(tuple):
    """The rows of :func:`kfac_blocks`; ``str()`` prints them as a table."""

    def __str__(self) -> str:
        width = max([len("parameter")] + [len(row.path) for row in self])
        lines = [f"{'parameter':<{width}}  {'shape':<16}  block"]
        lines += [f"{row.path:<{width}}  {str(row.shape):<16}  {row.block}" for row in self]
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
        self.shapes = [tuple(jnp.shape(leaf)) for leaf in jax.tree_util.tree_leaves(params)]
        if not self.layers:
            uses = self.tapped.uses()
            found = "; ".join(f"{path} {shape}: {', '.join(use) or 'unused'}"
                              for path, shape, use in zip(self.tapped.paths, self.shapes, uses))
            raise ValueError(
                "kfac: predict_fn has no layer K-FAC can factor (a dot_general or conv_general_dilated with a "
                "parameter operand used nowhere else, or a kfac_thermo.register_dense mark, at the top level of "
                f"the traced model). Parameters and the operations reading them: {found}"
            )
        covered = {layer.weight for layer in self.layers} | {layer.bias for layer in self.layers}
        self.rest = [i for i in range(len(self.shapes)) if i not in covered]

    def dims(self, layer: LayerTap) -> tuple[int, int]:
        """``(n_out, n_in)`` of the block, the bias column included in n_in."""
        shape = self.shapes[layer.weight]
        n_out = math.prod(shape[d] for d in layer.weight_out)
        n_in = math.prod(shape[d] for d in layer.weight_in)
        return n_out, n_in + (layer.bias is not None)

    # ---------------------------------------------------------------------------------- parameters <-> blocks

    def matrices(self, leaves: list[Array]) -> list[Float[Array, "out in"]]:
        """Each layer's ``[W | b]`` from the (gradient) leaves."""
        out = []
        for layer in self.layers:
            n_out, n_in = self.dims(layer)
            W = jnp.transpose(leaves[layer.weight], layer.weight_out + layer.weight_in)
            W = W.reshape(n_out, n_in - (layer.bias is not None))
            if layer.bias is not None:
                bias = leaves[layer.bias].reshape(-1)[jnp.asarray(layer.bias_index)]
                W = jnp.concatenate([W, bias[:, None].astype(W.dtype)], axis=1)
            out.append(W)
        return out

    def unmatrices(self, matrices: list[Array], leaves: list[Array]) -> list[Array]:
        """``leaves`` with every layer's weight and bias replaced by the entries of its block matrix."""
        leaves = list(leaves)
        for layer, M in zip(self.layers, matrices):
            shape = self.shapes[layer.weight]
            order = layer.weight_out + layer.weight_in
            W = M[:, : M.shape[1] - (layer.bias is not None)].reshape([shape[d] for d in order])
            leaves[layer.weight] = jnp.transpose(W, [order.index(d) for d in range(len(shape))]).astype(
                leaves[layer.weight].dtype)
            if layer.bias is not None:
                bias = jnp.zeros(math.prod(self.shapes[layer.bias]), M.dtype).at[jnp.asarray(layer.bias_index)].set(M[:, -1])
                leaves[layer.bias] = bias.reshape(self.shapes[layer.bias]).astype(leaves[layer.bias].dtype)
        return leaves

    # ---------------------------------------------------------------------------------------- statistics

    def input_rows(self, layer: LayerTap, act: Array) -> Float[Array, "b T n_in"]:
        """The layer's input rows ``a_it`` (patches for a convolution), with the bias's constant 1 appended.

        ``act`` is the recorded operand for a batch, shape (b, *operand shape of one example)."""
        b = act.shape[0]
        if layer.kind == "conv":
            rows = _patches(layer, act, self.shapes[layer.weight])
        else:
            positions = [d for d in range(act.ndim - 1) if d not in layer.act_features]
            order = [0] + [d + 1 for d in positions] + [d + 1 for d in layer.act_features]
            rows = jnp.transpose(act, order).reshape(b, -1, math.prod(act.shape[d + 1] for d in layer.act_features))
        if layer.bias is not None:
            rows = jnp.concatenate([rows, jnp.ones(rows.shape[:2] + (1,), rows.dtype)], axis=2)
        return rows

    def delta_rows(self, layer: LayerTap, delta: Array) -> Float[Array, "m b T n_out"]:
        """The output derivatives ``s_ikt`` from the probe cotangents, shape (m, b, *output shape of one example)."""
        m, b = delta.shape[:2]
        positions = [d for d in range(delta.ndim - 2) if d not in layer.out_channels]
        order = [0, 1] + [d + 2 for d in positions] + [d + 2 for d in layer.out_channels]
        return jnp.transpose(delta, order).reshape(m, b, -1, self.dims(layer)[0])

    # ---------------------------------------------------------------------------------------------- table

    def table(self) -> BlockTable:
        rows = {}
        paths = self.tapped.paths
        for layer in self.layers:
            n_out, n_in = self.dims(layer)
            bias = "" if layer.bias is None else f" + bias {paths[layer.bias]}"
            rows[layer.weight] = f"kronecker {layer.kind}: S {n_out}x{n_out} (outputs) x A {n_in}x{n_in} (inputs{bias})"
            if layer.bias is not None:
                rows[layer.bias] = f"kronecker: bias column of {paths[layer.weight]}"
        for i in self.rest:
            rows[i] = self.fallback
        return BlockTable(BlockRow(path, shape, rows[i]) for i, (path, shape) in enumerate(zip(paths, self.shapes)))


def _patches(layer: LayerTap, act: Array, kernel_shape: tuple[int, ...]) -> Float[Array, "b T n_in"]:
    """Convolution patches as rows: features (input channel, then kernel window in the kernel's spatial order)."""
    params = layer.conv_params
    spec = params["dimension_numbers"]
    b = act.shape[0]
    # Merge the examples into the convolution's own batch axis.
    x = jnp.moveaxis(act, 0, spec.lhs_spec[0])
    shape = list(x.shape)
    x = x.reshape(shape[: spec.lhs_spec[0]] + [shape[spec.lhs_spec[0]] * shape[spec.lhs_spec[0] + 1]]
                  + shape[spec.lhs_spec[0] + 2:])
    patches = jax.lax.conv_general_dilated_patches(
        x, tuple(kernel_shape[d] for d in spec.rhs_spec[2:]), params["window_strides"], params["padding"],
        params["lhs_dilation"], params["rhs_dilation"], spec,
    )
    patches = jnp.transpose(patches, (spec.out_spec[0],) + tuple(spec.out_spec[2:]) + (spec.out_spec[1],))
    return patches.reshape(b, -1, patches.shape[-1])


def kfac_blocks(predict_fn: Callable, params: PyTree, example_inputs: PyTree, *,
                fallback: Fallback = "diagonal") -> BlockTable:
    """Which curvature block K-FAC gives each parameter of ``predict_fn`` (``print`` it for a table).

    Args:
        predict_fn: ``predict_fn(params, inputs) -> outputs`` over a batch.
        params: the parameter pytree.
        example_inputs: a batch of inputs (arrays or ``jax.ShapeDtypeStruct`` with the batch axis first).
        fallback: the block of parameters outside every factored layer: "diagonal" or "identity".
    """
    return KFACModel(predict_fn, params, example_inputs, fallback).table()
