"""``thermox.langevin``: the device as a Langevin circuit ``dx = -grad U ds + sqrt(2 kappa0) dW``.

References: (a) a quadratic U, whose Euler-Maruyama chain has a closed-form Gaussian stationary law; (b) Bayesian
logistic regression on a digits subset against a long Metropolis-adjusted (exact) MALA chain. Float64 throughout.
"""

import math

import diffrax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import thermox
from experiments import langevin as blr_study
from thermox_reference import random_spd

KEY = jax.random.key(0)


def quadratic_case():
    """U(x) = (x - m)^T A (x - m) / 2 with A's eigenvalues 0.5, 1, 2; kappa0 = 0.5."""
    A = random_spd(3, np.array([0.5, 1.0, 2.0]), 3)
    return A, np.array([1.0, -0.5, 2.0]), 0.5


def test_quadratic_potential_samples_the_gaussian_law(x64):
    """Euler-Maruyama at step h on U = (x - m)^T A (x - m)/2 is, per eigenmode lambda of A, the AR(1) chain
    ``y' = (1 - h lambda) y + sqrt(2 kappa0 h) z``: stationary mean m and variance ``kappa0 / (lambda (1 - h lambda
    / 2))`` (the continuous law N(m, kappa0 A^-1) up to the O(h) factor ``1 / (1 - h lambda / 2)``), and
    correlation ``rho = (1 - h lambda)^k`` between readouts k = interval / h steps apart. In the whitened eigenmodes
    (unit variance, independent) the estimates' variances over N readouts are (Bartlett, Gaussian AR(1)):
    mean ``(1 + rho)/(1 - rho) / N`` (N (1 - rho)/(1 + rho) effectively independent samples), variance
    ``2 (1 + rho^2)/(1 - rho^2) / N``, cross-covariance ``(1 + rho_i rho_j)/(1 - rho_i rho_j) / N``. All 9 standardized
    errors must be under 4.5 (each |z| > 4.5 has probability 7e-6); a wrong temperature or a missing sqrt(2)
    shifts the variances by >= 50%, z ~ 50."""
    A, m, kappa0 = quadratic_case()
    h, interval, num = 0.05, 0.5, 20_000
    samples = thermox.langevin(thermox.AnalogDevice(kappa0=kappa0), lambda x: jnp.asarray(A) @ (x - m),
                               jnp.zeros(3), key=KEY, num_samples=num, burn_in=10.0, interval=interval,
                               method=thermox.EulerMaruyama(dt=h))
    lam, V = np.linalg.eigh(A)
    var = kappa0 / (lam * (1 - h * lam / 2))
    y = (np.asarray(samples) - m) @ V / np.sqrt(var)
    rho = (1 - h * lam) ** round(interval / h)
    z_mean = y.mean(0) / np.sqrt((1 + rho) / (1 - rho) / num)
    cov = np.cov(y.T)
    rr = np.outer(rho, rho)
    cov_sd = np.sqrt((1 + rr) / (1 - rr) / num)
    cov_sd[np.diag_indices(3)] *= math.sqrt(2)  # 2 (1 + rho^2)/(1 - rho^2) on the diagonal
    z_cov = (cov - np.eye(3)) / cov_sd
    assert np.max(np.abs(z_mean)) < 4.5 and np.max(np.abs(z_cov[np.triu_indices(3)])) < 4.5, (z_mean, z_cov)


def test_rails_and_adc_hold_on_every_sample(x64):
    """Rails at 0.3 V (inside the law's spread, so they act) bound every readout; a 4-bit ADC of range 2 V gives
    multiples of its step 0.25 V."""
    A, m, kappa0 = quadratic_case()
    device = thermox.AnalogDevice(kappa0=kappa0, saturation=0.3, adc_bits=4, adc_range=2.0)
    samples = np.asarray(thermox.langevin(device, lambda x: jnp.asarray(A) @ (x - m), jnp.zeros(3), key=KEY,
                                          num_samples=500, burn_in=1.0, interval=0.2,
                                          method=thermox.EulerMaruyama(dt=0.05)))
    assert np.all(np.abs(samples) <= 0.3)
    np.testing.assert_allclose(samples / 0.25, np.round(samples / 0.25), atol=1e-12)
    assert np.mean(samples[:, 2] == 0.25) > 0.5  # m_2 = 2 lies far beyond the rail: the node sits at it


