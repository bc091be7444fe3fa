"""Empirical law of the three sampling paths (exact eigh, Krylov, diffrax) against the closed forms.

M independent readouts (one PRNG key each, vmapped) at a finite run time, compared with
    mean  exp(-A t)(x0 - A^-1 b) + A^-1 b,    covariance  kappa0 A^-1 (I - exp(-2 A t))
(and the window-average law), with margins derived from M (see ``thermox_reference.assert_*``: 5 standard
errors per coordinate / entry). The diffrax path uses Euler-Maruyama, whose law differs from the continuous
one by O(dt): that bias is computed exactly from the Euler-Maruyama recursion (numpy) and added to the
margin; the same samples are also held to the exact Euler-Maruyama law with the statistical margin alone.
"""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.stats

import thermox
from thermox_reference import (
    assert_cov_matches,
    assert_mean_matches,
    euler_maruyama_law,
    euler_maruyama_window_law,
    ou_cov,
    ou_mean,
    ou_window_mean,
    quad_window_variance,
    random_spd,
)

N = 5
M = 2000  # readouts per path
T_RUN = 1.5
WINDOW = 0.5
KAPPA0 = 0.5
DT = 0.01  # diffrax step: 150 steps, window = 50 steps (aligned with the grid)


@pytest.fixture
def problem(x64):
    A = random_spd(N, np.geomspace(0.5, 2.0, N), seed=3)
    rng = np.random.default_rng(4)
    return A, rng.normal(size=N), 2.0 * rng.normal(size=N)


@eqx.filter_jit
def _run(keys, A, b, x0, options):
    # Module-level and jitted once per ``options`` (static: method, window, dt), shared across tests.
    return jax.vmap(lambda k: thermox.evolve(A, b, x0, key=k, t=T_RUN, kappa0=KAPPA0, **dict(options)))(keys)


def readouts(A, b, x0, seed, **options):
    """M readouts of thermox.evolve with keys split from ``seed`` (one compiled, vmapped call)."""
    keys = jax.random.split(jax.random.key(seed), M)
    out = _run(keys, jnp.asarray(A), jnp.asarray(b), jnp.asarray(x0), tuple(sorted(options.items())))
    assert out.shape == (M, N)
    return np.asarray(out)


def window_cov(A):
    w, V = np.linalg.eigh(A)
    return (V * np.array([quad_window_variance(wi, KAPPA0, T_RUN, WINDOW) for wi in w])) @ V.T


@pytest.mark.parametrize("method", ["exact", "krylov"])
def test_exact_paths_final_state(problem, method):
    A, b, x0 = problem
    x = readouts(A, b, x0, 0, method=method)
    cov = ou_cov(A, KAPPA0, T_RUN)
    assert_mean_matches(x, ou_mean(A, b, x0, T_RUN), cov)
    assert_cov_matches(x, cov)


@pytest.mark.parametrize("method", ["exact", "krylov"])
def test_exact_paths_window_average(problem, method):
    A, b, x0 = problem
    x = readouts(A, b, x0, 1, method=method, window=WINDOW)
    cov = window_cov(A)
    assert_mean_matches(x, ou_window_mean(A, b, x0, T_RUN, WINDOW), cov)
    assert_cov_matches(x, cov)


def test_exact_and_krylov_same_noise(problem):
    """Same key: both paths draw the same z and apply C(A)^{1/2} z, so the readouts agree to the Krylov
    tolerance (1e-10 relative per application; here checked at 1e-8 of the readout scale)."""
    A, b, x0 = problem
    exact, krylov = readouts(A, b, x0, 9, method="exact"), readouts(A, b, x0, 9, method="krylov")
    assert np.max(np.abs(exact - krylov)) <= 1e-8 * np.max(np.abs(exact))


