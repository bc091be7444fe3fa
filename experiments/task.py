"""The task record: what the trainer needs from a task (the builders are in experiments.tasks and experiments.qa)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import numpy as np


@dataclass
class Task:
    """What the trainer needs from a task.

    Attributes:
        params: initial trainable parameters (a pytree).
        predict_fn: ``predict_fn(params, inputs) -> outputs`` over a batch (no dropout): used by curvature.
        loss: the optimizers' loss name or callable (on one example's outputs and target).
        train_loss: ``train_loss(params, inputs, targets, key) -> scalar`` mean batch loss for the gradient.
        train: training inputs and targets (numpy; the trainer batches them).
        evaluate: ``evaluate(params) -> dict`` of test metrics, ``metric`` among its keys.
        metric: name of the headline test metric (higher is better).
        batch_size, epochs: from the config.
        description: one line for logs.
        curvature: what ``curvature=auto`` means for this task's natural-gradient optimizers.
        test: test inputs and targets (numpy) where the task has them as arrays (the classification tasks).
    """

    params: Any
    predict_fn: Callable
    loss: Any
    train_loss: Callable
    train: tuple[Any, np.ndarray]
    evaluate: Callable[[Any], dict]
    metric: str
    batch_size: int
    epochs: int
    description: str
    curvature: str = "ggn"
    test: tuple[Any, np.ndarray] | None = None
