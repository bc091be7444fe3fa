"""Per-example losses on model outputs, with the output-space Hessian factor the GGN needs.

A loss is a :class:`Loss` (an ``equinox.Module``): its value on one example, a factor ``L`` of its Hessian in the
outputs (``H = L L^T``), a target sampled from the model's predictive distribution (for the Monte-Carlo Fisher),
a static check of one example's target against its output and a run-time check of the targets' values. The batch
loss is the mean over examples.

- :class:`SoftmaxCrossEntropy` (``"softmax_cross_entropy"``): ``-sum_c y_c log softmax(z)_c`` with an integer
  label in ``[0, dz)`` or probabilities. ``H = diag(p) - p p^T``, factored at rank dz - 1
  (:meth:`SoftmaxCrossEntropy.hessian_factor`).
- :class:`MeanSquaredError` (``"mse"``): ``0.5 |z - y|^2`` (summed over outputs). ``H = I``.
- :class:`CallableLoss`: a user's ``loss(z, y) -> scalar`` for one example; ``H`` by ``jax.hessian``, factored by
  ``eigh`` (negative eigenvalues clipped: the GGN keeps only the positive semi-definite part).

Optimizers take a :class:`Loss`, one of the names above (configuration sugar) or a plain callable
(:func:`as_loss`).
"""

from __future__ import annotations

import abc
from typing import Callable, Union

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
from jaxtyping import Array, Float, PRNGKeyArray, PyTree


class Loss(eqx.Module):
    """A per-example loss ``loss(z, y)`` on one example's outputs ``z`` (dz,) and target ``y``, with its GGN
    ingredients. Subclass it for a new loss: :meth:`__call__` and :meth:`hessian_factor` are required; the others
    have defaults (no target checks; the Monte-Carlo Fisher refused)."""

    @abc.abstractmethod
    def __call__(self, z: Float[Array, " dz"], y: Array) -> Float[Array, ""]:
        """The loss of one example."""

    @abc.abstractmethod
    def hessian_factor(self, z: Float[Array, " dz"], y: Array) -> Float[Array, "dz m"]:
        """``L`` with ``L L^T`` the Hessian of the loss in the outputs ``z`` (one example)."""

    def log_likelihood(self, z: Float[Array, " dz"], y: Array) -> Float[Array, ""]:
        """``log p(y | z)`` of one example, normalised: the loss is read as the negative log-likelihood up to this
        constant (the Laplace evidence needs it). The default is ``-loss(z, y)`` (a normalised likelihood)."""
        return -self(z, y)

    def sample_target(self, key: PRNGKeyArray, z: Float[Array, " dz"]) -> Array:
        """A target drawn from the model's own predictive distribution (for the Monte-Carlo Fisher)."""
        raise ValueError(f"the Monte-Carlo Fisher needs a loss with a predictive distribution to sample; "
                         f"{type(self).__name__} has none (define sample_target)")

    def check_targets(self, outputs: Array, targets: Array) -> None:
        """Static shape check of one example's output (a shape struct or array) against its target."""

    def check_target_values(self, tree: PyTree, targets: Array, num_outputs: int) -> PyTree:
        """``tree`` returned unchanged, carrying a run-time check of the ``targets``' values for ``num_outputs``
        outputs (``eqx.error_if``: under ``jit`` it raises when ``tree`` is used). The default checks nothing."""
        return tree

    def _mismatch(self, outputs: Array, targets: Array, want: str) -> ValueError:
        return ValueError(
            f"batch targets do not match predict_fn's outputs: one example's output has shape {outputs.shape}, "
            f"its target {targets.shape} ({targets.dtype}); expected {want}"
        )


