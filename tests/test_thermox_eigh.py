"""thermox._eigh.eigh, the one eigendecomposition every exact and Krylov path uses.

References: numpy.linalg.eigh (values; vectors through the reconstruction V diag(w) V^T and V^T V = I, since
eigenvectors are defined up to sign) and central finite differences of numpy eigenvalues for derivatives.
"""

import re

import jax
import jax.numpy as jnp
import numpy as np

import thermox
from thermox._eigh import eigh
from thermox_reference import random_spd


def check_decomposition(w, V, A):
    """Backward-stable eigh: |A - V diag(w) V^T| and |V^T V - I| are O(n eps |A|); 1e-12 covers n <= 30."""
    w, V = np.asarray(w), np.asarray(V)
    scale = np.linalg.norm(A, 2)
    np.testing.assert_allclose(w, np.linalg.eigvalsh(A), rtol=0, atol=1e-12 * scale)
    np.testing.assert_allclose((V * w) @ V.T, A, rtol=0, atol=1e-12 * scale)
    np.testing.assert_allclose(V.T @ V, np.eye(len(w)), rtol=0, atol=1e-12)


def test_eigh_matches_numpy(x64):
    A = random_spd(12, np.linspace(-3.0, 5.0, 12), seed=0)
    check_decomposition(*eigh(jnp.asarray(A)), A)


def test_vmapped_eigh_loops_over_the_batch(x64):
    """Under vmap the CPU path issues one unbatched LAPACK call per matrix. A batched call (num_batch_dims
    >= 1) is what jaxlib 0.10.2 splits over XLA's intra-op pool while blocking a pool thread; two of them at
    once deadlocked the vmapped Krylov solves of test_thermox_statistics (an intermittent hang)."""
    batch = jnp.stack([jnp.asarray(random_spd(6, np.linspace(0.5, 2.0, 6), seed=s)) for s in range(5)])
    w, V = jax.vmap(eigh)(batch)
    for i in range(5):
        check_decomposition(w[i], V[i], np.asarray(batch[i]))
    if jax.default_backend() != "cpu":
        return
    # The whole vmapped Krylov readout, as the statistics tests run it.
    A = batch[0]
    keys = jax.random.split(jax.random.key(0), 64)
    lowered = jax.jit(jax.vmap(
        lambda k: thermox.evolve(A, jnp.ones(6), key=k, t=1.0, kappa0=0.5, method="krylov")
    )).lower(keys).as_text()
    calls = [line for line in lowered.splitlines() if "custom_call @lapack_" in line]
    assert calls, "expected LAPACK eigh calls in the Krylov path"
    batch_dims = [re.search(r'num_batch_dims = "(\d+)"', line) for line in calls]
    assert all(m is not None and m.group(1) == "0" for m in batch_dims), calls


def test_eigh_derivatives(x64):
    """d/dA of sum(sin(w)) by reverse mode, alone and under vmap, against central differences of numpy's
    eigenvalues along symmetric directions E: truncation error h^2 |f'''| / 6 ~ 1e-10 at h = 1e-5, rounding
    eps / h ~ 1e-11; compared at 1e-8."""
    A = random_spd(5, [0.3, 0.9, 1.4, 2.2, 3.0], seed=1)
    f = lambda a: jnp.sum(jnp.sin(eigh(a)[0]))
    g = np.asarray(jax.grad(f)(jnp.asarray(A)))
    gv = np.asarray(jax.vmap(jax.grad(f))(jnp.stack([jnp.asarray(A)] * 2)))
    rng = np.random.default_rng(2)
    h = 1e-5
    for _ in range(3):
        E = rng.normal(size=A.shape)
        E = (E + E.T) / 2
        fd = (np.sum(np.sin(np.linalg.eigvalsh(A + h * E))) - np.sum(np.sin(np.linalg.eigvalsh(A - h * E)))) / (2 * h)
        assert abs(np.sum(g * E) - fd) <= 1e-8
        assert abs(np.sum(gv[1] * E) - fd) <= 1e-8
