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
"""

from __future__ import annotations

import math
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
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
        self.tap_by_eqn = {tap.eqn_index: i for i, tap in enumerate(self.taps)}
        tapped = {tap.leaf for tap in self.taps}
        self.rest = [i for i in range(self.num_leaves) if i not in tapped]
        self.probe_shapes = [
            (self.closed.jaxpr.eqns[t.eqn_index].outvars[0].aval.shape, self.closed.jaxpr.eqns[t.eqn_index].outvars[0].aval.dtype)
            for t in self.taps
        ]

    def describe(self) -> list[tuple[str, str]]:
        """(parameter path, how its Jacobian is handled) for every parameter leaf."""
        kinds = {tap.leaf: "dense (activation x delta Gram)" for tap in self.taps}
        return [(path, kinds.get(i, "explicit per-example Jacobian")) for i, path in enumerate(self.paths)]

    def zero_probes(self) -> list[Array]:
        return [jnp.zeros(shape, dtype) for shape, dtype in self.probe_shapes]

    def __call__(self, leaves: list[Array], probes: list[Array], example: PyTree) -> tuple[Array, list[Array]]:
        """One example's outputs, with ``probes[t]`` added to tap ``t``'s output; also the taps' inputs."""
        jaxpr = self.closed.jaxpr
        env: dict[Any, Any] = {}
        read = lambda v: v.val if isinstance(v, jex_core.Literal) else env[v]
        for var, value in zip(jaxpr.constvars, self.closed.consts):
            env[var] = value
        for var, value in zip(jaxpr.invars, list(leaves) + jax.tree_util.tree_leaves(example)):
            env[var] = value
        activations: list[Any] = [None] * len(self.taps)
        for index, eqn in enumerate(jaxpr.eqns):
            invals = [read(v) for v in eqn.invars]
            out = eqn.primitive.bind(*invals, **eqn.primitive.get_bind_params(eqn.params))
            tap_index = self.tap_by_eqn.get(index)
            if tap_index is not None:
                activations[tap_index] = invals[1 - self.taps[tap_index].param_position]
                out = out + probes[tap_index]
            outs = out if eqn.primitive.multiple_results else [out]
            for var, value in zip(eqn.outvars, outs):
                env[var] = value
        (output,) = [read(v) for v in jaxpr.outvars]
        return output, activations

    def jacobian_gram(
        self, params: PyTree, inputs: PyTree, directions: Float[Array, "b dz m"]
    ) -> Float[Array, "b m b m"]:
        r"""``K[i,k,j,l] = (J_i R_i[:, k]) . (J_j R_j[:, l])`` over all parameters, where ``J_i`` is example
        ``i``'s output Jacobian (transposed: ``J_i^T R_i`` are parameter-space vectors) and ``R_i = directions[i]``.

        Costs one forward pass and ``m`` reverse passes per example plus the per-layer Gram products.
        """
        leaves = jax.tree_util.tree_leaves(params)

        def per_example(x, R):
            def f(probes, rest_leaves):
                merged = list(leaves)
                for i, leaf in zip(self.rest, rest_leaves):
                    merged[i] = leaf
                return self(merged, probes, x)

            _, vjp_fn, acts = jax.vjp(f, self.zero_probes(), [leaves[i] for i in self.rest], has_aux=True)
            deltas, rest_rows = jax.vmap(vjp_fn)(R.T)
            return acts, deltas, rest_rows

        acts, deltas, rest_rows = jax.vmap(per_example)(inputs, directions)
        b, m = directions.shape[0], directions.shape[2]
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