class SoftmaxCrossEntropy(Loss):
    """``-sum_c y_c log softmax(z)_c`` with an integer label ``y`` () or probabilities ``y`` (dz,)."""

    def __call__(self, z, y):
        if jnp.issubdtype(y.dtype, jnp.integer):
            y = jax.nn.one_hot(self.check_target_values(y, y, z.shape[-1]), z.shape[-1])
        return -jnp.sum(y * jax.nn.log_softmax(z))

    def hessian_factor(self, z, y=None):
        """Rank dz - 1 factor of ``H = diag(p) - p p^T``.

        ``H`` has rank dz - 1 (``H 1 = 0``), and so does ``L0 = diag(sqrt p) - p sqrt(p)^T`` (``L0 sqrt(p) = 0``,
        ``L0 L0^T = H``); ``L = L0 Q`` with ``Q`` the dz - 1 columns of the Householder reflection that maps
        ``sqrt(p)`` to ``-e1`` drops that null direction, so the GGN has rank b (dz - 1) instead of b dz.
        """
        p = jax.nn.softmax(z)
        sqrt_p = jnp.sqrt(p)
        full = jnp.diag(sqrt_p) - jnp.outer(p, sqrt_p)
        v = sqrt_p.at[0].add(1.0)
        reflection = jnp.eye(z.shape[-1], dtype=z.dtype) - 2.0 * jnp.outer(v, v) / jnp.dot(v, v)
        return full @ reflection[:, 1:]

    def sample_target(self, key, z):
        return jax.nn.one_hot(jr.categorical(key, z), z.shape[-1], dtype=z.dtype)

    def check_targets(self, outputs, targets):
        # A scalar target must be an integer class index: a float one would be read as probabilities.
        label = targets.shape == () and jnp.issubdtype(targets.dtype, jnp.integer)
        if not (label or targets.shape == outputs.shape):
            raise self._mismatch(outputs, targets, f"() integer label or {outputs.shape} probabilities")

    def check_target_values(self, tree, targets, num_outputs):
        """Integer labels must be class indices in ``[0, num_outputs)`` (``jax.nn.one_hot`` would silently make an
        out-of-range label a zero target, of zero loss and gradient)."""
        if not jnp.issubdtype(jnp.result_type(targets), jnp.integer):
            return tree
        targets = jnp.asarray(targets)
        return eqx.error_if(tree, jnp.any((targets < 0) | (targets >= num_outputs)),
                            f"softmax_cross_entropy: integer labels must be class indices in [0, {num_outputs}) "
                            f"for {num_outputs} classes (the model's outputs); got a label outside that range")


class MeanSquaredError(Loss):
    """``0.5 |z - y|^2`` summed over the outputs; the predictive distribution is ``N(z, I)``."""

    def __call__(self, z, y):
        return 0.5 * jnp.sum((z - y) ** 2)

    def hessian_factor(self, z, y=None):
        return jnp.eye(z.shape[-1], dtype=z.dtype)

    def log_likelihood(self, z, y):
        """``log N(y; z, I) = -0.5 |z - y|^2 - (dz / 2) log(2 pi)``."""
        return -self(z, y) - 0.5 * z.shape[-1] * jnp.log(2.0 * jnp.pi)

    def sample_target(self, key, z):
        return z + jr.normal(key, z.shape, z.dtype)

    def check_targets(self, outputs, targets):
        if targets.shape != outputs.shape:
            raise self._mismatch(outputs, targets, str(outputs.shape))


class CallableLoss(Loss):
    """A user's per-example ``fn(z, y) -> scalar``; its output Hessian by ``jax.hessian``, factored by ``eigh``."""

    fn: Callable[[Array, Array], Array] = eqx.field(static=True)

    def __call__(self, z, y):
        return self.fn(z, y)

    def hessian_factor(self, z, y):
        h = jax.hessian(lambda out: self.fn(out, y))(z)
        w, V = jnp.linalg.eigh(0.5 * (h + h.T))
        return V * jnp.sqrt(jnp.maximum(w, 0.0))


LossSpec = Union[Loss, str, Callable[[Array, Array], Array]]
LOSSES: dict[str, type[Loss]] = {"softmax_cross_entropy": SoftmaxCrossEntropy, "mse": MeanSquaredError}


def as_loss(spec: LossSpec) -> Loss:
    """The :class:`Loss` of ``spec``: a loss as is, a name in :data:`LOSSES`, or a per-example callable."""
    if isinstance(spec, Loss):
        return spec
    if isinstance(spec, str):
        if spec not in LOSSES:
            raise ValueError(f"unknown loss {spec!r}; use one of {tuple(LOSSES)}, a kfac_thermo.Loss or a callable "
                             "(outputs, targets)")
        return LOSSES[spec]()
    if callable(spec):
        return CallableLoss(spec)
    raise ValueError(f"loss must be a kfac_thermo.Loss, a name in {tuple(LOSSES)} or a callable, "
                     f"got {type(spec).__name__}")
