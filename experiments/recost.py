r"""``python -m experiments.recost RUN_DIR... hardware=<digital>+<analog> [digital.F=V] [analog.F=V] [options]``

Prices finished runs again from their work records under other hardware, without re-running them: a run directory
holds every step's :class:`kfac_thermo.Work` in ``metrics.jsonl`` and its model's pass profile in
``hardware.json`` (``experiments.hardware``). Writes, into ``--out`` (default ``recost/<digital>+<analog>``):
``summary.json`` and ``summary.md`` (per run: time and energy per step, to the target metric value, and the total,
in both accountings, with the terms of the modeled time) and ``curves.png`` (the test metric against modeled
time and energy). Only the economics change here (link, tau, converters' energy, digital platform); device
physics (noise, bits, run time t) decides the steps and needs new runs.

Examples::

    python -m experiments.recost runs/digits-tngd-* hardware=h100+optimistic
    python -m experiments.recost runs/a runs/b hardware=a100+paper analog.link_bandwidth_bps=1e12 --target 0.9
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from typing import Iterable

import numpy as np

from kfac_thermo._work import Work

from . import hardware as hw
from . import rundir

HARDWARE_FILE = "hardware.json"


class RunRecord:
    """A finished run directory read back: its steps' work records, evaluations and pass profile."""

    def __init__(self, path: str):
        self.path = path
        if not os.path.isdir(path):
            raise ValueError(f"{path!r} is not a run directory")
        records = rundir.read_metrics(path)
        if not records:
            raise ValueError(f"{path!r} has no metrics.jsonl records: not a finished run")
        if any("work" not in r for r in records):
            raise ValueError(f"{path!r} has no work records (its metrics.jsonl records lack 'work': a run from before "
                             "work records were logged); run it again to re-cost it")
        meta_path = os.path.join(path, HARDWARE_FILE)
        if not os.path.exists(meta_path):
            raise ValueError(f"{path!r} has no {HARDWARE_FILE} (the model's pass profile): run it again to re-cost it")
        with open(meta_path) as f:
            self.meta = json.load(f)
        self.profile = hw.PassProfile.from_dict(self.meta["profile"])
        self.measured = hw.Measured.from_dict(self.meta["measured"])
        self.metric = self.meta.get("metric", "test_accuracy")
        self.steps = [r["step"] for r in records]
        self.works = [Work.from_dict(r["work"]) for r in records]
        self.work_steps = [int(r.get("work_steps", 1)) for r in records]
        self.evals = [(r["step"], r[self.metric]) for r in records if self.metric in r]
        self.logged = records
        self.label = os.path.basename(os.path.normpath(path))


def price(run: RunRecord, hardware: hw.Hardware) -> dict[str, np.ndarray]:
    """Per-step time and energy of ``run`` in both accountings, and the modeled time's terms."""
    out: dict[str, list[float]] = {}
    paper = hw.analog_platform("paper")
    for work, steps in zip(run.works, run.work_steps):
        # A record of several steps (run.log_every > 1) is priced as that many copies of its mean step; the
        # step-0 record (the initial evaluation) holds no step and costs nothing.
        mean = work if steps <= 1 else work.scaled(1.0 / steps)
        for name, cost in hw.accountings(mean, run.profile, hardware, run.measured, paper).items():
            out.setdefault(f"{name}_time_s", []).append(steps * cost.time_s)
            out.setdefault(f"{name}_energy_j", []).append(steps * cost.energy_j)
            if name == "modeled":
                for term in ("passes_s", "digital_s", "program_s", "transfer_s", "analog_s"):
                    out.setdefault(term, []).append(steps * getattr(cost, term))
    return {k: np.asarray(v) for k, v in out.items()}


def to_target(run: RunRecord, cumulative: np.ndarray, target: float) -> tuple[int | None, float | None]:
    """The first evaluated step whose metric reaches ``target``, and the cumulative value at it."""
    index = {step: i for i, step in enumerate(run.steps)}
    for step, value in run.evals:
        if value >= target:
            return step, float(cumulative[index[step]])
    return None, None


def summarize(runs: Iterable[RunRecord], hardware: hw.Hardware, target: float) -> dict:
    table = {}
    for run in runs:
        priced = price(run, hardware)
        steps = sum(run.work_steps)
        row = {"steps": run.steps[-1], "metric": run.metric,
               "final_metric": run.evals[-1][1] if run.evals else None}
        for acc in ("modeled", "paper"):
            time_s, energy_j = np.cumsum(priced[f"{acc}_time_s"]), np.cumsum(priced[f"{acc}_energy_j"])
            step, t_target = to_target(run, time_s, target)
            _, e_target = to_target(run, energy_j, target)
            row[acc] = {"time_per_step_s": float(np.sum(priced[f"{acc}_time_s"]) / steps),
                        "energy_per_step_j": float(np.sum(priced[f"{acc}_energy_j"]) / steps),
                        "total_time_s": float(time_s[-1]), "total_energy_j": float(energy_j[-1]),
                        "step_to_target": step, "time_to_target_s": t_target, "energy_to_target_j": e_target}
        row["modeled_terms_per_step_s"] = {k: float(np.sum(priced[k]) / steps)
                                           for k in ("passes_s", "digital_s", "program_s", "transfer_s", "analog_s")}
        table[run.path] = row
    return table


