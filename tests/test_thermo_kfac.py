"""K-FAC against exact NGD, thermodynamic K-FAC against digital K-FAC, the refresh schedule and the modeled cost.

Tolerances (float64): a backward-stable solve with a matrix of condition number kappa is within ``c n kappa eps``
of the exact solution (``kfac_reference.solve_rtol``, c n <= 100 here); the Kronecker solvers do two such solves
(one per factor), so their bound is the sum over both factors. An ideal device run for ``t`` tau leaves the
relative error ``e^{-lambda_min t}`` of its mean; ``t`` below is chosen so that this is below ``e^{-40}``.
"""

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree

import kfac_reference as ref
import kfac_thermo as kt
import thermox
from thermox.cost import analog_cost
from experiments.models import split_model
from kfac_thermo._curvature import KFACModel, batch_statistics, factors
from kfac_thermo._kfac._solvers import factored_damping

EPS = ref.EPS64
LOSS = "softmax_cross_entropy"


def first_update(tx, params, x, y, loss=LOSS, predict=ref.mlp_predict):
    g = ref.grad(loss, predict, params, x, y)
    return ref.update(tx, g, tx.init(params), params, (x, y))


def linear_problem(bias, seed=0, b=16, n_in=5, dz=3):
    linear = eqx.nn.Linear(n_in, dz, use_bias=bias, key=jr.key(seed))
    linear = jax.tree_util.tree_map(lambda l: l.astype(jnp.float64) if eqx.is_inexact_array(l) else l, linear)
    params, predict = split_model(linear)
    rng = np.random.default_rng(seed + 1)
    return params, predict, jnp.asarray(rng.normal(size=(b, n_in))), jnp.asarray(rng.normal(size=(b, dz)))


@pytest.mark.parametrize("bias", [True, False])
def test_kfac_equals_ngd_on_a_linear_layer(x64, bias):
    """One eqx.nn.Linear under MSE: each output's Jacobian row is the input (with a 1 for the bias), and the loss
    Hessian is I, so the GGN is exactly ``A (x) I`` with ``A = (1/b) sum [x;1][x;1]^T`` (and K-FAC's
    ``S = (1/b) sum_i sum_k e_k e_k^T = I``). Damped consistently, K-FAC is then exact NGD: exact damping adds
    ``damping`` to the eigenvalues of ``A (x) S``, i.e. solves with ``G + damping I`` as ngd does, and the first
    curvature refresh takes the batch's factors as they are (no average with the zero initial factors)."""
    params, predict, x, y = linear_problem(bias)
    damping = 1e-2
    G = ref.ggn("mse", predict, params, x, y)
    common = dict(predict_fn=predict, loss="mse", damping=damping)
    expected, _ = first_update(kt.ngd(1.0, **common), params, x, y, "mse", predict)
    ours, state = first_update(kt.kfac(1.0, example_inputs=x, damping_mode="exact", **common), params, x, y, "mse",
                             predict)
    tol = ref.solve_rtol(ref.damped(G, damping))
    assert tol < 1e-6
    err = ref.rel_err(ref.flat(ours), ref.flat(expected))
    assert err <= tol, (err, tol)
    # The factored damping is a different (approximate) damping: it must not meet the same bound.
    factored, _ = first_update(kt.kfac(1.0, example_inputs=x, **common), params, x, y, "mse", predict)
    assert ref.rel_err(ref.flat(factored), ref.flat(expected)) > 1e3 * tol


def relaxed_t_and_tolerance(params, x, y, damping):
    """Run time after which every damped factor's drift (normalised to unit largest entry) has relaxed to
    ``e^{-40}``, and the rounding bound of two solves per layer."""
    model = KFACModel(ref.mlp_predict, params, x, "diagonal")
    A, S, _ = factors(model, batch_statistics(model, params, x, y, "ggn", kt.as_loss(LOSS), jr.key(0)))
    slowest, tol = 0.0, 0.0
    for a, s in zip(A, S):
        for M in factored_damping(a, s, damping):
            M = np.asarray(M)
            w = np.linalg.eigvalsh(M / np.abs(M).max())
            slowest = max(slowest, 1.0 / w[0])
            tol += ref.solve_rtol(M)
    return 40.0 * slowest, tol


@pytest.mark.parametrize("method", ["solve", "invert"])
def test_ideal_device_long_run_equals_kfac(x64, method):
    params, x, y = ref.problem(LOSS)
    damping = 1e-2
    t, tol = relaxed_t_and_tolerance(params, x, y, damping)
    assert tol < 1e-6
    common = dict(predict_fn=ref.mlp_predict, loss=LOSS, damping=damping, example_inputs=x)
    digital, _ = first_update(kt.kfac(1.0, **common), params, x, y)
    thermo, state = first_update(kt.thermo_kfac(1.0, method=method, t=t, **common), params, x, y)
    err = ref.rel_err(ref.flat(thermo), ref.flat(digital))
    assert err <= tol, (err, tol)
    # Too short a run has not relaxed: the same comparison fails by far.
    short, _ = first_update(kt.thermo_kfac(1.0, method=method, t=t / 400, **common), params, x, y)
    assert ref.rel_err(ref.flat(short), ref.flat(digital)) > 1e-3


