"""TNGD's device dynamics against the closed form of the OU process (REFERENCE.md sections 1 and 3).

With ``A = G + damping I`` and ``x* = A^-1 g`` the readout after ``t`` tau from ``x0`` has mean
``e^{-A t}(x0 - x*) + x*`` (reference: ``scipy.linalg.expm``) and covariance ``kappa0 A^-1 (I - e^{-2 A t})``.
The first step starts the device at the gradient (``x0 = g``), later ones at the previous voltages.
"""

import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import optax
import pytest

import kfac_thermo as kt
import thermox
import kfac_reference as ref

LOSS = "softmax_cross_entropy"
LR = 0.3
DAMPING = 0.1


def setup():
    params, x, y = ref.problem(LOSS)
    G = ref.ggn(LOSS, ref.mlp_predict, params, x, y)
    g_tree = ref.grad(LOSS, ref.mlp_predict, params, x, y)
    return params, x, y, G, g_tree


def tngd_first_updates(ts, params, x, y, g_tree, **kwargs):
    """First updates of tngd for each run time in ``ts`` (traced: one compile for the whole sweep)."""

    @ref.quick_jit
    @jax.vmap
    def run(t):
        tx = kt.tngd(LR, predict_fn=ref.mlp_predict, loss=LOSS, damping=DAMPING, t=t, **kwargs)
        updates, state = tx.update(g_tree, tx.init(params), params, batch=(x, y))
        return ref.ravel(updates), state

    return run(jnp.asarray(ts))


def test_run_time_interpolates_from_sgd_to_ngd(x64):
    """t -> 0 reads out the start state g (SGD); intermediate t the closed-form mean; t -> inf NGD."""
    params, x, y, G, g_tree = setup()
    g = ref.flat(g_tree)
    A = ref.damped(G, DAMPING)
    ts = [0.0, 1e-8, 0.5, 5.0, 1e4]
    updates, states = tngd_first_updates(ts, params, x, y, g_tree)
    updates = np.asarray(updates)
    for t, u in zip(ts, updates):
        expected = ref.device_mean(G, g, DAMPING, t, x0=g)
        assert ref.rel_err(u, -LR * expected) <= ref.law_rtol(A, t, g, expected), t
    # SGD limit: |x(t) - g| = |(I - e^{-A t})(g - x*)| <= t |A|_2 |g - x*|, plus rounding of a few eps |g|.
    for t, u in zip(ts[:2], updates[:2]):
        bound = t * np.linalg.norm(A, 2) * np.linalg.norm(g - np.linalg.solve(A, g)) / np.linalg.norm(g)
        assert ref.rel_err(u, -LR * g) <= bound + 100 * ref.EPS64, t
    # NGD limit: e^{-lambda_min t} <= e^{-0.1 * 1e4} leaves only the solve's rounding.
    assert ref.rel_err(updates[-1], -LR * ref.ngd_direction(G, g, DAMPING)) <= ref.solve_rtol(A)
    # The intermediate times are neither SGD nor NGD (else they would not test the run time).
    for u in updates[2:4]:
        assert ref.rel_err(u, -LR * g) > 0.05 and ref.rel_err(u, -LR * ref.ngd_direction(G, g, DAMPING)) > 0.05
    # The device voltages carried to the next step are the (ideal-ADC) readout.
    voltages = np.asarray(ref.natural_gradient_state(states).solver_state)
    np.testing.assert_allclose(voltages, -updates / LR, rtol=0, atol=10 * ref.EPS64 * np.abs(updates / LR).max())


