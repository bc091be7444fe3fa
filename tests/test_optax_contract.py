"""The optax contract every optimizer of kfac_thermo passes: a new optimizer joins by one line in ``CASES``.

Each case is checked in a jitted train step inside a chain (with unknown extra arguments, no retrace on later
calls), as a branch of ``optax.multi_transform``, under ``kt.inject_hyperparams`` (a learning-rate schedule too),
in float32 and float64 with a state whose structure, shapes and dtypes do not change across steps and that carries
the step's work record, and against bad input (damping <= 0 at construction and injected, a missing batch, a
non-finite gradient).

References. The natural-gradient family (``reference="ngd"``) is compared with the dense float64 reference
``-lr (G + damping I)^-1 g'`` (``g'`` the gradient after the transforms before it): TNGD and TNGD-Adam run their
device for t = 1e4 tau, where ``e^{-damping t} = e^{-100}`` (damping >= 0.01) makes their mean the NGD direction to
float64 rounding; TNGD-Adam with its defaults ``b1 = b2 = 0`` then maps a direction ``d`` to ``d / (|d| + eps)``
(optax.scale_by_adam's first step). K-FAC (``reference="eager"``) is compared with the same transformation applied
outside the chain to the gradient as the earlier links leave it: both evaluate the same float64 operations, so
they agree to the rounding of a recompilation (``1e-12`` relative covers the few hundred operations here).
"""

from __future__ import annotations

import dataclasses
import inspect
from typing import Callable

import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import optax
import pytest

import kfac_reference as ref
import kfac_thermo as kt
import thermox

LOSS = "softmax_cross_entropy"
LR = 0.3
DAMPING = 0.05
ADAM_EPS = 1e-8
N_MLP = 39
EAGER_RTOL = 1e-12
# The arguments a schedule or state.hyperparams may set: every other argument is in kt.STATIC_ARGS.
INJECTABLE = {"learning_rate", "damping", "t", "delay", "momentum", "ema_decay", "b1", "b2", "eps", "interval"}


@dataclasses.dataclass(frozen=True)
class Case:
    """One optimizer under contract: its factory, its settings for these tests (``fixed``, from the batch inputs
    ``x``; ``numeric`` may be injected) and which reference checks its updates."""

    factory: Callable
    reference: str
    fixed: Callable[[jax.Array], dict] = lambda x: {}
    numeric: dict = dataclasses.field(default_factory=dict)


def kfac_fixed(x):
    return dict(example_inputs=x, curvature_period=2, inverse_period=2)


CASES = {
    "tngd": Case(kt.tngd, "ngd", numeric={"t": 1e4}),
    "tngd_adam": Case(kt.tngd_adam, "ngd_adam", numeric={"t": 1e4}),
    "ngd": Case(kt.ngd, "ngd"),
    # >= the number of distinct eigenvalues, with slack for rounding
    "ngd_cg": Case(kt.ngd_cg, "ngd", lambda x: {"iterations": 2 * N_MLP}),
    "ngd_woodbury": Case(kt.ngd_woodbury, "ngd"),
    "kfac": Case(kt.kfac, "eager", kfac_fixed, {"ema_decay": 0.9}),
    "thermo_kfac": Case(kt.thermo_kfac, "eager", kfac_fixed, {"ema_decay": 0.9, "t": 1e4}),
}
NAMES = list(CASES)


def make(name, x, learning_rate=LR, **kwargs):
    case = CASES[name]
    options = dict(predict_fn=ref.mlp_predict, loss=LOSS, damping=DAMPING, **case.fixed(x), **case.numeric)
    return case.factory(learning_rate, **(options | kwargs))


def transform_state(opt_state):
    """The one natural-gradient or K-FAC state inside a (chained, injected) optimizer state."""
    is_state = lambda s: isinstance(s, (kt.NaturalGradientState, kt.KFACState))
    found = [s for s in jax.tree_util.tree_leaves(opt_state, is_leaf=is_state) if is_state(s)]
    assert len(found) == 1, f"expected one transform state, found {len(found)}"
    return found[0]


def ngd_update(name, G, g, damping, lr):
    d = ref.ngd_direction(G, g, damping)
    if CASES[name].reference == "ngd_adam":
        d = d / (np.abs(d) + ADAM_EPS)
    return -lr * d