def cosine(a, b):
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


@pytest.mark.parametrize("method", ["solve", "invert"])
def test_quantized_device_keeps_the_direction(x64, method):
    """DAC and ADC at ``bits`` bits (auto-ranged): an error at most ``2^-bits`` of each transfer's largest entry
    per value, so the update's error should fall ~4x per 2 bits; at 8 bits it keeps cosine > 0.99 with the digital
    update on an MLP (16-32-32-5, softmax cross-entropy). The run is long enough to relax, so the quantization is
    the only error."""
    params, x, y = ref.problem(LOSS, batch=32, sizes=(16, 32, 32, 5))
    damping = 1e-2
    t, _ = relaxed_t_and_tolerance(params, x, y, damping)
    common = dict(predict_fn=ref.mlp_predict, loss=LOSS, damping=damping, example_inputs=x)
    digital = ref.flat(first_update(kt.kfac(1.0, **common), params, x, y)[0])
    errors = {}
    for bits in (6, 8, 10, 12):
        device = thermox.AnalogDevice(dac_bits=bits, adc_bits=bits)
        thermo = ref.flat(first_update(kt.thermo_kfac(1.0, method=method, t=t, device=device, **common),
                                       params, x, y)[0])
        errors[bits] = ref.rel_err(thermo, digital)
        if bits == 8:
            assert cosine(thermo, digital) > 0.99, cosine(thermo, digital)
    for low, high in zip((6, 8, 10), (8, 10, 12)):
        assert errors[high] < errors[low] / 2, errors


# ------------------------------------------------------------------------------------ schedule and state


def test_refresh_periods_and_moving_average(x64):
    """curvature_period=2, inverse_period=3, ema_decay=0.5 over four batches at fixed parameters: the factors
    change on steps 0 and 2 (``F_2 = 0.5 F(batch_0) + 0.5 F(batch_2)``), the inverses on steps 0 and 3, and every
    step's direction uses the inverses of the last inverse refresh."""
    params, x, y = ref.problem(LOSS, batch=24)
    batches = [(x[6 * k:6 * k + 6], y[6 * k:6 * k + 6]) for k in range(4)]
    solver = kt.DigitalKronecker()
    tx = kt.scale_by_kfac(solver, predict_fn=ref.mlp_predict, loss=LOSS, damping=0.05, example_inputs=batches[0][0],
                          ema_decay=0.5, curvature_period=2, inverse_period=3)
    model = KFACModel(ref.mlp_predict, params, batches[0][0], "diagonal")
    batch_factors = [factors(model, batch_statistics(model, params, bx, by, "ggn", kt.as_loss(LOSS), jr.key(0)))
                     for bx, by in batches]
    state = tx.init(params)
    step = jax.jit(lambda g, s, b: tx.update(g, s, params, batch=b))
    expected_factors = None
    for k, batch in enumerate(batches):
        g = ref.grad(LOSS, ref.mlp_predict, params, *batch)
        previous = state
        update, state = step(g, state, batch)
        if k == 0:
            expected_factors = [(a, s) for a, s in zip(*batch_factors[0][:2])]
        if k == 2:
            expected_factors = [(0.5 * a0 + 0.5 * a2, 0.5 * s0 + 0.5 * s2) for (a0, s0), a2, s2
                                in zip(expected_factors, *batch_factors[2][:2])]
        for (a, s), (ea, es) in zip(state.factors, expected_factors):
            np.testing.assert_allclose(a, ea, rtol=0, atol=100 * EPS * np.abs(ea).max())
            np.testing.assert_allclose(s, es, rtol=0, atol=100 * EPS * np.abs(es).max())
        assert int(state.curvature_updates) == (1 if k < 2 else 2)
        if k in (1, 2):
            for new, old in zip(jax.tree_util.tree_leaves(state.inverses),
                                jax.tree_util.tree_leaves(previous.inverses)):
                np.testing.assert_array_equal(new, old)
        if k == 3:
            refreshed = [solver.refresh((a, s), 0.05, jr.key(0))[0] for a, s in state.factors]
            for new, ref_inv in zip(jax.tree_util.tree_leaves(state.inverses), jax.tree_util.tree_leaves(refreshed)):
                np.testing.assert_allclose(new, ref_inv, rtol=0, atol=100 * EPS * np.abs(ref_inv).max())
        # The direction is the current inverses applied to this step's gradient blocks.
        G = model.to_matrices(jax.tree_util.tree_leaves(g))
        blocks = [solver.apply(inv, gb, (), step=k, key=jr.key(0))[0] for inv, gb in zip(state.inverses, G)]
        expected = model.from_matrices(blocks, jax.tree_util.tree_leaves(g))
        np.testing.assert_allclose(ravel_pytree(update)[0], ravel_pytree(expected)[0], rtol=1e-12)
    assert int(state.count) == 4 and int(state.skipped) == 0


