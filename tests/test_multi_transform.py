"""Training an equinox MLP with ``optax.multi_transform``: Adam on the head, K-FAC or TNGD on the rest
(``update(..., model_params=params)``; K-FAC also ``example_params=params``). Every optimizer's one-step check as a
branch is in test_optax_contract.py.

References, both independent of optax's masking: the branch's update equals the same optimizer run on the branch's
parameters alone, of a model that closes over the head's current values as constants (``eqx.combine`` with the
head, not a ``MaskedNode`` merge), and the head's update equals ``optax.adam`` run on the head alone. K-FAC compares
the same float64 operations compiled twice (``1e-12`` relative, as test_optax_contract's eager reference); TNGD is
compared with the dense float64 solve ``-lr (G_b + damping I)^-1 g_b`` over the branch's parameters (at t = 1e4
tau, where ``e^{-damping t} = e^{-500}``: its mean is NGD's), to the backward-stable solve's bound.
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import optax
import pytest

import kfac_reference as ref
import kfac_thermo as kt

LOSS = "softmax_cross_entropy"
LR, ADAM_LR, DAMPING = 0.3, 0.05, 0.05
RTOL_SAME_OPS = 1e-12
STEPS = 3
FACTORIES = {
    "kfac": lambda predict_fn, x, params: kt.kfac(LR, predict_fn=predict_fn, loss=LOSS, damping=DAMPING,
                                                   example_inputs=x, example_params=params),
    "tngd": lambda predict_fn, x, params: kt.tngd(LR, predict_fn=predict_fn, loss=LOSS, damping=DAMPING, t=1e4),
}


def mlp_problem():
    """An equinox MLP 5-4-4-3 (tanh, float64 weights from ref.mlp_init) split into its parameters and the rest,
    the head's mask, and a batch."""
    _, x, y = ref.problem(LOSS)
    shapes = eqx.filter_eval_shape(eqx.nn.MLP, 5, 3, 4, 2, activation=jnp.tanh, key=jr.key(0))
    layers = ref.mlp_init(0, (5, 4, 4, 3))
    model = eqx.tree_at(lambda m: [leaf for l in m.layers for leaf in (l.weight, l.bias)], shapes,
                        [leaf for layer in layers for leaf in (layer["w"].T, layer["b"])])
    params, static = eqx.partition(model, eqx.is_inexact_array)
    head = jax.tree_util.tree_map(lambda _: False, params)
    head = eqx.tree_at(lambda m: (m.layers[-1].weight, m.layers[-1].bias), head, replace=(True, True))
    predict_fn = lambda p, inputs: jax.vmap(eqx.combine(p, static))(inputs)
    return params, predict_fn, head, x, y


def split(tree, head):
    """``(body, head)`` parts of a params-shaped tree, the other part's leaves None."""
    not_head = jax.tree_util.tree_map(lambda h: not h, head)
    return eqx.filter(tree, not_head), eqx.filter(tree, head)


def labels_of(head, branch):
    """multi_transform's labels; given as a function: an equinox Module is callable, and optax would call it."""
    labels = jax.tree_util.tree_map(lambda h: "adam" if h else branch, head)
    return lambda params: labels


