"""Exact sampling of a whole OU trajectory at given times (the device observed repeatedly)."""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
from jaxtyping import Array, ArrayLike, Float, PRNGKeyArray

from ._drift import EigenDrift, as_drift
from ._evolve import check_time, check_vector
from ._methods import AbstractMethod, ClosedForm, MethodName, resolve_method
from ._spectral import OULaw


def sample_path(
    A,
    b: Float[ArrayLike, " n"],
    x0: Float[ArrayLike, " n"],
    *,
    key: PRNGKeyArray,
    ts: Float[ArrayLike, " m"],
    kappa0: float | Float[Array, ""] = 1.0,
    method: AbstractMethod | MethodName = "auto",
) -> Float[Array, "m n"]:
    r"""Exact sample of ``dx = -(A x - b) ds + sqrt(2 kappa0) dW`` at the times ``ts`` (units of tau).

    ``x(ts[0]) = x0``; each later point is drawn from the exact Gaussian transition over ``ts[i] - ts[i-1]``.
    With ``thermox.Exact()`` (``"auto"`` for a dense or ``EigenDrift`` drift) it works in the eigenbasis: one
    ``eigh`` and two n x n products for the whole path, then O(n) per time point. Other drifts, or
    ``thermox.Krylov(dim, rtol)``, apply the transition with their own exact (low-rank) or Krylov functions per
    step. A ``Diffrax`` method is refused: the path is sampled from the exact law.

    Note: the public ``thermox`` package writes ``dx = -A (x - b) dt + sqrt(D) dW``; the same process here
    has bias ``A b`` and ``kappa0 = D / 2``.
    """
    x0 = jnp.asarray(x0)
    drift = as_drift(A, x0.shape[0])
    x0 = check_vector(x0, drift.size, "x0")
    b = check_vector(b, drift.size, "b").astype(x0.dtype)
    if x0.ndim != 1:
        raise ValueError(f"thermox: sample_path takes a vector state, got shape {x0.shape}")
    ts = jnp.asarray(ts, x0.dtype)
    if ts.ndim != 1 or ts.shape[0] < 1:
        raise ValueError(f"thermox: ts must be a non-empty 1-D array of times, got shape {ts.shape}")
    kappa0 = check_time(kappa0, "kappa0")
    method = resolve_method(method, drift, None)
    if not isinstance(method, ClosedForm):
        raise ValueError(f"thermox: sample_path samples the exact law: use thermox.Exact() or thermox.Krylov(), "
                         f"not {type(method).__name__}")
    steps = jnp.diff(ts)
    steps = eqx.error_if(steps, jnp.any(steps < 0) | ~jnp.all(jnp.isfinite(ts)),
                         "thermox: ts must be finite and non-decreasing")
    noise = jr.normal(key, (steps.shape[0], x0.shape[0]), x0.dtype)

    drift = method.prepare(drift)
    if isinstance(drift, EigenDrift):
        w, V = drift.eigenvalues, drift.eigenvectors
        y0, beta = V.T @ x0, V.T @ b

        def step(y, inputs):
            dt, z = inputs
            law = OULaw(dt, jnp.asarray(kappa0, y.dtype), None)
            y = y + law.mean_gain(w) * (beta - w * y) + law.noise_gain(w) * z
            return y, y

        _, ys = jax.lax.scan(step, y0, (steps, noise))
        return jnp.concatenate([x0[None], ys @ V.T], axis=0)

    def general_step(x, inputs):
        dt, z = inputs
        law = OULaw(dt, jnp.asarray(kappa0, x0.dtype), None)
        apply = lambda fn, v: method.apply_fn(drift, fn, v)
        x = x + apply(law.mean_gain, b - drift.mv(x)) + apply(law.noise_gain, z)
        return x, x

    _, xs = jax.lax.scan(general_step, x0, (steps, noise))
    return jnp.concatenate([x0[None], xs], axis=0)
