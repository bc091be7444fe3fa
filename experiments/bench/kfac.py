"""Step time of K-FAC and thermodynamic K-FAC relative to optax.adam on an MLP 784-1024-1024-10, batch 512.

    python scripts/bench_kfac.py [--quick] [--rounds N] [--out bench_kfac.json]

Every optimizer takes the same jit-compiled train step (experiments.bench.problems.cross_entropy_step) on the
same batch of 512 random 784-pixel inputs with 10 classes; curvature statistics and inverses (device
programming) are refreshed every 10 steps, so a step's time is the mean over whole periods of 10 steps.

- The suite's ``kfac`` section (:func:`section`) times Adam, K-FAC and thermodynamic K-FAC in interleaved calls
  of whole refresh periods (``experiments.bench.timing.StepTimer``).
- The command line (:func:`profile`) splits the time instead: rounds of one period per optimizer are interleaved
  and the median round is reported, as wall time and as this process's CPU time (less sensitive to other jobs on
  a shared machine); each step is timed on its own and waited for (``block_until_ready``: no queue of
  asynchronous steps), so the table also splits the CPU time into the refresh step (statistics and inverses; the
  first of each period) and the median of the other nine (gradient, preconditioning and bookkeeping only).
  "modeled s" is the modeled hardware time per step (the state's work records priced by ``experiments.hardware``) averaged over a period. Parameters and state are donated, as a performance-minded train loop does (XLA then updates them in
  place; without it, K-FAC's factors and inverses are copied into the refresh conditionals every step).

Compilation is excluded (one warm-up period). float32, as a user would train. OPENBLAS_NUM_THREADS=1
(experiments/bench/__init__.py): on CPU, XLA's LAPACK calls (eigh, Cholesky) run on OpenBLAS's own threads,
which fight XLA's thread pool for the cores; on this 2-core machine that made an eigh of a 1025 x 1025 factor take
0.3-3.7 s instead of 70 ms.
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
from experiments import hardware
from experiments.models import count_parameters

from . import problems
from .tables import fmt, markdown_table
from .timing import StepTimer, time_steps

PERIOD = 10

WANTED = {  # our name in bench.json: the words of optimizers()'s name for it (any order)
    "adam": ("adam",),
    # The headline pair: factors by curvature propagation (one reverse pass per refresh), kfac-jax's default.
    "kfac": ("kfac", "ggn_curvature_prop"),
    "thermo_kfac": ("thermo_kfac", "solve", "ideal", "ggn_curvature_prop"),  # the paper's method 2, ideal device
    "thermo_kfac_8bit": ("thermo_kfac", "solve", "8-bit", "ggn_curvature_prop"),
    # The exact GGN factors (the optimizers' default curvature: dz - 1 = 9 reverse passes per refresh).
    "kfac_ggn": ("kfac",),
    "thermo_kfac_ggn": ("thermo_kfac", "solve", "ideal"),
}
RATIOS = tuple(name for name in WANTED if name != "adam")


def optimizers(predict_fn, inputs, quick: bool) -> dict:
    """Adam, digital K-FAC and thermodynamic K-FAC (the paper's "solve" method, ideal and 8-bit converters) with
    two factor estimators: the exact GGN (the project's default: m = 9 reverse passes per refresh here) and
    curvature propagation ("ggn_curvature_prop": one Rademacher-weighted reverse pass per refresh, unbiased for the
    GGN; kfac-jax's default estimator). The full set adds the "invert" method, the Monte-Carlo Fisher (one sampled
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


def kfac_name(available, ours: str) -> str | None:
    """The name :func:`optimizers` gives our ``ours`` (exact words, e.g. "thermo_kfac solve ideal")."""
    words = set(WANTED[ours])
    matches = [name for name in available if set(name.split()) == words]
    return matches[0] if matches else None


def section(quick: bool, rounds: int | None = None, *, hidden: int | None = None, batch: int | None = None) -> dict:
    """The suite's ``kfac`` section: Adam, K-FAC and thermodynamic K-FAC timed in whole refresh periods.

    Each timer call runs one period (PERIOD steps: one curvature and inverse refresh, then cheap steps) and
    reports seconds per step; warm-up is one period (compilation and the first refresh). ``quick``: Adam and
    thermodynamic K-FAC only, 2 rounds (else all of WANTED, 5). ``hidden``/``batch`` shrink the MLP for tests.
    """
    hidden = hidden or problems.KFAC_HIDDEN
    batch = batch or problems.KFAC_BATCH
    params, predict_fn, inputs, labels = problems.kfac_mlp(hidden, batch)
    pass_profile = hardware.measure_passes(predict_fn, params, inputs)
    available = optimizers(predict_fn, inputs, True)
    wanted = ("adam", "thermo_kfac") if quick else tuple(WANTED)
    names = {ours: kfac_name(available, ours) for ours in wanted}
    timers = {ours: StepTimer(problems.cross_entropy_step(available[name], predict_fn), params,
                              available[name].init(params), (inputs, labels), steps_per_call=PERIOD, min_call_s=1.0)
              for ours, name in names.items()}
    rounds = rounds or (2 if quick else 5)
    stats = time_steps(timers, rounds, on_compiled=lambda n, t: print(
        f"  kfac: compiled {n} ({t.compile_s:.1f} s; first period {t.first_call_s * PERIOD:.1f} s)", flush=True))
    results = {}
    for name, timer in timers.items():
        state = problems.optimizer_state(timer.state, kfac_thermo.KFACState)
        results[name] = {
            "optimizer": names[name], "step_s": stats[name]["median_s"], "step_min_s": stats[name]["min_s"],
            "stats": stats[name],
            "model_calls_last_step": None if state is None else problems.model_calls(timer.state),
            "modeled_time_s_last_step": None if state is None else problems.modeled_time_s(
                timer.state, pass_profile, count_parameters(params)),
            "peak_bytes": (stats[name]["memory"] or {}).get("peak_bytes"),
        }
    adam = results["adam"]
    return {
        "setting": {"model": f"MLP {problems.KFAC_INPUTS}-{hidden}-{hidden}-{problems.KFAC_CLASSES}",
                    "parameters": count_parameters(params), "batch": batch, "period": PERIOD,
                    "rounds": rounds, "source": "optimizers from experiments/bench/kfac.py",
                    "timing": "interleaved rounds of one refresh period each; seconds per step"},
        "results": results,
        "ratios": {f"{n}_step_over_adam": r["step_s"] / adam["step_s"] for n, r in results.items() if n != "adam"},
        "ratios_min": {f"{n}_step_over_adam": r["step_min_s"] / adam["step_min_s"]
                       for n, r in results.items() if n != "adam"},
    }


def markdown(result: dict) -> str:
    """The suite report's section: per optimizer its step time, ratio over Adam, model calls, modeled time, memory."""
    s = result["setting"]
    adam = result["results"]["adam"]
    rows = [[r["optimizer"], f"{1e3 * r['step_s']:.1f} ({1e3 * r['step_min_s']:.1f})",
             f"{r['step_s'] / adam['step_s']:.1f} ({r['step_min_s'] / adam['step_min_s']:.1f})",
             fmt(r["model_calls_last_step"], ".0f"), fmt(r["modeled_time_s_last_step"], ".3g"),
             fmt(None if r["peak_bytes"] is None else r["peak_bytes"] / 2**20, ".0f")]
            for r in result["results"].values()]
    return "\n".join([
        f"### K-FAC: {s['model']} ({s['parameters']:,} parameters), batch {s['batch']}, refresh every "
        f"{s['period']} steps, {s['rounds']} interleaved rounds of one period", "",
        markdown_table(["optimizer", "ms/step: median (min)", "x Adam: median (min)", "model calls (last step)",
                        "modeled s (last step)", "XLA peak MiB"], rows)])


def profile(quick: bool, rounds: int | None = None, *, hidden: int | None = None, batch: int | None = None) -> dict:
    """Per optimizer of :func:`optimizers`, the median round's wall and CPU seconds per step, split into the
    refresh step and the others (module docstring); prints the table as it goes. ``quick``: the quick set of
    optimizers, 2 rounds (else all, 5); ``hidden``/``batch`` shrink the MLP for tests."""
    rounds = rounds or (2 if quick else 5)
    hidden, batch = hidden or problems.KFAC_HIDDEN, batch or problems.KFAC_BATCH
    params, predict_fn, inputs, labels = problems.kfac_mlp(hidden, batch)
    pass_profile = hardware.measure_passes(predict_fn, params, inputs)
    print(f"MLP {problems.KFAC_INPUTS}-{hidden}-{hidden}-{problems.KFAC_CLASSES}: {count_parameters(params):,} "
          f"parameters, batch {batch}, refresh every {PERIOD} steps, {jax.device_count()} {jax.default_backend()} "
          "device(s)")

    runs = {}
    for name, optimizer in optimizers(predict_fn, inputs, quick).items():
        step = problems.cross_entropy_step(optimizer, predict_fn, donate=True)
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
                if problems.optimizer_state(state, kfac_thermo.KFACState) is not None:  # read now: donated next
                    modeled.append(problems.modeled_time_s(state, pass_profile, count_parameters(p)))
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
    return dict(batch=batch, sizes=[problems.KFAC_INPUTS, hidden, hidden, problems.KFAC_CLASSES], period=PERIOD,
                results=results)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer rounds and optimizers")
    parser.add_argument("--rounds", type=int, default=None)
    parser.add_argument("--out", default=None, help="write the results as JSON here")
    args = parser.parse_args(argv)
    result = profile(args.quick, args.rounds)
    if args.out:
        with open(args.out, "w") as f:
            json.dump(result, f, indent=2)
