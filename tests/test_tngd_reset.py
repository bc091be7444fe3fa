"""TNGD's start state (the paper's Appendix B): reset to the gradient every iteration at t_d = 0, carried over when
t_d > 0 (or when forced), against the closed-form law of a scalar problem.

The problem: one parameter w, the model z = w x with x = 1, the loss 0.5 z^2 (MSE against 0), so the gradient is
g = w and the GGN is G = 1; the device's drift is A = 1 + lambda. A run of t from x0 with bias g reads
``E x0 + (1 - E) g / A + xi``, ``E = exp(-A t)``, ``Var xi = kappa0 (1 - E^2) / A`` (exact OU law), and SGD steps
``w <- w - lr readout``. With reset the iteration is scalar and linear: ``w' = (1 - lr c) w - lr xi``,
``c = E + (1 - E) / A``. Carried over, the state ``(w, x)`` is a linear Gaussian system: the readout ``v`` as above
from the carried ``x``, then the delay runs ``t_d`` on the stale bias ``g``: ``x' = E_d v + (1 - E_d) g / A + xi_d``.
Mean and covariance propagate exactly; the first iteration always starts from the gradient.

Monte Carlo over M = 4000 noise keys; the sample mean is within 5 standard errors ``sqrt(Var / M)`` of the exact
mean and the sample variance within 5 of its standard deviations ``Var sqrt(2 / (M - 1))`` (Gaussian iterates).
"""

import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest

import kfac_thermo as kt
import thermox

DAMPING, T, KAPPA0, LR, W0, STEPS, M = 0.5, 0.7, 0.2, 0.3, 1.0, 5, 4000
A = 1.0 + DAMPING


def predict_fn(params, inputs):
    return inputs @ params["w"]


def loss_fn(params, inputs):
    return 0.5 * jnp.mean(jnp.sum(predict_fn(params, inputs) ** 2, axis=1))


def simulate(delay: float, reset) -> np.ndarray:
    """w after STEPS TNGD iterations, for each of M noise keys."""
    x, y = jnp.ones((1, 1)), jnp.zeros((1, 1))

    def one_chain(key):
        tx = kt.tngd(LR, predict_fn=predict_fn, loss="mse", damping=DAMPING, t=T, delay=delay, reset=reset,
                     device=thermox.AnalogDevice(kappa0=KAPPA0), key=key)
        params = {"w": jnp.full((1, 1), W0)}
        state = tx.init(params)
        for _ in range(STEPS):
            grads = jax.grad(loss_fn)(params, x)
            updates, state = tx.update(grads, state, params, batch=(x, y))
            params = jax.tree_util.tree_map(lambda p, u: p + u, params, updates)
        return params["w"][0, 0]

    with jax.enable_x64(True):
        return np.asarray(jax.jit(jax.vmap(one_chain))(jr.split(jr.key(0), M)))


def law_after_steps(delay: float, carry: bool) -> tuple[float, float]:
    """Exact mean and variance of w after STEPS iterations (module docstring)."""
    E = np.exp(-A * T)
    var1 = KAPPA0 * (1 - E**2) / A
    if not carry:
        a = 1 - LR * (E + (1 - E) / A)
        mean = a**STEPS * W0
        var = LR**2 * var1 * sum(a ** (2 * j) for j in range(STEPS))
        return mean, var
    Ed = np.exp(-A * delay)
    var2 = KAPPA0 * (1 - Ed**2) / A
    transition = np.array([[1 - LR * (1 - E) / A, -LR * E],
                           [Ed * (1 - E) / A + (1 - Ed) / A, Ed * E]])
    noise = np.array([[LR**2 * var1, -LR * Ed * var1], [-LR * Ed * var1, Ed**2 * var1 + var2]])
    mean, cov = np.array([W0, W0]), np.zeros((2, 2))  # the first run starts from the gradient g_0 = w_0
    for _ in range(STEPS):
        mean, cov = transition @ mean, transition @ cov @ transition.T + noise
    return mean[0], cov[0, 0]


@pytest.mark.parametrize("delay, reset, carry", [
    (0.0, None, False),   # the default at t_d = 0: reset every iteration
    (0.4, None, True),    # the default at t_d > 0: carried over, the delay run on the stale gradient
    (0.0, False, True),   # carried over at t_d = 0 (the option; noise accumulates)
    (0.4, True, False),   # reset forced although t_d > 0 (the delay run is then discarded)
])
def test_start_state_against_the_closed_form(delay, reset, carry):
    samples = simulate(delay, reset)
    mean, var = law_after_steps(delay, carry)
    assert abs(samples.mean() - mean) <= 5 * np.sqrt(var / M), (samples.mean(), mean)
    assert abs(samples.var(ddof=1) - var) <= 5 * var * np.sqrt(2 / (M - 1)), (samples.var(ddof=1), var)


def test_the_two_modes_differ_measurably():
    """The carried-over state accumulates noise: at these settings its variance is well outside the reset one's
    5-sigma band, so the test above tells the modes apart."""
    _, reset_var = law_after_steps(0.0, False)
    _, carry_var = law_after_steps(0.0, True)
    assert abs(carry_var - reset_var) > 10 * reset_var * np.sqrt(2 / (M - 1))