def check_update(name, update, expected_fn, G, g, damping, lr, label):
    """``update`` against the case's reference: the dense NGD solve (``G``, ``g``) to its rounding bound (tngd_adam's
    map d -> d / (|d| + eps) only shrinks relative errors: a relative error r of d_i becomes r eps / (|d_i| + eps)
    in the update), or ``expected_fn()`` (the transform outside the chain) to :data:`EAGER_RTOL`."""
    if CASES[name].reference == "eager":
        np.testing.assert_allclose(ref.flat(update), ref.flat(expected_fn()), rtol=EAGER_RTOL, err_msg=str(label))
    else:
        assert ref.rel_err(update, ngd_update(name, G, g, damping, lr)) <= ref.solve_rtol(ref.damped(G, damping)), label


def counted_train_step(tx, x, y):
    """A jitted train step ``(params, state) -> (params, state, loss, updates)`` on the batch ``(x, y)``, and the
    list its traces append to."""
    traces = []

    @jax.jit
    def train_step(params, opt_state):
        traces.append(1)
        value, grads = jax.value_and_grad(lambda p: ref.batch_loss(LOSS, ref.mlp_predict, p, x, y))(params)
        updates, opt_state = tx.update(grads, opt_state, params, batch=(x, y))
        return optax.apply_updates(params, updates), opt_state, value, updates

    return train_step, traces


def check_work(opt_state):
    """The state carries one work record, float32, with the curvature's model passes in it."""
    (work,) = kt.work_records(opt_state)
    assert all(leaf.dtype == jnp.float32 for leaf in jax.tree_util.tree_leaves(work))
    assert float(work.forward_passes + work.reverse_passes) >= 1 and float(work.examples) == 8


@pytest.mark.parametrize("name", NAMES)
def test_jitted_train_step_in_chain(x64, name):
    """clip_by_global_norm -> add_decayed_weights -> optimizer, inside one jitted train step (loss, grad, update,
    apply_updates); unknown extra arguments are ignored; the second and third calls (K-FAC: a refresh step, a step
    without refresh, a refresh step) do not retrace."""
    params, x, y = ref.problem(LOSS)
    g0 = ref.flat(ref.grad(LOSS, ref.mlp_predict, params, x, y))
    max_norm, weight_decay = 0.5 * np.linalg.norm(g0), 1e-2  # the clip is active
    head = optax.chain(optax.clip_by_global_norm(max_norm), optax.add_decayed_weights(weight_decay))
    tx = optax.chain(head, make(name, x))
    traces = []

    @jax.jit
    def train_step(params, opt_state, x, y):
        traces.append(1)
        value, grads = jax.value_and_grad(lambda p: ref.batch_loss(LOSS, ref.mlp_predict, p, x, y))(params)
        updates, opt_state = tx.update(grads, opt_state, params, batch=(x, y), value=value,
                                       some_unknown_argument=jnp.ones(3))
        return optax.apply_updates(params, updates), opt_state, updates

    reference = make(name, x)
    ref_state = reference.init(params)
    opt_state = tx.init(params)
    for step in range(3):
        G = ref.ggn(LOSS, ref.mlp_predict, params, x, y)
        grads = ref.grad(LOSS, ref.mlp_predict, params, x, y)
        g = ref.flat(grads)
        g_clipped = g * min(1.0, max_norm / np.linalg.norm(g))
        head_updates, _ = head.update(grads, head.init(params), params)
        expected, ref_state = ref.update(reference, head_updates, ref_state, params, (x, y))
        new_params, opt_state, updates = train_step(params, opt_state, x, y)
        # tngd and ngd_cg warm-start from the last solution; after 1e4 tau / 2N CG steps it is forgotten.
        check_update(name, ref.flat(updates), lambda: expected, G, g_clipped + weight_decay * ref.flat(params),
                     DAMPING, LR, step)
        params = new_params
    assert len(traces) == 1, "the train step was traced more than once"
    state = transform_state(opt_state)
    assert int(state.count) == 3 and int(state.skipped) == 0
    check_work(opt_state)  # test_work.py checks the counts


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.filterwarnings("error")  # e.g. equinox's "A JAX array is being set as static!"
def test_inject_hyperparams(x64, name):
    """Learning rate and damping (and the case's numeric settings: ema_decay, thermo_kfac's t) injected as traced
    values by ``kt.inject_hyperparams``, which needs no static_args: one trace for both settings; each update is
    the reference's for its values (K-FAC: the transform built with them); changing the injected damping changes
    the update."""
    case = CASES[name]
    params, x, y = ref.problem(LOSS)
    G = ref.ggn(LOSS, ref.mlp_predict, params, x, y)
    g_tree = ref.grad(LOSS, ref.mlp_predict, params, x, y)
    g = ref.flat(g_tree)
    fixed = dict(predict_fn=ref.mlp_predict, loss=LOSS, **case.fixed(x))
    tx = kt.inject_hyperparams(case.factory)(learning_rate=LR, damping=DAMPING, **fixed, **case.numeric)
    traces = []

    @jax.jit
    def first_update(opt_state):
        traces.append(1)
        return tx.update(g_tree, opt_state, params, batch=(x, y))[0]

    opt_state = tx.init(params)
    assert set(opt_state.hyperparams) >= {"learning_rate", "damping"} | set(case.numeric)
    updates = [ref.flat(first_update(opt_state))]
    # Same dtype and weak type as inject_hyperparams' own entries, as a schedule or a user would set them.
    opt_state.hyperparams["learning_rate"] = jnp.asarray(0.5 * LR, jnp.float64)
    opt_state.hyperparams["damping"] = jnp.asarray(1.0, jnp.float64)
    updates.append(ref.flat(first_update(opt_state)))
    for (lr, damping), u in zip([(LR, DAMPING), (0.5 * LR, 1.0)], updates):
        plain = case.factory(lr, damping=damping, **fixed, **case.numeric)
        expected = lambda: ref.update(plain, g_tree, plain.init(params), params, (x, y))[0]
        check_update(name, u, expected, G, g, damping, lr, (lr, damping))
    assert len(traces) == 1
    if case.reference != "ngd_adam":  # d / (|d| + eps) is nearly sign(d): damping barely moves it
        assert ref.rel_err(updates[1], 0.5 * updates[0]) > 0.1


