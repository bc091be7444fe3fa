"""The Laplace posterior (kfac_thermo.laplace) against closed forms and brute-force curvature.

References, all float64 and independent of the library's curvature code:
- linear-Gaussian (``f = X w``, MSE, prior ``N(0, delta^-1 I)``): the Laplace posterior is the exact posterior
  ``N(w*, (X^T X + delta I)^-1)`` per output and the Laplace evidence is the Bayesian linear regression evidence
  ``log N(y; 0, I + X X^T / delta)``, exactly;
- a small tanh MLP with softmax cross-entropy: the GGN ``sum_i J_i^T H_i J_i`` from ``jax.jacfwd`` Jacobians and the
  softmax Hessian ``diag(p) - p p^T`` written out, and K-FAC's factors from the layer inputs and the output
  derivatives ``(dz/dh)^T L`` by ``jax.jacfwd`` of the outputs in the layer's pre-activation.

Sample moments: for S independent samples of ``N(m, C)`` the sample mean's entry i has std ``sqrt(C_ii / S)`` and the
sample covariance's entry ij ``sqrt((C_ii C_jj + C_ij^2) / S)``; entries are checked at 5 of those standard deviations
(a false alarm per entry below 1e-6).
"""

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree

import kfac_thermo as kt
import thermox

SIGMAS = 5.0


def check_moments(samples, mean, cov):
    """Sample mean and covariance of ``samples`` (S, n) within SIGMAS standard errors of ``mean``, ``cov``."""
    S = samples.shape[0]
    m_hat, c_hat = np.mean(samples, axis=0), np.cov(samples.T)
    d = np.diag(cov)
    np.testing.assert_array_less(np.abs(m_hat - mean), SIGMAS * np.sqrt(d / S) + 1e-12)
    np.testing.assert_array_less(np.abs(c_hat - cov), SIGMAS * np.sqrt((np.outer(d, d) + cov**2) / S) + 1e-12)


def linear_problem(n=40, features=3, outputs=2, delta=2.0):
    X = jr.normal(jr.PRNGKey(0), (n, features))
    Y = X @ jr.normal(jr.PRNGKey(1), (features, outputs)) + 0.3 * jr.normal(jr.PRNGKey(2), (n, outputs))
    params = {"w": jnp.linalg.solve(X.T @ X + delta * jnp.eye(features), X.T @ Y)}
    return X, Y, params, (lambda p, x: x @ p["w"])


def linear_covariance(X, delta, outputs):
    """The exact posterior covariance in ``ravel_pytree`` order of ``w`` (features, outputs): ``C (x) I``."""
    return np.kron(np.linalg.inv(X.T @ X + delta * np.eye(X.shape[1])), np.eye(outputs))


def blr_evidence(X, Y, delta):
    C = np.eye(X.shape[0]) + X @ X.T / delta
    return sum(jax.scipy.stats.multivariate_normal.logpdf(Y[:, c], jnp.zeros(X.shape[0]), C)
               for c in range(Y.shape[1]))


@pytest.mark.parametrize("n", [40, 2])  # 40 x 2 rows >= 6 parameters: dense; 2 x 2 < 6: low-rank (Woodbury)
def test_linear_gaussian_posterior_and_evidence_are_exact(x64, n):
    X, Y, params, predict = linear_problem(n=n)
    post = kt.laplace(predict, params, (X, Y), loss="mse", structure="full", prior_precision=2.0)
    assert type(post.blocks[0]).__name__ == ("DenseBlock" if n == 40 else "LowRankBlock")
    np.testing.assert_allclose(post.log_marginal_likelihood(), blr_evidence(X, Y, 2.0), rtol=1e-10)
    cov = linear_covariance(X, 2.0, 2)
    # The linearised variance of f = X w is exact: x^T C x per output.
    np.testing.assert_allclose(post.functional_variance(X), np.repeat(np.einsum("if,fg,ig->i", X, cov[::2, ::2], X)
                                                                      [:, None], 2, axis=1), rtol=1e-10)
    samples = ravel_samples(post.sample(jr.PRNGKey(3), 20000))
    check_moments(samples, ravel_pytree(params)[0], cov)


