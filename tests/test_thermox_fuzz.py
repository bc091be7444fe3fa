"""Fuzzing the device API with hypothesis: shapes, dtypes, converter ranges and bits, couplings, noise, rails,
readout averaging, run times, diffrax steps and conditioning.

Every input either raises a ``ValueError`` / ``equinox.EquinoxRuntimeError`` whose message names the problem
(``thermox`` / ``AnalogDevice``), or returns finite numbers within the documented tolerance of an independent
float64 reference computed from the programmed couplings ``P`` and the converted inputs (the converters themselves
are tested in ``test_thermox_device.py``):

- exact / Krylov, noiseless: the node voltages are the OU mean ``x0 + M(P) (b - P x0)`` (numpy's float64 ``eigh``)
  within ``10 n eps kappa s`` (backward-stable evaluation: ``kappa = M(w_min) / M(w_max)`` the condition of the law's
  mean operator, ``s = |x0| + M(w_min) (|b| + w_max |x0|)`` the size of the terms), plus ``100 rtol s`` for Lanczos;
  unless the run warned that ``kappa eps > 1%`` (``thermox.ConditioningWarning``: untrustworthy, finite only);
- diffrax (Euler), noiseless: the Euler recursion's own mean, within ``10 n eps s min(steps, 1 / (1 - rho))`` (the
  rounding of each step, damped at the contraction rate rho);
- with noise: each voltage within 7 standard deviations of its exact (or Euler) law, plus the numerical tolerance
  (a correct sampler fails a coordinate with probability 3e-12);
- with rails: every voltage inside them;
- one readout is the ADC of the voltages; a fixed ADC range bounds the readout;
- an indefinite programmed drift, or rails without the diffrax method, is always an error.
Runtime: ~55 s here (8 examples per method, derandomized: the same cases every run).
"""

import math
import re
import warnings

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

import thermox
from thermox_reference import random_spd

Z = 7.0  # standard deviations allowed for one Gaussian sample per coordinate


@st.composite
def cases(draw, method):
    n = draw(st.sampled_from([1, 2, 3, 5]))
    k = draw(st.sampled_from([None, 2]))
    top = 10.0 ** draw(st.floats(-1.0, 1.0))
    x64 = draw(st.booleans())
    # Condition numbers up to and beyond what the precision resolves (float32: 1e6 is kappa eps = 0.1).
    cond = 10.0 ** draw(st.sampled_from([0.0, 1.0, 2.0, 3.5, 5.0, 8.0] if x64 else [0.0, 1.0, 2.0, 3.5, 6.0]))
    indefinite = draw(st.sampled_from([False] * 7 + [True]))
    t = draw(st.sampled_from([0.0, 1e-3, 0.5, 3.0, 50.0, 1e3, 1e6]))
    dt = draw(st.sampled_from([0.01, 0.05, 0.3]))
    if method == "diffrax":
        t = min(t, 300 * dt)  # a bounded step count
    bits = st.one_of(st.none(), st.integers(1, 16))
    ranges = st.one_of(st.none(), st.sampled_from([0.5, 10.0]))
    # Rails need the diffrax path: with the other methods, rarely (the refusal is cheap to show).
    rails = draw(st.sampled_from([False, True] if method == "diffrax" else [False] * 9 + [True]))
    device = dict(
        kappa0=draw(st.sampled_from([0.0, 0.0, 0.0, 1e-4, 0.3])),
        dac_bits=draw(bits), dac_range=draw(ranges), adc_bits=draw(bits), adc_range=draw(ranges),
        coupling_bits=draw(st.sampled_from([None, None, None, 8, 16])),
        mismatch=draw(st.sampled_from([0.0, 0.01])),
        saturation=0.5 if rails else None,
        num_readouts=draw(st.sampled_from([1, 1, 2, 3])),
        readout_interval=draw(st.sampled_from([0.1, 1.0])),
    )
    window = draw(st.sampled_from([None, None, 0.5])) if device["num_readouts"] == 1 and t > 0 else None
    return dict(n=n, k=k, top=top, cond=cond, indefinite=indefinite, method=method, t=t, dt=dt, device=device,
                window=None if window is None else window * t, x64=x64, seed=draw(st.integers(0, 9)))


def ou_moments(P, b, x0, t, kappa0):
    """Mean and covariance of x(t) from x0, exact, in the eigenbasis of P (float64; any symmetric P)."""
    w, V = np.linalg.eigh(P)
    small = np.abs(w * t) < 1e-8
    safe = np.where(small, 1.0, w)
    gain = np.where(small, t, -np.expm1(-safe * t) / safe)
    variance = kappa0 * np.where(small, 2 * t, -np.expm1(-2 * safe * t) / safe)
    residual = V.T @ (b - P @ x0)
    return x0 + V @ (gain[:, None] * residual if residual.ndim == 2 else gain * residual), (V * variance) @ V.T


def ou_window_mean(P, b, x0, t, window):
    """Mean of the average of x over [t - window, t] from x0: the average of the gain (1 - e^{-w s}) / w."""
    w, V = np.linalg.eigh(P)
    a = t - window
    small = np.abs(w * t) < 1e-3
    safe = np.where(small, 1.0, w)
    series = (t + a) / 2 - w * (t**3 - a**3) / (6 * window) + w**2 * (t**4 - a**4) / (24 * window)
    closed = (1 + np.exp(-safe * a) * np.expm1(-safe * window) / (safe * window)) / safe
    gain = np.where(small, series, closed)
    residual = V.T @ (b - P @ x0)
    return x0 + V @ (gain[:, None] * residual if residual.ndim == 2 else gain * residual)


