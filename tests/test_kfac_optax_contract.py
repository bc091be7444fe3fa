"""The optax contract, for every transform: chains, jit of a whole train step without recompiling, unknown
extra arguments, ``optax.inject_hyperparams`` (learning rate and damping), each checked against the dense
float64 reference ``-lr (G + damping I)^-1 g'`` (``g'`` the gradient after the transforms before it).

TNGD and TNGD-Adam run their device for t = 1e4 tau here: ``e^{-damping t} = e^{-100}`` (damping >= 0.01)
makes their mean the NGD direction to float64 rounding, so one reference serves all five. TNGD-Adam with its
defaults ``b1 = b2 = 0`` then maps a direction ``d`` to ``d / (|d| + eps)`` (optax.scale_by_adam's first step).
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
DAMPING = 0.05
ADAM_EPS = 1e-8
N_MLP = 39

FACTORIES = {
    "tngd": kt.tngd,
    "tngd_adam": kt.tngd_adam,
    "ngd": kt.ngd,
    "ngd_cg": kt.ngd_cg,
    "ngd_woodbury": kt.ngd_woodbury,
}
# Non-numeric arguments, and integers that fix loop lengths: static under inject_hyperparams (the README's
# static_args=("predict_fn", "loss"), plus CG's iteration count).
STATIC = {
    "tngd": ("predict_fn", "loss"),
    "tngd_adam": ("predict_fn", "loss"),
    "ngd": ("predict_fn", "loss"),
    "ngd_cg": ("predict_fn", "loss", "iterations"),
    "ngd_woodbury": ("predict_fn", "loss"),
}


def options(name):
    """Per-transform settings that make the dense NGD solve the reference (see the module docstring)."""
    if name in ("tngd", "tngd_adam"):
        return {"t": 1e4}
    if name == "ngd_cg":
        return {"iterations": 2 * N_MLP}  # >= the number of distinct eigenvalues, with slack for rounding
    return {}


def expected_update(name, G, g, damping, lr):
    d = ref.ngd_direction(G, g, damping)
    if name == "tngd_adam":
        d = d / (np.abs(d) + ADAM_EPS)
    return -lr * d


def rtol(name, G, damping):
    """The solve's rounding bound. tngd_adam's map d -> d / (|d| + eps) only shrinks relative errors: a
    relative error r of d_i becomes r eps / (|d_i| + eps) in the update."""
    return ref.solve_rtol(ref.damped(G, damping))


@pytest.mark.parametrize("name", list(FACTORIES))
def test_jitted_train_step_in_chain(x64, name):
    """clip_by_global_norm -> add_decayed_weights -> transform, inside one jitted train step (loss, grad,
    update, apply_updates); unknown extra arguments are ignored; the second and third calls do not retrace."""
    params, x, y = ref.problem(LOSS)
    g0 = ref.flat(ref.grad(LOSS, ref.mlp_predict, params, x, y))
    max_norm, weight_decay = 0.5 * np.linalg.norm(g0), 1e-2  # the clip is active
    tx = optax.chain(
        optax.clip_by_global_norm(max_norm),
        optax.add_decayed_weights(weight_decay),
        FACTORIES[name](LR, predict_fn=ref.mlp_predict, loss=LOSS, damping=DAMPING, **options(name)),
    )
    traces = []

    @jax.jit
    def train_step(params, opt_state, x, y):
        traces.append(1)
        value, grads = jax.value_and_grad(lambda p: ref.batch_loss(LOSS, ref.mlp_predict, p, x, y))(params)
        updates, opt_state = tx.update(grads, opt_state, params, batch=(x, y), value=value,
                                       some_unknown_argument=jnp.ones(3))
        return optax.apply_updates(params, updates), opt_state, value

    opt_state = tx.init(params)
    for step in range(3):
        G = ref.ggn(LOSS, ref.mlp_predict, params, x, y)
        g = ref.flat(ref.grad(LOSS, ref.mlp_predict, params, x, y))
        g_clipped = g * min(1.0, max_norm / np.linalg.norm(g))
        expected = expected_update(name, G, g_clipped + weight_decay * ref.flat(params), DAMPING, LR)
        new_params, opt_state, _ = train_step(params, opt_state, x, y)
        moved = ref.flat(new_params) - ref.flat(params)
        # tngd and ngd_cg warm-start from the last solution; after 1e4 tau / 2N CG steps it is forgotten.
        assert ref.rel_err(moved, expected) <= rtol(name, G, DAMPING), step
        params = new_params
    assert len(traces) == 1, "the train step was traced more than once"
    state = ref.natural_gradient_state(opt_state)
    assert int(state.count) == 3 and int(state.skipped) == 0
    # Every transform reports its modeled cost (test_kfac_modeled_cost.py checks the values).
    assert float(state.modeled_time_s) > 0 and float(state.model_calls) >= 2


@pytest.mark.parametrize("name", list(FACTORIES))
@pytest.mark.filterwarnings("error")  # e.g. equinox's "A JAX array is being set as static!"
def test_inject_hyperparams_learning_rate_and_damping(x64, name):
    params, x, y = ref.problem(LOSS)
    G = ref.ggn(LOSS, ref.mlp_predict, params, x, y)
    g_tree = ref.grad(LOSS, ref.mlp_predict, params, x, y)
    g = ref.flat(g_tree)
    tx = optax.inject_hyperparams(FACTORIES[name], static_args=STATIC[name])(
        learning_rate=LR, predict_fn=ref.mlp_predict, loss=LOSS, damping=DAMPING, **options(name))
    traces = []

    @jax.jit
    def first_update(opt_state):
        traces.append(1)
        return tx.update(g_tree, opt_state, params, batch=(x, y))[0]

    opt_state = tx.init(params)
    assert set(opt_state.hyperparams) >= {"learning_rate", "damping"}
    updates = [ref.flat(first_update(opt_state))]
    # Same dtype and weak type as inject_hyperparams' own entries, as a schedule or a user would set them.
    opt_state.hyperparams["learning_rate"] = jnp.asarray(0.5 * LR, jnp.float64)
    opt_state.hyperparams["damping"] = jnp.asarray(1.0, jnp.float64)
    updates.append(ref.flat(first_update(opt_state)))
    for (lr, damping), u in zip([(LR, DAMPING), (0.5 * LR, 1.0)], updates):
        assert ref.rel_err(u, expected_update(name, G, g, damping, lr)) <= rtol(name, G, damping), (lr, damping)
    assert len(traces) == 1
    if name != "tngd_adam":  # d / (|d| + eps) is nearly sign(d): damping barely moves it
        assert ref.rel_err(updates[1], 0.5 * updates[0]) > 0.1


@pytest.mark.filterwarnings("ignore:A JAX array is being set as static")  # equinox's, before our error
def test_inject_hyperparams_cg_iterations_must_be_static(x64):
    """CG's iteration count is a loop length: injected as an array it is refused with a message that says so."""
    params, _, _ = ref.problem(LOSS)
    tx = optax.inject_hyperparams(kt.ngd_cg, static_args=("predict_fn", "loss"))(
        learning_rate=LR, predict_fn=ref.mlp_predict, loss=LOSS, iterations=5)
    with pytest.raises(ValueError, match="iterations"):
        tx.init(params)