def ravel_samples(tree):
    return np.asarray(jax.vmap(lambda p: ravel_pytree(p)[0])(tree))


def test_temperature_scales_the_covariance(x64):
    X, Y, params, predict = linear_problem()
    post = kt.laplace(predict, params, (X, Y), loss="mse", prior_precision=2.0, temperature=0.25)
    check_moments(ravel_samples(post.sample(jr.PRNGKey(4), 20000)), ravel_pytree(params)[0],
                  0.25 * linear_covariance(X, 2.0, 2))
    # The evidence is the untempered model's.
    np.testing.assert_allclose(post.log_marginal_likelihood(), blr_evidence(X, Y, 2.0), rtol=1e-10)


def test_num_data_scales_the_data_term(x64):
    """A subset standing for num_data examples: the GGN sum times num_data / n."""
    X, Y, params, predict = linear_problem()
    post = kt.laplace(predict, params, (X, Y), loss="mse", prior_precision=2.0, num_data=120)
    np.testing.assert_allclose(post.blocks[0].matrix, 3.0 * np.kron(X.T @ X, np.eye(2)), rtol=1e-10)


def test_prior_precision_maximises_the_analytic_evidence(x64):
    X, Y, params, predict = linear_problem()
    post = kt.laplace(predict, params, (X, Y), loss="mse", prior_precision=1.0)
    grid = np.exp(np.linspace(np.log(0.01), np.log(100.0), 4001))
    best = grid[np.argmax([post.log_marginal_likelihood(d) for d in grid])]
    # The evidence of a posterior refit at each delta would move w*; with w* fixed the Laplace evidence is what
    # laplace-torch maximises too. The grid spacing is 0.23%: agreement to 1%.
    tuned = post.optimize_prior_precision(steps=500, learning_rate=0.05).prior_precision
    np.testing.assert_allclose(tuned, best, rtol=1e-2)


# ---------------------------------------------------------------------------------------- MLP, brute force

D_IN, HIDDEN, CLASSES, N = 4, 5, 3, 12


def mlp():
    k1, k2, k3, k4 = jr.split(jr.PRNGKey(5), 4)
    params = {"w1": jr.normal(k1, (D_IN, HIDDEN)) / 2, "b1": jr.normal(k2, (HIDDEN,)) / 4,
              "w2": jr.normal(k3, (HIDDEN, CLASSES)) / 2, "b2": jr.normal(k4, (CLASSES,)) / 4}
    X = jr.normal(jr.PRNGKey(6), (N, D_IN))
    y = jr.randint(jr.PRNGKey(7), (N,), 0, CLASSES)
    predict = lambda p, x: jnp.tanh(x @ p["w1"] + p["b1"]) @ p["w2"] + p["b2"]
    return jax.tree_util.tree_map(lambda a: a.astype(jnp.float64), params), X.astype(jnp.float64), y, predict


def brute_force_ggn(params, X, predict):
    flat, unravel = ravel_pytree(params)
    J = jax.vmap(lambda x: jax.jacfwd(lambda f: predict(unravel(f), x[None])[0])(flat))(X)  # (n, dz, N)
    p = jax.nn.softmax(predict(params, X))
    H = jax.vmap(lambda p: jnp.diag(p) - jnp.outer(p, p))(p)
    return np.asarray(jnp.einsum("idn,ide,iem->nm", J, H, J))


def selection(post, params):
    """The matrix of the layout's split: row j of block b is the flat parameter entry it holds."""
    flat, unravel = ravel_pytree(params)
    basis = jax.vmap(lambda e: post.layout.split(unravel(e)))(jnp.eye(flat.shape[0]))
    return [np.asarray(v).T for v in basis]


def reference_precision(block, delta):
    """``G_b + delta I`` written out from the block's stored curvature with numpy (not through its drift)."""
    name = type(block).__name__
    if name == "DenseBlock":
        G = np.asarray(block.matrix)
    elif name == "LowRankBlock":
        G = np.asarray(block.factor) @ np.asarray(block.factor).T
    elif name == "KroneckerBlock":  # row-major vec(V): (L (x) R) vec(V) = vec(L V R)
        G = np.kron(np.asarray(block.left), np.asarray(block.right))
    else:
        G = np.diag(np.asarray(block.diagonal))
    return G + delta * np.eye(G.shape[0])


