"""The device protocol: ``thermox.program`` once, then ``run`` / ``readout`` / ``solve`` many times; method objects;
the fixed-time law; readout averaging.

References: the same device through ``thermox.linalg.solve`` (bitwise: one protocol), dense float64 ``expm`` laws,
and for readout averaging the closed-form variance of the mean of correlated samples of a stationary OU process.
"""

import diffrax
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest
import scipy.linalg

import thermox
from thermox_reference import random_spd

N = 6


@pytest.fixture
def problem(x64):
    A = random_spd(N, np.geomspace(0.3, 2.0, N), seed=31)
    rng = np.random.default_rng(32)
    return jnp.asarray(A), jnp.asarray(rng.normal(size=(N, 2))), jnp.asarray(rng.normal(size=(N, 2)))


CHIP = dict(kappa0=0.01, dac_bits=8, adc_bits=8, coupling_bits=8, mismatch=0.01, key=jr.key(3))


@pytest.mark.parametrize("method", ["exact", "krylov", thermox.Krylov(rtol=1e-12), thermox.EulerMaruyama(0.05)])
def test_programmed_solve_is_linalg_solve(problem, method):
    """``thermox.linalg.solve`` is ``program(...).solve``: the same numbers, bit for bit, for every method (and with
    the rails, the diffrax path)."""
    A, b, x0 = problem
    saturation = 0.4 if isinstance(method, thermox.Diffrax) else None
    device = thermox.AnalogDevice(saturation=saturation, **CHIP)
    programmed = thermox.program(device, A, method=method)
    for key in (jr.key(0), jr.key(1)):
        ours = programmed.solve(b, x0, key=key, t=3.0)
        np.testing.assert_array_equal(ours, thermox.linalg.solve(A, b, key=key, t=3.0, device=device, x0=x0,
                                                                 method=method))
    # One readout is the ADC of the run's voltages, which the readout hands back.
    voltages = programmed.run(b, programmed.load(x0), key=jr.key(0), t=3.0)
    readout = programmed.readout(b, programmed.load(x0), key=jr.key(0), t=3.0)
    np.testing.assert_array_equal(readout.voltages, voltages)
    np.testing.assert_array_equal(readout.value, programmed.read(voltages))


def test_program_prepares_once(problem):
    """Programming does the eigendecomposition; three solves with it add none (counted in the traced program)."""
    A, b, _ = problem

    def three_solves(A, b):
        programmed = thermox.program(thermox.AnalogDevice(kappa0=0.1), A)
        return [programmed.solve(b * s, key=jr.key(s), t=2.0) for s in range(3)]

    assert str(jax.make_jaxpr(three_solves)(A, b)).count("eigh[") == 1


def test_programmed_runs_do_not_recompile(problem):
    """The programmed device as a jit argument: new couplings, right-hand sides and keys reuse one compilation."""
    A, b, _ = problem
    traces = []

    @jax.jit
    def solve(programmed, b, key):
        traces.append(1)
        return programmed.solve(b, key=key, t=2.0)

    device = thermox.AnalogDevice(kappa0=0.1)
    for s in (1.0, 2.0):
        assert solve(thermox.program(device, s * A), s * b, jr.key(int(s))).shape == b.shape
    assert len(traces) == 1


@pytest.mark.parametrize("t", [2.0, 1e3])
def test_fixed_time_law_is_the_programmed_law(problem, t):
    """The law at a fixed time, from a programmed device and from ``FixedTimeLaw.program``: the expm law of the
    programmed couplings (an unrelaxed run: the eigh path; a relaxed one: the SPD inverse), ``mean`` within
    ``10 n kappa eps`` (backward-stable inversion) and the noise covariance ``noise noise^T`` likewise."""
    A, b, _ = problem
    device = thermox.AnalogDevice(**CHIP)
    programmed = thermox.program(device, A)
    P = np.asarray(programmed.couplings.matrix)
    eye = np.eye(N)
    mean = np.linalg.solve(P, eye - scipy.linalg.expm(-P * t))
    covariance = 0.01 * np.linalg.solve(P, eye - scipy.linalg.expm(-2 * P * t))
    bound = 10 * N * np.linalg.cond(P) * np.finfo(np.float64).eps
    for law in (programmed.law(t), thermox.FixedTimeLaw.program(device, A, t)):
        assert isinstance(law.state, thermox.OULawOperators)
        assert np.linalg.norm(law.state.mean - mean, 2) <= bound * np.linalg.norm(mean, 2)
        noise = np.asarray(law.state.noise)
        assert np.linalg.norm(noise @ noise.T - covariance, 2) <= bound * np.linalg.norm(covariance, 2)
    # Its readout is the DAC, the operators, the ADC: with the same key, the noise z of the dense run.
    law = thermox.FixedTimeLaw.program(device, A, t)
    z = jr.normal(jr.key(5), b.shape, b.dtype)
    expected = device.adc(law.state.mean @ device.dac(b) + law.state.noise @ z)
    np.testing.assert_array_equal(law.solve(b, jr.key(5)), expected)


