"""The output Jacobian in the layer structure (``kfac_thermo._model.JacobianRows``) against explicit Jacobians.

For output directions ``R_ik`` (m per example, random here), ``W`` has the columns ``J_i^T R_ik`` with ``J_i`` the
Jacobian of example i's outputs in the flat parameters, taken by ``jax.jacrev`` of the model itself (float64):
the Gram must equal ``W^T W``, the products ``W c``, ``W^T v`` and the formed ``W^T`` the explicit ones, for
convolutions (strides, padding, with and without bias, input and kernel dilation, NHWC layout, the paper's
SmallCNN), dense layers at one or several positions, a ``register_dense`` mark and parameters in no layer. Both
forms of a layer's Gram (explicit Jacobians, and inner products of inputs times inner products of output
derivatives) are checked against each other on their own.
"""

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree

import kfac_thermo as kt
import kfac_reference as ref
from experiments.models import SmallCNN, split_model
from kfac_thermo._model import TappedModel, explicit_is_cheaper, explicit_jacobian, pairs_gram

B, M = 4, 3


def to64(tree):
    return jax.tree_util.tree_map(lambda a: a.astype(jnp.float64) if eqx.is_inexact_array(a) else a, tree)


class ConvNet(eqx.Module):
    conv: eqx.nn.Conv2d
    out: eqx.nn.Linear

    def __init__(self, bias, stride, padding, key):
        k1, k2 = jr.split(key)
        self.conv = eqx.nn.Conv2d(2, 3, kernel_size=(3, 2), stride=stride, padding=padding, use_bias=bias, key=k1)
        size = ((6 + 2 * padding - 3) // stride + 1) * ((5 + 2 * padding - 2) // stride + 1)
        self.out = eqx.nn.Linear(3 * size, 4, key=k2)

    def __call__(self, x):
        return self.out(jnp.tanh(self.conv(x)).reshape(-1))


class Conv1dNet(eqx.Module):
    conv: eqx.nn.Conv1d
    out: eqx.nn.Linear

    def __init__(self, key):
        k1, k2 = jr.split(key)
        self.conv = eqx.nn.Conv1d(2, 3, kernel_size=3, stride=2, padding=((2, 1),), dilation=2, key=k1)
        self.out = eqx.nn.Linear(3 * 4, 4, key=k2)

    def __call__(self, x):
        return self.out(jax.nn.softplus(self.conv(x)).reshape(-1))


class LaxConvNet(eqx.Module):
    """``lax.conv_general_dilated`` in NHWC / HWIO layout with input and kernel dilation, uneven strides and
    padding (what a transposed or atrous convolution lowers to)."""

    kernel: jax.Array
    bias: jax.Array
    out: eqx.nn.Linear

    def __init__(self, key):
        k1, k2 = jr.split(key)
        self.kernel = 0.3 * jr.normal(k1, (2, 3, 2, 3))  # (H, W, I, O)
        self.bias = jnp.asarray([0.1, -0.2, 0.3])
        self.out = eqx.nn.Linear(9 * 3 * 3, 4, key=k2)

    def __call__(self, x):  # x: (H, W, C) = (5, 6, 2)
        y = jax.lax.conv_general_dilated(x[None], self.kernel, window_strides=(1, 2), padding=((1, 0), (2, 1)),
                                         lhs_dilation=(2, 1), rhs_dilation=(1, 2),
                                         dimension_numbers=("NHWC", "HWIO", "NHWC"))
        return self.out(jnp.tanh(y + self.bias).reshape(-1))


class TokenNet(eqx.Module):
    """A dense layer shared over 2 tokens (pairs form with positions), a scale used elementwise and a weight used
    twice (both outside every layer: per-example rows), and a ``register_dense`` mark around a product hidden in
    a nested jit."""

    mix: eqx.nn.Linear
    scale: jax.Array
    tied: jax.Array
    w: jax.Array
    b: jax.Array

    def __init__(self, key):
        k1, k2, k3, k4 = jr.split(key, 4)
        self.mix = eqx.nn.Linear(16, 16, key=k1)
        self.scale = 1.0 + 0.1 * jr.normal(k2, (16,))
        self.tied = 0.3 * jr.normal(k3, (4, 4))
        self.w = 0.2 * jr.normal(k4, (32, 4))
        self.b = jnp.linspace(-0.1, 0.1, 4)

    def __call__(self, x):
        h = jnp.tanh(jax.vmap(self.mix)(x)) * self.scale  # (2 tokens, 16)
        flat = h.reshape(-1)
        y = kt.register_dense(jax.jit(jnp.matmul)(flat, self.w) + self.b, flat, self.w, self.b)
        return self.tied @ jnp.tanh(self.tied @ y)


def _cases():
    return {
        "conv bias stride 1 pad 1": (lambda: ConvNet(True, 1, 1, jr.key(1)), (2, 6, 5)),
        "conv no bias stride 1 pad 0": (lambda: ConvNet(False, 1, 0, jr.key(2)), (2, 6, 5)),
        "conv bias stride 2 pad 1": (lambda: ConvNet(True, 2, 1, jr.key(3)), (2, 6, 5)),
        "conv1d stride dilation asymmetric pad": (lambda: Conv1dNet(jr.key(4)), (2, 9)),
        "lax conv NHWC dilated": (lambda: LaxConvNet(jr.key(7)), (5, 6, 2)),
        "SmallCNN 8x8": (lambda: SmallCNN(8, key=jr.key(5), channels=3, hidden=5, classes=4), (8, 8)),
        "tokens, rest leaves, register_dense": (lambda: TokenNet(jr.key(6)), (2, 16)),
    }


@pytest.mark.parametrize("name", list(_cases()))
def test_gram_and_products_equal_the_explicit_jacobian(x64, name):
    make, shape = _cases()[name]
    params, predict = split_model(to64(make()))
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.normal(size=(B,) + shape))
    flat, unravel = ravel_pytree(params)
    n = flat.shape[0]
    dz = predict(params, x).shape[1]
    R = jnp.asarray(rng.normal(size=(M, B, dz)))
    v, c = jnp.asarray(rng.normal(size=n)), jnp.asarray(rng.normal(size=B * M))

    @ref.quick_jit
    def structured(params, v, c):
        # Directions that depend on the outputs: the batch's z must reach them (the reference uses the model's).
        rows = TappedModel(predict, params, x[0]).jacobian(params, x, lambda z: R * (1.0 + z))
        Wc = ravel_pytree(jax.tree_util.tree_unflatten(jax.tree_util.tree_structure(params), rows.apply(c)))[0]
        return rows.gram(), Wc, rows.transpose_apply(jax.tree_util.tree_leaves(unravel(v))), rows.matrix()

    gram, Wc, Wtv, Wt = (np.asarray(a) for a in structured(params, v, c))
    # The reference: per-example Jacobians of the model itself, W[:, (i, k)] = J_i^T R_ik.
    single = lambda flat, xi: predict(unravel(flat), xi[None])[0]
    J = np.asarray(jax.jit(jax.vmap(jax.jacrev(single), in_axes=(None, 0)))(flat, x))  # (b, dz, N)
    R = np.asarray(R) * (1.0 + np.asarray(predict(params, x)))
    W = np.einsum("icn,kic->nik", J, R).reshape(n, B * M)
    scale = np.abs(W).max() ** 2
    # Sums of at most N products of entries bounded by max|W|: rounding <= N eps max|W|^2 per entry.
    tol = 10 * n * ref.EPS64 * scale
    np.testing.assert_allclose(gram, W.T @ W, rtol=0, atol=tol)
    np.testing.assert_allclose(Wc, W @ np.asarray(c), rtol=0, atol=tol * np.abs(np.asarray(c)).sum() / np.abs(W).max())
    np.testing.assert_allclose(Wtv, W.T @ np.asarray(v), rtol=0,
                               atol=tol * np.abs(np.asarray(v)).sum() / np.abs(W).max())
    np.testing.assert_allclose(Wt, W.T, rtol=0, atol=tol / np.abs(W).max())


