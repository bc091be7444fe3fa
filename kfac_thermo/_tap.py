r"""Per-layer structure of a model's output Jacobian, found in its jaxpr (no model rewriting).

For a dense product ``y = P x`` inside the model (a ``dot_general`` with a parameter array ``P`` as one
operand), the Jacobian of output ``k`` of example ``i`` with respect to ``P`` is ``sum_s delta_ik[s] (x) a_i[s]``,
with ``a_i[s]`` the layer input at position ``s`` (tokens, pixels; one position for an MLP) and ``delta_ik[s]`` the
derivative of the output in direction ``k`` with respect to ``y`` there. So the Gram matrix of Jacobian rows needs
only inner products of inputs and of deltas:

    <J_ik, J_jl>_P = sum_{s,t} (a_i[s] . a_j[t]) (delta_ik[s] . delta_jl[t])

which costs ``b^2 S^2 (n_in + m^2 n_out)`` instead of ``(b m)^2 n_in n_out``. The deltas of every layer come from
one vector-Jacobian product per direction ``k`` with respect to zero-valued probes added to each layer's output,
the layer inputs from the same forward pass. Parameters not used as a dense operand (convolution kernels, biases,
parameters used more than once) get their per-example Jacobian rows explicitly.

The model is traced for a single example (``predict_fn(params, x[None])[0]``) and evaluated by a small jaxpr
interpreter; dense products hidden inside nested calls (``jit``, ``custom_vjp``) are not seen and fall back to the
explicit path, which is exact but slower. :meth:`TappedModel.describe` lists what was found.

K-FAC needs more of the same structure (:attr:`TappedModel.layers`, :class:`LayerTap`): dense products as above,
convolutions (``conv_general_dilated`` with a parameter kernel, one feature group) and products the user marked
with :func:`register_dense`, each with the bias added right after it (found by following the product's output
through reshapes to an ``add`` with a parameter, and checked by pushing element indices through both sides).
"""

from __future__ import annotations

