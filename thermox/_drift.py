"""Drift matrices of the OU device: dense, eigendecomposed, low-rank plus shift, or matrix-free.

Each drift ``A`` (symmetric positive definite, dimensionless in units of 1/tau) knows its matvec and how to
apply a scalar function ``f(A)`` to vectors (the columns of a matrix), which is all the exact law needs.
"""

from __future__ import annotations

import abc
from typing import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
import lineax as lx
from jaxtyping import Array, ArrayLike, Float

from ._conditioning import warn_if_ill_conditioned
from ._eigh import eigh
from ._krylov import krylov_apply, lanczos_fn
from ._spectral import ScalarFn


def _columnwise(fn, x):
    """Apply a vector function to a vector, or to each column of a matrix."""
    if x.ndim == 1:
        return fn(x)
    return jax.vmap(fn, in_axes=1, out_axes=1)(x)


class AbstractDrift(eqx.Module):
    """A symmetric positive definite drift operator of size ``n``."""

    @property
    @abc.abstractmethod
    def size(self) -> int:
        """Dimension n (number of device cells)."""

    @abc.abstractmethod
    def matvec(self, v: Float[Array, " n"]) -> Float[Array, " n"]:
        """``A v`` for one vector."""

    def mv(self, x: Float[Array, "n *k"]) -> Float[Array, "n *k"]:
        """``A x`` for a vector or, column by column, a matrix."""
        return _columnwise(self.matvec, x)

    def spectrum_bounds(self) -> tuple[Float[Array, ""], Float[Array, ""]] | None:
        """A lower bound of the smallest and an upper bound of the largest eigenvalue when known without extra work
        (from a decomposition already made), else None."""
        return None

    def apply_fn(self, fn: ScalarFn, x: Float[Array, "n *k"], *, krylov_dim: int, krylov_rtol: float):
        """``f(A) x`` by Lanczos from the matvec alone (the matrix-free exact path); a
        :class:`thermox.ConditioningWarning` when the Ritz values' ``max |f| / min |f|`` exceeds what the precision
        resolves."""
        dim = min(krylov_dim, self.size)
        apply = lambda v: krylov_apply(self.matvec, fn, v, dim=dim, rtol=krylov_rtol)
        out, ratio = apply(x) if x.ndim == 1 else jax.vmap(apply, in_axes=1, out_axes=(1, 0))(x)
        warn_if_ill_conditioned(jnp.max(ratio), x.dtype)
        return out


class DenseDrift(AbstractDrift):
    """A dense symmetric drift matrix (what the device's coupling array is programmed with)."""

    matrix: Float[Array, "n n"]

    @property
    def size(self) -> int:
        return self.matrix.shape[0]

    def matvec(self, v):
        return self.matrix @ v

    def mv(self, x):
        return self.matrix @ x

    def eigen(self) -> "EigenDrift":
        """One symmetric eigendecomposition (``eigh``), reusable across calls."""
        return EigenDrift.from_matrix(self.matrix)


class EigenDrift(AbstractDrift):
    """``A = V diag(w) V^T`` from one ``eigh``; ``f(A) x = V (f(w) * V^T x)`` is then exact and O(n^2).

    Build once with :meth:`from_matrix` and pass it wherever a drift is accepted to reuse the
    decomposition across solves with the same matrix.
    """

    eigenvalues: Float[Array, " n"]
    eigenvectors: Float[Array, "n n"]

    @classmethod
    def from_matrix(cls, matrix: Float[ArrayLike, "n n"]) -> "EigenDrift":
        matrix = check_symmetric(jnp.asarray(matrix))
        w, V = eigh(matrix)
        w = eqx.error_if(
            w, w[0] <= 0, "thermox: the drift matrix is not positive definite (smallest eigenvalue <= 0)"
        )
        return cls(w, V)

    @property
    def size(self) -> int:
        return self.eigenvalues.shape[0]

    def matvec(self, v):
        return self.eigenvectors @ (self.eigenvalues * (self.eigenvectors.T @ v))

    def mv(self, x):
        w = self.eigenvalues if x.ndim == 1 else self.eigenvalues[:, None]
        return self.eigenvectors @ (w * (self.eigenvectors.T @ x))

    def spectrum_bounds(self):
        return self.eigenvalues[0], self.eigenvalues[-1]

    def apply_fn(self, fn, x, **_):
        f = fn(self.eigenvalues)
        f = f if x.ndim == 1 else f[:, None]
        return self.eigenvectors @ (f * (self.eigenvectors.T @ x))


