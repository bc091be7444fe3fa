"""Every transform trains: a quadratic (MSE linear regression) to many orders of magnitude in a few steps, and
a small separable classification problem to > 90% held-out accuracy within a bounded number of steps."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import kfac_thermo as kt
import kfac_reference as ref

NAMES = ["tngd", "tngd_adam", "ngd", "ngd_cg", "ngd_woodbury"]


def linear(params, x):
    return x @ params["w"] + params["b"]


def train(tx, predict, loss, params, x, y, steps, metric=None):
    """``steps`` jitted train steps; returns the final params and the loss before each step."""

    @ref.quick_jit
    def step(params, opt_state):
        value, grads = jax.value_and_grad(lambda p: ref.batch_loss(loss, predict, p, x, y))(params)
        updates, opt_state = tx.update(grads, opt_state, params, batch=(x, y))
        return optax.apply_updates(params, updates), opt_state, value

    opt_state, losses = tx.init(params), []
    for _ in range(steps):
        params, opt_state, value = step(params, opt_state)
        losses.append(float(value))
    assert int(ref.natural_gradient_state(opt_state).skipped) == 0
    return params, np.asarray(losses)


@pytest.mark.parametrize("name", NAMES)
def test_converges_on_quadratic(x64, name):
    """Noiseless linear regression, 5 features -> 3 outputs (N = 18), 32 examples, from zero.

    For MSE on a linear model the GGN is the Hessian, so with e = theta - theta*: loss = e^T G e / 2.
    - NGD (dense / Woodbury / CG: G = I_3 (x) C has 6 distinct eigenvalues, CG's default 10 steps are exact):
      e <- damping (G + damping I)^-1 e contracts by rho = damping / (damping + mu_min) per step, so
      loss_k <= cond(G) rho^(2k) loss_0.
    - TNGD (t = 50): the readout differs from NGD's by e^{-(mu_min + damping) t} relative (about 4e-7 here),
      which adds to rho.
    - TNGD-Adam (b1 = b2 = 0, device converged): the update is -lr_k sign(e) up to the damping's relative
      perturbation damping / mu_min; with lr_k = 2 * 2^-k each coordinate bisects, |e_i| <= 4 * 2^-k as long as
      |e_i,0| <= 4, so loss_k <= lambda_max(G) N (4 * 2^-k)^2 / 2.
    """
    rng = np.random.default_rng(7)
    x = jnp.asarray(rng.normal(size=(32, 5)))
    w_true, b_true = rng.normal(size=(5, 3)), rng.normal(size=3)
    y = x @ w_true + b_true
    params = {"w": jnp.zeros((5, 3)), "b": jnp.zeros(3)}
    theta_true = ref.flat({"w": w_true, "b": b_true})
    G = ref.ggn("mse", linear, params, x, y)
    mu = np.linalg.eigvalsh(G)
    damping = 1e-4
    common = dict(predict_fn=linear, loss="mse")
    if name == "tngd_adam":
        damping, t, steps = 1e-6, 1e3, 15
        tx = kt.tngd_adam(optax.exponential_decay(2.0, 1, 0.5), damping=damping, t=t, **common)
        assert np.max(np.abs(theta_true)) <= 4
        bound = mu[-1] * len(theta_true) * (4 * 0.5**steps) ** 2 / 2
    else:
        steps = 4
        rho = damping / (damping + mu[0])
        if name == "tngd":
            t = 50.0
            rho += np.exp(-(mu[0] + damping) * t)
            tx = kt.tngd(1.0, damping=damping, t=t, **common)
        else:
            tx = getattr(kt, name)(1.0, damping=damping, **common)
        bound = (mu[-1] / mu[0]) * rho ** (2 * steps) * 0.5 * (theta_true @ G @ theta_true)
    final, losses = train(tx, linear, "mse", params, x, y, steps)
    final_loss = float(ref.batch_loss("mse", linear, final, x, y))
    assert final_loss <= bound, (losses, final_loss, bound)
    assert final_loss <= 1e-6 * losses[0]  # orders of magnitude, whatever the bound


@pytest.mark.parametrize("name", NAMES)
def test_classifies_separable_blobs(x64, name):
    """Three Gaussian blobs in 5-D (centers ~ N(0, 4 I), unit noise), MLP 5-4-3, full batch of 60, 10 steps."""
    rng = np.random.default_rng(11)
    centers = 2.0 * rng.normal(size=(3, 5))

    def sample(n_per_class):
        labels = np.repeat(np.arange(3), n_per_class)
        return jnp.asarray(centers[labels] + rng.normal(size=(3 * n_per_class, 5))), jnp.asarray(labels)

    x, y = sample(20)
    x_test, y_test = sample(100)
    loss = "softmax_cross_entropy"
    common = dict(predict_fn=ref.mlp_predict, loss=loss)
    tx = {
        "tngd": lambda: kt.tngd(0.5, damping=0.1, t=50.0, **common),
        "tngd_adam": lambda: kt.tngd_adam(0.05, **common),
        "ngd": lambda: kt.ngd(0.5, damping=0.1, **common),
        "ngd_cg": lambda: kt.ngd_cg(0.5, damping=0.1, **common),
        "ngd_woodbury": lambda: kt.ngd_woodbury(0.5, damping=0.1, **common),
    }[name]()
    params0 = ref.mlp_init(5)
    accuracy = lambda p, xs, ys: float(jnp.mean(jnp.argmax(ref.mlp_predict(p, xs), -1) == ys))
    assert accuracy(params0, x_test, y_test) < 0.7  # not solved before training
    final, losses = train(tx, ref.mlp_predict, loss, params0, x, y, steps=10)
    assert accuracy(final, x_test, y_test) > 0.9
    assert float(ref.batch_loss(loss, ref.mlp_predict, final, x, y)) < 0.5 * losses[0]
