"""The exact readout law: OULaw's eigenvalue functions and the mean / covariance the exact paths produce.

References (float64): the closed forms with scipy.linalg.expm, and scipy.integrate quadrature of the
defining integrals of the window-averaged readout. For one eigen-coordinate with eigenvalue w and
x(0) = 0 (drive sqrt(2 kappa0) dW):
    Cov(x(s), x(u)) = kappa0 / w (e^{-w|s-u|} - e^{-w(s+u)}),
    E[x(s)] = s phi(w s) beta with phi(x) = (1 - e^{-x})/x, beta the bias,
so the window average over [a, t], a = t - T, has
    mean gain  M(w) = (1/T) int_a^t (1 - e^{-w s}) / w ds,
    variance   C(w) = (1/T^2) int_a^t int_a^t Cov(x(s), x(u)) ds du.
"""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.integrate

import thermox
from thermox_reference import QUAD_TOL, ou_cov, ou_mean, ou_window_mean, quad_window_variance, random_spd

# Comparison tolerance for quadrature references: a few orders above QUAD_TOL (error estimates are
# estimates) and far above float64 rounding of thermox's closed forms / series (~1e-15 relative).
REF_RTOL = 1e-9


def law(t, kappa0, window=None):
    return thermox.OULaw(
        jnp.asarray(t, jnp.float64), jnp.asarray(kappa0, jnp.float64),
        None if window is None else jnp.asarray(window, jnp.float64),
    )


def quad_mean_gain(w, t, T):
    a = t - T
    f = lambda s: s if w == 0 else -np.expm1(-w * s) / w
    val, _ = scipy.integrate.quad(f, a, t, epsabs=QUAD_TOL, epsrel=QUAD_TOL)
    return val / T


@eqx.filter_jit
def gains(L, w):
    """(M(w), C(w), C(w)^{1/2}) in one compiled call (op-by-op evaluation of the series is slow)."""
    return L.mean_gain(w), L.variance(w), L.noise_gain(w)


WS = [0.0, 1e-9, 1e-3, 0.05, 0.3, 0.999, 1.0, 1.7, 6.0, 40.0]


def test_final_state_law_closed_form(x64):
    """window=None: M(w) = (1 - e^{-w t})/w, C(w) = kappa0 (1 - e^{-2 w t})/w; at w = 0: t and 2 kappa0 t."""
    t, kappa0 = 2.5, 0.3
    w = np.array(WS)
    with np.errstate(divide="ignore", invalid="ignore"):
        mean_ref = np.where(w == 0, t, -np.expm1(-w * t) / w)
        var_ref = np.where(w == 0, 2 * kappa0 * t, kappa0 * -np.expm1(-2 * w * t) / w)
    mean, var, gain = gains(law(t, kappa0), jnp.asarray(w))
    # Relative 1e-12: both sides are a few float64 operations on the same formula; the thermox series
    # branch (|x| < 1e-6) truncates at x^3/24 < 1e-19.
    np.testing.assert_allclose(mean, mean_ref, rtol=1e-12)
    np.testing.assert_allclose(var, var_ref, rtol=1e-12)
    np.testing.assert_allclose(gain, np.sqrt(var_ref), rtol=1e-12)


@pytest.mark.parametrize("t, T", [(3.0, 1.0), (3.0, 3.0), (10.0, 0.5), (0.4, 0.1)])
def test_window_law_matches_quadrature(x64, t, T):
    kappa0 = 0.7
    mean, var, _ = (np.asarray(v) for v in gains(law(t, kappa0, T), jnp.asarray(WS)))
    assert np.all(np.isfinite(mean)) and np.all(np.isfinite(var))
    mean_ref = np.array([quad_mean_gain(w, t, T) for w in WS])
    var_ref = np.array([quad_window_variance(w, kappa0, t, T) for w in WS])
    np.testing.assert_allclose(mean, mean_ref, rtol=REF_RTOL)
    np.testing.assert_allclose(var, var_ref, rtol=REF_RTOL)