def test_full_diag_and_last_layer_match_the_brute_force_ggn(x64):
    params, X, y, predict = mlp()
    G = brute_force_ggn(params, X, predict)
    full = kt.laplace(predict, params, (X, y), structure="full", batch_size=5)
    block = full.blocks[0]  # 12 x 2 rows < 43 parameters: the Woodbury factor
    np.testing.assert_allclose(block.factor @ block.factor.T, G, atol=1e-12)
    diag = kt.laplace(predict, params, (X, y), structure="diag", batch_size=5)
    np.testing.assert_allclose(diag.blocks[0].diagonal, np.diag(G), atol=1e-12)
    last = kt.laplace(predict, params, (X, y), structure="last_layer", batch_size=5)
    (P,) = selection(last, params)
    assert P.shape == (CLASSES * (HIDDEN + 1), G.shape[0])
    np.testing.assert_allclose(last.blocks[0].matrix, P @ G @ P.T, atol=1e-12)


def test_kfac_factors_match_their_definition(x64):
    params, X, y, predict = mlp()
    post = kt.laplace(predict, params, (X, y), structure="kfac", batch_size=5)
    hidden = jnp.tanh(X @ params["w1"] + params["b1"])
    # Output derivatives of the two layers' pre-activations h, times the columns of L with L L^T = H.
    L = jax.vmap(kt.SoftmaxCrossEntropy().hessian_factor)(predict(params, X))  # (n, dz, m)
    dz_dh2 = jnp.broadcast_to(jnp.eye(CLASSES), (N, CLASSES, CLASSES))
    dz_dh1 = jax.vmap(lambda h: jax.jacfwd(lambda h: jnp.tanh(h) @ params["w2"])(h))(X @ params["w1"] + params["b1"])
    ones = jnp.ones((N, 1))
    for block, a, dz_dh in zip(post.blocks, (jnp.concatenate([X, ones], 1), jnp.concatenate([hidden, ones], 1)),
                               (dz_dh1, dz_dh2)):
        s = jnp.einsum("idh,idk->ikh", dz_dh, L)  # (n, m, n_out)
        np.testing.assert_allclose(block.right, a.T @ a / N, atol=1e-12)
        np.testing.assert_allclose(block.left, jnp.einsum("ikh,ikg->hg", s, s), atol=1e-12)
    # The Kronecker precision acts on the layer matrix [W | b] (n_out x (n_in + 1)): P vec(V) = vec(S V A + delta V).
    drift = post.blocks[1].drift(0.5)
    V = jr.normal(jr.PRNGKey(8), (CLASSES, HIDDEN + 1))
    np.testing.assert_allclose(drift.mv(V.reshape(-1)),
                               (post.blocks[1].left @ V @ post.blocks[1].right + 0.5 * V).reshape(-1), atol=1e-12)
    # f(P) of the Kronecker drift against the dense matrix's eigendecomposition, and the evidence's log det
    P = reference_precision(post.blocks[1], 0.5)
    w, U = np.linalg.eigh(P)
    np.testing.assert_allclose(drift.apply_fn(lambda x: x ** -0.5, V.reshape(-1)),
                               (U * w ** -0.5) @ U.T @ np.asarray(V).reshape(-1), atol=1e-10)
    np.testing.assert_allclose(post.blocks[1].log_det(0.5), np.sum(np.log(w)), rtol=1e-12)


@pytest.mark.parametrize("structure", ["full", "kfac", "diag", "last_layer"])
def test_samples_have_the_blocks_covariance(x64, structure):
    """Digital samples of every structure: covariance ``T P_b^-1`` on the covered entries, 0 elsewhere."""
    params, X, y, predict = mlp()
    post = kt.laplace(predict, params, (X, y), structure=structure, prior_precision=3.0, temperature=0.5)
    samples = ravel_samples(post.sample(jr.PRNGKey(9), 20000))
    flat = np.asarray(ravel_pytree(params)[0])
    for P, block in zip(selection(post, params), post.blocks):
        check_moments(samples @ P.T, P @ flat, 0.5 * np.linalg.inv(reference_precision(block, 3.0)))
    covered = np.concatenate(selection(post, params)).sum(axis=0) > 0
    np.testing.assert_array_equal(samples[:, ~covered], np.broadcast_to(flat[~covered], samples[:, ~covered].shape))


