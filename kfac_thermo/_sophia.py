r"""Sophia-G (Liu et al. 2023, arXiv 2305.14342): a diagonal second-order baseline, the family of AdaHessian.

Estimator, transform and alias of one method. The curvature is the diagonal of the Gauss-Newton matrix, estimated
every ``update_interval`` steps by the Gauss-Newton-Bartlett estimator (:func:`gnb_diagonal`) from one forward and
one reverse pass over the batch with labels sampled from the model; its exponential moving average preconditions
a momentum whose ratio is clipped element-wise, so a step moves no coordinate by more than the learning rate.

``optax.contrib.sophia`` is the Hutchinson variant (Sophia-H: a Hessian-vector product with ``obj_fn=``); this is
the paper's Algorithm 3 with the GNB estimator on the ``batch=`` the runner passes every optimizer, its curvature
refreshed before the step's update (at t = 1, k + 1, ...), and a work record in its state.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import jax.random as jr
import optax
from jaxtyping import Array, Int, PRNGKeyArray, PyTree

from ._common import ScalarOrSchedule, batch_of, periodic
from ._losses import LossSpec, as_loss
from ._work import Work, digital

# Element-wise work per parameter, float32 (kind "update"): every step the momentum (3 flops), max(gamma h, eps)
# (2), the ratio (1) and its clip (2), reading the gradient, momentum and h and writing the momentum and the
# direction; on a refresh also the estimate B g^ * g^ (2) and its moving average (3), reading g^ and h, writing h.
STEP_FLOPS, STEP_BYTES = 8.0, 5 * 4
REFRESH_FLOPS, REFRESH_BYTES = 5.0, 3 * 4


class SophiaGState(NamedTuple):
    """State of :func:`scale_by_sophia_g`.

    Attributes:
        count: steps taken.
        momentum: ``m``, the moving average of the gradients (the params' structure).
        hessian: ``h``, the moving average of the GNB estimates of the Gauss-Newton diagonal.
        key: the estimator's key; step ``count`` samples with ``fold_in(key, count)``.
        work: the last step's :class:`Work`.
    """

    count: Int[Array, ""]
    momentum: PyTree
    hessian: PyTree
    key: PRNGKeyArray
    work: Work


def gnb_diagonal(params: PyTree, inputs: Any, *, predict_fn: Callable, loss: LossSpec,
                 key: PRNGKeyArray) -> PyTree:
    r"""The Gauss-Newton-Bartlett estimate of the diagonal of the Gauss-Newton matrix of the mean batch loss.

    With ``B`` examples, targets ``y^_b`` sampled from the model's predictive distribution
    (``loss.sample_target`` with ``jr.split(key, B)[b]``) and ``g^ = grad_theta (1/B) sum_b loss(f(theta, x_b),
    y^_b)``, the estimate is ``B g^ * g^`` (element-wise). Its mean over the samples is the diagonal of
    ``(1/B) sum_b J_b^T H_b J_b`` (Bartlett's identity ``E[grad loss grad loss^T] = H`` in the outputs; the
    examples' cross terms vanish in mean). One forward and one reverse pass over the batch.

    Args:
        params: the parameters (a pytree of float arrays).
        inputs: a batch of inputs (a pytree whose leaves share the leading batch axis).
        predict_fn: ``predict_fn(params, inputs) -> outputs`` over the batch.
        loss: the per-example loss (:func:`kfac_thermo.as_loss`), one with a predictive distribution.
        key: PRNG key for the sampled targets.

    Returns:
        The estimate, with the structure of ``params``.
    """
    loss_fn = as_loss(loss)
    examples = jax.tree_util.tree_leaves(inputs)[0].shape[0]
    keys = jr.split(key, examples)

    def sampled_loss(p):
        outputs = predict_fn(p, inputs)
        targets = jax.vmap(loss_fn.sample_target)(keys, jax.lax.stop_gradient(outputs))
        return jnp.mean(jax.vmap(loss_fn)(outputs, targets))

    grads = jax.grad(sampled_loss)(params)
    return jax.tree_util.tree_map(lambda g: examples * g * g, grads)


def scale_by_sophia_g(
    *,
    predict_fn: Callable,
    loss: LossSpec,
    key: PRNGKeyArray,
    b1: float = 0.965,
    b2: float = 0.99,
    gamma: float = 0.01,
    eps: float = 1e-12,
    update_interval: int = 10,
) -> optax.GradientTransformationExtraArgs:
    r"""Sophia-G's direction (the paper's Algorithm 3, without the learning rate and weight decay).

    At step ``t`` (from 1) with gradient ``g_t``: ``m_t = b1 m_{t-1} + (1 - b1) g_t``; on ``t = 1, k + 1, 2k + 1,
    ...`` (``k = update_interval``) ``h_t = b2 h_{t-k} + (1 - b2) h^_t`` with ``h^_t`` the GNB estimate
    (:func:`gnb_diagonal`) at the current parameters, else ``h_t = h_{t-1}``; the direction is
    ``clip(m_t / max(gamma h_t, eps), -1, 1)`` element-wise (``m_0 = h_{1-k} = 0``; no bias correction). Where
    ``h`` is small the step is the sign of the momentum; ``gamma`` sets how much curvature slows a coordinate.

    ``update`` needs ``params`` and the extra argument ``batch=(inputs, targets)`` (the targets are not used: the
    estimator samples its own). The work record counts, on refresh steps, one forward and one reverse pass over
    the batch, and every step the element-wise work (:data:`STEP_FLOPS`, :data:`REFRESH_FLOPS`).

    Args:
        predict_fn: ``predict_fn(params, inputs) -> outputs`` over a batch.
        loss: the per-example loss (a :class:`kfac_thermo.Loss`, a name or a callable) with a predictive
            distribution to sample (``sample_target``).
        key: PRNG key of the sampled targets.
        b1: decay of the gradient's moving average (the paper: 0.965).
        b2: decay of the curvature's moving average, per refresh (0.99).
        gamma: scale of the curvature in the ratio (the paper's gamma; rho in its first version).
        eps: floor of the denominator.
        update_interval: ``k``, steps between curvature refreshes (static).

    Returns:
        An ``optax.GradientTransformationExtraArgs``.

    References:
        Liu, Li, Hall, Liang and Ma, Sophia: A Scalable Stochastic Second-order Optimizer for Language Model
        Pre-training, ICLR 2024, arXiv 2305.14342.
    """
    if not (isinstance(update_interval, int) and update_interval >= 1):
        raise ValueError(f"update_interval must be an integer >= 1, got {update_interval!r}")
    if key is None:
        raise ValueError("Sophia-G samples its estimator's targets: scale_by_sophia_g needs key=")
    loss_fn = as_loss(loss)
    if not callable(predict_fn):
        raise ValueError("predict_fn must be a callable predict_fn(params, inputs) -> outputs")

    def work(params: PyTree, examples: int, refresh: bool) -> Work:
        leaves = jax.tree_util.tree_leaves(params)
        size = float(sum(leaf.size for leaf in leaves))
        flops, bytes_ = STEP_FLOPS + refresh * REFRESH_FLOPS, STEP_BYTES + refresh * REFRESH_BYTES
        return digital(forward_passes=float(refresh), reverse_passes=float(refresh),
                       examples=examples if refresh else 0.0, params=size if refresh else 0.0,
                       flops={"update": flops * size}, bytes={"update": bytes_ * size},
                       kernels={"update": (1 + refresh) * len(leaves)})

    def init_fn(params):
        zeros = jax.tree_util.tree_map(jnp.zeros_like, params)
        return SophiaGState(jnp.zeros([], jnp.int32), zeros, zeros, jnp.copy(key), Work.zero())

    def update_fn(updates, state, params=None, *, batch=None, **extra_args):
        del extra_args
        inputs, _, updates = batch_of("sophia_g", predict_fn, loss_fn, params, batch, updates)
        examples = jax.tree_util.tree_leaves(inputs)[0].shape[0]
        momentum = jax.tree_util.tree_map(lambda m, g: b1 * m + (1 - b1) * g, state.momentum, updates)

        def refresh(hessian):
            estimate = gnb_diagonal(params, inputs, predict_fn=predict_fn, loss=loss_fn,
                                    key=jr.fold_in(state.key, state.count))
            ema = jax.tree_util.tree_map(lambda h, e: b2 * h + (1 - b2) * e, hessian, estimate)
            return ema, work(params, examples, True)

        hessian, step_work = periodic(update_interval, state.count, refresh,
                                      lambda h: (h, work(params, examples, False)), state.hessian)
        direction = jax.tree_util.tree_map(lambda m, h: jnp.clip(m / jnp.maximum(gamma * h, eps), -1.0, 1.0),
                                           momentum, hessian)
        return direction, SophiaGState(state.count + 1, momentum, hessian, state.key, step_work)

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def sophia_g(
    learning_rate: ScalarOrSchedule,
    *,
    predict_fn: Callable,
    loss: LossSpec,
    key: PRNGKeyArray,
    b1: float = 0.965,
    b2: float = 0.99,
    gamma: float = 0.01,
    eps: float = 1e-12,
    update_interval: int = 10,
    weight_decay: float = 0.0,
) -> optax.GradientTransformationExtraArgs:
    r"""Sophia-G: ``theta <- theta - learning_rate (clip(m / max(gamma h, eps), -1, 1) + weight_decay theta)``.

    :func:`scale_by_sophia_g` (see it for the arguments and the update's ``batch=``), decoupled weight decay and
    the learning rate, as the paper's Algorithm 3.

    Example:
        >>> tx = kfac_thermo.sophia_g(1e-3, predict_fn=predict_fn, loss="softmax_cross_entropy", key=key)
        >>> updates, state = tx.update(grads, state, params, batch=(inputs, labels))

    References:
        Liu et al., arXiv 2305.14342.
    """
    return optax.chain(
        scale_by_sophia_g(predict_fn=predict_fn, loss=loss, key=key, b1=b1, b2=b2, gamma=gamma, eps=eps,
                          update_interval=update_interval),
        optax.add_decayed_weights(weight_decay),
        optax.scale_by_learning_rate(learning_rate),
    )
