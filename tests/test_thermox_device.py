"""AnalogDevice non-idealities: saturation, converters (quantization), coupling mismatch, capacity."""

import itertools

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import thermox
from thermox_reference import random_spd

jsolve = eqx.filter_jit(thermox.linalg.solve)


# --- saturation -----------------------------------------------------------------------------------


def box_qp(A, b, v):
    """Exact minimiser of 1/2 x^T A x - b^T x over |x_i| <= v by enumerating active sets (n small).

    For each assignment of every coordinate to {-v, free, +v}: solve the free block, then check the KKT
    conditions (free coordinates inside the box; multiplier g = b - A x has g_i <= 0 at -v, g_i >= 0 at +v).
    A is SPD, so exactly one assignment is a KKT point, the unique minimiser.
    """
    n = len(b)
    for assign in itertools.product((-1, 0, 1), repeat=n):
        assign = np.array(assign)
        free = assign == 0
        x = assign * float(v)
        if free.any():
            rhs = b[free] - A[np.ix_(free, ~free)] @ x[~free]
            x[free] = np.linalg.solve(A[np.ix_(free, free)], rhs)
        g = b - A @ x
        if np.all(np.abs(x[free]) <= v) and np.all(g[assign == -1] <= 0) and np.all(g[assign == 1] >= 0):
            return x
    raise AssertionError("no KKT point found")


def saturation_problem():
    A = random_spd(4, [0.5, 0.8, 1.3, 2.0], seed=8)
    b = np.array([2.0, -1.5, 0.3, 1.0])
    return A, b


def test_saturation_fixed_point_is_box_constrained_minimiser(x64):
    """Without noise the clipped dynamics is projected gradient descent on 1/2 x^T A x - b^T x with step
    dt; its fixed point x = clip(x - dt (A x - b)) is exactly the KKT point of the box-constrained problem
    (for any dt > 0). With dt * lambda_max = 0.2 < 2 the iteration contracts by at least
    1 - dt lambda_min = 0.95 per step: after t = 60 (600 steps) the error is below 0.95^600 ~ 4e-14."""
    A, b = saturation_problem()
    v = 0.6
    unclipped = np.linalg.solve(A, b)
    assert np.max(np.abs(unclipped)) > 1.5 * v  # the rails are active
    device = thermox.AnalogDevice(saturation=v)
    x = jsolve(A, b, key=jax.random.key(0), t=60.0, device=device, method=thermox.EulerMaruyama(dt=0.1))
    ref = box_qp(A, b, v)
    np.testing.assert_allclose(x, ref, atol=1e-10)
    assert np.any(np.isclose(np.abs(ref), v))


def test_saturation_bounds_every_readout(x64):
    """With thermal noise (kappa0 = 0.5: stationary std >= 0.5 per node) and a matrix right-hand side,
    every node of every readout stays inside the rails: the final state exactly (it is clipped), the window
    average up to float rounding of its sum of W = window / dt = 20 terms (|error| <= W eps v)."""
    A, b = saturation_problem()
    v = 0.6
    B = np.stack([b, -2 * b, 0.1 * b], axis=1)
    device = thermox.AnalogDevice(kappa0=0.5, saturation=v)
    keys = jax.random.split(jax.random.key(1), 200)

    @eqx.filter_jit
    def run(keys, window):
        return jax.vmap(lambda k: thermox.linalg.solve(A, B, key=k, t=5.0, device=device, window=window,
                                                        method=thermox.EulerMaruyama(dt=0.05)))(keys)

    final = np.asarray(run(keys, None))
    assert final.shape == (200, 4, 3)
    assert np.all(np.abs(final) <= v)
    average = np.asarray(run(keys, 1.0))
    assert average.shape == (200, 4, 3)
    assert np.all(np.abs(average) <= v * (1 + 20 * np.finfo(np.float64).eps))
    assert np.mean(np.abs(final) == v) > 0.1  # a sizeable fraction sits on a rail: clipping is active


def test_saturation_requires_diffrax(x64):
    A, b = saturation_problem()
    device = thermox.AnalogDevice(saturation=1.0)
    for method in ("exact", "krylov"):
        with pytest.raises(ValueError, match="saturation"):
            thermox.linalg.solve(A, b, key=jax.random.key(0), t=1.0, device=device, method=method)
    with pytest.raises(ValueError, match="saturation"):
        thermox.evolve(A, b, key=jax.random.key(0), t=1.0, saturation=1.0, method="exact")


