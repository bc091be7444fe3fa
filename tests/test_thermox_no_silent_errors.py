"""Issue #13, the device's cases: each was a silent wrong answer (or a message naming the wrong thing) before.

3. Krylov in float32: an indefinite drift is an error at any t, never NaN or 1005; an ill-conditioned one warns;
   a Lanczos breakdown counts as converged only when the recurrence residual confirms it.
4. Diffrax: an indefinite drift, a step dt <= 0, an unstable Euler step, and infinite converter ranges are errors.
5. Thermodynamic K-FAC honours the device's voltage rails.
11. dt = 0, krylov dim 0, a noisy run without key, TNGD's negative delay, thermo_kfac at t = 0: errors that name them.
12. float32 results the conditioning makes untrustworthy warn (``thermox.ConditioningWarning``).
"""

import warnings

import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest

import kfac_reference as ref
import kfac_thermo as kt
import thermox
from thermox._krylov import _check, _Lanczos
from thermox_reference import random_spd

F32 = jnp.float32
INDEFINITE = jnp.diag(jnp.asarray([1.0, 1.0, 1.0, -1e-5], F32))
LOSS = "softmax_cross_entropy"


def run(fn):
    out = jax.block_until_ready(fn())
    jax.effects_barrier()  # host callbacks (warnings) have run
    return out


def ill_conditioned(n=30, cond=1e6, dtype=F32):
    return jnp.asarray(random_spd(n, np.geomspace(1.0 / cond, 1.0, n), seed=7), dtype)


# --- 3. Krylov in float32 ------------------------------------------------------------------------------------


@pytest.mark.parametrize("t", [1e3, 1e7])
def test_krylov_indefinite_drift_is_an_error(t):
    """diag(1, 1, 1, -1e-5) in float32: the negative Ritz value -1e-5 was within the old tolerance -rtol |T|
    (1.2e-4), so t = 1e3 read 1005 along it and t = 1e7 overflowed to NaN."""
    with pytest.raises(Exception, match="not positive definite"):
        run(lambda: thermox.linalg.solve(INDEFINITE, jnp.ones(4, F32), key=None, t=t, method="krylov"))


@pytest.mark.parametrize("method", ["krylov", "exact"])
def test_float32_ill_conditioned_solve_warns(method):
    """Condition 1e6 in float32 (kappa eps = 0.06): both exact and Krylov answers are off by several percent, which
    no float32 solver can avoid; it is now said. A well-conditioned float32 solve (condition 10) stays silent."""
    b = jnp.asarray(np.random.default_rng(0).normal(size=30), F32)
    with pytest.warns(thermox.ConditioningWarning, match="not trustworthy"):
        run(lambda: thermox.linalg.solve(ill_conditioned(), b, key=None, t=1e8, method=method))
    with warnings.catch_warnings():
        warnings.simplefilter("error", thermox.ConditioningWarning)
        run(lambda: thermox.linalg.solve(ill_conditioned(cond=10.0), b, key=None, t=1e3, method=method))


def test_breakdown_is_converged_only_with_a_small_recurrence_residual(x64):
    """A breakdown (beta = 0, as at the full dimension always) was taken as an invariant Krylov space, exact; now
    only when the components the recurrence failed to remove (``offband``) are below rtol |T|. Hand-built 3-step
    state of T = diag(1, 2, 3) with two approximations far apart (the change test fails)."""
    dim, rtol = 3, 1e-10
    state = lambda offband: _Lanczos(jnp.eye(dim + 1, dim), jnp.asarray([1.0, 2.0, 3.0]),
                                     jnp.asarray([0.5, 0.5, 0.0]), jnp.full((dim,), offband))
    fn = lambda w: 1.0 / w
    _, converged, _, _ = _check(state(1e-16), size=dim, fn=fn, rtol=rtol, dim=dim)
    assert bool(converged)
    _, converged, _, _ = _check(state(1e-3), size=dim, fn=fn, rtol=rtol, dim=dim)
    assert not bool(converged)


# --- 4. Diffrax ----------------------------------------------------------------------------------------------


def test_diffrax_indefinite_drift_is_an_error():
    """The Euler path integrated the growing mode silently (10.0005 at t = 10, NaN for longer runs)."""
    with pytest.raises(Exception, match="not positive definite"):
        run(lambda: thermox.linalg.solve(INDEFINITE, jnp.ones(4, F32), key=None, t=10.0, method="diffrax"))


