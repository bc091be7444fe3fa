r"""Solvers of the damped curvature system ``(G + damping I) d = g`` of the natural-gradient family: digital ones
and the thermodynamic device, all :class:`kfac_thermo.AbstractDampedSolver`.

Each step the transform hands a solver the batch curvature (:class:`kfac_thermo.BatchCurvature`) and the damping
(:meth:`refresh`: the factorisation, or the device programmed with the curvature), then the flat gradient
(:meth:`apply`, with the solver's own state: the device's voltages, a conjugate-gradient warm start). Both report
the :class:`kfac_thermo.Work` they did: the model passes of the curvature (one forward and m reverse passes of
the batch for the Jacobian rows), digital flops by kind, and the device's transfers and run time. Swapping solvers
changes nothing else in the optimizer.
"""

from __future__ import annotations

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

import thermox

from .._common import warn_if_ill_conditioned
from .._curvature import BatchCurvature
from .._kernels import kernel_work
from .._solver import AbstractDampedSolver
from .._work import Work, analog


class _StatelessSolver(AbstractDampedSolver):
    """A digital natural-gradient solver without state between steps: all its work is redone each step."""

    def init(self, like):
        return None, ()


class DenseSolver(_StatelessSolver):
    """Exact NGD: form ``G + damping I`` (N x N) and solve by Cholesky. O(N^3 + r N^2), for small N only.

    Work: the Jacobian rows' passes, ``r N^2`` flops for the Gram ``W W^T`` and ``N^3 / 3`` for its Cholesky."""

    def refresh(self, curvature: BatchCurvature, damping, key):
        W = curvature.factor()
        n, r = W.shape
        matrix = W @ W.T + damping * jnp.eye(n, dtype=W.dtype)
        work = curvature.jacobian_work(r).then(kernel_work("gram", r * n * n, n * r + n * n, W.dtype)).then(
            kernel_work("cholesky", n**3 / 3, 2 * n * n, W.dtype))
        return jax.scipy.linalg.cho_factor(matrix), work

    def apply(self, prepared, vector, state, *, step, key):
        return jax.scipy.linalg.cho_solve(prepared, vector), state, Work.zero()


class WoodburySolver(_StatelessSolver):
    """NGD through the Woodbury identity: ``(W W^T + l I)^-1 g = (g - W (l I + W^T W)^-1 W^T g) / l``.

    Work: the Jacobian rows' passes (the Gram ``W^T W`` and the products with ``W`` and ``W^T`` are contractions of
    their per-layer parts, not model calls) and ``r^3 / 3`` flops for the Cholesky of the r x r system."""

    def refresh(self, curvature: BatchCurvature, damping, key):
        gram, factor, factor_transpose = curvature.low_rank()
        r = gram.shape[0]
        warn_if_ill_conditioned(gram, damping, type(self).__name__)
        small = gram + damping * jnp.eye(r, dtype=gram.dtype)
        work = curvature.jacobian_work(r).then(kernel_work("cholesky", r**3 / 3, 2 * r * r, gram.dtype))
        return (jax.scipy.linalg.cho_factor(small), factor, factor_transpose, damping), work

    def apply(self, prepared, vector, state, *, step, key):
        cholesky, factor, factor_transpose, damping = prepared
        coef = jax.scipy.linalg.cho_solve(cholesky, factor_transpose(vector))
        return (vector - factor(coef)) / damping, state, Work.zero()


