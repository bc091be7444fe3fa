"""How a run of the device is computed: method objects, as lineax's and diffrax's solvers are.

A method ``prepare``s a programmed drift once (the work that depends on the couplings only: an ``eigh``, a
Gram ``eigh``, positive-definiteness certificates) and ``advance``s the prepared drift for one run::

    thermox.Exact()                                   closed-form law by eigendecomposition (dense, low-rank)
    thermox.Krylov(dim=64, rtol=None)                 the same law by Lanczos from matvecs only
    thermox.Diffrax(solver=diffrax.Euler(), dt=0.1)   SDE integration (the only one with voltage saturation)
    thermox.EulerMaruyama(dt=0.1)                     Diffrax with Euler: the papers' simulation
    thermox.Auto()                                    one of the above, chosen from the drift and the device

The strings ``"auto" | "exact" | "krylov" | "diffrax"`` are accepted as sugar for the default objects
(:func:`as_method`).
"""

from __future__ import annotations

import abc
import math
from typing import Literal

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
from jaxtyping import Array, Float, PRNGKeyArray

from ._conditioning import warn_if_ill_conditioned
from ._drift import AbstractDrift, DenseDrift, EigenDrift, LowRankDrift, OperatorDrift
from ._sde import VectorField, integrate
from ._spectral import OULaw

MethodName = Literal["auto", "exact", "krylov", "diffrax"]


class AbstractMethod(eqx.Module):
    """A way to compute runs of the OU device ``dx = -(A x - b) ds + sqrt(2 kappa0) dW`` (s in units of tau)."""

    def check(self, drift: AbstractDrift, saturation: float | None) -> None:
        """Refuse (``ValueError``) a drift or a device this method cannot simulate."""
        if saturation is not None:
            raise ValueError(
                f"thermox: saturation (clipped node voltages) has no closed form; use thermox.Diffrax(), "
                f"not {type(self).__name__}()"
            )

    @abc.abstractmethod
    def prepare(self, drift: AbstractDrift) -> AbstractDrift:
        """The drift with the work that depends on the couplings only done once (reused by every run)."""

    @abc.abstractmethod
    def advance(
        self,
        drift: AbstractDrift,
        b: Float[Array, "n *k"],
        x0: Float[Array, "n *k"] | None,
        *,
        key: PRNGKeyArray | None,
        t: float | Float[Array, ""],
        kappa0: float | Float[Array, ""],
        window: float | Float[Array, ""] | None,
        saturation: float | None,
    ) -> Float[Array, "n *k"]:
        """The node voltages after a run of ``t`` from ``x0`` (zero when None), or their average over the last
        ``window``; ``drift`` is what :meth:`prepare` returned and the inputs are already checked."""


def _is_zero(kappa0) -> bool:
    return not isinstance(kappa0, jax.core.Tracer) and float(kappa0) == 0


class ClosedForm(AbstractMethod):
    """Samples the exact law ``x0 + M(A)(b - A x0) + C(A)^{1/2} z`` (``thermox.OULaw``) by functions of ``A``."""

    @abc.abstractmethod
    def apply_fn(self, drift: AbstractDrift, fn, x: Float[Array, "n *k"]) -> Float[Array, "n *k"]:
        """``f(A) x`` for the prepared drift."""

    def advance(self, drift, b, x0, *, key, t, kappa0, window, saturation):
        dtype = b.dtype
        law = OULaw(jnp.asarray(t, dtype), jnp.asarray(kappa0, dtype),
                    None if window is None else jnp.asarray(window, dtype))
        bounds = drift.spectrum_bounds()  # when known without extra work; Lanczos reports its own estimate
        if bounds is not None:
            lowest, highest = bounds
            # The condition number of the mean operator M(A): M decreases from M(w_min) to M(w_max).
            warn_if_ill_conditioned(law.mean_gain(lowest) / law.mean_gain(highest), dtype)
        residual = b if x0 is None else b - drift.mv(x0)
        mean = self.apply_fn(drift, law.mean_gain, residual)
        mean = mean if x0 is None else x0 + mean
        if _is_zero(kappa0):
            return mean
        noise = jr.normal(key, b.shape, dtype)
        return mean + self.apply_fn(drift, law.noise_gain, noise)


class Exact(ClosedForm):
    """The closed-form law by eigendecomposition: one ``eigh`` of a dense drift at programming, then O(n^2) per
    run; a ``LowRankDrift`` (``shift I + W W^T``, r columns) by one ``eigh`` of its r x r Gram matrix."""

    def check(self, drift, saturation):
        super().check(drift, saturation)
        if isinstance(drift, OperatorDrift):
            raise ValueError(
                "thermox: method='exact' needs a dense, EigenDrift or LowRankDrift drift; "
                "a matrix-free operator uses method='krylov' (exact up to the Krylov tolerance)"
            )

    def prepare(self, drift):
        if isinstance(drift, DenseDrift):
            return drift.eigen()
        if isinstance(drift, LowRankDrift) and drift.gram_eigen is None:
            return drift.diagonalized()
        return drift

    def apply_fn(self, drift, fn, x):
        return drift.apply_fn(fn, x)


