"""Advance the device's OU dynamics for a run time: exact (eigh / low-rank), Krylov, or diffrax."""

from __future__ import annotations

import math
from typing import Literal

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
from jaxtyping import Array, ArrayLike, Float, PRNGKeyArray

from ._drift import AbstractDrift, DenseDrift, EigenDrift, LowRankDrift, OperatorDrift, as_drift
from ._sde import integrate
from ._spectral import OULaw

Method = Literal["auto", "exact", "krylov", "diffrax"]
METHODS = ("auto", "exact", "krylov", "diffrax")


def check_time(value, name: str, *, allow_zero: bool = True):
    """A run time (units of tau) must be finite and >= 0 (> 0 when ``allow_zero`` is False)."""
    if isinstance(value, jax.core.Tracer):
        bad = ~jnp.isfinite(value) | (value < 0 if allow_zero else value <= 0)
        return eqx.error_if(value, bad, f"thermox: {name} must be finite and {'>=' if allow_zero else '>'} 0")
    value = float(value)
    if not math.isfinite(value) or value < 0 or (value == 0 and not allow_zero):
        raise ValueError(f"thermox: {name} must be finite and {'>=' if allow_zero else '>'} 0, got {value}")
    return value


def check_vector(x: Float[ArrayLike, "..."], n: int, name: str) -> Float[Array, "n *k"]:
    """A right-hand side or state: shape (n,) or (n, k), finite (checked at run time)."""
    x = jnp.asarray(x)
    if not jnp.issubdtype(x.dtype, jnp.floating):
        x = x.astype(jnp.result_type(float))
    if x.ndim not in (1, 2) or x.shape[0] != n:
        raise ValueError(f"thermox: {name} must have shape ({n},) or ({n}, k) to match the drift, got {x.shape}")
    return eqx.error_if(x, ~jnp.all(jnp.isfinite(x)), f"thermox: {name} has non-finite values")


def resolve_method(drift: AbstractDrift, method: Method, saturation) -> str:
    """``auto``: diffrax when saturation is on, else exact for a dense drift, Krylov for the rest (for a low-rank
    drift that is Lanczos on its small Gram matrix, with the exact ``eigh`` as fallback)."""
    if method not in METHODS:
        raise ValueError(f"thermox: unknown method {method!r}; choose one of {METHODS}")
    if method == "auto":
        if saturation is not None:
            return "diffrax"
        return "krylov" if isinstance(drift, (OperatorDrift, LowRankDrift)) else "exact"
    if saturation is not None and method != "diffrax":
        raise ValueError(
            f"thermox: saturation (clipped node voltages) has no closed form; use method='diffrax', not {method!r}"
        )
    if method == "exact" and isinstance(drift, OperatorDrift):
        raise ValueError(
            "thermox: method='exact' needs a dense, EigenDrift or LowRankDrift drift; "
            "a matrix-free operator uses method='krylov' (exact up to the Krylov tolerance)"
        )
    return method