class LowRankDrift(AbstractDrift):
    """``A = shift I + W W^T`` with ``W`` (n x r) given by its products; exact and never n x n.

    With ``W^T W = Q diag(s) Q^T`` (an r x r ``eigh``) and ``U = W Q diag(s)^-1/2`` (orthonormal columns),
    ``f(A) x = f(shift) x + U (f(shift + s) - f(shift)) U^T x``: two products with ``W`` per call.
    This is the structure of a damped Gauss-Newton matrix ``J^T H J / b + damping I``.
    Build it from an explicit ``W`` with :meth:`from_factor` (then the device can program, i.e. quantize,
    its entries) or from the products alone with the constructor.

    Attributes:
        shift: the positive scalar (damping) added to the identity.
        gram: ``W^T W``, r x r symmetric positive semi-definite.
        factor: ``c -> W c`` (r -> n), linear.
        factor_transpose: ``v -> W^T v`` (n -> r), linear.
        n: the dimension.
        matrix: the explicit ``W`` when known, else None.
    """

    shift: Float[Array, ""]
    gram: Float[Array, "r r"]
    factor: Callable
    factor_transpose: Callable
    n: int = eqx.field(static=True)
    matrix: Float[Array, "n r"] | None = None
    gram_eigen: tuple[Float[Array, " r"], Float[Array, "r r"]] | None = None

    @classmethod
    def from_factor(cls, shift: Float[ArrayLike, ""], W: Float[ArrayLike, "n r"]) -> "LowRankDrift":
        """``shift I + W W^T`` from an explicit (n, r) factor."""
        W = jnp.asarray(W)
        if W.ndim != 2:
            raise ValueError(f"thermox: a low-rank factor must be an (n, r) matrix, got shape {W.shape}")
        W = eqx.error_if(W, ~jnp.all(jnp.isfinite(W)), "thermox: the low-rank factor has non-finite entries")
        return cls(jnp.asarray(shift, W.dtype), W.T @ W, lambda c: W @ c, lambda v: W.T @ v, W.shape[0], W)

    def __check_init__(self):
        if not isinstance(self.shift, jax.core.Tracer) and not float(self.shift) > 0:
            raise ValueError(f"thermox: a LowRankDrift needs shift > 0 to be positive definite, got {self.shift}")

    @property
    def size(self) -> int:
        return self.n

    def matvec(self, v):
        return self.shift * v + self.factor(self.factor_transpose(v))

    def mv(self, x):
        return self.shift * x + _columnwise(lambda v: self.factor(self.factor_transpose(v)), x)

    def spectrum_bounds(self):
        """``shift`` and ``shift + s_max``: ``s_max`` from the Gram's ``eigh`` when done, else bounded by the row-sum
        norm of the Gram."""
        if self.gram_eigen is not None:
            top = jnp.maximum(self.gram_eigen[0][-1], 0.0)
        else:
            top = jnp.max(jnp.sum(jnp.abs(self.gram), axis=1))
        return self.shift, self.shift + top

    def diagonalized(self) -> "LowRankDrift":
        """The same drift with the r x r ``eigh`` of the Gram matrix done once, for several ``apply_fn`` calls."""
        s, Q = eigh(self.gram)
        return eqx.tree_at(lambda d: d.gram_eigen, self, (s, Q), is_leaf=lambda x: x is None)

    def divided_difference(self, fn: ScalarFn) -> ScalarFn:
        """``g(s) = (f(shift + s) - f(shift)) / s``, so that ``f(A) = f(shift) I + W g(W^T W) W^T``.

        Near ``s = 0`` (``|s| < eps^(1/3) shift``) the second-order Taylor expansion replaces the quotient, which
        balances its truncation error against the quotient's cancellation (both ~eps^(2/3)).
        """
        shift = self.shift
        f_shift = fn(shift)
        d1 = jax.grad(fn)(shift)
        d2 = jax.grad(jax.grad(fn))(shift)
        threshold = float(jnp.finfo(self.gram.dtype).eps) ** (1.0 / 3.0) * shift

        def g(s):
            small = jnp.abs(s) < threshold
            safe = jnp.where(small, 1.0, s)
            return jnp.where(small, d1 + 0.5 * d2 * s, (fn(shift + safe) - f_shift) / safe)

        return g

    def _gram_fn_eigh(self, g: ScalarFn, c: Float[Array, " r"]) -> Float[Array, " r"]:
        s, Q = self.gram_eigen if self.gram_eigen is not None else eigh(self.gram)
        return Q @ (g(jnp.maximum(s, 0.0)) * (Q.T @ c))

    def prepared(self, krylov_dim: int) -> "LowRankDrift":
        """This drift :meth:`diagonalized` when ``r <= krylov_dim`` and it is not yet (the Gram's ``eigh`` is then
        exact and cheaper than Lanczos), else itself: callers applying several functions of one drift (the OU
        mean and noise, every step of a path) prepare it once so that ``eigh`` runs once."""
        if self.gram_eigen is None and self.gram.shape[0] <= krylov_dim:
            return self.diagonalized()
        return self

    def apply_fn(self, fn, x, *, krylov_dim: int = 64, krylov_rtol: float = 1e-6, **_):
        """``f(A) x = f(shift) x + W g(W^T W) W^T x``: the r x r function by the Gram's ``eigh`` when this drift is
        :meth:`diagonalized` (method "exact") or when ``r <= krylov_dim`` (Lanczos could need all r steps; the
        ``eigh`` is then exact and cheaper), else by Lanczos on the Gram (method "krylov": a few r x r matvecs,
        exact to ``krylov_rtol``), falling back to the ``eigh`` when Lanczos has not converged in ``krylov_dim``
        steps. Two products with ``W`` either way; nothing n x n.
        """
        if self is not (prepared := self.prepared(krylov_dim)):
            return prepared.apply_fn(fn, x)
        g = self.divided_difference(fn)
        f_shift = fn(self.shift)

        def gram_fn(c):
            if self.gram_eigen is not None:
                return self._gram_fn_eigh(g, c)
            lanczos = lanczos_fn(lambda q: self.gram @ q, g, c, dim=krylov_dim, rtol=krylov_rtol)
            return jax.lax.cond(lanczos.converged, lambda: lanczos.value, lambda: self._gram_fn_eigh(g, c))

        return _columnwise(lambda v: f_shift * v + self.factor(gram_fn(self.factor_transpose(v))), x)


