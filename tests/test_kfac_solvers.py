"""The Kronecker solvers' linear algebra against dense float64 references (numpy inverses, ``scipy.linalg.expm``).

Tolerances: a backward-stable inversion of a matrix with condition number kappa is within ``c n kappa eps`` of the
exact inverse (Higham, Accuracy and Stability, ch. 14), ``c <= 10`` covering the constants here. The exact OU law
``M(P) = (I - e^{-P t}) P^-1``, ``C(P) = kappa0 (I - e^{-2 P t}) P^-1`` is computed independently by ``expm``.
"""

import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest
import scipy.linalg

import thermox
from kfac_reference import EPS64
from kfac_thermo import ThermoKronecker
from thermox import ou_law_operators, spd_inverse
from thermox._dense_law import relaxation_certificates, relaxation_threshold


def spd(n: int, condition: float, seed: int = 0) -> np.ndarray:
    """A random SPD matrix with eigenvalues log-spaced in ``[1 / condition, 1]``."""
    Q, _ = np.linalg.qr(np.random.default_rng(seed).normal(size=(n, n)))
    return (Q * np.geomspace(1.0 / condition, 1.0, n)) @ Q.T


@pytest.mark.parametrize("n", [7, 256, 601])
def test_spd_inverse_matches_dense(x64, n):
    """Below, at and above the block size (601 splits into 300 + 301, then 150 + 150 ...)."""
    M = spd(n, 1e4, seed=n)
    ours = np.asarray(jax.jit(spd_inverse)(jnp.asarray(M)))
    expected = np.linalg.inv(M)
    err = np.linalg.norm(ours - expected, 2) / np.linalg.norm(expected, 2)
    assert err <= 10 * n * 1e4 * EPS64, err
    np.testing.assert_array_equal(ours, ours.T)


def test_spd_inverse_of_an_indefinite_matrix_is_not_finite(x64):
    """Not positive definite (one negative eigenvalue, in the second diagonal block): no finite answer."""
    M = spd(300, 10.0)
    w, V = np.linalg.eigh(M)
    w[0] = -0.5
    assert not np.all(np.isfinite(np.asarray(spd_inverse(jnp.asarray((V * w) @ V.T)))))


def reference_law(P: np.ndarray, t: float, kappa0: float) -> tuple[np.ndarray, np.ndarray]:
    eye = np.eye(P.shape[0])
    mean = np.linalg.solve(P, eye - scipy.linalg.expm(-P * t))
    covariance = kappa0 * np.linalg.solve(P, eye - scipy.linalg.expm(-2.0 * P * t))
    return mean, covariance


@pytest.mark.parametrize("n", [40, 300])
@pytest.mark.parametrize("regime", ["bounded", "factorable", "transient"])
def test_law_operators_match_expm(x64, n, regime):
    """The three paths of ``ou_law_operators``: a long run whose relaxation the row-sum norm of ``P^-1`` certifies,
    one just long enough (``lambda_min t`` 1.2 times ``-log eps``: certified by the Cholesky of ``P - mu I`` only),
    and one that has not relaxed (the ``eigh`` path); the mean operator and the noise covariance
    ``noise noise^T`` equal the expm law."""
    P = spd(n, 100.0, seed=1)
    inverse = np.linalg.inv(P)
    lam_min = 1.0 / np.linalg.eigvalsh(inverse)[-1]
    mu = float(relaxation_threshold(1.0, jnp.float64))
    t = {"bounded": 1.01 * mu * np.abs(inverse).sum(1).max(), "factorable": 1.2 * mu / lam_min,
         "transient": 0.5 * mu / lam_min}[regime]
    assert (np.abs(inverse).sum(1).max() * mu / t <= 1) == (regime == "bounded")
    assert (lam_min >= mu / t) == (regime != "transient")
    bounded, relaxed = relaxation_certificates(jnp.asarray(P), jnp.asarray(inverse), mu / t)
    assert (bool(bounded), bool(relaxed)) == {"bounded": (True, True), "factorable": (False, True),
                                              "transient": (False, False)}[regime]
    kappa0 = 1e-3
    law = jax.jit(lambda P: ou_law_operators(P, t, kappa0, noisy=True))(jnp.asarray(P))
    mean, covariance = reference_law(P, t, kappa0)
    kappa = np.linalg.cond(P)
    for ours, expected in ((law.mean, mean), (law.noise @ law.noise.T, covariance)):
        err = np.linalg.norm(np.asarray(ours) - expected, 2) / np.linalg.norm(expected, 2)
        assert err <= 10 * n * kappa * EPS64, err
    quiet = jax.jit(lambda P: ou_law_operators(P, t, 0.0, noisy=False))(jnp.asarray(P))
    assert quiet.noise is None
    np.testing.assert_array_equal(quiet.mean, law.mean)


