"""Shared pieces of the kfac_thermo tests: tiny problems and independent dense float64 references.

Everything here is written out by hand from the definitions (REFERENCE.md section 3), not taken from
kfac_thermo: the GGN ``G = (1/b) sum_i J_i^T H_i J_i`` from ``jax.jacrev`` of the model and the output
Hessians of the losses, the empirical Fisher from per-example gradients, linear solves by
``numpy.linalg.solve`` and the device's mean law by ``scipy.linalg.expm``. Call these inside the ``x64``
fixture so every array is float64.
"""

from __future__ import annotations

import functools
import jax
import jax.numpy as jnp
import numpy as np
import scipy.linalg
from jax.flatten_util import ravel_pytree

import kfac_thermo

EPS64 = float(np.finfo(np.float64).eps)

# ----------------------------------------------------------------------------------------- tiny problems


def mlp_init(seed, sizes=(5, 4, 3)):
    """A tanh MLP (default 5-4-3: N = 5*4 + 4 + 4*3 + 3 = 39 parameters) as a list of dicts.

    Data and initial parameters come from numpy's seeded generator (cheaper than compiling JAX's PRNG).
    """
    rng = np.random.default_rng(seed)
    return [
        {"w": jnp.asarray(rng.normal(size=(m, n)) / np.sqrt(m)), "b": jnp.asarray(0.1 * rng.normal(size=n))}
        for m, n in zip(sizes[:-1], sizes[1:])
    ]


def mlp_predict(params, x):
    h = x
    for i, layer in enumerate(params):
        h = h @ layer["w"] + layer["b"]
        if i < len(params) - 1:
            h = jnp.tanh(h)
    return h


def problem(loss: str, *, seed=0, batch: int = 8, sizes=(5, 4, 3)):
    """``(params, inputs, targets)`` of the MLP on ``batch`` random examples (fixed seeds)."""
    params = mlp_init(seed, sizes)
    rng = np.random.default_rng(seed + 1000)
    x = jnp.asarray(rng.normal(size=(batch, sizes[0])))
    if loss == "softmax_cross_entropy":
        y = jnp.asarray(rng.integers(0, sizes[-1], size=batch))
    else:
        y = jnp.asarray(rng.normal(size=(batch, sizes[-1])))
    return params, x, y


# ------------------------------------------------------------------------------- losses written by hand


def example_loss(loss: str, z, y):
    """One example's loss, written out: ``-log softmax(z)_y`` or ``0.5 |z - y|^2``."""
    if loss == "softmax_cross_entropy":
        return -(z[y] - jax.scipy.special.logsumexp(z))
    return 0.5 * jnp.sum((z - y) ** 2)


def batch_loss(loss: str, predict, params, x, y):
    z = predict(params, x)
    return jnp.mean(jax.vmap(lambda zi, yi: example_loss(loss, zi, yi))(z, y))


def output_hessian(loss: str, z: np.ndarray) -> np.ndarray:
    """Hessian of one example's loss in the outputs: ``diag(p) - p p^T`` (softmax CE) or ``I`` (MSE)."""
    if loss == "softmax_cross_entropy":
        e = np.exp(z - z.max())
        p = e / e.sum()
        return np.diag(p) - np.outer(p, p)
    return np.eye(z.shape[0])


# ------------------------------------------------------------------------------------ dense references


def ravel(tree):
    """The pytree as one vector, in ``ravel_pytree`` order (traceable)."""
    return ravel_pytree(tree)[0]


def flat(tree) -> np.ndarray:
    return np.asarray(ravel(tree))


@functools.partial(jax.jit, static_argnums=(0, 1))
def grad(loss: str, predict, params, x, y):
    """The batch gradient as a pytree (what a train step hands to ``update``)."""
    return jax.grad(lambda p: batch_loss(loss, predict, p, x, y))(params)


@functools.partial(jax.jit, static_argnums=(0,))
def _output_jacobian(predict, params, x):
    theta, unravel = ravel_pytree(params)
    return jax.jacrev(lambda f: predict(unravel(f), x))(theta), predict(params, x)


@functools.partial(jax.jit, static_argnums=(0, 1))
def _per_example_gradients(loss: str, predict, params, x, y):
    theta, unravel = ravel_pytree(params)

    def losses(f):
        z = predict(unravel(f), x)
        return jax.vmap(lambda zi, yi: example_loss(loss, zi, yi))(z, y)

    return jax.jacrev(losses)(theta)


def ggn(loss: str, predict, params, x, y) -> np.ndarray:
    """``G = (1/b) sum_i J_i^T H_i J_i``, dense (N, N) float64."""
    J, z = (np.asarray(a) for a in _output_jacobian(predict, params, x))  # (b, dz, N), (b, dz)
    b = J.shape[0]
    return sum(J[i].T @ output_hessian(loss, z[i]) @ J[i] for i in range(b)) / b


