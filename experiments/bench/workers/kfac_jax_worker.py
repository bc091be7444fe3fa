"""kfac-jax's side of the comparison (experiments.bench.kfac_jax), run in kfac-jax's own environment.

``python -E -s kfac_jax_worker.py``: serves the main process's requests on stdin (``protocol``): ``versions``,
``setup`` (build Adam and kfac-jax's optimizer per estimation mode and refresh period on the shared problem,
``kfac_jax_problem``, and warm them) and ``run`` (one timed round of a case). jax 0.8, numpy, optax and kfac-jax:
this project's packages are not importable here.
"""

from __future__ import annotations

import os
import platform
from typing import Any

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import optax  # noqa: E402

import protocol  # noqa: E402
from kfac_jax_problem import (  # noqa: E402
    ADAM_STEPS, DAMPING, EMA_DECAY, LEARNING_RATE, SIZES, Params, Training, case, cross_entropy, init_params,
    make_batch, predict,
)

jax.config.update("jax_enable_x64", False)


def adam_training() -> Training:
    """``optax.adam`` on the problem: this environment's normaliser (its own train step: the project's is not
    importable here)."""
    optimizer = optax.adam(LEARNING_RATE)
    params, (inputs, labels) = init_params(), make_batch()

    def step(params: Params, state: Any, inputs: jax.Array, labels: jax.Array) -> tuple[Params, Any, jax.Array]:
        loss, grads = jax.value_and_grad(lambda p: cross_entropy(predict(p, inputs), labels))(params)
        updates, state = optimizer.update(grads, state, params)
        return optax.apply_updates(params, updates), state, loss

    donated = jax.jit(step, donate_argnums=(0, 1))
    return Training(lambda params, state, count: donated(params, state, inputs, labels), params,
                    optimizer.init(params), ADAM_STEPS)


def kfac_jax_training(mode: str, period: int) -> tuple[Training, list[str]]:
    """kfac-jax's optimizer on the problem (experiments.bench.kfac_jax's docstring), and the names of the
    curvature blocks it chose."""
    import kfac_jax

    def loss_fn(params: Params, batch: tuple[jax.Array, jax.Array]) -> jax.Array:
        logits = predict(params, batch[0])
        kfac_jax.register_softmax_cross_entropy_loss(logits, batch[1])
        return cross_entropy(logits, batch[1])

    optimizer = kfac_jax.Optimizer(
        value_and_grad_func=jax.value_and_grad(loss_fn), l2_reg=0.0, use_adaptive_learning_rate=False,
        use_adaptive_momentum=False, use_adaptive_damping=False, estimation_mode=mode, curvature_ema=EMA_DECAY,
        curvature_update_period=period, inverse_update_period=period, num_burnin_steps=0, multi_device=False)
    params, batch, key = init_params(), make_batch(), jax.random.PRNGKey(0)
    state = optimizer.init(params, key, batch)
    hyper = {name: jnp.asarray(value, jnp.float32)
             for name, value in (("learning_rate", LEARNING_RATE), ("momentum", 0.0), ("damping", DAMPING))}

    def step(params: Params, state: Any, count: int) -> tuple[Params, Any, jax.Array]:
        params, state, stats = optimizer.step(params, state, key, batch=batch, global_step_int=count, **hyper)
        return params, state, stats["loss"]

    blocks = [type(block).__name__ for block in optimizer._estimator.blocks]  # no public accessor
    if len(blocks) != len(SIZES) - 1 or not all(name.startswith("Dense") for name in blocks):
        raise RuntimeError(f"kfac-jax's automatic registration did not find the {len(SIZES) - 1} dense layers: "
                           f"blocks {blocks}")
    return Training(step, params, state, period), blocks


def main() -> None:
    """Serve the main process's requests: versions, set up (build and warm every optimizer), run a round."""
    trainings: dict[str, Training] = {}

    def setup(periods: list[int], modes: list[str]) -> dict:
        """Build Adam and kfac-jax per (mode, period), warm them; their first-round seconds and curvature blocks."""
        first_round_s, blocks = {}, {}
        trainings["kfac_jax adam"] = adam_training()
        for mode in modes:
            for period in periods:
                trainings[case("kfac_jax", period, mode)], blocks[mode] = kfac_jax_training(mode, period)
        for name, training in trainings.items():
            first_round_s[name] = training.warm()
        return {"first_round_s": first_round_s, "blocks": blocks}

    protocol.serve({
        "versions": lambda: {"python": platform.python_version(),
                             **protocol.package_versions("kfac-jax", "jax", "jaxlib", "optax")},
        "setup": setup,
        "run": lambda name: {"times": trainings[name]()},
    })


if __name__ == "__main__":
    main()