def euler_moments(P, b, x0, segments, kappa0):
    """Mean and covariance of the Euler-Maruyama chain x <- x - h (P x - b) + sqrt(2 kappa0 h) z over the segments
    ``(h, steps)``, in the eigenbasis of P (float64)."""
    w, V = np.linalg.eigh(P)
    mean, var = V.T @ x0, np.zeros_like(w)
    beta = V.T @ b
    for h, steps in segments:
        f = 1.0 - h * w
        for _ in range(steps):
            mean = f[:, None] * mean + h * beta if mean.ndim == 2 else f * mean + h * beta
            var = f * f * var + 2.0 * kappa0 * h
    return V @ mean, (V * var) @ V.T


def law_gain(w, t):
    """M(w) = (1 - e^{-w t}) / w (t at w = 0)."""
    return t if w * t < 1e-12 else -math.expm1(-w * t) / w


@pytest.mark.parametrize("method", ["exact", "krylov", "diffrax"])
def test_device_api_fuzz(method):
    @settings(max_examples=8, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck),
              database=None)
    @given(cases(method))
    def fuzz(case):
        with jax.enable_x64(case["x64"]):
            check_case(**case)

    fuzz()


def check_case(n, k, top, cond, indefinite, method, t, dt, device, window, x64, seed):
    dtype = jnp.float64 if x64 else jnp.float32
    eps = float(jnp.finfo(dtype).eps)
    rng = np.random.default_rng(seed)
    eigenvalues = np.geomspace(top / cond, top, n)
    if indefinite:
        eigenvalues[0] = -eigenvalues[0]
    A = jnp.asarray(random_spd(n, eigenvalues, seed), dtype)
    shape = (n,) if k is None else (n, k)
    b, x0 = (jnp.asarray(rng.normal(size=shape), dtype) for _ in range(2))
    chip = thermox.AnalogDevice(key=jr.key(seed), **device)
    how = thermox.EulerMaruyama(dt) if method == "diffrax" else method
    key = jr.key(seed + 100)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            programmed = thermox.program(chip, A, method=how)
            readout = programmed.readout(b, programmed.load(x0), key=key, t=t, window=window)
            readout = jax.block_until_ready(readout)
            jax.effects_barrier()
        except (ValueError, eqx.EquinoxRuntimeError) as error:
            reason = re.search(r"(thermox(\.\w+)?: |AnalogDevice\.\w+ )[^\n]*", str(error))
            assert reason is not None, error
            event(f"refused: {reason.group(0)[:80]}")
            return
    value, voltages = np.asarray(readout.value, np.float64), np.asarray(readout.voltages, np.float64)
    assert value.shape == shape and voltages.shape == shape
    assert np.all(np.isfinite(value)) and np.all(np.isfinite(voltages)), "a finite answer or an error"
    assert device["saturation"] is None or method == "diffrax", "rails need the diffrax path"
    if device["adc_bits"] is not None and device["adc_range"] is not None:
        assert np.all(np.abs(value) <= device["adc_range"])
    if device["num_readouts"] == 1:
        np.testing.assert_array_equal(readout.value, chip.adc(readout.voltages))
    if device["saturation"] is not None:
        assert np.all(np.abs(voltages) <= device["saturation"] * (1 + 4 * eps))
        event("inside the rails")
        return
    if any(issubclass(warning.category, thermox.ConditioningWarning) for warning in caught):
        event("warned: untrustworthy")
        return  # documented as untrustworthy in this precision: finite is all that is promised

    P = np.asarray(programmed.couplings.matrix, np.float64)
    w = np.linalg.eigvalsh(P)
    # Indefinite beyond the rounding of the working precision must have been refused.
    assert w[0] > -10 * n * eps * np.max(np.abs(w)), "an indefinite programmed drift must be an error"

    bd, x0d = (np.asarray(chip.dac(v), np.float64) for v in (b, x0))
    extra = (device["num_readouts"] - 1) * device["readout_interval"]
    kappa0 = device["kappa0"]
    scale = np.linalg.norm(x0d) + law_gain(w[0], t + extra) * (np.linalg.norm(bd) + w[-1] * np.linalg.norm(x0d))
    if method == "diffrax":
        grid = lambda span: (span / max(1, math.ceil(span / dt - 1e-9)), max(1, math.ceil(span / dt - 1e-9)))
        segments = [grid(t)] + [grid(device["readout_interval"])] * (device["num_readouts"] - 1)
        if window is not None:
            return  # the window average's Euler law needs the grid alignment; finiteness is checked above
        mean, cov = euler_moments(P, bd, x0d, segments, kappa0)
        h = segments[0][0]
        rho = max(abs(1 - h * w[0]), abs(1 - h * w[-1]))
        tol = 10 * n * eps * scale * min(sum(s for _, s in segments), 1 / max(1 - rho, 1e-300))
    else:
        total = t + extra
        if window is not None:
            if kappa0 > 0:
                return  # the window's covariance is tested in test_thermox_statistics; finiteness checked above
            mean, cov = ou_window_mean(P, bd, x0d, t, window), np.zeros((n, n))
        else:
            mean, cov = ou_moments(P, bd, x0d, total, kappa0)
        kappa = law_gain(w[0], total) / law_gain(w[-1], total) if total > 0 else 1.0
        rtol = max(1e-10, 1e3 * eps)
        tol = 10 * n * eps * kappa * scale + (100 * rtol * scale if method == "krylov" else 0.0)
    event(f"against the reference: {method}, {'noisy' if kappa0 > 0 else 'noiseless'}")
    sd = np.sqrt(np.maximum(np.diag(cov), 0.0))
    sd = sd if voltages.ndim == 1 else sd[:, None]
    err = np.abs(voltages - mean)
    assert np.all(err <= Z * sd + tol), (np.max(err), tol, np.max(sd))
