"""TNGD-Adam: the device readout g~ fed to Adam in place of the gradient.

Reference: the TNGD readouts from the closed form (each step starts from its gradient: the default reset at
delay 0, Appendix B) passed
by hand through ``optax.scale_by_adam`` with the same b1, b2, eps, times -learning_rate. With b1 = b2 = 0 (the
paper's QA setting, the defaults) Adam's first and second moments are the readout and its square, so the update
is ``-lr g~ / (|g~| + eps)``: a sign-like normalization of the TNGD direction.
"""

import numpy as np
import optax

import kfac_thermo as kt
import kfac_reference as ref

LOSS = "softmax_cross_entropy"
LR = 1e-2
DAMPING, T, EPS = 1.0, 0.4, 1e-8  # the paper's TNGD-Adam settings (REFERENCE.md section 5)


def test_two_steps_equal_adam_of_tngd_readouts(x64):
    b1 = b2 = 0.0
    params0, x, y = ref.problem(LOSS)
    tx = kt.tngd_adam(LR, predict_fn=ref.mlp_predict, loss=LOSS, b1=b1, b2=b2, eps=EPS)

    @ref.quick_jit
    def two_steps(params0):
        g0 = ref.grad(LOSS, ref.mlp_predict, params0, x, y)
        u0, state = tx.update(g0, tx.init(params0), params0, batch=(x, y))
        params1 = optax.apply_updates(params0, u0)
        g1 = ref.grad(LOSS, ref.mlp_predict, params1, x, y)
        u1, _ = tx.update(g1, state, params1, batch=(x, y))
        return u0, u1, params1

    u0, u1, params1 = two_steps(params0)
    G0, g0 = ref.ggn(LOSS, ref.mlp_predict, params0, x, y), ref.flat(ref.grad(LOSS, ref.mlp_predict, params0, x, y))
    G1, g1 = ref.ggn(LOSS, ref.mlp_predict, params1, x, y), ref.flat(ref.grad(LOSS, ref.mlp_predict, params1, x, y))
    d0 = ref.device_mean(G0, g0, DAMPING, T, x0=g0)
    d1 = ref.device_mean(G1, g1, DAMPING, T, x0=g1)

    adam = optax.scale_by_adam(b1=b1, b2=b2, eps=EPS)
    adam_state = adam.init(d0)
    a0, adam_state = adam.update(d0, adam_state)
    a1, _ = adam.update(d1, adam_state)

    # The readouts carry the exact law's rounding err_d (law_rtol); Adam's map is Lipschitz with constant
    # <= 1 / min|d_i| in d for these moments (|d (|d| + eps)^-1|' = eps / (|d| + eps)^2 <= 1 / |d| and the
    # bias-corrected moment ratio behaves alike), so the update is within lr err_d / min|d_i| plus rounding.
    for u, a, d, A, x0, g in [(u0, a0, d0, ref.damped(G0, DAMPING), g0, g0),
                              (u1, a1, d1, ref.damped(G1, DAMPING), g1, g1)]:
        err_d = ref.law_rtol(A, T, x0, d, b=g) * np.linalg.norm(d)
        atol = LR * (10 * err_d / np.min(np.abs(d)) + 100 * ref.EPS64)
        np.testing.assert_allclose(ref.flat(u), -LR * np.asarray(a), rtol=0, atol=atol)
        # Discriminating: Adam of the raw gradient (or of the NGD direction) is far outside this tolerance.
        for other in (g, ref.ngd_direction(A - DAMPING * np.eye(len(g)), g, DAMPING)):
            wrong, _ = optax.scale_by_adam(b1=b1, b2=b2, eps=EPS).update(other, adam.init(other))
            assert np.max(np.abs(-LR * np.asarray(wrong) - ref.flat(u))) > 100 * np.max(atol)
    # Sign-like: every coordinate moves by lr |d_i| / (|d_i| + eps), within eps / min|d_i| of lr, along -d.
    assert np.min(np.abs(d0)) > 1e3 * EPS
    np.testing.assert_allclose(ref.flat(u0), -LR * np.sign(d0), rtol=EPS / np.min(np.abs(d0)) + 1e-12)