class CGSolver(AbstractDampedSolver):
    """NGD-CG: ``iterations`` conjugate-gradient steps on matrix-free GGN products, warm-started
    (:func:`conjugate_gradient`).

    Each iteration costs one Jacobian-vector and one vector-Jacobian product (counted as one forward and one
    reverse pass); the previous step's solution starts the next solve.
    """

    iterations: int = eqx.field(static=True, default=10)

    def __check_init__(self):
        # A loop length must be a Python integer: under optax.inject_hyperparams an int argument becomes an
        # array (traced under jit) unless it is listed in static_args.
        if isinstance(self.iterations, bool) or not isinstance(self.iterations, (int, np.integer)):
            raise ValueError(
                f"CG iterations fixes the loop length and must be a Python int, got {self.iterations!r}; "
                "with optax.inject_hyperparams list 'iterations' in static_args"
            )
        if self.iterations < 1:
            raise ValueError(f"CG iterations must be >= 1, got {self.iterations}")

    def init(self, like):
        return None, jnp.zeros_like(like)

    def refresh(self, curvature: BatchCurvature, damping, key):
        matvec = curvature.matvec_fn()
        # The passes run in apply, one product per iteration; they are counted here, where the batch is known.
        return (lambda v: matvec(v) + damping * v), curvature.passes(self.iterations, self.iterations)

    def apply(self, prepared, vector, state, *, step, key):
        solution = conjugate_gradient(prepared, vector, state, self.iterations)
        return solution, solution, Work.zero()


def conjugate_gradient(matvec, b: Float[Array, " n"], x0: Float[Array, " n"], iterations: int) -> Float[Array, " n"]:
    """``iterations`` conjugate-gradient steps on ``A x = b`` (``A`` SPD, given by ``matvec``) from ``x0``: Hestenes
    and Stiefel's recurrences, as ``jax.scipy.sparse.linalg.cg`` with zero tolerances.

    The iteration ends early only when the residual vanishes or a step's curvature ``p^T A p`` is not positive (in
    floating point, once the solve has converged). A non-finite product (a NaN in the curvature batch) gives a NaN
    solution, never ``x0`` or a partial one: the optimizer's non-finite policy then decides.
    """
    r = b - matvec(x0)
    gamma = r @ r

    def proceed(carry):
        k, _, _, _, gamma, finite, positive = carry
        return (k < iterations) & (gamma > 0) & finite & positive

    def step(carry):
        k, x, r, p, gamma, _, _ = carry
        Ap = matvec(p)
        curvature = p @ Ap
        finite, positive = jnp.isfinite(curvature), curvature > 0
        alpha = jnp.where(finite & positive, gamma / jnp.where(positive, curvature, 1.0), 0.0)
        x, r = x + alpha * p, r - alpha * Ap
        gamma_next = r @ r
        p = r + (gamma_next / gamma) * p
        return k + 1, x, r, p, gamma_next, finite & jnp.isfinite(gamma_next), positive

    carry = (0, x0, r, r, gamma, jnp.isfinite(gamma), jnp.asarray(True))
    _, x, _, _, _, finite, _ = jax.lax.while_loop(proceed, step, carry)
    return jnp.where(finite, x, jnp.nan)


