r"""Bayesian logistic regression on the digits, sampled by the device as a Langevin circuit (``thermox.langevin``)
against a long digital MALA chain.

The posterior of the weights ``w`` (d features, the last a bias column) given labels ``y_i in {-1, +1}`` is
``p(w) ~ exp(-U(w))`` with

    U(w) = sum_i softplus(-y_i x_i . w) + delta |w|^2 / 2,

strongly log-concave: ``delta I <= Hess U(w) <= L I`` with ``L = lambda_max(X^T X) / 4 + delta`` (the logistic
curvature ``sigma (1 - sigma)`` is at most 1/4), so every ``grad U`` is L-Lipschitz.

- Device (emulated): ``thermox.langevin`` on an ``AnalogDevice(kappa0=1)``, Euler-Maruyama at step ``h = dt``
  (``dx = -grad U ds + sqrt(2) dW``): the unadjusted Langevin algorithm. Its stationary law is biased by O(h);
  for a Gaussian with Hessian eigenvalues ``lambda <= L`` each mode's variance is ``1 / (lambda (1 - h lambda /
  2))``, a relative bias of at most ``eps(h) = (h L / 2) / (1 - h L / 2)``; that is the bias bound reported here.
  (A device at temperature ``kappa0`` samples the same posterior with ``grad U`` scaled by ``kappa0``, ``1 / kappa0``
  times more slowly in tau.)
- Reference (digital, exact): Metropolis-adjusted Langevin (MALA) in the coordinates whitened by the Laplace
  approximation at the MAP (``w = w_map + C u``, ``C C^T = Hess U(w_map)^-1``): the Metropolis step makes it exact
  for any preconditioner; the whitening only makes it mix fast.

Errors: relative Frobenius (Euclidean for the mean) ``|est - ref| / |ref|``, dominated by the softest (largest
variance) modes, where the Euler bias is smallest; and the whitened covariance error ``|W C W^T - I|_F / sqrt(d)``
with ``W = C_ref^{-1/2}``, which weighs every mode alike (the stiff modes carry the O(dt) bias). The Monte Carlo
error of an estimate
is from batch means (``NUM_BATCHES`` consecutive batches; the variance of each mean and covariance entry is the
batch estimates' variance over the number of batches), reported as the relative root of its summed variances
``sqrt(sum_entries var) / |ref|``: the error expected from sampling alone.

Usage:
    python scripts/langevin_blr.py [--quick] [--out results.md]
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import time
from typing import NamedTuple

import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np

import thermox

NUM_BATCHES = 25


class BLR(NamedTuple):
    """A logistic-regression posterior: features (N, d) with a bias column last, labels in {-1, +1}, prior precision."""

    features: jax.Array
    labels: jax.Array
    delta: float

    @property
    def dim(self) -> int:
        return self.features.shape[1]

    @property
    def num_couplings(self) -> int:
        """Programmed values of the Langevin circuit: the data matrix's entries (one crossbar does ``X w`` and
        ``X^T s``)."""
        return self.features.shape[0] * self.features.shape[1]


def digits_blr(*, num_points: int | None = None, pool: int = 2, delta: float = 1.0, seed: int = 0) -> BLR:
    """Digits 0-4 (label -1) against 5-9 (+1) from scikit-learn's bundled 8x8 digits: pixels average-pooled over
    ``pool x pool`` blocks, constant features dropped, the rest standardized, a bias column appended; the first
    ``num_points`` of a seeded permutation (None: all 1,797)."""
    from sklearn.datasets import load_digits

    if 8 % pool:
        raise ValueError(f"digits_blr: pool must divide 8, got {pool}")
    bunch = load_digits()
    side = 8 // pool
    pixels = bunch.images.reshape(-1, side, pool, side, pool).mean(axis=(2, 4)).reshape(len(bunch.images), -1)
    order = np.random.default_rng(seed).permutation(len(pixels))[:num_points]
    pixels, digits = pixels[order], bunch.target[order]
    scale = pixels.std(axis=0)
    keep = scale > 0
    standardized = (pixels[:, keep] - pixels[:, keep].mean(axis=0)) / scale[keep]
    features = np.hstack([standardized, np.ones((len(pixels), 1))])
    labels = np.where(digits >= 5, 1.0, -1.0)
    return BLR(jnp.asarray(features), jnp.asarray(labels), float(delta))


def potential(blr: BLR, w: jax.Array) -> jax.Array:
    """``U(w) = sum_i softplus(-y_i x_i . w) + delta |w|^2 / 2`` (negative log posterior up to a constant)."""
    margins = blr.labels * (blr.features @ w)
    return jnp.sum(jax.nn.softplus(-margins)) + 0.5 * blr.delta * jnp.dot(w, w)


def grad_potential(blr: BLR, w: jax.Array) -> jax.Array:
    """``grad U(w) = -X^T (y sigmoid(-y X w)) + delta w``: two matrix-vector products with the programmed data and
    a sigmoid per data point, what the circuit computes."""
    margins = blr.labels * (blr.features @ w)
    return -blr.features.T @ (blr.labels * jax.nn.sigmoid(-margins)) + blr.delta * w


def lipschitz(blr: BLR) -> float:
    """``L = lambda_max(X^T X) / 4 + delta``, an upper bound of the Hessian of ``U`` everywhere."""
    X = np.asarray(blr.features, np.float64)
    return float(np.linalg.eigvalsh(X.T @ X)[-1] / 4 + blr.delta)


def laplace(blr: BLR, iterations: int = 30) -> tuple[jax.Array, jax.Array]:
    """The MAP (Newton's method from zero; ``U`` is strongly convex) and the Hessian there."""
    hessian = jax.hessian(lambda w: potential(blr, w))
    w = jnp.zeros(blr.dim, blr.features.dtype)
    for _ in range(iterations):
        w = w - jnp.linalg.solve(hessian(w), grad_potential(blr, w))
    return w, hessian(w)


def euler_bias_bound(dt: float, L: float) -> float:
    """``eps(h) = (h L / 2) / (1 - h L / 2)``: the largest relative variance bias of Euler-Maruyama Langevin at step
    ``h`` on a Gaussian whose Hessian is at most ``L`` (module docstring); needs ``h L < 2`` (stability)."""
    half = dt * L / 2
    if half >= 1:
        raise ValueError(f"euler_bias_bound: dt * L = {2 * half:.3g} >= 2, Euler-Maruyama is unstable")
    return half / (1 - half)


def mala(blr: BLR, *, key: jax.Array, step: float, num_samples: int, thin: int, burn_in: int
         ) -> tuple[jax.Array, jax.Array]:
    """Metropolis-adjusted Langevin in Laplace-whitened coordinates ``w = w_map + C u``: propose
    ``u' = u - step grad_u U + sqrt(2 step) z``, accept with the Metropolis-Hastings ratio. Returns
    ``num_samples`` states ``thin`` steps apart after ``burn_in`` steps, and the acceptance rate."""
    w_map, H = laplace(blr)
    C = jnp.linalg.cholesky(jnp.linalg.inv(H))
    U = lambda u: potential(blr, w_map + C @ u)
    value_and_grad = jax.value_and_grad(U)

    def log_q(to, frm, grad_frm):  # log density of proposing ``to`` from ``frm``, up to a constant
        return -jnp.sum((to - frm + step * grad_frm) ** 2) / (4 * step)

    def transition(state, key):
        u, value, grad = state
        key_z, key_a = jr.split(key)
        proposal = u - step * grad + jnp.sqrt(2 * step) * jr.normal(key_z, u.shape, u.dtype)
        value_p, grad_p = value_and_grad(proposal)
        log_ratio = value - value_p + log_q(u, proposal, grad_p) - log_q(proposal, u, grad)
        accept = jnp.log(jr.uniform(key_a, (), u.dtype)) < log_ratio
        new = jax.tree_util.tree_map(lambda a, b: jnp.where(accept, a, b), (proposal, value_p, grad_p), state)
        return new, accept

    def thinned(state, key):
        state, accepted = jax.lax.scan(transition, state, jr.split(key, thin))
        return state, (state[0], jnp.mean(accepted))

    @jax.jit
    def chain(key):
        u0 = jnp.zeros(blr.dim, blr.features.dtype)
        state = (u0, *value_and_grad(u0))
        key_burn, key_run = jr.split(key)
        state, _ = jax.lax.scan(transition, state, jr.split(key_burn, max(burn_in, 1)))
        _, (us, rates) = jax.lax.scan(thinned, state, jr.split(key_run, num_samples))
        return w_map + us @ C.T, jnp.mean(rates)

    return chain(key)


class Moments(NamedTuple):
    """Sample mean and covariance of a chain, with the batch-means variance of each entry's estimate."""

    mean: np.ndarray
    cov: np.ndarray
    mean_var: np.ndarray
    cov_var: np.ndarray


def moments(samples: jax.Array, num_batches: int = NUM_BATCHES) -> Moments:
    """Mean and covariance of ``samples`` (m, d) and the variance of those estimates by batch means: the chain cut
    into ``num_batches`` consecutive batches, each entry's variance estimated as the batch estimates' variance over
    ``num_batches`` (valid when a batch is much longer than the autocorrelation time)."""
    x = np.asarray(samples, np.float64)
    m = x.shape[0] - x.shape[0] % num_batches
    batches = x[:m].reshape(num_batches, m // num_batches, -1)
    batch_means = batches.mean(axis=1)
    centred = batches - batch_means[:, None, :]
    batch_covs = np.einsum("bki,bkj->bij", centred, centred) / (batches.shape[1] - 1)
    var = lambda estimates: estimates.var(axis=0, ddof=1) / num_batches
    return Moments(x.mean(axis=0), np.cov(x.T), var(batch_means), var(batch_covs))


def relative_error(estimate: np.ndarray, reference: np.ndarray) -> float:
    """``|estimate - reference| / |reference|`` (Frobenius / Euclidean)."""
    return float(np.linalg.norm(estimate - reference) / np.linalg.norm(reference))


def relative_mc_error(variances: np.ndarray, reference: np.ndarray) -> float:
    """``sqrt(sum var) / |reference|``: the root-mean-square relative error expected from sampling alone."""
    return float(np.sqrt(np.sum(variances)) / np.linalg.norm(reference))


@dataclasses.dataclass(frozen=True)
class Config:
    """One study: the data set, the reference chain and the device settings swept (dt as ``dt L``)."""

    num_points: int | None = None
    pool: int = 2
    delta: float = 1.0
    mala_step: float = 0.6
    mala_samples: int = 50_000
    mala_thin: int = 4
    dt_times_L: tuple[float, ...] = (1.0, 0.5, 0.25)
    schedules: tuple[tuple[float, float, int], ...] = ((1.0, 0.05, 6000), (0.5, 0.2, 1500))  # burn-in, interval, n
    adc_bits: int | None = None
    seed: int = 0


QUICK = Config(num_points=300, mala_samples=20_000, dt_times_L=(1.0, 0.1), schedules=((1.0, 0.1, 2000),))


class Row(NamedTuple):
    dt: float
    dt_L: float
    burn_in: float
    interval: float
    num_samples: int
    mean_error: float
    cov_error: float
    mean_mc: float
    cov_mc: float
    whitened_error: float
    whitened_mc: float
    bias_bound: float
    seconds_per_sample: float
    joules_per_sample: float
    wall_s: float


def device_row(blr: BLR, reference: Moments, whitening: np.ndarray, reference_whitened_var: np.ndarray, cfg: Config,
               dt_L: float, schedule, L: float, key) -> Row:
    """One device run: its moments' errors against the reference (``whitening = C_ref^{-1/2}``, and the batch-means
    variance of the reference's whitened covariance), their MC error, the bias bound and the cost."""
    burn_in, interval, num_samples = schedule
    dt = dt_L / L
    device = thermox.AnalogDevice(kappa0=1.0, adc_bits=cfg.adc_bits)
    sample = jax.jit(lambda key: thermox.langevin(
        device, lambda w: grad_potential(blr, w), jnp.zeros(blr.dim, blr.features.dtype), key=key,
        num_samples=num_samples, burn_in=burn_in, interval=interval, method=thermox.EulerMaruyama(dt=dt)))
    start = time.perf_counter()
    samples = np.asarray(sample(key).block_until_ready())
    wall = time.perf_counter() - start
    got = moments(samples)
    cost = thermox.cost.langevin_cost(blr.dim, num_couplings=blr.num_couplings, num_samples=num_samples,
                                      burn_in=burn_in, interval=interval, bits=cfg.adc_bits)
    combined = lambda a, b, ref: math.hypot(relative_mc_error(a, ref), relative_mc_error(b, ref))
    whitened = moments(samples @ whitening.T)
    eye = np.eye(blr.dim)
    return Row(dt, dt_L, burn_in, interval, num_samples,
               relative_error(got.mean, reference.mean), relative_error(got.cov, reference.cov),
               combined(got.mean_var, reference.mean_var, reference.mean),
               combined(got.cov_var, reference.cov_var, reference.cov),
               relative_error(whitened.cov, eye), combined(whitened.cov_var, reference_whitened_var, eye),
               euler_bias_bound(dt, L), float(cost.time_s), float(cost.energy_j), wall)


def markdown(rows: list[Row]) -> str:
    headers = ["dt (tau)", "dt L", "burn-in (tau)", "interval (tau)", "samples", "mean rel. err", "cov rel. err",
               "MC err mean (dev+ref)", "MC err cov (dev+ref)", "whitened cov err", "MC err whitened",
               "O(dt) bias bound", "s / sample", "J / sample",
               "wall s"]
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    for r in rows:
        cells = [f"{r.dt:.2e}", f"{r.dt_L:g}", f"{r.burn_in:g}", f"{r.interval:g}", str(r.num_samples),
                 f"{r.mean_error:.3f}", f"{r.cov_error:.3f}", f"{r.mean_mc:.3f}", f"{r.cov_mc:.3f}",
                 f"{r.whitened_error:.3f}", f"{r.whitened_mc:.3f}",
                 f"{r.bias_bound:.3f}", f"{r.seconds_per_sample:.2e}", f"{r.joules_per_sample:.2e}",
                 f"{r.wall_s:.1f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def run(cfg: Config) -> str:
    """The study as markdown: the problem, the reference chain and its own MC error, then one row per device run."""
    with jax.enable_x64(True):
        blr = digits_blr(num_points=cfg.num_points, pool=cfg.pool, delta=cfg.delta, seed=cfg.seed)
        L = lipschitz(blr)
        _, H = laplace(blr)
        lam = np.linalg.eigvalsh(np.asarray(H))
        key_ref, key_dev = jr.split(jr.key(cfg.seed))
        samples, acceptance = mala(blr, key=key_ref, step=cfg.mala_step, num_samples=cfg.mala_samples,
                                   thin=cfg.mala_thin, burn_in=1000)
        reference = moments(samples)
        lam_ref, V_ref = np.linalg.eigh(reference.cov)
        whitening = (V_ref / np.sqrt(lam_ref)) @ V_ref.T
        reference_whitened_var = moments(np.asarray(samples) @ whitening.T).cov_var
        rows = [device_row(blr, reference, whitening, reference_whitened_var, cfg, dt_L, schedule, L,
                           jr.fold_in(key_dev, i))
                for i, (dt_L, schedule) in enumerate((d, s) for d in cfg.dt_times_L for s in cfg.schedules)]
    header = [
        f"Bayesian logistic regression, digits 0-4 vs 5-9: N = {blr.features.shape[0]} points, d = {blr.dim} "
        f"({8 // cfg.pool}x{8 // cfg.pool} pooled pixels, non-constant ones standardized, + bias)",
        f"prior precision delta = {cfg.delta:g}; L = lambda_max(X^T X)/4 + delta = {L:.1f}; Hessian at the MAP: "
        f"eigenvalues in [{lam[0]:.2f}, {lam[-1]:.1f}] (slowest relaxation 1/lambda_min = {1 / lam[0]:.2f} tau)",
        f"reference: whitened MALA, step {cfg.mala_step}, {cfg.mala_samples} samples thinned by {cfg.mala_thin}, "
        f"acceptance {float(acceptance):.2f}; its own MC error (relative): mean "
        f"{relative_mc_error(reference.mean_var, reference.mean):.4f}, cov "
        f"{relative_mc_error(reference.cov_var, reference.cov):.4f}, whitened cov "
        f"{relative_mc_error(reference_whitened_var, np.eye(blr.dim)):.4f}",
        f"device: thermox.langevin, kappa0 = 1, Euler-Maruyama at dt, ADC bits {cfg.adc_bits}; cost per sample "
        "(thermox.cost.langevin_cost, default AnalogPlatform: tau = 1 us) with the couplings (N d data entries) "
        "programmed once and the burn-in amortized over the samples",
        "Unadjusted Langevin's Euler discretisation biases the stationary law by O(dt): the bound column is "
        "eps = (dt L/2)/(1 - dt L/2), the largest relative variance bias on a Gaussian with Hessian <= L.",
        "",
    ]
    return "\n".join(header) + "\n" + markdown(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a 300-point subset and fewer runs (about a minute)")
    parser.add_argument("--out", help="also write the markdown to this file")
    args = parser.parse_args(argv)
    text = run(QUICK if args.quick else Config())
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text + "\n")
    return 0
