r"""Solvers of one K-FAC block: ``(A (x) S + damping)^-1`` applied to a layer's gradient matrix ``G`` (n_out x n_in).

With ``vec`` stacking columns, ``(A (x) S) vec(G) = vec(S G A)``, so

- factored damping (``pi``): ``A (x) S + damping I ~ (A + pi sqrt(damping) I) (x) (S + sqrt(damping)/pi I)`` with
  ``pi = sqrt((tr A / n_in) / (tr S / n_out))``, and the direction is ``S_d^-1 G A_d^-1``;
- exact damping: with ``A = Q_A diag(a) Q_A^T`` and ``S = Q_S diag(s) Q_S^T`` the damped block is diagonal in
  ``Q_A (x) Q_S``: the direction is ``Q_S [(Q_S^T G Q_A) / (s a^T + damping)] Q_A^T``.

Both are :class:`kfac_thermo.AbstractDampedSolver` with ``curvature = (A, S)``: a solver turns the factors into
``prepared`` arrays at an inverse refresh (``refresh``) and applies them to a layer's gradient matrix every step
(``apply``); both report the :class:`kfac_thermo.Work` they did. :class:`DigitalKronecker` is the digital
reference; :class:`ThermoKronecker` sends the factored-damping systems to the simulated analog device.
"""

from __future__ import annotations

from typing import Literal

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, PRNGKeyArray, PyTree

import thermox
from thermox import eigh, spd_inverse, spd_inverse_flops

from .._kernels import eigh_work, kernel_work, matmul_work
from .._solver import AbstractDampedSolver
from .._work import Work, analog, sequential

DampingMode = Literal["factored", "exact"]
DAMPING_MODES = ("factored", "exact")
ThermoMethod = Literal["solve", "invert"]
THERMO_METHODS = ("solve", "invert")


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
    """``S^-1 G A^-1`` and its work: two products, ``2 n_out n_in (n_out + n_in)`` flops."""
    n_out, n_in = G.shape
    work = matmul_work("precondition", n_out, n_out, n_in, G.dtype).then(
        matmul_work("precondition", n_out, n_in, n_in, G.dtype))
    return S_inv @ G @ A_inv, work


class DigitalKronecker(AbstractDampedSolver):
    """Digital K-FAC: inverses of the damped factors (:func:`spd_inverse`, "factored"), or eigendecompositions
    ("exact").

    Work: at a refresh :func:`spd_inverse_flops` per damped factor ("inverse"), or ``9 n^3`` per factor's
    ``eigh``; per step the products ``S_d^-1 G A_d^-1`` (two), or the four of the eigenbasis ("precondition").
    """

    damping_mode: str = eqx.field(static=True, default="factored")

    def __check_init__(self):
        if self.damping_mode not in DAMPING_MODES:
            raise ValueError(f"unknown damping_mode {self.damping_mode!r}; choose one of {DAMPING_MODES}")

    def init(self, like):
        (n_out, n_in), dtype = like.shape, like.dtype
        square = lambda n: jnp.zeros((n, n), dtype)
        if self.damping_mode == "factored":
            return (square(n_out), square(n_in)), ()
        return (square(n_out), square(n_in), jnp.zeros((n_out, n_in), dtype)), ()

    def refresh(self, curvature, damping, key):
        A, S = curvature
        if self.damping_mode == "factored":
            A_d, S_d = factored_damping(A, S, damping)
            work = sequential([kernel_work("inverse", spd_inverse_flops(n), 2 * n * n, A.dtype)
                               for n in (S.shape[0], A.shape[0])])
            return (spd_inverse(S_d), spd_inverse(A_d)), work
        a, Q_A = eigh(A)
        s, Q_S = eigh(S)
        scale = 1.0 / (jnp.maximum(s, 0.0)[:, None] * jnp.maximum(a, 0.0)[None, :] + damping)
        work = sequential([eigh_work(n, A.dtype) for n in (A.shape[0], S.shape[0])])
        return (Q_S, Q_A, scale.astype(A.dtype)), work

    def apply(self, prepared, vector, state, *, step, key):
        G = vector
        if self.damping_mode == "factored":
            direction, work = _apply_inverses(prepared[0], G, prepared[1])
            return direction, state, work
        Q_S, Q_A, scale = prepared
        n_out, n_in = G.shape
        products = [(n_out, n_out, n_in), (n_out, n_in, n_in), (n_out, n_out, n_in), (n_out, n_in, n_in)]
        work = sequential([matmul_work("precondition", *shape, G.dtype) for shape in products])
        return Q_S @ ((Q_S.T @ G @ Q_A) * scale) @ Q_A.T, state, work


