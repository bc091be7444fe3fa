r"""The Laplace posterior ``N(theta*, T P^-1)``, ``P = n_data G + delta I``, sampled digitally or on the device.

At the trained parameters ``theta*`` (a MAP estimate under the prior ``N(0, delta^-1 I)``) the Laplace
approximation of the posterior is Gaussian with precision ``P`` (``_fit.py``: the GGN of the summed loss, in one
of four structures); temperature ``T`` tempers the whole posterior, ``p(theta | D)^{1/T}``, so the covariance is
``T P^-1`` (laplace-torch tempers only the likelihood term instead).

On the device. The chip's stationary law is ``N(A^-1 b, kappa0 A^-1)``: programmed with ``A = P`` and ``b = P
theta*``, started at ``theta*``, it relaxes to the posterior at ``kappa0 = T``. Here the node voltages hold the
displacement ``theta - theta*`` (``b = 0``, start 0: the same law, and the converters see zero-mean values): after a
run of ``t`` tau the first readout has covariance ``kappa0 P^-1 (I - e^{-2 P t})``, and each further sample is read
``interval`` tau after the previous one (correlation ``e^{-P interval}``), the couplings programmed once.
"""

from __future__ import annotations

import warnings
from typing import Any, Callable, Literal

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import optax
import thermox
from jaxtyping import Array, Float, PRNGKeyArray, PyTree

from .._losses import Loss, SoftmaxCrossEntropy
from .._work import Work, analog, sequential
from ._blocks import PrecisionBlock
from ._fit import Layout

Link = Literal["probit", "linearised", "nonlinear"]
LINKS = ("probit", "linearised", "nonlinear")


def _positive(value, name: str) -> None:
    if isinstance(value, jax.core.Tracer):
        return
    value = np.asarray(value)
    if value.shape != () or not np.isfinite(value) or not value > 0:
        raise ValueError(f"laplace: {name} must be a finite scalar > 0, got {value!r}")