class DiagonalDrift(AbstractDrift):
    """Uncoupled cells: ``A = diag(d)``, each cell relaxing on its own; ``f(A) x = f(d) * x`` exactly."""

    diagonal: Float[Array, " n"]

    @property
    def size(self) -> int:
        return self.diagonal.shape[0]

    def matvec(self, v):
        return self.diagonal * v

    def mv(self, x):
        return self.apply_fn(lambda d: d, x)

    def spectrum_bounds(self):
        return jnp.min(self.diagonal), jnp.max(self.diagonal)

    def apply_fn(self, fn, x, **_):
        f = fn(self.diagonal)
        return (f if x.ndim == 1 else f[:, None]) * x


class KroneckerDrift(AbstractDrift):
    r"""``A = scale (L (x) R) + shift I`` acting on the row-major vector of a (p, q) matrix ``V``:
    ``A vec(V) = vec(scale L V R + shift V)``, with ``L`` (p x p) and ``R`` (q x q) symmetric positive semi-definite
    (K-FAC's output and input factors) held by their eigendecompositions ``L = Q_L diag(l) Q_L^T``,
    ``R = Q_R diag(r) Q_R^T``. Then ``A`` has eigenvalues ``scale l_i r_j + shift`` and, exactly and in
    O(p q (p + q)),

        f(A) vec(V) = vec(Q_L [f(scale l r^T + shift) * (Q_L^T V Q_R)] Q_R^T).

    Build it with :meth:`from_factors`.
    """

    left_eigen: tuple[Float[Array, " p"], Float[Array, "p p"]]
    right_eigen: tuple[Float[Array, " q"], Float[Array, "q q"]]
    scale: Float[Array, ""]
    shift: Float[Array, ""]

    @classmethod
    def from_factors(cls, left: Float[ArrayLike, "p p"], right: Float[ArrayLike, "q q"], *,
                     scale: Float[ArrayLike, ""] = 1.0, shift: Float[ArrayLike, ""]) -> "KroneckerDrift":
        """``scale (left (x) right) + shift I`` from the two factors (one ``eigh`` each; eigenvalues clipped at 0)."""
        left, right = check_symmetric(jnp.asarray(left)), check_symmetric(jnp.asarray(right))
        (l, Ql), (r, Qr) = eigh(left), eigh(right)
        dtype = left.dtype
        return cls((jnp.maximum(l, 0.0), Ql), (jnp.maximum(r, 0.0), Qr), jnp.asarray(scale, dtype),
                   jnp.asarray(shift, dtype))

    def __check_init__(self):
        if not isinstance(self.shift, jax.core.Tracer) and not float(self.shift) > 0:
            raise ValueError(f"thermox: a KroneckerDrift needs shift > 0 to be positive definite, got {self.shift}")

    @property
    def shape(self) -> tuple[int, int]:
        """``(p, q)``: the shape of the matrix the drift acts on."""
        return self.left_eigen[0].shape[0], self.right_eigen[0].shape[0]

    @property
    def size(self) -> int:
        return self.shape[0] * self.shape[1]

    def eigenvalues(self) -> Float[Array, "p q"]:
        """``scale l_i r_j + shift``, the eigenvalue of the eigenvector ``q_L,i (x) q_R,j``."""
        return self.scale * jnp.outer(self.left_eigen[0], self.right_eigen[0]) + self.shift

    def spectrum_bounds(self):
        w = self.eigenvalues()
        return jnp.min(w), jnp.max(w)

    def _apply_one(self, f: Float[Array, "p q"], v: Float[Array, " n"]) -> Float[Array, " n"]:
        (_, Ql), (_, Qr) = self.left_eigen, self.right_eigen
        V = v.reshape(self.shape)
        return (Ql @ (f * (Ql.T @ V @ Qr)) @ Qr.T).reshape(-1)

    def matvec(self, v):
        return self._apply_one(self.eigenvalues(), v)

    def apply_fn(self, fn, x, **_):
        f = fn(self.eigenvalues())
        return _columnwise(lambda v: self._apply_one(f, v), x)


