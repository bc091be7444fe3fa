r"""The readout law of a dense programmed drift at one fixed run time, as dense operators.

A run of ``t`` tau from zero with bias ``b`` reads ``x = M(P) b + C(P)^{1/2} z`` (``thermox.OULaw``). When the run
has relaxed to the working precision (``lambda_min(P) t >= -log eps``, certified cheaply) both operators are the
SPD inverse ``P^-1`` (times ``kappa0`` for the covariance), formed by block elimination in matrix products;
otherwise one ``eigh`` gives them. Thermodynamic K-FAC forms these once per programming and applies them every step.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float

from ._conditioning import warn_if_ill_conditioned
from ._drift import EigenDrift
from ._spectral import OULaw

_BLOCK = 256


def spd_inverse(M: Float[Array, "n n"]) -> Float[Array, "n n"]:
    r"""``M^-1`` of a symmetric positive definite matrix by recursive 2 x 2 block elimination.

    With ``M = [[P, B], [B^T, C]]`` and the Schur complement ``Z = C - B^T P^-1 B`` (SPD when ``M`` is),
    ``M^-1 = [[P^-1 + P^-1 B Z^-1 B^T P^-1, -P^-1 B Z^-1], [-Z^-1 B^T P^-1, Z^-1]]``; blocks of at most
    ``_BLOCK`` rows are inverted through their Cholesky factor. This is the block LDL^T elimination (no pivoting
    needed for SPD matrices); its flops are :func:`spd_inverse_flops` (1.4 n^3 at n = 1024), nearly all in matrix
    products: on CPU about 2.5x faster than LAPACK's triangular solves against the identity, with the same
    accuracy (~ kappa eps). The result is
    symmetrised. A matrix that is not positive definite gives non-finite entries (a Cholesky pivot fails).
    """
    n = M.shape[0]
    if n <= _BLOCK:
        inverse = jax.scipy.linalg.cho_solve(jax.scipy.linalg.cho_factor(M), jnp.eye(n, dtype=M.dtype))
    else:
        k = n // 2
        P_inv = spd_inverse(M[:k, :k])
        B = M[:k, k:]
        P_inv_B = P_inv @ B
        Z_inv = spd_inverse(M[k:, k:] - B.T @ P_inv_B)
        X = P_inv_B @ Z_inv
        inverse = jnp.block([[P_inv + X @ P_inv_B.T, -X], [-X.T, Z_inv]])
    return 0.5 * (inverse + inverse.T)


def spd_inverse_flops(n: int) -> float:
    """Flops of :func:`spd_inverse` at size ``n``: ``7/3 n^3`` for a Cholesky-solved block (factor ``n^3 / 3``,
    solves against the identity ``2 n^3``), else both halves plus the four products of the elimination."""
    if n <= _BLOCK:
        return 7.0 / 3.0 * n**3
    k, m = n // 2, n - n // 2
    return spd_inverse_flops(k) + spd_inverse_flops(m) + 2.0 * k * m * (2 * k + 2 * m)


class OULawOperators(NamedTuple):
    r"""The readout law of a programmed drift ``P`` as dense operators: a run from zero with bias ``b`` reads
    ``x = mean b + noise z``, ``z ~ N(0, I)`` (``thermox.OULaw``: ``mean = M(P) = (I - e^{-P t}) P^-1``,
    ``noise noise^T = C(P) = kappa0 (I - e^{-2 P t}) P^-1``; ``noise`` is None on a noiseless device)."""

    mean: Float[Array, "n n"]
    noise: Float[Array, "n n"] | None


def relaxation_threshold(t, dtype) -> Float[Array, ""]:
    """``mu = -log(eps) / t``: for ``lambda_min(P) >= mu`` the transient ``e^{-P t}`` is below ``eps``."""
    return -jnp.log(jnp.finfo(dtype).eps).astype(dtype) / t


def relaxation_certificates(P: Float[Array, "n n"], inverse: Float[Array, "n n"], mu) -> tuple[Array, Array]:
    """``(bounded, relaxed)``: ``bounded`` when ``||P^-1||_inf mu <= 1`` (the row-sum norm bounds the largest
    eigenvalue of ``P^-1``, so ``lambda_min(P) >= mu``); ``relaxed`` when that holds or, checked only if it does not,
    ``P - mu I`` has a Cholesky factorisation. False for a non-finite inverse or an indefinite ``P - mu I``."""
    bounded = jnp.max(jnp.sum(jnp.abs(inverse), axis=1)) * mu <= 1.0
    # P.T (= P): LAPACK wants the transposed layout, which P.T is without a copy of P ahead of the cond.
    factorable = lambda P: jnp.all(jnp.isfinite(jnp.linalg.cholesky(P.T - mu * jnp.eye(P.shape[0], dtype=P.dtype))))
    return bounded, jax.lax.cond(bounded, lambda P: jnp.asarray(True), factorable, P)


def ou_law_operators(P: Float[Array, "n n"], t, kappa0, *, noisy: bool) -> OULawOperators:
    r"""The exact readout law of the drift ``P`` after ``t`` tau (units of tau), as :class:`OULawOperators`.

    The law depends on ``P`` through ``e^{-P t}``. When ``lambda_min(P) >= mu = -log(eps) / t``
    (:func:`relaxation_threshold`), every ``e^{-w t}`` is below the working precision ``eps``, so ``M(P) = P^-1``
    and ``C(P) = kappa0 P^-1`` to rounding: the mean operator is :func:`spd_inverse` and the noise root its Cholesky
    factor (``L L^T = P^-1``). The bound is certified cheaply by ``||P^-1||_inf <= 1 / mu`` (the row-sum norm bounds
    the largest eigenvalue of ``P^-1``), else by a Cholesky factorisation of ``P - mu I``. Otherwise (a run shorter
    than a few relaxation times) the law is evaluated on one ``eigh``, ``P = V diag(w) V^T``:
    ``mean = V M(w) V^T`` and ``noise = V C(w)^{1/2}``. (Both certificates are floating-point tests: they can only
    err when ``lambda_min(P) - mu`` is within rounding ``delta`` of zero, and then the neglected transient is still
    at most ``eps e^{delta t}``.) ``noisy`` (static) is False for ``kappa0 = 0``.

    A :class:`thermox.ConditioningWarning` reports a law the precision cannot resolve: the condition estimate is
    ``||P||_inf ||P^-1||_inf`` (LAPACK's normwise one) for a relaxed run, ``M(w_min) / M(w_max)`` for a transient.
    """
    dtype = P.dtype
    mu = relaxation_threshold(t, dtype)
    inverse = spd_inverse(P)
    _, relaxed = relaxation_certificates(P, inverse, mu)
    row_sum_norm = lambda M: jnp.max(jnp.sum(jnp.abs(M), axis=1))

    def settled(P, inverse):
        noise = jnp.sqrt(kappa0).astype(dtype) * jnp.linalg.cholesky(inverse) if noisy else None
        return OULawOperators(inverse, noise), row_sum_norm(P) * row_sum_norm(inverse)

    def transient(P, inverse):
        drift = EigenDrift.from_matrix(P)
        V, w = drift.eigenvectors, drift.eigenvalues
        law = OULaw(jnp.asarray(t, dtype), jnp.asarray(kappa0, dtype), None)
        gains = law.mean_gain(w)
        return OULawOperators((V * gains) @ V.T, V * law.noise_gain(w) if noisy else None), gains[0] / gains[-1]

    operators, kappa = jax.lax.cond(relaxed, settled, transient, P, inverse)
    warn_if_ill_conditioned(kappa, dtype)
    return operators