@pytest.mark.parametrize("name", NAMES)
def test_learning_rate_schedule(x64, name):
    """A schedule on the learning rate through ``kt.inject_hyperparams`` (no static_args): each step's update is
    the plain optimizer's with that step's rate as a constant, from the same state; the injected values are the
    optimizer's numeric arguments only."""
    case = CASES[name]
    params, x, y = ref.problem(LOSS)
    schedule = optax.exponential_decay(LR, transition_steps=1, decay_rate=0.5)
    options = dict(predict_fn=ref.mlp_predict, loss=LOSS, damping=DAMPING, **case.fixed(x), **case.numeric)
    tx = kt.inject_hyperparams(case.factory)(learning_rate=schedule, **options)
    step = ref.quick_jit(lambda p, s: tx.update(ref.grad(LOSS, ref.mlp_predict, p, x, y), s, p, batch=(x, y)))
    state = tx.init(params)
    assert {"learning_rate", "damping"} <= set(state.hyperparams) <= INJECTABLE
    for k in range(2):
        # optax counts steps in int32, so this schedule's value is a float32 (0.3 to 4e-8): the rate at step k.
        plain = case.factory(float(schedule(jnp.asarray(k, jnp.int32))), **options)
        grads = ref.grad(LOSS, ref.mlp_predict, params, x, y)
        expected = ref.update(plain, grads, state.inner_state, params, (x, y))[0]
        updates, state = step(params, state)
        assert ref.rel_err(ref.flat(updates), ref.flat(expected)) <= EAGER_RTOL, k  # as a vector: rounding
        params = optax.apply_updates(params, updates)


def test_static_args_cover_every_non_numeric_argument():
    """Every argument of every optimizer factory is either static (kt.STATIC_ARGS) or a number that may be
    injected: a new argument has to be put in one of the two."""
    for factory in [case.factory for case in CASES.values()] + [kt.scale_by_kfac, kt.scale_by_natural_gradient]:
        names = set(inspect.signature(factory).parameters)
        assert names <= kt.STATIC_ARGS | INJECTABLE, (factory.__name__, names - kt.STATIC_ARGS - INJECTABLE)


