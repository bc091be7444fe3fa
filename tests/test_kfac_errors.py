"""Bad input fails loudly and names the culprit; non-finite gradients follow the ``nonfinite`` policy."""

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
NAMES = ["tngd", "tngd_adam", "ngd", "ngd_cg", "ngd_woodbury"]


def make(name, loss=LOSS, **kwargs):
    return getattr(kt, name)(0.1, predict_fn=ref.mlp_predict, loss=loss, **kwargs)


@pytest.fixture
def problem(x64):
    params, x, y = ref.problem(LOSS)
    return params, x, y, ref.grad(LOSS, ref.mlp_predict, params, x, y)


# ------------------------------------------------------------------------------------ construction time


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("damping", [0.0, -1.0])
def test_nonpositive_damping(name, damping):
    with pytest.raises(ValueError, match="damping"):
        make(name, damping=damping)


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


@pytest.mark.parametrize("name", NAMES)
def test_missing_batch_names_it(problem, name):
    params, x, y, g = problem
    tx = make(name)
    with pytest.raises(ValueError, match="batch"):
        tx.update(g, tx.init(params), params)


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


@pytest.mark.parametrize("name", ["tngd", "ngd", "ngd_cg"])  # device state, stateless, CG warm start
def test_nonfinite_gradient_is_skipped(problem, name):
    """Default policy: the step is a no-op (params unchanged), counted in the NaturalGradientState inside the
    chain; the next finite step is exactly the one a fresh optimizer would take."""
    params, x, y, g = problem
    tx = optax.chain(optax.clip_by_global_norm(1e3), make(name, t=0.5) if "tngd" in name else make(name))

    @ref.quick_jit
    def step(grads, opt_state, params):
        updates, opt_state = tx.update(grads, opt_state, params, batch=(x, y))
        return optax.apply_updates(params, updates), opt_state

    opt_state = tx.init(params)
    new_params, opt_state = step(poisoned(g), opt_state, params)
    np.testing.assert_array_equal(ref.flat(new_params), ref.flat(params))
    state = ref.natural_gradient_state(opt_state)
    assert int(state.skipped) == 1
    after_skip, _ = step(g, opt_state, params)
    fresh, _ = step(g, tx.init(params), params)
    np.testing.assert_allclose(ref.flat(after_skip), ref.flat(fresh), rtol=0,
                               atol=100 * ref.EPS64 * np.abs(ref.flat(fresh)).max())
    assert np.all(np.isfinite(ref.flat(after_skip)))


@pytest.mark.parametrize("name", ["tngd"])  # one policy check after every solver: the device path suffices
def test_nonfinite_gradient_raises_on_request(problem, name):
    params, x, y, g = problem
    tx = make(name, nonfinite="raise")
    update = ref.quick_jit(lambda grads, s: tx.update(grads, s, params, batch=(x, y))[0])
    jax.block_until_ready(update(g, tx.init(params)))  # finite: fine
    with pytest.raises(Exception, match="non-finite"):
        jax.block_until_ready(update(poisoned(g), tx.init(params)))
