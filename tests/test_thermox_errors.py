"""Bad input fails loudly with a message naming the problem.

Shape, type and configuration errors are static: ``ValueError`` at call time. Value errors that need the
data (finiteness, symmetry, positive definiteness, traced run times) are ``equinox.error_if`` run-time
checks: they raise an exception whose message contains the text, so those use ``pytest.raises(Exception)``.
"""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import thermox
from thermox_reference import random_spd

N = 4
KEY = jax.random.key(0)


@pytest.fixture
def spd(x64):
    return random_spd(N, [0.5, 1.0, 1.5, 2.0], seed=0)


_jsolve = eqx.filter_jit(thermox.linalg.solve)  # compiled: the run-time checks fire the same way


def solve(A, b, **kwargs):
    kwargs.setdefault("t", 1.0)
    return jax.block_until_ready(_jsolve(A, b, key=KEY, **kwargs))


# --- the drift matrix -------------------------------------------------------------------------------


def test_non_square_matrix(spd):
    with pytest.raises(ValueError, match="must be square"):
        solve(np.ones((N, N + 1)), np.ones(N))
    with pytest.raises(ValueError, match="must be square"):
        solve(np.ones(N), np.ones(N))


def test_non_symmetric_matrix(spd):
    A = spd.copy()
    A[0, 1] += 0.1
    for method in ("exact", "krylov"):
        with pytest.raises(Exception, match="must be symmetric"):
            solve(A, np.ones(N), method=method)


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_matrix(spd, bad):
    A = spd.copy()
    A[1, 1] = bad
    with pytest.raises(Exception, match="non-finite entries"):
        solve(A, np.ones(N))


@pytest.mark.parametrize("method", ["exact", "krylov"])
def test_not_positive_definite(spd, method):
    w, V = np.linalg.eigh(spd)
    indefinite = (V * np.array([-0.5, 1.0, 1.5, 2.0])) @ V.T
    with pytest.raises(Exception, match="not positive definite"):
        solve((indefinite + indefinite.T) / 2, np.ones(N), method=method)


def test_krylov_not_converged(x64):
    A = random_spd(30, np.geomspace(1e-3, 1.0, 30), seed=1)
    with pytest.raises(Exception, match="increase krylov_dim"):
        solve(A, np.ones(30), t=1e4, method=thermox.Krylov(dim=3))


# --- right-hand side, start state, times ----------------------------------------------------------------


@pytest.mark.parametrize("bad", [np.nan, -np.inf])
def test_non_finite_rhs_and_start(spd, bad):
    b = np.ones(N)
    b[2] = bad
    with pytest.raises(Exception, match="b has non-finite values"):
        solve(spd, b)
    with pytest.raises(Exception, match="x0 has non-finite values"):
        solve(spd, np.ones(N), x0=b)


@pytest.mark.parametrize("shape", [(N + 1,), (N - 1, 2), (N, 2, 1), ()])
def test_rhs_of_wrong_shape(spd, shape):
    with pytest.raises(ValueError, match=r"b must have shape|b has shape|must be square"):
        solve(spd, np.ones(shape))


def test_rhs_of_wrong_shape_message(spd):
    with pytest.raises(ValueError, match=r"b must have shape \(4,\) or \(4, k\)"):
        solve(spd, np.ones(N + 1))
    with pytest.raises(ValueError, match="x0 has shape"):
        solve(spd, np.ones((N, 2)), x0=np.ones(N))


@pytest.mark.parametrize("t", [-1.0, np.nan, np.inf])
def test_bad_run_time(spd, t):
    with pytest.raises(ValueError, match="run time t must be finite and >= 0"):
        solve(spd, np.ones(N), t=t)


def test_negative_run_time_under_jit(spd):
    f = jax.jit(lambda t: thermox.linalg.solve(spd, jnp.ones(N), key=KEY, t=t))
    with pytest.raises(Exception, match="run time t must be finite and >= 0"):
        jax.block_until_ready(f(jnp.asarray(-1.0)))


def test_bad_window_under_jit(spd):
    """Traced window and run time: the same conditions, checked at run time."""
    f = jax.jit(lambda t, window: thermox.linalg.solve(spd, jnp.ones(N), key=KEY, t=t, window=window))
    with pytest.raises(Exception, match="window must be finite and > 0"):
        jax.block_until_ready(f(jnp.asarray(1.0), jnp.asarray(0.0)))
    with pytest.raises(Exception, match="window is longer than the run time"):
        jax.block_until_ready(f(jnp.asarray(1.0), jnp.asarray(2.0)))
    assert f(jnp.asarray(2.0), jnp.asarray(2.0)).shape == (N,)
    # A Python-float window with a traced run time.
    g = jax.jit(lambda t: thermox.linalg.solve(spd, jnp.ones(N), key=KEY, t=t, window=0.5))
    assert g(jnp.asarray(1.0)).shape == (N,)
    with pytest.raises(Exception, match="window is longer than the run time"):
        jax.block_until_ready(g(jnp.asarray(0.25)))