@pytest.mark.parametrize("name", NAMES)
def test_as_a_multi_transform_branch(x64, name):
    """A branch of ``optax.multi_transform`` with labels a prefix of the params (the first layer's dict to the
    optimizer, the second's to Adam: one ``MaskedNode`` hides the whole second layer), given the whole model as
    ``model_params`` (K-FAC also ``example_params``): the branch's update is the optimizer's on the first layer
    alone, of the model closing over the second as constants (K-FAC: that transform run eagerly; the
    natural-gradient family: the dense solve over the first layer's parameters); the second layer gets Adam's."""
    params, x, y = ref.problem(LOSS)
    branch = make(name, x, **({"example_params": params} if CASES[name].reference == "eager" else {}))
    tx = optax.multi_transform({"adam": optax.adam(LR), name: branch}, [name, "adam"])
    grads = ref.grad(LOSS, ref.mlp_predict, params, x, y)
    step = ref.quick_jit(lambda g, s, p: tx.update(g, s, p, batch=(x, y), model_params=p)[0])
    updates = step(grads, tx.init(params), params)
    closed = lambda first, inputs: ref.mlp_predict([first, params[1]], inputs)
    reference = make(name, x, predict_fn=closed)
    G = ref.ggn(LOSS, closed, params[0], x, y)
    expected = lambda: ref.update(reference, grads[0], reference.init(params[0]), params[0], (x, y))[0]
    check_update(name, ref.flat(updates[0]), expected, G, ref.flat(grads[0]), DAMPING, LR, "first layer")
    adam = optax.adam(LR)
    np.testing.assert_allclose(ref.flat(updates[1]), ref.flat(adam.update(grads[1], adam.init(params[1]))[0]),
                               rtol=EAGER_RTOL)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_dtype_and_state_structure_are_kept(name, dtype):
    """JAX's default float32 (no x64) and float64: a few jitted steps trace once; params, updates and every state
    leaf keep their dtype (no float64 creeps into a float32 run, which would also retrace); the state's structure
    and shapes after the steps are those of ``init`` (a refresh step and a step without one alike); updates are
    finite and the state holds the step's work record."""
    with jax.enable_x64(dtype == "float64"):
        params, x, y = ref.problem(LOSS)  # created as float32 / int32 without x64
        assert ref.flat(params).dtype == np.dtype(dtype) and x.dtype == np.dtype(dtype)
        tx = make(name, x)
        train_step, traces = counted_train_step(tx, x, y)
        opt_state = tx.init(params)
        signature = lambda tree: jax.tree_util.tree_map(lambda a: (jnp.shape(a), jnp.result_type(a)), tree)
        structure, before = jax.tree_util.tree_structure(opt_state), signature(opt_state)
        for _ in range(3):
            params, opt_state, _, updates = train_step(params, opt_state)
            assert np.all(np.isfinite(ref.flat(updates))) and ref.flat(updates).dtype == np.dtype(dtype)
        assert len(traces) == 1
        assert jax.tree_util.tree_structure(opt_state) == structure and signature(opt_state) == before
        assert all(leaf.dtype == np.dtype(dtype) for leaf in jax.tree_util.tree_leaves(params))
        assert int(transform_state(opt_state).skipped) == 0
        check_work(opt_state)


# ------------------------------------------------------------------------------------------ bad input


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("damping", [0.0, -1.0])
def test_nonpositive_damping(name, damping):
    with pytest.raises(ValueError, match="damping must be > 0"):
        make(name, jnp.zeros((2, 5)), damping=damping)


@pytest.mark.parametrize("name", NAMES)
def test_injected_nonpositive_damping_fails_at_run_time(x64, name):
    """An injected damping is traced: a non-positive value fails at run time instead of at construction."""
    case = CASES[name]
    params, x, y = ref.problem(LOSS)
    g_tree = ref.grad(LOSS, ref.mlp_predict, params, x, y)
    tx = kt.inject_hyperparams(case.factory)(
        learning_rate=LR, predict_fn=ref.mlp_predict, loss=LOSS, damping=DAMPING, **case.fixed(x), **case.numeric)
    opt_state = tx.init(params)
    opt_state.hyperparams["damping"] = jnp.asarray(0.0, jnp.float64)
    with pytest.raises(Exception, match="damping must be > 0"):
        jax.block_until_ready(ref.update(tx, g_tree, opt_state, params, (x, y))[0])