import math
import functools
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
    """A single-example trace of ``predict_fn`` with its dense layers located.

    Args:
        predict_fn: ``predict_fn(params, inputs) -> outputs`` over a batch.
        params: the parameter pytree (arrays or shape structs).
        example: one example's inputs (a pytree of arrays without the batch axis).
    """

    def __init__(self, predict_fn: Callable, params: PyTree, example: PyTree):
        leaves, self.treedef = jax.tree_util.tree_flatten(params)
        self.paths = [jax.tree_util.keystr(p) for p, _ in jax.tree_util.tree_flatten_with_path(params)[0]]
        self.num_leaves = len(leaves)
        treedef = self.treedef

        def single(leaves, x):
            batch_of_one = jax.tree_util.tree_map(lambda leaf: leaf[None], x)
            return predict_fn(jax.tree_util.tree_unflatten(treedef, leaves), batch_of_one)[0]

        abstract = lambda tree: jax.tree_util.tree_map(lambda l: jax.ShapeDtypeStruct(jnp.shape(l), jnp.result_type(l)), tree)
        self.closed = jax.make_jaxpr(single)(abstract(leaves), abstract(example))
        self.taps = _find_dense_taps(self.closed.jaxpr, self.num_leaves)
        tapped = {tap.leaf for tap in self.taps}
        self.rest = [i for i in range(self.num_leaves) if i not in tapped]

    @functools.cached_property
    def layers(self) -> list[LayerTap]:
        """The Kronecker-factorable layers (K-FAC's blocks), in program order."""
        return find_layer_taps(self.closed.jaxpr, self.num_leaves)

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

    def describe(self) -> list[tuple[str, str]]:
        """(parameter path, how its Jacobian is handled) for every parameter leaf."""
        kinds = {tap.leaf: "dense (activation x delta Gram)" for tap in self.taps}
        return [(path, kinds.get(i, "explicit per-example Jacobian")) for i, path in enumerate(self.paths)]

    def zero_probes(self) -> list[Array]:
        return [self.probe_like(tap.eqn_index) for tap in self.taps]

    def __call__(self, leaves: list[Array], probes: list[Array], example: PyTree) -> tuple[Array, list[Array]]:
        """One example's outputs, with ``probes[t]`` added to tap ``t``'s output; also the taps' inputs."""
        output, recorded = self.run(
            leaves, example,
            probes={tap.eqn_index: probe for tap, probe in zip(self.taps, probes)},
            record={tap.eqn_index: 1 - tap.param_position for tap in self.taps},
        )
        return output, [recorded[tap.eqn_index] for tap in self.taps]

    def run(
        self, leaves: list[Array], example: PyTree, probes: dict[int, Array], record: dict[int, int]
    ) -> tuple[Array, dict[int, Array]]:
        """One example's outputs with ``probes[i]`` added to the first output of equation ``i``; also, for each
        ``i`` in ``record``, that equation's operand ``record[i]`` (a layer's input)."""
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

    def probe_like(self, index: int) -> Array:
        """A zero probe for the first output of equation ``index``."""
        aval = self.closed.jaxpr.eqns[index].outvars[0].aval
        return jnp.zeros(aval.shape, aval.dtype)

    def jacobian_gram(
        self, params: PyTree, inputs: PyTree, directions: Float[Array, "b dz m"]
    ) -> Float[Array, "b m b m"]:
        r"""``K[i,k,j,l] = (J_i R_i[:, k]) . (J_j R_j[:, l])`` over all parameters, where ``J_i`` is example
        ``i``'s output Jacobian (transposed: ``J_i^T R_i`` are parameter-space vectors) and ``R_i = directions[i]``.

        Costs one forward and one reverse pass per (example, direction) pair, batched as one pass over b m
        copies of the inputs (XLA runs that far faster than nesting a vmap over directions inside one over
        examples, which turns convolutions into grouped ones), plus the per-layer Gram products.
        """
        leaves = jax.tree_util.tree_leaves(params)
        b, m = directions.shape[0], directions.shape[2]

        def f(probes, rest_leaves, x):
            merged = list(leaves)
            for i, leaf in zip(self.rest, rest_leaves):
                merged[i] = leaf
            return self(merged, probes, x)

        def per_pair(x, r):
            _, vjp_fn, _ = jax.vjp(lambda p, rl: f(p, rl, x), self.zero_probes(), [leaves[i] for i in self.rest],
                                   has_aux=True)
            return vjp_fn(r)

        repeated = jax.tree_util.tree_map(lambda leaf: jnp.repeat(leaf, m, axis=0), inputs)
        deltas, rest_rows = jax.vmap(per_pair)(repeated, jnp.swapaxes(directions, 1, 2).reshape(b * m, -1))
        deltas = [d.reshape(b, m, *d.shape[1:]) for d in deltas]
        acts = jax.vmap(lambda x: f(self.zero_probes(), [leaves[i] for i in self.rest], x)[1])(inputs)
        gram = jnp.zeros((b, m, b, m), directions.dtype)
        if self.rest:
            rows = jnp.concatenate([r.reshape(b, m, -1) for r in rest_rows], axis=-1)
            gram = gram + jnp.einsum("ikn,jln->ikjl", rows, rows)
        for tap, act, delta in zip(self.taps, acts, deltas):
            gram = gram + _dense_gram(tap, act, delta)
        return gram


def _dense_gram(tap: DenseTap, act: Array, delta: Array) -> Array:
    """``sum_{s,t} (a_i[s] . a_j[t]) (delta_ik[s] . delta_jl[t])`` for one dense tap (b examples, m directions)."""
    b, m = delta.shape[:2]
    act_free = [d for d in range(act.ndim - 1) if d not in tap.act_contract]
    a = jnp.transpose(act, [0] + [d + 1 for d in act_free] + [d + 1 for d in tap.act_contract])
    num_positions = math.prod(act.shape[d + 1] for d in act_free)
    a = a.reshape(b, num_positions, -1)
    # dot_general output dims: lhs free dims, then rhs free dims.
    num_act_free = len(act_free)
    out_dims = delta.ndim - 2
    num_param_free = out_dims - num_act_free
    if tap.param_position == 0:
        order = list(range(num_param_free, out_dims)) + list(range(num_param_free))
    else:
        order = list(range(out_dims))
    d = jnp.transpose(delta, [0, 1] + [o + 2 for o in order]).reshape(b, m, num_positions, -1)
    if num_positions == 1:
        return jnp.einsum("ij,ikjl->ikjl", a[:, 0] @ a[:, 0].T, jnp.einsum("iko,jlo->ikjl", d[:, :, 0], d[:, :, 0]))
    return jnp.einsum("isc,jtc,ikso,jlto->ikjl", a, a, d, d, optimize=True)
