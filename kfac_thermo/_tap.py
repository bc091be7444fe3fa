r"""Per-layer structure of a model's output Jacobian, found in its jaxpr (no model rewriting).

A layer ``y = op(x, W) (+ bias)`` inside the model (a ``dot_general`` or ``conv_general_dilated`` with a parameter
operand used nowhere else, or a product marked with :func:`register_dense`; :class:`LayerTap`) sees its weight as
a matrix ``W`` (n_out x n_in, the bias folded in as an input column fed by 1) acting on input rows ``a_i[t]`` (the
layer input, or a convolution patch, at position ``t``: tokens, pixels; one position for an MLP). The Jacobian of
output direction ``k`` of example ``i`` with respect to ``W`` is ``sum_t delta_ik[t] a_i[t]^T``, with
``delta_ik[t]`` the derivative of that output with respect to ``y`` at ``t``. So the Gram matrix of Jacobian rows
needs only the layer's inputs and deltas:

    <J_ik, J_jl>_W = sum_{t,u} (a_i[t] . a_j[u]) (delta_ik[t] . delta_jl[u])

(:class:`JacobianRows` evaluates it in that form or through the explicit per-example Jacobians, whichever costs
less, and the products with ``W`` and ``W^T`` the same way). The deltas of every layer come from one reverse pass
per direction ``k`` with respect to zero-valued probes added to each layer's output, after one forward pass that
also records the layer inputs. Parameters in no layer (used more than once, or by other operations) get their
per-example Jacobian rows from the same reverse passes.

The model is traced for a single example (``predict_fn(params, x[None])[0]``) and evaluated by a small jaxpr
interpreter; products hidden inside nested calls (``jit``, ``custom_vjp``) are not seen and fall back to the
per-example rows, which are exact but slower. K-FAC uses the same structure (:attr:`TappedModel.layers`): the
bias added right after a product is found by following the product's output through reshapes to an ``add`` with a
parameter, and checked by pushing element indices through both sides.
"""

from __future__ import annotations

import functools
import itertools
import math
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.extend import core as jex_core
from jaxtyping import Array, Float, PyTree


class DenseTap(NamedTuple):
    """A ``dot_general`` whose operand ``param_position`` is parameter leaf ``leaf`` (used nowhere else)."""

    eqn_index: int
    leaf: int
    param_position: int
    param_contract: tuple[int, ...]
    act_contract: tuple[int, ...]


def _find_dense_taps(jaxpr, num_leaves: int) -> list[DenseTap]:
    param_vars = {v: i for i, v in enumerate(jaxpr.invars[:num_leaves])}
    uses: dict[Any, int] = {}
    for eqn in jaxpr.eqns:
        for v in eqn.invars:
            if not isinstance(v, jex_core.Literal):
                uses[v] = uses.get(v, 0) + 1
    for v in jaxpr.outvars:
        if not isinstance(v, jex_core.Literal):
            uses[v] = uses.get(v, 0) + 1
    taps = []
    for index, eqn in enumerate(jaxpr.eqns):
        if eqn.primitive.name != "dot_general":
            continue
        (lhs_contract, rhs_contract), (lhs_batch, rhs_batch) = eqn.params["dimension_numbers"]
        if lhs_batch or rhs_batch:
            continue
        operands = [v if not isinstance(v, jex_core.Literal) else None for v in eqn.invars]
        is_param = [v is not None and v in param_vars and uses.get(v) == 1 for v in operands]
        if is_param[0] == is_param[1]:
            continue
        position = 0 if is_param[0] else 1
        contracts = (tuple(lhs_contract), tuple(rhs_contract))
        taps.append(DenseTap(index, param_vars[operands[position]], position, contracts[position],
                             contracts[1 - position]))
    return taps


def _kfac_thermo_dense(outputs, inputs, weight, *bias):
    return outputs


_TAG = jax.jit(_kfac_thermo_dense)
_TAG_NAME = _kfac_thermo_dense.__name__