@pytest.mark.parametrize("name", NAMES)
def test_missing_batch_names_it(x64, name):
    params, x, y = ref.problem(LOSS)
    tx = make(name, x)
    with pytest.raises(ValueError, match="needs the keyword argument batch"):
        tx.update(ref.grad(LOSS, ref.mlp_predict, params, x, y), tx.init(params), params)


def poisoned(g):
    leaves, treedef = jax.tree_util.tree_flatten(g)
    leaves[0] = leaves[0].at[(0,) * leaves[0].ndim].set(jnp.nan)
    return jax.tree_util.tree_unflatten(treedef, leaves)


@pytest.mark.parametrize("name", NAMES)
def test_nonfinite_gradient_is_skipped(x64, name):
    """Default policy: the step is a no-op (params unchanged), counted in the transform's state inside the chain;
    K-FAC takes no curvature from it. The natural-gradient family's next finite step is exactly the one a fresh
    optimizer would take (K-FAC's next step has no refresh: its period counts the skipped step)."""
    params, x, y = ref.problem(LOSS)
    g = ref.grad(LOSS, ref.mlp_predict, params, x, y)
    tx = optax.chain(optax.clip_by_global_norm(1e3), make(name, x, t=0.5) if "tngd" in name else make(name, x))

    @ref.quick_jit
    def step(grads, opt_state, params):
        updates, opt_state = tx.update(grads, opt_state, params, batch=(x, y))
        return optax.apply_updates(params, updates), opt_state

    opt_state = tx.init(params)
    new_params, opt_state = step(poisoned(g), opt_state, params)
    np.testing.assert_array_equal(ref.flat(new_params), ref.flat(params))
    state = transform_state(opt_state)
    assert int(state.skipped) == 1
    if isinstance(state, kt.KFACState):
        assert int(state.curvature_updates) == 0
        return
    after_skip, _ = step(g, opt_state, params)
    fresh, _ = step(g, tx.init(params), params)
    np.testing.assert_allclose(ref.flat(after_skip), ref.flat(fresh), rtol=0,
                               atol=100 * ref.EPS64 * np.abs(ref.flat(fresh)).max())
    assert np.all(np.isfinite(ref.flat(after_skip)))


# ------------------------------------------------------------------------- the natural-gradient family


@pytest.mark.filterwarnings("ignore:A JAX array is being set as static")  # equinox's, before our error
def test_inject_hyperparams_cg_iterations_must_be_static(x64):
    """CG's iteration count is a loop length: injected as an array it is refused with a message that says so."""
    params, _, _ = ref.problem(LOSS)
    tx = optax.inject_hyperparams(kt.ngd_cg, static_args=("predict_fn", "loss"))(
        learning_rate=LR, predict_fn=ref.mlp_predict, loss=LOSS, iterations=5)
    with pytest.raises(ValueError, match="iterations"):
        tx.init(params)


def test_float32_train_step_on_a_realistic_device():
    """JAX's default float32 (no x64 here): a noisy chip with 12-bit converters; dtypes are kept (no float64
    creeps into params or state, which would also retrace), one trace for several steps, the loss decreases."""
    params, x, y = ref.problem(LOSS)  # created without x64: float32 / int32
    assert ref.flat(params).dtype == np.float32 and x.dtype == jnp.float32
    device = thermox.AnalogDevice(kappa0=1e-3, dac_bits=12, adc_bits=12)
    tx = optax.chain(optax.clip_by_global_norm(1.0),
                     kt.tngd(0.1, predict_fn=ref.mlp_predict, loss=LOSS, device=device, key=jr.key(0)))
    train_step, traces = counted_train_step(tx, x, y)
    opt_state, losses = tx.init(params), []
    dtypes = jax.tree_util.tree_map(lambda a: a.dtype, opt_state)
    for _ in range(5):
        params, opt_state, value, _ = train_step(params, opt_state)
        losses.append(float(value))
    assert len(traces) == 1
    assert jax.tree_util.tree_map(lambda a: a.dtype, opt_state) == dtypes
    assert all(leaf.dtype == jnp.float32 for leaf in jax.tree_util.tree_leaves(params))
    assert np.all(np.diff(losses) < 0) and int(ref.natural_gradient_state(opt_state).skipped) == 0


