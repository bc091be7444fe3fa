"""thermox.sample_path: exact sampling of an OU trajectory at given times, and thermox.linalg.inv built on it."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.linalg

import thermox
from thermox_reference import assert_cov_matches, assert_mean_matches, ou_cov, ou_mean, random_spd

N = 5
M = 2000
KAPPA0 = 0.4
TS = np.array([0.0, 0.1, 0.35, 1.0, 2.5, 6.0])  # non-uniform steps


@pytest.fixture
def problem(x64):
    A = random_spd(N, np.geomspace(0.3, 2.0, N), seed=21)
    rng = np.random.default_rng(22)
    return A, rng.normal(size=N), 3.0 * rng.normal(size=N)


class Matvec(eqx.Module):
    """A callable drift ``v -> A v`` whose matrix is a pytree leaf (traced under jit, so compilations are
    shared across matrices)."""

    A: jax.Array

    def __call__(self, v):
        return self.A @ v


def drifts(A):
    """The same matrix for the eigh path (dense) and as a matvec (matrix-free: Krylov)."""
    Aj = jnp.asarray(A)
    return {"dense": Aj, "callable": Matvec(Aj)}


@eqx.filter_jit
def _run(keys, drift, b, x0, kappa0):
    # Module-level: one compilation per drift kind (a dense drift is an array argument, so traced).
    return jax.vmap(lambda k: thermox.sample_path(drift, b, x0, key=k, ts=TS, kappa0=kappa0))(keys)


def paths(drift, b, x0, seed, kappa0=KAPPA0, num=M):
    keys = jax.random.split(jax.random.key(seed), num)
    return np.asarray(_run(keys, drift, jnp.asarray(b), jnp.asarray(x0), jnp.asarray(kappa0)))


def test_noiseless_path_is_the_mean(problem):
    """kappa0 = 0: every point equals exp(-A t)(x0 - x*) + x*, for the eigh path, the Krylov path and the
    exact low-rank path (A = shift I + W W^T). Tolerance 1e-9 of |x0| + |x*| (eigh ~1e-14 per step, Lanczos
    rtol 1e-10 per step, 5 steps)."""
    A, b, x0 = problem
    n, shift = N, 0.4
    W = np.random.default_rng(23).normal(size=(n, 2))
    Wj = jnp.asarray(W)
    low_rank = thermox.LowRankDrift(shift=jnp.asarray(shift), gram=Wj.T @ Wj, factor=lambda c: Wj @ c,
                                    factor_transpose=lambda v: Wj.T @ v, n=n)
    cases = [(A, d) for d in drifts(A).values()] + [(shift * np.eye(n) + W @ W.T, low_rank)]
    for matrix, drift in cases:
        path = paths(drift, b, x0, seed=0, kappa0=0.0)[0]  # M paths: shares the compilation below
        assert path.shape == (len(TS), n)
        ref = np.stack([ou_mean(matrix, b, x0, t) for t in TS])
        scale = np.linalg.norm(x0) + np.linalg.norm(np.linalg.solve(matrix, b))
        assert np.max(np.linalg.norm(path - ref, axis=1)) <= 1e-9 * scale


@pytest.mark.parametrize("kind", ["dense", "callable"])
def test_marginals_match_transition_law(problem, kind):
    """Across M = 2000 keys, the point at each time t_i has mean exp(-A t_i)(x0 - x*) + x* and covariance
    kappa0 A^-1 (I - exp(-2 A t_i)) (margins: 5 standard errors, see thermox_reference); x(t_0) = x0."""
    A, b, x0 = problem
    x = paths(drifts(A)[kind], b, x0, seed=1)
    np.testing.assert_array_equal(x[:, 0], np.broadcast_to(x0, (M, N)))
    for i, t in enumerate(TS[1:], start=1):
        cov = ou_cov(A, KAPPA0, t)
        assert_mean_matches(x[:, i], ou_mean(A, b, x0, t), cov)
        assert_cov_matches(x[:, i], cov)


def test_consecutive_steps_are_exact_transitions(problem):
    """Given x_i, x_{i+1} = e^{-A d}(x_i - x*) + x* + r with r ~ N(0, kappa0 A^-1 (I - e^{-2 A d})) independent
    of x_i (d = t_{i+1} - t_i). Checked per step across M paths: residual mean and covariance (5 standard
    errors), and the cross-covariance of r with x_i, whose entries have std sqrt(Var r_j Var x_{i,k} / M)."""
    A, b, x0 = problem
    x = paths(drifts(A)["dense"], b, x0, seed=2)
    xs = np.linalg.solve(A, b)
    for i in range(1, len(TS) - 1):  # from t_1 on, x_i has a non-degenerate law
        d = TS[i + 1] - TS[i]
        F = scipy.linalg.expm(-A * d)
        r = x[:, i + 1] - ((x[:, i] - xs) @ F.T + xs)
        cov_r = ou_cov(A, KAPPA0, d)
        assert_mean_matches(r, np.zeros(N), cov_r)
        assert_cov_matches(r, cov_r)
        xc, rc = x[:, i] - x[:, i].mean(0), r - r.mean(0)
        cross = rc.T @ xc / (M - 1)
        sd = np.sqrt(np.outer(np.diag(cov_r), x[:, i].var(0)) / M)
        assert np.all(np.abs(cross) <= 5 * sd)


# --- thermox.linalg.inv -----------------------------------------------------------------------------


def test_inv_estimates_inverse(x64):
    """inv = sample covariance / kappa0 of num_samples readouts `interval` tau apart after a burn-in t.

    In the eigenbasis of A (eigenvalues w_i) the readouts are independent AR(1) sequences with variance
    s_i = kappa0 / w_i and lag-one correlation rho_i = exp(-w_i interval). For stationary Gaussian
    sequences the sample covariance of coordinates i, j from N samples has variance
        s_i s_j (1 + delta_ij) (1 + rho_i rho_j) / ((1 - rho_i rho_j) N)
    (sum over lags of the autocovariance products), i.e. N (1 - rho_i rho_j)/(1 + rho_i rho_j) effectively
    independent samples. So V^T inv V must equal diag(1/w) within 5 of these standard deviations / kappa0,
    plus the bias of subtracting the sample mean on the diagonal (its variance, s_i (1+rho_i)/((1-rho_i) N))
    and of the burn-in, e^{-2 w_min t} = e^{-40}."""
    n, kappa0, t, num, interval = 5, 0.3, 40.0, 4000, 1.0
    w = np.geomspace(0.5, 2.0, n)
    A = random_spd(n, w, seed=31)
    device = thermox.AnalogDevice(kappa0=kappa0)
    est = np.asarray(eqx.filter_jit(thermox.linalg.inv)(A, key=jax.random.key(3), t=t, device=device,
                                                          num_samples=num, interval=interval))
    # X^T X is symmetric up to the rounding of the summation order (~n_samples eps relative at most).
    np.testing.assert_allclose(est, est.T, rtol=0, atol=num * np.finfo(np.float64).eps * np.max(np.abs(est)))
    w_np, V = np.linalg.eigh(A)
    E = V.T @ est @ V
    s = kappa0 / w_np
    rho = np.exp(-w_np * interval)
    rr = np.outer(rho, rho)
    sd = np.sqrt(np.outer(s, s) * (1 + np.eye(n)) * (1 + rr) / ((1 - rr) * num)) / kappa0
    bias = np.diag(s * (1 + rho) / ((1 - rho) * num)) / kappa0 + np.exp(-2 * w_np[0] * t) / w_np[0]
    err = np.abs(E - np.diag(1 / w_np))
    assert np.all(err <= 5 * sd + bias), np.max(err / (5 * sd + bias))
    # Whole matrix, original basis: E |est - A^-1|_F^2 = sum sd^2 + |bias|_F^2 (Frobenius norm is basis
    # independent). |.|_F^2 is a sum of 15 nearly independent squared errors (chi-square-like with 15 degrees
    # of freedom), so exceeding 25x its mean (5x in norm) has negligible probability.
    assert np.linalg.norm(est - np.linalg.inv(A)) <= 5 * np.sqrt(np.sum(sd**2) + np.sum(bias**2))


def test_inv_needs_noise(x64):
    A = random_spd(3, [1.0, 2.0, 3.0], seed=0)
    with pytest.raises(ValueError, match="kappa0 > 0"):
        thermox.linalg.inv(A, key=jax.random.key(0), t=1.0, device=thermox.AnalogDevice())
    with pytest.raises(ValueError, match="num_samples >= 2"):
        thermox.linalg.inv(A, key=jax.random.key(0), t=1.0, device=thermox.AnalogDevice(kappa0=1.0), num_samples=1)
