"""Symmetric eigendecomposition with the fastest exact LAPACK path on CPU."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float


def eigh(matrix: Float[Array, "n n"]) -> tuple[Float[Array, " n"], Float[Array, "n n"]]:
    """Eigenvalues (ascending) and orthonormal eigenvectors (columns) of a symmetric matrix.

    On CPU this asks XLA for LAPACK's QR-iteration driver: at n ~ 600 it measured ~30 ms against ~0.5-2 s for
    the default divide-and-conquer path on this project's 2-core machine (same accuracy class). Elsewhere it
    is ``jnp.linalg.eigh``.
    """
    if jax.default_backend() == "cpu":
        vectors, values = jax.lax.linalg.eigh(matrix, implementation=jax.lax.linalg.EighImplementation.QR)
        return values, vectors
    return jnp.linalg.eigh(matrix)