# ----------------------------------------------------------------- skipped steps, keys and parameter dtypes


def with_momentum(name, x, **kwargs):
    """The case with state in the transformations chained after it: heavy-ball momentum 0.9 (TNGD-Adam: Adam's
    moments with b1 = 0.9, b2 = 0.999)."""
    if name == "tngd_adam":
        return make(name, x, b1=0.9, b2=0.999, **kwargs)
    return make(name, x, momentum=0.9, **kwargs)


@pytest.mark.parametrize("poison", ["gradient", "curvature batch"])
@pytest.mark.parametrize("name", NAMES)
def test_skip_reaches_the_chained_transformations(x64, name, poison):
    """A non-finite gradient, or a NaN in the batch the curvature is computed from (the gradient finite: e.g. a
    stale CG direction must not be re-applied), after two finite steps: the update is exactly zero, every state
    after the transform (momentum trace, Adam's moments and count) is unchanged, the transform counts the skip.
    Without the skip reaching them, momentum 0.9 alone would move the parameters by 0.9 lr |m|."""
    params, x, y = ref.problem(LOSS)
    g = ref.grad(LOSS, ref.mlp_predict, params, x, y)
    tx = with_momentum(name, x, t=0.5) if "tngd" in name else with_momentum(name, x)
    step = ref.quick_jit(lambda grads, state, batch: tx.update(grads, state, params, batch=batch))
    state = tx.init(params)
    for _ in range(2):
        updates, state = step(g, state, (x, y))
    assert np.any(ref.flat(updates) != 0)
    bad_g, bad_x = (poisoned(g), x) if poison == "gradient" else (g, x.at[3, 1].set(jnp.nan))
    updates, new_state = step(bad_g, state, (bad_x, y))
    np.testing.assert_array_equal(ref.flat(updates), np.zeros(N_MLP))
    old, new = transform_state(state), transform_state(new_state)
    assert int(new.skipped) == int(old.skipped) + 1 and int(new.count) == int(old.count) + 1
    others = lambda s: [leaf for node in s[1:] for leaf in jax.tree_util.tree_leaves(node)]
    assert len(others(state)) >= 1
    for a, b in zip(others(new_state), others(state)):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("name", NAMES)
def test_caller_key_survives_a_donated_step(name):
    """The state holds a copy of the caller's key: after a train step jitted with ``donate_argnums`` (as the README
    recommends) the key the optimizer was built with is still usable."""
    params, x, y = ref.problem(LOSS)
    key = jr.key(5)
    tx = make(name, x, key=key)

    def train_step(params, state):
        grads = jax.grad(lambda p: ref.batch_loss(LOSS, ref.mlp_predict, p, x, y))(params)
        updates, state = tx.update(grads, state, params, batch=(x, y))
        return optax.apply_updates(params, updates), state

    params, state = jax.jit(train_step, donate_argnums=(0, 1))(params, tx.init(params))
    assert np.isfinite(float(jr.normal(key, ())))


@pytest.mark.parametrize("name", NAMES)
def test_deterministic_configuration_holds_no_key(name):
    """No hidden seed: without a stochastic part (no device noise, the exact GGN) the state holds no key at all."""
    params, x, _ = ref.problem(LOSS)
    assert transform_state(make(name, x).init(params)).key is None


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("bad", ["float16", "bfloat16", "int32 leaf", "empty batch"])
def test_parameters_and_batch_are_checked(name, bad):
    """Half-precision params, an integer leaf and an empty batch are ValueErrors that name the problem."""
    params, x, y = ref.problem(LOSS)
    g = ref.grad(LOSS, ref.mlp_predict, params, x, y)
    tx = make(name, x)
    if bad == "empty batch":
        with pytest.raises(ValueError, match="the batch is empty"):
            tx.update(g, tx.init(params), params, batch=(x[:0], y[:0]))
        return
    if bad == "int32 leaf":
        params = [params[0], {**params[1], "b": jnp.zeros(3, jnp.int32)}]
        match = r"params leaf \[1\]\['b'\] has dtype int32; the optimizers need floating-point parameters"
    else:
        params = jax.tree_util.tree_map(lambda leaf: leaf.astype(bad), params)
        match = f"has dtype {bad}; curvature solves need float32 or float64"
    with pytest.raises(ValueError, match=match):
        tx.init(params)
