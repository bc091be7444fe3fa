r"""Laplace posteriors from the optimizers' own curvature, sampled digitally or by the thermodynamic device.

    posterior = kfac_thermo.laplace(predict_fn, params, (inputs, targets), loss="softmax_cross_entropy",
                                    structure="full" | "kfac" | "diag" | "last_layer", prior_precision=1.0)
    posterior = posterior.optimize_prior_precision()              delta by the Laplace evidence
    samples = posterior.sample(key, 100)                          exact digital samples
    samples = posterior.sample_on_device(device, key, 100, t=..., interval=...)   the chip's samples
    probs = posterior.predictive(inputs)                          probit (or MC over samples)

The curvature (``_fit.py``) is the GGN the natural-gradient optimizers and K-FAC build; the posterior
(``_posterior.py``) is ``N(theta*, T (n_data G + delta I)^-1)``, its precision held in blocks (``_blocks.py``) that
are ``thermox`` drifts, so the same object is sampled exactly by its decompositions or run on an ``AnalogDevice``.
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, PyTree

from .._losses import LossSpec, as_loss
from .._predict import check_predict_fn
from ._fit import (STRUCTURES, Structure, batches, diagonal_blocks, flat_layout, full_blocks,
                   kronecker_blocks, last_layer_blocks)
from ._posterior import LINKS, LaplacePosterior, _positive


def _check_data(params: PyTree, data) -> tuple[PyTree, Array, int]:
    if not (isinstance(data, (tuple, list)) and len(data) == 2):
        raise ValueError("laplace: data must be a pair (inputs, targets) of arrays with the examples on axis 0")
    inputs, targets = data
    targets = jnp.asarray(targets)
    sizes = {int(jnp.shape(leaf)[0]) if jnp.ndim(leaf) else -1 for leaf in jax.tree_util.tree_leaves(inputs)}
    n = int(targets.shape[0]) if targets.ndim else -1
    if len(sizes) != 1 or n not in sizes or n < 1:
        raise ValueError(f"laplace: inputs and targets must hold the same number (>= 1) of examples on axis 0; got "
                         f"inputs {sorted(sizes)} and targets {n}")
    for name, tree in (("params", params), ("inputs", inputs)):
        for leaf in jax.tree_util.tree_leaves(tree):
            if jnp.issubdtype(jnp.result_type(leaf), jnp.inexact) and not np.all(np.isfinite(np.asarray(leaf))):
                raise ValueError(f"laplace: {name} have non-finite entries; the Laplace approximation needs finite "
                                 "trained parameters and data")
    return inputs, targets, n


def laplace(
    predict_fn: Callable,
    params: PyTree,
    data: tuple[PyTree, Array],
    *,
    loss: LossSpec = "softmax_cross_entropy",
    structure: Structure = "full",
    prior_precision: float = 1.0,
    temperature: float = 1.0,
    num_data: int | None = None,
    batch_size: int = 256,
    last_layer: str | None = None,
) -> LaplacePosterior:
    r"""The Laplace posterior ``N(theta*, T (n_data G + delta I)^-1)`` at the trained ``params``.

    Args:
        predict_fn: ``predict_fn(params, inputs) -> outputs`` over a batch.
        params: the trained (MAP) parameters ``theta*``.
        data: ``(inputs, targets)``: the training data, or a subset of it (see ``num_data``).
        loss: the per-example negative log-likelihood (a :class:`kfac_thermo.Loss`, "softmax_cross_entropy",
            "mse" or a callable); its Hessian in the outputs gives the GGN.
        structure: "full" (the exact GGN, dense or low-rank by Woodbury), "kfac" (K-FAC per layer),
            "diag" (the GGN diagonal) or "last_layer" (the exact GGN of one layer, the others fixed).
        prior_precision: ``delta > 0`` of the prior ``N(0, delta^-1 I)``.
        temperature: ``T > 0``: the covariance is ``T P^-1`` (the device samples at ``kappa0 = T``).
        num_data: training examples the curvature stands for (default: the examples in ``data``); the data's sum
            is scaled by ``num_data / n``.
        batch_size: examples per curvature pass.
        last_layer: for "last_layer", the path of the layer's weight leaf (e.g. ``".output.weight"``; default: the
            last layer in program order).
    """
    check_predict_fn(predict_fn)
    if structure not in STRUCTURES:
        raise ValueError(f"laplace: unknown structure {structure!r}; choose one of {STRUCTURES}")
    _positive(prior_precision, "prior_precision")
    _positive(temperature, "temperature")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"laplace: batch_size must be an integer >= 1, got {batch_size!r}")
    if last_layer is not None and structure != "last_layer":
        raise ValueError(f"laplace: last_layer= names the layer of structure='last_layer', not of {structure!r}")
    inputs, targets, n = _check_data(params, data)
    num_data = n if num_data is None else num_data
    if isinstance(num_data, bool) or not isinstance(num_data, int) or num_data < 1:
        raise ValueError(f"laplace: num_data must be an integer >= 1, got {num_data!r}")
    loss_fn = as_loss(loss)
    z = jax.eval_shape(predict_fn, params, jax.tree_util.tree_map(lambda leaf: leaf[:1], inputs))
    loss_fn.check_targets(jax.ShapeDtypeStruct(z.shape[1:], z.dtype),
                          jax.ShapeDtypeStruct(targets.shape[1:], targets.dtype))
    scale = num_data / n
    args = (predict_fn, loss_fn, params, inputs, targets, scale, batch_size)
    if structure == "full":
        blocks, layout = full_blocks(*args), flat_layout(params)
    elif structure == "diag":
        blocks, layout = diagonal_blocks(*args), flat_layout(params)
    elif structure == "kfac":
        blocks, layout = kronecker_blocks(*args)
    else:
        blocks, layout = last_layer_blocks(*args, last_layer)
    log_likelihood = scale * _data_log_likelihood(predict_fn, loss_fn, params, inputs, targets, batch_size)
    dtype = jax.tree_util.tree_leaves(params)[0].dtype
    return LaplacePosterior(params, tuple(blocks), jnp.asarray(prior_precision, dtype),
                            jnp.asarray(temperature, dtype), log_likelihood, predict_fn, loss_fn, layout, structure,
                            num_data)


def _data_log_likelihood(predict_fn, loss, params, inputs, targets, batch_size) -> Array:
    batch = jax.jit(lambda p, x, y: jnp.sum(jax.vmap(loss.log_likelihood)(predict_fn(p, x), y)))
    return sum(batch(params, x, y) for x, y in batches(inputs, targets, batch_size))


__all__ = ["LINKS", "LaplacePosterior", "STRUCTURES", "laplace"]
