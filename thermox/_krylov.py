"""Lanczos evaluation of ``f(A) v`` for a symmetric operator given only by its matvec."""

from __future__ import annotations

import functools
from typing import Callable, NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float

from ._eigh import eigh
from ._spectral import ScalarFn

Matvec = Callable[[Float[Array, " n"]], Float[Array, " n"]]


class _Lanczos(NamedTuple):
    """Lanczos state: orthonormal basis rows ``Q`` (dim + 1, n; zero rows after a breakdown or not yet
    computed), diagonal ``alpha`` and off-diagonals ``beta`` of ``T = Q A Q^T`` (``beta[j]`` the norm of the residual
    after step ``j``), and ``offband[j]``, the norm of the components of ``A q_j`` along the earlier basis vectors
    that the three-term recurrence left and reorthogonalization removed: the entries of ``Q A Q^T`` outside the
    tridiagonal ``T`` (zero in exact arithmetic)."""

    basis: Array
    alpha: Array
    beta: Array
    offband: Array


def _lanczos_start(v: Float[Array, " n"], dim: int) -> tuple[_Lanczos, Float[Array, ""]]:
    norm_v = jnp.linalg.norm(v)
    q0 = jnp.where(norm_v > 0, v / jnp.where(norm_v > 0, norm_v, 1.0), 0.0)
    basis = jnp.zeros((dim + 1, v.shape[0]), v.dtype).at[0].set(q0)
    zeros = jnp.zeros((dim,), v.dtype)
    return _Lanczos(basis, zeros, zeros, zeros), norm_v


def _lanczos_steps(mv: Matvec, state: _Lanczos, start: Array, stop: Array) -> _Lanczos:
    """Steps ``start, ..., stop - 1`` of Lanczos with full (twice-applied) reorthogonalization."""
    tiny = jnp.finfo(state.basis.dtype).eps

    def body(j, carry):
        basis, alpha, beta, offband = carry
        q = basis[j]
        w = mv(q)
        a = jnp.vdot(q, w)
        w = w - a * q - jnp.where(j > 0, beta[j - 1], 0.0) * basis[jnp.maximum(j - 1, 0)]
        removed = jnp.zeros((), w.dtype)
        for _ in range(2):
            components = basis @ w
            removed = removed + jnp.linalg.norm(components)
            w = w - basis.T @ components
        b = jnp.linalg.norm(w)
        scale = jnp.abs(a) + jnp.where(j > 0, beta[j - 1], 0.0)
        alive = b > 100 * tiny * jnp.maximum(scale, tiny)
        q_next = jnp.where(alive, w / jnp.where(alive, b, 1.0), 0.0)
        return _Lanczos(basis.at[j + 1].set(q_next), alpha.at[j].set(a), beta.at[j].set(jnp.where(alive, b, 0.0)),
                        offband.at[j].set(removed))

    return jax.lax.fori_loop(start, stop, body, state)


def _tridiagonal_fn_e1(alpha, beta, fn: ScalarFn):
    """``f(T) e1`` for the symmetric tridiagonal T with diagonal alpha and off-diagonal beta[:-1]."""
    T = jnp.diag(alpha) + jnp.diag(beta[:-1], 1) + jnp.diag(beta[:-1], -1)
    theta, S = eigh(T)
    return S @ (fn(theta) * S[0]), theta


class LanczosResult(NamedTuple):
    """``f(A) v`` by Lanczos and what is known of it.

    Attributes:
        value: the approximation of ``f(A) v``.
        converged: the convergence test passed (see :func:`lanczos_fn`).
        indefinite: a Ritz value is negative: the operator is not positive definite.
        gain_ratio: ``max |f| / min |f|`` over the Ritz values: the condition number of ``f(A)`` as far as the
            Krylov space sees it (1 for ``v = 0``).
    """

    value: Array
    converged: Array
    indefinite: Array
    gain_ratio: Array