def evolve(
    A,
    b: Float[ArrayLike, "n *k"],
    x0: Float[ArrayLike, "n *k"] | None = None,
    *,
    key: PRNGKeyArray,
    t: float | Float[Array, ""],
    kappa0: float | Float[Array, ""] = 0.0,
    window: float | None = None,
    method: Method = "auto",
    saturation: float | None = None,
    dt: float = 0.1,
    solver: diffrax.AbstractSolver | None = None,
    krylov_dim: int = 64,
    krylov_rtol: float | None = None,
    brownian_tol: float | None = None,
) -> Float[Array, "n *k"]:
    r"""Sample the node voltages of ``dx = -(A x - b) ds + sqrt(2 kappa0) dW`` after run time ``t``.

    Time ``s`` is in units of the device time constant tau. The physics alone: no converters or coupling
    errors (see :func:`thermox.linalg.solve` for the full device). The readout is x(t), or with ``window=T``
    the average of x over ``[t - T, t]``. Exact paths return a sample of the exact law
    ``x0 + M(A)(b - A x0) + C(A)^{1/2} z`` (see ``thermox._spectral``), never placing ``A^-1 b`` directly.

    Args:
        A: SPD drift: dense (n, n) array, ``EigenDrift`` (reused ``eigh``), ``LowRankDrift``, lineax operator
            or callable ``v -> A v``.
        b: bias, shape (n,) or (n, k) for k independent right-hand sides.
        x0: start state (zeros when None), same shape as ``b``.
        key: PRNG key of the thermal noise.
        t: run time in units of tau, >= 0.
        kappa0: noise temperature (volts^2).
        window: averaging window T in units of tau, ``0 < T <= t`` (None: final state).
        method: "exact" (eigh or low-rank closed form), "krylov" (Lanczos, matrix-free), "diffrax" (SDE
            integration, the only one with ``saturation``), or "auto".
        saturation: rail voltage clipping every node (diffrax only).
        dt: diffrax step in units of tau (the number of steps is ``ceil(t / dt)``); t must then be concrete.
        solver: diffrax solver (default ``diffrax.Euler()``, i.e. Euler-Maruyama).
        krylov_dim: Lanczos steps per function application.
        krylov_rtol: relative tolerance the Lanczos error estimate must meet (default ~1000 eps, >= 1e-10).
        brownian_tol: diffrax only: use a VirtualBrownianTree of this tolerance (same path for any ``dt``).

    Returns:
        The readout, same shape as ``b``.
    """
    b = jnp.asarray(b)
    n = b.shape[0] if b.ndim else 0
    drift = as_drift(A, n)
    n = drift.size
    b = check_vector(b, n, "b")
    start_at_zero = x0 is None
    x0 = jnp.zeros_like(b) if x0 is None else check_vector(x0, n, "x0")
    if x0.shape != b.shape:
        raise ValueError(f"thermox: x0 has shape {x0.shape} but b has shape {b.shape}")
    dtype = jnp.result_type(b, x0)
    b, x0 = b.astype(dtype), x0.astype(dtype)
    t = check_time(t, "run time t")
    if window is not None:
        window = check_time(window, "window", allow_zero=False)
        if not isinstance(window, jax.core.Tracer) and not isinstance(t, jax.core.Tracer):
            if window > t:
                raise ValueError(f"thermox: window={window} is longer than the run time t={t}")
        else:
            window = eqx.error_if(jnp.asarray(window), window > t, "thermox: the window is longer than the run time t")
    kappa0 = check_time(kappa0, "kappa0")
    method = resolve_method(drift, method, saturation)

    if method == "diffrax":
        if isinstance(t, jax.core.Tracer):
            raise ValueError("thermox: method='diffrax' needs a concrete run time t (it fixes the step count)")
        if isinstance(drift, DenseDrift):
            drift = DenseDrift(drift.matrix.astype(dtype))
        return integrate(
            drift, b, x0, key=key, t=t, kappa0=jnp.asarray(kappa0, dtype), dt=dt,
            solver=diffrax.Euler() if solver is None else solver, window=window,
            saturation=saturation, brownian_tol=brownian_tol,
        )

    law = OULaw(jnp.asarray(t, dtype), jnp.asarray(kappa0, dtype),
                None if window is None else jnp.asarray(window, dtype))
    if method == "exact" and isinstance(drift, DenseDrift):
        drift = drift.eigen()
    if isinstance(drift, LowRankDrift):
        drift = drift.diagonalized() if method == "exact" else drift.prepared(krylov_dim)
    rtol = krylov_rtol if krylov_rtol is not None else max(1e-10, 1e3 * float(jnp.finfo(dtype).eps))
    apply = lambda fn, v: drift.apply_fn(fn, v, krylov_dim=krylov_dim, krylov_rtol=rtol)
    residual = b if start_at_zero else b - drift.mv(x0)
    mean = x0 + apply(law.mean_gain, residual)
    if not isinstance(kappa0, jax.core.Tracer) and kappa0 == 0:
        return mean
    noise = jr.normal(key, b.shape, dtype)
    return mean + apply(law.noise_gain, noise)
