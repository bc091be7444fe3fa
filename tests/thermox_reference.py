"""Independent float64 references for the thermox tests: numpy / scipy dense linear algebra and closed forms.

Nothing here calls thermox: these are the answers the device simulation is checked against.

The OU process in units of tau:  dx = -(A x - b) ds + sqrt(2 kappa0) dW,  x(0) = x0.
"""

from __future__ import annotations

import numpy as np
import scipy.integrate
import scipy.linalg

# Quadrature accuracy requested from scipy (absolute and relative); the integrands are smooth on the
# integration domains used (the kink of the kernel at s = u is put on the boundary), so QUADPACK meets it.
QUAD_TOL = 1e-12


def random_spd(n: int, eigenvalues, seed: int) -> np.ndarray:
    """``Q diag(eigenvalues) Q^T`` with a Haar-random orthogonal Q (exactly symmetric)."""
    rng = np.random.default_rng(seed)
    q, r = np.linalg.qr(rng.normal(size=(n, n)))
    q = q * np.sign(np.diag(r))
    a = (q * np.asarray(eigenvalues, float)) @ q.T
    return (a + a.T) / 2.0


def spectrum(n: int, cond: float, top: float = 1.0) -> np.ndarray:
    """``n`` eigenvalues geometrically spaced in ``[top / cond, top]``."""
    return np.geomspace(top / cond, top, n)


def ou_mean(A, b, x0, t) -> np.ndarray:
    """E x(t) = exp(-A t)(x0 - A^-1 b) + A^-1 b  (b, x0 vectors or (n, k) matrices)."""
    xs = np.linalg.solve(A, b)
    return scipy.linalg.expm(-A * t) @ (x0 - xs) + xs


def ou_cov(A, kappa0, t) -> np.ndarray:
    """Cov x(t) = kappa0 A^-1 (I - exp(-2 A t))."""
    n = A.shape[0]
    return kappa0 * np.linalg.solve(A, np.eye(n) - scipy.linalg.expm(-2.0 * A * t))


def ou_window_mean(A, b, x0, t, T) -> np.ndarray:
    """E (1/T) int_{t-T}^t x(s) ds = x* + (1/T) A^-1 (exp(-A (t-T)) - exp(-A t)) (x0 - x*)."""
    xs = np.linalg.solve(A, b)
    a = t - T
    return xs + np.linalg.solve(A, scipy.linalg.expm(-A * a) - scipy.linalg.expm(-A * t)) @ (x0 - xs) / T


def assert_mean_matches(samples, mean, cov, z: float = 5.0, extra=0.0):
    """Each coordinate of the sample mean of M independent draws has std sqrt(cov_ii / M).

    Pass if |mean_hat_i - mean_i| <= z * sqrt(cov_ii / M) + extra_i (``extra``: a known deterministic bias
    bound, e.g. of a time discretisation). With z = 5 a correct sampler fails a coordinate with probability
    ~6e-7 (the keys are fixed, so the outcome is deterministic anyway).
    """
    samples = np.asarray(samples, float)
    m = samples.shape[0]
    sem = np.sqrt(np.diag(cov) / m)
    err = np.abs(samples.mean(axis=0) - mean)
    bound = z * sem + extra
    assert np.all(err <= bound), f"mean off: |err|/bound = {np.max(err / bound):.3f} (worst coordinate)"


def assert_cov_matches(samples, cov, z: float = 5.0, extra=0.0):
    """Entry (i, j) of the sample covariance of M Gaussian draws has variance (S_ii S_jj + S_ij^2) / (M - 1).

    (Isserlis: Var(x_i x_j) = S_ii S_jj + S_ij^2 for a centred Gaussian.) Pass if every entry is within
    z of these standard deviations, plus a known deterministic bias bound ``extra`` (entrywise).
    """
    samples = np.asarray(samples, float)
    m = samples.shape[0]
    d = np.diag(cov)
    sd = np.sqrt((np.outer(d, d) + cov**2) / (m - 1))
    err = np.abs(np.cov(samples, rowvar=False, ddof=1) - cov)
    bound = z * sd + extra
    assert np.all(err <= bound), f"covariance off: |err|/bound = {np.max(err / bound):.3f} (worst entry)"


def euler_maruyama_law(A, b, x0, kappa0, h, steps):
    """Exact mean and covariance of the Euler-Maruyama chain x_{k+1} = x_k - h (A x_k - b) + sqrt(2 kappa0 h) z_k.

    This is the law the diffrax Euler path samples; its distance to the continuous law is the O(h) bias.
    """
    w, V = np.linalg.eigh(A)
    f = 1.0 - h * w
    xs = np.linalg.solve(A, b)
    mean = xs + V @ (f**steps * (V.T @ (x0 - xs)))
    # Var in the eigenbasis: 2 kappa0 h sum_{k<N} f^{2k} = 2 kappa0 h (1 - f^{2N}) / (1 - f^2).
    var = 2.0 * kappa0 * h * (1.0 - f ** (2 * steps)) / (1.0 - f**2)
    return mean, (V * var) @ V.T


def euler_maruyama_window_law(A, b, x0, kappa0, h, steps, window_steps):
    """Exact law of the left Riemann average (1/W) sum_{k=N-W}^{N-1} x_k of the Euler-Maruyama chain.

    Worked in the eigenbasis of A, where the chain is a set of independent scalar AR(1) chains
    y_{k+1} = f y_k + h beta + sqrt(2 kappa0 h) z_k, f = 1 - h w:
    Cov(y_j, y_k) = f^{|j-k|} P_min(j,k),  P_k = 2 kappa0 h (1 - f^{2k}) / (1 - f^2).
    """
    w, V = np.linalg.eigh(A)
    xs = np.linalg.solve(A, b)
    ks = np.arange(steps - window_steps, steps)
    f = (1.0 - h * w)[:, None]
    means = (V.T @ xs)[:, None] + (V.T @ (x0 - xs))[:, None] * f ** ks[None, :]
    mean = V @ means.mean(axis=1)
    var = np.empty(len(w))
    for i, fi in enumerate(f[:, 0]):
        P = 2.0 * kappa0 * h * (1.0 - fi ** (2 * ks)) / (1.0 - fi**2)
        lag = np.abs(ks[:, None] - ks[None, :])
        C = fi**lag * P[np.minimum.outer(np.arange(len(ks)), np.arange(len(ks)))]
        var[i] = C.sum() / window_steps**2
    return mean, (V * var) @ V.T


def quad_window_variance(w, kappa0, t, T):
    """(1/T^2) double integral of the OU covariance kernel over [a, t]^2, as twice the triangle u <= s
    (the kernel is symmetric; on the triangle it is smooth). Written without cancellation for small w:
    kappa0/w (e^{-w(s-u)} - e^{-w(s+u)}) = kappa0 e^{-w(s-u)} (1 - e^{-2 w u}) / w, -> 2 kappa0 u at w = 0."""
    a = t - T

    def kernel(u, s):
        if w == 0:
            return 2.0 * kappa0 * u
        return kappa0 * np.exp(-w * (s - u)) * (-np.expm1(-2.0 * w * u)) / w

    val, _ = scipy.integrate.dblquad(kernel, a, t, lambda s: a, lambda s: s, epsabs=QUAD_TOL, epsrel=QUAD_TOL)
    return 2.0 * val / T**2
