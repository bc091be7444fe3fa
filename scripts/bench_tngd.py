"""Step cost of TNGD and the NGD baselines relative to optax.adam on the paper's MNIST CNN, in one run.

    python scripts/bench_tngd.py [--quick] [--out bench_tngd.json]

Every optimizer takes the same jit-compiled train step (loss, gradient, update, apply) on the same batch of 64
28x28 images through the same one-conv-two-dense CNN (86,794 parameters). Times are medians over repeats
after a warm-up call (compilation excluded); the ratio is optimizer step time over the Adam step time measured
in the same run, so lower is better. Model calls per step come from the transform's state.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import jax
import jax.numpy as jnp
import jax.random as jr
import optax

import kfac_thermo
import thermox
from experiments.models import SmallCNN, count_parameters, split_model

BATCH, CLASSES, IMAGE = 64, 10, 28


def make_step(optimizer, predict_fn):
    def loss_fn(params, inputs, labels):
        logits = predict_fn(params, inputs)
        return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()

    @jax.jit
    def step(params, state, inputs, labels):
        loss, grads = jax.value_and_grad(loss_fn)(params, inputs, labels)
        updates, state = optimizer.update(grads, state, params, batch=(inputs, labels))
        return optax.apply_updates(params, updates), state, loss

    return step


def time_step(step, params, state, inputs, labels, repeats: int) -> tuple[float, object]:
    params, state, loss = step(params, state, inputs, labels)
    jax.block_until_ready(loss)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        params, state, loss = step(params, state, inputs, labels)
        jax.block_until_ready((params, loss))
        times.append(time.perf_counter() - start)
    return statistics.median(times), state


def model_calls(state) -> float | None:
    for leaf_state in jax.tree_util.tree_leaves(state, is_leaf=lambda s: isinstance(s, kfac_thermo.NaturalGradientState)):
        if isinstance(leaf_state, kfac_thermo.NaturalGradientState):
            return float(leaf_state.model_calls)
    return 1.0


def optimizers(predict_fn, key):
    common = dict(predict_fn=predict_fn, loss="softmax_cross_entropy")
    noisy = thermox.AnalogDevice(kappa0=0.01)
    return {
        "adam": optax.adam(1e-3),
        "tngd_t50": kfac_thermo.tngd(0.01, damping=0.01, t=50.0, device=noisy, key=key, **common),
        "tngd_t5": kfac_thermo.tngd(0.01, damping=0.01, t=5.0, device=noisy, key=key, **common),
        "tngd_mc_fisher": kfac_thermo.tngd(0.01, damping=0.01, t=50.0, device=noisy, key=key,
                                           curvature="mc_fisher", **common),
        "tngd_quantized_8bit": kfac_thermo.tngd(
            0.01, damping=0.01, t=50.0, key=key,
            device=thermox.AnalogDevice(kappa0=0.01, dac_bits=8, adc_bits=8, coupling_bits=8), **common),
        "tngd_adam": kfac_thermo.tngd_adam(1e-3, damping=1.0, t=0.4, device=noisy, key=key, **common),
        "ngd_woodbury": kfac_thermo.ngd_woodbury(0.01, damping=0.01, **common),
        "ngd_cg": kfac_thermo.ngd_cg(0.01, damping=0.01, iterations=200, **common),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats")
    parser.add_argument("--out", default="bench_tngd.json")
    args = parser.parse_args()
    repeats = 3 if args.quick else 10
    key = jr.key(0)
    params, predict_fn = split_model(SmallCNN(IMAGE, key=key))
    inputs = jr.normal(jr.key(1), (BATCH, IMAGE, IMAGE))
    labels = jr.randint(jr.key(2), (BATCH,), 0, CLASSES)
    results = {}
    for name, optimizer in optimizers(predict_fn, jr.key(3)).items():
        seconds, state = time_step(make_step(optimizer, predict_fn), params, optimizer.init(params), inputs, labels,
                                   repeats)
        results[name] = {"step_s": seconds, "model_calls": model_calls(state)}
        print(f"{name:22s} {seconds * 1e3:10.2f} ms", flush=True)
    adam = results["adam"]["step_s"]
    report = {
        "setting": {"model": "SmallCNN 28x28, 8 channels, 16 hidden", "parameters": count_parameters(params),
                    "batch": BATCH, "dz": CLASSES, "repeats": repeats, "backend": jax.default_backend(),
                    "jax": jax.__version__},
        "results": results,
        "ratios": {f"{name}_step_over_adam": r["step_s"] / adam for name, r in results.items() if name != "adam"},
        "skipped": {"ngd_dense": "exact dense NGD forms an N x N = 86,794^2 matrix (30 GB): not run at this size"},
    }
    with open(args.out, "w") as f:
        json.dump(report, f, indent=2)
    print("\n| optimizer | step (ms) | x Adam | model calls |\n|---|---|---|---|")
    for name, r in results.items():
        print(f"| {name} | {r['step_s'] * 1e3:.2f} | {r['step_s'] / adam:.1f} | {r['model_calls']:.0f} |")


if __name__ == "__main__":
    main()
