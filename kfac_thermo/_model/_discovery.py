r"""Layer discovery: the Kronecker-factorable layers of a single-example jaxpr, with their biases.

A layer is a ``dot_general`` or ``conv_general_dilated`` with a parameter operand used nowhere else, or a product
marked with :func:`register_dense` (:class:`LayerTap`). The bias added right after a product is found by following
the product's output through reshapes to an ``add`` with a parameter, and checked by pushing element indices
through both sides (:func:`_find_bias`).
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.extend import core as jex_core
from jaxtyping import Array


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

    ``W`` viewed as its layer matrix ``(n_out, n_in)``: leaf axes ``weight_out`` then ``weight_in``, flattened.
    The equation's operand ``act_position`` is the layer input ``x``; for "dense" and "tagged" its axes
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


def _dense_layers(jaxpr, param_vars: dict, uses: dict) -> list[LayerTap]:
    """Each ``dot_general`` without batch dimensions whose one operand is a parameter used nowhere else."""
    layers = []
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
        param_contract = tuple((lhs_contract, rhs_contract)[position])
        act_contract = tuple((lhs_contract, rhs_contract)[1 - position])
        leaf = param_vars[operands[position]]
        weight_out = tuple(d for d in range(len(operands[position].aval.shape)) if d not in param_contract)
        num_act_free = len(eqn.invars[1 - position].aval.shape) - len(act_contract)
        start = 0 if position == 0 else num_act_free
        layers.append(LayerTap("dense", index, leaf, weight_out, param_contract, 1 - position, act_contract,
                               tuple(range(start, start + len(weight_out)))))
    return layers


def _conv_layers(jaxpr, param_vars: dict, uses: dict) -> list[LayerTap]:
    """Each ungrouped ``conv_general_dilated`` whose kernel is a parameter used nowhere else."""
    layers = []
    for index, eqn in enumerate(jaxpr.eqns):
        if eqn.primitive.name != "conv_general_dilated":
            continue
        lhs, rhs = eqn.invars
        params = eqn.params
        if (rhs not in param_vars or uses.get(rhs) != 1 or lhs in param_vars
                or params["feature_group_count"] != 1 or params["batch_group_count"] != 1):
            continue
        spec = params["dimension_numbers"]
        layers.append(LayerTap("conv", index, param_vars[rhs], (spec.rhs_spec[0],), tuple(spec.rhs_spec[1:]), 0, (),
                               (spec.out_spec[1],), conv_params=dict(params)))
    return layers


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
    """Every Kronecker-factorable layer of a single-example jaxpr, in program order: register_dense marks, then
    dense products and convolutions with a parameter operand used nowhere else, each with its bias when one
    follows."""
    param_vars = {v: i for i, v in enumerate(jaxpr.invars[:num_leaves])}
    uses = _count_uses(jaxpr)
    layers = [_tagged_layer(i, eqn, param_vars) for i, eqn in enumerate(jaxpr.eqns) if _is_tag(eqn)]
    found = _dense_layers(jaxpr, param_vars, uses) + _conv_layers(jaxpr, param_vars, uses)
    for layer in sorted(found, key=lambda layer: layer.eqn_index):
        bias = _find_bias(jaxpr, layer.eqn_index, layer.out_channels, param_vars, uses)
        layers.append(layer if bias is None else layer._replace(bias=bias[0], bias_index=bias[1]))
    return sorted(layers, key=lambda layer: layer.eqn_index)


def parameter_readers(jaxpr, num_leaves: int) -> list[list[str]]:
    """For every parameter leaf, the operations of the jaxpr that read it (looking through reshapes, broadcasts
    and casts): what a user needs to see when no layer was found."""
    readers: dict[Any, list] = {}
    for eqn in jaxpr.eqns:
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

    return [names(v) for v in jaxpr.invars[:num_leaves]]
