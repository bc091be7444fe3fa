"""The general path: integrate the device SDE with a diffrax solver at a fixed step.

    dx = f(x) ds + sqrt(2 kappa0) dW,     s = time / tau,

for any vector field ``f`` of the node voltages: the linear drift ``f(x) = b - A x`` of the OU solver
(``thermox.Diffrax``), or ``f = -grad U`` of a Langevin circuit (``thermox.langevin``);

optionally with node voltages held inside the rails ``|x_i| <= saturation`` (a projection after every
step, which no closed form covers) and with the time average over the final window accumulated as an
extra state ``I' = x 1[s >= t - T] / T``.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import diffrax
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, PRNGKeyArray

VectorField = Callable[[Float[Array, "n *k"]], Float[Array, "n *k"]]


class SaturatingSolver(diffrax.AbstractWrappedSolver):
    """Wraps a diffrax solver and clips the node voltages to ``[-limit, limit]`` after every step."""

    solver: diffrax.AbstractSolver
    limit: float

    @property
    def term_structure(self):
        return self.solver.term_structure

    @property
    def interpolation_cls(self):
        return self.solver.interpolation_cls

    def order(self, terms):
        return self.solver.order(terms)

    def strong_order(self, terms):
        return self.solver.strong_order(terms)

    def init(self, terms, t0, t1, y0, args):
        return self.solver.init(terms, t0, t1, y0, args)

    def step(self, terms, t0, t1, y0, args, solver_state, made_jump):
        y1, y_error, dense_info, solver_state, result = self.solver.step(
            terms, t0, t1, y0, args, solver_state, made_jump
        )
        x1, integral = y1
        return (jnp.clip(x1, -self.limit, self.limit), integral), y_error, dense_info, solver_state, result

    def func(self, terms, t0, y0, args):
        return self.solver.func(terms, t0, y0, args)


class IsotropicNoise(diffrax.AbstractTerm):
    """Additive noise ``sigma dW`` on the node voltages and none on the window integral."""

    sigma: Float[Array, ""]
    brownian: diffrax.AbstractBrownianPath

    def vf(self, t, y, args):
        return self.sigma

    def contr(self, t0, t1, **kwargs):
        return self.brownian.evaluate(t0, t1, **kwargs)

    def prod(self, vf, control):
        return (vf * control, jnp.zeros_like(control))


def _needs_levy_area(solver: diffrax.AbstractSolver) -> bool:
    return isinstance(solver, (diffrax.ShARK, diffrax.SRA1, diffrax.SEA, diffrax.GeneralShARK, diffrax.SPaRK))


def integrate(
    vector_field: VectorField,
    x0: Float[Array, "n *k"],
    *,
    key: PRNGKeyArray | None,
    t: float,
    kappa0: Float[Array, ""] | None,
    dt: float,
    solver: diffrax.AbstractSolver,
    window: float | None = None,
    saturation: float | None = None,
    brownian_tol: float | None = None,
) -> Float[Array, "n *k"]:
    """One fixed-step diffrax solve of ``dx = vector_field(x) ds + sqrt(2 kappa0) dW`` from ``x0`` over ``[0, t]``;
    returns x(t) or the window average.

    ``t`` and ``dt`` must be concrete: the number of steps ``ceil(t / dt)`` is static. With
    ``brownian_tol=None`` the Brownian motion is a fast ``UnsafeBrownianPath`` (fresh increments each
    step); a float selects a ``VirtualBrownianTree`` with that tolerance, so runs with different ``dt`` see
    the same Brownian path (used to measure strong convergence). ``kappa0=None`` is a noiseless run: without
    a key and with a solver of ODEs (Euler, Heun, ...) it has no Brownian path; otherwise a zero-weighted one.
    """
    num_steps = max(1, math.ceil(t / dt - 1e-9))
    step = t / num_steps
    start = t - window if window is not None else t
    weight = 1.0 / window if window is not None else 0.0

    def augmented_field(s, y, args):
        x, _ = y
        # The window indicator is evaluated at the step's left end: a left Riemann sum of the average.
        inside = jnp.where(s >= start - 1e-9 * t, weight, 0.0)
        return (vector_field(x), inside * x)

    terms = diffrax.ODETerm(augmented_field)
    if key is not None or kappa0 is not None or solver.term_structure is not diffrax.AbstractTerm:
        # An SDE-only solver (ShARK, SRA1, ...) needs the noise term even when kappa0 = 0 (then weighted by zero);
        # with a key it is kept too, so that a noiseless run's numbers do not depend on a key being passed.
        if key is None:
            raise ValueError(f"thermox.Diffrax: {type(solver).__name__} integrates an SDE: pass key= (the PRNG key "
                             "of the Brownian path)")
        kappa0 = jnp.zeros((), x0.dtype) if kappa0 is None else kappa0
        shape = jax.ShapeDtypeStruct(x0.shape, x0.dtype)
        levy = diffrax.SpaceTimeLevyArea if _needs_levy_area(solver) else diffrax.BrownianIncrement
        if brownian_tol is None:
            bm = diffrax.UnsafeBrownianPath(shape=shape, key=key, levy_area=levy)
        else:
            bm = diffrax.VirtualBrownianTree(0.0, t, tol=brownian_tol, shape=shape, key=key, levy_area=levy)
        terms = diffrax.MultiTerm(terms, IsotropicNoise(jnp.sqrt(2.0 * kappa0), bm))
    if saturation is not None:
        solver = SaturatingSolver(solver, saturation)
    sol = diffrax.diffeqsolve(
        terms,
        solver,
        t0=0.0,
        t1=t,
        dt0=step,
        y0=(x0, jnp.zeros_like(x0)),
        saveat=diffrax.SaveAt(t1=True),
        stepsize_controller=diffrax.ConstantStepSize(),
        max_steps=num_steps + 1,
        adjoint=diffrax.DirectAdjoint(),
    )
    x_final, average = jax.tree_util.tree_map(lambda leaf: leaf[0], sol.ys)
    return average if window is not None else x_final
