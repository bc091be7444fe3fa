"""Everything compiles under jax.jit, and new values of the same shapes do not recompile.

Traces are counted with a Python side effect inside the jitted function (it runs once per trace, never
at execution). The device is a jit argument too: its float fields (tau, kappa0, mismatch) and its key are
array leaves, its integer / range / capacity / saturation settings are static.
"""

import jax
import jax.numpy as jnp
import numpy as np

import thermox
from thermox_reference import ou_cov, ou_mean, random_spd

N = 6


def spd(seed, lo=0.5, hi=2.0):
    return jnp.asarray(random_spd(N, np.geomspace(lo, hi, N), seed))


def counted_jit(fn):
    calls = []

    def wrapped(*args):
        calls.append(1)
        return fn(*args)

    return jax.jit(wrapped), calls


def test_solve_no_recompile(x64):
    """Two calls with new matrix, right-hand side, key, run time and device values: one trace. The first
    (noiseless) readout is the closed-form mean; the second (kappa0 = 0.1) is one Gaussian draw around it,
    each coordinate within 5 standard deviations sqrt(Cov_ii) of the mean."""
    for method in ("exact", "krylov"):
        f, traces = counted_jit(
            lambda A, b, key, t, device: thermox.linalg.solve(A, b, key=key, t=t, device=device, method=method)
        )
        A0, b0 = spd(0), jnp.ones(N)
        x = f(A0, b0, jax.random.key(0), jnp.asarray(3.0), thermox.AnalogDevice(kappa0=0.0))
        np.testing.assert_allclose(x, ou_mean(np.asarray(A0), np.asarray(b0), np.zeros(N), 3.0), rtol=1e-9)
        A1, b1 = spd(1), jnp.arange(N, dtype=float)
        x = f(A1, b1, jax.random.key(1), jnp.asarray(40.0), thermox.AnalogDevice(kappa0=0.1, mismatch=0.0))
        mean = ou_mean(np.asarray(A1), np.asarray(b1), np.zeros(N), 40.0)
        sd = np.sqrt(np.diag(ou_cov(np.asarray(A1), 0.1, 40.0)))
        assert np.all(np.abs(np.asarray(x) - mean) <= 5 * sd)
        assert len(traces) == 1, method


def test_solve_with_converters_and_mismatch_no_recompile(x64):
    f, traces = counted_jit(lambda A, b, key, device: thermox.linalg.solve(A, b, key=key, t=30.0, device=device))
    for seed, m in ((0, 0.01), (1, 0.03)):
        device = thermox.AnalogDevice(kappa0=0.01, mismatch=m, key=jax.random.key(100 + seed), dac_bits=10,
                                      adc_bits=10, coupling_bits=10)
        x = f(spd(seed), jnp.ones(N), jax.random.key(seed), device)
        assert x.shape == (N,) and bool(jnp.all(jnp.isfinite(x)))
    assert len(traces) == 1


def test_matrix_free_solve_no_recompile(x64):
    """A matvec built inside the jitted function from a traced matrix, and the device as an argument."""
    f, traces = counted_jit(
        lambda A, b, key, t, device: thermox.linalg.solve(lambda v: A @ v, b, key=key, t=t, device=device)
    )
    for seed in (0, 1):
        A, b = spd(seed), jnp.linspace(-1.0, 1.0, N)
        x = f(A, b, jax.random.key(seed), jnp.asarray(1e4), thermox.AnalogDevice())
        np.testing.assert_allclose(x, np.linalg.solve(np.asarray(A), np.asarray(b)), rtol=1e-6)
    assert len(traces) == 1


def test_evolve_window_and_matrix_rhs_no_recompile(x64):
    f, traces = counted_jit(
        lambda A, B, key, t, kappa0: thermox.evolve(A, B, key=key, t=t, kappa0=kappa0, window=0.5)
    )
    for seed in (0, 1):
        out = f(spd(seed), jnp.ones((N, 3)) * (seed + 1), jax.random.key(seed), jnp.asarray(2.0 + seed),
                jnp.asarray(0.1 * seed))
        assert out.shape == (N, 3)
    assert len(traces) == 1


def test_diffrax_path_no_recompile(x64):
    """The diffrax step count is static (from the concrete t), everything else is traced."""
    f, traces = counted_jit(
        lambda A, b, key, device: thermox.linalg.solve(A, b, key=key, t=1.0, device=device,
                                                       method=thermox.EulerMaruyama(dt=0.1))
    )
    for seed in (0, 1):
        x = f(spd(seed), jnp.ones(N), jax.random.key(seed), thermox.AnalogDevice(kappa0=0.1 * seed, saturation=5.0))
        assert x.shape == (N,)
    assert len(traces) == 1


def test_sample_path_and_inv_no_recompile(x64):
    f, traces = counted_jit(
        lambda A, b, key, ts, kappa0: thermox.sample_path(A, b, jnp.zeros(N), key=key, ts=ts, kappa0=kappa0)
    )
    for seed in (0, 1):
        out = f(spd(seed), jnp.ones(N), jax.random.key(seed), jnp.linspace(0.0, 1.0 + seed, 5), jnp.asarray(0.5))
        assert out.shape == (5, N)
    assert len(traces) == 1
    g, traces = counted_jit(
        lambda A, key, t, device: thermox.linalg.inv(A, key=key, t=t, device=device, num_samples=50)
    )
    for seed in (0, 1):
        out = g(spd(seed), jax.random.key(seed), jnp.asarray(5.0), thermox.AnalogDevice(kappa0=0.2 + seed))
        assert out.shape == (N, N)
    assert len(traces) == 1


def test_device_constructed_inside_jit(x64):
    """A device built from concrete Python numbers inside a traced function (its checks run on the Python
    values, not on tracers)."""
    f = jax.jit(lambda A, b, key: thermox.linalg.solve(A, b, key=key, t=1e4, device=thermox.AnalogDevice(kappa0=0.0, mismatch=0.0)))
    A, b = spd(0), jnp.ones(N)
    np.testing.assert_allclose(f(A, b, jax.random.key(0)), np.linalg.solve(np.asarray(A), np.asarray(b)), rtol=1e-6)


def test_concrete_run_time_inside_jit(x64):
    """A Python-float run time closed over by a jitted function (checked in Python, never traced)."""
    A, b = spd(0), jnp.ones(N)
    for method in ("exact", "krylov"):
        f = jax.jit(lambda A, b: thermox.evolve(A, b, key=jax.random.key(0), t=2.0, method=method))
        np.testing.assert_allclose(f(A, b), ou_mean(np.asarray(A), np.asarray(b), np.zeros(N), 2.0), rtol=1e-9)