def _check(state: _Lanczos, *, size: int, fn: ScalarFn, rtol: float, dim: int):
    """The ``size``-step approximation's coefficients ``f(T) e1`` (zero-padded to dim), whether it has converged,
    whether a Ritz value is negative, and the ratio of the extreme ``|f|`` over the Ritz values.

    Converged: its change from the ``size - 1`` step approximation is at most ``rtol`` relative, or the Krylov space
    is invariant (a breakdown, ``beta == 0``, which at ``size = n`` always happens) *and* the recurrence residual
    confirms it: every entry of ``Q A Q^T`` outside ``T`` (``offband``) is at most ``rtol |T|``, so that ``T`` is the
    projection of ``A`` to that accuracy. Negative: below ``-eps |T|`` (rounding of a positive definite ``T``
    stays above it; the exact zeros of the block after a breakdown are not negative).
    """
    alpha, beta = state.alpha[:size], state.beta[:size]
    coef, theta = _tridiagonal_fn_e1(alpha, beta, fn)
    coef_prev = _tridiagonal_fn_e1(alpha[:-1], beta[:-1], fn)[0] if size > 1 else jnp.zeros((0,), coef.dtype)
    change = jnp.linalg.norm(coef[:-1] - coef_prev) + jnp.abs(coef[-1])
    scale = jnp.max(jnp.abs(theta))
    invariant = jnp.any(beta == 0) & (jnp.max(state.offband[:size]) <= rtol * scale)
    converged = (change <= rtol * jnp.linalg.norm(coef)) | invariant
    indefinite = jnp.any(theta < -jnp.finfo(theta.dtype).eps * scale)
    gains = jnp.abs(fn(theta))
    active = theta != 0  # the exact zeros of the block after a breakdown are not Ritz values of A
    ratio = jnp.max(jnp.where(active, gains, 0.0)) / jnp.min(jnp.where(active, gains, jnp.inf))
    return jnp.zeros((dim,), coef.dtype).at[:size].set(coef), converged, indefinite, ratio


def lanczos_fn(
    mv: Matvec, fn: ScalarFn, v: Float[Array, " n"], *, dim: int, rtol: float, check_every: int = 8
) -> LanczosResult:
    """``f(A) v`` from a Lanczos projection ``|v| Q^T f(T) e1`` of at most ``dim`` steps, with run-time flags.

    Every ``check_every`` steps (and at ``dim``) the approximation is tested; the first one that has converged is
    returned and no further step (matvec) is taken. ``converged`` when the change between the ``j - 1`` and ``j``
    step approximations is at most ``rtol * |f(A) v|`` at some tested ``j <= dim`` (or the Krylov space became
    invariant, confirmed by the recurrence residual, or ``v = 0``), ``indefinite`` when a Ritz value of the
    returned approximation is negative (the operator is not positive definite).
    """
    state, norm_v = _lanczos_start(v, dim)
    sizes = sorted(set(range(min(check_every, dim), dim, check_every)) | {dim})
    starts, stops = jnp.asarray([0] + sizes[:-1]), jnp.asarray(sizes)
    checks = [functools.partial(_check, size=size, fn=fn, rtol=rtol, dim=dim) for size in sizes]

    def more(carry):
        _, (_, converged, _, _), index = carry
        return ~converged & (index < len(sizes))

    def advance(carry):
        state, _, index = carry
        state = _lanczos_steps(mv, state, starts[index], stops[index])
        return state, jax.lax.switch(index, checks, state), index + 1

    result = (jnp.zeros((dim,), v.dtype), norm_v == 0, jnp.asarray(False), jnp.ones((), v.dtype))
    state, (coef, converged, indefinite, ratio), _ = jax.lax.while_loop(more, advance, (state, result, 0))
    return LanczosResult(norm_v * (state.basis[:dim].T @ coef), converged, indefinite, ratio)


def krylov_apply(
    mv: Matvec, fn: ScalarFn, v: Float[Array, " n"], *, dim: int, rtol: float
) -> tuple[Float[Array, " n"], Float[Array, ""]]:
    """:func:`lanczos_fn` that fails at run time (``equinox.error_if``) rather than return an inaccurate law:
    when Lanczos did not converge (asking for a larger ``krylov_dim``) or the drift is not positive definite.
    Returns ``f(A) v`` and the ratio of the extreme ``|f|`` over the Ritz values (a condition estimate)."""
    out, converged, indefinite, ratio = lanczos_fn(mv, fn, v, dim=dim, rtol=rtol)
    out = eqx.error_if(
        out, indefinite, "thermox: the drift operator has a negative Ritz value: it is not positive definite"
    )
    if dim >= v.shape[0]:
        message = (f"thermox: Lanczos took all n={v.shape[0]} steps without reaching rtol={rtol:g} (its breakdown is "
                   "not confirmed by the recurrence residual): the drift is too ill-conditioned for Lanczos in this "
                   "precision; use thermox.Exact() or float64")
    else:
        message = (f"thermox: Lanczos did not reach rtol={rtol:g} in {dim} steps; increase krylov_dim, the dim of "
                   "thermox.Krylov (ill-conditioned drift or long t)")
    return eqx.error_if(out, ~converged, message), ratio