def test_diffrax_diverging_matrix_free_run_is_an_error():
    """A matrix-free drift has no certificate; its diverging run is caught by the finiteness of the result."""
    with pytest.raises(Exception, match="simulated voltages are not finite"):
        run(lambda: thermox.linalg.solve(lambda v: -v, jnp.ones(4, F32), key=None, t=200.0,
                                         method=thermox.EulerMaruyama(0.1)))


@pytest.mark.parametrize("dt", [-0.1, 0.0])
def test_diffrax_step_must_be_positive(dt):
    """dt < 0 took one step of length t; dt = 0 failed deep inside (division by zero)."""
    with pytest.raises(ValueError, match=f"dt must be finite and > 0, got {dt}"):
        thermox.Diffrax(dt=dt)


def test_unstable_euler_step_is_an_error(x64):
    """dt lambda_max = 3 > 2: Euler-Maruyama grows by |1 - 3| = 2 per step, a finite but wrong answer for a short
    run; certified at programming by a Cholesky factorisation of (2 / dt) I - A."""
    with pytest.raises(Exception, match="Euler-Maruyama is unstable at dt=0.1"):
        run(lambda: thermox.linalg.solve(30.0 * jnp.eye(3), jnp.ones(3), key=None, t=1.0,
                                         method=thermox.EulerMaruyama(0.1)))
    # Just stable (dt lambda_max = 1.9) is accepted, and the low-rank drift is certified by its Gram.
    run(lambda: thermox.linalg.solve(19.0 * jnp.eye(3), jnp.ones(3), key=None, t=1.0,
                                     method=thermox.EulerMaruyama(0.1)))
    low_rank = thermox.LowRankDrift.from_factor(1.0, 5.0 * jnp.ones((3, 1)))  # lambda_max = 1 + 75
    with pytest.raises(Exception, match="Euler-Maruyama is unstable"):
        run(lambda: thermox.linalg.solve(low_rank, jnp.ones(3), key=None, t=1.0, method=thermox.EulerMaruyama(0.1)))
    # Also under jit, where a check on a value the integration never reads would be dropped (TNGD's MNIST runs at
    # dt = 0.1 once lambda_max(G) passed 20 went on silently to huge, then infinite, losses).
    W = 5.0 * jnp.ones((3, 1))
    solve = jax.jit(lambda W: thermox.linalg.solve(thermox.LowRankDrift(jnp.asarray(1.0), W.T @ W, lambda c: W @ c,
                                                                         lambda v: W.T @ v, 3),
                                                   jnp.ones(3), key=None, t=1.0, method=thermox.EulerMaruyama(0.1)))
    with pytest.raises(Exception, match="Euler-Maruyama is unstable"):
        run(lambda: solve(W))


@pytest.mark.parametrize("name", ["adc_range", "dac_range"])
def test_infinite_converter_range_is_an_error(name):
    """adc_range = inf read all-NaN (step inf); dac_range = inf was reported as "b has non-finite values"."""
    with pytest.raises(ValueError, match=f"AnalogDevice.{name} must be > 0 and finite, or None, got inf"):
        thermox.AnalogDevice(**{name: np.inf}, adc_bits=8, dac_bits=8)


# --- 5. thermodynamic K-FAC with voltage rails ---------------------------------------------------------------


def test_thermo_kfac_honours_saturation(x64):
    """Rails of 1e-3 and 1e-9 gave bit-identical updates (the closed-form law ignored them). Now each block solve
    is the diffrax run with the rails: the solver's readout equals thermox's saturating solve of the programmed
    drift with the same key and stays inside the rail; with every node on its rail the update scales with the
    rail (1e-6 between the two, asserted below 1e-5)."""
    params, x, y = ref.problem(LOSS)
    g = ref.grad(LOSS, ref.mlp_predict, params, x, y)
    updates = {}
    for rail in (1e-3, 1e-9):
        device = thermox.AnalogDevice(kappa0=1e-4, saturation=rail)
        tx = kt.thermo_kfac(1.0, predict_fn=ref.mlp_predict, loss=LOSS, damping=1e-2, example_inputs=x, t=5.0,
                            device=device, key=jr.key(0))
        updates[rail] = ref.flat(ref.update(tx, g, tx.init(params), params, (x, y))[0])
        assert np.all(np.isfinite(updates[rail]))
    assert np.max(np.abs(updates[1e-9])) < 1e-5 * np.max(np.abs(updates[1e-3]))
    # One block: the K-FAC readout is the programmed device's saturating solve.
    device = thermox.AnalogDevice(kappa0=1e-4, saturation=0.05)
    solver = kt.ThermoKronecker(device=device, t=5.0)
    M = jnp.asarray(random_spd(5, np.linspace(0.3, 1.0, 5), seed=1))
    b = jnp.asarray(np.random.default_rng(2).normal(size=(5, 3)))
    ours = solver._readout(solver._law(M), b, jr.key(4))
    expected = thermox.program(device, M, method=thermox.Diffrax()).solve(b, key=jr.key(4), t=5.0)
    np.testing.assert_array_equal(ours, expected)
    assert np.max(np.abs(np.asarray(ours))) <= 0.05


