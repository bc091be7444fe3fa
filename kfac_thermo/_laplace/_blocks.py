r"""Blocks of a Laplace posterior's precision ``P = n_data G + delta I``: each block holds its curvature ``G_b`` (the
data's sum, already times ``n_data`` over the data seen) in the form that makes ``f(P_b)`` exact, and builds the
``thermox`` drift of ``P_b`` for any prior precision ``delta``.

- :class:`DenseBlock`: ``G = V diag(w) V^T`` (one ``eigh``), ``P = V diag(w + delta) V^T``.
- :class:`LowRankBlock`: ``G = W W^T`` with ``W`` (n x r, r < n) explicit, ``P = delta I + W W^T`` by the r x r
  Gram's ``eigh`` (Woodbury): ``log det P = n log delta + sum_j log(1 + s_j / delta)``.
- :class:`KroneckerBlock`: K-FAC's ``G = L (x) R`` on a layer matrix (``L`` the output factor, ``R`` the input
  factor), ``P = L (x) R + delta I`` with eigenvalues ``l_i r_j + delta``.
- :class:`DiagonalBlock`: ``G = diag(d)``.

Every block also says what sampling it costs: the couplings a chip holds for it and the digital work
(:class:`kfac_thermo.Work`) of one exact sample and of the decomposition it needs.
"""

from __future__ import annotations

import abc

import equinox as eqx
import jax.numpy as jnp
import thermox
from jaxtyping import Array, Float

from .._kernels import eigh_work, kernel_work
from .._work import Work, sequential


class PrecisionBlock(eqx.Module):
    """One block of the posterior precision: the curvature ``G_b`` of ``size`` parameters."""

    @property
    @abc.abstractmethod
    def size(self) -> int:
        """Parameters in the block."""

    @abc.abstractmethod
    def curvature_eigenvalues(self) -> Float[Array, " k"]:
        """The nonzero-structure eigenvalues ``g_j >= 0`` of ``G_b`` (the others, if any, are 0)."""

    @abc.abstractmethod
    def drift(self, prior_precision: Float[Array, ""]) -> thermox.AbstractDrift:
        """``P_b = G_b + delta I`` as a drift whose ``apply_fn`` is exact (digital sampling and the device's law)."""

    def device_drift(self, prior_precision: Float[Array, ""]) -> thermox.AbstractDrift:
        """``P_b`` as the chip's couplings would be programmed (entry by entry where the chip quantizes them)."""
        return self.drift(prior_precision)

    def log_det(self, prior_precision: Float[Array, ""]) -> Float[Array, ""]:
        """``log det(G_b + delta I) = (size - k) log delta + sum_j log(g_j + delta)``."""
        g = self.curvature_eigenvalues()
        return (self.size - g.shape[0]) * jnp.log(prior_precision) + jnp.sum(jnp.log(g + prior_precision))

    @abc.abstractmethod
    def couplings(self) -> int:
        """Coupling values a chip holds to realise ``P_b``."""

    @abc.abstractmethod
    def sample_work(self) -> Work:
        """The digital work of one exact sample ``P_b^{-1/2} z`` once the decomposition is done."""

    @abc.abstractmethod
    def decomposition_work(self) -> Work:
        """The digital work of the decomposition that makes ``f(P_b)`` exact (done once per posterior)."""


class DenseBlock(PrecisionBlock):
    """``G = V diag(w) V^T``, with the matrix kept for the chip's couplings."""

    matrix: Float[Array, "n n"]
    eigenvalues: Float[Array, " n"]
    eigenvectors: Float[Array, "n n"]

    @classmethod
    def from_matrix(cls, matrix: Float[Array, "n n"]) -> "DenseBlock":
        matrix = 0.5 * (matrix + matrix.T)
        w, V = thermox.eigh(matrix)
        return cls(matrix, jnp.maximum(w, 0.0), V)

    @property
    def size(self) -> int:
        return self.matrix.shape[0]

    def curvature_eigenvalues(self):
        return self.eigenvalues

    def drift(self, prior_precision):
        return thermox.EigenDrift(self.eigenvalues + prior_precision, self.eigenvectors)

    def device_drift(self, prior_precision):
        return thermox.DenseDrift(self.matrix + prior_precision * jnp.eye(self.size, dtype=self.matrix.dtype))

    def couplings(self) -> int:
        return self.size * self.size

    def sample_work(self):
        n = self.size
        return kernel_work("precondition", 2.0 * n * n, n * n + 2 * n, self.matrix.dtype)

    def decomposition_work(self):
        return eigh_work(self.size, self.matrix.dtype)


