"""Step time of K-FAC and thermodynamic K-FAC relative to optax.adam on an MLP 784-1024-1024-10, in one run.

    python scripts/bench_kfac.py [--quick] [--out bench_kfac.json]

Every optimizer takes the same jit-compiled train step (loss, gradient, update, apply) on the same batch of 512
random 784-pixel inputs with 10 classes; curvature statistics and inverses (device programming) are refreshed
every 10 steps, so a step's time is the mean over whole periods of 10 steps. Rounds of one period per optimizer
are interleaved (the machine is shared) and the median round is reported, as wall time and as this process's CPU
time (less sensitive to other jobs on a shared machine); ratios are over Adam in the same run. Each step is timed
on its own and waited for (``block_until_ready``: no queue of asynchronous steps), so the table also splits the
CPU time into the refresh step (statistics and inverses; the first of each period) and the median of the other
nine (gradient, preconditioning and bookkeeping only). "modeled s" is the modeled hardware time per step
(``experiments.trainer.modeled_step_seconds`` of the state's work records) averaged over a period. Compilation is
excluded (one warm-up period). float32, as a user would train.

OPENBLAS_NUM_THREADS=1 (set below unless given): on CPU, XLA's LAPACK calls (eigh, Cholesky) run on OpenBLAS's
own threads, which fight XLA's thread pool for the cores; on this 2-core machine that made an eigh of a 1025 x 1025
factor take 0.3-3.7 s instead of 70 ms.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import statistics
import time

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import optax

import kfac_thermo
import thermox
from experiments.models import count_parameters, split_model
from experiments.trainer import modeled_step_seconds

BATCH, INPUTS, HIDDEN, CLASSES, PERIOD = 512, 784, 1024, 10, 10


def make_step(optimizer, predict_fn):
    def loss_fn(params, inputs, labels):
        return optax.softmax_cross_entropy_with_integer_labels(predict_fn(params, inputs), labels).mean()

    # Parameters and optimizer state are donated, as a performance-minded train loop does: XLA then updates them
    # in place (without it, K-FAC's factors and inverses are copied into the refresh conditionals every step).
    @functools.partial(jax.jit, donate_argnums=(0, 1))
    def step(params, state, inputs, labels):
        loss, grads = jax.value_and_grad(loss_fn)(params, inputs, labels)
        updates, state = optimizer.update(grads, state, params, batch=(inputs, labels))
        return optax.apply_updates(params, updates), state, loss

    return step


def optimizers(predict_fn, inputs, quick: bool) -> dict:
    """Adam, digital K-FAC and thermodynamic K-FAC (the paper's "solve" method, ideal and 8-bit converters) with
    two factor estimators: the exact GGN (the project's default: m = 9 reverse passes per refresh here) and
    curvature propagation ("ggn_curvature_prop": one Rademacher-weighted reverse pass per refresh, unbiased for the
    GGN; kfac-jax's default estimator). The full run adds the "invert" method, the Monte-Carlo Fisher (one sampled
    label per example) and K-FAC with exact damping."""
    common = dict(predict_fn=predict_fn, loss="softmax_cross_entropy", damping=1e-3, example_inputs=inputs,
                  curvature_period=PERIOD, inverse_period=PERIOD)
    estimators = {"": common, " ggn_curvature_prop": dict(common, curvature="ggn_curvature_prop", key=jr.key(1))}
    if not quick:
        estimators[" mc_fisher"] = dict(common, curvature="mc_fisher", key=jr.key(1))
    devices = {"ideal": thermox.AnalogDevice(), "8-bit": thermox.AnalogDevice(dac_bits=8, adc_bits=8)}
    methods = ("solve",) if quick else ("solve", "invert")
    out = {"adam": optax.adam(1e-3)}
    for suffix, options in estimators.items():
        out[f"kfac{suffix}"] = kfac_thermo.kfac(1e-3, **options)
        for method in methods:
            for device_name, device in devices.items():
                out[f"thermo_kfac {method} {device_name}{suffix}"] = kfac_thermo.thermo_kfac(
                    1e-3, method=method, t=1e3, device=device, **options)
    if not quick:
        out["kfac exact damping"] = kfac_thermo.kfac(1e-3, damping_mode="exact", **common)
    return out


def kfac_state(state):
    is_kfac = lambda s: isinstance(s, kfac_thermo.KFACState)
    found = [s for s in jax.tree_util.tree_leaves(state, is_leaf=is_kfac) if is_kfac(s)]
    return found[0] if found else None


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer rounds and optimizers")
    parser.add_argument("--rounds", type=int, default=None)
    parser.add_argument("--out", default=None, help="write the results as JSON here")
    args = parser.parse_args()
    rounds = args.rounds or (2 if args.quick else 5)

    k_model, k_x, k_y = jr.split(jr.key(0), 3)
    model = eqx.nn.MLP(INPUTS, CLASSES, HIDDEN, depth=2, activation=jax.nn.relu, key=k_model)
    params, predict_fn = split_model(model)
    inputs = jr.normal(k_x, (BATCH, INPUTS))
    labels = jr.randint(k_y, (BATCH,), 0, CLASSES)
    print(f"MLP {INPUTS}-{HIDDEN}-{HIDDEN}-{CLASSES}: {count_parameters(params):,} parameters, batch {BATCH}, "
          f"refresh every {PERIOD} steps, {jax.device_count()} {jax.default_backend()} device(s)")

    runs = {}
    for name, optimizer in optimizers(predict_fn, inputs, args.quick).items():
        step = make_step(optimizer, predict_fn)
        start = time.perf_counter()
        p = jax.tree_util.tree_map(jnp.copy, params)  # donated: each optimizer trains its own copy
        state = optimizer.init(p)
        for _ in range(PERIOD):  # compile, and one full period
            p, state, loss = step(p, state, inputs, labels)
        jax.block_until_ready(loss)
        runs[name] = dict(step=step, params=p, state=state, times=[], cpu=[], refresh_cpu=[], other_cpu=[],
                          compile_s=time.perf_counter() - start)
        print(f"  compiled {name} ({runs[name]['compile_s']:.1f} s)", flush=True)

    for _ in range(rounds):
        for name, run in runs.items():
            p, state = run["params"], run["state"]
            walls, cpus, modeled = [], [], []
            for _ in range(PERIOD):  # the first step of each period refreshes the statistics and inverses
                start, cpu = time.perf_counter(), time.process_time()
                p, state, loss = run["step"](p, state, inputs, labels)
                jax.block_until_ready((p, loss))
                walls.append(time.perf_counter() - start)
                cpus.append(time.process_time() - cpu)
                if kfac_state(state) is not None:  # read now: the state is donated next
                    modeled.append(float(modeled_step_seconds(state, BATCH, count_parameters(params))))
            run["times"].append(sum(walls) / PERIOD)
            run["cpu"].append(sum(cpus) / PERIOD)
            run["refresh_cpu"].append(cpus[0])
            run["other_cpu"].append(statistics.median(cpus[1:]))
            run["modeled"] = float(sum(modeled)) / PERIOD if modeled else None
            run["params"], run["state"] = p, state

    adam = statistics.median(runs["adam"]["times"])
    adam_cpu = statistics.median(runs["adam"]["cpu"])
    results = {}
    print(f"\n{'optimizer':<26} {'wall ms':>8} {'x adam':>7} {'cpu ms':>8} {'x adam':>7} {'refresh':>8} {'other':>7} "
          f"{'modeled s':>11}")
    for name, run in runs.items():
        median, cpu = statistics.median(run["times"]), statistics.median(run["cpu"])
        refresh, other = statistics.median(run["refresh_cpu"]), statistics.median(run["other_cpu"])
        modeled = run.get("modeled")
        results[name] = dict(step_s=median, ratio_to_adam=median / adam, cpu_s=cpu, cpu_ratio_to_adam=cpu / adam_cpu,
                             refresh_step_cpu_s=refresh, other_step_cpu_s=other, rounds=run["times"],
                             cpu_rounds=run["cpu"], modeled_time_s=modeled, compile_s=run["compile_s"])
        print(f"{name:<26} {1e3 * median:8.1f} {median / adam:7.2f} {1e3 * cpu:8.1f} {cpu / adam_cpu:7.2f} "
              f"{1e3 * refresh:8.1f} {1e3 * other:7.1f} {'' if modeled is None else f'{modeled:.3e}':>11}")
    if args.out:
        with open(args.out, "w") as f:
            json.dump(dict(batch=BATCH, sizes=[INPUTS, HIDDEN, HIDDEN, CLASSES], period=PERIOD, results=results), f,
                      indent=2)


if __name__ == "__main__":
    main()
