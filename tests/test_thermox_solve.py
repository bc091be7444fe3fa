"""thermox.linalg.solve on the ideal device (AnalogDevice() default) after a long run matches a dense solve.

Error budget (relative, float64) at t = 1e4 with eigenvalues in [1/cond, 1], cond <= 100:
- relaxation: |e^{-A t}(x0 - A^-1 b)| / |A^-1 b| <= e^{-t / cond} = e^{-100} ~ 4e-44;
- exact (eigh) path: backward-stable eigendecomposition, error ~ n cond eps ~ 1e-12;
- Krylov path: Lanczos stops when its error estimate is below krylov_rtol = 1e-10 (default in float64).
The issue's requirement, 1e-6, is therefore met with margin by any correct implementation, while a wrong
drift sign, a missing term or the wrong bias convention (A(x - b)) fails it by O(1).

Calls go through ``eqx.filter_jit`` (one compilation per shape and static configuration; op-by-op
dispatch of the Lanczos and series code is several times slower); the eager path is exercised too.
"""

import equinox as eqx
import jax
import jax.numpy as jnp
import lineax as lx
import numpy as np
import pytest

import thermox
from thermox_reference import random_spd, spectrum

T_LONG = 1e4
RTOL = 1e-6  # requirement from the issue; see the error budget above
N = 20  # one size for most tests, so compilations are shared

jsolve = eqx.filter_jit(thermox.linalg.solve)


def rel_err(x, ref):
    return float(np.linalg.norm(np.asarray(x) - ref) / np.linalg.norm(ref))


def make_problem(n, cond, k, seed):
    A = random_spd(n, spectrum(n, cond), seed)
    rng = np.random.default_rng(seed + 1)
    b = rng.normal(size=(n,) if k is None else (n, k))
    return A, b


@pytest.mark.parametrize("method", ["exact", "krylov"])
@pytest.mark.parametrize("cond", [1.0, 10.0, 100.0])
@pytest.mark.parametrize("k", [None, 3], ids=["vector", "matrix"])
def test_solve_matches_numpy(x64, method, cond, k):
    n = N
    A, b = make_problem(n, cond, k, seed=int(cond) + (0 if k is None else 7))
    x = jsolve(A, b, key=jax.random.key(0), t=T_LONG, method=method)
    assert x.shape == b.shape and x.dtype == jnp.float64
    assert rel_err(x, np.linalg.solve(A, b)) <= RTOL


@pytest.mark.parametrize("method", ["exact", "krylov"])
def test_solve_from_nonzero_start(x64, method):
    """The start state is forgotten: x0 contributes e^{-A t}(x0 - x*), below e^{-100} |x0 - x*| here."""
    n = N
    A, b = make_problem(n, 100.0, 2, seed=3)
    x0 = 10.0 * np.random.default_rng(4).normal(size=b.shape)
    x = jsolve(A, b, key=jax.random.key(0), t=T_LONG, x0=x0, method=method)
    assert rel_err(x, np.linalg.solve(A, b)) <= RTOL


def test_krylov_subspace_smaller_than_n(x64):
    """Lanczos with 24 steps on n = 30 (a proper subspace). For f(w) ~ 1/w on [1/4, 1] the k-step error is
    about 2 ((sqrt(cond) - 1)/(sqrt(cond) + 1))^k = 2 * 3^-24 ~ 7e-12, under the default krylov_rtol
    (1e-10), so the run-time convergence check passes and the answer meets the 1e-6 requirement."""
    n = 30
    A, b = make_problem(n, 4.0, None, seed=11)
    x = jsolve(A, b, key=jax.random.key(0), t=T_LONG, method=thermox.Krylov(dim=24))
    assert rel_err(x, np.linalg.solve(A, b)) <= RTOL


