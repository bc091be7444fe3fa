"""The natural-gradient optimizers: bad input fails loudly and names the culprit; non-finite gradients follow
the ``nonfinite`` policy (what every optimizer shares: test_optax_contract.py)."""

import warnings

import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest

import kfac_thermo as kt
import thermox
import kfac_reference as ref

LOSS = "softmax_cross_entropy"
NAMES = ["tngd", "tngd_adam", "ngd", "ngd_cg", "ngd_woodbury"]


def make(name, loss=LOSS, **kwargs):
    return getattr(kt, name)(0.1, predict_fn=ref.mlp_predict, loss=loss, **kwargs)


@pytest.fixture
def problem(x64):
    params, x, y = ref.problem(LOSS)
    return params, x, y, ref.grad(LOSS, ref.mlp_predict, params, x, y)


# ------------------------------------------------------------------------------------ construction time


@pytest.mark.parametrize("name", NAMES)
def test_unknown_loss(name):
    with pytest.raises(ValueError, match="unknown loss 'hinge'"):
        make(name, loss="hinge")


@pytest.mark.parametrize("name", NAMES)
def test_unknown_curvature(name):
    with pytest.raises(ValueError, match="unknown curvature 'fisher'"):
        make(name, curvature="fisher")


@pytest.mark.parametrize("name", ["tngd", "tngd_adam"])
def test_noisy_device_needs_key(name):
    with pytest.raises(ValueError, match="key"):
        make(name, device=thermox.AnalogDevice(kappa0=1e-3))
    make(name, device=thermox.AnalogDevice(kappa0=1e-3), key=jr.key(0))  # with a key it is fine


@pytest.mark.parametrize("curvature", ["mc_fisher", "ggn_curvature_prop"])
def test_sampled_curvature_needs_key(curvature):
    with pytest.raises(ValueError, match=f"curvature='{curvature}' samples its estimate: it needs key="):
        make("ngd", curvature=curvature)


def test_unknown_nonfinite_policy():
    with pytest.raises(ValueError, match="nonfinite"):
        make("ngd", nonfinite="ignore")


# ----------------------------------------------------------------------------------------- update time


def test_missing_params(problem):
    params, x, y, g = problem
    tx = make("ngd")
    with pytest.raises(ValueError, match="params"):
        tx.update(g, tx.init(params), None, batch=(x, y))


@pytest.mark.parametrize(
    "bad",
    ["not a pair", "inputs features", "inputs batch", "label shape", "float labels", "mse targets", "1-d outputs"],
)
def test_batch_not_matching_predict_fn(problem, bad):
    params, x, y, g = problem
    loss, predict = LOSS, ref.mlp_predict
    batch = (x, y)
    if bad == "not a pair":
        batch = (x, y, y)
    elif bad == "inputs features":  # predict_fn cannot apply the first layer
        batch = (jnp.ones((8, 6)), y)
    elif bad == "inputs batch":
        batch = (x[:7], y)
    elif bad == "label shape":  # probabilities over 4 classes for a 3-class model
        batch = (x, jnp.full((8, 4), 0.25))
    elif bad == "float labels":  # class indices must be integers (else they would be read as probabilities)
        batch = (x, y.astype(jnp.float64))
    elif bad == "mse targets":
        loss, batch = "mse", (x, jnp.ones((8, 2)))
    elif bad == "1-d outputs":
        predict = lambda p, inputs: ref.mlp_predict(p, inputs)[:, 0]
    tx = kt.ngd(0.1, predict_fn=predict, loss=loss)
    with pytest.raises(ValueError):
        tx.update(g, tx.init(params), params, batch=batch)


def test_device_capacity_is_enforced(problem):
    """A chip with fewer cells than parameters refuses the problem instead of simulating an impossible one."""
    params, x, y, g = problem
    tx = make("tngd", device=thermox.AnalogDevice(capacity=10))
    with pytest.raises(ValueError, match="capacity"):
        tx.update(g, tx.init(params), params, batch=(x, y))


# ------------------------------------------------------------------------------------ non-finite values


def poisoned(g):
    leaves, treedef = jax.tree_util.tree_flatten(g)
    leaves[0] = leaves[0].at[0].set(jnp.nan)
    return jax.tree_util.tree_unflatten(treedef, leaves)


@pytest.mark.parametrize("name", ["tngd"])  # one policy check after every solver: the device path suffices
def test_nonfinite_gradient_raises_on_request(problem, name):
    params, x, y, g = problem
    tx = make(name, nonfinite="raise")
    update = ref.quick_jit(lambda grads, s: tx.update(grads, s, params, batch=(x, y))[0])
    jax.block_until_ready(update(g, tx.init(params)))  # finite: fine
    with pytest.raises(Exception, match="non-finite"):
        jax.block_until_ready(update(poisoned(g), tx.init(params)))


def test_cg_does_not_reapply_its_last_direction_on_a_nan_curvature(problem):
    """ngd_cg warm-starts from its last solution: a step whose curvature batch has a NaN (the gradient finite) must
    not return that solution again as if solved. The step is skipped (zero update, counted) and the warm start
    kept for the next finite step, which equals the step the optimizer would have taken without the bad batch."""
    params, x, y, g = problem
    tx = make("ngd_cg", iterations=5)
    step = ref.quick_jit(lambda grads, state, batch: tx.update(grads, state, params, batch=batch))
    first, state = step(g, tx.init(params), (x, y))
    assert np.any(ref.flat(first) != 0)
    updates, skipped_state = step(g, state, (x.at[0, 0].set(jnp.nan), y))
    np.testing.assert_array_equal(ref.flat(updates), np.zeros_like(ref.flat(first)))
    assert int(ref.natural_gradient_state(skipped_state).skipped) == 1
    np.testing.assert_array_equal(ref.natural_gradient_state(skipped_state).solver_state,
                                  ref.natural_gradient_state(state).solver_state)
    after, _ = step(g, skipped_state, (x, y))
    expected, _ = step(g, state, (x, y))
    np.testing.assert_array_equal(ref.flat(after), ref.flat(expected))


@pytest.mark.parametrize("name", ["tngd", "ngd_woodbury"])
def test_float32_conditioning_warning(name):
    """float32 at damping 1e-8 (and t = 1e10 tau for TNGD: relaxed): cond(G + damping I) ~ |G| / 1e-8 ~ 1e7-1e8,
    so cond * eps32 >> 1 and the direction is untrustworthy (the issue measured 6.5x and 1.83x off): warned.
    The same problem in float64 (cond * eps64 ~ 1e-8; not checked there) and float32 at damping 0.05 (~1e-5) are
    not."""
    settings = {"t": 1e10} if name == "tngd" else {}

    def first_step(damping, x64):
        with jax.enable_x64(x64):
            params, x, y = ref.problem(LOSS)
            g = ref.grad(LOSS, ref.mlp_predict, params, x, y)
            tx = make(name, damping=damping, **settings)
            jax.block_until_ready(tx.update(g, tx.init(params), params, batch=(x, y)))
            jax.effects_barrier()  # the warning comes from a host callback

    with pytest.warns(kt.ConditioningWarning, match="condition number is about"):
        first_step(1e-8, x64=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error", kt.ConditioningWarning)
        first_step(1e-8, x64=True)
        first_step(0.05, x64=False)