@pytest.mark.parametrize("reset", [False, True])
def test_second_step_starts_from_previous_device_state(x64, reset):
    """Algorithm 1: step 2 runs on (G_1, g_1) from the voltages left by step 1 (``reset``: from g_1;
    with ``delay``: step 1's voltages after ``delay`` more tau on the stale (G_0, g_0))."""
    t = 0.5
    delays = [0.0, 0.3]
    params0, x, y, G0, g0_tree = setup()
    g0 = ref.flat(g0_tree)

    @ref.quick_jit
    @jax.vmap
    def two_steps(delay):
        tx = kt.tngd(LR, predict_fn=ref.mlp_predict, loss=LOSS, damping=DAMPING, t=t, reset=reset, delay=delay)
        u0, state = tx.update(g0_tree, tx.init(params0), params0, batch=(x, y))
        params1 = optax.apply_updates(params0, u0)
        g1_tree = ref.grad(LOSS, ref.mlp_predict, params1, x, y)
        u1, _ = tx.update(g1_tree, state, params1, batch=(x, y))
        return ref.ravel(u0), ref.ravel(u1), params1

    u0s, u1s, params1s = two_steps(jnp.asarray(delays))
    readout0 = ref.device_mean(G0, g0, DAMPING, t, x0=g0)
    A0 = ref.damped(G0, DAMPING)
    for u0 in np.asarray(u0s):  # the first readout does not depend on the delay that follows it
        assert ref.rel_err(u0, -LR * readout0) <= ref.law_rtol(A0, t, g0, readout0)
    params1 = jax.tree_util.tree_map(lambda leaf: leaf[0], params1s)
    G1 = ref.ggn(LOSS, ref.mlp_predict, params1, x, y)
    g1 = ref.flat(ref.grad(LOSS, ref.mlp_predict, params1, x, y))
    A1 = ref.damped(G1, DAMPING)
    expected = []
    for delay, u1 in zip(delays, np.asarray(u1s)):
        x0 = g1 if reset else ref.device_mean(G0, g0, DAMPING, t + delay, x0=g0)
        expected.append(ref.device_mean(G1, g1, DAMPING, t, x0=x0))
        assert ref.rel_err(u1, -LR * expected[-1]) <= ref.law_rtol(A1, t, x0, expected[-1], b=g1), delay
    if not reset:  # the delay visibly changes the start state, and the carried state is not the reset one
        assert ref.rel_err(expected[1], expected[0]) > 1e-3
        assert ref.rel_err(expected[0], ref.device_mean(G1, g1, DAMPING, t, x0=g1)) > 1e-3


def test_noisy_device_mean_and_variance(x64):
    """Fresh init + update over M keys on a device with thermal noise kappa0.

    Each coordinate of the update is Gaussian with mean ``-lr * mean_i`` and variance
    ``lr^2 [kappa0 A^-1 (I - e^{-2At})]_ii``. The sample mean is within 5 sigma_i / sqrt(M) of the
    noiseless value and the sample variance within 5 sqrt(2 / (M - 1)) relative of the closed form
    (the sample variance of M Gaussians has relative standard deviation sqrt(2 / (M - 1))).
    """
    M, t, kappa0 = 4000, 0.5, 1e-2
    params, x, y, G, g_tree = setup()
    g = ref.flat(g_tree)
    device = thermox.AnalogDevice(kappa0=kappa0)

    @ref.quick_jit
    @jax.vmap
    def one_update(key):
        tx = kt.tngd(LR, predict_fn=ref.mlp_predict, loss=LOSS, damping=DAMPING, t=t, device=device, key=key)
        updates, _ = tx.update(g_tree, tx.init(params), params, batch=(x, y))
        return ref.ravel(updates)

    samples = np.asarray(one_update(jr.split(jr.key(42), M)))
    mean = -LR * ref.device_mean(G, g, DAMPING, t, x0=g)
    std = LR * np.sqrt(ref.device_variance(G, DAMPING, t, kappa0))
    z = (samples.mean(0) - mean) / (std / np.sqrt(M))
    assert np.max(np.abs(z)) < 5, z
    rel_var = samples.var(0, ddof=1) / std**2 - 1
    assert np.max(np.abs(rel_var)) < 5 * np.sqrt(2 / (M - 1)), rel_var


def test_diffrax_euler_agrees_with_exact_law(x64):
    """method="diffrax" (Euler, noiseless) is exactly the Euler iteration ``x <- x - h (A x - g)``, i.e.
    ``(I - hA)^n (x0 - x*) + x*`` with n = t / h; its distance to the exact law is the O(h) Euler bias: per
    eigenvalue w of A, ``|(1 - hw)^n - e^{-wt}| = e^{-wt} (1 - e^{-d}) <= e^{-wt} d`` with
    ``d = n(-log(1 - hw) - hw) <= t h w^2 / (2 (1 - hw))`` (for 0 < hw < 1)."""
    t, dt = 0.5, 0.05
    params, x, y, G, g_tree = setup()
    g = ref.flat(g_tree)
    A = ref.damped(G, DAMPING)
    w = np.linalg.eigvalsh(A)
    assert dt * w.max() < 1
    # thermox's diffrax path draws a Brownian path even at kappa0 = 0 (each increment then counts 0 times), so the
    # transform asks for a key; it does not change the result.
    tx = kt.tngd(LR, predict_fn=ref.mlp_predict, loss=LOSS, damping=DAMPING, t=t, method="diffrax", dt=dt,
                 key=jr.key(0))
    u_euler = ref.flat(ref.update(tx, g_tree, tx.init(params), params, (x, y))[0])

    n = round(t / dt)
    x_star = np.linalg.solve(A, g)
    euler = np.linalg.matrix_power(np.eye(len(g)) - dt * A, n) @ (g - x_star) + x_star
    # n steps each rounding at ~N eps relative.
    assert ref.rel_err(u_euler, -LR * euler) <= 100 * n * len(g) * ref.EPS64

    # The exact-law default equals this closed form to rounding (test_run_time_interpolates_from_sgd_to_ngd).
    exact = ref.device_mean(G, g, DAMPING, t, x0=g)
    bias_bound = np.max(np.exp(-w * t) * t * dt * w**2 / (2 * (1 - dt * w))) * np.linalg.norm(g - x_star)
    bias = np.linalg.norm(u_euler / LR + exact)
    assert bias <= bias_bound
    # The bound is not vacuous: the bias is O(dt) and of the bound's order.
    assert bias > 0.1 * bias_bound