def register_dense(outputs: Array, inputs: Array, weight: Array, bias: Array | None = None) -> Array:
    r"""Mark ``outputs = inputs @ weight + bias`` as a dense layer for K-FAC; returns ``outputs`` unchanged.

    The explicit path for layers the automatic search does not see (a weight transformed before its product,
    products inside nested calls, einsums with batch dimensions). Call it in the model on the layer's own
    values and use its return value in place of ``outputs``::

        y = kfac_thermo.register_dense(x @ self.w + self.b, x, self.w, self.b)

    ``weight`` (n_in, n_out) and ``bias`` (n_out,) must be parameter arrays of the model (leaves of the params
    pytree), ``inputs`` (..., n_in) and ``outputs`` (..., n_out) share their leading (position) axes. The mark
    is a named identity call: it costs nothing once compiled and does not change any derivative.
    """
    return _TAG(outputs, inputs, weight, *(() if bias is None else (bias,)))


class LayerTap(NamedTuple):
    """A layer ``y = op(x, W) (+ bias)`` of the model's jaxpr with a Kronecker-factorable curvature block.

    ``W`` viewed as a matrix ``(n_out, n_in)``: leaf axes ``weight_out`` then ``weight_in``, flattened. The
    equation's operand ``act_position`` is the layer input ``x``; for "dense" and "tagged" its axes
    ``act_features`` (flattened, in this order) pair with ``weight_in`` and its other axes are positions (tokens,
    the batch-of-one axis). For "conv" the input features are the patches of ``x`` (``conv_params``). Output
    axes ``out_channels`` index the rows of ``W``; the other output axes are positions. ``bias_index[o]`` is the
    flat index in the bias leaf of output channel ``o``.
    """

    kind: str
    eqn_index: int
    weight: int
    weight_out: tuple[int, ...]
    weight_in: tuple[int, ...]
    act_position: int
    act_features: tuple[int, ...]
    out_channels: tuple[int, ...]
    bias: int | None = None
    bias_index: tuple[int, ...] | None = None
    conv_params: dict | None = None


def _count_uses(jaxpr) -> dict[Any, int]:
    uses: dict[Any, int] = {}
    for v in [v for eqn in jaxpr.eqns for v in eqn.invars] + list(jaxpr.outvars):
        if not isinstance(v, jex_core.Literal):
            uses[v] = uses.get(v, 0) + 1
    return uses


def _is_tag(eqn) -> bool:
    return eqn.primitive.name in ("jit", "pjit") and eqn.params.get("name") == _TAG_NAME


# Element-preserving rearrangements a bias search may follow; the first four move elements, the rest keep them.
_MOVES = ("transpose", "reshape", "squeeze", "broadcast_in_dim")
_KEEPS = ("convert_element_type", "copy", "copy_p", "reduce_precision")


def _push_indices(ids: np.ndarray, eqns) -> np.ndarray:
    """Apply the rearranging equations to an integer array of element ids (at trace time, on concrete values)."""
    with jax.ensure_compile_time_eval():
        for eqn in eqns:
            if eqn.primitive.name in _MOVES:
                ids = eqn.primitive.bind(jnp.asarray(ids), **eqn.primitive.get_bind_params(eqn.params))
    return np.asarray(ids)


