"""Lanczos ``f(A) v`` (thermox._krylov.lanczos_fn) stops as soon as its convergence test passes; a low-rank drift
applies functions of its Gram by Lanczos or by eigh.

The test runs every ``check_every`` steps: an easy spectrum converges in few steps and takes no further matvec,
and the early answer meets the same tolerance against the dense float64 reference ``V f(w) V^T v`` as a run
that tests only at ``dim``. A spectrum too wide for ``dim`` steps still reports that it has not converged.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import thermox
from thermox._krylov import lanczos_fn

import thermox_reference as ref


def _count_matvecs(A):
    """``v -> A v`` under jit that counts its executions on the host (a skipped ``cond`` branch does not run)."""
    calls = []

    def mv(v):
        jax.debug.callback(lambda: calls.append(1))
        return A @ v

    return mv, calls


@pytest.mark.parametrize("check_every,most_steps", [(4, 16), (64, 64)])
def test_stops_early_with_the_same_accuracy(x64, check_every, most_steps):
    n, dim, rtol, t = 120, 64, 1e-10, 3.0
    A = ref.random_spd(n, ref.spectrum(n, cond=4.0, top=2.0), seed=0)
    v = np.random.default_rng(1).normal(size=n)
    fn = lambda w: (1 - jnp.exp(-w * t)) / w  # the OU mean gain
    w, V = np.linalg.eigh(A)
    exact = V @ ((1 - np.exp(-w * t)) / w * (V.T @ v))
    mv, calls = _count_matvecs(jnp.asarray(A))
    out, converged, indefinite, _ = jax.jit(lambda v: lanczos_fn(mv, fn, v, dim=dim, rtol=rtol,
                                                                 check_every=check_every))(jnp.asarray(v))
    jax.effects_barrier()
    assert bool(converged) and not bool(indefinite)
    # Condition number 4: Lanczos on this f converges in 16 steps, the first check (every 4) after that; checking
    # only at dim = 64 runs all 64 steps.
    assert len(calls) == most_steps
    np.testing.assert_allclose(np.asarray(out), exact, rtol=0, atol=100 * rtol * np.linalg.norm(exact))


def test_reports_not_converged(x64):
    n = 200
    A = ref.random_spd(n, ref.spectrum(n, cond=1e6), seed=2)
    v = np.random.default_rng(3).normal(size=n)
    _, converged, _, _ = jax.jit(lambda v: lanczos_fn(lambda q: jnp.asarray(A) @ q, lambda w: 1 / w, v, dim=12,
                                                   rtol=1e-10, check_every=4))(jnp.asarray(v))
    assert not bool(converged)


@pytest.mark.parametrize("r,krylov_dim", [(40, 24), (12, 24)], ids=["lanczos", "eigh"])
def test_low_rank_drift_gram_function(x64, r, krylov_dim):
    """``LowRankDrift.apply_fn``: Lanczos on the r x r Gram when r > krylov_dim, its eigh otherwise; both equal the
    dense ``V f(w) V^T x`` of ``shift I + W W^T`` (float64, vector and matrix right-hand sides). Which path ran is
    read from the traced program: Lanczos is a loop (with the eigh as its non-converged fallback), the eigh path
    has no loop."""
    n, shift, t = 60, 0.5, 2.0
    rng = np.random.default_rng(4)
    W = rng.normal(size=(n, r)) / np.sqrt(n)
    A = shift * np.eye(n) + W @ W.T
    x = rng.normal(size=(n, 3))
    w, V = np.linalg.eigh(A)
    exact = V @ (((1 - np.exp(-w * t)) / w)[:, None] * (V.T @ x))
    Wj = jnp.asarray(W)
    fn = lambda s: (1 - jnp.exp(-s * t)) / s
    apply = jax.jit(lambda x: thermox.LowRankDrift(jnp.asarray(shift), Wj.T @ Wj, lambda c: Wj @ c,
                                                   lambda v: Wj.T @ v, n).apply_fn(fn, x, krylov_dim=krylov_dim,
                                                                                   krylov_rtol=1e-12))
    program = str(jax.make_jaxpr(apply)(jnp.asarray(x[:, 0])))
    assert ("while[" in program) == (r > krylov_dim) and "eigh" in program
    for columns in (x[:, 0], x):
        out = np.asarray(apply(jnp.asarray(columns)))
        want = exact[:, 0] if columns.ndim == 1 else exact
        np.testing.assert_allclose(out, want, rtol=0, atol=1e-10 * np.abs(want).max())
