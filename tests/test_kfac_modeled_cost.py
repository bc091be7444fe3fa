"""Modeled hardware time and model calls reported in the optimizer state.

Documented model (NaturalGradientState): ``modeled_time_s = host_s + device_s`` with host work at ``2 b N`` flops
per model call (plus the solver's own flops) at 1e13 flop/s, and for TNGD the device's run and transfer time
from ``thermox.cost.solve_cost`` (R = 1 kOhm, C = 1 nF: tau = 1 us; couplings ``r (r + 2N)`` for the three
resistor arrays, r = b dz). The state stores float32: each reported time is within ``2^-24`` relative of its
float64 value after each of the (at most four) float32 operations that form it.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import kfac_thermo as kt
import thermox
import kfac_reference as ref

LOSS = "softmax_cross_entropy"
F32 = 2.0**-24
HOST_FLOPS_PER_S = 1e13


def test_tngd_modeled_time_grows_with_run_time(x64):
    # MSE: H = I, so the GGN factor W has exactly r = b dz columns (the coupling count depends on r).
    params, x, y = ref.problem("mse")
    g = ref.grad("mse", ref.mlp_predict, params, x, y)
    b, dz, N = 8, 3, 39
    ts = jnp.asarray([1.0, 3.0, 50.0])

    @ref.quick_jit
    @jax.vmap
    def state_after_one_step(t):
        tx = kt.tngd(0.1, predict_fn=ref.mlp_predict, loss="mse", t=t)
        return ref.natural_gradient_state(tx.update(g, tx.init(params), params, batch=(x, y))[1])

    state = state_after_one_step(ts)
    times, calls = np.asarray(state.modeled_time_s, np.float64), np.asarray(state.model_calls)
    tau = thermox.cost.CostModel().tau_s
    assert tau == pytest.approx(thermox.AnalogDevice().tau, rel=1e-12)  # R C = 1 kOhm x 1 nF = 1 us
    assert np.all(times > 0) and np.all(calls >= 2) and np.all(calls == calls[0])  # the gradient and the curvature
    # Only the analog run depends on t: the times differ by (t - t') tau.
    np.testing.assert_allclose(np.diff(times), np.diff(np.asarray(ts)) * tau, rtol=0, atol=8 * F32 * times.max())
    # The whole budget, from the documented formula and thermox's cost model.
    r = b * dz
    for t, time in zip(np.asarray(ts), times):
        device = thermox.cost.solve_cost(N, t, num_couplings=thermox.cost.low_rank_couplings(N, r))
        expected = calls[0] * 2 * b * N / HOST_FLOPS_PER_S + float(device.time_s)
        assert abs(time - expected) <= 8 * F32 * expected, t
        assert float(device.analog_s) == pytest.approx(t * tau, rel=1e-12)


def test_tngd_delay_is_modeled_run_time(x64):
    """The delay is analog time too: t = 1, delay = 0.5 costs as much as t = 1.5 without delay."""
    params, x, y = ref.problem(LOSS)
    g = ref.grad(LOSS, ref.mlp_predict, params, x, y)

    @ref.quick_jit
    @jax.vmap
    def modeled_time(t, delay):
        tx = kt.tngd(0.1, predict_fn=ref.mlp_predict, loss=LOSS, t=t, delay=delay)
        return ref.natural_gradient_state(tx.update(g, tx.init(params), params, batch=(x, y))[1]).modeled_time_s

    times = np.asarray(modeled_time(jnp.asarray([1.0, 1.5]), jnp.asarray([0.5, 0.0])), np.float64)
    assert abs(times[0] - times[1]) <= 4 * F32 * times.max()


def test_cg_model_calls_and_host_time(x64):
    """CG: the gradient plus one Jacobian-vector and one vector-Jacobian product per iteration, each at
    2 b N flops on the host (every transform's cost is reported: test_kfac_optax_contract.py)."""
    params, x, y = ref.problem(LOSS)
    g = ref.grad(LOSS, ref.mlp_predict, params, x, y)
    iterations, b, N = 7, 8, 39
    tx = kt.ngd_cg(0.1, predict_fn=ref.mlp_predict, loss=LOSS, iterations=iterations)
    state = ref.natural_gradient_state(ref.update(tx, g, tx.init(params), params, (x, y))[1])
    assert float(state.model_calls) == 1 + 2 * iterations
    expected = (1 + 2 * iterations) * 2 * b * N / HOST_FLOPS_PER_S
    assert abs(float(state.modeled_time_s) - expected) <= 4 * F32 * expected