# ---------------------------------------------------------------------------------------------- the device

def small_posterior(structure="full", prior_precision=2.0):
    X, Y, params, predict = linear_problem()
    return kt.laplace(predict, params, (X, Y), loss="mse", structure=structure, prior_precision=prior_precision), X


def test_device_samples_at_long_times_follow_the_posterior(x64):
    """Stationary chain: kappa0 = T, interval 3 tau against lambda_min(P) >= delta = 2 (correlation <= e^-6)."""
    post, X = small_posterior()
    device = thermox.AnalogDevice(kappa0=1.0)
    samples = ravel_samples(post.sample_on_device(device, jr.PRNGKey(10), 20000, t=10.0, interval=3.0))
    check_moments(samples, ravel_pytree(post.mean)[0], linear_covariance(X, 2.0, 2))


def test_device_runs_of_finite_time_have_the_finite_time_covariance(x64):
    r"""Runs of t tau from theta* (reset between samples): covariance ``kappa0 P^-1 (I - e^{-2 P t})``."""
    post, X = small_posterior()
    device, t = thermox.AnalogDevice(kappa0=0.3), 0.01
    samples = ravel_samples(post.sample_on_device(device, jr.PRNGKey(11), 20000, t=t))  # no interval: fresh runs
    P = np.asarray(post.blocks[0].matrix) + 2.0 * np.eye(6)
    w, V = np.linalg.eigh(P)
    cov = 0.3 * (V * ((1 - np.exp(-2 * w * t)) / w)) @ V.T
    check_moments(samples, ravel_pytree(post.mean)[0], cov)


@pytest.mark.parametrize("n", [40, 2])  # a dense block, and a Woodbury block whose factor W the chip holds
def test_device_samples_with_quantized_couplings_follow_the_programmed_precision(x64, n):
    """4-bit couplings: the samples' covariance is kappa0 times the inverse of the precision the chip realises."""
    X, Y, params, predict = linear_problem(n=n)
    post = kt.laplace(predict, params, (X, Y), loss="mse", prior_precision=2.0)
    device = thermox.AnalogDevice(kappa0=1.0, coupling_bits=4)
    requested = post.blocks[0].device_drift(2.0)
    realised = device.program(requested)
    if n == 2:
        precision = 2.0 * np.eye(6) + realised.matrix @ realised.matrix.T
        assert not np.allclose(realised.matrix, requested.matrix)
    else:
        precision = realised.matrix
        assert not np.allclose(precision, requested.matrix)
    samples = ravel_samples(post.sample_on_device(device, jr.PRNGKey(12), 20000, t=10.0, interval=3.0))
    check_moments(samples, ravel_pytree(post.mean)[0], np.linalg.inv(precision))


@pytest.mark.parametrize("structure", ["kfac", "diag"])
def test_device_samples_kronecker_and_diagonal_blocks(x64, structure):
    params, X, y, predict = mlp()
    post = kt.laplace(predict, params, (X, y), structure=structure, prior_precision=3.0)
    samples = ravel_samples(post.sample_on_device(thermox.AnalogDevice(kappa0=1.0), jr.PRNGKey(13), 20000, t=10.0,
                                                  interval=2.0))
    for P, block in zip(selection(post, params), post.blocks):
        check_moments(samples @ P.T, P @ np.asarray(ravel_pytree(params)[0]),
                      np.linalg.inv(reference_precision(block, 3.0)))


def test_sampling_work_counts():
    post, _ = small_posterior()
    setup, per_sample = post.device_sampling_work(thermox.AnalogDevice(kappa0=1.0, adc_bits=8), t=10.0, interval=3.0)
    assert float(setup.coupling_values) == 36 and float(setup.analog_tau) == 10.0
    assert float(per_sample.adc_values) == 6 and float(per_sample.adc_bits) == 8 and float(per_sample.analog_tau) == 3
    setup, per_sample = post.device_sampling_work(thermox.AnalogDevice(kappa0=1.0), t=0.5)  # fresh runs
    assert float(setup.analog_tau) == 0 and float(per_sample.analog_tau) == 0.5
    setup, per_sample = post.digital_sampling_work()
    assert float(setup.flops["eigh"]) == 9 * 6**3 and float(per_sample.flops["precondition"]) == 2 * 36