@pytest.mark.parametrize("name", list(FACTORIES))
def test_branch_equals_the_optimizer_on_a_closed_over_model(x64, name):
    """A few jitted train steps of Adam (head) + ``name`` (the rest): each step's branch update is the reference's
    (module docstring) for the head's values at that step, the head's is Adam's, and the loss decreases."""
    params, predict_fn, head, x, y = mlp_problem()
    tx = optax.multi_transform({"adam": optax.adam(ADAM_LR), name: FACTORIES[name](predict_fn, x, params)},
                               labels_of(head, name))
    loss_fn = lambda p: ref.batch_loss(LOSS, predict_fn, p, x, y)

    @ref.quick_jit
    def train_step(params, state):
        loss, grads = jax.value_and_grad(loss_fn)(params)
        updates, state = tx.update(grads, state, params, batch=(x, y), model_params=params)
        return optax.apply_updates(params, updates), state, loss, updates

    def closed_over(head_params):
        return lambda b, inputs: predict_fn(eqx.combine(b, head_params), inputs)

    @ref.quick_jit
    def reference_step(body_grads, state, body_params, head_params):
        reference = FACTORIES[name](closed_over(head_params), x, None)
        return reference.update(body_grads, state, body_params, batch=(x, y))

    grads_of = ref.quick_jit(jax.grad(loss_fn))
    adam = optax.adam(ADAM_LR)
    adam_update = ref.quick_jit(adam.update)
    state = tx.init(params)
    body0, head0 = split(params, head)
    adam_state = adam.init(head0)
    reference_state = FACTORIES[name](closed_over(head0), x, None).init(body0) if "kfac" in name else None
    losses = []
    for step in range(STEPS):
        body_params, head_params = split(params, head)
        body_grads, head_grads = split(grads_of(params), head)
        params, state, loss, updates = train_step(params, state)
        losses.append(float(loss))
        body_updates, head_updates = split(updates, head)
        expected_head, adam_state = adam_update(head_grads, adam_state, head_params)
        np.testing.assert_allclose(ref.flat(head_updates), ref.flat(expected_head), rtol=RTOL_SAME_OPS)
        if "kfac" in name:
            expected, reference_state = reference_step(body_grads, reference_state, body_params, head_params)
            np.testing.assert_allclose(ref.flat(body_updates), ref.flat(expected), rtol=RTOL_SAME_OPS,
                                       err_msg=f"step {step}")
        else:
            closed = closed_over(head_params)
            G = ref.ggn(LOSS, closed, body_params, x, y)
            expected = -LR * ref.ngd_direction(G, ref.flat(body_grads), DAMPING)
            assert ref.rel_err(ref.flat(body_updates), expected) <= ref.solve_rtol(ref.damped(G, DAMPING)), step
    assert losses[-1] < losses[0], losses


def test_kfac_branch_factors_only_its_layers(x64):
    """K-FAC's branch finds the two layers of the body (each weight with its bias column), not the head's."""
    params, predict_fn, head, x, _ = mlp_problem()
    tx = optax.multi_transform({"adam": optax.adam(ADAM_LR), "kfac": FACTORIES["kfac"](predict_fn, x, params)},
                               labels_of(head, "kfac"))
    is_kfac = lambda s: isinstance(s, kt.KFACState)
    (kfac_state,) = [s for s in jax.tree_util.tree_leaves(tx.init(params), is_leaf=is_kfac) if is_kfac(s)]
    assert [(A.shape, S.shape) for A, S in kfac_state.factors] == [((6, 6), (4, 4)), ((5, 5), (4, 4))]


@pytest.mark.parametrize("name", ["kfac", "tngd"])
def test_missing_model_params_name_the_fix(x64, name):
    """Without the whole model's parameters the branch cannot run the model: K-FAC's init asks for
    example_params=, every update for model_params=; masked model_params (mask_compatible_extra_args=True) are
    refused."""
    params, predict_fn, head, x, y = mlp_problem()
    labels = labels_of(head, name)
    grads = ref.grad(LOSS, predict_fn, params, x, y)
    if name == "kfac":
        bare = kt.kfac(LR, predict_fn=predict_fn, loss=LOSS, damping=DAMPING, example_inputs=x)
        with pytest.raises(ValueError, match=r"optax.MaskedNode.*give example_params=params"):
            optax.multi_transform({"adam": optax.adam(ADAM_LR), name: bare}, labels).init(params)
    tx = optax.multi_transform({"adam": optax.adam(ADAM_LR), name: FACTORIES[name](predict_fn, x, params)}, labels)
    state = tx.init(params)
    with pytest.raises(ValueError, match=r"branch of optax.multi_transform.*update\(..., model_params=params\)"):
        tx.update(grads, state, params, batch=(x, y))
    masking = optax.multi_transform({"adam": optax.adam(ADAM_LR), name: FACTORIES[name](predict_fn, x, params)},
                                    labels, mask_compatible_extra_args=True)
    with pytest.raises(ValueError, match="model_params hold optax.MaskedNode leaves too"):
        masking.update(grads, masking.init(params), params, batch=(x, y), model_params=params)
