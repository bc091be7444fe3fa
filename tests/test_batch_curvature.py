"""The curvature factors ``G = W W^T`` (explicit and matrix-free) against the dense references, and the means
of the sampled estimates (Monte-Carlo Fisher, curvature propagation)."""

import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest

import kfac_thermo as kt
from kfac_thermo._curvature import output_directions
import kfac_reference as ref


@pytest.mark.parametrize("loss", ["softmax_cross_entropy", "mse"])
def test_factor_and_matvec_match_dense(x64, loss):
    """GGN and empirical Fisher: ``W W^T`` (explicit factor) and ``v -> G v`` (matrix-free) equal the dense ones."""
    params, x, y = ref.problem(loss)
    kinds = ("ggn", "empirical_fisher")
    v = np.random.default_rng(0).normal(size=39)

    @ref.quick_jit
    def products(v):
        out = []
        for kind in kinds:
            curvature = kt.BatchCurvature(kind, ref.mlp_predict, kt.as_loss(loss), params, x, y, jr.key(0))
            W = curvature.factor()
            out.append((W @ W.T, curvature.matvec_fn()(v)))
        return out

    for kind, (WWt, Gv) in zip(kinds, products(v)):
        dense = (ref.ggn if kind == "ggn" else ref.empirical_fisher)(loss, ref.mlp_predict, params, x, y)
        # Sums of O(b dz) products of O(1) terms: rounding <= 100 N eps relative to |G|.
        tol = 100 * dense.shape[0] * ref.EPS64 * np.linalg.norm(dense)
        np.testing.assert_allclose(np.asarray(WWt), dense, rtol=0, atol=tol, err_msg=kind)
        np.testing.assert_allclose(np.asarray(Gv), dense @ v, rtol=0, atol=tol * np.linalg.norm(v), err_msg=kind)


@pytest.mark.parametrize("kind", ["mc_fisher", "ggn_curvature_prop"])
@pytest.mark.parametrize("loss", ["softmax_cross_entropy", "mse"])
def test_sampled_curvatures_are_unbiased_for_the_ggn(x64, loss, kind):
    """One target sampled per example from the model's predictive distribution ("mc_fisher"), or one Rademacher
    combination of the loss Hessian's factor columns ("ggn_curvature_prop"): E[W W^T] = G (GGN).

    Each entry's mean over M independent draws is within 5 standard errors (sample std / sqrt(M)) of the GGN;
    the std is itself estimated from the M draws (relative error ~ 1/sqrt(2M) = 1.6%, absorbed by the 5)."""
    M = 2000
    params, x, y = ref.problem(loss)
    G = ref.ggn(loss, ref.mlp_predict, params, x, y)

    @ref.quick_jit
    @jax.vmap
    def draw(key):
        W = kt.BatchCurvature(kind, ref.mlp_predict, kt.as_loss(loss), params, x, y, key).factor()
        return W @ W.T

    samples = np.asarray(draw(jr.split(jr.key(1), M)))
    se = samples.std(0, ddof=1) / np.sqrt(M)
    assert np.all(np.abs(samples.mean(0) - G) <= 5 * se + 1e-12)
    # The draws do vary: this is a statistical check, not an exact one.
    assert np.median(se) > 1e-6 * np.abs(G).max()


@pytest.mark.parametrize("loss", ["softmax_cross_entropy", "mse"])
def test_matrix_free_low_rank_form(x64, loss):
    """``low_rank() = (W^T W, c -> W c, v -> W^T v)`` without forming W (what TNGD and Woodbury use):
    ``W W^T v`` equals the dense ``G v``, the Gram's eigenvalues are G's nonzero ones, and the Gram is the one
    of its own factor (``W^T W c``). The sampled kinds are checked at the output cotangents their key draws
    (``output_directions``), against dense Jacobians. (An equinox model goes through the same path in
    test_ngd_exact.py.)"""
    predict = ref.mlp_predict
    params, x, y = ref.problem(loss)
    kinds = ("ggn", "empirical_fisher", "mc_fisher", "ggn_curvature_prop")
    rng = np.random.default_rng(1)
    v = rng.normal(size=39)

    @ref.quick_jit
    def forms(v):
        out = []
        for kind in kinds:
            curvature = kt.BatchCurvature(kind, predict, kt.as_loss(loss), params, x, y, jr.key(5))
            gram, factor, factor_transpose = curvature.low_rank()
            c = jnp.ones(gram.shape[0])
            out.append(dict(gram=gram, GGv=factor(factor_transpose(v)), WtWc=factor_transpose(factor(c)),
                            gram_c=gram @ c))
        return out

    for kind, f in zip(kinds, forms(v)):
        f = {k: np.asarray(a) for k, a in f.items()}
        if kind in ("mc_fisher", "ggn_curvature_prop"):
            R = output_directions(kind, kt.as_loss(loss), predict(params, x), y, jr.key(5))
            dense = ref.jacobian_outer(predict, params, x, R)
        else:
            dense = (ref.ggn if kind == "ggn" else ref.empirical_fisher)(loss, predict, params, x, y)
        # Rounding: sums of O(N) products of O(1)-conditioned terms, <= 100 N eps relative to |G|.
        tol = 100 * 39 * ref.EPS64 * np.linalg.norm(dense)
        np.testing.assert_allclose(f["GGv"], dense @ v, rtol=0, atol=tol * np.linalg.norm(v), err_msg=kind)
        r = f["gram"].shape[0]
        np.testing.assert_allclose(np.linalg.eigvalsh(f["gram"]), np.linalg.eigvalsh(dense)[-r:], rtol=0, atol=tol,
                                   err_msg=kind)
        np.testing.assert_allclose(f["WtWc"], f["gram_c"], rtol=0, atol=tol * np.sqrt(r), err_msg=kind)