def _find_bias(jaxpr, index: int, out_channels: tuple[int, ...], param_vars, uses) -> tuple[int, tuple] | None:
    """The parameter added to equation ``index``'s output right after it, as ``(leaf, bias_index)``, if any.

    Follows the output through single-use transposes / reshapes / casts to an ``add``, and the add's other
    operand back through the same (and broadcasts) to a parameter used once; then checks, by pushing element
    ids through both chains, that the parameter's element added to each output depends only on the output
    channel, one parameter element per channel.
    """
    eqns = jaxpr.eqns
    consumers: dict[Any, list[int]] = {}
    producers: dict[Any, int] = {}
    for i, eqn in enumerate(eqns):
        for v in eqn.invars:
            if not isinstance(v, jex_core.Literal):
                consumers.setdefault(v, []).append(i)
        for v in eqn.outvars:
            producers[v] = i
    v, forward = eqns[index].outvars[0], []
    while True:
        users = consumers.get(v, [])
        if len(users) != 1 or uses.get(v) != 1:
            return None
        eqn = eqns[users[0]]
        if eqn.primitive.name in _MOVES[:3] + _KEEPS:
            forward.append(eqn)
            v = eqn.outvars[0]
            continue
        if eqn.primitive.name != "add":
            return None
        break
    add = eqn
    u = add.invars[1] if add.invars[0] is v else add.invars[0]
    backward = []
    while not isinstance(u, jex_core.Literal) and u not in param_vars:
        if uses.get(u) != 1 or u not in producers or eqns[producers[u]].primitive.name not in _MOVES + _KEEPS:
            return None
        backward.append(eqns[producers[u]])
        u = backward[-1].invars[0]
    if isinstance(u, jex_core.Literal) or uses.get(u) != 1:
        return None
    out_shape, add_shape, bias_shape = eqns[index].outvars[0].aval.shape, add.outvars[0].aval.shape, u.aval.shape
    size, num_bias = math.prod(out_shape), math.prod(bias_shape)
    out_ids = _push_indices(np.arange(1, size + 1).reshape(out_shape), forward)
    if out_ids.shape != add_shape:
        return None
    bias_ids = _push_indices(np.arange(1, num_bias + 1).reshape(bias_shape), backward[::-1])
    channel_of = np.zeros(size, np.int64)
    channel_of[out_ids.ravel() - 1] = np.broadcast_to(bias_ids, add_shape).ravel()
    positions = [d for d in range(len(out_shape)) if d not in out_channels]
    n_out = math.prod(out_shape[d] for d in out_channels)
    grid = channel_of.reshape(out_shape).transpose(list(out_channels) + positions).reshape(n_out, -1)
    if not (grid == grid[:, :1]).all() or sorted(grid[:, 0]) != list(range(1, num_bias + 1)):
        return None
    return param_vars[u], tuple(int(i) - 1 for i in grid[:, 0])


def _tagged_layer(index: int, eqn, param_vars) -> LayerTap:
    outputs, inputs, weight, *bias = eqn.invars
    if weight not in param_vars or any(b not in param_vars for b in bias):
        raise ValueError("register_dense: weight and bias must be parameter arrays of the model (leaves of params)")
    y, x, w = (v.aval.shape for v in (outputs, inputs, weight))
    if len(w) != 2 or not x or not y or x[-1] != w[0] or y[-1] != w[1] or x[:-1] != y[:-1]:
        raise ValueError(f"register_dense: expected inputs (..., n_in), weight (n_in, n_out), outputs (..., n_out); "
                         f"got inputs {x}, weight {w}, outputs {y}")
    if bias and bias[0].aval.shape != (w[1],):
        raise ValueError(f"register_dense: bias must have shape ({w[1]},), got {bias[0].aval.shape}")
    return LayerTap("tagged", index, param_vars[weight], (1,), (0,), 1, (len(x) - 1,), (len(y) - 1,),
                    param_vars[bias[0]] if bias else None, tuple(range(w[1])) if bias else None)