def test_every_case_uses_the_layer_structure():
    """The cases above exercise both Gram forms, convolutions, bias columns, marks and rest leaves."""
    seen = set()
    for make, shape in _cases().values():
        params, predict = split_model(make())
        tapped = TappedModel(predict, params, jnp.zeros(shape))
        seen |= {layer.kind for layer in tapped.layers} | ({"rest"} if tapped.rest else set())
        seen |= {"bias" for layer in tapped.layers if layer.bias is not None}
    assert seen == {"conv", "dense", "tagged", "rest", "bias"}


@pytest.mark.parametrize("T,n_in,n_out", [(1, 7, 3), (3, 5, 4), (6, 2, 2)])
def test_both_gram_forms_agree(x64, T, n_in, n_out):
    """``sum_{t,u} (a_it . a_ju)(s_ikt . s_jlu)`` equals ``<J_ik, J_jl>`` with ``J_ik = sum_t s_ikt a_it^T`` formed
    by hand, whichever form the cost rule would pick."""
    rng = np.random.default_rng(T)
    a, s = rng.normal(size=(B, n_in, T)), rng.normal(size=(M, B, n_out, T))
    J = np.stack([sum(np.outer(s[k, i, :, t], a[i, :, t]) for t in range(T)) for i in range(B) for k in range(M)])
    reference = J.reshape(B * M, -1) @ J.reshape(B * M, -1).T
    tol = 100 * T * T * max(n_in, n_out) * ref.EPS64 * np.abs(reference).max()
    np.testing.assert_allclose(np.asarray(explicit_jacobian(jnp.asarray(a), jnp.asarray(s))), J, rtol=0, atol=tol)
    np.testing.assert_allclose(np.asarray(pairs_gram(jnp.asarray(a), jnp.asarray(s))), reference, rtol=0, atol=tol)
    # One position: inner products are cheaper; a small weight at many positions: the explicit form.
    assert not explicit_is_cheaper(jnp.asarray(a[..., :1]), jnp.asarray(s[..., :1]))
    assert explicit_is_cheaper(jnp.zeros((B, 2, 100)), jnp.zeros((M, B, 2, 100)))
