"""Lanczos evaluation of ``f(A) v`` for a symmetric operator given only by its matvec."""

from __future__ import annotations

from typing import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float

from ._eigh import eigh
from ._spectral import ScalarFn

Matvec = Callable[[Float[Array, " n"]], Float[Array, " n"]]


def _lanczos(mv: Matvec, v: Float[Array, " n"], dim: int):
    """``dim`` steps of Lanczos with full (twice-applied) reorthogonalization.

    Returns the orthonormal basis ``Q`` (dim x n, rows; zero rows after a breakdown), the diagonal
    ``alpha`` and off-diagonal ``beta`` of the tridiagonal ``T = Q A Q^T``, and ``|v|``.
    """
    n = v.shape[0]
    norm_v = jnp.linalg.norm(v)
    q0 = jnp.where(norm_v > 0, v / jnp.where(norm_v > 0, norm_v, 1.0), 0.0)
    basis = jnp.zeros((dim + 1, n), v.dtype).at[0].set(q0)
    tiny = jnp.finfo(v.dtype).eps

    def body(j, carry):
        basis, alpha, beta = carry
        q = basis[j]
        w = mv(q)
        a = jnp.vdot(q, w)
        w = w - a * q - jnp.where(j > 0, beta[j - 1], 0.0) * basis[jnp.maximum(j - 1, 0)]
        for _ in range(2):
            w = w - basis.T @ (basis @ w)
        b = jnp.linalg.norm(w)
        scale = jnp.abs(a) + jnp.where(j > 0, beta[j - 1], 0.0)
        alive = b > 100 * tiny * jnp.maximum(scale, tiny)
        q_next = jnp.where(alive, w / jnp.where(alive, b, 1.0), 0.0)
        return basis.at[j + 1].set(q_next), alpha.at[j].set(a), beta.at[j].set(jnp.where(alive, b, 0.0))

    alpha = jnp.zeros((dim,), v.dtype)
    beta = jnp.zeros((dim,), v.dtype)
    basis, alpha, beta = jax.lax.fori_loop(0, dim, body, (basis, alpha, beta))
    return basis[:dim], alpha, beta, norm_v


def _tridiagonal_fn_e1(alpha, beta, fn: ScalarFn):
    """``f(T) e1`` for the symmetric tridiagonal T with diagonal alpha and off-diagonal beta[:-1]."""
    T = jnp.diag(alpha) + jnp.diag(beta[:-1], 1) + jnp.diag(beta[:-1], -1)
    theta, S = eigh(T)
    return S @ (fn(theta) * S[0]), theta


def lanczos_fn(
    mv: Matvec, fn: ScalarFn, v: Float[Array, " n"], *, dim: int, rtol: float
) -> tuple[Float[Array, " n"], Array, Array]:
    """``f(A) v`` from a ``dim``-step Lanczos projection ``|v| Q^T f(T) e1``, with two run-time flags.

    Returns ``(f(A) v, converged, indefinite)``: ``converged`` when the change between the ``dim - 1`` and
    ``dim`` step approximations is at most ``rtol * |f(A) v|`` (or the Krylov space became invariant, or
    ``v = 0``), ``indefinite`` when a Ritz value is negative (the operator is not positive definite).
    """
    basis, alpha, beta, norm_v = _lanczos(mv, v, dim)
    coef, theta = _tridiagonal_fn_e1(alpha, beta, fn)
    coef_prev, _ = _tridiagonal_fn_e1(alpha[:-1], beta[:-1], fn)
    change = jnp.linalg.norm(coef[:-1] - coef_prev) + jnp.abs(coef[-1])
    # A breakdown (beta == 0) means the Krylov space is invariant under A: the result is exact.
    converged = (change <= rtol * jnp.linalg.norm(coef)) | jnp.any(beta == 0) | (norm_v == 0)
    indefinite = jnp.any(theta < -rtol * jnp.max(jnp.abs(theta)))
    return norm_v * (basis.T @ coef), converged, indefinite


def krylov_apply(
    mv: Matvec, fn: ScalarFn, v: Float[Array, " n"], *, dim: int, rtol: float
) -> Float[Array, " n"]:
    """:func:`lanczos_fn` that fails at run time (``equinox.error_if``) rather than return an inaccurate law:
    when Lanczos did not converge (asking for a larger ``krylov_dim``) or the drift is not positive definite."""
    out, converged, indefinite = lanczos_fn(mv, fn, v, dim=dim, rtol=rtol)
    out = eqx.error_if(
        out, indefinite, "thermox: the drift operator has a negative Ritz value: it is not positive definite"
    )
    return eqx.error_if(
        out, ~converged,
        "thermox: Lanczos did not reach krylov_rtol; increase krylov_dim (ill-conditioned drift or long t)",
    )
