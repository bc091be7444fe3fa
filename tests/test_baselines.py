"""The baselines a researcher would pick beside Adam: Sophia-G (kfac_thermo.sophia_g) against a hand-computed
reference and its estimator's mean against the exact Gauss-Newton diagonal; Muon's work record against the
operations of optax's own Newton-Schulz code; both in the runner's optimizer builder with Adam-like pricing."""

import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest
from optax.contrib._muon import orthogonalize_via_newton_schulz

import kfac_reference as ref
import kfac_thermo as kt
from experiments import config
from experiments.optimizers import build_optimizer, newton_schulz_work
from experiments.trainer import train_step

LOSS = "softmax_cross_entropy"


# --- Sophia-G -------------------------------------------------------------------------------------------------


def linear_predict(params, x):
    return x @ params["w"]


def softmax(z):
    e = np.exp(z - z.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def test_sophia_g_matches_the_papers_algorithm_by_hand(x64):
    """Three steps on a linear softmax model (B = 2, 3 features, 3 classes), refresh every k = 2 steps: the GNB
    estimate ``B g^ * g^`` with ``g^ = (1/B) sum_b x_b (p_b - e_{y^_b})^T`` (labels y^_b drawn with the
    documented keys), its EMA at steps 1 and 3, the momentum and the clipped ratio written out in numpy; the
    update is ``-lr (direction + weight_decay theta)``. Both sides evaluate the same float64 formulas: 1e-12."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2, 3))
    params = {"w": jnp.asarray(rng.normal(size=(3, 3)))}
    # The gradients the step is handed, small enough that the ratio is clipped in some entries and not in others.
    grads = [{"w": jnp.asarray(0.05 * rng.normal(size=(3, 3)))} for _ in range(3)]
    b1, b2, gamma, eps, lr, wd, k, key = 0.5, 0.5, 0.5, 1e-12, 0.1, 0.01, 2, jr.key(3)
    unclipped = 0
    tx = kt.sophia_g(lr, predict_fn=linear_predict, loss=LOSS, key=key, b1=b1, b2=b2, gamma=gamma, eps=eps,
                     update_interval=k, weight_decay=wd)
    state = tx.init(params)
    m, h, w = np.zeros((3, 3)), np.zeros((3, 3)), np.asarray(params["w"])
    for count, g in enumerate(grads):
        updates, state = tx.update(g, state, params, batch=(jnp.asarray(x), jnp.zeros(2, jnp.int32)))
        m = b1 * m + (1 - b1) * np.asarray(g["w"])
        if count % k == 0:
            z = x @ w
            keys = jr.split(jr.fold_in(key, count), 2)
            labels = [int(jr.categorical(kb, jnp.asarray(zb))) for kb, zb in zip(keys, z)]
            residual = softmax(z) - np.eye(3)[labels]
            g_hat = x.T @ residual / 2
            h = b2 * h + (1 - b2) * 2 * g_hat**2
        ratio = m / np.maximum(gamma * h, eps)
        unclipped += int(np.sum(np.abs(ratio) < 1))
        expected = -lr * (np.clip(ratio, -1, 1) + wd * w)
        np.testing.assert_allclose(np.asarray(updates["w"]), expected, rtol=1e-12, atol=1e-15, err_msg=str(count))
        sophia = next(s for s in jax.tree_util.tree_leaves(state, is_leaf=lambda s: isinstance(s, kt.SophiaGState))
                      if isinstance(s, kt.SophiaGState))
        np.testing.assert_allclose(np.asarray(sophia.hessian["w"]), h, rtol=1e-12)
        # A refresh step runs one forward and one reverse pass over the batch; the others none.
        passes = 1.0 if count % k == 0 else 0.0
        assert float(sophia.work.forward_passes) == float(sophia.work.reverse_passes) == passes
        assert float(sophia.work.flops["update"]) == (8 + 5 * passes) * 9
        params = {"w": params["w"] + updates["w"]}
        w = np.asarray(params["w"])
    assert unclipped >= 3  # the preconditioned ratio itself is checked, not only its sign


def test_gnb_estimate_is_unbiased_for_the_gauss_newton_diagonal(x64):
    """Over many keys, the mean of ``B g^ * g^`` is the diagonal of ``G = (1/B) sum_b J_b^T H_b J_b`` (the
    independent dense reference of kfac_reference). Tolerance: 5 standard errors of the sample mean, per entry."""
    params, x, _ = ref.problem(LOSS, batch=4)
    exact = np.diag(ref.ggn(LOSS, ref.mlp_predict, params, x, None))
    samples = 4000
    estimates = jax.vmap(lambda key: ref.ravel(kt.gnb_diagonal(params, x, predict_fn=ref.mlp_predict, loss=LOSS,
                                                                key=key)))(jr.split(jr.key(0), samples))
    mean, error = estimates.mean(0), estimates.std(0) / np.sqrt(samples)
    assert np.all(np.abs(mean - exact) <= 5 * error + 1e-12), np.max(np.abs(mean - exact) / (error + 1e-30))
    assert np.max(exact) > 0 and np.all(np.asarray(mean) >= 0)


def test_sophia_g_refuses_a_missing_key_and_batch():
    with pytest.raises(ValueError, match="needs key="):
        kt.sophia_g(1e-3, predict_fn=linear_predict, loss=LOSS, key=None)
    params = {"w": jnp.zeros((3, 3))}
    tx = kt.sophia_g(1e-3, predict_fn=linear_predict, loss=LOSS, key=jr.key(0))
    with pytest.raises(ValueError, match="batch"):
        tx.update(params, tx.init(params), params)


# --- Muon's work ----------------------------------------------------------------------------------------------

ARITHMETIC = {"mul", "add", "sub", "div", "sqrt", "neg", "max", "min"}


def jaxpr_flops(jaxpr, times: int = 1) -> int:
    """Floating-point operations of a jaxpr, counted from its equations: a dot_general as 2 x (contracted size) x
    (outputs), an element-wise arithmetic op as its outputs, a reduction as its inputs, a scan's body times its
    length."""
    total = 0
    size = lambda var: int(np.prod(var.aval.shape))
    for eqn in jaxpr.eqns:
        name = eqn.primitive.name
        if name == "scan":
            total += jaxpr_flops(eqn.params["jaxpr"].jaxpr, times * eqn.params["length"])
        elif "jaxpr" in eqn.params:
            inner = eqn.params["jaxpr"]
            total += jaxpr_flops(getattr(inner, "jaxpr", inner), times)
        elif name == "dot_general":
            (contracted, _), _ = eqn.params["dimension_numbers"]
            k = int(np.prod([eqn.invars[0].aval.shape[i] for i in contracted]))
            total += times * 2 * k * size(eqn.outvars[0])
        elif name in ARITHMETIC:
            total += times * size(eqn.outvars[0])
        elif name.startswith("reduce_"):
            total += times * size(eqn.invars[0])
    return total


@pytest.mark.parametrize("shape, ns_steps", [((16, 288), 5), ((288, 16), 5), ((10, 16), 5), ((7, 7), 3)])
def test_newton_schulz_work_counts_the_operations_of_optax_muon(shape, ns_steps):
    """The record's flops are those of optax's own orthogonalize_via_newton_schulz, read from its jaxpr, up to its
    scalar operations (the norm's square root and + eps, one coefficient product per iteration)."""
    coeffs = jnp.asarray((3.4445, -4.7750, 2.0315))
    jaxpr = jax.make_jaxpr(lambda x: orthogonalize_via_newton_schulz(x, coeffs, ns_steps))(jnp.ones(shape))
    counted = float(newton_schulz_work(shape, ns_steps).flops["precondition"])
    assert 0 <= jaxpr_flops(jaxpr.jaxpr) - counted <= 2 + ns_steps
    assert float(newton_schulz_work((8,), ns_steps).flops["precondition"]) == 0.0  # not a matrix: Adam's leaf


# --- in the runner ---------------------------------------------------------------------------------------------


def runner_optimizer(name, predict_fn):
    """The runner's optimizer ``name`` at its config defaults."""
    return build_optimizer(config.OPTIMIZERS[name](), config.DeviceConfig(), predict_fn=predict_fn, loss=LOSS, seed=0)


def step_work(name):
    params, x, y = ref.problem(LOSS, batch=4)
    tx = runner_optimizer(name, ref.mlp_predict)
    loss = lambda p, xs, ys, key: ref.batch_loss(LOSS, ref.mlp_predict, p, xs, ys)
    _, state, _ = jax.jit(train_step(loss, tx))(params, tx.init(params), x, y, None)
    return params, kt.total_work(state)


def test_muon_and_sophia_report_work_like_adam():
    """Every optimizer's element-wise update priced per parameter as Adam's; Muon adds its matrix products, Sophia-G
    its estimator's passes on a refresh step (the first)."""
    params, adam = step_work("adam")
    n = sum(leaf.size for leaf in jax.tree_util.tree_leaves(params))
    matrices = [leaf.shape for leaf in jax.tree_util.tree_leaves(params) if leaf.ndim == 2]
    _, muon = step_work("muon")
    assert float(muon.flops["update"]) == float(adam.flops["update"]) == 13 * n
    assert float(muon.flops["precondition"]) == sum(float(newton_schulz_work(s, 5).flops["precondition"])
                                                    for s in matrices) > 0
    assert float(muon.forward_passes) == float(adam.forward_passes) == 0.0
    _, sophia = step_work("sophia")
    assert float(sophia.flops["update"]) == 13 * n
    assert float(sophia.forward_passes) == float(sophia.reverse_passes) == 1.0 and float(sophia.examples) == 4