def find_layer_taps(jaxpr, num_leaves: int) -> list[LayerTap]:
    """Every Kronecker-factorable layer of a single-example jaxpr: register_dense marks, then dense products
    and convolutions with a parameter operand used nowhere else, each with its bias when one follows."""
    param_vars = {v: i for i, v in enumerate(jaxpr.invars[:num_leaves])}
    uses = _count_uses(jaxpr)
    layers = [_tagged_layer(i, eqn, param_vars) for i, eqn in enumerate(jaxpr.eqns) if _is_tag(eqn)]
    found = []
    for tap in _find_dense_taps(jaxpr, num_leaves):
        ndim = len(jaxpr.invars[tap.leaf].aval.shape)
        weight_out = tuple(d for d in range(ndim) if d not in tap.param_contract)
        num_act_free = len(jaxpr.eqns[tap.eqn_index].invars[1 - tap.param_position].aval.shape) - len(tap.act_contract)
        start = 0 if tap.param_position == 0 else num_act_free
        found.append(LayerTap("dense", tap.eqn_index, tap.leaf, weight_out, tap.param_contract, 1 - tap.param_position,
                              tap.act_contract, tuple(range(start, start + len(weight_out)))))
    for index, eqn in enumerate(jaxpr.eqns):
        if eqn.primitive.name != "conv_general_dilated":
            continue
        lhs, rhs = eqn.invars
        params = eqn.params
        if (rhs not in param_vars or uses.get(rhs) != 1 or lhs in param_vars
                or params["feature_group_count"] != 1 or params["batch_group_count"] != 1):
            continue
        spec = params["dimension_numbers"]
        found.append(LayerTap("conv", index, param_vars[rhs], (spec.rhs_spec[0],), tuple(spec.rhs_spec[1:]), 0, (),
                              (spec.out_spec[1],), conv_params=dict(params)))
    for layer in sorted(found, key=lambda layer: layer.eqn_index):
        bias = _find_bias(jaxpr, layer.eqn_index, layer.out_channels, param_vars, uses)
        layers.append(layer if bias is None else layer._replace(bias=bias[0], bias_index=bias[1]))
    return sorted(layers, key=lambda layer: layer.eqn_index)


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

        abstract = lambda tree: jax.tree_util.tree_map(lambda l: jax.ShapeDtypeStruct(jnp.shape(l), jnp.result_type(l)), tree)
        self.closed = jax.make_jaxpr(single)(abstract(leaves), abstract(example))

    @functools.cached_property
    def layers(self) -> list[LayerTap]:
        """The Kronecker-factorable layers (K-FAC's blocks), in program order."""
        return find_layer_taps(self.closed.jaxpr, self.num_leaves)

    @functools.cached_property
    def rest(self) -> list[int]:
        """The parameter leaves in no layer (neither a layer's weight nor its bias)."""
        covered = {layer.weight for layer in self.layers} | {layer.bias for layer in self.layers}
        return [i for i in range(self.num_leaves) if i not in covered]

    def uses(self) -> list[list[str]]:
        """For every parameter leaf, the operations of the single-example jaxpr that read it (looking through
        reshapes, broadcasts and casts)."""
        readers: dict[Any, list] = {}
        for eqn in self.closed.jaxpr.eqns:
            for v in eqn.invars:
                if not isinstance(v, jex_core.Literal):
                    readers.setdefault(v, []).append(eqn)

        def names(v) -> list[str]:
            out = []
            for eqn in readers.get(v, []):
                if eqn.primitive.name in _MOVES + _KEEPS:
                    out += names(eqn.outvars[0])
                else:
                    out.append(eqn.params["name"] if _is_tag(eqn) else eqn.primitive.name)
            return out

        return [names(v) for v in self.closed.jaxpr.invars[: self.num_leaves]]

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

    def blocks(self, leaves: list[Array]) -> tuple[list[Array], list[Array]]:
        """A parameter-space vector (as leaves) in the layer structure: each layer's weight as its matrix
        ``[W | b]`` (n_out x n_in, the bias as a last column, in the order of :func:`input_rows` and
        :func:`delta_rows`), and the :attr:`rest` leaves. Linear, and a permutation of the entries."""
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

    def unblocks(self, matrices: list[Array], rest: list[Array], like: list[Array]) -> list[Array]:
        """The parameter leaves (shaped and typed as ``like``) of a vector given in the layer structure: the inverse
        of :meth:`blocks` (its transpose, as it permutes entries)."""
        (leaves,) = jax.linear_transpose(self.blocks, like)((matrices, rest))
        return leaves

    def batched(self, leaves: list[Array], inputs: PyTree, per_example: list[int]):
        """``(f, shared, own, probes)`` for a batch: ``f(shared, own, probes) -> (outputs (b, dz), layer inputs)``
        runs every example through the model with ``probes`` (zeros) added to each layer's output and records each
        layer's input operand (b, ...). The leaves listed in ``per_example`` enter as ``own``, one copy per example,
        so reverse passes return their per-example rows; the others as ``shared``. Convolution layers are
        evaluated as kernel x patches (:func:`_conv_by_patches`)."""
        b = jax.tree_util.tree_leaves(inputs)[0].shape[0]
        record = {layer.eqn_index: layer.act_position for layer in self.layers}
        convolutions = {layer.eqn_index: functools.partial(_conv_by_patches, layer, self.out_shape(layer))
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
    ) -> "JacobianRows":
        r"""The columns ``J_i^T R_ik`` of a batch's output Jacobian in the layer structure, for output cotangents
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
        layer_rows = [(input_rows(layer, act, self.shapes[layer.weight]), delta_rows(layer, delta))
                      for layer, act, delta in zip(self.layers, acts, deltas)]
        rest_rows = [jnp.swapaxes(r, 0, 1).reshape(b * R.shape[0], -1) for r in rest_rows]
        return JacobianRows(self, leaves, layer_rows, rest_rows)


class JacobianRows:
    r"""``W`` (N x b m) with columns ``w_ik = J_i^T R_ik`` (example-major), kept in the layer structure.

    A layer's part of ``w_ik`` is the matrix ``J_ik = sum_t s_ikt a_it^T`` (n_out x n_in), held either explicitly
    (b m, n_out, n_in) or as its input rows ``a`` (b, n_in, T) and output derivatives ``s`` (m, b, n_out, T),
    whichever makes the Gram cheaper (:func:`explicit_is_cheaper`); a rest leaf's part is its per-example rows
    (b m, leaf size). The Gram ``W^T W`` and the products ``W c``, ``W^T v`` are exact contractions of these, with
    no further model calls.
    """

    def __init__(self, tapped: TappedModel, leaves: list[Array], layer_rows: list[tuple[Array, Array]],
                 rest_rows: list[Array]):
        self.tapped, self.leaves, self.rest = tapped, leaves, rest_rows
        self.layers = [(explicit_jacobian(a, s),) if explicit_is_cheaper(a, s) else (a, s) for a, s in layer_rows]

    def gram(self) -> Float[Array, "bm bm"]:
        """``W^T W``: per layer ``J J^T`` or :func:`pairs_gram`, plus the rest rows' inner products."""
        gram = 0.0
        for layer in self.layers:
            if len(layer) == 1:
                J = layer[0].reshape(layer[0].shape[0], -1)
                gram = gram + J @ J.T
            else:
                gram = gram + pairs_gram(*layer)
        for rows in self.rest:
            gram = gram + rows @ rows.T
        return gram

    def transpose_apply(self, leaves: list[Array]) -> Float[Array, " bm"]:
        """``W^T v`` for ``v`` given as parameter leaves: per layer ``<J_ik, V> = sum_t s_ikt . (V a_it)``."""
        matrices, rest = self.tapped.blocks(leaves)
        out = 0.0
        for layer, V in zip(self.layers, matrices):
            if len(layer) == 1:
                out = out + jnp.einsum("roc,oc->r", layer[0], V)
            else:
                a, s = layer
                out = out + jnp.einsum("kiot,iot->ik", s, jnp.einsum("ict,oc->iot", a, V)).reshape(-1)
        for rows, leaf in zip(self.rest, rest):
            out = out + rows @ leaf.reshape(-1)
        return out

    def apply(self, c: Float[Array, " bm"]) -> list[Array]:
        """``W c`` as parameter leaves: per layer ``sum_ik c_ik J_ik = sum_{i,t} (sum_k c_ik s_ikt) a_it^T``."""
        matrices = []
        for layer in self.layers:
            if len(layer) == 1:
                matrices.append(jnp.einsum("r,roc->oc", c, layer[0]))
            else:
                a, s = layer
                c_ik = c.reshape(a.shape[0], s.shape[0])
                matrices.append(jnp.einsum("iot,ict->oc", jnp.einsum("kiot,ik->iot", s, c_ik), a))
        rest = [(c @ rows).reshape(self.tapped.shapes[i]) for i, rows in zip(self.tapped.rest, self.rest)]
        return self._leaves(matrices, rest)

    def matrix(self) -> Float[Array, "bm N"]:
        """``W^T`` formed explicitly: row ``(i, k)`` is ``w_ik`` flattened leaf by leaf (``ravel_pytree``'s order),
        each layer's part from its explicit Jacobians (``b m n_out n_in`` values)."""
        matrices = [layer[0] if len(layer) == 1 else explicit_jacobian(*layer) for layer in self.layers]
        rest = [rows.reshape((-1,) + self.tapped.shapes[i]) for i, rows in zip(self.tapped.rest, self.rest)]
        leaves = jax.vmap(self._leaves)(matrices, rest)
        return jnp.concatenate([leaf.reshape(leaf.shape[0], -1) for leaf in leaves], axis=1)

    def _leaves(self, matrices: list[Array], rest: list[Array]) -> list[Array]:
        return self.tapped.unblocks(matrices, rest, self.leaves)


