"""Step cost of TNGD and the NGD baselines relative to optax.adam on the paper's MNIST CNN, in one run.

    python scripts/bench_tngd.py [--quick] [--out bench_tngd.json] [--repeats N]

Every optimizer takes the same jit-compiled train step (experiments.bench.problems.cross_entropy_step: loss,
gradient, update, apply) on the same batch of 64 28x28 images through the same one-conv-two-dense CNN (86,794
parameters). Each step is compiled once (its XLA memory analysis kept) and warmed up, then the optimizers are
timed interleaved (adam, tngd, ..., adam, tngd, ...), each call one step continuing from the previous parameters
and optimizer state. ``step_s`` is the median over repeats, ``step_min_s`` the minimum; the ratios are optimizer
step time over the Adam step time measured in the same run (``ratios``: of medians, ``ratios_min``: of minima),
so lower is better. Model calls and modeled hardware seconds per step come from the transform's state. The
baselines a researcher would pick beside Adam, Muon and Sophia-G, are the runner's (experiments.optimizers, with
its default hyperparameters and work records); Sophia-G refreshes its curvature every ``update_interval`` steps,
so it is timed in whole refresh periods and its model calls and modeled time are the mean over one period.
"""

from __future__ import annotations

import argparse
import json

import jax
import jax.random as jr
import optax

import kfac_thermo
import thermox
from experiments import config, hardware
from experiments.models import count_parameters
from experiments.optimizers import build_optimizer

from . import problems
from .tables import markdown_table
from .timing import StepTimer, time_steps

BATCH, CLASSES, IMAGE = 64, 10, 28
ALL = ("adam", "muon", "sophia", "tngd_t50", "tngd_t5", "tngd_mc_fisher", "tngd_quantized_8bit", "tngd_adam",
       "ngd_woodbury", "ngd_cg")
QUICK = ("adam", "muon", "sophia", "tngd_t50", "tngd_mc_fisher", "tngd_adam", "ngd_woodbury")
PERIODS = {"sophia": config.SophiaOptimizer.update_interval}  # steps of a curvature refresh period
SKIPPED = {"ngd_dense": "exact dense NGD forms an N x N = 86,794^2 matrix (30 GB): not run at this size"}


def optimizers(predict_fn, key, names=ALL) -> dict:
    """The optimizers compared, by name (``names`` selects and orders them)."""
    common = dict(predict_fn=predict_fn, loss="softmax_cross_entropy")
    noisy = thermox.AnalogDevice(kappa0=0.01)
    runner = lambda name: build_optimizer(config.OPTIMIZERS[name](), config.DeviceConfig(), seed=0, **common)
    factories = {
        "adam": lambda: optax.adam(1e-3),
        "muon": lambda: runner("muon"),
        "sophia": lambda: runner("sophia"),
        "tngd_t50": lambda: kfac_thermo.tngd(0.01, damping=0.01, t=50.0, device=noisy, key=key, **common),
        "tngd_t5": lambda: kfac_thermo.tngd(0.01, damping=0.01, t=5.0, device=noisy, key=key, **common),
        "tngd_mc_fisher": lambda: kfac_thermo.tngd(0.01, damping=0.01, t=50.0, device=noisy, key=key,
                                                   curvature="mc_fisher", **common),
        "tngd_quantized_8bit": lambda: kfac_thermo.tngd(
            0.01, damping=0.01, t=50.0, key=key,
            device=thermox.AnalogDevice(kappa0=0.01, dac_bits=8, adc_bits=8, coupling_bits=8), **common),
        "tngd_adam": lambda: kfac_thermo.tngd_adam(1e-3, damping=1.0, t=0.4, device=noisy, key=key, **common),
        "ngd_woodbury": lambda: kfac_thermo.ngd_woodbury(0.01, damping=0.01, **common),
        "ngd_cg": lambda: kfac_thermo.ngd_cg(0.01, damping=0.01, iterations=200, **common),
    }
    unknown = set(names) - set(factories)
    if unknown:
        raise ValueError(f"unknown optimizers {sorted(unknown)}; choose from {list(factories)}")
    return {name: factories[name]() for name in names}