def transfer_s(values):
    return values * 16 / 50e9


def device_seconds(work: kt.Work) -> float:
    """The hardware model's seconds of a step's analog work alone (its host work left out)."""
    cost = analog_cost(dac_values=work.dac_values, coupling_values=work.coupling_values, adc_values=work.adc_values,
                       analog_tau=work.analog_tau, resistor_tau=work.resistor_tau, dac_bits=work.dac_bits,
                       coupling_bits=work.coupling_bits, adc_bits=work.adc_bits)
    return float(cost.time_s)


@pytest.mark.parametrize("method", ["solve", "invert"])
def test_modeled_device_time(x64, method):
    """Layers sit on separate solvers: transfers (16-bit values over one 50 Gb/s link) add up over layers, the
    analog run times overlap (maximum over layers); a layer's two solves run one after the other for t each.
    "solve" programs both factors at an inverse refresh (n_out^2 + n_in^2 couplings) and every step sends G and the
    intermediate, and reads both results (4 n_out n_in values); "invert" programs, drives with the identity and
    reads out each factor at a refresh (3 n^2 values each) and then needs no device until the next refresh."""
    params, x, y = ref.problem(LOSS)
    t = 7.0
    tx = kt.scale_by_kfac(kt.ThermoKronecker(method=method, t=t), predict_fn=ref.mlp_predict, loss=LOSS,
                          damping=0.1, example_inputs=x, curvature_period=2, inverse_period=2)
    g = ref.grad(LOSS, ref.mlp_predict, params, x, y)
    step = jax.jit(lambda g, s: tx.update(g, s, params, batch=(x, y)))
    _, s0 = step(g, tx.init(params))
    _, s1 = step(g, s0)
    dims = [(4, 6), (3, 5)]  # (n_out, n_in + bias) of the 5-4-3 MLP's layers
    tau = 1e-6
    if method == "solve":
        per_step = sum(transfer_s(4 * o * i) for o, i in dims) + 2 * t * tau
        refresh = sum(transfer_s(o * o + i * i) for o, i in dims)
    else:
        per_step = 0.0
        refresh = sum(transfer_s(3 * (o * o + i * i)) for o, i in dims) + 2 * t * tau
    np.testing.assert_allclose(device_seconds(s0.work), per_step + refresh, rtol=1e-6)
    np.testing.assert_allclose(device_seconds(s1.work), per_step, rtol=1e-6, atol=1e-20)
    # Model calls with the gradient's counted as one: GGN statistics are a forward and dz - 1 reverse passes.
    calls = lambda s: 1 + float(s.work.forward_passes + s.work.reverse_passes)
    assert calls(s0) == 1 + 1 + 2 and calls(s1) == 1


def test_weight_decay_by_chain(x64):
    """``optax.chain(add_decayed_weights(wd), kfac)`` preconditions ``g + wd theta``."""
    import optax

    params, x, y = ref.problem(LOSS)
    wd = 1e-2
    common = dict(predict_fn=ref.mlp_predict, loss=LOSS, damping=0.05, example_inputs=x)
    g = ref.grad(LOSS, ref.mlp_predict, params, x, y)
    chained = optax.chain(optax.add_decayed_weights(wd), kt.kfac(0.1, **common))
    ours, _ = ref.update(chained, g, chained.init(params), params, (x, y))
    decayed = jax.tree_util.tree_map(lambda g, p: g + wd * p, g, params)
    plain = kt.kfac(0.1, **common)
    expected, _ = ref.update(plain, decayed, plain.init(params), params, (x, y))
    np.testing.assert_allclose(ref.flat(ours), ref.flat(expected), rtol=1e-12)


