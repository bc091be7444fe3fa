r"""Solvers of one K-FAC block: ``(A (x) S + damping)^-1`` applied to a layer's gradient matrix ``G`` (n_out x n_in).

With ``vec`` stacking columns, ``(A (x) S) vec(G) = vec(S G A)``, so

- factored damping (``pi``): ``A (x) S + damping I ~ (A + pi sqrt(damping) I) (x) (S + sqrt(damping)/pi I)`` with
  ``pi = sqrt((tr A / n_in) / (tr S / n_out))``, and the direction is ``S_d^-1 G A_d^-1``;
- exact damping: with ``A = Q_A diag(a) Q_A^T`` and ``S = Q_S diag(s) Q_S^T`` the damped block is diagonal in
  ``Q_A (x) Q_S``: the direction is ``Q_S [(Q_S^T G Q_A) / (s a^T + damping)] Q_A^T``.

A solver turns the factors into its state at an inverse refresh (``refresh``) and applies it every step
(``apply``); both report :class:`BlockWork` for the modeled hardware time. :class:`DigitalKronecker` is the
digital reference; :class:`ThermoKronecker` sends the factored-damping systems to the simulated analog device.
"""

from __future__ import annotations

import abc
import dataclasses
from typing import Literal, NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, PRNGKeyArray, PyTree

import thermox
from thermox._eigh import eigh

DampingMode = Literal["factored", "exact"]
DAMPING_MODES = ("factored", "exact")
ThermoMethod = Literal["solve", "invert"]
THERMO_METHODS = ("solve", "invert")


class BlockWork(NamedTuple):
    """Cost of one refresh or one application: host flops, device transfer seconds, analog run seconds."""

    host_flops: Float[Array, ""]
    transfer_s: Float[Array, ""]
    analog_s: Float[Array, ""]


def block_work(host_flops=0.0, transfer_s=0.0, analog_s=0.0) -> BlockWork:
    return BlockWork(*(jnp.asarray(v, jnp.float32) for v in (host_flops, transfer_s, analog_s)))


def factored_damping(A: Float[Array, "i i"], S: Float[Array, "o o"], damping) -> tuple[Array, Array]:
    """``(A + pi sqrt(damping) I, S + sqrt(damping) / pi I)``; ``pi = 1`` while a factor is still zero."""
    mean_a = jnp.trace(A) / A.shape[0]
    mean_s = jnp.trace(S) / S.shape[0]
    ok = (mean_a > 0) & (mean_s > 0)
    pi = jnp.where(ok, jnp.sqrt(jnp.where(ok, mean_a, 1.0) / jnp.where(ok, mean_s, 1.0)), 1.0)
    root = jnp.sqrt(damping).astype(A.dtype)
    return (A + pi * root * jnp.eye(A.shape[0], dtype=A.dtype),
            S + root / pi * jnp.eye(S.shape[0], dtype=S.dtype))


def _spd_inverse(M: Float[Array, "n n"]) -> Float[Array, "n n"]:
    inverse = jax.scipy.linalg.cho_solve(jax.scipy.linalg.cho_factor(M), jnp.eye(M.shape[0], dtype=M.dtype))
    return 0.5 * (inverse + inverse.T)


class AbstractKroneckerSolver(eqx.Module):
    """``init(n_out, n_in, dtype) -> state``; ``refresh(A, S, damping, key) -> (state, work)``;
    ``apply(state, G, key) -> (direction, work)``; ``for_layer(index)``: the solver of layer ``index``."""

    def for_layer(self, index: int) -> "AbstractKroneckerSolver":
        return self

    @abc.abstractmethod
    def init(self, n_out: int, n_in: int, dtype) -> PyTree:
        ...

    @abc.abstractmethod
    def refresh(self, A, S, damping, key: PRNGKeyArray) -> tuple[PyTree, BlockWork]:
        ...

    @abc.abstractmethod
    def apply(self, state: PyTree, G: Float[Array, "o i"], key: PRNGKeyArray) -> tuple[Array, BlockWork]:
        ...


