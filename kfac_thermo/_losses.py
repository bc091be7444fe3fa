"""Per-example losses on model outputs, with the output-space Hessian factor the GGN needs.

Conventions (per example; the batch loss is the mean over examples):
- ``"softmax_cross_entropy"``: ``-sum_c y_c log softmax(z)_c`` with integer labels (b,) or probabilities (b, dz).
  Output Hessian ``H = diag(p) - p p^T = L L^T`` with ``L = diag(sqrt p) - p sqrt(p)^T``.
- ``"mse"``: ``0.5 |z - y|^2`` (summed over outputs). ``H = I``.
- ``"span_cross_entropy"``: extractive QA, outputs ``[start logits; end logits]`` (2 s), targets the integer
  ``(start, end)`` positions; the mean of the two softmax cross-entropies. ``H`` is block diagonal, half of each
  softmax Hessian, so ``L = blockdiag(L_start, L_end) / sqrt(2)`` (rank 2 (s - 1)).
- a callable ``loss(z, y) -> scalar`` for one example: ``H`` by ``jax.hessian``, factored by ``eigh``
  (negative eigenvalues clipped: the GGN keeps only the positive semi-definite part).
"""

from __future__ import annotations

from typing import Callable, Union

import jax
import jax.numpy as jnp
import jax.random as jr
from jaxtyping import Array, Float, PRNGKeyArray

LossSpec = Union[str, Callable[[Array, Array], Array]]
LOSS_NAMES = ("softmax_cross_entropy", "mse", "span_cross_entropy")


def _as_probabilities(y: Array, dz: int) -> Float[Array, " dz"]:
    return jax.nn.one_hot(y, dz) if jnp.issubdtype(y.dtype, jnp.integer) else y


def _softmax_hessian_factor(z: Float[Array, " dz"]) -> Float[Array, "dz dz-1"]:
    """Rank dz - 1 factor of ``diag(p) - p p^T``: ``L0 Q`` with ``L0 = diag(sqrt p) - p sqrt(p)^T`` and ``Q`` the
    last dz - 1 columns of the Householder reflection mapping ``sqrt(p)`` to ``-e1`` (``L0 sqrt(p) = 0``)."""
    p = jax.nn.softmax(z)
    sqrt_p = jnp.sqrt(p)
    full = jnp.diag(sqrt_p) - jnp.outer(p, sqrt_p)
    v = sqrt_p.at[0].add(1.0)
    reflection = jnp.eye(z.shape[-1], dtype=z.dtype) - 2.0 * jnp.outer(v, v) / jnp.dot(v, v)
    return full @ reflection[:, 1:]


class Loss:
    """A named or user-given per-example loss with its GGN ingredients."""

    def __init__(self, spec: LossSpec):
        if isinstance(spec, str) and spec not in LOSS_NAMES:
            raise ValueError(f"unknown loss {spec!r}; use one of {LOSS_NAMES} or a callable (outputs, targets)")
        if not isinstance(spec, str) and not callable(spec):
            raise ValueError(f"loss must be a name in {LOSS_NAMES} or a callable, got {type(spec).__name__}")
        self.spec = spec

    def check_targets(self, outputs: Array, targets: Array) -> None:
        """Static shape check of one example's output against its target."""
        if self.spec == "softmax_cross_entropy":
            # A scalar target must be an integer class index: a float one would be read as probabilities.
            label = targets.shape == () and jnp.issubdtype(targets.dtype, jnp.integer)
            ok = label or targets.shape == outputs.shape
            want = f"() integer label or {outputs.shape} probabilities"
        elif self.spec == "mse":
            ok = targets.shape == outputs.shape
            want = str(outputs.shape)
        elif self.spec == "span_cross_entropy":
            ok = targets.shape == (2,) and jnp.issubdtype(targets.dtype, jnp.integer) and outputs.shape[0] % 2 == 0
            want = "(2,) integer (start, end) positions for an even number of outputs [start logits; end logits]"
        else:
            return
        if not ok:
            raise ValueError(
                f"batch targets do not match predict_fn's outputs: one example's output has shape {outputs.shape}, "
                f"its target {targets.shape} ({targets.dtype}); expected {want}"
            )

    def __call__(self, z: Float[Array, " dz"], y: Array) -> Float[Array, ""]:
        """Loss of one example."""
        if self.spec == "softmax_cross_entropy":
            return -jnp.sum(_as_probabilities(y, z.shape[-1]) * jax.nn.log_softmax(z))
        if self.spec == "mse":
            return 0.5 * jnp.sum((z - y) ** 2)
        if self.spec == "span_cross_entropy":
            log_p = jax.nn.log_softmax(z.reshape(2, -1), axis=-1)
            return -0.5 * (log_p[0, y[0]] + log_p[1, y[1]])
        return self.spec(z, y)

    def hessian_factor(self, z: Float[Array, " dz"], y: Array) -> Float[Array, "dz m"]:
        """``L`` with ``L L^T`` the Hessian of the loss in the outputs ``z`` (one example).

        Softmax cross-entropy: ``H = diag(p) - p p^T`` has rank dz - 1 (``H 1 = 0``), and so does
        ``L0 = diag(sqrt p) - p sqrt(p)^T`` (``L0 sqrt(p) = 0``); ``L = L0 Q`` with ``Q`` the dz - 1 columns of the
        Householder reflection that maps ``sqrt(p)`` to ``-e1`` drops that null direction, so the GGN has rank
        b (dz - 1) instead of b dz.
        """
        if self.spec == "softmax_cross_entropy":
            return _softmax_hessian_factor(z)
        if self.spec == "span_cross_entropy":
            start, end = z.reshape(2, -1)
            return jax.scipy.linalg.block_diag(_softmax_hessian_factor(start), _softmax_hessian_factor(end)) / jnp.sqrt(2.0)
        if self.spec == "mse":
            return jnp.eye(z.shape[-1], dtype=z.dtype)
        h = jax.hessian(lambda out: self.spec(out, y))(z)
        w, V = jnp.linalg.eigh(0.5 * (h + h.T))
        return V * jnp.sqrt(jnp.maximum(w, 0.0))

    def sample_target(self, key: PRNGKeyArray, z: Float[Array, " dz"]) -> Array:
        """A target drawn from the model's own predictive distribution (for the Monte-Carlo Fisher)."""
        if self.spec == "softmax_cross_entropy":
            return jax.nn.one_hot(jr.categorical(key, z), z.shape[-1], dtype=z.dtype)
        if self.spec == "span_cross_entropy":
            return jr.categorical(key, z.reshape(2, -1), axis=-1)
        if self.spec == "mse":
            return z + jr.normal(key, z.shape, z.dtype)
        raise ValueError("the Monte-Carlo Fisher needs a named loss (a predictive distribution to sample)")