class LaplacePosterior(eqx.Module):
    """A Laplace posterior (build it with :func:`kfac_thermo.laplace`).

    Attributes:
        mean: the trained parameters ``theta*`` (the posterior mean).
        blocks: the precision's blocks (curvature only; the prior precision is added when used).
        prior_precision: ``delta`` of the prior ``N(0, delta^-1 I)``.
        temperature: ``T``; the covariance is ``T P^-1``.
        log_likelihood: ``sum_i log p(y_i | f(x_i, theta*))`` over the data, scaled to ``num_data`` examples.
        predict_fn: ``predict_fn(params, inputs) -> outputs``.
        loss: the per-example negative log-likelihood.
        layout: parameters <-> the blocks' coordinates.
        structure: "full", "kfac", "diag" or "last_layer".
        num_data: training examples the curvature stands for.
    """

    mean: PyTree
    blocks: tuple[PrecisionBlock, ...]
    prior_precision: Float[Array, ""]
    temperature: Float[Array, ""]
    log_likelihood: Float[Array, ""]
    predict_fn: Callable = eqx.field(static=True)
    loss: Loss
    layout: Layout = eqx.field(static=True)
    structure: str = eqx.field(static=True)
    num_data: int = eqx.field(static=True)

    @property
    def num_covered(self) -> int:
        """Parameters the posterior covers (the others are held at ``theta*``)."""
        return sum(block.size for block in self.blocks)

    def _dtype(self):
        return jax.tree_util.tree_leaves(self.mean)[0].dtype

    # ------------------------------------------------------------------------------------------------ samples

    def displacement_to_params(self, displacements: list[Float[Array, "S n_b"]]) -> PyTree:
        """Parameter samples ``theta* + d`` (leading sample axis) from per-block displacements ``d``."""
        tree = jax.vmap(self.layout.merge)(displacements)
        return jax.tree_util.tree_map(lambda m, d: m[None] + d.astype(m.dtype), self.mean, tree)

    def sample(self, key: PRNGKeyArray, num_samples: int) -> PyTree:
        r"""Exact digital samples ``theta* + sqrt(T) P^{-1/2} z``, ``z ~ N(0, I)``: per block ``f(P_b) z`` with
        ``f = lambda^{-1/2}`` by its decomposition (dense ``eigh``, Woodbury's Gram ``eigh``, the Kronecker factors'
        ``eigh``, or the diagonal). Returns the parameter pytree with a leading axis of ``num_samples``."""
        keys = jr.split(key, len(self.blocks))
        out = [jnp.sqrt(self.temperature) * _exact_samples(block, self.prior_precision, k, num_samples)
               for block, k in zip(self.blocks, keys)]
        return self.displacement_to_params(out)

    def sample_on_device(self, device: thermox.AnalogDevice, key: PRNGKeyArray, num_samples: int, *,
                         t: float, interval: float | None = None, method: Any = "exact") -> PyTree:
        r"""Samples the device gives: each block's precision programmed once on ``device`` (its couplings quantized
        and mismatched as the chip realises them), run with ``b = 0`` from the displacement 0 (``theta*``), every
        readout through the ADC. With ``interval`` one chain per block: the first readout after ``t`` tau, then one
        every ``interval`` tau; without it every sample is a fresh run of ``t`` tau from ``theta*`` (the device
        reset between samples), of covariance ``kappa0 P^-1 (I - e^{-2 P t})``.

        The samples' temperature is the device's ``kappa0`` (set it to :attr:`temperature` for this posterior);
        their covariance approaches ``kappa0 P^-1`` once ``t`` (and ``interval``) are long against the slowest
        relaxation time ``1 / lambda_min(P)`` (at most ``1 / delta``). ``method`` simulates the runs: the exact law
        (the default: its decomposition is made once for all the samples), or ``thermox.Diffrax(...)`` for a device
        with rails (``saturation``).

        Raises:
            ValueError: a noiseless device (it cannot sample), readout averaging (``num_readouts > 1`` shrinks a
                sample's spread), or non-positive times.
        """
        if device.is_noiseless:
            raise ValueError("laplace: a noiseless device (kappa0 = 0) has no thermal fluctuations to sample with; "
                             "set AnalogDevice(kappa0=temperature)")
        if device.num_readouts != 1:
            raise ValueError(f"laplace: a posterior sample is one readout; num_readouts={device.num_readouts} would "
                             "average samples and shrink their spread")
        _positive(t, "t (run time before the first sample, tau)")
        if interval is not None:
            _positive(interval, "interval (time between samples, tau)")
        keys = jr.split(key, len(self.blocks))
        with warnings.catch_warnings():
            # The warning measures the mean operator M(P) of a solve; a sample runs with b = 0, its law set by the
            # noise gain evaluated per eigenvalue of P, which no condition number of M degrades.
            warnings.simplefilter("ignore", thermox.ConditioningWarning)
            out = jax.block_until_ready([_device_samples(block, self.prior_precision, device, k, num_samples, t,
                                                         interval, method) for block, k in zip(self.blocks, keys)])
        return self.displacement_to_params(out)

    # ------------------------------------------------------------------------------------ evidence and prior

    def log_marginal_likelihood(self, prior_precision: Float[Array, ""] | None = None) -> Float[Array, ""]:
        r"""The Laplace evidence ``log p(D | delta) ~ log p(D | theta*) - (1/2) [log det P - N log delta
        + delta |theta*|^2]`` over the N covered parameters (exact for a linear-Gaussian model; the temperature does
        not enter it)."""
        delta = self.prior_precision if prior_precision is None else prior_precision
        log_det = sum(block.log_det(delta) for block in self.blocks)
        squares = sum(jnp.sum(v**2) for v in self.layout.split(self.mean))
        return self.log_likelihood - 0.5 * (log_det - self.num_covered * jnp.log(delta) + delta * squares)

    def optimize_prior_precision(self, *, steps: int = 100, learning_rate: float = 0.1) -> "LaplacePosterior":
        """The posterior at the prior precision maximising :meth:`log_marginal_likelihood`: ``steps`` Adam steps on
        ``log delta`` from the current value (laplace-torch's ``optimize_prior_precision(method="marglik")``)."""
        if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
            raise ValueError(f"laplace: steps must be an integer >= 1, got {steps!r}")
        _positive(learning_rate, "learning_rate")
        delta = _maximise_evidence(self, jnp.log(self.prior_precision), steps, learning_rate)
        return eqx.tree_at(lambda p: p.prior_precision, self, delta)

    # ------------------------------------------------------------------------------------------- predictive

    def functional_variance(self, inputs: PyTree) -> Float[Array, "b dz"]:
        r"""``diag(J_i (T P^-1) J_i^T)`` per example: the variance of each output of the linearised model
        ``f(x, theta*) + J (theta - theta*)`` under the posterior."""
        single = lambda p, x: self.predict_fn(p, jax.tree_util.tree_map(lambda leaf: leaf[None], x))[0]
        jac = jax.vmap(jax.jacrev(single), in_axes=(None, 0))(self.mean, inputs)  # leaves (b, dz, *leaf)
        coords = jax.vmap(jax.vmap(self.layout.split))(jac)
        total = 0.0
        for block, J in zip(self.blocks, coords):
            b, dz = J.shape[:2]
            X = J.reshape(b * dz, -1).T
            solved = block.drift(self.prior_precision).apply_fn(lambda w: 1.0 / w, X)
            total = total + jnp.sum(X * solved, axis=0).reshape(b, dz)
        return self.temperature * total

    def predictive(self, inputs: PyTree, *, link: Link = "probit", samples: PyTree | None = None) -> Array:
        r"""Class probabilities (softmax cross-entropy) under the posterior, (b, classes).

        - ``"probit"``: the linearised model's closed form, ``softmax(f / sqrt(1 + pi/8 v))`` with ``v`` the
          :meth:`functional_variance` (MacKay 1992; the digital reference, no samples);
        - ``"linearised"``: Monte-Carlo over ``samples`` of the linearised model ``f(theta*) + J (theta -
          theta*)`` (one JVP per sample): the GLM predictive Laplace Redux recommends;
        - ``"nonlinear"``: Monte-Carlo over ``samples`` of the network itself.

        ``samples`` (a parameter pytree with a leading sample axis, from :meth:`sample` or
        :meth:`sample_on_device`) are needed for the Monte-Carlo links.
        """
        if link not in LINKS:
            raise ValueError(f"laplace: unknown link {link!r}; choose one of {LINKS}")
        if not isinstance(self.loss, SoftmaxCrossEntropy):
            raise ValueError("laplace: predictive gives class probabilities, for the softmax_cross_entropy loss; "
                             f"this posterior's loss is {type(self.loss).__name__} (use functional_variance)")
        if link == "probit":
            z = self.predict_fn(self.mean, inputs)
            return jax.nn.softmax(z / jnp.sqrt(1.0 + jnp.pi / 8.0 * self.functional_variance(inputs)), axis=-1)
        if samples is None:
            raise ValueError(f"laplace: link={link!r} averages over parameter samples; pass samples= (from "
                             "sample or sample_on_device)")
        return jnp.mean(jax.nn.softmax(self.output_samples(inputs, samples, linearised=link == "linearised"),
                                       axis=-1), axis=0)

    def output_samples(self, inputs: PyTree, samples: PyTree, *, linearised: bool) -> Float[Array, "S b dz"]:
        """The model's outputs at each parameter sample: the network's, or the linearised model's."""
        if not linearised:
            return jax.lax.map(lambda p: self.predict_fn(p, inputs), samples)
        f = lambda p: self.predict_fn(p, inputs)
        z, jvp = jax.linearize(f, self.mean)
        return jax.lax.map(lambda p: z + jvp(jax.tree_util.tree_map(jnp.subtract, p, self.mean)), samples)

    # ----------------------------------------------------------------------------------------------- costs

    def digital_sampling_work(self) -> tuple[Work, Work]:
        """``(setup, per sample)`` of the exact digital sampler: the blocks' decompositions, then one
        ``f(P_b) z`` product per block and sample."""
        return (sequential([block.decomposition_work() for block in self.blocks]),
                sequential([block.sample_work() for block in self.blocks]))

    def device_sampling_work(self, device: thermox.AnalogDevice, *, t: float,
                             interval: float | None = None) -> tuple[Work, Work]:
        """``(setup, per sample)`` of :meth:`sample_on_device`: programming every block's couplings once (and, for a
        chain, the first ``t`` tau); then per sample ``interval`` tau of dynamics (``t`` without a chain) and one
        readout of every cell. The blocks run one after another on one chip."""
        couplings = sum(block.couplings() for block in self.blocks)
        cells, blocks = self.num_covered, len(self.blocks)
        first = 0.0 if interval is None else t
        run = t if interval is None else interval
        setup = analog(coupling_values=couplings, coupling_bits=device.coupling_bits, analog_tau=first * blocks,
                       resistor_tau=(couplings + cells) * first)
        sample = analog(adc_values=cells, adc_bits=device.adc_bits, analog_tau=run * blocks,
                        resistor_tau=(couplings + cells) * run)
        return setup, sample


