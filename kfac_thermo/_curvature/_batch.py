r"""The curvature of one batch as ``G = W W^T`` (N x N, never formed), for the natural-gradient family.

With model outputs ``z_i = f(theta, x_i)`` (dz each), batch size b and output Jacobians ``J_i`` (dz x N),
``G = (1/b) sum_i J_i^T R_i R_i^T J_i``, ``W = [J_i^T R_i] / sqrt(b)``, with the output cotangents ``R_i`` of the
curvature kind (``_directions.py``: the GGN, the empirical and Monte-Carlo Fishers, curvature propagation).

Parameters are any pytree; vectors here are its ``ravel_pytree`` flattening (length N).
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
from jax.flatten_util import ravel_pytree
from jaxtyping import Array, Float, PRNGKeyArray, PyTree

from .._losses import Loss
from .._model import JacobianRows, TappedModel
from .._work import Work, digital
from ._directions import CurvatureKind, check_curvature, output_directions


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

    def passes(self, forward: int, reverse: int) -> Work:
        """The work of ``forward`` forward and ``reverse`` reverse passes of the model over this batch."""
        return digital(forward_passes=forward, reverse_passes=reverse, examples=self.batch_size,
                       params=self.flat.shape[0])

    def jacobian_work(self, rank: int) -> Work:
        """The passes of :meth:`jacobian_rows` for ``rank`` Jacobian rows: one forward and ``rank / b`` (= m)
        reverse passes."""
        return self.passes(1, rank // self.batch_size)

    def outputs(self, flat: Float[Array, " N"]) -> Float[Array, "b dz"]:
        return self.predict_fn(self.unravel(flat), self.inputs)

    def directions(self, z: Float[Array, "b dz"]) -> Float[Array, "b dz m"]:
        """``R_i`` with ``W = [J_i^T R_i] / sqrt(b)`` at the batch outputs ``z`` (:func:`output_directions`)."""
        return output_directions(self.kind, self.loss, z, self.targets, self.key)

    def jacobian_rows(self) -> JacobianRows:
        """``W`` (columns ``J_i^T R_ik / sqrt(b)``) in the model's layer structure (:meth:`TappedModel.jacobian`):
        one forward and m reverse passes of the batch."""
        scale = 1.0 / jnp.sqrt(self.batch_size)
        params = self.unravel(self.flat)
        example = jax.tree_util.tree_map(lambda leaf: leaf[0], self.inputs)
        return TappedModel(self.predict_fn, params, example).jacobian(
            params, self.inputs, lambda z: jnp.moveaxis(self.directions(z), 2, 0) * scale)

    def low_rank(self) -> tuple[Float[Array, "r r"], Callable, Callable]:
        """``(W^T W, c -> W c, v -> W^T v)`` without forming ``W``: contractions of the layer inputs and output
        derivatives of :meth:`jacobian_rows` (no further model calls)."""
        rows = self.jacobian_rows()
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
        """``W`` with ``G = W W^T``, formed explicitly (N x r) from :meth:`jacobian_rows`."""
        return self.jacobian_rows().matrix().T

    def matvec_fn(self) -> Callable[[Float[Array, " N"]], Float[Array, " N"]]:
        """``v -> G v``: for the GGN by linearizing the model once (1 JVP + 1 VJP per product); for the rank-b
        estimates as ``W (W^T v)`` from :meth:`jacobian_rows` (one forward and one reverse pass; neither ``W`` nor
        its Gram is formed)."""
        if self.kind != "ggn":
            factor, factor_transpose = self._products(self.jacobian_rows())
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
