"""Strong convergence of the diffrax path: same Brownian path (VirtualBrownianTree), shrinking step.

Error at step h: e(h) = sqrt(E |x_h(t) - x_ref(t)|^2) over a batch of keys, x_ref at a much finer step on
the same Brownian path. The step sizes t / 2^k put every step end on the dyadic grid of the tree, and the
tree's tolerance is below the finest step, so all runs see the same path. The slope of log e against
log h is fitted by least squares. (Errors shrinking at the predicted rate is itself the evidence that the
runs share one Brownian path: independent paths would give errors of O(sqrt(kappa0 t)) at every step.)

Expected orders for this additive-noise SDE dx = -(A x - b) ds + sqrt(2 kappa0) dW:
- Euler-Maruyama: strong order 1.0 (additive noise: the Ito-Taylor term sigma' sigma vanishes, the leading
  missing term A sigma int (h - s) dW has local size h^1.5, mean zero: global h^1).
- ShARK (uses the space-time Levy area H): strong order 1.5 for a general additive-noise SDE. For a
  *linear* drift the terms that limit it to 1.5 (f''(x)[sigma, sigma] int W^2) vanish, and the first term
  not determined by (W, H) is A^2 sigma int (h - s)^2 dW / 2, local size h^2.5, mean zero: global h^2.
  The OU device is linear, so order ~2 is the expected observation (1.5 is the guaranteed floor).
Acceptance windows: Euler [0.8, 1.3] (from the issue); ShARK [1.3, 2.3]: floor 1.5 and linear-drift order
2.0, each with 0.2-0.3 allowance for the least-squares fit over 3 points and pre-asymptotic curvature.
Observed here (64 keys, n = 4, t = 1, eigenvalues 0.5..2, kappa0 = 1): Euler slope 1.05 (h = 1/8..1/32),
ShARK slope 2.17 (h = 1/4..1/16). A longer run (5 step sizes each, reference 4x finer) gave 1.06 and 2.11,
the last ShARK error ratio being 4.02 = 2^2.0: order 2 asymptotically, as predicted for a linear drift.
"""

import jax
import jax.numpy as jnp
import numpy as np

import diffrax
import thermox
from thermox_reference import random_spd

N, T_RUN, KAPPA0, BATCH = 4, 1.0, 1.0, 64


def strong_errors(solver, ks, k_ref):
    A = jnp.asarray(random_spd(N, [0.5, 1.0, 1.5, 2.0], seed=0))
    rng = np.random.default_rng(1)
    b, x0 = jnp.asarray(rng.normal(size=N)), jnp.asarray(rng.normal(size=N))
    keys = jax.random.split(jax.random.key(1), BATCH)
    tol = T_RUN / 2 ** (k_ref + 1)

    def run(k):
        f = jax.jit(jax.vmap(lambda key: thermox.evolve(
            A, b, x0, key=key, t=T_RUN, kappa0=KAPPA0,
            method=thermox.Diffrax(solver, dt=T_RUN / 2**k, brownian_tol=tol),
        )))
        return np.asarray(f(keys))

    ref = run(k_ref)
    errors = np.array([np.sqrt(np.mean(np.sum((run(k) - ref) ** 2, axis=-1))) for k in ks])
    slope = np.polyfit(np.log(T_RUN / 2.0 ** np.asarray(ks)), np.log(errors), 1)[0]
    return errors, slope


def test_euler_maruyama_strong_order_one(x64):
    # h = 1/8, 1/16, 1/32; reference h = 1/512, whose own error is 16x below the finest tested one
    # (shifts the fitted slope by < 0.05). Each step size is one compilation (the step count is static).
    errors, slope = strong_errors(diffrax.Euler(), [3, 4, 5], 9)
    assert np.all(np.diff(errors) < 0), errors
    assert 0.8 <= slope <= 1.3, (slope, errors)


def test_shark_strong_order(x64):
    # h = 1/4, 1/8, 1/16; reference h = 1/256: its error is 16^1.5 = 64x or more below the finest tested one.
    errors, slope = strong_errors(diffrax.ShARK(), [2, 3, 4], 8)
    assert np.all(np.diff(errors) < 0), errors
    assert 1.3 <= slope <= 2.3, (slope, errors)