def input_rows(layer: LayerTap, act: Array, kernel_shape: tuple[int, ...]) -> Float[Array, "b n_in T"]:
    """A layer's input rows ``a_it`` (convolution patches for a "conv" layer) as columns ``[i, :, t]``, the bias's
    constant 1 appended as a last feature.

    ``act`` is the layer's input operand for a batch, (b, *operand shape of one example); ``kernel_shape`` the
    weight leaf's shape. Positions ``t`` are ordered as in :func:`delta_rows`; features before positions, the
    layout of a channel-first activation (no transpose of a convolution's patches or deltas).
    """
    b = act.shape[0]
    if layer.kind == "conv":
        rows = _patches(layer, act, kernel_shape)
    else:
        positions = [d for d in range(act.ndim - 1) if d not in layer.act_features]
        order = [0] + [d + 1 for d in layer.act_features] + [d + 1 for d in positions]
        rows = jnp.transpose(act, order).reshape(b, math.prod(act.shape[d + 1] for d in layer.act_features), -1)
    if layer.bias is not None:
        rows = jnp.concatenate([rows, jnp.ones((rows.shape[0], 1, rows.shape[2]), rows.dtype)], axis=1)
    return rows


def delta_rows(layer: LayerTap, delta: Array) -> Float[Array, "m b n_out T"]:
    """A layer's output derivatives ``s_ikt`` as columns ``[k, i, :, t]`` from its probe cotangents ``delta`` (m, b,
    *output of one example): positions are the output axes other than ``out_channels``, in order (for a
    convolution: batch-of-one, then spatial axes in the output spec's order, as its patches)."""
    m, b = delta.shape[:2]
    if layer.kind == "conv":
        spec = layer.conv_params["dimension_numbers"].out_spec
        positions = [spec[0]] + list(spec[2:])
    else:
        positions = [d for d in range(delta.ndim - 2) if d not in layer.out_channels]
    order = [0, 1] + [d + 2 for d in layer.out_channels] + [d + 2 for d in positions]
    n_out = math.prod(delta.shape[d + 2] for d in layer.out_channels)
    return jnp.transpose(delta, order).reshape(m, b, n_out, -1)