def jacobian_outer(predict, params, x, R) -> np.ndarray:
    """``(1/b) sum_i J_i^T R_i R_i^T J_i`` for given output cotangents ``R`` (b, dz, m): the curvature whose
    factor has the columns ``J_i^T R_ik / sqrt(b)``, from dense Jacobians."""
    J = np.asarray(_output_jacobian(predict, params, x)[0])
    R = np.asarray(R)
    return sum(J[i].T @ R[i] @ R[i].T @ J[i] for i in range(J.shape[0])) / J.shape[0]


def empirical_fisher(loss: str, predict, params, x, y) -> np.ndarray:
    """``F = (1/b) sum_i g_i g_i^T`` with the per-example gradients ``g_i``."""
    per_example = np.asarray(_per_example_gradients(loss, predict, params, x, y))  # (b, N)
    return per_example.T @ per_example / per_example.shape[0]


def damped(G: np.ndarray, damping: float) -> np.ndarray:
    return G + damping * np.eye(G.shape[0])


def ngd_direction(G, g, damping) -> np.ndarray:
    """``(G + damping I)^-1 g`` by a dense solve."""
    return np.linalg.solve(damped(G, damping), g)


def device_mean(G, g, damping, t, x0) -> np.ndarray:
    """Mean readout of the OU device after ``t`` tau from ``x0``: ``e^{-A t}(x0 - x*) + x*``, ``A = G + lI``."""
    A = damped(G, damping)
    x_star = np.linalg.solve(A, g)
    return scipy.linalg.expm(-A * t) @ (x0 - x_star) + x_star


def device_variance(G, damping, t, kappa0) -> np.ndarray:
    """Per-coordinate readout variance: the diagonal of ``kappa0 A^-1 (I - e^{-2 A t})``."""
    A = damped(G, damping)
    cov = kappa0 * np.linalg.solve(A, np.eye(A.shape[0]) - scipy.linalg.expm(-2.0 * A * t))
    return np.diag(cov)


def law_rtol(A, t, x0, expected, b=None):
    """Rounding bound of the exact law ``x0 + M(A)(b - A x0)`` (b: the bias, default ``x0``, as on a first
    step) against ``expm``: both are sums of O(N) products of O(1)-conditioned terms of size at most
    ``(1 + t|A|)|x0| + |A^-1 b|`` (the matrix exponential's own error is ``~ N eps t|A|``, Higham 2005), each
    carrying ``<= N eps`` relative rounding; 100 covers the constants. Relative to ``|expected|``."""
    b = x0 if b is None else b
    n = A.shape[0]
    scale = (1.0 + t * np.linalg.norm(A, 2)) * np.linalg.norm(x0) + np.linalg.norm(np.linalg.solve(A, b))
    return 100 * n * EPS64 * scale / np.linalg.norm(expected)


def solve_rtol(A: np.ndarray) -> float:
    """Relative forward-error bound of a backward-stable float64 solve with ``A``: ``c n kappa(A) eps``.

    Both sides (ours and the library's) are backward stable, so each is within ``c n kappa eps`` of the
    exact solution (Higham, Accuracy and Stability, Thm 7.2); ``c n <= 100`` for the n <= 40 used here,
    and the GGN itself is formed to ``~ n eps`` relative, which the same bound covers.
    """
    return 2 * 100 * np.linalg.cond(A) * EPS64


def rel_err(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


# XLA:CPU options for one-shot test programs: skip LLVM's expensive optimizations (IEEE semantics unchanged),
# about a third off each compile. Per compile, never global configuration.
QUICK_COMPILE = {"xla_backend_optimization_level": 0, "xla_llvm_disable_expensive_passes": True}


def quick_jit(fn):
    """``jax.jit(fn)`` compiled with :data:`QUICK_COMPILE`, one executable per argument signature."""
    jitted, compiled = jax.jit(fn), {}

    def call(*args):
        leaves, treedef = jax.tree_util.tree_flatten(args)
        signature = (treedef, tuple((np.shape(a), str(jnp.result_type(a))) for a in leaves))
        if signature not in compiled:
            compiled[signature] = jitted.trace(*args).lower().compile(QUICK_COMPILE)
        return compiled[signature](*args)

    return call


def update(tx, g, state, params, batch):
    """``tx.update`` compiled (a compile is much cheaper than the first eager call, which compiles every
    primitive separately)."""
    return quick_jit(lambda g, state, params, batch: tx.update(g, state, params, batch=batch))(
        g, state, params, batch)


def natural_gradient_state(opt_state) -> kfac_thermo.NaturalGradientState:
    """The one :class:`NaturalGradientState` inside a (chained, injected) optimizer state."""
    is_ng = lambda s: isinstance(s, kfac_thermo.NaturalGradientState)
    found = [s for s in jax.tree_util.tree_leaves(opt_state, is_leaf=is_ng) if is_ng(s)]
    assert len(found) == 1, f"expected one NaturalGradientState, found {len(found)}"
    return found[0]