# --- converters -----------------------------------------------------------------------------------


@pytest.mark.parametrize("bits", [1, 3, 8, 16])
def test_quantize_error_and_clipping(x64, bits):
    """Mid-tread quantizer, step = fs / 2^(bits-1), codes k in [-2^(bits-1), 2^(bits-1) - 1]:
    inside [-fs, fs - step] the output is a multiple of step within step/2 of the input; outside it
    saturates at -fs or fs - step. Slack 1e-12 step for float64 rounding of x / step."""
    fs = 2.5
    step = fs / 2 ** (bits - 1)
    x = np.linspace(-1.6 * fs, 1.6 * fs, 4001)
    q = np.asarray(thermox.quantize(jnp.asarray(x), bits, fs))
    codes = q / step
    np.testing.assert_array_equal(codes, np.round(codes))
    assert codes.min() >= -(2 ** (bits - 1)) and codes.max() <= 2 ** (bits - 1) - 1
    inside = (x >= -fs) & (x <= fs - step)
    assert np.all(np.abs(q[inside] - x[inside]) <= step / 2 * (1 + 1e-12))
    np.testing.assert_array_equal(q[x < -fs], -fs)
    np.testing.assert_array_equal(q[x > fs - step / 2], fs - step)
    assert float(thermox.quantize(jnp.asarray(0.0), bits, fs)) == 0.0


@pytest.mark.parametrize("bits", [2, 6, 12])
def test_auto_ranged_converter(x64, bits):
    """Auto-ranging (no full-scale range): the peak |x| is mapped onto the top code, so nothing clips and
    the error is at most step/2 with step = peak / (2^(bits-1) - 1); a fixed dac_range clips."""
    x = jnp.asarray(np.random.default_rng(0).normal(size=50) * 3.0)
    peak = float(jnp.max(jnp.abs(x)))
    step = peak / (2 ** (bits - 1) - 1)
    y = np.asarray(thermox.AnalogDevice(dac_bits=bits).dac(x))
    assert np.all(np.abs(y - np.asarray(x)) <= step / 2 * (1 + 1e-12))
    # The peak entry lands exactly on the top code (peak / step = 2^(bits-1) - 1): reproduced to rounding.
    assert np.isclose(np.max(np.abs(y)), peak, rtol=1e-12, atol=0)
    z = np.asarray(thermox.AnalogDevice(adc_bits=bits, adc_range=1.0).adc(x))
    assert np.all(z <= 1.0) and np.all(z >= -1.0)


def test_quantized_solve_error_shrinks_with_bits(x64):
    """dac_bits = adc_bits = coupling_bits = B on a fixed problem (kappa0 = 0, t = 1e4, so the ideal
    readout is A^-1 b to ~1e-15). First-order perturbation bound with auto-ranged converters,
    s(peak) = peak / (2 (2^(B-1) - 1)) the half-step:
        |dA|_2 <= |dA|_F <= n s(max|A_ij|),   |db|_2 <= sqrt(n) s(max|b_i|),
        y = (A + dA)^-1 (b + db):  |y - x| <= (|dA| |x| + |db|) / (lambda_min - |dA|)   (needs |dA| < lambda_min),
        ADC:  |readout - y| <= sqrt(n) s(|x|_inf + |y - x|).
    The error must decrease monotonically in B and respect the bound wherever it applies."""
    n = 8
    rng = np.random.default_rng(2)
    E = rng.uniform(-0.15, 0.15, size=(n, n))
    A = np.diag(np.linspace(2.0, 3.0, n)) + (E + E.T) / 2
    b = rng.normal(size=n)
    x = np.linalg.solve(A, b)
    lam_min = np.linalg.eigvalsh(A)[0]
    errors = []
    for B in (4, 6, 8, 10, 12):
        device = thermox.AnalogDevice(dac_bits=B, adc_bits=B, coupling_bits=B)
        readout = np.asarray(jsolve(A, b, key=jax.random.key(0), t=1e4, device=device))
        err = np.linalg.norm(readout - x)
        errors.append(err)
        s = lambda peak: peak / (2 * (2 ** (B - 1) - 1))
        dA, db = n * s(np.max(np.abs(A))), np.sqrt(n) * s(np.max(np.abs(b)))
        if dA < lam_min:
            e1 = (dA * np.linalg.norm(x) + db) / (lam_min - dA)
            assert err <= e1 + np.sqrt(n) * s(np.max(np.abs(x)) + e1), (B, err)
    assert all(e2 < e1 for e1, e2 in zip(errors, errors[1:])), errors
    assert errors[-1] < 1e-2 * errors[0]