class ThermodynamicSolver(AbstractDampedSolver):
    r"""TNGD's analog solve (the paper's Algorithm 1) on a simulated :class:`thermox.AnalogDevice`.

    The device holds ``G + damping I`` as its couplings (the factor ``W`` programmed, i.e. quantized and
    mismatched, as three resistor arrays) and the gradient as its bias, and runs for ``t`` tau. Its start state
    follows the paper's Appendix B: the state "can be reset at each iteration, or not, in which case t_d > 0". By
    default (``reset=None``) the node voltages are reset to the gradient every step when ``delay = 0`` (then
    ``t -> 0`` is SGD and ``t -> inf`` NGD, section 4's limits), and carried over when ``delay > 0``: after the
    readout the device keeps running ``delay`` tau on these (by then stale) inputs, as it does while the host
    computes the next step's curvature and gradient, and the next step starts from there (which acts like
    momentum). ``reset=True`` / ``False`` force either mode (carrying over at ``delay = 0`` accumulates the
    device noise from step to step). The first step always starts from the gradient. The readout, taken after
    ``t``, goes through the ADC (``device.num_readouts`` samples averaged).

    Attributes:
        device: the chip.
        t: run time per step, units of tau.
        delay: run time on stale inputs before each step's run, units of tau.
        reset: start every step from the gradient (True), from the previous voltages (False), or (None, the
            default) reset exactly when ``delay == 0``.
        method: how thermox simulates the runs, a method object or its name: ``thermox.Auto()`` (default) is the
            exact low-rank law (``Diffrax`` when the device saturates); ``thermox.EulerMaruyama(dt=0.1)`` the
            papers' simulation.

    Work: programming the couplings ``r (r + 2N)`` (the three resistor arrays ``W``, ``I`` and ``W^T``, r = b m) after
    the Jacobian rows' passes at :meth:`refresh`; at :meth:`apply` the gradient through the DAC (N values),
    ``device.num_readouts`` readouts through the ADC (N values each) and ``t + device.readout_time + delay`` tau of
    analog run time, the couplings and the N cells dissipating throughout.
    """

    device: thermox.AnalogDevice = thermox.AnalogDevice()
    t: float | Float[Array, ""] = 50.0
    delay: float | Float[Array, ""] = 0.0
    reset: bool | None = eqx.field(static=True, default=None)
    method: thermox.AbstractMethod = eqx.field(default="auto", converter=thermox.as_method)

    @property
    def needs_key(self) -> bool:
        """A noisy device draws thermal noise, and a diffrax solver of SDEs (not Euler's ODE/SDE step) a Brownian
        path even without noise."""
        sde_solver = (isinstance(self.method, thermox.Diffrax)
                      and self.method.solver.term_structure is not diffrax.AbstractTerm)
        return super().needs_key or sde_solver

    @property
    def has_delay(self) -> bool:
        return isinstance(self.delay, jax.core.Tracer) or self.delay != 0

    def init(self, like):
        return None, jnp.zeros_like(like)

    def _drift(self, curvature: BatchCurvature, damping) -> thermox.LowRankDrift:
        """``G + damping I`` to program. Ideal couplings: matrix-free from the layer structure; quantized or
        mismatched couplings act on the programmed entries, so ``W`` is formed (and programmed by thermox)."""
        if self.device.is_ideal_couplings:
            gram, factor, factor_transpose = curvature.low_rank()
            return thermox.LowRankDrift(jnp.asarray(damping, gram.dtype), gram, factor, factor_transpose,
                                        curvature.flat.shape[0])
        return thermox.LowRankDrift.from_factor(damping, curvature.factor())

    def refresh(self, curvature: BatchCurvature, damping, key):
        n = curvature.flat.shape[0]
        drift = self._drift(curvature, damping)
        warn_if_ill_conditioned(drift.gram, damping, type(self).__name__)
        r = drift.gram.shape[0]
        programming = analog(coupling_values=thermox.cost.low_rank_couplings(n, r),
                             coupling_bits=self.device.coupling_bits)
        return drift, curvature.jacobian_work(r).then(programming)

    def apply(self, prepared, vector, state, *, step, key):
        drift, g, count = prepared, vector, step
        n = g.shape[0]
        # The device refuses non-finite inputs (thermox raises); run it on zeros instead and report a
        # non-finite direction, so the optimizer's ``nonfinite`` policy (skip or raise) decides.
        finite = jnp.all(jnp.isfinite(drift.gram)) & jnp.all(jnp.isfinite(g)) & jnp.all(jnp.isfinite(state))
        drift = eqx.tree_at(lambda d: d.gram, drift, jnp.where(finite, drift.gram, 0.0))
        g, state = (jnp.where(finite, a, 0.0) for a in (g, state))
        programmed = thermox.program(self.device, drift, method=self.method)
        reset = (jnp.asarray(self.delay) == 0) if self.reset is None else self.reset
        start = jnp.where((count == 0) | reset, programmed.load(g), state)
        key_run, key_stale = (None, None) if key is None else jax.random.split(key)
        readout = programmed.readout(g, start, key=key_run, t=self.t)
        carried = readout.voltages
        if self.has_delay:
            carried = programmed.run(g, carried, key=key_stale, t=thermox.check_time(self.delay, "delay"))
        value = jnp.where(finite, readout.value, jnp.nan)
        # The rest of the exact law is the device's own (analog) work.
        run_tau = self.t + self.device.readout_time + self.delay
        r = drift.gram.shape[0]
        work = analog(dac_values=n, adc_values=n * self.device.num_readouts, dac_bits=self.device.dac_bits,
                      adc_bits=self.device.adc_bits, analog_tau=run_tau,
                      resistor_tau=(thermox.cost.low_rank_couplings(n, r) + n) * run_tau)
        return value, carried, work
