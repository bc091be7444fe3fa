r"""Solvers of the damped curvature system ``(G + damping I) d = g``: digital ones and the thermodynamic device.

Each solver is called once per optimizer step with the batch curvature, the flat gradient, the damping and its
own state, and returns the direction, its new state and a :class:`SolveWork` record the cost model turns into
modeled hardware time. Swapping solvers changes nothing else in the optimizer.
"""

from __future__ import annotations

import abc
from typing import NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, PRNGKeyArray, PyTree

import thermox

from ._curvature import BatchCurvature


class SolveWork(NamedTuple):
    """What one solve cost: model calls and other digital flops on the host, and modeled analog seconds."""

    model_calls: Float[Array, ""]
    host_flops: Float[Array, ""]
    device_s: Float[Array, ""]


def _work(model_calls, host_flops, device_s=0.0) -> SolveWork:
    return SolveWork(*(jnp.asarray(v, jnp.float32) for v in (model_calls, host_flops, device_s)))


class AbstractCurvatureSolver(eqx.Module):
    """Interface: ``init(flat_params) -> state``; ``__call__(curvature, g, damping, state, count, key)``."""

    def init(self, flat_params: Float[Array, " N"]) -> PyTree:
        return ()

    @abc.abstractmethod
    def __call__(
        self,
        curvature: BatchCurvature,
        g: Float[Array, " N"],
        damping: Float[Array, ""],
        state: PyTree,
        count: Array,
        key: PRNGKeyArray,
    ) -> tuple[Float[Array, " N"], PyTree, SolveWork]:
        ...


