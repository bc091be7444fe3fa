r"""Jacobian-row algebra: ``W`` (N x b m, columns the Jacobian rows ``J_i^T R_ik``) kept in the layer structure.

A layer's part of the Jacobian row of example ``i`` and output direction ``k`` is the matrix
``J_ik = sum_t s_ikt a_it^T`` (n_out x n_in) of its inputs ``a_it`` and output derivatives ``s_ikt``, so

    <J_ik, J_jl>_W = sum_{t,u} (a_it . a_ju) (s_ikt . s_jlu)

needs only the layer's inputs and output derivatives (:func:`pairs_gram`); the explicit ``J_ik``
(:func:`explicit_jacobian`) is cheaper for small weights at many positions (:func:`explicit_is_cheaper`).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float

from ._discovery import LayerTap
from ._patches import patches

if TYPE_CHECKING:
    from ._tapped import TappedModel


def layer_inputs(layer: LayerTap, act: Array, kernel_shape: tuple[int, ...]) -> Float[Array, "b n_in T"]:
    """A layer's inputs ``a_it`` (convolution patches for a "conv" layer) as columns ``[i, :, t]``, the bias's
    constant 1 appended as a last feature.

    ``act`` is the layer's input operand for a batch, (b, *operand shape of one example); ``kernel_shape`` the
    weight leaf's shape. Positions ``t`` are ordered as in :func:`output_derivatives`; features before positions,
    the layout of a channel-first activation (no transpose of a convolution's patches or derivatives).
    """
    b = act.shape[0]
    if layer.kind == "conv":
        inputs = patches(layer, act, kernel_shape)
    else:
        positions = [d for d in range(act.ndim - 1) if d not in layer.act_features]
        order = [0] + [d + 1 for d in layer.act_features] + [d + 1 for d in positions]
        inputs = jnp.transpose(act, order).reshape(b, math.prod(act.shape[d + 1] for d in layer.act_features), -1)
    if layer.bias is not None:
        inputs = jnp.concatenate([inputs, jnp.ones((inputs.shape[0], 1, inputs.shape[2]), inputs.dtype)], axis=1)
    return inputs


def output_derivatives(layer: LayerTap, delta: Array) -> Float[Array, "m b n_out T"]:
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


class JacobianRows:
    r"""``W`` (N x b m) with columns the Jacobian rows ``w_ik = J_i^T R_ik`` (example-major), in the layer structure.

    A layer's part of ``w_ik`` is the matrix ``J_ik = sum_t s_ikt a_it^T`` (n_out x n_in), held either explicitly
    (b m, n_out, n_in) or as its inputs ``a`` (b, n_in, T) and output derivatives ``s`` (m, b, n_out, T),
    whichever makes the Gram cheaper (:func:`explicit_is_cheaper`); a rest leaf's part is its per-example rows
    (b m, leaf size). The Gram ``W^T W`` and the products ``W c``, ``W^T v`` are exact contractions of these, with
    no further model calls.
    """

    def __init__(self, tapped: "TappedModel", leaves: list[Array], layer_parts: list[tuple[Array, Array]],
                 rest_rows: list[Array]):
        self.tapped, self.leaves, self.rest = tapped, leaves, rest_rows
        self.layers = [(explicit_jacobian(a, s),) if explicit_is_cheaper(a, s) else (a, s) for a, s in layer_parts]

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
        matrices, rest = self.tapped.to_matrices(leaves)
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
        return self.tapped.from_matrices(matrices, rest, self.leaves)
