"""The problem both sides of the kfac-jax comparison train (experiments.bench.kfac_jax), and how a round is timed.

An MLP 784-1024-1024-10 with ReLU as a plain-JAX function of ``[(W, b), ...]`` (the same function and the same
float32 initial parameters in both environments), one batch of 512 standard-normal inputs with random labels out
of 10, softmax cross-entropy, learning rate and damping 1e-3, factor moving averages 0.95. jax, numpy and optax
only: kfac-jax's worker imports it in its own environment.
"""

from __future__ import annotations

import time
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax

SIZES, BATCH, CLASSES = (784, 1024, 1024, 10), 512, 10
LEARNING_RATE, DAMPING, EMA_DECAY = 1e-3, 1e-3, 0.95
ADAM_STEPS = 10  # per round; a K-FAC round is one refresh period
WARM_ROUNDS = 2

Params = list[tuple[jax.Array, jax.Array]]
StepFn = Callable[[Any, Any, int], tuple[Any, Any, jax.Array]]


def init_params(seed: int = 0) -> Params:
    """``[(W, b), ...]`` of the MLP, LeCun-normal weights and zero biases, float32 (the same in both processes)."""
    rng = np.random.default_rng(seed)
    return [(jnp.asarray(rng.standard_normal((n_in, n_out)) / np.sqrt(n_in), jnp.float32),
             jnp.zeros(n_out, jnp.float32)) for n_in, n_out in zip(SIZES[:-1], SIZES[1:])]


def make_batch(seed: int = 1) -> tuple[jax.Array, jax.Array]:
    """``(inputs (BATCH, 784) float32, labels (BATCH,) int32)``."""
    rng = np.random.default_rng(seed)
    return (jnp.asarray(rng.standard_normal((BATCH, SIZES[0])), jnp.float32),
            jnp.asarray(rng.integers(0, CLASSES, BATCH), jnp.int32))


def predict(params: Params, inputs: jax.Array) -> jax.Array:
    """Logits of the ReLU MLP: ``x @ W + b`` per layer (found as dense layers by both K-FACs)."""
    for i, (weight, bias) in enumerate(params):
        inputs = inputs @ weight + bias
        if i < len(params) - 1:
            inputs = jax.nn.relu(inputs)
    return inputs


def cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """Mean softmax cross-entropy over the batch (integer labels)."""
    return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()


def case(optimizer: str, period: int, mode: str | None = None) -> str:
    """The name of a timed case: ``"kfac refresh 10"``, ``"kfac_jax ggn_exact refresh 1"``."""
    return f"{optimizer}{'' if mode is None else ' ' + mode} refresh {period}"


class Training:
    """One optimizer training on the batch. Each call (a round) runs ``steps`` steps from the carried parameters
    and state and returns ``(wall, cpu)`` seconds per step (CPU: this process's ``time.process_time``)."""

    def __init__(self, step: StepFn, params: Any, state: Any, steps: int):
        self.step, self.params, self.state, self.steps, self.count = step, params, state, steps, 0

    def __call__(self) -> tuple[float, float]:
        params, state, steps = self.params, self.state, self.steps
        wall, cpu = time.perf_counter(), time.process_time()
        for _ in range(steps):
            params, state, loss = self.step(params, state, self.count)
            self.count += 1
        jax.block_until_ready((params, loss))
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        self.params, self.state = params, state
        return wall / steps, cpu / steps

    def warm(self) -> float:
        """Compile and run WARM_ROUNDS rounds untimed (every refresh branch compiled); seconds of the first."""
        first = self()[0] * self.steps
        for _ in range(WARM_ROUNDS - 1):
            self()
        return first
