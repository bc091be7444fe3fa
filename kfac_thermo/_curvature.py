r"""Curvature of a batch as ``G = W W^T`` (N x N, never formed): GGN, empirical Fisher, Monte-Carlo Fisher.

With model outputs ``z_i = f(theta, x_i)`` (dz each), batch size b, output Jacobians ``J_i`` (dz x N) and the loss
Hessian in the outputs ``H_i = L_i L_i^T``:

- ``"ggn"``: ``G = (1/b) sum_i J_i^T H_i J_i``, ``W = [J_i^T L_i] / sqrt(b)`` (rank b dz). Exact Gauss-Newton for
  softmax cross-entropy and MSE.
- ``"empirical_fisher"``: ``G = (1/b) sum_i g_i g_i^T`` with per-example gradients ``g_i`` (rank b).
- ``"mc_fisher"``: the same with ``g_i`` at a target sampled from the model's predictive distribution (rank b);
  an unbiased estimate of the GGN for exponential-family losses at a cost of b per-example gradients.
- ``"ggn_curvature_prop"``: curvature propagation (Martens, Sutskever & Swersky 2012; kfac-jax's default
  estimator): ``W = [J_i^T L_i v_i] / sqrt(b)`` with independent Rademacher vectors ``v_i`` (rank b). Since
  ``E[v v^T] = I``, ``E[G] = GGN`` for any loss with a Hessian factor, at the Fishers' cost (one reverse pass).

The estimators differ only in the output cotangents ``R_i`` (dz x m) with ``W = [J_i^T R_i] / sqrt(b)``:
:func:`output_directions`.

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

CurvatureKind = Literal["ggn", "empirical_fisher", "mc_fisher", "ggn_curvature_prop"]
CURVATURES = ("ggn", "empirical_fisher", "mc_fisher", "ggn_curvature_prop")
SAMPLED_CURVATURES = ("mc_fisher", "ggn_curvature_prop")


def check_curvature(kind: str, key: PRNGKeyArray | None = None, *, key_now: bool = True) -> None:
    """A known curvature kind and, unless ``key_now=False`` (the key comes later), the key the sampled kinds
    draw from."""
    if kind not in CURVATURES:
        raise ValueError(f"unknown curvature {kind!r}; choose one of {CURVATURES}")
    if key_now and key is None and kind in SAMPLED_CURVATURES:
        raise ValueError(f"curvature={kind!r} samples its estimate: it needs key=")


def output_directions(kind: CurvatureKind, loss: Loss, z: Float[Array, "b dz"], targets: Array,
                      key: PRNGKeyArray | None) -> Float[Array, "b dz m"]:
    """The output cotangents ``R_i`` of each curvature kind at the batch outputs ``z`` (module docstring):
    ``L_i`` (m = the loss Hessian's rank) for the GGN, ``L_i v_i`` with Rademacher ``v_i`` for curvature
    propagation, the loss gradient in the outputs (at the data, or at a target sampled from the model) for the
    Fishers (m = 1)."""
    if kind in ("ggn", "ggn_curvature_prop"):
        L = jax.vmap(loss.hessian_factor)(z, targets)
        if kind == "ggn":
            return L
        v = jr.rademacher(key, (L.shape[0], L.shape[2]), dtype=L.dtype)
        return jnp.einsum("idk,ik->id", L, v)[:, :, None]
    if kind == "mc_fisher":
        keys = jr.split(key, z.shape[0])
        targets = jax.vmap(loss.sample_target)(keys, jax.lax.stop_gradient(z))
    return jax.vmap(jax.grad(loss))(z, targets)[:, :, None]


class BatchCurvature:
    """The curvature of one batch at ``params``, built lazily inside a trace.

    ``factor()`` forms ``W`` (N x r) explicitly and ``low_rank()`` gives its Gram and products without forming it,
    both from one forward and m reverse passes of the batch (m = dz or dz - 1 for the GGN, 1 for the sampled and
    empirical estimates). ``matvec_fn()`` gives ``v -> G v`` without forming ``W``.
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
        check_curvature(kind, key)
        self.kind, self.loss, self.key = kind, loss, key
        self.flat, self.unravel = ravel_pytree(params)
        self.inputs, self.targets = inputs, targets
        self.predict_fn = predict_fn
        self.batch_size = jax.tree_util.tree_leaves(inputs)[0].shape[0]

    def outputs(self, flat: Float[Array, " N"]) -> Float[Array, "b dz"]:
        return self.predict_fn(self.unravel(flat), self.inputs)

    def directions(self, z: Float[Array, "b dz"]) -> Float[Array, "b dz m"]:
        """``R_i`` with ``W = [J_i^T R_i] / sqrt(b)`` at the batch outputs ``z`` (:func:`output_directions`)."""
        return output_directions(self.kind, self.loss, z, self.targets, self.key)

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
        return (rows.gram(), *self._products(rows))

    def _products(self, rows: JacobianRows) -> tuple[Callable, Callable]:
        """``(c -> W c, v -> W^T v)`` on flat vectors, from the rows' per-layer contractions."""
        treedef = jax.tree_util.tree_structure(self.unravel(self.flat))

        def factor(c):
            return ravel_pytree(jax.tree_util.tree_unflatten(treedef, rows.apply(c)))[0]

        def factor_transpose(v):
            return rows.transpose_apply(jax.tree_util.tree_leaves(self.unravel(v)))

        return factor, factor_transpose

    def factor(self) -> Float[Array, "N r"]:
        """``W`` with ``G = W W^T``, formed explicitly (N x r) from :meth:`rows`."""
        return self.rows().matrix().T

    def matvec_fn(self) -> Callable[[Float[Array, " N"]], Float[Array, " N"]]:
        """``v -> G v``: for the GGN by linearizing the model once (1 JVP + 1 VJP per product); for the rank-b
        estimates as ``W (W^T v)`` from :meth:`rows` (one forward and one reverse pass; neither ``W`` nor its Gram
        is formed)."""
        if self.kind != "ggn":
            factor, factor_transpose = self._products(self.rows())
            return lambda v: factor(factor_transpose(v))
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