def test_window_law_small_w_limit(x64):
    """w -> 0: the process is kappa0-Brownian motion plus a linear drift b s.
    M(0) = mean of s over [a, t] = (a + t)/2;  C(0) = 2 kappa0 (a + T/3)  (Var of the average of a Brownian
    motion of rate 2 kappa0: (2 kappa0/T^2) int int min(s, u) = 2 kappa0 (a + T/3)).
    Near 0 both are analytic in w with O(1) derivatives in units of t: |f(w) - f(0)| <= |f'(0)| w with
    |M'(0)| <= t^2, |C'(0)| <= 2 kappa0 t^2, so at w = 1e-10 the relative change is < 1e-8."""
    t, T, kappa0 = 5.0, 2.0, 0.4
    a = t - T
    w = jnp.asarray([0.0, 1e-300, 1e-12, 1e-10])
    mean, var, _ = (np.asarray(v) for v in gains(law(t, kappa0, T), w))
    np.testing.assert_allclose(mean, (a + t) / 2, rtol=1e-8)
    np.testing.assert_allclose(var, 2 * kappa0 * (a + T / 3), rtol=1e-8)
    np.testing.assert_allclose(mean[:2], (a + t) / 2, rtol=1e-14)
    np.testing.assert_allclose(var[:2], 2 * kappa0 * (a + T / 3), rtol=1e-14)


@pytest.mark.parametrize("t, T", [(3.0, 1.0), (3.0, 3.0)])
def test_window_law_continuous_across_branch_switches(x64, t, T):
    """The series / closed-form switches (mean at w t = 1, variance's h(x) at x = w T = 1) join smoothly.
    Points w (1 -/+ d), d = 1e-14, straddle a switch; a smooth f changes between them by
    2 d |w f'(w) / f(w)| |f| <= 2e-14 |f| (|w f'/f| <= 1 for these decreasing gains: M ~ 1/w, C ~ 1/w at
    large w). The closed forms lose at most ~10 eps to cancellation near x = 1 (e.g.
    1 - 2 phi(1) + phi(2) = 0.168 from O(1) terms) and the 22-term series truncates below 1/23! ~ 4e-23,
    so a gap above 1e-12 relative means the two branches disagree."""
    d = 1e-14
    for switch in (1.0 / t, 1.0 / T):
        w = jnp.asarray([switch * (1 - d), switch * (1 + d)])
        for name, values in zip(("mean_gain", "variance"), gains(law(t, 1.0, T), w)):
            lo, hi = np.asarray(values)
            assert abs(hi - lo) <= 1e-12 * abs(lo), (name, switch, lo, hi)


def test_window_equals_final_state_as_window_shrinks(x64):
    """T -> 0: the average over [t - T, t] tends to x(t); both gains change by O(T) (|dM/dT| <= t,
    |dC/dT| <= 2 kappa0 t in these units), so at T = 1e-7 relative agreement 1e-6."""
    t, kappa0 = 2.0, 0.5
    w = jnp.asarray([0.01, 0.5, 3.0])
    final, avg = gains(law(t, kappa0), w), gains(law(t, kappa0, 1e-7), w)
    np.testing.assert_allclose(avg[0], final[0], rtol=1e-6)
    np.testing.assert_allclose(avg[1], final[1], rtol=1e-6)


# --- the matrix law produced by the exact paths ---------------------------------------------------


N = 8


def problem(seed=0):
    A = random_spd(N, np.geomspace(0.2, 3.0, N), seed)
    rng = np.random.default_rng(seed + 100)
    return A, rng.normal(size=N), rng.normal(size=N)


jevolve = eqx.filter_jit(thermox.evolve)


@pytest.mark.parametrize("t", [0.0, 0.3, 2.0])
@pytest.mark.parametrize("method", ["exact", "krylov"])
def test_evolve_mean_closed_form(x64, method, t):
    """kappa0 = 0: evolve returns the mean exp(-A t)(x0 - A^-1 b) + A^-1 b. The exact path is eigh-accurate
    (~n cond eps ~ 1e-14); Krylov meets its rtol 1e-10. Compared at 1e-9 relative to |x0| + |A^-1 b|."""
    A, b, x0 = problem()
    # t as an array: traced, so the three times share one compilation per method.
    x = jevolve(A, b, x0, key=jax.random.key(0), t=jnp.asarray(t), kappa0=0.0, method=method)
    ref = ou_mean(A, b, x0, t)
    scale = np.linalg.norm(x0) + np.linalg.norm(np.linalg.solve(A, b))
    assert np.linalg.norm(np.asarray(x) - ref) <= 1e-9 * scale


