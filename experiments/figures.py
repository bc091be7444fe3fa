"""One command per figure of the papers: runs the configurations (resuming finished ones), then plots and tables.

    python scripts/figures.py mnist   --data-dir ../shared/data/mnist --seeds 5   # TNGD (ideal, kappa0=0.01) vs Adam vs exact NGD
    python scripts/figures.py runtime --data-dir ../shared/data/mnist             # t in {5, 10, 20, 50} tau
    python scripts/figures.py delay   --data-dir ../shared/data/mnist             # t_d in {0, 0.2, 1} tau at t = 5
    python scripts/figures.py noise   --data-dir ../shared/data/mnist             # kappa0 in {0.1, 0.01, 0.001}
    python scripts/figures.py kfac-bits                                           # thermodynamic K-FAC vs bits
    python scripts/figures.py qa --data-path ../shared/data/squad/dev-v1.1.json.zip

Without ``--data-dir`` the classification figures run on scikit-learn's digits (a quick check of the pipeline).
Each writes ``<out>/<figure>.png`` and ``<out>/<figure>.md`` (``<figure>-digits`` on digits); runs go to
``<runs>/<figure>/<label>-seed<k>-<config hash>`` (experiments.identity), so a run is reused only by the same
resolved config and, once finished, with the same run-control settings (``--max-steps``): a larger
``--max-steps`` extends the runs of a smaller one.
The TNGD runs use the exact law of the device at time t (the same distribution as the papers' Euler-Maruyama
simulation, see thermox); ``--euler`` switches to the paper's diffrax Euler-Maruyama at dt = 0.1 tau.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib

from hydra import compose, initialize_config_dir

from . import identity, rundir
from .plots import compare
from .run import run

ROOT = pathlib.Path(__file__).resolve().parents[1]

TNGD = ["optimizer=tngd", "optimizer.learning_rate=0.01", "optimizer.damping=0.01"]


def figure_runs(name: str, args) -> list[tuple[str, list[str]]]:
    """(label, overrides) of every curve of figure ``name``."""
    if name == "mnist":
        return [("adam", ["optimizer=adam"]),
                ("tngd-t50-ideal", [*TNGD, "optimizer.t=50", "device=ideal"]),
                ("tngd-t50", [*TNGD, "optimizer.t=50", "device=paper"]),
                ("ngd-exact", ["optimizer=ngd_woodbury", "optimizer.learning_rate=0.01", "optimizer.damping=0.01"])]
    if name == "runtime":
        return [(f"tngd-t{t:g}", [*TNGD, f"optimizer.t={t}", "device=paper"]) for t in (5, 10, 20, 50)] + [
            ("ngd-exact", ["optimizer=ngd_woodbury", "optimizer.learning_rate=0.01", "optimizer.damping=0.01"])]
    if name == "delay":
        return [(f"tngd-t5-delay{d:g}", [*TNGD, "optimizer.t=5", f"optimizer.delay={d}", "device=paper"])
                for d in (0.0, 0.2, 1.0)]
    if name == "noise":
        return [(f"tngd-kappa{k:g}", [*TNGD, "optimizer.t=1", "device=paper", f"device.kappa0={k}"])
                for k in (0.1, 0.01, 0.001)]
    if name == "kfac-bits":
        runs = [("kfac-digital", ["optimizer=kfac"]), ("adam", ["optimizer=adam"])]
        return runs + [(f"thermo-kfac-{b}bit", ["optimizer=thermo_kfac", "device=paper", f"device.dac_bits={b}",
                                                 f"device.adc_bits={b}", f"device.coupling_bits={b}"])
                       for b in (4, 6, 8, 12)]
    if name == "qa":
        return [("adam", ["optimizer=adam"]), ("tngd", ["optimizer=tngd", "optimizer.t=0.4", "optimizer.damping=1.0",
                                                         "device=paper"]),
                ("tngd-adam", ["optimizer=tngd_adam", "device=paper"])]
    raise ValueError(f"unknown figure {name!r}")


def task_overrides(name: str, args) -> list[str]:
    if name == "qa":
        if not args.data_path:
            raise SystemExit("the qa figure needs --data-path to a SQuAD v1.1 JSON (or zip)")
        return ["task=squad", f"task.data_path={args.data_path}"]
    if args.data_dir:
        return ["task=mnist", f"task.data_dir={os.path.abspath(args.data_dir)}"]
    return ["task=digits"]


def compose_config(overrides: list[str]):
    """The resolved runner config of ``overrides``, as ``python -m experiments.run`` composes it."""
    with initialize_config_dir(config_dir=str(ROOT / "configs"), version_base="1.3"):
        return compose("config", overrides=overrides)


def run_directory(runs: str, figure: str, label: str, seed: int, overrides: list[str]) -> pathlib.Path:
    """``<runs>/<figure>/<label>-seed<k>-<hash>``: the hash of the resolved config (experiments.identity) tells
    apart the same curve on other data (digits, MNIST) or settings."""
    return pathlib.Path(runs) / figure / f"{label}-seed{seed}-{identity.config_hash(compose_config(overrides))}"


def output_stem(out: str, figure: str, task: list[str]) -> str:
    """``<out>/<figure>``, ``<out>/<figure>-digits`` for the digits check of a classification figure."""
    return os.path.join(out, figure + ("-digits" if task == ["task=digits"] else ""))


def run_once(overrides: list[str], run_dir: pathlib.Path) -> None:
    """Run one configuration unless ``run_dir`` already holds a finished run of exactly it (``rundir.finished``);
    a run of another config there is an error (``rundir.ConfigMismatchError``)."""
    cfg = compose_config(overrides)
    if rundir.finished(str(run_dir), cfg):
        return
    diverged = run(cfg, str(run_dir))["diverged"]
    if diverged:
        print(f"warning: {run_dir} diverged at step {diverged['step']}: {diverged['reason']}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("figure", choices=["mnist", "runtime", "delay", "noise", "kfac-bits", "qa"])
    parser.add_argument("--data-dir", help="MNIST IDX directory (default: scikit-learn digits)")
    parser.add_argument("--data-path", help="SQuAD v1.1 JSON or zip (qa figure)")
    parser.add_argument("--seeds", type=int, default=1)
    parser.add_argument("--epochs", type=int, help="override the task's epochs")
    parser.add_argument("--max-steps", type=int, help="cap every run's steps (quick look)")
    parser.add_argument("--euler", action="store_true", help="TNGD by diffrax Euler-Maruyama, dt = 0.1 tau")
    parser.add_argument("--runs", default="runs/figures", help="where the run directories go")
    parser.add_argument("--out", default="figures", help="where the figure and table go")
    args = parser.parse_args()

    task = task_overrides(args.figure, args)
    common = task + ["run.progress=false", "run.plots=false"]
    if args.epochs:
        common.append(f"task.epochs={args.epochs}")
    if args.max_steps:
        common.append(f"run.max_steps={args.max_steps}")
    run_dirs, labels = [], []
    for label, overrides in figure_runs(args.figure, args):
        if args.euler and "optimizer=tngd" in overrides:
            overrides = overrides + ["optimizer.method=diffrax", "optimizer.dt=0.1"]
        for seed in range(args.seeds):
            job = common + overrides + [f"seed={seed}"]
            run_dir = run_directory(args.runs, args.figure, label, seed, job)
            print(f"[{args.figure}] {label} seed {seed} -> {run_dir}", flush=True)
            run_once(job, run_dir)
            run_dirs.append(str(run_dir))
            labels.append(label)
    out = output_stem(args.out, args.figure, task)
    print(compare(run_dirs, out, labels=labels, title=f"{args.figure} ({' '.join(common[:2])})"))
    print(f"wrote {out}.png and {out}.md")


if __name__ == "__main__":
    main()