# --- 11. errors that name the problem ------------------------------------------------------------------------


def test_krylov_dimension_zero():
    with pytest.raises(ValueError, match=r"thermox.Krylov: dim \(Lanczos steps\) must be an integer >= 1, got 0"):
        thermox.Krylov(dim=0)


def test_noisy_run_without_key():
    device = thermox.AnalogDevice(kappa0=0.1)
    with pytest.raises(ValueError, match="noisy run .* needs key="):
        thermox.linalg.solve(jnp.eye(3), jnp.ones(3), key=None, t=1.0, device=device)
    with pytest.raises(ValueError, match="noisy run .* needs key="):
        thermox.evolve(jnp.eye(3), jnp.ones(3), key=None, t=1.0, kappa0=0.1)
    # A noiseless device needs no key.
    np.testing.assert_allclose(thermox.linalg.solve(jnp.eye(3), jnp.ones(3), key=None, t=50.0), 1.0, rtol=1e-6)


def test_tngd_negative_delay_is_named(x64):
    """delay = -1 was reported as "run time t must be finite and >= 0"."""
    params, x, y = ref.problem(LOSS)
    tx = kt.tngd(0.1, predict_fn=ref.mlp_predict, loss=LOSS, delay=-1.0)
    g = ref.grad(LOSS, ref.mlp_predict, params, x, y)
    with pytest.raises(ValueError, match="delay must be finite and >= 0, got -1.0"):
        ref.update(tx, g, tx.init(params), params, (x, y))


def test_thermo_kfac_zero_run_time_is_an_error(x64):
    """t = 0 gave all-zero updates without a word (a run of no time from zero reads zero)."""
    params, x, y = ref.problem(LOSS)
    tx = kt.thermo_kfac(0.1, predict_fn=ref.mlp_predict, loss=LOSS, damping=1e-2, example_inputs=x, t=0.0)
    g = ref.grad(LOSS, ref.mlp_predict, params, x, y)
    with pytest.raises(ValueError, match="run time t must be finite and > 0, got 0.0"):
        ref.update(tx, g, tx.init(params), params, (x, y))


# --- 12. float32 conditioning --------------------------------------------------------------------------------


def test_tngd_float32_tiny_damping_warns():
    """Damping 1e-8 and t = 1e10 in float32: the direction was 6.5x off without a word. The conditioning estimate
    1 + ||W^T W||_inf / damping (~1e8) times eps (1.2e-7) is far above 1%; at damping 1e-2 it is silent."""
    params, x, y = ref.problem(LOSS)
    params = jax.tree_util.tree_map(lambda p: p.astype(F32), params)
    x = x.astype(F32)
    g = ref.grad(LOSS, ref.mlp_predict, params, x, y)
    step = lambda damping, t: kt.tngd(0.1, predict_fn=ref.mlp_predict, loss=LOSS, damping=damping, t=t)
    with pytest.warns(thermox.ConditioningWarning):
        tx = step(1e-8, 1e10)
        run(lambda: ref.update(tx, g, tx.init(params), params, (x, y))[0])
    with warnings.catch_warnings():
        warnings.simplefilter("error", thermox.ConditioningWarning)
        tx = step(1e-2, 50.0)
        run(lambda: ref.update(tx, g, tx.init(params), params, (x, y))[0])


def test_thermo_kfac_float32_law_warns():
    """The fixed-time law of a float32 factor of condition 1e6 (relaxed: the SPD inverse, estimate
    ||P||_inf ||P^-1||_inf) warns; condition 10 does not."""
    with pytest.warns(thermox.ConditioningWarning):
        run(lambda: thermox.FixedTimeLaw.program(thermox.AnalogDevice(), ill_conditioned(), 1e8).state.mean)
    with warnings.catch_warnings():
        warnings.simplefilter("error", thermox.ConditioningWarning)
        run(lambda: thermox.FixedTimeLaw.program(thermox.AnalogDevice(), ill_conditioned(cond=10.0), 1e3).state.mean)
