"""scale_by_kfac's own options (refresh periods, statistics from the gradient pass) and its bad input; the optax
contract both K-FAC optimizers share with the others is test_optax_contract.py."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import kfac_reference as ref
import kfac_thermo as kt
import thermox

LOSS = "softmax_cross_entropy"
FACTORIES = {"kfac": kt.kfac, "thermo_kfac": kt.thermo_kfac}


def make(name, x, **kwargs):
    options = dict(predict_fn=ref.mlp_predict, loss=LOSS, damping=0.05, example_inputs=x, curvature_period=2,
                   inverse_period=2)
    if name == "thermo_kfac":
        options["t"] = 1e4
    return FACTORIES[name](0.3, **{**options, **kwargs})


@pytest.fixture
def problem(x64):
    params, x, y = ref.problem(LOSS)
    return params, x, y, ref.grad(LOSS, ref.mlp_predict, params, x, y)


STATIC = ("predict_fn", "example_inputs", "curvature_period", "inverse_period")


def test_periods_must_be_static(problem):
    params, x, y, g = problem
    with pytest.raises(ValueError, match="curvature_period must be a Python int >= 1 .*static_args"):
        optax.inject_hyperparams(kt.kfac, static_args=("predict_fn", "example_inputs"))(
            learning_rate=0.1, predict_fn=ref.mlp_predict, loss=LOSS, damping=0.1, example_inputs=x,
            curvature_period=2).init(params)


def test_statistics_from_the_gradient_pass(problem):
    """update(..., statistics=...) under jit equals the optimizer's own statistics pass (empirical Fisher: the
    gradient's own reverse pass; its statistics cost no model call)."""
    params, x, y, g = problem
    tx = make("kfac", x, curvature="empirical_fisher")
    helper = kt.loss_grads_and_statistics(ref.mlp_predict, LOSS, x, curvature="empirical_fisher")

    @jax.jit
    def step(params, state):
        _, grads, stats = helper(params, (x, y))
        return tx.update(grads, state, params, batch=(x, y), statistics=stats)

    updates, state = step(params, tx.init(params))
    expected, expected_state = ref.update(tx, g, tx.init(params), params, (x, y))
    np.testing.assert_allclose(ref.flat(updates), ref.flat(expected), rtol=1e-10)
    # Model passes beyond the gradient's: none with the gradient pass's statistics, one forward and one reverse
    # pass for the optimizer's own (the gradient's pass is the trainer's, counted apart).
    passes = lambda s: float(s[0].work.forward_passes + s[0].work.reverse_passes)
    assert passes(state) == 0 and passes(expected_state) == 2


# ------------------------------------------------------------------------------------------ bad input


@pytest.mark.parametrize("name", list(FACTORIES))
@pytest.mark.parametrize("setting", ["curvature_period", "inverse_period"])
@pytest.mark.parametrize("value", [0, -1])
def test_refresh_period_below_one(name, setting, value):
    with pytest.raises(ValueError, match=f"{setting} must be >= 1"):
        make(name, jnp.zeros((2, 5)), **{setting: value})


@pytest.mark.parametrize("kwargs,match", [
    (dict(ema_decay=1.0), "ema_decay must be in"),
    (dict(curvature_period=1.5), "curvature_period must be a Python int"),
    (dict(curvature="hessian"), "unknown curvature"),
    (dict(fallback="zero"), None),
    (dict(curvature="mc_fisher"), "needs key="),
    (dict(damping_mode="cholesky"), "unknown damping_mode"),
])
def test_bad_settings(problem, kwargs, match):
    params, x, y, g = problem
    if match is None:  # the fallback is checked where the model is traced
        with pytest.raises(ValueError, match="unknown fallback 'zero'"):
            make("kfac", x, **kwargs).init(params)
        return
    with pytest.raises(ValueError, match=match):
        make("kfac", x, **kwargs)


@pytest.mark.parametrize("kwargs,match", [
    (dict(damping_mode="exact"), "damping_mode='factored' only"),
    (dict(method="anneal"), "unknown thermo_kfac method"),
    (dict(device=thermox.AnalogDevice(kappa0=0.01)), "needs key="),
    (dict(num_samples=100), "applies to method='invert' only"),
])
def test_bad_thermo_settings(kwargs, match):
    with pytest.raises(ValueError, match=match):
        make("thermo_kfac", jnp.zeros((2, 5)), **kwargs)


def test_missing_batch_and_mismatched_statistics(problem):
    params, x, y, g = problem
    tx = make("kfac", x)
    with pytest.raises(ValueError, match="needs the keyword argument batch"):
        tx.update(g, tx.init(params), params)
    stats = kt.loss_grads_and_statistics(ref.mlp_predict, LOSS, x, curvature="empirical_fisher")(params, (x, y))[2]
    with pytest.raises(ValueError, match="statistics must come from loss_grads_and_statistics with curvature='ggn'"):
        tx.update(g, tx.init(params), params, batch=(x, y), statistics=stats)
    with pytest.raises(ValueError, match="example_inputs' per-example shape"):
        wide = ref.problem(LOSS, sizes=(6, 4, 3))
        tx.update(ref.grad(LOSS, ref.mlp_predict, *wide), tx.init(params), wide[0], batch=wide[1:])


def nan_statistics(params, x, y):
    _, _, stats = kt.loss_grads_and_statistics(ref.mlp_predict, LOSS, x)(params, (x, y))
    return jax.tree_util.tree_map(lambda s: s.at[(0,) * s.ndim].set(jnp.nan), stats)


@pytest.mark.parametrize("name", list(FACTORIES))
def test_nonfinite_statistics_skip(problem, name):
    """A non-finite statistic: zero update, factors and inverses unchanged, the step counted as skipped; the next
    (finite) step proceeds normally from the kept state."""
    params, x, y, g = problem
    tx = make(name, x)
    state = tx.init(params)
    for _ in range(2):  # a finite refresh and a step without one: the next step refreshes
        _, state = ref.update(tx, g, state, params, (x, y))
    step = jax.jit(lambda g, s, stats: tx.update(g, s, params, batch=(x, y), statistics=stats))
    updates, new = step(g, state, nan_statistics(params, x, y))
    assert np.all(ref.flat(updates) == 0) and int(new[0].skipped) == 1
    for a, b in zip(jax.tree_util.tree_leaves((new[0].factors, new[0].inverses)),
                    jax.tree_util.tree_leaves((state[0].factors, state[0].inverses))):
        np.testing.assert_array_equal(a, b)
    updates, new = step(g, new, kt.loss_grads_and_statistics(ref.mlp_predict, LOSS, x)(params, (x, y))[2])
    assert np.all(np.isfinite(ref.flat(updates))) and np.any(ref.flat(updates) != 0) and int(new[0].skipped) == 1


def test_nonfinite_statistics_raise(problem):
    params, x, y, g = problem
    tx = make("kfac", x, nonfinite="raise")
    with pytest.raises(Exception, match="non-finite gradient, statistics or direction"):
        jax.block_until_ready(jax.jit(lambda s, stats: tx.update(g, s, params, batch=(x, y), statistics=stats))(
            tx.init(params), nan_statistics(params, x, y)))
