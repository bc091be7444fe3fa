"""The work record of one step of every optimizer, against a count by hand on the 5-4-3 MLP, and the modeled time
the hardware model makes of it.

The problem: b = 8 examples, N = 5*4 + 4 + 4*3 + 3 = 39 parameters, dz = 3 outputs. The exact GGN's output
directions are the loss Hessian's factor columns: m = dz - 1 = 2 for softmax cross-entropy, m = dz = 3 for MSE,
so the Jacobian rows have rank r = b m. K-FAC's layers are 4 x (5 + 1) and 3 x (4 + 1) (bias columns included).
The counts are the project's cost formulas (``thermox.cost``: couplings ``r (r + 2N)`` for TNGD's three resistor
arrays; Cholesky ``n^3 / 3``; K-FAC factor Grams ``2 b n^2``; SPD inverses ``7/3 n^3``; products ``2 m k n``),
counted here independently of the code. Counts are float32 integers far below 2^24: exact.

The prices (``experiments.hardware.step_cost`` on the A100 roofline and the paper's analog constants: R = 1 kOhm,
C = 1 nF, tau = 1 us, 16 bits, 50 Gb/s) are float64 formulas on both sides (rtol 1e-9, from float32 counts that are
exact integers).
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import kfac_reference as ref
import kfac_thermo as kt
import thermox
from experiments import hardware

LOSS = "softmax_cross_entropy"
B, N, DZ = 8, 39, 3
LAYERS = [(4, 6), (3, 5)]  # (n_out, n_in) with the bias column
ITEMSIZE = 8  # float64 (x64)


def one_step(tx, loss=LOSS):
    """The optimizer state after one jitted update on the problem."""
    params, x, y = ref.problem(loss)
    g = ref.grad(loss, ref.mlp_predict, params, x, y)
    return ref.update(tx, g, tx.init(params), params, (x, y))[1]


def check(work: kt.Work, *, forward=0, reverse=0, flops=None, values=None, kernels=None, dac=0, couplings=0, adc=0,
          bits=(0, 0, 0), tau=0.0, solvers=0):
    """``work`` equals the given counts exactly (``values`` are array entries moved, by kind)."""
    assert (float(work.forward_passes), float(work.reverse_passes)) == (forward, reverse)
    if forward or reverse:
        assert (float(work.examples), float(work.params)) == (B, N)
    flops, values, kernels = flops or {}, values or {}, kernels or {}
    for kind in kt.DIGITAL_KINDS:
        assert float(work.flops[kind]) == pytest.approx(flops.get(kind, 0.0), rel=1e-7), kind
        assert float(work.bytes[kind]) == pytest.approx(ITEMSIZE * values.get(kind, 0.0), rel=1e-7), kind
        assert float(work.kernels[kind]) == kernels.get(kind, 0.0), kind
    assert (float(work.dac_values), float(work.coupling_values), float(work.adc_values)) == (dac, couplings, adc)
    assert (float(work.dac_bits), float(work.coupling_bits), float(work.adc_bits)) == bits
    assert float(work.analog_tau) == pytest.approx(tau, rel=1e-7)
    assert float(work.analog_solvers) == solvers


@pytest.mark.parametrize("name", ["tngd", "tngd_adam"])
def test_tngd(x64, name):
    """One forward and m reverse passes for the Jacobian rows; the couplings of the three arrays, the gradient in
    and the readout out (N values each) with the chip's bits; t + delay tau on one solver."""
    t, delay, m = 3.0, 0.5, DZ - 1
    device = thermox.AnalogDevice(dac_bits=12, adc_bits=10)
    tx = getattr(kt, name)(0.1, predict_fn=ref.mlp_predict, loss=LOSS, t=t, delay=delay, device=device)
    r = B * m
    check(kt.total_work(one_step(tx)), forward=1, reverse=m, dac=N, couplings=r * (r + 2 * N), adc=N,
          bits=(12, 0, 10), tau=t + delay, solvers=1)