def test_thermal_noise_is_unbiased(x64):
    """kappa0 > 0: each solve's readout is Gaussian around the relaxed solution and both solves are linear, so
    over N independent keys the mean update is the digital one within its standard error; 5 standard errors per
    coordinate (39 coordinates) fail by chance with probability below 39 * 6e-7."""
    params, x, y = ref.problem(LOSS)
    damping = 1e-2
    t, _ = relaxed_t_and_tolerance(params, x, y, damping)
    common = dict(predict_fn=ref.mlp_predict, loss=LOSS, damping=damping, example_inputs=x)
    digital = ref.flat(first_update(kt.kfac(1.0, **common), params, x, y)[0])
    g = ref.grad(LOSS, ref.mlp_predict, params, x, y)
    device = thermox.AnalogDevice(kappa0=1e-4)

    @jax.jit
    @jax.vmap
    def noisy(key):
        tx = kt.thermo_kfac(1.0, t=t, device=device, key=key, **common)
        return ravel_pytree(tx.update(g, tx.init(params), params, batch=(x, y))[0])[0]

    n = 400
    samples = np.asarray(noisy(jr.split(jr.key(0), n)))
    mean, stderr = samples.mean(0), samples.std(0, ddof=1) / np.sqrt(n)
    assert np.all(stderr > 0)
    assert np.all(np.abs(mean - digital) <= 5 * stderr), np.max(np.abs(mean - digital) / stderr)


def test_each_layer_has_its_own_chip(x64):
    """A mismatched device: layers get different chips (keys), the update is fixed by the device key."""
    key = jr.key(3)
    solver = kt.ThermoKronecker(device=thermox.AnalogDevice(mismatch=1e-3, coupling_bits=12, key=key))
    keys = [jr.key_data(solver.for_layer(i).device.key) for i in range(2)]
    assert not np.array_equal(keys[0], keys[1])
    params, x, y = ref.problem(LOSS)
    common = dict(predict_fn=ref.mlp_predict, loss=LOSS, damping=1e-2, example_inputs=x, t=1e4)
    updates = [ref.flat(first_update(kt.thermo_kfac(1.0, device=thermox.AnalogDevice(
        mismatch=1e-3, coupling_bits=12, key=k), **common), params, x, y)[0]) for k in (key, key, jr.key(4))]
    np.testing.assert_array_equal(updates[0], updates[1])
    assert not np.array_equal(updates[0], updates[2]) and np.all(np.isfinite(updates[2]))


def test_kfac_is_block_diagonal_ngd_for_one_example(x64):
    """With one example every layer's GGN block is exactly Kronecker: ``sum_k (a a^T) (x) (s_k s_k^T) = A (x) S``
    (one input row ``a`` shared by all output directions). So K-FAC with exact damping solves each layer's block of
    the GGN (weights and bias together), written out from ``jax.jacrev`` in ``kfac_reference.ggn``: the update is
    block-diagonal NGD, to the rounding bound of each block's solve. This checks the factors' scale and roles
    (inputs vs outputs) on a multi-layer model, beyond the single linear layer."""
    params, x, y = ref.problem(LOSS, batch=1, sizes=(5, 4, 4, 3))
    damping = 1e-2
    G = ref.ggn(LOSS, ref.mlp_predict, params, x, y)
    g = ref.flat(ref.grad(LOSS, ref.mlp_predict, params, x, y))
    sizes = [leaf.size for layer in params for leaf in (layer["b"], layer["w"])]  # ravel order: b, w per layer
    edges = np.cumsum([0] + sizes)
    expected, tol = np.zeros_like(g), 0.0
    for start, stop in zip(edges[:-1:2], edges[2::2]):  # each layer's (b, w) block
        block = ref.damped(G[start:stop, start:stop], damping)
        expected[start:stop] = np.linalg.solve(block, g[start:stop])
        tol = max(tol, ref.solve_rtol(block))
    tx = kt.kfac(1.0, predict_fn=ref.mlp_predict, loss=LOSS, damping=damping, example_inputs=x, damping_mode="exact")
    ours, _ = first_update(tx, params, x, y)
    assert tol < 1e-6
    err = ref.rel_err(-ref.flat(ours), expected)
    assert err <= tol, (err, tol)


def test_inverse_from_stationary_covariance(x64):
    """method="invert" with num_samples: the factor inverses are sample covariances / kappa0 of samples taken
    ``interval`` = 5 relaxation times apart (nearly independent), so their error, and the update's, falls as
    ``1/sqrt(num_samples)``: 16x the samples must cut it by about 4 (asserted: at least 2)."""
    params, x, y = ref.problem(LOSS)
    damping = 1e-1
    t, _ = relaxed_t_and_tolerance(params, x, y, damping)
    slowest = t / 40.0
    common = dict(predict_fn=ref.mlp_predict, loss=LOSS, damping=damping, example_inputs=x)
    digital = ref.flat(first_update(kt.kfac(1.0, **common), params, x, y)[0])
    device = thermox.AnalogDevice(kappa0=1e-2)
    errors = []
    for n in (250, 4000):
        tx = kt.thermo_kfac(1.0, method="invert", num_samples=n, interval=5 * slowest, t=t, device=device,
                            key=jr.key(5), **common)
        errors.append(ref.rel_err(ref.flat(first_update(tx, params, x, y)[0]), digital))
    assert errors[1] < errors[0] / 2, errors