class DigitalKronecker(AbstractKroneckerSolver):
    """Digital K-FAC: Cholesky inverses of the damped factors ("factored"), or eigendecompositions ("exact")."""

    damping_mode: str = eqx.field(static=True, default="factored")

    def __check_init__(self):
        if self.damping_mode not in DAMPING_MODES:
            raise ValueError(f"unknown damping_mode {self.damping_mode!r}; choose one of {DAMPING_MODES}")

    def init(self, n_out, n_in, dtype):
        if self.damping_mode == "factored":
            return jnp.zeros((n_out, n_out), dtype), jnp.zeros((n_in, n_in), dtype)
        return jnp.zeros((n_out, n_out), dtype), jnp.zeros((n_in, n_in), dtype), jnp.zeros((n_out, n_in), dtype)

    def refresh(self, A, S, damping, key):
        n = A.shape[0] ** 3 + S.shape[0] ** 3
        if self.damping_mode == "factored":
            A_d, S_d = factored_damping(A, S, damping)
            return (_spd_inverse(S_d), _spd_inverse(A_d)), block_work(7.0 / 3.0 * n)
        a, Q_A = eigh(A)
        s, Q_S = eigh(S)
        scale = 1.0 / (jnp.maximum(s, 0.0)[:, None] * jnp.maximum(a, 0.0)[None, :] + damping)
        return (Q_S, Q_A, scale.astype(A.dtype)), block_work(9.0 * n)

    def apply(self, state, G, key):
        n_out, n_in = G.shape
        flops = 2.0 * n_out * n_in * (n_out + n_in)
        if self.damping_mode == "factored":
            S_inv, A_inv = state
            return S_inv @ G @ A_inv, block_work(flops)
        Q_S, Q_A, scale = state
        return Q_S @ ((Q_S.T @ G @ Q_A) * scale) @ Q_A.T, block_work(2.0 * flops)