def auto_ranged_quantize(v, bits):
    """The converters' documented auto-ranged uniform quantizer, written out: the largest |v| sits on the
    largest positive code, step = max|v| / (2^(bits-1) - 1), values rounded to the nearest code."""
    half = 2.0 ** (bits - 1)
    step = np.max(np.abs(v)) / (half - 1)
    return np.clip(np.round(v / step), -half, half - 1) * step, step


def test_adc_quantizes_the_readout_not_the_carried_voltages(x64):
    """An 8-bit ADC: the update is -lr Q(readout); the device keeps its unquantized voltages for the next step."""
    bits, t = 8, 0.5
    params, x, y, G, g_tree = setup()
    g = ref.flat(g_tree)
    tx = kt.tngd(LR, predict_fn=ref.mlp_predict, loss=LOSS, damping=DAMPING, t=t,
                 device=thermox.AnalogDevice(adc_bits=bits))
    u, state = ref.update(tx, g_tree, tx.init(params), params, (x, y))
    readout = ref.device_mean(G, g, DAMPING, t, x0=g)
    quantized, step = auto_ranged_quantize(readout, bits)
    # Ours and the reference readout differ by ~law_rtol |readout| (~1e-13): the codes agree as long as no value
    # lies that close to a rounding boundary (half-integer multiples of the step), checked here.
    scaled = readout / step
    assert np.min(np.abs(np.abs(scaled - np.floor(scaled)) - 0.5)) > 1e-6
    read = -ref.flat(u) / LR
    assert np.max(np.abs(read - quantized)) <= 1e-9 * step
    assert np.max(np.abs(read - readout)) <= step / 2 * (1 + 1e-9) and np.max(np.abs(read - readout)) > 0.05 * step
    voltages = np.asarray(ref.natural_gradient_state(state).solver_state)
    assert ref.rel_err(voltages, readout) <= ref.law_rtol(ref.damped(G, DAMPING), t, g, readout)


def test_quantized_couplings_stay_within_the_perturbation_bound(x64):
    """coupling_bits programs the factor W (N x r) entrywise, auto-ranged: |dW_ij| <= step / 2 with
    step = max|W| / (2^(bits-1) - 1) <= |W|_2 / (2^(bits-1) - 1) = sqrt(|G|_2) / (2^(bits-1) - 1) for any factor
    G = W W^T. Then |dG|_2 <= 2 |W|_2 |dW|_2 + |dW|_2^2 with |dW|_2 <= |dW|_F <= sqrt(N r) step / 2 (r <= b dz),
    and the solve moves by |dx| / |x| <= |A^-1| |dG| / (1 - |A^-1| |dG|) (t = 1e4 tau: converged)."""
    bits = 20
    params, x, y, G, g_tree = setup()
    g = ref.flat(g_tree)
    tx = kt.tngd(LR, predict_fn=ref.mlp_predict, loss=LOSS, damping=DAMPING, t=1e4,
                 device=thermox.AnalogDevice(coupling_bits=bits))
    u = ref.flat(ref.update(tx, g_tree, tx.init(params), params, (x, y))[0])
    A = ref.damped(G, DAMPING)
    N, r = G.shape[0], 8 * 3
    norm_W = np.sqrt(np.linalg.norm(G, 2))
    dW = np.sqrt(N * r) * norm_W / (2.0 ** (bits - 1) - 1) / 2
    dG = 2 * norm_W * dW + dW**2
    inv_norm = 1 / np.linalg.eigvalsh(A)[0]
    bound = inv_norm * dG / (1 - inv_norm * dG)
    assert bound < 0.1
    err = ref.rel_err(u, -LR * ref.ngd_direction(G, g, DAMPING))
    assert err <= bound + ref.solve_rtol(A)
    assert err > 100 * ref.solve_rtol(A)  # the programmed (quantized) couplings are really used