@eqx.filter_jit
def _exact_samples(block: PrecisionBlock, prior_precision, key: PRNGKeyArray, num_samples: int) -> Float[Array, "S n"]:
    """``num_samples`` draws of ``N(0, P_b^-1)``: ``f(P_b) z`` with ``f = lambda^{-1/2}``."""
    dtype = jnp.result_type(prior_precision)
    z = jr.normal(key, (block.size, num_samples), dtype)
    return block.drift(prior_precision).apply_fn(lambda w: w ** -0.5, z).T


@eqx.filter_jit
def _device_samples(block: PrecisionBlock, prior_precision, device: thermox.AnalogDevice, key: PRNGKeyArray,
                    num_samples: int, t: float, interval: float | None, method) -> Float[Array, "S n"]:
    """Block ``P_b`` programmed on ``device`` (as its couplings are realised unless they are ideal), then
    :func:`_chain`."""
    drift = block.drift(prior_precision) if device.is_ideal_couplings else block.device_drift(prior_precision)
    programmed = thermox.program(device, drift, method=method)
    return _chain(programmed, block.size, key, num_samples, t, interval, jnp.result_type(prior_precision))


def _chain(programmed: thermox.Programmed, n: int, key: PRNGKeyArray, num_samples: int, t: float,
           interval: float | None, dtype) -> Float[Array, "S n"]:
    """Readouts from the voltages 0 with no input: the first after ``t``, then every ``interval`` (a chain), or
    ``num_samples`` independent runs of ``t`` (``interval`` None)."""
    zeros = jnp.zeros((n,), dtype)
    keys = jr.split(key, num_samples)
    if interval is None:
        return jax.vmap(lambda k: programmed.readout(zeros, None, key=k, t=t).value)(keys)
    first = programmed.readout(zeros, None, key=keys[0], t=t)

    def step(voltages, k):
        readout = programmed.readout(zeros, voltages, key=k, t=interval)
        return readout.voltages, readout.value

    _, rest = jax.lax.scan(step, first.voltages, keys[1:])
    return jnp.concatenate([first.value[None], rest], axis=0)


@eqx.filter_jit
def _maximise_evidence(posterior: LaplacePosterior, log_delta: Float[Array, ""], steps: int,
                       learning_rate: float) -> Float[Array, ""]:
    optimizer = optax.adam(learning_rate)
    objective = lambda log_delta: -posterior.log_marginal_likelihood(jnp.exp(log_delta))

    def step(carry, _):
        log_delta, state = carry
        updates, state = optimizer.update(jax.grad(objective)(log_delta), state)
        return (optax.apply_updates(log_delta, updates), state), None

    (log_delta, _), _ = jax.lax.scan(step, (log_delta, optimizer.init(log_delta)), None, length=steps)
    return jnp.exp(log_delta)
