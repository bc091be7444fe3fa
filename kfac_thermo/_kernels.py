"""The digital work of one linear-algebra kernel (a BLAS or LAPACK routine, or one XLA operation), as a
:class:`kfac_thermo.Work` record: its flops, the bytes it reads and writes, one launch."""

from __future__ import annotations

import jax.numpy as jnp
from jaxtyping import ArrayLike

from ._work import Work, digital


def kernel_work(kind: str, flops: ArrayLike, values: ArrayLike, dtype) -> Work:
    """One kernel of ``kind`` (:data:`kfac_thermo._work.DIGITAL_KINDS`) doing ``flops`` floating-point
    operations and moving ``values`` array entries (read plus written) of ``dtype``."""
    itemsize = jnp.dtype(dtype).itemsize
    return digital(flops={kind: flops}, bytes={kind: jnp.asarray(values, jnp.float32) * itemsize},
                   kernels={kind: 1.0})


def matmul_work(kind: str, m: int, k: int, n: int, dtype) -> Work:
    """One product of an (m, k) and a (k, n) matrix: ``2 m k n`` flops, ``m k + k n + m n`` values."""
    return kernel_work(kind, 2.0 * m * k * n, m * k + k * n + m * n, dtype)


def eigh_work(n: int, dtype) -> Work:
    """One symmetric eigendecomposition of an n x n matrix: ``9 n^3`` flops (tridiagonalisation and the QR sweeps
    with eigenvectors), ``2 n^2 + n`` values."""
    return kernel_work("eigh", 9.0 * n**3, 2 * n * n + n, dtype)