def test_inject_hyperparams_traced_damping_is_checked(x64):
    """An injected damping is traced: a non-positive value fails at run time instead of at construction."""
    params, x, y = ref.problem(LOSS)
    g_tree = ref.grad(LOSS, ref.mlp_predict, params, x, y)
    tx = optax.inject_hyperparams(kt.ngd, static_args=STATIC["ngd"])(
        learning_rate=LR, predict_fn=ref.mlp_predict, loss=LOSS, damping=DAMPING)
    opt_state = tx.init(params)
    opt_state.hyperparams["damping"] = jnp.asarray(0.0, jnp.float64)
    with pytest.raises(Exception, match="damping"):
        jax.block_until_ready(jax.jit(lambda s: tx.update(g_tree, s, params, batch=(x, y))[0])(opt_state))


def test_float32_train_step_on_a_realistic_device():
    """JAX's default float32 (no x64 here): a noisy chip with 12-bit converters; dtypes are kept (no float64
    creeps into params or state, which would also retrace), one trace for several steps, the loss decreases."""
    params, x, y = ref.problem(LOSS)  # created without x64: float32 / int32
    assert ref.flat(params).dtype == np.float32 and x.dtype == jnp.float32
    device = thermox.AnalogDevice(kappa0=1e-3, dac_bits=12, adc_bits=12)
    tx = optax.chain(optax.clip_by_global_norm(1.0),
                     kt.tngd(0.1, predict_fn=ref.mlp_predict, loss=LOSS, device=device, key=jr.key(0)))
    traces = []

    @jax.jit
    def train_step(params, opt_state):
        traces.append(1)
        value, grads = jax.value_and_grad(lambda p: ref.batch_loss(LOSS, ref.mlp_predict, p, x, y))(params)
        updates, opt_state = tx.update(grads, opt_state, params, batch=(x, y))
        return optax.apply_updates(params, updates), opt_state, value

    opt_state, losses = tx.init(params), []
    dtypes = jax.tree_util.tree_map(lambda a: a.dtype, opt_state)
    for _ in range(5):
        params, opt_state, value = train_step(params, opt_state)
        losses.append(float(value))
    assert len(traces) == 1
    assert jax.tree_util.tree_map(lambda a: a.dtype, opt_state) == dtypes
    assert all(leaf.dtype == jnp.float32 for leaf in jax.tree_util.tree_leaves(params))
    assert np.all(np.diff(losses) < 0) and int(ref.natural_gradient_state(opt_state).skipped) == 0
