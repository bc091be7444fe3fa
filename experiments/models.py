"""Models of the papers' benchmarks, as equinox modules, with ``predict_fn(params, inputs)`` adapters."""

from __future__ import annotations

from typing import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, PRNGKeyArray, PyTree


class SmallCNN(eqx.Module):
    """The TNGD paper's classifier: one conv layer and two dense layers.

    ``Conv2d(1 -> channels, 3x3) -> ReLU -> flatten -> Linear(hidden) -> ReLU -> Linear(classes)``. On 28x28
    MNIST with 8 channels and 16 hidden units it has 86,794 parameters (the paper's ~87k); on 8x8 digits, 4,874.
    """

    conv: eqx.nn.Conv2d
    hidden: eqx.nn.Linear
    output: eqx.nn.Linear

    def __init__(self, image_size: int, *, key: PRNGKeyArray, channels: int = 8, hidden: int = 16,
                 classes: int = 10):
        k1, k2, k3 = jax.random.split(key, 3)
        self.conv = eqx.nn.Conv2d(1, channels, kernel_size=3, key=k1)
        features = channels * (image_size - 2) ** 2
        self.hidden = eqx.nn.Linear(features, hidden, key=k2)
        self.output = eqx.nn.Linear(hidden, classes, key=k3)

    def __call__(self, image: Float[Array, "h w"]) -> Float[Array, " classes"]:
        x = jax.nn.relu(self.conv(image[None]))
        x = jax.nn.relu(self.hidden(x.reshape(-1)))
        return self.output(x)


def split_model(model: eqx.Module) -> tuple[PyTree, Callable]:
    """Trainable arrays of ``model`` and ``predict_fn(params, inputs) -> outputs`` over a batch."""
    params, static = eqx.partition(model, eqx.is_inexact_array)

    def predict_fn(params: PyTree, inputs: Array) -> Array:
        return jax.vmap(eqx.combine(params, static))(inputs)

    return params, predict_fn


def count_parameters(params: PyTree) -> int:
    return sum(int(jnp.size(leaf)) for leaf in jax.tree_util.tree_leaves(params))
