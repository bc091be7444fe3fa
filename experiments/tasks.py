"""Tasks: data + model + loss + test metric, built from a task config."""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import optax

from .data import Split, load_digits, load_mnist
from .models import SmallCNN, split_model
from .task import Task


def classification_loss(predict_fn: Callable) -> Callable:
    """``train_loss(params, inputs, labels, key)``: the mean softmax cross-entropy of ``predict_fn``'s logits
    against integer labels (the key is unused: no dropout)."""
    def train_loss(params, inputs, labels, key):
        del key
        return optax.softmax_cross_entropy_with_integer_labels(predict_fn(params, inputs), labels).mean()

    return train_loss


def _classification(train: Split, test: Split, cfg, seed: int, label: str) -> Task:
    image_size = train.images.shape[1]
    model = SmallCNN(image_size, key=jax.random.key(seed), channels=cfg.channels, hidden=cfg.hidden)
    params, predict_fn = split_model(model)
    train_loss = classification_loss(predict_fn)
    test_x, test_y = jnp.asarray(test.images), jnp.asarray(test.labels)

    @jax.jit
    def evaluate_arrays(params):
        logits = predict_fn(params, test_x)
        loss = optax.softmax_cross_entropy_with_integer_labels(logits, test_y).mean()
        return jnp.mean(jnp.argmax(logits, -1) == test_y), loss

    def evaluate(params):
        accuracy, loss = evaluate_arrays(params)
        return {"test_accuracy": float(accuracy), "test_loss": float(loss)}

    n_params = sum(int(leaf.size) for leaf in jax.tree_util.tree_leaves(params))
    return Task(
        params=params, predict_fn=predict_fn, loss="softmax_cross_entropy", train_loss=train_loss,
        train=(train.images, train.labels), evaluate=evaluate, metric="test_accuracy",
        batch_size=cfg.batch_size, epochs=cfg.epochs,
        description=f"{label}: {len(train.labels)} train / {len(test.labels)} test images, CNN with {n_params:,} parameters",
        test=(test.images, test.labels),
    )


def build_task(cfg, seed: int) -> Task:
    """The task named by ``cfg.name`` (digits, mnist, squad)."""
    if cfg.name == "digits":
        train, test = load_digits(cfg.test_size, seed)
        return _classification(train, test, cfg, seed, "digits (scikit-learn)")
    if cfg.name == "mnist":
        train, test = load_mnist(cfg.data_dir, cfg.train_size, cfg.test_size, seed)
        return _classification(train, test, cfg, seed, f"MNIST from {cfg.data_dir}")
    if cfg.name == "squad":
        from .qa import build_qa_task

        return build_qa_task(cfg, seed)
    raise ValueError(f"unknown task {cfg.name!r}")