class Krylov(ClosedForm):
    """The closed-form law by Lanczos from matvecs only, exact to ``rtol``; it fails at run time (never returns an
    unconverged or indefinite answer). On a ``LowRankDrift`` it works on the r x r Gram matrix (its ``eigh`` when
    ``r <= dim``, else Lanczos falling back to the ``eigh``).

    Attributes:
        dim: most Lanczos steps per function application (static, >= 1).
        rtol: relative change between successive Lanczos approximations accepted as converged
            (None: ``max(1e-10, 1000 eps)`` of the working precision).
    """

    dim: int = eqx.field(default=64, static=True)
    rtol: float | None = eqx.field(default=None, static=True)

    def __check_init__(self):
        if isinstance(self.dim, bool) or not isinstance(self.dim, int) or self.dim < 1:
            raise ValueError(f"thermox.Krylov: dim (Lanczos steps) must be an integer >= 1, got {self.dim!r}")
        if self.rtol is not None and not (isinstance(self.rtol, (int, float)) and 0 < self.rtol < 1):
            raise ValueError(f"thermox.Krylov: rtol must be a number in (0, 1) or None, got {self.rtol!r}")

    def tolerance(self, dtype) -> float:
        return self.rtol if self.rtol is not None else max(1e-10, 1e3 * float(jnp.finfo(dtype).eps))

    def prepare(self, drift):
        return drift.prepared(self.dim) if isinstance(drift, LowRankDrift) else drift

    def apply_fn(self, drift, fn, x):
        return drift.apply_fn(fn, x, krylov_dim=self.dim, krylov_rtol=self.tolerance(x.dtype))


def _concrete_positive(value, what: str, *, optional: bool = False) -> float | None:
    if value is None and optional:
        return None
    if isinstance(value, jax.core.Tracer):
        raise ValueError(f"thermox.Diffrax: {what} must be a concrete number (it fixes the step count), got a tracer")
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"thermox.Diffrax: {what} must be a finite number > 0, got {value!r}") from None
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"thermox.Diffrax: {what} must be finite and > 0, got {value}")
    return value


class Diffrax(AbstractMethod):
    """Integrates the device SDE with a diffrax solver at a fixed step: the general reference, and the only
    method that simulates voltage saturation (the node voltages clipped to the rails after every step).

    Programming certifies that the drift is positive definite (a Cholesky factorisation of a dense drift) and,
    for Euler-Maruyama, that the step is stable (``dt lambda_max < 2``, a Cholesky factorisation of
    ``(2 / dt) I - A``; a low-rank drift by its r x r Gram); a matrix-free drift is checked by the finiteness
    of the result only.

    Attributes:
        solver: the diffrax solver (``diffrax.Euler()`` is Euler-Maruyama, ``diffrax.ShARK()`` a strong-order-1.5
            additive-noise solver).
        dt: step in units of tau (the step count is ``ceil(t / dt)``), concrete, > 0.
        brownian_tol: None for fresh Brownian increments every step, else a ``VirtualBrownianTree`` of this
            tolerance (the same path for any ``dt``: strong-convergence studies).
    """

    solver: diffrax.AbstractSolver = diffrax.Euler()
    dt: float = eqx.field(default=0.1, static=True, converter=lambda v: _concrete_positive(v, "dt"))
    brownian_tol: float | None = eqx.field(
        default=None, static=True, converter=lambda v: _concrete_positive(v, "brownian_tol", optional=True)
    )

    def check(self, drift, saturation):
        pass

    def prepare(self, drift):
        """Attach the run-time certificates: positive definite, and a stable Euler step."""
        euler = isinstance(self.solver, diffrax.Euler)
        limit = 2.0 / self.dt
        unstable = (f"thermox.Diffrax: Euler-Maruyama is unstable at dt={self.dt}: it needs dt * lambda_max(A) < 2; "
                    "use a smaller dt")
        if isinstance(drift, EigenDrift) and euler:  # positive definite by construction
            return eqx.tree_at(lambda d: d.eigenvalues, drift,
                               eqx.error_if(drift.eigenvalues, drift.eigenvalues[-1] >= limit, unstable))
        if isinstance(drift, DenseDrift):
            A = drift.matrix
            eye = jnp.eye(A.shape[0], dtype=A.dtype)
            factorable = lambda M: jnp.all(jnp.isfinite(jnp.linalg.cholesky(M)))
            A = eqx.error_if(A, ~factorable(A), "thermox.Diffrax: the drift matrix is not positive definite "
                             "(its Cholesky factorisation fails): the device would diverge")
            if euler:
                A = eqx.error_if(A, ~factorable(limit * eye - A), unstable)
            return DenseDrift(A)
        if isinstance(drift, LowRankDrift) and euler:
            gram = drift.gram
            r = gram.shape[0]
            margin = (limit - drift.shift) * jnp.eye(r, dtype=gram.dtype) - gram
            stable = (limit > drift.shift) & jnp.all(jnp.isfinite(jnp.linalg.cholesky(margin)))
            # On the shift: the integration reads it in every A v (it never reads the Gram), so the check runs.
            return eqx.tree_at(lambda d: d.shift, drift, eqx.error_if(drift.shift, ~stable, unstable))
        return drift

    def advance(self, drift, b, x0, *, key, t, kappa0, window, saturation):
        if isinstance(t, jax.core.Tracer) or isinstance(window, jax.core.Tracer):
            raise ValueError("thermox: method='diffrax' needs a concrete run time t (it fixes the step count)")
        if isinstance(drift, DenseDrift):
            drift = DenseDrift(drift.matrix.astype(b.dtype))
        return self.integrate(lambda x: b - drift.mv(x), jnp.zeros_like(b) if x0 is None else x0, key=key,
                              t=float(t), kappa0=kappa0, window=window, saturation=saturation)

    def integrate(
        self,
        vector_field: VectorField,
        x0: Float[Array, "n *k"],
        *,
        key: PRNGKeyArray | None,
        t: float,
        kappa0: float | Float[Array, ""],
        window: float | None = None,
        saturation: float | None = None,
    ) -> Float[Array, "n *k"]:
        """The node voltages after ``dx = vector_field(x) ds + sqrt(2 kappa0) dW`` for a concrete ``t`` tau from
        ``x0`` (or their average over the last ``window``), with this solver and step; refused at run time when
        not finite. :meth:`advance` is the linear field ``b - A x``; ``thermox.langevin`` is ``-grad U``."""
        x = integrate(
            vector_field, x0, key=key, t=t, kappa0=None if _is_zero(kappa0) else jnp.asarray(kappa0, x0.dtype),
            dt=self.dt, solver=self.solver, window=window, saturation=saturation, brownian_tol=self.brownian_tol,
        )
        return eqx.error_if(
            x, ~jnp.all(jnp.isfinite(x)),
            "thermox.Diffrax: the simulated voltages are not finite: the drift is unstable (a drift matrix that is "
            "not positive definite, a potential that is not confining) or the step dt is beyond the solver's "
            "stability limit",
        )