class DenseSolver(AbstractCurvatureSolver):
    """Exact NGD: form ``G + damping I`` (N x N) and solve by Cholesky. O(N^3 + r N^2), for small N only."""

    def __call__(self, curvature, g, damping, state, count, key):
        W = curvature.factor()
        n, r = W.shape
        matrix = W @ W.T + damping * jnp.eye(n, dtype=W.dtype)
        direction = jax.scipy.linalg.cho_solve(jax.scipy.linalg.cho_factor(matrix), g)
        return direction, state, _work(r // curvature.batch_size + 1, r * n * n + n**3 / 3)


class WoodburySolver(AbstractCurvatureSolver):
    """NGD through the Woodbury identity: ``(W W^T + l I)^-1 g = (g - W (l I + W^T W)^-1 W^T g) / l``."""

    def __call__(self, curvature, g, damping, state, count, key):
        gram, factor, factor_transpose = curvature.low_rank()
        n, r = g.shape[0], gram.shape[0]
        small = gram + damping * jnp.eye(r, dtype=gram.dtype)
        coef = jax.scipy.linalg.cho_solve(jax.scipy.linalg.cho_factor(small), factor_transpose(g))
        # Model calls: the forward and m reverse passes of the Jacobian structure (low_rank); the products with
        # W and W^T are contractions of its per-layer rows, not model calls.
        return (g - factor(coef)) / damping, state, _work(r // curvature.batch_size + 1, r**3 / 3)


class CGSolver(AbstractCurvatureSolver):
    """NGD-CG: ``iterations`` conjugate-gradient steps on matrix-free GGN products, warm-started.

    Each iteration costs one Jacobian-vector and one vector-Jacobian product (2 model calls); the previous
    step's solution starts the next solve.
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

    def init(self, flat_params):
        return jnp.zeros_like(flat_params)

    def __call__(self, curvature, g, damping, state, count, key):
        matvec = curvature.matvec_fn()
        # Zero tolerances: exactly ``iterations`` steps unless the residual vanishes first.
        solution, _ = jax.scipy.sparse.linalg.cg(
            lambda v: matvec(v) + damping * v, g, x0=state, tol=0.0, atol=0.0, maxiter=self.iterations
        )
        return solution, solution, _work(2 * self.iterations, 0.0)


class ThermodynamicSolver(AbstractCurvatureSolver):
    r"""TNGD's analog solve (the paper's Algorithm 1) on a simulated :class:`thermox.AnalogDevice`.

    The device holds ``G + damping I`` as its couplings (the factor ``W`` programmed, i.e. quantized and
    mismatched, as three resistor arrays) and the gradient as its bias, and runs for ``t`` tau from its previous
    node voltages (from the gradient on the first step, or every step with ``reset=True``). With ``delay > 0`` it
    then keeps running ``delay`` tau on these (by then stale) inputs, as it does while the host computes the next
    step's curvature and gradient; the next step starts from there. The readout, taken after ``t``, goes through
    the ADC (``device.num_readouts`` samples averaged); the voltages themselves carry over (the solver state).

    Attributes:
        device: the chip.
        t: run time per step, units of tau.
        delay: run time on stale inputs before each step's run, units of tau.
        reset: start every step from the gradient instead of the previous voltages.
        method: how thermox simulates the runs, a method object or its name: ``thermox.Auto()`` (default) is the
            exact low-rank law (``Diffrax`` when the device saturates); ``thermox.EulerMaruyama(dt=0.1)`` the
            papers' simulation.
        cost_model: constants for modeled transfer time.
    """

    device: thermox.AnalogDevice = thermox.AnalogDevice()
    t: float | Float[Array, ""] = 50.0
    delay: float | Float[Array, ""] = 0.0
    reset: bool = eqx.field(static=True, default=False)
    method: thermox.AbstractMethod = eqx.field(default="auto", converter=thermox.as_method)
    cost_model: thermox.cost.CostModel = thermox.cost.CostModel()

    @property
    def has_delay(self) -> bool:
        return isinstance(self.delay, jax.core.Tracer) or self.delay != 0

    def init(self, flat_params):
        return jnp.zeros_like(flat_params)

    def _drift(self, curvature: BatchCurvature, damping) -> thermox.LowRankDrift:
        """``G + damping I`` to program. Ideal couplings: matrix-free from the layer structure; quantized or
        mismatched couplings act on the programmed entries, so ``W`` is formed (and programmed by thermox)."""
        if self.device.is_ideal_couplings:
            gram, factor, factor_transpose = curvature.low_rank()
            return thermox.LowRankDrift(jnp.asarray(damping, gram.dtype), gram, factor, factor_transpose,
                                        curvature.flat.shape[0])
        return thermox.LowRankDrift.from_factor(damping, curvature.factor())

    def __call__(self, curvature, g, damping, state, count, key):
        n = g.shape[0]
        drift = self._drift(curvature, damping)
        r = drift.gram.shape[0]
        # The device refuses non-finite inputs (thermox raises); run it on zeros instead and report a
        # non-finite direction, so the optimizer's ``nonfinite`` policy (skip or raise) decides.
        finite = jnp.all(jnp.isfinite(drift.gram)) & jnp.all(jnp.isfinite(g)) & jnp.all(jnp.isfinite(state))
        drift = eqx.tree_at(lambda d: d.gram, drift, jnp.where(finite, drift.gram, 0.0))
        g, state = (jnp.where(finite, a, 0.0) for a in (g, state))
        programmed = thermox.program(self.device, drift, method=self.method)
        start = jnp.where((count == 0) | self.reset, programmed.load(g), state)
        key_run, key_stale = jax.random.split(key)
        readout = programmed.readout(g, start, key=key_run, t=self.t)
        carried = readout.voltages
        if self.has_delay:
            carried = programmed.run(g, carried, key=key_stale, t=thermox.check_time(self.delay, "delay"))
        cost = thermox.cost.solve_cost(
            n, self.t + self.delay, num_couplings=thermox.cost.low_rank_couplings(n, r), model=self.cost_model,
            tau_s=self.device.tau,
        )
        readout = jnp.where(finite, readout.value, jnp.nan)
        # Model calls: the forward and m reverse passes of the Jacobian structure the device is programmed with;
        # the rest of the exact law is the device's own (analog) work.
        return readout, carried, _work(r // curvature.batch_size + 1, 0.0, cost.time_s)