def test_fixed_time_law_program_needs_no_eigendecomposition(problem):
    """``FixedTimeLaw.program`` forms the law without the general programming's eigh: the only eigh it traces is
    the transient branch of the law (an unrelaxed run)."""
    A, _, _ = problem
    law = lambda A: thermox.FixedTimeLaw.program(thermox.AnalogDevice(), A, 1e3).state
    assert str(jax.make_jaxpr(law)(A)).count("eigh[") == 1


def test_fixed_time_law_without_a_closed_form_is_a_programmed_readout(problem):
    """With rails or averaged readouts the law keeps the prepared drift and each run is ``Programmed.readout``:
    the same numbers as the programmed device (and a non-finite right-hand side reads NaN, without an error)."""
    A, b, _ = problem
    for device, method in ((thermox.AnalogDevice(kappa0=0.01, saturation=0.3), thermox.Diffrax()),
                           (thermox.AnalogDevice(kappa0=0.01, num_readouts=3, readout_interval=0.5), "exact")):
        law = thermox.FixedTimeLaw.program(device, A, 2.0)
        assert jax.tree_util.tree_structure(law.state) == jax.tree_util.tree_structure(
            thermox.FixedTimeLaw.initial_state(device, N, A.dtype))
        expected = thermox.program(device, A, method=method).solve(b, key=jr.key(2), t=2.0)
        np.testing.assert_array_equal(law.solve(b, jr.key(2)), expected)
        assert np.all(np.isnan(law.solve(b.at[0, 0].set(jnp.nan), jr.key(2))))


def test_method_objects_and_names():
    """Names are sugar for the default objects; ``Auto`` picks from the drift and the rails."""
    assert thermox.as_method("exact") == thermox.Exact()
    assert thermox.as_method("krylov") == thermox.Krylov(dim=64, rtol=None)
    assert thermox.as_method("diffrax") == thermox.Diffrax(diffrax.Euler(), dt=0.1)
    euler = thermox.EulerMaruyama(0.05)
    assert isinstance(euler, thermox.Diffrax) and euler.solver == diffrax.Euler() and euler.dt == 0.05
    method = thermox.Krylov(dim=8)
    assert thermox.as_method(method) is method
    dense = thermox.program(thermox.AnalogDevice(), jnp.eye(3))
    assert isinstance(dense.method, thermox.Exact) and isinstance(dense.prepared, thermox.EigenDrift)
    low_rank = thermox.program(thermox.AnalogDevice(), thermox.LowRankDrift.from_factor(1.0, jnp.ones((3, 1))))
    assert isinstance(low_rank.method, thermox.Krylov)
    railed = thermox.program(thermox.AnalogDevice(saturation=1.0), jnp.eye(3))
    assert isinstance(railed.method, thermox.Diffrax)
    with pytest.raises(ValueError, match="unknown method 'cg'"):
        thermox.as_method("cg")


@pytest.mark.parametrize("make, match", [
    (lambda: thermox.Krylov(dim=0), "dim .* must be an integer >= 1"),
    (lambda: thermox.Krylov(dim=2.5), "dim .* must be an integer >= 1"),
    (lambda: thermox.Krylov(rtol=2.0), "rtol must be a number in"),
    (lambda: thermox.Diffrax(dt=0.0), "dt must be finite and > 0, got 0.0"),
    (lambda: thermox.Diffrax(dt=-0.1), "dt must be finite and > 0, got -0.1"),
    (lambda: thermox.EulerMaruyama(np.nan), "dt must be finite and > 0"),
    (lambda: thermox.EulerMaruyama(np.inf), "dt must be finite and > 0"),
    (lambda: thermox.Diffrax(brownian_tol=0.0), "brownian_tol must be finite and > 0"),
    (lambda: jax.jit(lambda dt: thermox.EulerMaruyama(dt))(0.1), "dt must be a concrete number"),
    (lambda: thermox.AnalogDevice(num_readouts=0), "num_readouts must be an integer >= 1"),
    (lambda: thermox.AnalogDevice(readout_interval=0.0), "readout_interval must be finite and > 0"),
])
def test_bad_method_settings(make, match):
    with pytest.raises(ValueError, match=match):
        make()


# --- readout averaging ---------------------------------------------------------------------------------------