def bench(names=ALL, repeats: int = 10, *, image: int = IMAGE, batch: int = BATCH, verbose: bool = True,
          min_call_s: float = 0.2, **cnn) -> dict:
    """Time one step of each optimizer in ``names`` (``"adam"`` first: it is the baseline) on one CNN and batch.

    Returns ``{"setting", "results": {name: {step_s, step_min_s, stats, model_calls, modeled_time_s,
    peak_bytes}}, "ratios", "ratios_min", "skipped"}``; ``image``, ``batch`` and ``cnn`` (SmallCNN's
    ``channels``, ``hidden``) shrink the problem for smoke tests.
    """
    if "adam" not in names:
        raise ValueError("the baseline 'adam' must be among the optimizers")
    params, predict_fn, inputs, labels = problems.cnn(image, batch, CLASSES, **cnn)
    timers = {
        name: StepTimer(problems.cross_entropy_step(optimizer, predict_fn), params, optimizer.init(params),
                        (inputs, labels), steps_per_call=PERIODS.get(name, 1), min_call_s=min_call_s)
        for name, optimizer in optimizers(predict_fn, jr.key(3), names).items()
    }

    def progress(name, timer):
        if verbose:
            print(f"  compiled {name} ({timer.compile_s:.1f} s)", flush=True)

    stats = time_steps(timers, repeats, on_compiled=progress)
    num_params = count_parameters(params)
    profile = hardware.measure_passes(predict_fn, params, inputs)
    results = {}
    for name, timer in timers.items():
        memory = stats[name]["memory"]
        calls, modeled = period_mean(timer, PERIODS.get(name, 1), lambda state: (
            problems.model_calls(state), problems.modeled_time_s(state, profile, num_params)))
        results[name] = {
            "step_s": stats[name]["median_s"], "step_min_s": stats[name]["min_s"], "stats": stats[name],
            "model_calls": calls, "modeled_time_s": modeled,
            "peak_bytes": None if memory is None else memory["peak_bytes"],
        }
    adam = results["adam"]
    return {
        "setting": {"model": f"SmallCNN {image}x{image}, {cnn.get('channels', 8)} channels, "
                             f"{cnn.get('hidden', 16)} hidden",
                    "parameters": num_params, "batch": batch, "dz": CLASSES, "repeats": repeats,
                    "timing": f"interleaved; each call runs steps filling ~{min_call_s} s; step_s median, "
                              "step_min_s minimum over repeats of seconds per step",
                    "memory": "XLA memory_analysis() of the compiled step (arguments + outputs + temporaries)",
                    "backend": jax.default_backend(), "jax": jax.__version__},
        "results": results,
        "ratios": {f"{name}_step_over_adam": r["step_s"] / adam["step_s"]
                   for name, r in results.items() if name != "adam"},
        "ratios_min": {f"{name}_step_over_adam": r["step_min_s"] / adam["step_min_s"]
                       for name, r in results.items() if name != "adam"},
        "skipped": dict(SKIPPED),
    }


def period_mean(timer: StepTimer, period: int, measure) -> tuple[float, ...]:
    """The mean of ``measure(state)`` (a tuple of numbers) over ``period`` further steps of ``timer`` (a timer's
    calls end on whole periods, so these are one whole period); for a period of 1 its current state's."""
    if period == 1:
        return measure(timer.state)
    values = []
    for _ in range(period):
        timer.params, timer.state, _ = timer.compiled(timer.params, timer.state, *timer.batch)
        values.append(measure(timer.state))
    return tuple(float(sum(column) / period) for column in zip(*values))


def section(quick: bool, repeats: int | None = None, names=None, **problem) -> dict:
    """The suite's ``steps`` section: :func:`bench` on the paper's MNIST CNN, batch 64 (QUICK's optimizers and 5
    repeats with ``quick``, else ALL and 10)."""
    return bench(names or (QUICK if quick else ALL), repeats or (5 if quick else 10), **problem)


def table(report: dict) -> str:
    """Markdown: per optimizer, ms median (min), x Adam of medians (of minima), model calls, modeled time, memory."""
    results = report["results"]
    adam = results["adam"]
    rows = []
    for name, r in results.items():
        peak = "n/a" if r["peak_bytes"] is None else f"{r['peak_bytes'] / 2**20:.1f}"
        rows.append([name, f"{1e3 * r['step_s']:.2f} ({1e3 * r['step_min_s']:.2f})",
                     f"{r['step_s'] / adam['step_s']:.1f} ({r['step_min_s'] / adam['step_min_s']:.1f})",
                     f"{r['model_calls']:.0f}", f"{r['modeled_time_s']:.3g}", peak])
    return markdown_table(["optimizer", "step ms: median (min)", "x Adam: median (min)", "model calls",
                           "modeled hardware s", "XLA peak MiB"], rows)


def markdown(result: dict) -> str:
    """The suite report's section: the setting, :func:`table` and what was not run."""
    s = result["setting"]
    return "\n".join([
        f"## 2. Optimizer step cost: {s['model']} ({s['parameters']:,} parameters), batch {s['batch']}, "
        f"{s['repeats']} interleaved repeats", "", table(result), "",
        f"Not run: {'; '.join(f'{k}: {v}' for k, v in result['skipped'].items())}. Memory: XLA "
        "memory_analysis() of the compiled step (arguments + outputs + temporaries)."])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats")
    parser.add_argument("--repeats", type=int, default=None, help="timed repeats (default 10; quick 5)")
    parser.add_argument("--out", default="bench_tngd.json")
    args = parser.parse_args(argv)
    repeats = args.repeats or (5 if args.quick else 10)
    report = bench(ALL, repeats)
    with open(args.out, "w") as f:
        json.dump(report, f, indent=2)
    print()
    print(table(report))