@pytest.mark.parametrize("loss", [LOSS, "mse"])
def test_ngd_dense(x64, loss):
    """The explicit factor (N x r), its Gram ``W W^T`` at ``r N^2`` flops (N r + N^2 values) and the Cholesky of
    ``G + damping I`` at ``N^3 / 3`` (2 N^2 values)."""
    m = DZ - 1 if loss == LOSS else DZ
    r = B * m
    tx = kt.ngd(0.1, predict_fn=ref.mlp_predict, loss=loss)
    check(kt.total_work(one_step(tx, loss)), forward=1, reverse=m,
          flops={"gram": r * N * N, "cholesky": N**3 / 3}, values={"gram": N * r + N * N, "cholesky": 2 * N * N},
          kernels={"gram": 1, "cholesky": 1})


def test_ngd_woodbury(x64):
    """The Jacobian rows' passes and the Cholesky of the r x r system: ``r^3 / 3`` flops, 2 r^2 values."""
    r = B * (DZ - 1)
    tx = kt.ngd_woodbury(0.1, predict_fn=ref.mlp_predict, loss=LOSS)
    check(kt.total_work(one_step(tx)), forward=1, reverse=DZ - 1, flops={"cholesky": r**3 / 3},
          values={"cholesky": 2 * r * r}, kernels={"cholesky": 1})


def test_ngd_cg(x64):
    """One Jacobian-vector (forward) and one vector-Jacobian (reverse) product per iteration."""
    iterations = 7
    tx = kt.ngd_cg(0.1, predict_fn=ref.mlp_predict, loss=LOSS, iterations=iterations)
    check(kt.total_work(one_step(tx)), forward=iterations, reverse=iterations)


def kfac_digital_counts(refresh: bool) -> dict:
    """K-FAC's digital work by kind: per layer the factor Grams ``2 b n_in^2`` (b n_in + n_in^2 values) and
    ``2 m b n_out^2`` (m b n_out + n_out^2 values) and the two SPD inverses ``7/3 n^3`` (2 n^2 values) at a refresh;
    every step the products ``S^-1 G A^-1``: ``2 n_out^2 n_in + 2 n_out n_in^2`` flops, two kernels."""
    m = DZ - 1
    flops, values, kernels = {"precondition": 0.0}, {"precondition": 0.0}, {"precondition": 0.0}
    if refresh:
        flops.update(gram=0.0, inverse=0.0)
        values.update(gram=0.0, inverse=0.0)
        kernels.update(gram=0.0, inverse=0.0)
    for o, i in LAYERS:
        flops["precondition"] += 2 * o * o * i + 2 * o * i * i
        values["precondition"] += (o * o + 2 * o * i) + (o * i + i * i + o * i)
        kernels["precondition"] += 2
        if refresh:
            flops["gram"] += 2 * B * i * i + 2 * m * B * o * o
            values["gram"] += (B * i + i * i) + (m * B * o + o * o)
            flops["inverse"] += 7 / 3 * (o**3 + i**3)
            values["inverse"] += 2 * (o * o + i * i)
            kernels["gram"] += 2
            kernels["inverse"] += 2
    return dict(flops=flops, values=values, kernels=kernels)


def test_kfac(x64):
    """A refresh step: the statistics' forward and m reverse passes, the factor Grams, the inverses and the
    preconditioning products; the next step (refresh every 2) the products only."""
    params, x, y = ref.problem(LOSS)
    tx = kt.kfac(0.1, predict_fn=ref.mlp_predict, loss=LOSS, damping=0.1, example_inputs=x, curvature_period=2,
                 inverse_period=2)
    g = ref.grad(LOSS, ref.mlp_predict, params, x, y)
    first = ref.update(tx, g, tx.init(params), params, (x, y))[1]
    second = ref.update(tx, g, first, params, (x, y))[1]
    check(kt.total_work(first), forward=1, reverse=DZ - 1, **kfac_digital_counts(refresh=True))
    check(kt.total_work(second), **kfac_digital_counts(refresh=False))


