r"""Curvature of a batch as ``G = W W^T`` (N x N, never formed): GGN, empirical Fisher, Monte-Carlo Fisher.

With model outputs ``z_i = f(theta, x_i)`` (dz each), batch size b, output Jacobians ``J_i`` (dz x N) and the loss
Hessian in the outputs ``H_i = L_i L_i^T``:

- ``"ggn"``: ``G = (1/b) sum_i J_i^T H_i J_i``, ``W = [J_i^T L_i] / sqrt(b)`` (rank b dz). Exact Gauss-Newton for
  softmax cross-entropy and MSE.
- ``"empirical_fisher"``: ``G = (1/b) sum_i g_i g_i^T`` with per-example gradients ``g_i`` (rank b).
- ``"mc_fisher"``: the same with ``g_i`` at a target sampled from the model's predictive distribution (rank b);
  an unbiased estimate of the GGN for exponential-family losses at a cost of b per-example gradients.

Parameters are any pytree; vectors here are its ``ravel_pytree`` flattening (length N).
"""

from __future__ import annotations

from typing import Callable, Literal

import jax
import jax.numpy as jnp
import jax.random as jr
from jax.flatten_util import ravel_pytree
from jaxtyping import Array, Float, PRNGKeyArray, PyTree

from ._losses import Loss
from ._tap import JacobianRows, TappedModel

CurvatureKind = Literal["ggn", "empirical_fisher", "mc_fisher"]
CURVATURES = ("ggn", "empirical_fisher", "mc_fisher")


class BatchCurvature:
    """The curvature of one batch at ``params``, built lazily inside a trace.

    ``factor()`` forms ``W`` (N x r) explicitly and ``low_rank()`` gives its Gram and products without forming it,
    both from one forward and m reverse passes of the batch (m = dz or dz - 1 for the GGN, 1 for the Fishers).
    ``matvec(v)`` is ``G v`` from one Jacobian-vector and one vector-Jacobian product (2 model calls), never
    forming ``W``.
    """

    def __init__(
        self,
        kind: CurvatureKind,
        predict_fn: Callable,
        loss: Loss,
        params: PyTree,
        inputs: PyTree,
        targets: Array,
        key: PRNGKeyArray,
    ):
        if kind not in CURVATURES:
            raise ValueError(f"unknown curvature {kind!r}; choose one of {CURVATURES}")
        self.kind, self.loss, self.key = kind, loss, key
        self.flat, self.unravel = ravel_pytree(params)
        self.inputs, self.targets = inputs, targets
        self.predict_fn = predict_fn
        self.batch_size = jax.tree_util.tree_leaves(inputs)[0].shape[0]

    def outputs(self, flat: Float[Array, " N"]) -> Float[Array, "b dz"]:
        return self.predict_fn(self.unravel(flat), self.inputs)

    def directions(self, z: Float[Array, "b dz"]) -> Float[Array, "b dz m"]:
        """``R_i`` with ``W = [J_i^T R_i] / sqrt(b)`` at the batch outputs ``z``: ``L_i`` for the GGN, the loss
        gradient in the outputs (at the data or at a sampled target) for the Fisher variants."""
        if self.kind == "ggn":
            return jax.vmap(self.loss.hessian_factor)(z, self.targets)
        targets = self.targets
        if self.kind == "mc_fisher":
            keys = jr.split(self.key, self.batch_size)
            targets = jax.vmap(self.loss.sample_target)(keys, jax.lax.stop_gradient(z))
        return jax.vmap(jax.grad(self.loss))(z, targets)[:, :, None]

    def rows(self) -> JacobianRows:
        """``W`` (columns ``J_i^T R_ik / sqrt(b)``) in the model's layer structure (:meth:`TappedModel.jacobian`):
        one forward and m reverse passes of the batch."""
        scale = 1.0 / jnp.sqrt(self.batch_size)
        params = self.unravel(self.flat)
        example = jax.tree_util.tree_map(lambda leaf: leaf[0], self.inputs)
        return TappedModel(self.predict_fn, params, example).jacobian(
            params, self.inputs, lambda z: jnp.moveaxis(self.directions(z), 2, 0) * scale)

    def low_rank(self) -> tuple[Float[Array, "r r"], Callable, Callable]:
        """``(W^T W, c -> W c, v -> W^T v)`` without forming ``W``: contractions of the layer inputs and output
        derivatives of :meth:`rows` (no further model calls)."""
        rows = self.rows()
        treedef = jax.tree_util.tree_structure(self.unravel(self.flat))

        def factor(c):
            return ravel_pytree(jax.tree_util.tree_unflatten(treedef, rows.apply(c)))[0]

        def factor_transpose(v):
            return rows.transpose_apply(jax.tree_util.tree_leaves(self.unravel(v)))

        return rows.gram(), factor, factor_transpose

    def factor(self) -> Float[Array, "N r"]:
        """``W`` with ``G = W W^T``, formed explicitly (N x r) from :meth:`rows`."""
        return self.rows().matrix().T

    def matvec_fn(self) -> Callable[[Float[Array, " N"]], Float[Array, " N"]]:
        """``v -> G v``; for the GGN by linearizing the model once (1 JVP + 1 VJP per product)."""
        if self.kind != "ggn":
            W = self.factor()
            return lambda v: W @ (W.T @ v)
        b = self.batch_size
        z, jvp = jax.linearize(self.outputs, self.flat)
        vjp = jax.linear_transpose(jvp, self.flat)
        L = jax.vmap(self.loss.hessian_factor)(z, self.targets)

        def matvec(v):
            Jv = jvp(v)
            HJv = jnp.einsum("icd,ied,ie->ic", L, L, Jv)
            (out,) = vjp(HJv / b)
            return out

        return matvec