def _fmt(value, spec=".3g") -> str:
    return "—" if value is None or (isinstance(value, float) and not math.isfinite(value)) else format(value, spec)


def markdown(table: dict, spec: str, target: float) -> str:
    lines = [f"# Re-costed under {spec} (target {target:g})", "",
             "| run | steps | final | modeled s/step | modeled J/step | modeled time to target (s) | "
             "paper s/step | paper time to target (s) | dominant modeled term |", "|---|" * 1 + "---|" * 8]
    for path, row in table.items():
        terms = row["modeled_terms_per_step_s"]
        dominant = max(terms, key=terms.get)
        m, p = row["modeled"], row["paper"]
        lines.append(f"| {os.path.basename(os.path.normpath(path))} | {row['steps']} | {_fmt(row['final_metric'])} | "
                     f"{_fmt(m['time_per_step_s'])} | {_fmt(m['energy_per_step_j'])} | {_fmt(m['time_to_target_s'])} | "
                     f"{_fmt(p['time_per_step_s'])} | {_fmt(p['time_to_target_s'])} | {dominant} |")
    return "\n".join(lines) + "\n"


def plot(runs: list[RunRecord], hardware: hw.Hardware, path: str, spec: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for run in runs:
        priced = price(run, hardware)
        index = {step: i for i, step in enumerate(run.steps)}
        for ax, key, label in ((axes[0], "modeled_time_s", "modeled hardware time (s)"),
                               (axes[1], "modeled_energy_j", "modeled energy (J)")):
            cumulative = np.cumsum(priced[key])
            ax.plot([cumulative[index[s]] for s, _ in run.evals], [v for _, v in run.evals], marker="o", ms=2,
                    label=run.label)
            ax.set(xlabel=label, ylabel=run.metric.replace("_", " "), xscale="log")
    axes[0].legend(fontsize=7)
    fig.suptitle(f"re-costed under {spec}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def parse(argv: list[str]) -> tuple[argparse.Namespace, str, dict, dict]:
    parser = argparse.ArgumentParser(prog="python -m experiments.recost", description=__doc__.splitlines()[0])
    parser.add_argument("items", nargs="+", help="run directories, hardware=<digital>+<analog>, digital.F=V, analog.F=V")
    parser.add_argument("--target", type=float, default=0.9, help="target test metric value (default 0.9)")
    parser.add_argument("--out", help="output directory (default recost/<digital>+<analog>)")
    args = parser.parse_args(argv)
    spec, digital, analog, runs = "a100+paper", {}, {}, []
    for item in args.items:
        key, equals, value = item.partition("=")
        if not equals:
            runs.append(item)
        elif key == "hardware":
            spec = value
        elif key.startswith(("digital.", "analog.")):
            kind, field = key.split(".", 1)
            (digital if kind == "digital" else analog)[field] = _number(value, key)
        else:
            raise ValueError(f"unknown argument {item!r}: give run directories, hardware=<digital>+<analog>, "
                             "digital.<field>=<value> or analog.<field>=<value>")
    if not runs:
        raise ValueError("give at least one run directory")
    args.runs = runs
    return args, spec, digital, analog


def _number(value: str, key: str):
    if value.lower() in ("true", "false"):
        return value.lower() == "true"
    try:
        number = float(value)
    except ValueError as error:
        raise ValueError(f"{key}={value!r} is not a number") from error
    return int(number) if number.is_integer() and key.endswith(("bits", "links")) else number


def main(argv: list[str] | None = None) -> int:
    try:
        args, spec, digital, analog = parse(sys.argv[1:] if argv is None else argv)
        runs = [RunRecord(path) for path in args.runs]
        hardware = hw.Hardware.build(spec, digital_overrides=digital, analog_overrides=analog)
    except ValueError as error:
        print(f"recost: {error}", file=sys.stderr)
        return 2
    out = args.out or os.path.join("recost", spec)
    os.makedirs(out, exist_ok=True)
    table = summarize(runs, hardware, args.target)
    rundir.write_json(os.path.join(out, "summary.json"), {"hardware": spec, "digital_overrides": digital,
                                                         "analog_overrides": analog, "target": args.target,
                                                         "runs": table})
    with open(os.path.join(out, "summary.md"), "w") as f:
        f.write(markdown(table, spec, args.target))
    plot(runs, hardware, os.path.join(out, "curves.png"), spec)
    print(markdown(table, spec, args.target))
    print(f"wrote {out}/summary.json, summary.md, curves.png")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
