"""K-FAC's factors against their definitions written out by hand, and the layers K-FAC finds in equinox models.

For a layer with input rows ``a_it`` (patches for a convolution, a constant 1 appended with a bias) and output
derivatives ``s_ikt`` over b examples, T positions and m output directions,
``A = (1/(bT)) sum a a^T`` and ``S = (1/b) sum s s^T`` (``kfac_thermo._curvature._kronecker``). Here the rows are built
with numpy loops (patches with padding and stride) and the derivatives from the chain rule written out
(``tanh' = 1 - tanh^2``, the softmax Hessian ``diag(p) - p p^T``), never from the library's tap machinery.

Tolerance (float64): each factor entry is a sum of K = b T m products whose factors carry a relative rounding error
of at most ``c eps`` (c: the longest chain of float operations producing them, bounded by the number of
parameters); by Higham's bound for sums the two computations then differ by at most
``2 (K + 2c) eps sum_k |x_k y_k|``, which :func:`sum_bound` evaluates entrywise.
"""

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest

import kfac_thermo as kt
from experiments.models import split_model
from kfac_thermo._curvature import KFACModel, batch_statistics, factors

EPS = float(np.finfo(np.float64).eps)
B, DZ = 5, 3


def to64(tree):
    return jax.tree_util.tree_map(lambda l: l.astype(jnp.float64) if eqx.is_inexact_array(l) else l, tree)


def sum_bound(x, y, c):
    """Entrywise bound on two float64 evaluations of ``x^T y / norm`` (rows of x, y are the K summed terms,
    already divided by the normalisation), see the module docstring."""
    K = x.shape[0]
    return 2 * (K + 2 * c) * EPS * (np.abs(x).T @ np.abs(y))


def softmax_hessian(z):
    p = np.exp(z - z.max())
    p /= p.sum()
    return np.diag(p) - np.outer(p, p), p


def output_directions(kind, z, y):
    """Per example the output cotangents: a factor L with L L^T = H (GGN) or the loss gradient (empirical)."""
    out = []
    for zi, yi in zip(z, y):
        H, p = softmax_hessian(zi)
        if kind == "ggn":
            w, V = np.linalg.eigh(H)
            out.append(V * np.sqrt(np.clip(w, 0, None)))  # any factor: S depends on L L^T only
        else:
            out.append((p - np.eye(len(p))[yi])[:, None])
    return out


def kfac_factors(predict, params, x, y, kind):
    model = KFACModel(predict, params, x, "diagonal")
    stats = batch_statistics(model, params, x, y, kind, kt.SoftmaxCrossEntropy(), jr.key(0))
    A, S, D = factors(model, stats)
    return model, [np.asarray(a) for a in A], [np.asarray(s) for s in S], D


def check(name, ours, rows_a, rows_b, c):
    bound = sum_bound(rows_a, rows_b, c)
    ref = rows_a.T @ rows_b
    err = np.abs(ours - ref)
    assert np.all(err <= bound), (name, float(np.max(err - bound)), float(np.max(np.abs(ref))))


# ----------------------------------------------------------------------------------------- Linear layers


class TwoLinear(eqx.Module):
    first: eqx.nn.Linear
    second: eqx.nn.Linear

    def __init__(self, bias, key):
        k1, k2 = jr.split(key)
        self.first = eqx.nn.Linear(4, 6, use_bias=bias, key=k1)
        self.second = eqx.nn.Linear(6, DZ, use_bias=bias, key=k2)

    def __call__(self, x):
        return self.second(jnp.tanh(self.first(x)))


