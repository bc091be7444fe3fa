"""The optax contract for kfac and thermo_kfac, and bad input.

Each transformed update is compared with the same transformation applied eagerly, outside the chain, to the
gradient as the earlier links leave it: both evaluate the same float64 operations, so they agree to the rounding
of a jit recompilation (``1e-12`` relative covers the few hundred operations of these tiny problems).
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import kfac_reference as ref
import kfac_thermo as kt
import thermox

LOSS = "softmax_cross_entropy"
RTOL = 1e-12
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


@pytest.mark.parametrize("name", list(FACTORIES))
def test_jitted_train_step_in_chain(problem, name):
    """clip -> weight decay -> K-FAC inside one jitted train step; three calls (a refresh step, a step without
    refresh, a refresh step) trace once; unknown extra arguments are ignored."""
    params, x, y, g = problem
    max_norm, weight_decay = 0.5 * float(np.linalg.norm(ref.flat(g))), 1e-2
    head = optax.chain(optax.clip_by_global_norm(max_norm), optax.add_decayed_weights(weight_decay))
    tx = optax.chain(head, make(name, x))
    traces = []

    @jax.jit
    def train_step(params, state, x, y):
        traces.append(1)
        grads = jax.grad(lambda p: ref.batch_loss(LOSS, ref.mlp_predict, p, x, y))(params)
        updates, state = tx.update(grads, state, params, batch=(x, y), unknown_argument=123)
        return optax.apply_updates(params, updates), state, updates

    reference = make(name, x)
    ref_state = reference.init(params)
    state = tx.init(params)
    for _ in range(3):
        grads = ref.grad(LOSS, ref.mlp_predict, params, x, y)
        head_updates, _ = head.update(grads, head.init(params), params)
        expected, ref_state = reference.update(head_updates, ref_state, params, batch=(x, y))
        params, state, updates = train_step(params, state, x, y)
        np.testing.assert_allclose(ref.flat(updates), ref.flat(expected), rtol=RTOL)
    assert len(traces) == 1


STATIC = ("predict_fn", "example_inputs", "curvature_period", "inverse_period")


@pytest.mark.parametrize("name", list(FACTORIES))
def test_inject_hyperparams(problem, name):
    """Learning rate, damping and ema_decay (and thermo_kfac's run time t) injected as traced values give the
    plain transform's update; changing the injected damping equals building the transform with the new value."""
    params, x, y, g = problem
    numeric = dict(learning_rate=0.3, damping=0.05, ema_decay=0.9) | ({"t": 1e4} if name == "thermo_kfac" else {})
    fixed = dict(predict_fn=ref.mlp_predict, loss=LOSS, example_inputs=x, curvature_period=2, inverse_period=2)
    injected = optax.inject_hyperparams(FACTORIES[name], static_args=STATIC)(**numeric, **fixed)
    plain = FACTORIES[name](**numeric, **fixed)
    state = injected.init(params)
    updates, state = ref.update(injected, g, state, params, (x, y))
    expected, _ = ref.update(plain, g, plain.init(params), params, (x, y))
    np.testing.assert_allclose(ref.flat(updates), ref.flat(expected), rtol=RTOL)
    state = injected.init(params)
    state.hyperparams["damping"] = jnp.asarray(0.2)
    updates, _ = ref.update(injected, g, state, params, (x, y))
    changed = FACTORIES[name](**(numeric | {"damping": 0.2}), **fixed)
    expected, _ = ref.update(changed, g, changed.init(params), params, (x, y))
    np.testing.assert_allclose(ref.flat(updates), ref.flat(expected), rtol=RTOL)


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
    assert float(state[0].model_calls) == 1 and float(expected_state[0].model_calls) == 3


# ------------------------------------------------------------------------------------------ bad input


@pytest.mark.parametrize("name", list(FACTORIES))
@pytest.mark.parametrize("setting", ["curvature_period", "inverse_period"])
@pytest.mark.parametrize("value", [0, -1])
def test_refresh_period_below_one(name, setting, value):
    with pytest.raises(ValueError, match=f"{setting} must be >= 1"):
        make(name, jnp.zeros((2, 5)), **{setting: value})


@pytest.mark.parametrize("name", list(FACTORIES))
@pytest.mark.parametrize("damping", [0.0, -1.0])
def test_nonpositive_damping(name, damping):
    with pytest.raises(ValueError, match="damping must be > 0"):
        make(name, jnp.zeros((2, 5)), damping=damping)


def test_injected_nonpositive_damping_fails_at_run_time(problem):
    params, x, y, g = problem
    tx = optax.inject_hyperparams(kt.kfac, static_args=STATIC)(
        learning_rate=0.1, predict_fn=ref.mlp_predict, loss=LOSS, damping=0.1, example_inputs=x)
    state = tx.init(params)
    state.hyperparams["damping"] = jnp.asarray(-1.0)
    with pytest.raises(Exception, match="damping must be > 0"):
        ref.update(tx, g, state, params, (x, y))


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


@pytest.mark.parametrize("name", list(FACTORIES))
def test_nonfinite_gradient_skip(problem, name):
    params, x, y, g = problem
    tx = make(name, x)
    state = tx.init(params)
    bad = jax.tree_util.tree_map(lambda l: l.at[(0,) * l.ndim].set(jnp.inf), g)
    updates, new = ref.update(tx, bad, state, params, (x, y))
    assert np.all(ref.flat(updates) == 0) and int(new[0].skipped) == 1 and int(new[0].curvature_updates) == 0


def test_nonfinite_statistics_raise(problem):
    params, x, y, g = problem
    tx = make("kfac", x, nonfinite="raise")
    with pytest.raises(Exception, match="non-finite gradient, statistics or direction"):
        jax.block_until_ready(jax.jit(lambda s, stats: tx.update(g, s, params, batch=(x, y), statistics=stats))(
            tx.init(params), nan_statistics(params, x, y)))