class LowRankBlock(PrecisionBlock):
    """``G = W W^T`` (``W`` n x r, r < n): the Gram ``W^T W = Q diag(s) Q^T`` decomposed once."""

    factor: Float[Array, "n r"]
    gram: Float[Array, "r r"]
    gram_eigenvalues: Float[Array, " r"]
    gram_eigenvectors: Float[Array, "r r"]

    @classmethod
    def from_factor(cls, factor: Float[Array, "n r"]) -> "LowRankBlock":
        gram = factor.T @ factor
        s, Q = thermox.eigh(gram)
        return cls(factor, gram, jnp.maximum(s, 0.0), Q)

    @property
    def size(self) -> int:
        return self.factor.shape[0]

    @property
    def rank(self) -> int:
        return self.factor.shape[1]

    def curvature_eigenvalues(self):
        return self.gram_eigenvalues

    def _low_rank(self, prior_precision, gram_eigen) -> thermox.LowRankDrift:
        W = self.factor
        return thermox.LowRankDrift(jnp.asarray(prior_precision, W.dtype), self.gram, lambda c: W @ c,
                                    lambda v: W.T @ v, W.shape[0], W, gram_eigen)

    def drift(self, prior_precision):
        return self._low_rank(prior_precision, (self.gram_eigenvalues, self.gram_eigenvectors))

    def device_drift(self, prior_precision):
        # The factor the chip holds: ``device.program`` quantizes it and decomposes the realised Gram itself.
        return self._low_rank(prior_precision, None)

    def couplings(self) -> int:
        return thermox.cost.low_rank_couplings(self.size, self.rank)

    def sample_work(self):
        n, r = self.size, self.rank
        return kernel_work("precondition", 4.0 * n * r + 2.0 * r * r, 2 * n * r + r * r, self.factor.dtype)

    def decomposition_work(self):
        n, r = self.size, self.rank
        return sequential([kernel_work("gram", 2.0 * n * r * r, n * r + r * r, self.factor.dtype),
                           eigh_work(r, self.factor.dtype)])


class KroneckerBlock(PrecisionBlock):
    """K-FAC's ``G = L (x) R`` on a (p, q) layer matrix (``L`` outputs, ``R`` inputs), each factor decomposed once
    (:meth:`from_factors`)."""

    left: Float[Array, "p p"]
    right: Float[Array, "q q"]
    factors: thermox.KroneckerDrift  # L (x) R + I: the factors' eigendecompositions

    @classmethod
    def from_factors(cls, left: Float[Array, "p p"], right: Float[Array, "q q"]) -> "KroneckerBlock":
        return cls(left, right, thermox.KroneckerDrift.from_factors(left, right, shift=1.0))

    @property
    def size(self) -> int:
        return self.left.shape[0] * self.right.shape[0]

    def drift(self, prior_precision):
        return eqx.tree_at(lambda d: d.shift, self.factors, jnp.asarray(prior_precision, self.left.dtype))

    def curvature_eigenvalues(self):
        # l_i r_j from the factors' spectra (not the drift's eigenvalues minus its unit shift, which would round the
        # small ones away)
        return jnp.outer(self.factors.left_eigen[0], self.factors.right_eigen[0]).reshape(-1)

    def couplings(self) -> int:
        return self.size * self.size  # L (x) R is dense: every pair of the p q cells is coupled

    def sample_work(self):
        p, q = self.left.shape[0], self.right.shape[0]
        return kernel_work("precondition", 4.0 * p * q * (p + q), p * p + q * q + 2 * p * q, self.left.dtype)

    def decomposition_work(self):
        return sequential([eigh_work(self.left.shape[0], self.left.dtype),
                           eigh_work(self.right.shape[0], self.right.dtype)])


class DiagonalBlock(PrecisionBlock):
    """``G = diag(d)``: uncoupled cells."""

    diagonal: Float[Array, " n"]

    @property
    def size(self) -> int:
        return self.diagonal.shape[0]

    def curvature_eigenvalues(self):
        return jnp.maximum(self.diagonal, 0.0)

    def drift(self, prior_precision):
        return thermox.DiagonalDrift(jnp.maximum(self.diagonal, 0.0) + prior_precision)

    def couplings(self) -> int:
        return self.size

    def sample_work(self):
        return kernel_work("precondition", 2.0 * self.size, 3 * self.size, self.diagonal.dtype)

    def decomposition_work(self):
        return kernel_work("precondition", 0.0, 0, self.diagonal.dtype)