@pytest.mark.parametrize("kind", ["ggn", "empirical_fisher"])
@pytest.mark.parametrize("bias", [True, False])
def test_linear_factors_by_hand(x64, bias, kind):
    params, predict = split_model(to64(TwoLinear(bias, jr.key(0))))
    rng = np.random.default_rng(1)
    x = rng.normal(size=(B, 4))
    y = rng.integers(0, DZ, size=B)
    model, A, S, D = kfac_factors(predict, params, jnp.asarray(x), jnp.asarray(y), kind)
    assert [layer.kind for layer in model.layers] == ["dense", "dense"] and D == []
    assert [layer.bias is not None for layer in model.layers] == [bias, bias]

    W1, W2 = np.asarray(params.first.weight), np.asarray(params.second.weight)
    b1 = np.asarray(params.first.bias) if bias else 0.0
    b2 = np.asarray(params.second.bias) if bias else 0.0
    h = np.tanh(x @ W1.T + b1)
    z = h @ W2.T + b2
    ones = np.ones((B, 1))
    a1, a2 = (np.hstack([v, ones]) if bias else v for v in (x, h))
    R = output_directions(kind, z, y)
    # Output derivatives: s2 = R (layer 2 feeds the outputs), s1 = tanh'(.) * (W2^T s2).
    s2 = np.concatenate([Ri.T for Ri in R])
    s1 = np.concatenate([(1 - h[i] ** 2) * (W2.T @ R[i]).T for i in range(B)])
    c = 4 * 6 * 3  # a generous count of the operations on any path
    check("A1", A[0], a1 / np.sqrt(B), a1 / np.sqrt(B), c)
    check("A2", A[1], a2 / np.sqrt(B), a2 / np.sqrt(B), c)
    check("S1", S[0], s1 / np.sqrt(B), s1 / np.sqrt(B), c)
    check("S2", S[1], s2 / np.sqrt(B), s2 / np.sqrt(B), c)


# ------------------------------------------------------------------------------------------- Conv2d layer