def _patches(layer: LayerTap, act: Array, kernel_shape: tuple[int, ...]) -> Float[Array, "b n_in T"]:
    """Convolution patches ``[i, feature, position]``: features (input channel, then the kernel window, spatial axes
    in the dimension numbers' order), positions (the batch-of-one axis, then the output's spatial axes in that
    order).

    Gathered by one strided slice of the padded input per kernel offset (input dilation as interior padding, kernel
    dilation as spaced offsets), which is pure data movement: XLA's CPU convolution, e.g. through
    ``conv_general_dilated_patches``, costs about as much as the model's forward pass here.
    """
    params = layer.conv_params
    spec = params["dimension_numbers"]
    b = act.shape[0]
    # (b N, C, *spatial): the examples merged into the convolution's own batch axis N.
    x = jnp.transpose(act, [0] + [d + 1 for d in spec.lhs_spec])
    x = x.reshape((-1,) + x.shape[2:])
    window = [kernel_shape[d] for d in spec.rhs_spec[2:]]
    strides, dilation = params["window_strides"], params["rhs_dilation"]
    x = jax.lax.pad(x, jnp.zeros((), x.dtype), [(0, 0, 0)] * 2 + [
        (low, high, d - 1) for (low, high), d in zip(params["padding"], params["lhs_dilation"])])
    out = [(n - (k - 1) * d - 1) // s + 1 for n, k, d, s in zip(x.shape[2:], window, dilation, strides)]
    slices = []
    for offset in itertools.product(*(range(k) for k in window)):
        start = [0, 0] + [o * d for o, d in zip(offset, dilation)]
        limit = list(x.shape[:2]) + [o + (n - 1) * s + 1 for o, n, s in zip(start[2:], out, strides)]
        slices.append(jax.lax.slice(x, start, limit, [1, 1] + list(strides)))
    patches = jnp.stack(slices, axis=2).reshape(b, -1, x.shape[1] * len(slices), math.prod(out))  # (b, N, C K, out)
    return jnp.moveaxis(patches, 1, 2).reshape(b, patches.shape[2], -1)


def _conv_by_patches(layer: LayerTap, out_shape: tuple[int, ...], lhs: Array, rhs: Array) -> Array:
    """A "conv" layer's ``conv_general_dilated(lhs, rhs)`` for one example as its kernel matrix (n_out x n_in) times
    its patches (an im2col product): the same value up to rounding, several times faster than XLA's CPU
    convolution for the few-channel kernels of small CNNs."""
    spec = layer.conv_params["dimension_numbers"].out_spec
    kernel = jnp.transpose(rhs, layer.weight_out + layer.weight_in).reshape(out_shape[spec[1]], -1)
    order = [spec[1], spec[0], *spec[2:]]  # (channels, batch-of-one, spatial): the rows of kernel @ patches
    y = (kernel @ _patches(layer, lhs[None], rhs.shape)[0]).reshape([out_shape[d] for d in order])
    return jnp.transpose(y, np.argsort(order))


def explicit_is_cheaper(a: Float[Array, "b n_in T"], s: Float[Array, "m b n_out T"]) -> bool:
    r"""Which form of a layer's Jacobian Gram costs fewer operations: the explicit Jacobians ``J_ik`` (``b m T n_in
    n_out`` to form, ``(b m)^2 n_in n_out`` to multiply: small weights, such as a convolution kernel, at many
    positions) or :func:`pairs_gram` (``b^2 T^2 n_in + (b m)^2 T^2 (n_out + 1)``: a large dense weight at few
    positions; one position for an MLP layer)."""
    b, n_in, T = a.shape
    m, n_out = s.shape[0], s.shape[2]
    explicit = b * m * T * n_in * n_out + (b * m) ** 2 * n_in * n_out
    pairs = b * b * T * T * n_in + (b * m) ** 2 * T * T * (n_out + 1)
    return explicit <= pairs


def explicit_jacobian(a: Float[Array, "b n_in T"], s: Float[Array, "m b n_out T"]) -> Float[Array, "bm n_out n_in"]:
    """``J_ik = sum_t s_ikt a_it^T`` for every example i and direction k, example-major ``(i, k)``."""
    b, m = a.shape[0], s.shape[0]
    return jnp.einsum("kiot,ict->ikoc", s, a).reshape(b * m, s.shape[2], a.shape[1])


def pairs_gram(a: Float[Array, "b n_in T"], s: Float[Array, "m b n_out T"]) -> Float[Array, "bm bm"]:
    r"""One layer's Jacobian Gram ``<J_ik, J_jl> = sum_{t,u} (a_it . a_ju) (s_ikt . s_jlu)`` without forming
    ``J``; rows and columns example-major ``(i, k)``."""
    b, _, T = a.shape
    m, n_out = s.shape[0], s.shape[2]
    if T == 1:
        s = jnp.swapaxes(s[..., 0], 0, 1).reshape(b * m, n_out)
        return jnp.repeat(jnp.repeat(a[..., 0] @ a[..., 0].T, m, axis=0), m, axis=1) * (s @ s.T)
    return jnp.einsum("ict,jcu,kiot,ljou->ikjl", a, a, s, s, optimize=True).reshape(b * m, b * m)