def test_bad_window(spd):
    with pytest.raises(ValueError, match="window=2.0 is longer than the run time t=1.0"):
        solve(spd, np.ones(N), t=1.0, window=2.0)
    for window in (0.0, -0.5):
        with pytest.raises(ValueError, match="window must be finite and > 0"):
            solve(spd, np.ones(N), t=1.0, window=window)


def test_bad_kappa0_in_evolve(spd):
    with pytest.raises(ValueError, match="kappa0 must be finite and >= 0"):
        thermox.evolve(spd, np.ones(N), key=KEY, t=1.0, kappa0=-1.0)


def test_bad_method(spd):
    with pytest.raises(ValueError, match="unknown method 'cg'"):
        solve(spd, np.ones(N), method="cg")
    with pytest.raises(ValueError, match="matrix-free operator uses method='krylov'"):
        solve(lambda v: jnp.asarray(spd) @ v, np.ones(N), method="exact")


def test_diffrax_needs_concrete_time(spd):
    f = jax.jit(lambda t: thermox.evolve(spd, jnp.ones(N), key=KEY, t=t, method="diffrax"))
    with pytest.raises(ValueError, match="needs a concrete run time"):
        f(jnp.asarray(1.0))


def test_sample_path_bad_times(spd):
    with pytest.raises(ValueError, match="ts must be a non-empty 1-D array"):
        thermox.sample_path(spd, np.ones(N), np.zeros(N), key=KEY, ts=np.ones((2, 2)))
    with pytest.raises(ValueError, match="sample_path takes a vector state"):
        thermox.sample_path(spd, np.ones((N, 2)), np.zeros((N, 2)), key=KEY, ts=np.arange(3.0))


# --- the device -----------------------------------------------------------------------------------


@pytest.mark.parametrize("name, value, match", [
    ("kappa0", -0.1, "AnalogDevice.kappa0 must be finite and >= 0"),
    ("kappa0", np.inf, "AnalogDevice.kappa0 must be finite and >= 0"),
    ("mismatch", -0.01, "AnalogDevice.mismatch must be finite and >= 0"),
    ("dac_bits", 0, "AnalogDevice.dac_bits must be an integer >= 1"),
    ("adc_bits", -3, "AnalogDevice.adc_bits must be an integer >= 1"),
    ("coupling_bits", 0, "AnalogDevice.coupling_bits must be an integer >= 1"),
    ("coupling_bits", 2.5, "AnalogDevice.coupling_bits must be an integer >= 1"),
    ("dac_range", 0.0, "AnalogDevice.dac_range must be > 0"),
    ("saturation", -1.0, "AnalogDevice.saturation must be > 0"),
    ("capacity", 0, "AnalogDevice.capacity must be an integer >= 1"),
])
def test_bad_device(name, value, match):
    with pytest.raises(ValueError, match=match):
        thermox.AnalogDevice(**{name: value})


def test_mismatch_needs_chip_key():
    with pytest.raises(ValueError, match="mismatch > 0 needs key="):
        thermox.AnalogDevice(mismatch=0.01)


def test_quantize_bits(x64):
    with pytest.raises(ValueError, match="bits must be >= 1"):
        thermox.quantize(jnp.ones(3), 0, 1.0)


def test_coupling_errors_need_programmable_matrix(spd):
    device = thermox.AnalogDevice(coupling_bits=8)
    with pytest.raises(ValueError, match="coupling_bits / mismatch"):
        solve(lambda v: jnp.asarray(spd) @ v, np.ones(N), device=device)
    with pytest.raises(ValueError, match="not a precomputed EigenDrift"):
        solve(thermox.EigenDrift.from_matrix(spd), np.ones(N), device=device)


def test_capacity_exceeded(spd):
    with pytest.raises(ValueError, match="n=4 exceeds the device capacity of 3 cells"):
        solve(spd, np.ones(N), device=thermox.AnalogDevice(capacity=3))


def test_inv_errors(spd):
    with pytest.raises(ValueError, match="needs device.kappa0 > 0"):
        thermox.linalg.inv(spd, key=KEY, t=1.0, device=thermox.AnalogDevice())
    with pytest.raises(ValueError, match="interval must be finite and > 0"):
        thermox.linalg.inv(spd, key=KEY, t=1.0, device=thermox.AnalogDevice(kappa0=1.0), interval=0.0)
    with pytest.raises(ValueError, match="callable drift needs the dimension"):
        thermox.linalg.inv(lambda v: v, key=KEY, t=1.0, device=thermox.AnalogDevice(kappa0=1.0))


def test_sample_path_rejects_decreasing_times():
    A = jnp.eye(3) * 2.0
    with pytest.raises(Exception, match="non-decreasing"):
        thermox.sample_path(A, jnp.ones(3), jnp.zeros(3), key=jax.random.key(0), ts=jnp.array([0.0, 1.0, 0.5]))


def test_low_rank_drift_needs_a_positive_shift():
    with pytest.raises(ValueError, match="shift > 0"):
        thermox.LowRankDrift.from_factor(0.0, jnp.ones((4, 2)))
