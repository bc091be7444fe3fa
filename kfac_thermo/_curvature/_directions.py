r"""The curvature kinds and their output cotangents ``R_i`` (dz x m per example).

Every curvature here is ``G = W W^T`` with Jacobian rows ``W = [J_i^T R_i] / sqrt(b)`` (N x b m): the kinds
differ only in ``R_i`` (with ``H_i = L_i L_i^T`` the loss Hessian in the outputs):

- ``"ggn"``: ``R_i = L_i`` (m = the Hessian's rank: dz - 1 for softmax cross-entropy, dz for MSE). Exact
  Gauss-Newton for softmax cross-entropy and MSE.
- ``"empirical_fisher"``: ``R_i`` the loss gradient in the outputs at the data (m = 1).
- ``"mc_fisher"``: the same at a target sampled from the model's predictive distribution (m = 1); an unbiased
  estimate of the GGN for exponential-family losses.
- ``"ggn_curvature_prop"``: curvature propagation (Martens, Sutskever & Swersky 2012; kfac-jax's default
  estimator): ``R_i = L_i v_i`` with independent Rademacher vectors ``v_i`` (m = 1). Since ``E[v v^T] = I``,
  ``E[G] = GGN`` for any loss with a Hessian factor.
"""

from __future__ import annotations

from typing import Literal

import jax
import jax.numpy as jnp
import jax.random as jr
from jaxtyping import Array, Float, PRNGKeyArray

from .._losses import Loss

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
