"""One run of the device's OU dynamics (the physics alone: no converters, no coupling errors), and its input checks."""

from __future__ import annotations

import math

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, ArrayLike, Float, PRNGKeyArray

from ._drift import as_drift
from ._methods import AbstractMethod, MethodName, resolve_method


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


def check_noise_key(key: PRNGKeyArray | None, kappa0) -> None:
    """A noisy run needs the caller's PRNG key (there is no default key)."""
    if key is None and (isinstance(kappa0, jax.core.Tracer) or float(kappa0) != 0):
        raise ValueError("thermox: a noisy run (kappa0 > 0, or a traced kappa0) needs key=, the PRNG key of its "
                         "thermal noise")


def check_window(window, t):
    """An averaging window (units of tau) is finite, > 0 and at most the run time ``t``."""
    if window is None:
        return None
    window = check_time(window, "window", allow_zero=False)
    if not isinstance(window, jax.core.Tracer) and not isinstance(t, jax.core.Tracer):
        if window > t:
            raise ValueError(f"thermox: window={window} is longer than the run time t={t}")
        return window
    return eqx.error_if(jnp.asarray(window), window > t, "thermox: the window is longer than the run time t")


def check_run(n: int, b, x0, t, window, kappa0, key, *, x0_name: str = "x0"):
    """The checks every run makes: shapes and finiteness of ``b`` (and of the start state ``x0`` unless None, named
    ``x0_name`` in errors), the run time, the window, the noise temperature and its key. Returns ``(b, x0, t,
    window, kappa0)``, checked, with ``b`` and ``x0`` in one floating dtype."""
    b = check_vector(b, n, "b")
    if x0 is not None:
        x0 = check_vector(x0, n, x0_name)
        if x0.shape != b.shape:
            raise ValueError(f"thermox: {x0_name} has shape {x0.shape} but b has shape {b.shape}")
        dtype = jnp.result_type(b, x0)
        b, x0 = b.astype(dtype), x0.astype(dtype)
    t = check_time(t, "run time t")
    window = check_window(window, t)
    kappa0 = check_time(kappa0, "kappa0")
    check_noise_key(key, kappa0)
    return b, x0, t, window, kappa0


def evolve(
    A,
    b: Float[ArrayLike, "n *k"],
    x0: Float[ArrayLike, "n *k"] | None = None,
    *,
    key: PRNGKeyArray | None,
    t: float | Float[Array, ""],
    kappa0: float | Float[Array, ""] = 0.0,
    window: float | None = None,
    method: AbstractMethod | MethodName = "auto",
    saturation: float | None = None,
) -> Float[Array, "n *k"]:
    r"""Sample the node voltages of ``dx = -(A x - b) ds + sqrt(2 kappa0) dW`` after run time ``t``.

    Time ``s`` is in units of the device time constant tau. The physics alone: no converters or coupling
    errors (see :func:`thermox.program` for the full device). The readout is x(t), or with ``window=T``
    the average of x over ``[t - T, t]``. Exact paths return a sample of the exact law
    ``x0 + M(A)(b - A x0) + C(A)^{1/2} z`` (see ``thermox.OULaw``), never placing ``A^-1 b`` directly.

    Args:
        A: SPD drift: dense (n, n) array, ``EigenDrift`` (reused ``eigh``), ``LowRankDrift``, lineax operator
            or callable ``v -> A v``.
        b: bias, shape (n,) or (n, k) for k independent right-hand sides.
        x0: start state (zeros when None), same shape as ``b``.
        key: PRNG key of the thermal noise (may be None for a noiseless run).
        t: run time in units of tau, >= 0.
        kappa0: noise temperature (volts^2).
        window: averaging window T in units of tau, ``0 < T <= t`` (None: final state).
        method: a method object (``thermox.Exact()``, ``thermox.Krylov(dim, rtol)``, ``thermox.Diffrax(solver,
            dt, brownian_tol)``, ``thermox.EulerMaruyama(dt)``, ``thermox.Auto()``) or the name of a default one.
        saturation: rail voltage clipping every node (``Diffrax`` only).

    Returns:
        The readout, same shape as ``b``.
    """
    b = jnp.asarray(b)
    drift = as_drift(A, b.shape[0] if b.ndim else 0)
    method = resolve_method(method, drift, saturation)
    b, x0, t, window, kappa0 = check_run(drift.size, b, x0, t, window, kappa0, key)
    return method.advance(method.prepare(drift), b, x0, key=key, t=t, kappa0=kappa0, window=window,
                          saturation=saturation)
