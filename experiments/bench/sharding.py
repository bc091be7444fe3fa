"""Data-parallel step time: the K-FAC MLP benchmark on N host devices over the same step on one device.

    python scripts/bench_sharding.py [--quick] [--devices 4] [--out bench_sharding.json]

The MLP 784-1024-1024-10 with batch 512 of experiments.bench.kfac (refresh every 10 steps; each timer call runs
whole refresh periods) is trained by optax.adam, K-FAC and thermodynamic K-FAC (ideal device, method "solve") in
one process that sees ``--devices`` CPU devices (XLA_FLAGS=--xla_force_host_platform_device_count=N, set by
running this module in a subprocess): once with everything on the first device, once with the batch sharded
over all N (parameters and state replicated; K-FAC's per-layer solves spread over the devices,
``kfac_thermo.distribute``). The two runs of each optimizer are timed interleaved; the ratio is N-device step
time over 1-device step time (lower is better; 1/N would be perfect scaling on N real devices). On a CPU the
"devices" share the machine's cores, so this measures the overhead of the partitioned program and its
collectives, not a speed-up. Every step is waited for before the next is dispatched (in both runs), as a train
loop reading its loss does: with host devices a deep queue of steps with collectives can deadlock XLA's CPU
runtime.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import optax

import kfac_thermo
from experiments.models import count_parameters

from . import problems
from .kfac import PERIOD
from .timing import StepTimer, machine, time_steps

OPTIMIZERS = ("adam", "kfac", "thermo_kfac")


def measure(quick: bool, devices: int, hidden: int | None, batch: int | None) -> dict:
    """The interleaved timings (runs in the process that has the ``devices`` host devices)."""
    hidden, batch = hidden or problems.KFAC_HIDDEN, batch or problems.KFAC_BATCH
    params, predict_fn, inputs, labels = problems.kfac_mlp(hidden, batch)
    common = dict(predict_fn=predict_fn, loss="softmax_cross_entropy", damping=1e-3, example_inputs=inputs,
                  curvature_period=PERIOD, inverse_period=PERIOD)
    makers = {
        "adam": lambda mesh: optax.adam(1e-3),
        "kfac": lambda mesh: kfac_thermo.kfac(1e-3, mesh=mesh, **common),
        "thermo_kfac": lambda mesh: kfac_thermo.thermo_kfac(1e-3, method="solve", t=1e3, mesh=mesh, **common),
    }
    if quick:
        del makers["kfac"]
    one, many = kfac_thermo.data_mesh(1), kfac_thermo.data_mesh(devices)
    timers = {}
    for name, make in makers.items():
        for label, mesh in (("1", one), (str(devices), many)):
            optimizer = make(None if mesh is one else mesh)
            placed = kfac_thermo.replicate((params, optimizer.init(params)), mesh)
            timers[f"{name} {label}"] = StepTimer(problems.cross_entropy_step(optimizer, predict_fn), *placed,
                                                  kfac_thermo.shard_batch((inputs, labels), mesh),
                                                  steps_per_call=PERIOD, min_call_s=1.0, block_each_step=True)
    stats = time_steps(timers, 2 if quick else 5, on_compiled=lambda n, t: print(
        f"  compiled {n} ({t.compile_s:.1f} s)", file=sys.stderr, flush=True))
    ratios = {name: stats[f"{name} {devices}"]["min_s"] / stats[f"{name} 1"]["min_s"] for name in makers}
    ratios_median = {name: stats[f"{name} {devices}"]["median_s"] / stats[f"{name} 1"]["median_s"]
                     for name in makers}
    return {
        "setting": {"model": f"MLP {problems.KFAC_INPUTS}-{hidden}-{hidden}-{problems.KFAC_CLASSES}",
                    "parameters": count_parameters(params), "batch": batch, "period": PERIOD, "devices": devices,
                    "timing": "interleaved calls of whole refresh periods; seconds per step"},
        "machine": machine(),
        "stats": {name: {k: v for k, v in s.items() if k != "memory"} for name, s in stats.items()},
        "ratios": ratios,
        "ratios_median": ratios_median,
        "reason": None,
    }


def section(quick: bool, devices: int = 4, hidden: int | None = None, batch: int | None = None) -> dict:
    """The suite's ``sharding`` section: :func:`measure` in a subprocess with ``devices`` host devices:
    ``ratios`` (of minima) and ``ratios_median`` per optimizer, N-device over 1-device step time; ``reason`` says
    why when it could not run. ``quick``: Adam and thermodynamic K-FAC, 2 rounds (else all three, 5)."""
    env = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}", JAX_PLATFORMS="cpu")
    command = [sys.executable, "-m", "experiments.bench.sharding", "--worker", "--devices", str(devices)]
    command += ["--quick"] * quick + ["--hidden", str(hidden)] * bool(hidden) + ["--batch", str(batch)] * bool(batch)
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=3600)
    if done.returncode != 0:
        return {"ratios": {}, "ratios_median": {}, "reason": f"the {devices}-device worker failed: "
                                                            f"{done.stderr.strip().splitlines()[-1:]}"}
    return json.loads(done.stdout.strip().splitlines()[-1])


def report(result: dict) -> str:
    """Markdown table of :func:`section`'s result."""
    if result.get("reason"):
        return f"not measured: {result['reason']}"
    setting, stats = result["setting"], result["stats"]
    n = setting["devices"]
    lines = [f"{setting['model']}, batch {setting['batch']}, refresh every {setting['period']} steps, {n} host "
             f"devices vs 1; ms per step: median (min)", "",
             f"| optimizer | 1 device | {n} devices | ratio {n}/1 (min) | ratio (median) |", "|---|---|---|---|---|"]
    for name, ratio in result["ratios"].items():
        one, many = stats[f"{name} 1"], stats[f"{name} {n}"]
        lines.append(f"| {name} | {1e3 * one['median_s']:.1f} ({1e3 * one['min_s']:.1f}) | "
                     f"{1e3 * many['median_s']:.1f} ({1e3 * many['min_s']:.1f}) | {ratio:.2f} | "
                     f"{result['ratios_median'][name]:.2f} |")
    return "\n".join(lines)


def markdown(result: dict) -> str:
    """The suite report's section: :func:`report` under its title."""
    return "\n".join(["## Data parallelism: 4 host devices over 1 (scripts/bench_sharding.py)", "", report(result)])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer rounds; Adam and thermodynamic K-FAC only")
    parser.add_argument("--devices", type=int, default=4)
    parser.add_argument("--hidden", type=int, default=None, help="hidden width (default the K-FAC MLP's 1024)")
    parser.add_argument("--batch", type=int, default=None, help="batch size (default the K-FAC MLP's 512)")
    parser.add_argument("--out", default=None, help="write the result as JSON here")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(measure(args.quick, args.devices, args.hidden, args.batch)))
        return
    result = section(args.quick, args.devices, args.hidden, args.batch)
    print(report(result))
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