class OperatorDrift(AbstractDrift):
    """A matrix-free drift known only through ``v -> A v`` (a matvec or a lineax operator)."""

    operator: Callable
    n: int = eqx.field(static=True)

    @property
    def size(self) -> int:
        return self.n

    def matvec(self, v):
        return self.operator(v)


def check_symmetric(matrix: Float[Array, "n n"]) -> Float[Array, "n n"]:
    """Shape check (static) and a run-time check of finiteness and symmetry of a dense drift."""
    if matrix.ndim != 2 or matrix.shape[0] != matrix.shape[1]:
        raise ValueError(f"thermox: the drift matrix must be square, got shape {matrix.shape}")
    matrix = eqx.error_if(
        matrix, ~jnp.all(jnp.isfinite(matrix)), "thermox: the drift matrix has non-finite entries"
    )
    asym = jnp.max(jnp.abs(matrix - matrix.T))
    scale = jnp.max(jnp.abs(matrix))
    tol = 1e3 * jnp.finfo(matrix.dtype).eps * scale
    return eqx.error_if(
        matrix, asym > tol, "thermox: the drift matrix must be symmetric (|A - A^T| is not ~0)"
    )


def as_drift(A, n: int | None = None) -> AbstractDrift:
    """Wrap what the user passed as a drift: an array, a lineax operator, a callable, or a drift.

    Args:
        A: a dense (n, n) array, an ``AbstractDrift``, a ``lineax.AbstractLinearOperator`` or a callable
            ``v -> A v``.
        n: the dimension, needed only for a bare callable (taken from the right-hand side).
    """
    if isinstance(A, AbstractDrift):
        return A
    if isinstance(A, lx.AbstractLinearOperator):
        if A.in_size() != A.out_size():
            raise ValueError(f"thermox: the drift operator must be square, got {A.out_size()}x{A.in_size()}")
        if isinstance(A, lx.MatrixLinearOperator):
            return DenseDrift(check_symmetric(A.as_matrix()))
        return OperatorDrift(A.mv, A.in_size())
    if callable(A):
        if n is None:
            raise ValueError("thermox: a callable drift needs the dimension (from the right-hand side)")
        return OperatorDrift(A, n)
    return DenseDrift(check_symmetric(jnp.asarray(A)))
