"""Thermodynamic linear algebra: what the simulated device reads out, never a digital solve placed as the answer."""

from __future__ import annotations

import jax.numpy as jnp
from jaxtyping import Array, ArrayLike, Float, PRNGKeyArray

from ._device import AnalogDevice
from ._drift import as_drift
from ._evolve import check_time
from ._methods import AbstractMethod, MethodName
from ._path import sample_path
from ._program import program


def solve(
    A,
    b: Float[ArrayLike, "n *k"],
    *,
    key: PRNGKeyArray | None,
    t: float | Float[Array, ""],
    device: AnalogDevice = AnalogDevice(),
    x0: Float[ArrayLike, "n *k"] | None = None,
    method: AbstractMethod | MethodName = "auto",
    window: float | None = None,
) -> Float[Array, "n *k"]:
    r"""The device's readout of ``A^-1 b`` after running for ``t`` (units of the device's tau).

    ``b`` (and ``x0``, zeros by default) pass through the DAC, ``A`` is programmed into the couplings
    (quantization and the chip's mismatch), the OU dynamics ``dx = -(A x - b) ds + sqrt(2 kappa0) dW`` run
    for ``t`` (held at the rails if ``device.saturation`` is set), and the node voltages (or their average
    over the last ``window``) are read through the ADC (``device.num_readouts`` samples averaged). The readout's
    mean is ``A^-1 b + e^{-A t}(x0 - A^-1 b)``: relaxing needs ``t`` of a few ``1 / lambda_min(A)``. This is
    ``thermox.program(device, A, method=method).solve(b, x0, key=key, t=t, window=window)``.

    Args:
        A: SPD matrix (n, n), a ``thermox.EigenDrift`` / ``LowRankDrift``, a lineax operator or a matvec.
        b: right-hand side(s), shape (n,) or (n, k).
        key: PRNG key of the thermal noise of this run (None only on a noiseless device).
        t: run time in units of tau.
        device: the chip and its non-idealities.
        x0: initial node voltages (default zeros), loaded through the DAC.
        method: a method object or its name (see :func:`thermox.program`).
        window: averaging window in units of tau (None: the final voltages).

    Returns:
        The digital readout, same shape as ``b``.
    """
    b = jnp.asarray(b)
    drift = as_drift(A, b.shape[0] if b.ndim else None)
    return program(device, drift, method=method).solve(b, x0, key=key, t=t, window=window)


def inv(
    A,
    *,
    key: PRNGKeyArray,
    t: float | Float[Array, ""],
    device: AnalogDevice,
    num_samples: int = 1000,
    interval: float = 1.0,
    method: AbstractMethod | MethodName = "auto",
) -> Float[Array, "n n"]:
    r"""``A^-1`` estimated from the stationary covariance ``kappa0 A^-1`` of the device (b = 0).

    The device starts at zero, runs for a burn-in ``t`` (units of tau), then its node voltages are read
    (through the ADC) ``num_samples`` times, ``interval`` tau apart; the estimate is their sample
    covariance divided by ``kappa0``. Consecutive samples are correlated over ``1 / lambda_min(A)`` tau,
    so the relative error is about ``sqrt(2 (1 + 2 / (interval lambda_min)) / num_samples)`` entrywise
    scaled, plus ``e^{-2 lambda_min t}`` from the burn-in. Needs a noisy device (``kappa0 > 0``); ``method`` is
    ``thermox.Exact()`` or ``thermox.Krylov(dim, rtol)`` (see :func:`thermox.sample_path`).
    """
    drift = as_drift(A)
    device.check_capacity(drift.size)
    if device.is_noiseless:
        raise ValueError("thermox.linalg.inv reads A^-1 from thermal fluctuations: it needs device.kappa0 > 0")
    if num_samples < 2:
        raise ValueError(f"thermox.linalg.inv needs num_samples >= 2, got {num_samples}")
    t = check_time(t, "burn-in time t")
    interval = check_time(interval, "interval", allow_zero=False)
    if device.saturation is not None:
        raise ValueError("thermox.linalg.inv: saturation is not supported by the exact path sampler")
    programmed = program(device, drift, method=method)
    n = drift.size
    dtype = jnp.result_type(float)
    zeros = jnp.zeros((n,), dtype)
    ts = jnp.concatenate([jnp.zeros((1,), dtype), t + interval * jnp.arange(num_samples, dtype=dtype)])
    path = sample_path(programmed.prepared, zeros, zeros, key=key, ts=ts, kappa0=device.kappa0,
                       method=programmed.method)
    samples = programmed.read(path[1:])
    centered = samples - jnp.mean(samples, axis=0)
    return centered.T @ centered / ((num_samples - 1) * device.kappa0)
