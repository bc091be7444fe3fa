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
from typing import Literal, NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, PRNGKeyArray, PyTree

import thermox
from thermox import eigh, spd_inverse, spd_inverse_flops

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


def _apply_inverses(S_inv: Float[Array, "o o"], G: Float[Array, "o i"], A_inv: Float[Array, "i i"]):
    """``S^-1 G A^-1`` and its flops ``2 n_out n_in (n_out + n_in)``."""
    n_out, n_in = G.shape
    return S_inv @ G @ A_inv, block_work(2.0 * n_out * n_in * (n_out + n_in))


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
    """Digital K-FAC: inverses of the damped factors (:func:`spd_inverse`, "factored"), or eigendecompositions
    ("exact")."""

    damping_mode: str = eqx.field(static=True, default="factored")

    def __check_init__(self):
        if self.damping_mode not in DAMPING_MODES:
            raise ValueError(f"unknown damping_mode {self.damping_mode!r}; choose one of {DAMPING_MODES}")

    def init(self, n_out, n_in, dtype):
        if self.damping_mode == "factored":
            return jnp.zeros((n_out, n_out), dtype), jnp.zeros((n_in, n_in), dtype)
        return jnp.zeros((n_out, n_out), dtype), jnp.zeros((n_in, n_in), dtype), jnp.zeros((n_out, n_in), dtype)

    def refresh(self, A, S, damping, key):
        if self.damping_mode == "factored":
            A_d, S_d = factored_damping(A, S, damping)
            return (spd_inverse(S_d), spd_inverse(A_d)), block_work(spd_inverse_flops(A.shape[0])
                                                                    + spd_inverse_flops(S.shape[0]))
        a, Q_A = eigh(A)
        s, Q_S = eigh(S)
        scale = 1.0 / (jnp.maximum(s, 0.0)[:, None] * jnp.maximum(a, 0.0)[None, :] + damping)
        return (Q_S, Q_A, scale.astype(A.dtype)), block_work(9.0 * (A.shape[0] ** 3 + S.shape[0] ** 3))

    def apply(self, state, G, key):
        if self.damping_mode == "factored":
            return _apply_inverses(state[0], G, state[1])
        Q_S, Q_A, scale = state
        n_out, n_in = G.shape
        return Q_S @ ((Q_S.T @ G @ Q_A) * scale) @ Q_A.T, block_work(4.0 * n_out * n_in * (n_out + n_in))


class ThermoKronecker(AbstractKroneckerSolver):
    r"""The factored-damping systems solved by a simulated :class:`thermox.AnalogDevice`, one solver per layer.

    Each damped factor ``M`` is programmed as the drift ``P = program(M / m)`` (``m = max |M_ij|``, so the largest
    coupling is 1 and ``t`` counts in units of tau of that normalised drift: relaxing needs ``t`` of a few
    ``m / lambda_min(M)``); the answer is the readout divided by ``m``. A run from zero with bias ``b`` reads
    ``adc(M(P) dac(b) + C(P)^{1/2} z)``: the exact law of the OU state after ``t`` (``thermox.OULaw``), which
    ``thermox.FixedTimeLaw`` forms once per inverse refresh (the programmed couplings only change then) and whose
    arrays the solver state keeps. With voltage rails (``device.saturation``) or averaged readouts
    (``device.num_readouts > 1``) the law has no closed form and each run is simulated (``thermox.Diffrax`` with the
    rails, or the exact Markov transitions between the readout samples).

    - ``method="solve"`` (the paper's method 2): every step the matrix-valued state ``X`` (n_out x n_in cells of
      couplings ``S_d``: all columns relax together) runs with bias ``G`` and is read out, ``X ~ S_d^-1 G``; a
      second run on ``A_d`` with bias ``X^T`` gives the direction. A step's simulation is then one product with
      each law operator (two with thermal noise), as digital K-FAC's.
    - ``method="invert"`` (method 1): at each inverse refresh the device returns ``M^-1`` from runs against the
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

    def init(self, n_out, n_in, dtype):
        if self.method == "invert":
            return jnp.zeros((n_out, n_out), dtype), jnp.zeros((n_in, n_in), dtype)
        law = lambda n: thermox.FixedTimeLaw.initial_state(self.device, n, dtype)
        return law(n_out), jnp.ones((), dtype), law(n_in), jnp.ones((), dtype)

    def _work(self, n: int, columns: int, couplings: int) -> BlockWork:
        """One solve of an n-cell drift with ``columns`` right-hand sides relaxing together for ``t``."""
        cost = thermox.cost.solve_cost(n, self.t, num_couplings=couplings, num_rhs=columns,
                                       reprogram=couplings > 0, model=self.cost_model, tau_s=self.device.tau)
        return block_work(0.0, cost.program_s + cost.input_s + cost.output_s, cost.analog_s / columns)

    def _law(self, M: Float[Array, "n n"]) -> PyTree:
        """Program ``M`` (already normalised) into the couplings and form the law of a run of ``t``: its arrays."""
        return thermox.FixedTimeLaw.program(self.device, M, self.t).state

    def _readout(self, law: PyTree, b: Float[Array, "..."], key: PRNGKeyArray, *,
                 rows: bool = False) -> Float[Array, "..."]:
        """One run with the columns of ``b`` (its rows when ``rows``) as biases: ``adc(M(P) dac(b) + C(P)^{1/2} z)``."""
        return thermox.FixedTimeLaw(self.device, self.t, law).solve(b, key, rows=rows)

    def _identity_readout(self, law: PyTree, key: PRNGKeyArray) -> Float[Array, "n n"]:
        """:meth:`_readout` of the identity, without a product with it."""
        return thermox.FixedTimeLaw(self.device, self.t, law).solve_identity(key)

    def refresh(self, A, S, damping, key):
        A_d, S_d = factored_damping(A, S, damping)
        scales = [jnp.max(jnp.abs(M)) for M in (S_d, A_d)]
        if self.method == "solve":
            state = []
            for M, m in zip((S_d, A_d), scales):
                state += [self._law(M / m), m]
            transfer = thermox.cost.transfer_time(A.shape[0] ** 2 + S.shape[0] ** 2,
                                                  bits=self.cost_model.conversion_bits,
                                                  bandwidth_bps=self.cost_model.link_bandwidth_bps)
            return tuple(state), block_work(0.0, transfer, 0.0)
        inverses, works = [], []
        for M, m, k in zip((S_d, A_d), scales, jax.random.split(key)):
            n = M.shape[0]
            if self.num_samples is None:
                X = self._identity_readout(self._law(M / m), k)
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
            return _apply_inverses(state[0], G, state[1])
        law_S, m_S, law_A, m_A = state
        key_S, key_A = jax.random.split(key)
        X = self._readout(law_S, G, key_S) / m_S
        Y = self._readout(law_A, X, key_A, rows=True) / m_A
        return Y.astype(G.dtype), _sequential([self._work(n_out, n_in, 0), self._work(n_in, n_out, 0)])


def _sequential(works: list[BlockWork]) -> BlockWork:
    return BlockWork(*(sum(parts) for parts in zip(*works)))