def test_thermo_kfac(x64):
    """method="solve": the statistics and factor Grams digitally; each layer's chip programmed with both damped
    factors (``n_in^2 + n_out^2`` couplings), then G in and the intermediate in (2 n_out n_in values through the
    DAC), both readouts out (2 n_out n_in through the ADC), the two solves one after the other (2 t); the layers'
    chips in parallel (the longest run counts, two solvers)."""
    params, x, y = ref.problem(LOSS)
    t = 7.0
    device = thermox.AnalogDevice(dac_bits=8, adc_bits=9)
    tx = kt.thermo_kfac(0.1, predict_fn=ref.mlp_predict, loss=LOSS, damping=0.1, example_inputs=x, t=t,
                        device=device)
    counts = kfac_digital_counts(refresh=True)
    digital = {key: {kind: v for kind, v in value.items() if kind == "gram"} for key, value in counts.items()}
    check(kt.total_work(one_step(tx)), forward=1, reverse=DZ - 1, **digital,
          dac=sum(2 * o * i for o, i in LAYERS), couplings=sum(o * o + i * i for o, i in LAYERS),
          adc=sum(2 * o * i for o, i in LAYERS), bits=(8, 0, 9), tau=2 * t, solvers=len(LAYERS))


def test_with_work_reports_the_update():
    """An optax baseline wrapped by with_work: ``flops_per_param N`` flops and ``bytes_per_param N`` bytes of kind
    "update", one kernel per leaf; its updates and inner state are the baseline's."""
    params, x, y = ref.problem(LOSS)
    g = ref.grad(LOSS, ref.mlp_predict, params, x, y)
    adam = optax.adam(1e-3)
    tx = kt.with_work(adam, flops_per_param=13.0, bytes_per_param=24.0)
    updates, state = tx.update(g, tx.init(params), params, batch=(x, y))  # extra arguments pass through
    expected, inner = adam.update(g, adam.init(params), params)
    np.testing.assert_array_equal(ref.flat(updates), ref.flat(expected))
    assert jax.tree_util.tree_structure(state.inner) == jax.tree_util.tree_structure(inner)
    (work,) = kt.work_records(optax.chain(optax.clip(1.0), tx).update(g, optax.chain(optax.clip(1.0), tx).init(
        params), params)[1])
    assert float(work.flops["update"]) == 13 * N and float(work.bytes["update"]) == 24 * N
    assert float(work.kernels["update"]) == 4  # two weights, two biases
    with pytest.raises(ValueError, match="flops_per_param"):
        kt.with_work(adam, flops_per_param=-1.0, bytes_per_param=0.0)


def test_work_records_are_found_by_type_in_a_chain(x64):
    """total_work of a chain (clip, K-FAC, Adam wrapped by with_work) under inject_hyperparams: both records, one
    after the other."""
    params, x, y = ref.problem(LOSS)
    tx = optax.inject_hyperparams(lambda learning_rate: optax.chain(
        optax.clip_by_global_norm(1.0),
        kt.scale_by_kfac(kt.DigitalKronecker(), predict_fn=ref.mlp_predict, loss=LOSS, damping=0.1, example_inputs=x),
        kt.with_work(optax.scale_by_adam(), flops_per_param=13.0, bytes_per_param=24.0),
        optax.scale_by_learning_rate(learning_rate)))(learning_rate=0.1)
    state = one_step(tx)
    records = kt.work_records(state)
    assert len(records) == 2
    total = kt.total_work(state)
    assert float(total.flops["update"]) == 13 * N and float(total.reverse_passes) == DZ - 1
    assert float(total.flops["precondition"]) == kfac_digital_counts(refresh=False)["flops"]["precondition"]


# --------------------------------------------------------------------------------------- modeled time


# --- the hardware model's prices of these records (experiments.hardware) ----------------------------------------

PROFILE = hardware.PassProfile(B, hardware.PassCost(1e4, 4e3, 3), hardware.PassCost(2e4, 9e3, 5))
A100, PAPER = hardware.digital_platform("a100"), hardware.analog_platform("paper")


def priced(work):
    return hardware.step_cost(work, PROFILE, A100, PAPER)