# ----------------------------------------------------------------------------------------- predictive

def test_predictive_links_agree_on_a_small_posterior(x64):
    """probit is the closed form of the linearised predictive's Gaussian integral (MacKay's approximation): they
    agree to the approximation's few-percent error; the MC estimates carry 1/sqrt(S) error."""
    params, X, y, predict = mlp()
    post = kt.laplace(predict, params, (X, y), prior_precision=5.0)
    samples = post.sample(jr.PRNGKey(14), 4000)
    probit = post.predictive(X)
    linearised = post.predictive(X, link="linearised", samples=samples)
    np.testing.assert_allclose(probit.sum(-1), 1.0, rtol=1e-12)
    np.testing.assert_allclose(linearised, probit, atol=0.03)
    z = predict(params, X)
    # Linearised outputs at a sample are f(theta*) + J (theta - theta*): exactly the jvp.
    one = jax.tree_util.tree_map(lambda leaf: leaf[:1], samples)
    outputs = post.output_samples(X, one, linearised=True)[0]
    tangent = jax.tree_util.tree_map(lambda s, m: s[0] - m, samples, params)
    np.testing.assert_allclose(outputs, z + jax.jvp(lambda p: predict(p, X), (params,), (tangent,))[1], atol=1e-12)
    assert post.predictive(X, link="nonlinear", samples=samples).shape == (N, CLASSES)


# ---------------------------------------------------------------------------------------------- bad input

def test_bad_input_is_refused():
    X, Y, params, predict = linear_problem()
    data = (X, Y)
    for kwargs, match in [({"prior_precision": 0.0}, "prior_precision"), ({"prior_precision": -1.0}, "prior_precision"),
                          ({"temperature": 0.0}, "temperature"), ({"temperature": float("nan")}, "temperature"),
                          ({"structure": "lowrank"}, "unknown structure"), ({"num_data": 0}, "num_data"),
                          ({"last_layer": ".w"}, "last_layer= names"),
                          ({"structure": "last_layer", "last_layer": "['v']"}, "is not the weight of a layer")]:
        with pytest.raises(ValueError, match=match):
            kt.laplace(predict, params, data, loss="mse", **kwargs)
    with pytest.raises(ValueError, match="same number"):
        kt.laplace(predict, params, (X, Y[:-1]), loss="mse")
    with pytest.raises(ValueError, match="non-finite"):
        kt.laplace(predict, {"w": params["w"].at[0, 0].set(jnp.nan)}, data, loss="mse")
    post = kt.laplace(predict, params, data, loss="mse")
    with pytest.raises(ValueError, match="noiseless"):
        post.sample_on_device(thermox.AnalogDevice(), jr.PRNGKey(0), 4, t=1.0, interval=1.0)
    with pytest.raises(ValueError, match="num_readouts"):
        post.sample_on_device(thermox.AnalogDevice(kappa0=1.0, num_readouts=4), jr.PRNGKey(0), 4, t=1.0, interval=1.0)
    with pytest.raises(ValueError, match="interval"):
        post.sample_on_device(thermox.AnalogDevice(kappa0=1.0), jr.PRNGKey(0), 4, t=1.0, interval=0.0)
    with pytest.raises(ValueError, match="class probabilities"):
        post.predictive(X)
    kfac = kt.laplace(predict, params, data, loss="mse", structure="kfac")
    with pytest.raises(ValueError, match="entry by entry"):
        kfac.sample_on_device(thermox.AnalogDevice(kappa0=1.0, coupling_bits=8), jr.PRNGKey(0), 4, t=1.0,
                              interval=1.0)


def test_sampling_jits_once():
    post, _ = small_posterior()
    traces = []

    @eqx.filter_jit
    def draw(post, key):
        traces.append(1)
        return post.sample(key, 8)

    draw(post, jr.PRNGKey(0))
    draw(post, jr.PRNGKey(1))
    draw(post.optimize_prior_precision(steps=3), jr.PRNGKey(2))
    assert len(traces) == 1