class EulerMaruyama(Diffrax):
    """:class:`Diffrax` with ``diffrax.Euler()``: the Euler-Maruyama simulation the papers ran (dt = 0.1 tau)."""

    def __init__(self, dt: float = 0.1, brownian_tol: float | None = None):
        self.solver = diffrax.Euler()
        self.dt = dt
        self.brownian_tol = brownian_tol


class Auto(AbstractMethod):
    """:class:`Diffrax` when the device saturates, else :class:`Exact` for a dense (or ``EigenDrift``) drift and
    :class:`Krylov` for a low-rank or matrix-free one (a low-rank drift then uses its Gram's ``eigh`` when its rank
    is at most 64, else Lanczos with the ``eigh`` as fallback)."""

    def select(self, drift: AbstractDrift, saturation: float | None) -> AbstractMethod:
        if saturation is not None:
            return Diffrax()
        return Krylov() if isinstance(drift, (OperatorDrift, LowRankDrift)) else Exact()

    def prepare(self, *args, **kwargs):
        raise TypeError("thermox.Auto stands for a method chosen by thermox.program (or evolve); it has no runs")

    def advance(self, *args, **kwargs):
        return self.prepare()


_NAMED = {"auto": Auto, "exact": Exact, "krylov": Krylov, "diffrax": Diffrax}


def as_method(method: AbstractMethod | MethodName) -> AbstractMethod:
    """A method object, from an object or from its name (``"auto" | "exact" | "krylov" | "diffrax"``, which
    stand for the default objects ``Auto()``, ``Exact()``, ``Krylov()``, ``Diffrax()``)."""
    if isinstance(method, AbstractMethod):
        return method
    if isinstance(method, str) and method in _NAMED:
        return _NAMED[method]()
    raise ValueError(f"thermox: unknown method {method!r}; choose one of {tuple(_NAMED)} or a method object "
                     "(thermox.Exact(), thermox.Krylov(dim, rtol), thermox.Diffrax(solver, dt), ...)")


def resolve_method(method: AbstractMethod | MethodName, drift: AbstractDrift,
                   saturation: float | None) -> AbstractMethod:
    """The concrete method that simulates ``drift`` on a device with rails at ``saturation`` (``Auto`` chosen,
    incompatible combinations refused with a ``ValueError``)."""
    method = as_method(method)
    if isinstance(method, Auto):
        method = method.select(drift, saturation)
    method.check(drift, saturation)
    return method