def test_tngd_modeled_time_grows_with_run_time(x64):
    # MSE: H = I, so the GGN factor W has exactly r = b dz columns (the coupling count depends on r).
    params, x, y = ref.problem("mse")
    g = ref.grad("mse", ref.mlp_predict, params, x, y)
    ts = [1.0, 3.0, 50.0]

    @ref.quick_jit
    @jax.vmap
    def work_after_one_step(t):
        tx = kt.tngd(0.1, predict_fn=ref.mlp_predict, loss="mse", t=t)
        return kt.total_work(tx.update(g, tx.init(params), params, batch=(x, y))[1])

    works = work_after_one_step(jnp.asarray(ts))
    costs = [priced(jax.tree_util.tree_map(lambda leaf, i=i: leaf[i], works)) for i in range(len(ts))]
    times = np.asarray([c.time_s for c in costs])
    # Only the analog run depends on t: the times differ by (t - t') tau, tau = R C = 1 kOhm x 1 nF = 1 us.
    np.testing.assert_allclose(np.diff(times), np.diff(ts) * 1e-6, rtol=1e-9)
    # The device's part: couplings r (r + 2N) for TNGD's three resistor arrays, the gradient in, the readout out,
    # 16 bits each over one 50 Gb/s link, then t tau.
    r = B * DZ
    for t, cost in zip(ts, costs):
        device = thermox.cost.solve_cost(N, t, num_couplings=thermox.cost.low_rank_couplings(N, r))
        assert cost.program_s + cost.transfer_s + cost.analog_s == pytest.approx(float(device.time_s), rel=1e-9)


def test_tngd_delay_is_modeled_run_time(x64):
    """The delay is analog time too: t = 1, delay = 0.5 costs as much as t = 1.5 without delay."""
    params, x, y = ref.problem(LOSS)
    g = ref.grad(LOSS, ref.mlp_predict, params, x, y)

    def work(t, delay):
        tx = kt.tngd(0.1, predict_fn=ref.mlp_predict, loss=LOSS, t=t, delay=delay)
        return kt.total_work(tx.update(g, tx.init(params), params, batch=(x, y))[1])

    assert priced(work(1.0, 0.5)).time_s == pytest.approx(priced(work(1.5, 0.0)).time_s, rel=1e-12)


def test_cg_model_passes_are_priced_from_the_profile(x64):
    """CG: one Jacobian-vector (forward) and one vector-Jacobian (reverse) product per iteration; the trainer's
    step adds the gradient's own forward and reverse pass, each priced on the roofline from the pass profile."""
    params, x, y = ref.problem(LOSS)
    g = ref.grad(LOSS, ref.mlp_predict, params, x, y)
    iterations = 7
    tx = kt.ngd_cg(0.1, predict_fn=ref.mlp_predict, loss=LOSS, iterations=iterations)
    state = ref.update(tx, g, tx.init(params), params, (x, y))[1]
    work = hardware.step_work(state, B, N)
    assert float(work.forward_passes) == float(work.reverse_passes) == 1 + iterations
    one = lambda p: max(p.flops / A100.peak_flops, p.bytes / A100.memory_bandwidth) + p.kernels * A100.launch_latency_s
    assert priced(work).passes_s == pytest.approx((1 + iterations) * (one(PROFILE.forward) + one(PROFILE.reverse)),
                                                  rel=1e-9)


def test_adam_modeled_step_is_the_gradient_and_the_update():
    """A first-order baseline: the gradient's forward and reverse pass, plus its update (13 flops and 24 bytes a
    parameter, one kernel a leaf) on the roofline; no analog work."""
    params, x, y = ref.problem(LOSS)
    tx = kt.with_work(optax.adam(1e-3), flops_per_param=13.0, bytes_per_param=24.0)
    g = ref.grad(LOSS, ref.mlp_predict, params, x, y)
    cost = priced(hardware.step_work(tx.update(g, tx.init(params), params)[1], B, N))
    leaves = len(jax.tree_util.tree_leaves(params))
    update = max(13 * N / A100.peak_flops, 24 * N / A100.memory_bandwidth) + leaves * A100.launch_latency_s
    assert cost.digital_s == pytest.approx(update, rel=1e-6)
    assert cost.program_s == cost.transfer_s == cost.analog_s == 0.0
    assert priced(hardware.step_work(optax.adam(1e-3).init(params), B, N)).digital_s == 0.0  # not wrapped: no record
