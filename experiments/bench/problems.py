"""The benchmark problems (models of experiments.models with one fixed random batch) and the one train step
every section times: the trainer's own (experiments.trainer.train_step) on mean softmax cross-entropy.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import optax

from experiments.models import SmallCNN, split_model
from experiments.tasks import classification_loss
from experiments import hardware
from experiments.trainer import train_step

# The K-FAC benchmark MLP (kfac, sharding): 784 -> 1024 -> 1024 -> 10, ReLU, batch 512.
KFAC_INPUTS, KFAC_HIDDEN, KFAC_CLASSES, KFAC_BATCH = 784, 1024, 10, 512


class Problem(NamedTuple):
    """Trainable parameters, ``predict_fn(params, inputs) -> logits`` and one batch of inputs and integer labels."""

    params: Any
    predict_fn: Callable
    inputs: jax.Array
    labels: jax.Array


def cnn(image: int = 28, batch: int = 64, classes: int = 10, **cnn_options) -> Problem:
    """The TNGD paper's MNIST CNN (experiments.models.SmallCNN; ``channels``, ``hidden`` as its options) on
    ``batch`` standard-normal ``image`` x ``image`` images with random labels."""
    params, predict_fn = split_model(SmallCNN(image, key=jr.key(0), classes=classes, **cnn_options))
    inputs = jr.normal(jr.key(1), (batch, image, image))
    labels = jr.randint(jr.key(2), (batch,), 0, classes)
    return Problem(params, predict_fn, inputs, labels)


def mlp(inputs: int, hidden: int, outputs: int, batch: int, *, depth: int = 1,
        activation: Callable = jnp.tanh, seed: int = 0) -> Problem:
    """An ``eqx.nn.MLP`` inputs -> hidden (x ``depth``) -> outputs and ``batch`` standard-normal inputs with random
    labels."""
    k_model, k_x, k_y = jr.split(jr.key(seed), 3)
    model = eqx.nn.MLP(inputs, outputs, hidden, depth=depth, activation=activation, key=k_model)
    params, predict_fn = split_model(model)
    return Problem(params, predict_fn, jr.normal(k_x, (batch, inputs)), jr.randint(k_y, (batch,), 0, outputs))


def kfac_mlp(hidden: int = KFAC_HIDDEN, batch: int = KFAC_BATCH) -> Problem:
    """The K-FAC benchmark's MLP 784-hidden-hidden-10 with ReLU (``hidden``/``batch`` shrink it for tests)."""
    return mlp(KFAC_INPUTS, hidden, KFAC_CLASSES, batch, depth=2, activation=jax.nn.relu)


def cross_entropy_step(optimizer: optax.GradientTransformation, predict_fn: Callable, *,
                       donate: bool = False) -> Callable:
    """The trainer's step on the mean softmax cross-entropy of ``predict_fn``, jit-compiled:
    ``step(params, state, inputs, labels) -> (params, state, loss)``.

    ``donate`` donates the parameters and optimizer state (XLA then updates them in place, as the trainer does);
    the caller must then not reuse the arrays it passes in.
    """
    update = train_step(classification_loss(predict_fn), optimizer)

    def step(params, state, inputs, labels):
        return update(params, state, inputs, labels, None)

    return jax.jit(step, donate_argnums=(0, 1) if donate else ())


def optimizer_state(state: Any, kind: type) -> Any | None:
    """The first ``kind`` node (e.g. ``kfac_thermo.KFACState``) in an optimizer state, or None."""
    is_kind = lambda node: isinstance(node, kind)
    return next((node for node in jax.tree_util.tree_leaves(state, is_leaf=is_kind) if is_kind(node)), None)


def model_calls(state: Any) -> float:
    """Model passes of the last step (the state's work records), the gradient's counted as one call (1 for a
    first-order optimizer)."""
    import kfac_thermo

    work = kfac_thermo.total_work(state)
    return 1.0 + float(work.forward_passes + work.reverse_passes)


def modeled_time_s(state: Any, profile: hardware.PassProfile, num_params: int) -> float:
    """Modeled hardware seconds of the last step, as the trainer reports them (its work records and the
    gradient's passes on ``experiments.hardware.DEFAULT_HARDWARE``); ``profile`` is the problem's
    :func:`experiments.hardware.measure_passes`."""
    return hardware.modeled_seconds(state, profile, profile.examples, num_params)