@pytest.mark.parametrize("method", ["exact", "krylov"])
@pytest.mark.parametrize("k", [None, 4], ids=["vector", "matrix"])
def test_low_rank_plus_shift(x64, method, k):
    """A = shift I + W W^T (rank 3, n = 20): condition number (shift + s_max) / shift = 100 by construction."""
    n, r, shift = N, 3, 0.01
    rng = np.random.default_rng(5)
    W, _ = np.linalg.qr(rng.normal(size=(n, r)))
    W = W * np.sqrt(np.array([0.99, 0.3, 0.05]))  # W^T W eigenvalues 0.99, 0.3, 0.05
    A = shift * np.eye(n) + W @ W.T
    assert np.isclose(np.linalg.cond(A), 100.0)
    b = rng.normal(size=(n,) if k is None else (n, k))
    Wj = jnp.asarray(W)
    drift = thermox.LowRankDrift(
        shift=jnp.asarray(shift), gram=Wj.T @ Wj, factor=lambda c: Wj @ c, factor_transpose=lambda v: Wj.T @ v, n=n
    )
    x = jsolve(drift, b, key=jax.random.key(0), t=T_LONG, method=method)
    assert rel_err(x, np.linalg.solve(A, b)) <= RTOL
    # The same drift from its explicit factor (the form a device can program).
    x = jsolve(thermox.LowRankDrift.from_factor(shift, W), b, key=jax.random.key(0), t=T_LONG, method=method)
    assert rel_err(x, np.linalg.solve(A, b)) <= RTOL


def test_matrix_free_drifts(x64):
    """Callables and lineax operators as the drift (matrix-free: Krylov from matvecs alone); a matrix
    right-hand side through a callable."""
    n = N
    A, b = make_problem(n, 100.0, None, seed=21)
    ref = np.linalg.solve(A, b)
    Aj = jnp.asarray(A)
    key = jax.random.key(0)
    structure = jax.ShapeDtypeStruct((n,), jnp.float64)
    drifts = {
        "callable": lambda v: Aj @ v,
        "function_operator": lx.FunctionLinearOperator(lambda v: Aj @ v, structure, lx.symmetric_tag),
    }
    for name, drift in drifts.items():
        x = jsolve(drift, b, key=key, t=T_LONG, method="krylov")
        assert rel_err(x, ref) <= RTOL, name
    B = np.stack([b, np.linspace(-1.0, 1.0, n)], axis=1)
    x = jsolve(drifts["callable"], B, key=key, t=T_LONG, method="krylov")
    assert rel_err(x, np.linalg.solve(A, B)) <= RTOL
    # A lineax matrix operator is dense: the exact (eigh) path accepts it.
    x = jsolve(lx.MatrixLinearOperator(Aj, lx.symmetric_tag), b, key=key, t=T_LONG, method="exact")
    assert rel_err(x, ref) <= RTOL
    # A diagonal lineax operator (another operator class): matrix-free Krylov, answer b / d.
    d = np.geomspace(0.01, 1.0, n)
    x = jsolve(lx.DiagonalLinearOperator(jnp.asarray(d)), b, key=key, t=T_LONG, method="krylov")
    assert rel_err(x, b / d) <= RTOL


def test_eigendrift_reuse(x64):
    """A precomputed EigenDrift gives the same answer as the dense matrix (run op by op, without jit)."""
    n = N
    A, b = make_problem(n, 50.0, None, seed=31)
    drift = thermox.EigenDrift.from_matrix(A)
    x = thermox.linalg.solve(drift, b, key=jax.random.key(0), t=T_LONG)  # eager, not jitted
    assert rel_err(x, np.linalg.solve(A, b)) <= RTOL


def test_auto_method_choices(x64):
    """method='auto' picks exact for a dense matrix and Krylov for a callable; both solve."""
    n = N
    A, b = make_problem(n, 10.0, None, seed=41)
    ref = np.linalg.solve(A, b)
    Aj = jnp.asarray(A)
    for drift in (A, lambda v: Aj @ v):
        x = jsolve(drift, b, key=jax.random.key(0), t=T_LONG)
        assert rel_err(x, ref) <= RTOL
