"""The curvature factors ``G = W W^T`` against the dense references, and the Monte-Carlo Fisher's mean."""

import jax
import jax.random as jr
import numpy as np
import pytest

import kfac_thermo as kt
import kfac_reference as ref


@pytest.mark.parametrize("loss", ["softmax_cross_entropy", "mse"])
@pytest.mark.parametrize("kind", ["ggn", "empirical_fisher"])
def test_factor_and_matvec_match_dense(x64, loss, kind):
    params, x, y = ref.problem(loss)
    dense = (ref.ggn if kind == "ggn" else ref.empirical_fisher)(loss, ref.mlp_predict, params, x, y)
    curvature = kt.BatchCurvature(kind, ref.mlp_predict, kt.Loss(loss), params, x, y, jr.key(0))

    @jax.jit
    def products(v):
        W = curvature.factor()
        return W @ W.T, curvature.matvec_fn()(v)

    v = np.random.default_rng(0).normal(size=dense.shape[0])
    WWt, Gv = (np.asarray(a) for a in products(v))
    # Sums of O(b dz) products of O(1) terms: rounding <= 100 N eps relative to |G|.
    tol = 100 * dense.shape[0] * ref.EPS64 * np.linalg.norm(dense)
    np.testing.assert_allclose(WWt, dense, rtol=0, atol=tol)
    np.testing.assert_allclose(Gv, dense @ v, rtol=0, atol=tol * np.linalg.norm(v))


@pytest.mark.parametrize("loss", ["softmax_cross_entropy", "mse"])
def test_mc_fisher_is_unbiased_for_the_ggn(x64, loss):
    """One target sampled per example from the model's predictive distribution: E[W W^T] = G (GGN).

    Each entry's mean over M independent draws is within 5 standard errors (sample std / sqrt(M)) of the GGN;
    the std is itself estimated from the M draws (relative error ~ 1/sqrt(2M) = 1.6%, absorbed by the 5)."""
    M = 2000
    params, x, y = ref.problem(loss)
    G = ref.ggn(loss, ref.mlp_predict, params, x, y)

    @jax.jit
    @jax.vmap
    def draw(key):
        W = kt.BatchCurvature("mc_fisher", ref.mlp_predict, kt.Loss(loss), params, x, y, key).factor()
        return W @ W.T

    samples = np.asarray(draw(jr.split(jr.key(1), M)))
    se = samples.std(0, ddof=1) / np.sqrt(M)
    assert np.all(np.abs(samples.mean(0) - G) <= 5 * se + 1e-12)
    # The draws do vary: this is a statistical check, not an exact one.
    assert np.median(se) > 1e-6 * np.abs(G).max()