# --- coupling mismatch ----------------------------------------------------------------------------


def test_mismatch_is_fixed_per_chip(x64):
    """A device's mismatch pattern is a function of its key: programming twice gives the same matrix,
    another key another matrix; a solve uses exactly the programmed matrix."""
    n = 6
    A = random_spd(n, np.linspace(1.0, 2.0, n), seed=12)
    b = np.ones(n)
    chip = thermox.AnalogDevice(mismatch=0.02, key=jax.random.key(5))
    twin = thermox.AnalogDevice(mismatch=0.02, key=jax.random.key(5))
    other = thermox.AnalogDevice(mismatch=0.02, key=jax.random.key(6))
    P1 = np.asarray(chip.program(thermox.DenseDrift(jnp.asarray(A))).matrix)
    P2 = np.asarray(chip.program(thermox.DenseDrift(jnp.asarray(A))).matrix)
    np.testing.assert_array_equal(P1, P2)
    np.testing.assert_array_equal(P1, np.asarray(twin.program(thermox.DenseDrift(jnp.asarray(A))).matrix))
    P3 = np.asarray(other.program(thermox.DenseDrift(jnp.asarray(A))).matrix)
    assert np.max(np.abs(P3 - P1)) > 1e-3 * np.max(np.abs(A))
    np.testing.assert_array_equal(P1, P1.T)
    # Two solves on the same chip: identical, and equal to the dense solve with the programmed matrix
    # (relative 1e-6: same error budget as test_thermox_solve) rather than with A.
    x1 = np.asarray(jsolve(A, b, key=jax.random.key(0), t=1e4, device=chip))
    x2 = np.asarray(jsolve(A, b, key=jax.random.key(1), t=1e4, device=chip))
    np.testing.assert_array_equal(x1, x2)
    ref = np.linalg.solve(P1, b)
    assert np.linalg.norm(x1 - ref) <= 1e-6 * np.linalg.norm(ref)
    assert np.linalg.norm(x1 - np.linalg.solve(A, b)) > 1e-4 * np.linalg.norm(ref)


def test_mismatch_statistics(x64):
    """Programmed couplings are A_ij (1 + m E_ij), E symmetric with i.i.d. N(0, 1) entries on and above the
    diagonal. For the K = n(n+1)/2 = 465 independent entries (n = 30): the sample mean of E has std
    1/sqrt(K), the sample variance std sqrt(2/K); 5-sigma margins."""
    n, m = 30, 0.05
    A = random_spd(n, np.linspace(1.0, 2.0, n), seed=13)
    chip = thermox.AnalogDevice(mismatch=m, key=jax.random.key(7))
    P = np.asarray(chip.program(thermox.DenseDrift(jnp.asarray(A))).matrix)
    iu = np.triu_indices(n)
    E = (P[iu] / A[iu] - 1.0) / m
    K = E.size
    assert abs(E.mean()) <= 5 / np.sqrt(K)
    assert abs(E.var(ddof=1) - 1.0) <= 5 * np.sqrt(2 / K)
    np.testing.assert_array_equal(P, P.T)


def test_ideal_device_programs_the_matrix_unchanged(x64):
    A = random_spd(5, np.linspace(1.0, 2.0, 5), seed=14)
    for device in (thermox.AnalogDevice(), thermox.AnalogDevice(mismatch=0.0, key=jax.random.key(0))):
        np.testing.assert_array_equal(device.program(thermox.DenseDrift(jnp.asarray(A))).matrix, A)


# --- capacity -------------------------------------------------------------------------------------


def test_capacity(x64):
    device = thermox.AnalogDevice(capacity=8)
    A = random_spd(8, np.linspace(1.0, 2.0, 8), seed=15)
    x = jsolve(A, np.ones(8), key=jax.random.key(0), t=100.0, device=device)
    assert x.shape == (8,)
    A9 = random_spd(9, np.linspace(1.0, 2.0, 9), seed=15)
    with pytest.raises(ValueError, match="exceeds the device capacity"):
        thermox.linalg.solve(A9, np.ones(9), key=jax.random.key(0), t=1.0, device=device)
    with pytest.raises(ValueError, match="exceeds the device capacity"):
        thermox.linalg.inv(A9, key=jax.random.key(0), t=1.0, device=thermox.AnalogDevice(kappa0=1.0, capacity=8))
