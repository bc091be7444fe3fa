r"""The tapped model: a single-example trace of ``predict_fn`` with its layers located, and an interpreter of that
jaxpr that adds zero probes to the layers' outputs and records their inputs.

The model is traced for a single example (``predict_fn(params, x[None])[0]``) and evaluated by a small jaxpr
interpreter (:meth:`TappedModel.run`), vmapped over the batch (:meth:`TappedModel.batched`). Reverse passes to
the probes give every layer's output derivatives at once; products hidden inside nested calls (``jit``,
``custom_vjp``) are not seen and their parameters fall back to per-example Jacobian rows, which are exact but
slower.
"""

from __future__ import annotations

import functools
import itertools
import math
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax.extend import core as jex_core
from jaxtyping import Array, Float, PyTree

from ._discovery import LayerTap, find_layer_taps, parameter_readers
from ._jacobian import JacobianRows, layer_inputs, output_derivatives
from ._patches import conv_by_patches


class TappedModel:
    """A single-example trace of ``predict_fn`` with its layers located.

    Args:
        predict_fn: ``predict_fn(params, inputs) -> outputs`` over a batch.
        params: the parameter pytree (arrays or shape structs).
        example: one example's inputs (a pytree of arrays without the batch axis).
    """

    def __init__(self, predict_fn: Callable, params: PyTree, example: PyTree):
        leaves, self.treedef = jax.tree_util.tree_flatten(params)
        self.paths = [jax.tree_util.keystr(p) for p, _ in jax.tree_util.tree_flatten_with_path(params)[0]]
        self.shapes = [tuple(jnp.shape(leaf)) for leaf in leaves]
        self.num_leaves = len(leaves)
        treedef = self.treedef

        def single(leaves, x):
            batch_of_one = jax.tree_util.tree_map(lambda leaf: leaf[None], x)
            return predict_fn(jax.tree_util.tree_unflatten(treedef, leaves), batch_of_one)[0]

        abstract = lambda tree: jax.tree_util.tree_map(
            lambda leaf: jax.ShapeDtypeStruct(jnp.shape(leaf), jnp.result_type(leaf)), tree)
        self.closed = jax.make_jaxpr(single)(abstract(leaves), abstract(example))

    @functools.cached_property
    def layers(self) -> list[LayerTap]:
        """The Kronecker-factorable layers (K-FAC's Kronecker blocks), in program order."""
        return find_layer_taps(self.closed.jaxpr, self.num_leaves)

    @functools.cached_property
    def rest(self) -> list[int]:
        """The rest leaves: parameter leaves in no layer (neither a layer's weight nor its bias)."""
        covered = {layer.weight for layer in self.layers} | {layer.bias for layer in self.layers}
        return [i for i in range(self.num_leaves) if i not in covered]

    def uses(self) -> list[list[str]]:
        """For every parameter leaf, the operations of the single-example jaxpr that read it."""
        return parameter_readers(self.closed.jaxpr, self.num_leaves)

    def run(
        self, leaves: list[Array], example: PyTree, probes: dict[int, Array], record: dict[int, int],
        replace: dict[int, Callable] | None = None,
    ) -> tuple[Array, dict[int, Array]]:
        """One example's outputs with ``probes[i]`` added to the first output of equation ``i``; also, for each
        ``i`` in ``record``, that equation's operand ``record[i]`` (a layer's input). Equation ``i`` in ``replace``
        is evaluated as ``replace[i](*operands)`` (the same function, computed another way)."""
        replace = replace or {}
        jaxpr = self.closed.jaxpr
        env: dict[Any, Any] = {}
        read = lambda v: v.val if isinstance(v, jex_core.Literal) else env[v]
        for var, value in zip(jaxpr.constvars, self.closed.consts):
            env[var] = value
        for var, value in zip(jaxpr.invars, list(leaves) + jax.tree_util.tree_leaves(example)):
            env[var] = value
        recorded: dict[int, Array] = {}
        for index, eqn in enumerate(jaxpr.eqns):
            invals = [read(v) for v in eqn.invars]
            if index in replace:
                out = replace[index](*invals)
            else:
                out = eqn.primitive.bind(*invals, **eqn.primitive.get_bind_params(eqn.params))
            outs = list(out) if eqn.primitive.multiple_results else [out]
            if index in record:
                recorded[index] = invals[record[index]]
            if index in probes:
                outs[0] = outs[0] + probes[index]
            for var, value in zip(eqn.outvars, outs):
                env[var] = value
        (output,) = [read(v) for v in jaxpr.outvars]
        return output, recorded

    def out_shape(self, layer: LayerTap) -> tuple[int, ...]:
        """The shape of a layer's output for one example."""
        return tuple(self.closed.jaxpr.eqns[layer.eqn_index].outvars[0].aval.shape)

    def probe_like(self, index: int) -> Array:
        """A zero probe for the first output of equation ``index``."""
        aval = self.closed.jaxpr.eqns[index].outvars[0].aval
        return jnp.zeros(aval.shape, aval.dtype)

    def to_matrices(self, leaves: list[Array]) -> tuple[list[Array], list[Array]]:
        """A parameter-space vector (as leaves) in the layer structure: each layer's layer matrix ``[W | b]``
        (n_out x n_in, the bias as a last column, in the order of :func:`layer_inputs` and
        :func:`output_derivatives`), and the :attr:`rest` leaves. Linear, and a permutation of the entries."""
        matrices = []
        for layer in self.layers:
            shape = self.shapes[layer.weight]
            n_out = math.prod(shape[d] for d in layer.weight_out)
            matrix = jnp.transpose(leaves[layer.weight], layer.weight_out + layer.weight_in).reshape(n_out, -1)
            if layer.bias is not None:
                bias = leaves[layer.bias].reshape(-1)[np.asarray(layer.bias_index)]
                matrix = jnp.concatenate([matrix, bias[:, None].astype(matrix.dtype)], axis=1)
            matrices.append(matrix)
        return matrices, [leaves[i] for i in self.rest]

    def from_matrices(self, matrices: list[Array], rest: list[Array], like: list[Array]) -> list[Array]:
        """The parameter leaves (shaped and typed as ``like``) of a vector given in the layer structure: the inverse
        of :meth:`to_matrices` (its transpose, as it permutes entries)."""
        (leaves,) = jax.linear_transpose(self.to_matrices, like)((matrices, rest))
        return leaves

    def batched(self, leaves: list[Array], inputs: PyTree, per_example: list[int]):
        """``(f, shared, own, probes)`` for a batch: ``f(shared, own, probes) -> (outputs (b, dz), layer inputs)``
        runs every example through the model with ``probes`` (zeros) added to each layer's output and records each
        layer's input operand (b, ...). The leaves listed in ``per_example`` enter as ``own``, one copy per example,
        so reverse passes return their per-example Jacobian rows; the others as ``shared``. Convolution layers are
        evaluated as kernel x patches (:func:`conv_by_patches`)."""
        b = jax.tree_util.tree_leaves(inputs)[0].shape[0]
        record = {layer.eqn_index: layer.act_position for layer in self.layers}
        convolutions = {layer.eqn_index: functools.partial(conv_by_patches, layer, self.out_shape(layer))
                        for layer in self.layers if layer.kind == "conv"}
        shared_index = [i for i in range(len(leaves)) if i not in per_example]

        def one(shared, own, probes, x):
            merged = list(leaves)
            for i, leaf in itertools.chain(zip(shared_index, shared), zip(per_example, own)):
                merged[i] = leaf
            out, recorded = self.run(merged, x, dict(zip(record, probes)), record, convolutions)
            return out, [recorded[index] for index in record]

        def f(shared, own, probes):
            return jax.vmap(one, in_axes=(None, 0, 0, 0))(shared, own, probes, inputs)

        shared = [leaves[i] for i in shared_index]
        own = [jnp.broadcast_to(leaves[i], (b,) + self.shapes[i]) for i in per_example]
        probes = [jnp.broadcast_to(self.probe_like(index), (b,) + self.probe_like(index).shape) for index in record]
        return f, shared, own, probes

    def jacobian(
        self, params: PyTree, inputs: PyTree, directions: Callable[[Float[Array, "b dz"]], Float[Array, "m b dz"]]
    ) -> JacobianRows:
        r"""The Jacobian rows ``J_i^T R_ik`` of a batch in the layer structure, for output cotangents
        ``R = directions(z)`` (m per example) computed from the batch's outputs ``z``.

        One forward pass of the batch records each layer's input (:meth:`batched`); only the reverse pass (to zero
        probes added to each layer's output and to per-example copies of the :attr:`rest` leaves, never to the
        layer weights) is repeated for each of the m directions.
        """
        leaves = jax.tree_util.tree_leaves(params)
        b = jax.tree_util.tree_leaves(inputs)[0].shape[0]
        f, shared, own, probes = self.batched(leaves, inputs, self.rest)
        z, vjp_fn, acts = jax.vjp(lambda own, probes: f(shared, own, probes), own, probes, has_aux=True)
        R = directions(z)
        rest_rows, deltas = jax.vmap(vjp_fn)(R)
        layer_parts = [(layer_inputs(layer, act, self.shapes[layer.weight]), output_derivatives(layer, delta))
                       for layer, act, delta in zip(self.layers, acts, deltas)]
        rest_rows = [jnp.swapaxes(r, 0, 1).reshape(b * R.shape[0], -1) for r in rest_rows]
        return JacobianRows(self, leaves, layer_parts, rest_rows)