def averaged_variance(a, kappa0, count, correlation):
    """Variance of the mean of ``count`` stationary samples of a scalar OU process, ``kappa0 / a`` each, whose
    lag-``m`` correlation is ``correlation ** m``:
    ``kappa0 / a [count + 2 sum_{k < l} correlation^(l - k)] / count^2``."""
    lags = np.arange(1, count)
    return kappa0 / a * (count + 2 * np.sum((count - lags) * correlation**lags)) / count**2


@pytest.mark.parametrize("method", ["exact", "krylov", "diffrax"])
def test_readout_averaging_divides_the_variance(x64, method):
    """``num_readouts`` samples ``readout_interval`` apart after a relaxed run (a t = 20 of the scalar drift a = 1:
    the start is forgotten to e^-20), averaged: the variance of the average is the closed form of
    :func:`averaged_variance` with lag correlation ``e^{-a interval}`` (the exact transitions), and for
    Euler-Maruyama at step h that of its AR(1) chain: stationary variance ``2 kappa0 h / (1 - f^2)`` and lag
    correlation ``f^(interval / h)``, ``f = 1 - a h``. M = 8000 keys: the sample variance has relative standard
    error sqrt(2 / M) = 1.6%; 5 standard errors. The mean stays b / a (5 standard errors of the mean)."""
    a, b, kappa0, count, interval, M = 1.0, 0.7, 0.5, 4, 0.5, 8000
    h = 0.05
    how = thermox.EulerMaruyama(h) if method == "diffrax" else method
    device = thermox.AnalogDevice(kappa0=kappa0, num_readouts=count, readout_interval=interval)
    programmed = thermox.program(device, jnp.asarray([[a]]), method=how)
    samples = np.asarray(jax.jit(jax.vmap(lambda k: programmed.solve(jnp.asarray([b]), key=k, t=20.0)))(
        jr.split(jr.key(11), M)))[:, 0]
    if method == "diffrax":
        f = 1 - a * h
        expected = averaged_variance(a, kappa0, count, f ** round(interval / h)) * (2 * a * h / (1 - f**2))
    else:
        expected = averaged_variance(a, kappa0, count, np.exp(-a * interval))
    assert abs(samples.var(ddof=1) / expected - 1) <= 5 * np.sqrt(2 / (M - 1)), (samples.var(ddof=1), expected)
    assert abs(samples.mean() - b / a) <= 5 * np.sqrt(expected / M)
    # Averaging 4 samples 0.5 tau apart divides the single readout's variance kappa0 / a by 1.6 only (correlated).
    assert 1.5 < kappa0 / a / averaged_variance(a, kappa0, count, np.exp(-a * interval)) < 1.7


def test_readout_samples_each_pass_the_adc(x64):
    """Each sample is converted before the digital average: with a 3-bit ADC of full scale 1 (step 0.25) every
    average of 4 readouts is a multiple of 0.25 / 4; the voltages handed back are the last sample's, before the
    ADC (noiseless: the state after t + 3 intervals)."""
    device = thermox.AnalogDevice(kappa0=0.3, adc_bits=3, adc_range=1.0, num_readouts=4, readout_interval=0.2)
    programmed = thermox.program(device, jnp.asarray([[1.0]]))
    values = np.asarray(jax.vmap(lambda k: programmed.solve(jnp.asarray([0.3]), key=k, t=5.0))(
        jr.split(jr.key(0), 200)))
    np.testing.assert_allclose(values * 16, np.round(values * 16), atol=1e-12)
    assert len(np.unique(values)) > 3
    quiet = thermox.program(thermox.AnalogDevice(num_readouts=4, readout_interval=0.2), jnp.asarray([[1.0]]))
    readout = quiet.readout(jnp.asarray([0.3]), key=None, t=1.0)
    np.testing.assert_allclose(readout.voltages, 0.3 * (1 - np.exp(-1.6)), rtol=1e-14)
    with pytest.raises(ValueError, match="two readout modes"):
        quiet.solve(jnp.asarray([0.3]), key=None, t=1.0, window=0.5)


def test_tngd_with_averaged_readouts_runs(x64):
    """The natural-gradient solver reads through the same protocol: a noisy averaged readout gives a finite step
    and the device exposes the extra readouts (count and the run time they add) for the work record."""
    import kfac_reference as ref
    import kfac_thermo as kt

    params, x, y = ref.problem("softmax_cross_entropy")
    device = thermox.AnalogDevice(kappa0=1e-3, num_readouts=3, readout_interval=2.0)
    tx = kt.tngd(0.1, predict_fn=ref.mlp_predict, loss="softmax_cross_entropy", device=device, key=jr.key(0))
    g = ref.grad("softmax_cross_entropy", ref.mlp_predict, params, x, y)
    updates, _ = ref.update(tx, g, tx.init(params), params, (x, y))
    assert np.all(np.isfinite(ref.flat(updates)))
    assert device.num_readouts == 3 and device.readout_time == 4.0