class ConvNet(eqx.Module):
    conv: eqx.nn.Conv2d
    out: eqx.nn.Linear

    def __init__(self, bias, stride, key):
        k1, k2 = jr.split(key)
        self.conv = eqx.nn.Conv2d(2, 3, kernel_size=(3, 2), stride=stride, padding=1, use_bias=bias, key=k1)
        size = ((6 + 2 - 3) // stride + 1) * ((5 + 2 - 2) // stride + 1)
        self.out = eqx.nn.Linear(3 * size, DZ, key=k2)

    def __call__(self, x):
        return self.out(jnp.tanh(self.conv(x)).reshape(-1))


def patches_by_hand(x, kh, kw, stride, pad):
    """Rows (positions, C kh kw) of one example (C, H, W): zero padding, window starts every ``stride``."""
    C, H, W = x.shape
    xp = np.zeros((C, H + 2 * pad, W + 2 * pad))
    xp[:, pad:pad + H, pad:pad + W] = x
    rows = []
    for r in range(0, H + 2 * pad - kh + 1, stride):
        for c in range(0, W + 2 * pad - kw + 1, stride):
            rows.append(xp[:, r:r + kh, c:c + kw].reshape(-1))
    return np.asarray(rows)


@pytest.mark.parametrize("kind", ["ggn", "empirical_fisher"])
@pytest.mark.parametrize("bias,stride", [(True, 1), (False, 1), (True, 2)])
def test_conv2d_factors_by_hand(x64, bias, stride, kind):
    params, predict = split_model(to64(ConvNet(bias, stride, jr.key(3))))
    rng = np.random.default_rng(4)
    x = rng.normal(size=(B, 2, 6, 5))
    y = rng.integers(0, DZ, size=B)
    model, A, S, D = kfac_factors(predict, params, jnp.asarray(x), jnp.asarray(y), kind)
    assert [layer.kind for layer in model.layers] == ["conv", "dense"] and D == []
    assert (model.layers[0].bias is not None) == bias

    K = np.asarray(params.conv.weight).reshape(3, -1)  # (O, I kh kw): the patch feature order
    cb = np.asarray(params.conv.bias).reshape(-1) if bias else np.zeros(3)
    W2, b2 = np.asarray(params.out.weight), np.asarray(params.out.bias)
    patches = [patches_by_hand(xi, 3, 2, stride, 1) for xi in x]
    T = patches[0].shape[0]
    conv_out = [P @ K.T + cb for P in patches]  # (T, O) per example
    z = np.stack([W2 @ np.tanh(o.T).reshape(-1) + b2 for o in conv_out])
    R = output_directions(kind, z, y)
    rows_a, rows_s = [], []
    for i in range(B):
        rows_a.append(np.hstack([patches[i], np.ones((T, 1))]) if bias else patches[i])
        # d z / d conv_out[o, t] = W2[:, o T + t] * tanh'(conv_out[t, o]); the flatten is channel-major.
        for k in range(R[i].shape[1]):
            g = (W2.T @ R[i][:, k]).reshape(3, T).T * (1 - np.tanh(conv_out[i]) ** 2)  # (T, O)
            rows_s.append(g)
    rows_a = np.concatenate(rows_a) / np.sqrt(B * T)
    rows_s = np.concatenate(rows_s) / np.sqrt(B)
    c = int(K.size + W2.size)
    check("A conv", A[0], rows_a, rows_a, c)
    check("S conv", S[0], rows_s, rows_s, c)


# ------------------------------------------------------------------------------ what K-FAC finds, and where


class Attention(eqx.Module):
    attention: eqx.nn.MultiheadAttention
    head: eqx.nn.Linear

    def __init__(self, key):
        k1, k2 = jr.split(key)
        self.attention = eqx.nn.MultiheadAttention(2, 4, use_query_bias=True, use_output_bias=True, key=k1)
        self.head = eqx.nn.Linear(3 * 4, DZ, key=k2)

    def __call__(self, x):
        return self.head(self.attention(x, x, x).reshape(-1))


class LoRALinear(eqx.Module):
    """A frozen dense weight plus a trainable low-rank adapter ``(alpha / r) B A``, as in LoRA fine-tuning."""

    frozen: jax.Array
    A: jax.Array
    B: jax.Array
    scale: float = eqx.field(static=True)

    def __init__(self, n_in, n_out, rank, key):
        k1, k2 = jr.split(key)
        self.frozen = jr.normal(k1, (n_out, n_in), jnp.float64)
        self.A = jr.normal(k2, (rank, n_in), jnp.float64) / np.sqrt(n_in)
        self.B = jnp.full((n_out, rank), 0.1, jnp.float64)
        self.scale = 32.0 / rank

    def __call__(self, x):
        return self.frozen @ x + self.scale * (self.B @ (self.A @ x))


def test_attention_projections_are_dense_blocks(x64):
    params, predict = split_model(to64(Attention(jr.key(5))))
    x = jr.normal(jr.key(6), (B, 3, 4), jnp.float64)
    table = {row.path: row.block for row in kt.kfac_blocks(predict, params, x)}
    for proj in ("query_proj", "key_proj", "value_proj", "output_proj"):
        assert table[f".attention.{proj}.weight"].startswith("kronecker dense: S 4x4")
    assert "inputs + bias .attention.query_proj.bias" in table[".attention.query_proj.weight"]
    assert table[".attention.query_proj.bias"] == "kronecker: bias column of .attention.query_proj.weight"
    # The query projection's input rows are the tokens themselves (T = 3 positions) with a 1 for the bias.
    _, A, _, _ = kfac_factors(predict, params, x, jnp.zeros(B, jnp.int32), "empirical_fisher")
    rows = np.concatenate([np.asarray(x).reshape(-1, 4), np.ones((3 * B, 1))], axis=1) / np.sqrt(3 * B)
    check("A query", A[0], rows, rows, 16)


def test_lora_adapters_are_dense_blocks(x64):
    lora = LoRALinear(6, DZ, 2, jr.key(7))
    trainable = eqx.tree_at(lambda m: m.frozen, jax.tree_util.tree_map(lambda _: True, lora), False)
    params, static = eqx.partition(lora, trainable)  # only the adapter trains: the frozen weight is a constant
    predict = lambda params, x: jax.vmap(eqx.combine(params, static))(x)
    x = jr.normal(jr.key(8), (B, 6), jnp.float64)
    blocks = kt.kfac_blocks(predict, params, x)
    assert [row.block for row in blocks] == ["kronecker dense: S 2x2 (outputs) x A 6x6 (inputs)",
                                             "kronecker dense: S 3x3 (outputs) x A 2x2 (inputs)"]
    _, A, _, _ = kfac_factors(predict, params, x, jnp.zeros(B, jnp.int32), "empirical_fisher")
    xs = np.asarray(x) / np.sqrt(B)
    check("A of lora A", A[0], xs, xs, 12)
    ax = xs @ np.asarray(params.A).T  # the adapter's inner activations A x
    check("A of lora B", A[1], ax, ax, 12)


class ConvNormNet(eqx.Module):
    conv: eqx.nn.Conv1d
    norm: eqx.nn.LayerNorm
    out: eqx.nn.Linear

    def __init__(self, key):
        k1, k2 = jr.split(key)
        self.conv = eqx.nn.Conv1d(2, 3, 3, key=k1)
        self.norm = eqx.nn.LayerNorm(15)
        self.out = eqx.nn.Linear(15, DZ, key=k2)

    def __call__(self, x):
        return self.out(self.norm(self.conv(x).reshape(-1)))


def test_conv1d_and_fallback_are_listed(x64):
    params, predict = split_model(to64(ConvNormNet(jr.key(9))))
    x = jnp.zeros((B, 2, 7))
    table = kt.kfac_blocks(predict, params, x)
    assert [row.block.split(":")[0] for row in table] == [
        "kronecker conv", "kronecker", "diagonal", "diagonal", "kronecker dense", "kronecker"]
    identity = kt.kfac_blocks(predict, params, x, fallback="identity")
    assert [row.block for row in identity][2:4] == ["identity", "identity"]
    printed = str(table)
    assert printed.splitlines()[0].split() == ["parameter", "shape", "block"]
    assert ".norm.weight" in printed and "(15,)" in printed


class Checkpointed(eqx.Module):
    """A dense layer inside jax.checkpoint: the automatic search does not look inside nested calls."""

    w: jax.Array
    b: jax.Array
    register: bool = eqx.field(static=True)

    def __call__(self, x):
        y = jax.checkpoint(lambda x, w, b: x @ w + b)(x, self.w, self.b)
        return kt.register_dense(y, x, self.w, self.b) if self.register else y


def test_register_dense_marks_a_hidden_layer(x64):
    rng = np.random.default_rng(10)
    w, b = jnp.asarray(rng.normal(size=(4, DZ))), jnp.asarray(rng.normal(size=DZ))
    x, y = jnp.asarray(rng.normal(size=(B, 4))), jnp.asarray(rng.integers(0, DZ, size=B))
    unmarked = split_model(Checkpointed(w, b, False))
    with pytest.raises(ValueError, match=r"no layer K-FAC can factor.*\.w \(4, 3\): remat"):
        kt.kfac_blocks(unmarked[1], unmarked[0], x)
    params, predict = split_model(Checkpointed(w, b, True))
    assert [row.block for row in kt.kfac_blocks(predict, params, x)] == [
        "kronecker tagged: S 3x3 (outputs) x A 5x5 (inputs + bias .b)", "kronecker: bias column of .w"]
    # The marked layer's factors are those of the same eqx.nn.Linear (weight stored transposed).
    linear = eqx.nn.Linear(4, DZ, key=jr.key(0))
    linear = eqx.tree_at(lambda l: (l.weight, l.bias), linear, (w.T, b))
    lin_params, lin_predict = split_model(linear)
    _, A1, S1, _ = kfac_factors(predict, params, x, y, "ggn")
    _, A2, S2, _ = kfac_factors(lin_predict, lin_params, x, y, "ggn")
    np.testing.assert_allclose(A1[0], A2[0], rtol=0, atol=100 * EPS * np.abs(A2[0]).max())
    np.testing.assert_allclose(S1[0], S2[0], rtol=0, atol=100 * EPS * np.abs(S2[0]).max())


def test_register_dense_rejects_a_non_parameter_weight(x64):
    def predict(params, x):
        w = params["w"] * 2.0
        return kt.register_dense(x @ w, x, w)

    with pytest.raises(ValueError, match="register_dense: weight and bias must be parameter arrays"):
        kt.kfac_blocks(predict, {"w": jnp.ones((4, 3))}, jnp.zeros((2, 4)))


def test_no_supported_layer_lists_what_was_found():
    def predict(params, x):
        return jnp.tanh(x * params["scale"]) + params["shift"]

    params = {"scale": jnp.ones(3), "shift": jnp.zeros(3)}
    with pytest.raises(ValueError, match=r"no layer K-FAC can factor.*\['scale'\] \(3,\): mul; \['shift'\] \(3,\): "):
        kt.kfac_blocks(predict, params, jnp.zeros((2, 3)))
    tx = kt.kfac(0.1, predict_fn=predict, loss="mse", damping=0.1, example_inputs=jnp.zeros((2, 3)))
    with pytest.raises(ValueError, match="no layer K-FAC can factor"):
        tx.init(params)


# ------------------------------------------------------------------------- statistics in the gradient's pass


@pytest.mark.parametrize("kind", ["ggn", "empirical_fisher", "mc_fisher", "ggn_curvature_prop"])
def test_statistics_in_the_gradient_pass(x64, kind):
    """loss_grads_and_statistics: the loss and gradient of the batch loss, and statistics giving the same
    factors and fallback diagonals as the optimizer's own pass (same key for the Monte-Carlo targets). Both
    sides evaluate the same sums in a different order: 1e3 eps relative covers the few hundred operations."""
    params, predict = split_model(to64(ConvNormNet(jr.key(11))))  # a convolution, a dense layer, fallbacks
    rng = np.random.default_rng(12)
    x, y = jnp.asarray(rng.normal(size=(B, 2, 7))), jnp.asarray(rng.integers(0, DZ, size=B))
    key = jr.key(13)
    fn = jax.jit(kt.loss_grads_and_statistics(predict, "softmax_cross_entropy", x, curvature=kind))
    value, grads, stats = fn(params, (x, y), key)
    loss = kt.SoftmaxCrossEntropy()
    ref_value, ref_grads = jax.value_and_grad(lambda p: jnp.mean(jax.vmap(loss)(predict(p, x), y)))(params)
    scale = max(float(jnp.max(jnp.abs(g))) for g in jax.tree_util.tree_leaves(ref_grads))
    assert abs(float(value - ref_value)) <= 100 * EPS * abs(float(ref_value))
    for g, r in zip(jax.tree_util.tree_leaves(grads), jax.tree_util.tree_leaves(ref_grads)):
        np.testing.assert_allclose(g, r, rtol=0, atol=1e3 * EPS * scale)
    # Passes beyond the gradient's own: no forward pass, the reverse passes of the extra output directions.
    assert float(stats.work.forward_passes) == 0
    assert float(stats.work.reverse_passes) == {"ggn": DZ - 1, "empirical_fisher": 0, "mc_fisher": 1,
                                                "ggn_curvature_prop": 1}[kind]
    model = KFACModel(predict, params, x, "diagonal")
    ours = factors(model, stats)
    own = factors(model, batch_statistics(model, params, x, y, kind, loss, key))
    assert [d.shape for d in ours[2]] == [(15,), (15,)]
    for a, r in zip(ours[0] + ours[1] + ours[2], own[0] + own[1] + own[2]):
        np.testing.assert_allclose(a, r, rtol=0, atol=1e3 * EPS * float(jnp.max(jnp.abs(r))))


@pytest.mark.parametrize("n", [100, 385, 1025])
def test_gram_matches_dense(x64, n):
    """The blocked Gram (1, 3 and 6 column blocks, uneven edges) equals ``X^T X`` within the bound for sums of
    ``r`` products of exact inputs (``c = 0``)."""
    from kfac_thermo._curvature import gram

    X = np.random.default_rng(n).normal(size=(300, n))
    ours = np.asarray(jax.jit(gram)(jnp.asarray(X)))
    assert np.all(np.abs(ours - X.T @ X) <= sum_bound(X, X, 0))


@pytest.mark.parametrize("kind", ["mc_fisher", "ggn_curvature_prop"])
def test_sampled_factors_are_unbiased(x64, kind):
    """The output-side factors ``S`` of the sampled curvatures average to the GGN's: ``s`` is linear in the output
    cotangent ``R`` and ``E[R R^T] = H`` for both (a target from the model's softmax; Rademacher weights on the
    Hessian factor's columns). Each entry's mean over M = 2000 keys is within 5 standard errors of the GGN factor
    (the standard error estimated from the same draws, ~1.6% relative error, absorbed by the 5)."""
    params, predict = split_model(to64(TwoLinear(True, jr.key(0))))
    rng = np.random.default_rng(1)
    x, y = jnp.asarray(rng.normal(size=(B, 4))), jnp.asarray(rng.integers(0, DZ, size=B))
    model = KFACModel(predict, params, x, "diagonal")
    loss = kt.SoftmaxCrossEntropy()
    exact = factors(model, batch_statistics(model, params, x, y, "ggn", loss, jr.key(0)))[1]

    @jax.jit
    @jax.vmap
    def draw(key):
        return factors(model, batch_statistics(model, params, x, y, kind, loss, key))[1]

    M = 2000
    for sampled, S in zip(draw(jr.split(jr.key(2), M)), exact):
        sampled = np.asarray(sampled)
        se = sampled.std(0, ddof=1) / np.sqrt(M)
        assert np.all(np.abs(sampled.mean(0) - np.asarray(S)) <= 5 * se + 1e-12)
        assert np.median(se) > 1e-6 * np.abs(S).max()  # the draws vary: a statistical check