@pytest.mark.parametrize("dac_range", [None, 0.7])
def test_identity_readout_is_the_readout_of_the_identity(x64, dac_range):
    """Method "invert" reads ``adc(q M(P) + noise Z)`` instead of multiplying by ``dac(I)``: the same numbers
    (auto-ranged, and with a fixed full scale below 1 that clips the diagonal)."""
    n = 30
    device = thermox.AnalogDevice(kappa0=1e-3, dac_bits=6, adc_bits=6, dac_range=dac_range)
    solver = ThermoKronecker(device=device, method="invert", t=50.0)
    law = solver._law(jnp.asarray(spd(n, 10.0)))
    key = jr.key(0)
    expected = solver._readout(law, jnp.eye(n), key)
    np.testing.assert_allclose(solver._identity_readout(law, key), expected, rtol=0, atol=1e-15)


@pytest.mark.parametrize("rows", [False, True])
def test_readout_mean_is_the_law_through_the_dac(x64, rows):
    """A step's run (method "solve") without noise: ``M(P) dac(b)``, ``M`` from expm (an unrelaxed run); in the row
    layout (the second solve of a step) the right-hand sides are the rows of ``b^T``."""
    n, t = 20, 5.0
    device = thermox.AnalogDevice(dac_bits=8)
    solver = ThermoKronecker(device=device, t=t)
    P = spd(n, 10.0)
    mean, _ = reference_law(P, t, 0.0)
    b = jnp.asarray(np.random.default_rng(2).normal(size=(n, 3)))
    law = solver._law(jnp.asarray(P))
    ours = solver._readout(law, b.T, jr.key(0), rows=True).T if rows else solver._readout(law, b, jr.key(0))
    np.testing.assert_allclose(ours, mean @ np.asarray(device.dac(b)), rtol=1e-12)


@pytest.mark.parametrize("rows", [False, True])
def test_readout_noise_has_the_law_covariance(x64, rows):
    """With thermal noise, N = 20000 readouts (independent keys) of one right-hand side: the sample mean is within
    5 standard errors of ``M(P) b`` and each sample covariance entry within 5 of its standard errors
    ``sqrt((C_ii C_jj + C_ij^2) / N)`` of ``C(P)``; 4 + 10 checks fail by chance with probability < 1e-5."""
    n, t, kappa0, N = 4, 3.0, 1e-2, 20000
    solver = ThermoKronecker(device=thermox.AnalogDevice(kappa0=kappa0), t=t)
    P = spd(n, 10.0)
    mean, covariance = reference_law(P, t, kappa0)
    b = jnp.asarray(np.random.default_rng(3).normal(size=(n, 1)))
    law = solver._law(jnp.asarray(P))
    if rows:
        run = lambda k: solver._readout(law, b.T, k, rows=True)[0]
    else:
        run = lambda k: solver._readout(law, b, k)[:, 0]
    samples = np.asarray(jax.jit(jax.vmap(run))(jr.split(jr.key(4), N)))
    expected_mean = (mean @ np.asarray(b))[:, 0]
    assert np.all(np.abs(samples.mean(0) - expected_mean) <= 5 * np.sqrt(np.diag(covariance) / N))
    sample_cov = np.cov(samples.T)
    d = np.diag(covariance)
    stderr = np.sqrt((np.outer(d, d) + covariance**2) / N)
    assert np.all(np.abs(sample_cov - covariance) <= 5 * stderr), np.max(np.abs(sample_cov - covariance) / stderr)