class ThermoKronecker(AbstractKroneckerSolver):
    r"""The factored-damping systems solved by a simulated :class:`thermox.AnalogDevice`, one solver per layer.

    Each damped factor ``M`` is programmed as the drift ``M / m`` (``m = max |M_ij|``, so the largest coupling is
    1 and ``t`` counts in units of tau of that normalised drift: relaxing needs ``t`` of a few ``m / lambda_min(M)``);
    the answer is the readout divided by ``m``.

    - ``method="solve"`` (the paper's method 2): every step the matrix-valued state ``X`` (n_out x n_in cells of
      couplings ``S_d``: all columns relax together) runs from zero with bias ``G`` and is read out,
      ``X ~ S_d^-1 G``; a second solve against ``A_d`` with bias ``X^T`` gives the direction. The factors are
      programmed (quantized, mismatched) at each inverse refresh and their eigendecomposition is kept in an
      :class:`thermox.EigenDrift`, so a step's simulation costs matrix products only.
    - ``method="invert"`` (method 1): at each inverse refresh the device returns ``M^-1`` from solves against the
      identity (``num_samples=None``), or from the stationary covariance of ``num_samples`` samples
      ``interval`` tau apart after a burn-in ``t`` (:func:`thermox.linalg.inv`, needs ``kappa0 > 0``); each step
      is then the digital ``S_d^-1 G A_d^-1``. The read-out inverse is symmetrised.

    Inputs pass the DAC and readouts the ADC (``G`` as one auto-ranged matrix). Each layer has its own solver
    chip (:meth:`for_layer`: the device's mismatch key folded with the layer index). Modeled cost: every transfer
    over the link (couplings at a refresh, right-hand sides, readouts), the two solves of a layer run one after
    the other for ``t`` each (times the device's ``tau``).
    """

    device: thermox.AnalogDevice = thermox.AnalogDevice()
    method: str = eqx.field(static=True, default="solve")
    t: float | Float[Array, ""] = 1000.0
    num_samples: int | None = eqx.field(static=True, default=None)
    interval: float = 1.0
    cost_model: thermox.cost.CostModel = thermox.cost.CostModel()

    def __check_init__(self):
        if self.method not in THERMO_METHODS:
            raise ValueError(f"unknown thermo_kfac method {self.method!r}; choose one of {THERMO_METHODS}")
        if self.num_samples is not None and self.method != "invert":
            raise ValueError("num_samples (covariance inversion) applies to method='invert' only")

    def for_layer(self, index: int) -> "ThermoKronecker":
        """Each layer has its own chip: a mismatched device's key is folded with the layer index."""
        if self.device.key is None:
            return self
        return eqx.tree_at(lambda s: s.device.key, self, jax.random.fold_in(self.device.key, index))

    @property
    def _programmed(self) -> thermox.AnalogDevice:
        """The device once its couplings hold the programmed drift: the same converters and noise, no further
        coupling error (the EigenDrift already describes the programmed matrix)."""
        return dataclasses.replace(self.device, coupling_bits=None, mismatch=0.0)

    def init(self, n_out, n_in, dtype):
        if self.method == "invert":
            return jnp.zeros((n_out, n_out), dtype), jnp.zeros((n_in, n_in), dtype)
        drift = lambda n: thermox.EigenDrift(jnp.ones((n,), dtype), jnp.eye(n, dtype=dtype))
        return drift(n_out), jnp.ones((), dtype), drift(n_in), jnp.ones((), dtype)

    def _work(self, n: int, columns: int, couplings: int) -> BlockWork:
        """One solve of an n-cell drift with ``columns`` right-hand sides relaxing together for ``t``."""
        cost = thermox.cost.solve_cost(n, self.t, num_couplings=couplings, num_rhs=columns,
                                       reprogram=couplings > 0, model=self.cost_model, tau_s=self.device.tau)
        return block_work(0.0, cost.program_s + cost.input_s + cost.output_s, cost.analog_s / columns)

    def refresh(self, A, S, damping, key):
        A_d, S_d = factored_damping(A, S, damping)
        scales = [jnp.max(jnp.abs(M)) for M in (S_d, A_d)]
        if self.method == "solve":
            state = []
            for M, m in zip((S_d, A_d), scales):
                programmed = self.device.program(thermox.DenseDrift(M / m))
                state += [thermox.EigenDrift.from_matrix(programmed.matrix), m]
            transfer = thermox.cost.transfer_time(A.shape[0] ** 2 + S.shape[0] ** 2,
                                                  bits=self.cost_model.conversion_bits,
                                                  bandwidth_bps=self.cost_model.link_bandwidth_bps)
            return tuple(state), block_work(0.0, transfer, 0.0)
        inverses, works = [], []
        for M, m, k in zip((S_d, A_d), scales, jax.random.split(key)):
            n = M.shape[0]
            if self.num_samples is None:
                X = thermox.linalg.solve(M / m, jnp.eye(n, dtype=M.dtype), key=k, t=self.t, device=self.device)
                works.append(self._work(n, n, n * n))
            else:
                X = thermox.linalg.inv(M / m, key=k, t=self.t, device=self.device, num_samples=self.num_samples,
                                       interval=self.interval)
                works.append(self._covariance_work(n))
            inverses.append((0.5 * (X + X.T) / m).astype(M.dtype))
        return tuple(inverses), _sequential(works)

    def _covariance_work(self, n: int) -> BlockWork:
        model = self.cost_model
        transfer = thermox.cost.transfer_time(n * n + n * self.num_samples, bits=model.conversion_bits,
                                              bandwidth_bps=model.link_bandwidth_bps)
        return block_work(0.0, transfer, (self.t + self.num_samples * self.interval) * self.device.tau)

    def apply(self, state, G, key):
        n_out, n_in = G.shape
        if self.method == "invert":
            S_inv, A_inv = state
            return S_inv @ G @ A_inv, block_work(2.0 * n_out * n_in * (n_out + n_in))
        drift_S, m_S, drift_A, m_A = state
        key_S, key_A = jax.random.split(key)
        device = self._programmed
        X = thermox.linalg.solve(drift_S, G, key=key_S, t=self.t, device=device) / m_S
        Y = thermox.linalg.solve(drift_A, X.T, key=key_A, t=self.t, device=device) / m_A
        return Y.T.astype(G.dtype), _sequential([self._work(n_out, n_in, 0), self._work(n_in, n_out, 0)])


def _sequential(works: list[BlockWork]) -> BlockWork:
    return BlockWork(*(sum(parts) for parts in zip(*works)))