@pytest.mark.parametrize("method", ["exact", "krylov"])
def test_evolve_window_mean_closed_form(x64, method):
    """E of the window average = x* + (1/T) A^-1 (e^{-A(t-T)} - e^{-A t})(x0 - x*)."""
    A, b, x0 = problem(1)
    t, T = 2.0, 0.75
    x = jevolve(A, b, x0, key=jax.random.key(0), t=t, window=T, kappa0=0.0, method=method)
    ref = ou_window_mean(A, b, x0, t, T)
    scale = np.linalg.norm(x0) + np.linalg.norm(np.linalg.solve(A, b))
    assert np.linalg.norm(np.asarray(x) - ref) <= 1e-9 * scale


def test_low_rank_mean_closed_form(x64):
    """LowRankDrift's exact law (r x r eigh) gives the same finite-t mean as expm of the dense matrix."""
    n, r, shift = N, 2, 0.3
    W = np.random.default_rng(7).normal(size=(n, r))
    A = shift * np.eye(n) + W @ W.T
    b, x0 = np.ones(n), np.linspace(-1, 1, n)
    Wj = jnp.asarray(W)
    drift = thermox.LowRankDrift(
        shift=jnp.asarray(shift), gram=Wj.T @ Wj, factor=lambda c: Wj @ c, factor_transpose=lambda v: Wj.T @ v, n=n
    )
    for t in (0.5, 4.0):
        x = jevolve(drift, b, x0, key=jax.random.key(0), t=jnp.asarray(t), kappa0=0.0, method="exact")
        ref = ou_mean(A, b, x0, t)
        assert np.linalg.norm(np.asarray(x) - ref) <= 1e-9 * (np.linalg.norm(x0) + np.linalg.norm(np.linalg.solve(A, b)))


@eqx.filter_jit
def covariance_operators(A, L):
    eye = jnp.eye(A.shape[0], dtype=A.dtype)
    C_eigh = thermox.EigenDrift.from_matrix(A).apply_fn(L.variance, eye)
    G = thermox.DenseDrift(A).apply_fn(L.noise_gain, eye, krylov_dim=A.shape[0], krylov_rtol=1e-10)
    return C_eigh, G


@pytest.mark.parametrize("t", [0.1, 1.5])
def test_covariance_operator_closed_form(x64, t):
    """The noise the exact paths add is C(A)^{1/2} z. Building C(A) = f(A) on the identity's columns:
    eigh path:   EigenDrift.apply_fn(variance, I)                          vs kappa0 A^-1 (I - e^{-2 A t}),
    Krylov path: DenseDrift.apply_fn(noise_gain, I)^2 (Lanczos per column) vs the same.
    Tolerance 1e-9 relative to kappa0 / lambda_min (eigh ~ 1e-14, Lanczos rtol 1e-10)."""
    A, _, _ = problem(2)
    kappa0 = 0.2
    L = law(t, kappa0)
    ref = ou_cov(A, kappa0, t)
    scale = kappa0 / np.linalg.eigvalsh(A)[0]
    C_eigh, G = covariance_operators(jnp.asarray(A), L)
    np.testing.assert_allclose(C_eigh, ref, atol=1e-9 * scale)
    np.testing.assert_allclose(np.asarray(G) @ np.asarray(G).T, ref, atol=1e-9 * scale)


def test_window_covariance_operator_matches_quadrature(x64):
    """Window readout covariance C(A) = V diag(C(w_i)) V^T, with C(w_i) from scipy quadrature of the kernel
    at numpy's eigenvalues: independent of thermox's series and closed forms."""
    A, _, _ = problem(3)
    kappa0, t, T = 0.5, 2.0, 0.8
    w, V = np.linalg.eigh(A)
    ref = (V * np.array([quad_window_variance(wi, kappa0, t, T) for wi in w])) @ V.T
    C, _ = covariance_operators(jnp.asarray(A), law(t, kappa0, T))
    np.testing.assert_allclose(C, ref, atol=REF_RTOL * np.max(np.abs(ref)))