def test_diffrax_euler_final_state(problem):
    A, b, x0 = problem
    steps = round(T_RUN / DT)
    x = readouts(A, b, x0, 2, method=thermox.EulerMaruyama(DT))
    em_mean, em_cov = euler_maruyama_law(A, b, x0, KAPPA0, DT, steps)
    # 1) The samples follow the Euler-Maruyama chain's exact law (statistical margin only).
    assert_mean_matches(x, em_mean, em_cov)
    assert_cov_matches(x, em_cov)
    # 2) Against the continuous law: add the (exactly computed) discretisation bias to the margin.
    mean, cov = ou_mean(A, b, x0, T_RUN), ou_cov(A, KAPPA0, T_RUN)
    # The bias is O(dt): the stationary variance per eigenvalue w is kappa0 / (w (1 - w dt / 2)), i.e.
    # relative w dt / 2 <= 1% here. It stays below one standard error of the covariance estimate, so the
    # comparison with the continuous law keeps its statistical power (the margin is not inflated by it).
    d = np.diag(cov)
    assert np.all(np.abs(em_cov - cov) < np.sqrt((np.outer(d, d) + cov**2) / (M - 1)))
    assert_mean_matches(x, mean, cov, extra=np.abs(em_mean - mean))
    assert_cov_matches(x, cov, extra=np.abs(em_cov - cov))


def test_diffrax_euler_window_average(problem):
    """Window readout = left Riemann sum of the Euler-Maruyama states over the last 50 steps."""
    A, b, x0 = problem
    steps, window_steps = round(T_RUN / DT), round(WINDOW / DT)
    x = readouts(A, b, x0, 3, method=thermox.EulerMaruyama(DT), window=WINDOW)
    em_mean, em_cov = euler_maruyama_window_law(A, b, x0, KAPPA0, DT, steps, window_steps)
    assert_mean_matches(x, em_mean, em_cov)
    assert_cov_matches(x, em_cov)
    mean, cov = ou_window_mean(A, b, x0, T_RUN, WINDOW), window_cov(A)
    assert_mean_matches(x, mean, cov, extra=np.abs(em_mean - mean))
    assert_cov_matches(x, cov, extra=np.abs(em_cov - cov))


def test_paths_agree_in_distribution(problem):
    """Two-sample Kolmogorov-Smirnov tests, exact vs Krylov and exact vs diffrax, on independent keys, for
    each coordinate and the projection on the slowest eigenvector: 2 x (N + 1) = 12 tests at a family-wise
    alpha = 1e-3 (Bonferroni: each p-value must exceed 1e-3 / 12). With M = 2000 per sample the KS test
    detects differences of about 1.95 sqrt(2 / M) = 0.06 in CDF (a 0.15-sigma mean shift); the Euler
    bias at dt = 0.01 is below 0.01 sigma, so a correct diffrax path passes. Means and covariances of the
    pairs are also compared with the two-sample margin sqrt(2) x 5 standard errors."""
    A, b, x0 = problem
    samples = {
        "exact": readouts(A, b, x0, 10, method="exact"),
        "krylov": readouts(A, b, x0, 11, method="krylov"),
        "diffrax": readouts(A, b, x0, 12, method=thermox.EulerMaruyama(DT)),
    }
    slow = np.linalg.eigh(A)[1][:, 0]
    cov = ou_cov(A, KAPPA0, T_RUN)
    alpha = 1e-3 / 12
    for other in ("krylov", "diffrax"):
        x, y = samples["exact"], samples[other]
        for name, (u, v) in [(f"x{i}", (x[:, i], y[:, i])) for i in range(N)] + [("slow", (x @ slow, y @ slow))]:
            p = scipy.stats.ks_2samp(u, v).pvalue
            assert p > alpha, (other, name, p)
        # Difference of two independent sample means: std sqrt(2 cov_ii / M).
        diff = np.abs(x.mean(0) - y.mean(0))
        assert np.all(diff <= 5 * np.sqrt(2 * np.diag(cov) / M)), other
        # Difference of two sample covariances: std sqrt(2 (S_ii S_jj + S_ij^2) / (M - 1)).
        d = np.diag(cov)
        cdiff = np.abs(np.cov(x, rowvar=False) - np.cov(y, rowvar=False))
        assert np.all(cdiff <= 5 * np.sqrt(2 * (np.outer(d, d) + cov**2) / (M - 1))), other