def test_blr_posterior_matches_the_mala_reference(x64):
    """100 digits, 4x4 pooled pixels + bias (d = 17), delta = 1. Tolerance per moment: 3 times the combined Monte
    Carlo error (device and reference, batch means; a Frobenius norm over 17 or 153 entries concentrates near its
    root-mean-square, so 3 is a wide margin) plus the O(dt) Euler bias bound: eps = (h L/2)/(1 - h L/2) relative on
    the covariance (the largest relative variance bias on a Gaussian whose Hessian is <= L = lambda_max(X^T X)/4 +
    delta, which bounds the Hessian of U everywhere), and eps times the posterior standard deviations on the mean.
    The bound has room: the Hessian at the MAP stays under 0.6 L (asserted), so the stiffest mode's own bias h lambda/2
    is under 0.6 eps. A device at
    the wrong temperature (covariance x2) misses the bound by far."""
    blr = blr_study.digits_blr(num_points=100, pool=2, delta=1.0, seed=0)
    L = blr_study.lipschitz(blr)
    _, H = blr_study.laplace(blr)
    assert np.linalg.eigvalsh(np.asarray(H))[-1] < 0.6 * L
    ref_samples, acceptance = blr_study.mala(blr, key=jax.random.key(1), step=0.6, num_samples=40_000, thin=4,
                                             burn_in=1000)
    assert 0.3 < float(acceptance) < 0.95
    ref = blr_study.moments(ref_samples)

    dt = 0.1 / L
    samples = thermox.langevin(thermox.AnalogDevice(kappa0=1.0), lambda w: blr_study.grad_potential(blr, w),
                               jnp.zeros(blr.dim), key=jax.random.key(2), num_samples=6000, burn_in=2.0,
                               interval=0.2, method=thermox.EulerMaruyama(dt=dt))
    got = blr_study.moments(samples)
    eps = blr_study.euler_bias_bound(dt, L)
    mc = lambda a, b, r: math.hypot(blr_study.relative_mc_error(a, r), blr_study.relative_mc_error(b, r))
    sd = np.sqrt(np.diag(ref.cov))
    mean_tol = 3 * mc(got.mean_var, ref.mean_var, ref.mean) + eps * np.linalg.norm(sd) / np.linalg.norm(ref.mean)
    cov_tol = 3 * mc(got.cov_var, ref.cov_var, ref.cov) + eps
    mean_error = blr_study.relative_error(got.mean, ref.mean)
    cov_error = blr_study.relative_error(got.cov, ref.cov)
    assert mean_error < mean_tol and cov_error < cov_tol, (mean_error, mean_tol, cov_error, cov_tol)
    assert cov_tol < 0.3  # the test can fail: a doubled covariance is off by 1.0
    assert blr_study.relative_error(2 * got.cov, ref.cov) > cov_tol


@pytest.mark.parametrize("case,match", [
    (dict(device=thermox.AnalogDevice(kappa0=0.0)), "noiseless"),
    (dict(burn_in=-1.0), "burn_in"),
    (dict(interval=0.0), "interval"),
    (dict(interval=float("nan")), "interval"),
    (dict(num_samples=0), "num_samples"),
    (dict(device=thermox.AnalogDevice(kappa0=1.0, capacity=2)), "capacity"),
    (dict(x0=jnp.zeros((3, 1))), "x0 must be a vector"),
    (dict(grad=lambda x: x[:2]), "grad_potential must map"),
    (dict(method=thermox.Exact()), "no closed-form law"),
    (dict(key=None), "key="),
    (dict(device=thermox.AnalogDevice(kappa0=1.0, coupling_bits=8)), "coupling_bits"),
    (dict(device=thermox.AnalogDevice(kappa0=1.0, num_readouts=3)), "num_readouts"),
])
def test_bad_inputs_are_refused(case, match):
    args = dict(device=thermox.AnalogDevice(kappa0=1.0), grad=lambda x: x, x0=jnp.zeros(3), key=KEY, num_samples=4,
                burn_in=1.0, interval=0.5, method=thermox.EulerMaruyama(dt=0.1)) | case
    with pytest.raises(ValueError, match=match):
        thermox.langevin(args["device"], args["grad"], args["x0"], key=args["key"], num_samples=args["num_samples"],
                         burn_in=args["burn_in"], interval=args["interval"], method=args["method"])


@pytest.mark.parametrize("dt", [0.0, -0.1, float("inf")])
def test_a_non_positive_diffrax_step_is_refused(dt):
    with pytest.raises(ValueError, match="dt"):
        thermox.Diffrax(diffrax.Euler(), dt=dt)


def test_jit_compiles_once(x64):
    """New data, start, key and device temperature (a traced kappa0) in a second call: one trace (counted by a
    Python side effect, which runs only while tracing)."""
    traces = []

    def sample(A, m, x0, key, device):
        traces.append(1)
        return thermox.langevin(device, lambda x: A @ (x - m), x0, key=key, num_samples=8, burn_in=1.0,
                                interval=0.5, method=thermox.EulerMaruyama(dt=0.1))

    f = jax.jit(sample)
    A, m, _ = quadratic_case()
    first = f(jnp.asarray(A), jnp.asarray(m), jnp.zeros(3), jax.random.key(0), thermox.AnalogDevice(kappa0=0.5))
    second = f(jnp.asarray(2 * A), jnp.asarray(-m), jnp.ones(3), jax.random.key(1), thermox.AnalogDevice(kappa0=0.1))
    assert first.shape == second.shape == (8, 3) and np.all(np.isfinite(np.asarray(second)))
    assert len(traces) == 1


def test_cost_per_sample():
    """By hand, default platform (16-bit values, 50 Gb/s, tau = 1 us): n = 4, 10 couplings, 100 samples, burn-in 2
    tau, interval 0.5: the run is 52 tau; transfers are 10 + 4 + 400 values of 16 bits."""
    cost = thermox.cost.langevin_cost(4, num_couplings=10, num_samples=100, burn_in=2.0, interval=0.5)
    link_s = 16 / 50e9
    np.testing.assert_allclose(float(cost.time_s), (52e-6 + 414 * link_s) / 100, rtol=1e-12)
    per_value_j = 16 * 1e-12 + 2.0**16 * 10e-15
    resistor_j = 14 * 52e-6 * 0.1**2 / 1e3
    np.testing.assert_allclose(float(cost.energy_j), (414 * per_value_j + resistor_j) / 100, rtol=1e-12)