class ThermoKronecker(AbstractDampedSolver):
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
    chip (:meth:`for_layer`: the device's mismatch key folded with the layer index). Work: every value through the
    converters (``n^2`` couplings per factor at a refresh, right-hand sides, readouts); the two solves of a layer run
    one after the other for ``t`` tau each (the optimizer runs the layers' chips in parallel).
    """

    device: thermox.AnalogDevice = thermox.AnalogDevice()
    method: str = eqx.field(static=True, default="solve")
    t: float | Float[Array, ""] = 1000.0
    num_samples: int | None = eqx.field(static=True, default=None)
    interval: float = 1.0

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

    def init(self, like):
        (n_out, n_in), dtype = like.shape, like.dtype
        if self.method == "invert":
            return (jnp.zeros((n_out, n_out), dtype), jnp.zeros((n_in, n_in), dtype)), ()
        law = lambda n: thermox.FixedTimeLaw.initial_state(self.device, n, dtype)
        return (law(n_out), jnp.ones((), dtype), law(n_in), jnp.ones((), dtype)), ()

    def _analog(self, **counts) -> Work:
        """Analog work on this layer's chip, with the device's converter and coupling bits."""
        device = self.device
        return analog(dac_bits=device.dac_bits, coupling_bits=device.coupling_bits, adc_bits=device.adc_bits,
                      **counts)

    def _work(self, n: int, columns: int, couplings: int) -> Work:
        """One solve of an n-cell drift with ``columns`` right-hand sides relaxing together for ``t`` (and the
        readout samples' ``device.readout_time``): ``n`` values in and ``device.num_readouts`` times ``n`` out per
        column, ``couplings`` programmed first; the ``n^2`` couplings held and the cells dissipate for the run."""
        run_tau = self.t + self.device.readout_time
        return self._analog(dac_values=n * columns, coupling_values=couplings,
                            adc_values=n * columns * self.device.num_readouts, analog_tau=run_tau,
                            resistor_tau=(n * n + n * columns) * run_tau)

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

    def refresh(self, curvature, damping, key):
        A, S = curvature
        A_d, S_d = factored_damping(A, S, damping)
        scales = [jnp.max(jnp.abs(M)) for M in (S_d, A_d)]
        if self.method == "solve":
            state = []
            for M, m in zip((S_d, A_d), scales):
                state += [self._law(M / m), m]
            return tuple(state), self._analog(coupling_values=A.shape[0] ** 2 + S.shape[0] ** 2)
        inverses, works = [], []
        for M, m, k in zip((S_d, A_d), scales, [None, None] if key is None else jax.random.split(key)):
            n = M.shape[0]
            if self.num_samples is None:
                X = self._identity_readout(self._law(M / m), k)
                works.append(self._work(n, n, n * n))
            else:
                X = thermox.linalg.inv(M / m, key=k, t=self.t, device=self.device, num_samples=self.num_samples,
                                       interval=self.interval)
                works.append(self._covariance_work(n))
            inverses.append((0.5 * (X + X.T) / m).astype(M.dtype))
        return tuple(inverses), sequential(works)

    def _covariance_work(self, n: int) -> Work:
        """``n^2`` couplings, then ``num_samples`` readouts ``interval`` tau apart after a burn-in of ``t``."""
        run_tau = self.t + self.num_samples * self.interval
        return self._analog(coupling_values=n * n, adc_values=n * self.num_samples, analog_tau=run_tau,
                            resistor_tau=(n * n + n) * run_tau)

    def apply(self, prepared, vector, state, *, step, key):
        G = vector
        n_out, n_in = G.shape
        if self.method == "invert":
            direction, work = _apply_inverses(prepared[0], G, prepared[1])
            return direction, state, work
        law_S, m_S, law_A, m_A = prepared
        key_S, key_A = (None, None) if key is None else jax.random.split(key)
        X = self._readout(law_S, G, key_S) / m_S
        Y = self._readout(law_A, X, key_A, rows=True) / m_A
        return Y.astype(G.dtype), state, sequential([self._work(n_out, n_in, 0), self._work(n_in, n_out, 0)])
