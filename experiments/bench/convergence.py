"""Steps and modeled hardware time to 90% and 95% test accuracy, each optimizer against Adam, median over seeds.

Each configuration is trained by experiments.run through Hydra (experiments.figures' configurations and its
``run_once``); finished run directories are reused (:func:`run_config`). Full run: the MNIST split (Adam, TNGD
t = 50 on the paper's and an ideal device, exact NGD, thermodynamic K-FAC refreshing every 10 steps on the
paper's and an ideal device, capped at THERMO_KFAC_MNIST_MAX_STEPS) plus digits (Adam, TNGD, thermodynamic K-FAC)
as a secondary task; ``quick``: digits only, evaluated every 5 steps, TNGD capped at 60 steps and thermodynamic
K-FAC at 100.
"""

from __future__ import annotations

import math
import os
import pathlib
import statistics
import time

from experiments import figures, rundir
from experiments.rundir import read_metrics

from .tables import fmt, markdown_table

QUICK_LABELS = ("adam", "tngd", "thermo-kfac")  # the issue's keys: TNGD and thermodynamic K-FAC vs Adam
LABEL_KEYS = {"adam": "adam", "tngd": "tngd", "ngd-exact": "ngd_woodbury", "thermo-kfac": "thermo_kfac",
              "thermo-kfac-ideal": "thermo_kfac_ideal"}
THERMO_KFAC_MNIST_MAX_STEPS = 300  # both devices; Adam's median seed reaches 90% in ~220 steps
HEADLINE_KEYS = ("tngd_steps_to_90_over_adam", "thermo_kfac_steps_to_90_over_adam", "tngd_steps_to_95_over_adam",
                 "thermo_kfac_steps_to_95_over_adam")  # always in bench.json (null with a reason if not measured)


def convergence_runs(task: str) -> list[tuple[str, list[str]]]:
    """(label, overrides): the TNGD paper's main MNIST runs (experiments.figures' fig3: Adam, TNGD at t = 50 tau on
    the noiseless device, by its exact law here, and exact NGD) plus thermodynamic K-FAC on the thermal (kappa0 =
    1e-6) and the ideal device."""
    runs = [("adam", list(figures.ADAM.overrides)), ("tngd", [*figures.TNGD, figures.EXACT_LAW]),
            ("ngd-exact", list(figures.NGD.overrides))]
    if task == "digits":  # exact NGD (Woodbury) adds nothing on digits but time
        return runs[:2] + [("thermo-kfac", ["optimizer=thermo_kfac", "device=thermal"])]
    # MNIST: the CNN's first dense layer has a 5,409 x 5,409 input factor, so factors and device programming are
    # refreshed every 10 steps (~0.5-1 s per step here instead of ~5 s).
    periods = list(figures.KFAC_PERIODS)
    return runs + [("thermo-kfac", ["optimizer=thermo_kfac", "device=thermal", *periods]),
                   ("thermo-kfac-ideal", ["optimizer=thermo_kfac", "device=ideal", *periods])]


def run_config(overrides: list[str], run_dir: pathlib.Path) -> str:
    """Run one configuration through experiments.run (experiments.figures.run_once); a finished run of exactly this
    config in ``run_dir`` is reused. Returns how the run was made."""
    if rundir.finished(str(run_dir), figures.compose_config(overrides)):
        return "reused run directory"
    figures.run_once(overrides, run_dir)
    return "experiments.run"


def first_reaching(records: list[dict], threshold: float, metric: str = "test_accuracy") -> dict | None:
    """The first evaluated record with ``metric >= threshold``: its step, modeled and wall time."""
    for record in records:
        if record.get(metric) is not None and record[metric] >= threshold:
            return {"step": record["step"], "modeled_time_s": record["modeled_time_s"],
                    "wall_time_s": record["wall_time_s"]}
    return None


def median_or_none(values: list[float | None]) -> float | None:
    """Median with unreached (None) counted as +infinity; None if the median itself is unreached."""
    if not values:
        return None
    value = statistics.median([math.inf if v is None else v for v in values])
    return None if math.isinf(value) else value


def task_convergence(task: str, quick: bool, *, data_dir: str | None, seeds: int, runs_dir: str, eval_every: int,
                     max_steps: dict, labels, thresholds=(0.90, 0.95)) -> dict:
    """Every run of ``convergence_runs(task)`` (restricted to ``labels``) for ``seeds`` seeds; per optimizer the
    median over seeds of the steps and modeled time to each threshold (an unreached seed counts as infinite)."""
    task_overrides = (["task=digits"] if task == "digits"
                      else ["task=mnist", f"task.data_dir={os.path.abspath(data_dir)}"])
    base = task_overrides + ["run.progress=false", "run.plots=false", f"run.eval_every={eval_every}",
                             "run.checkpoint_every=100000"]
    folder = pathlib.Path(runs_dir) / f"{'quick' if quick else 'full'}-{task}"
    per_label = {}
    for label, overrides in convergence_runs(task):
        if labels is not None and label not in labels:
            continue
        cap = max_steps.get(label)
        extra = [] if cap is None else [f"run.max_steps={cap}"]
        per_seed, via = [], set()
        for seed in range(seeds):
            job = base + overrides + extra + [f"seed={seed}"]
            run_dir = figures.run_directory(str(folder), job)
            start = time.perf_counter()
            try:
                via.add(run_config(job, run_dir))
            except Exception as error:  # noqa: BLE001 - one optimizer failing must not sink the section
                per_label[label] = {"error": f"{type(error).__name__}: {error}"}
                print(f"  convergence {task} {label} seed {seed} failed: {error}", flush=True)
                break
            records = read_metrics(str(run_dir))
            evals = [r for r in records if "test_accuracy" in r]
            per_seed.append({
                "seed": seed, "run_dir": str(run_dir), "steps": records[-1]["step"] if records else 0,
                "final_test_accuracy": evals[-1]["test_accuracy"] if evals else None,
                "best_test_accuracy": max((r["test_accuracy"] for r in evals), default=None),
                "reached": {f"{round(100 * p)}": first_reaching(evals, p) for p in thresholds},
                "seconds": time.perf_counter() - start,
            })
            print(f"  convergence {task} {label} seed {seed}: best {per_seed[-1]['best_test_accuracy']:.3f}, "
                  f"{per_seed[-1]['seconds']:.0f} s", flush=True)
        if label in per_label:
            continue
        summary = {"cap_steps": cap, "runner": sorted(via), "seeds": per_seed}
        for p in thresholds:
            key = f"{round(100 * p)}"
            hits = [s["reached"][key] for s in per_seed]
            summary[f"median_steps_to_{key}"] = median_or_none([None if h is None else h["step"] for h in hits])
            summary[f"median_modeled_time_to_{key}"] = median_or_none(
                [None if h is None else h["modeled_time_s"] for h in hits])
            summary[f"seeds_reaching_{key}"] = sum(h is not None for h in hits)
        per_label[label] = summary
    return {
        "setting": {"task": task, "seeds": seeds, "eval_every": eval_every, "max_steps": max_steps,
                    "runs_dir": str(folder), "thresholds": list(thresholds),
                    "note": ("scikit-learn digits (1,300 train / 497 test, batch 64, 15 epochs = 300 steps)"
                             + ("; second-order optimizers capped" if any(max_steps.values()) else "")
                             if task == "digits" else
                             "MNIST split (5,000 / 5,000 of t10k), batch 64, 10 epochs (780 steps): the paper's "
                             "protocol")},
        "optimizers": per_label,
    }


def section(quick: bool, *, data_dir: str | None = None, seeds: int = 3, runs_dir: str = "runs/bench",
            labels=None) -> dict:
    """The suite's ``convergence`` section: the primary task is MNIST in the full run (Adam, TNGD, exact NGD,
    thermodynamic K-FAC on the paper's and an ideal device refreshing every 10 steps, capped at
    THERMO_KFAC_MNIST_MAX_STEPS) and digits with ``quick``. The full run adds digits (Adam, TNGD, thermodynamic
    K-FAC, 15 epochs) as a secondary task."""
    tasks, skipped = {}, {}
    if quick:
        tasks["digits"] = task_convergence(
            "digits", quick, data_dir=None, seeds=seeds, runs_dir=runs_dir, eval_every=5,
            max_steps={"adam": None, "tngd": 60, "thermo-kfac": 100},
            labels=QUICK_LABELS if labels is None else labels)
        return {"primary": "digits", "tasks": tasks, "skipped": skipped}
    if data_dir is None or not any(pathlib.Path(data_dir, f"t10k-images-idx3-ubyte{ext}").exists()
                                   for ext in ("", ".gz")):
        raise FileNotFoundError(f"MNIST (t10k-images-idx3-ubyte[.gz]) not found in {data_dir}")
    mnist_labels = [l for l, _ in convergence_runs("mnist") if labels is None or l in labels]
    tasks["mnist"] = task_convergence("mnist", quick, data_dir=data_dir, seeds=seeds, runs_dir=runs_dir,
                                      eval_every=10, labels=mnist_labels,
                                      max_steps={l: THERMO_KFAC_MNIST_MAX_STEPS for l in mnist_labels
                                                 if l.startswith("thermo-kfac")})
    digits_labels = [l for l in ("adam", "tngd", "thermo-kfac") if labels is None or l in labels]
    tasks["digits"] = task_convergence("digits", quick, data_dir=None, seeds=seeds, runs_dir=runs_dir,
                                       eval_every=5, max_steps={}, labels=digits_labels)
    return {"primary": "mnist", "tasks": tasks, "skipped": skipped}


def ratios(section: dict, thresholds=(90, 95)) -> tuple[dict, dict, list]:
    """``convergence.<opt>_<steps|modeled_time>_to_<p>_over_adam`` of the primary task (and, prefixed with the
    task's name, of the others), the reason for each null, and the keys whose optimizer never reached the
    threshold (uncapped) where Adam did: a null that means the target is not met."""
    found, reasons, unreached = {}, {}, []
    for task, result in section["tasks"].items():
        prefix = "" if task == section["primary"] else f"{task}_"
        r, why, missed = _task_ratios(result, thresholds)
        found.update({prefix + k: v for k, v in r.items()})
        reasons.update({prefix + k: v for k, v in why.items()})
        unreached += sorted(f"convergence.{prefix}{k}" for k in missed)
    return found, reasons, unreached


def _task_ratios(result: dict, thresholds) -> tuple[dict, dict, set]:
    ratios, reasons, unreached = {}, {}, set()
    per = result["optimizers"]
    adam = per.get("adam", {})
    task = result["setting"]["task"]
    for label, summary in per.items():
        if label == "adam":
            continue
        key = LABEL_KEYS.get(label, label.replace("-", "_"))
        for p in thresholds:
            for what in ("steps", "modeled_time"):
                name = f"{key}_{what}_to_{p}_over_adam"
                ours, base = summary.get(f"median_{what}_to_{p}"), adam.get(f"median_{what}_to_{p}")
                if "error" in summary:
                    reasons[name] = f"{label} failed: {summary['error']}"
                elif not adam or "error" in adam:
                    reasons[name] = f"adam failed: {adam.get('error', 'not run')}"
                elif base is None:
                    reasons[name] = f"Adam's median seed does not reach {p}% within {_steps_text(adam)} on {task}"
                    if ours is not None and what == "steps":
                        total = max(s["steps"] for s in adam["seeds"])
                        reasons[name] += (f"; {label} does, in {ours:.0f} steps (so the ratio is below "
                                          f"{ours / total:.2g})")
                elif ours is None:
                    reasons[name] = (f"{label}'s median seed does not reach {p}% within {_steps_text(summary)} "
                                     f"on {task} (Adam: {adam[f'median_steps_to_{p}']:.0f} steps)")
                    if not summary.get("cap_steps"):
                        unreached.add(name)
                ratios[name] = None if name in reasons else ours / base
    return ratios, reasons, unreached


def _steps_text(summary: dict) -> str:
    steps = max((s["steps"] for s in summary.get("seeds", [])), default=0)
    return f"{steps} steps" + (" (capped)" if summary.get("cap_steps") else "")


def markdown(conv: dict) -> str:
    """The suite report's sections: per task, each optimizer's best accuracy and steps and modeled time to 90%
    and 95% (median over seeds), and what was not run."""
    parts = []
    for task, result in conv["tasks"].items():
        s = result["setting"]
        rows = []
        for label, summary in result["optimizers"].items():
            if "error" in summary:
                rows.append([label, "failed", "", "", "", "", "", summary["error"][:160]])
                continue
            best = [x["best_test_accuracy"] for x in summary["seeds"]]
            n = len(summary["seeds"])
            rows.append([
                label, n, f"{statistics.median(best):.3f}",
                *(f"{fmt(summary[f'median_steps_to_{p}'], '.0f')} ({summary[f'seeds_reaching_{p}']}/{n})"
                  for p in ("90", "95")),
                *(fmt(summary[f"median_modeled_time_to_{p}"], ".3g") for p in ("90", "95")),
                ", ".join(summary["runner"]) + (f"; capped at {summary['cap_steps']} steps" if summary["cap_steps"]
                                                else ""),
            ])
        title = "primary" if task == conv["primary"] else "secondary"
        parts += [f"## 5. Convergence ({title}): {task}, {s['seeds']} seeds (median), evaluated every "
                  f"{s['eval_every']} steps", "", s["note"] + f"; run directories in {s['runs_dir']}.", "",
                  markdown_table(["optimizer", "seeds", "best acc. (median)", "steps to 90% (seeds)",
                                  "steps to 95% (seeds)", "modeled s to 90%", "modeled s to 95%", "how"], rows), ""]
    for name, why in conv.get("skipped", {}).items():
        parts.append(f"Not run: {name}: {why}.")
    return "\n".join(parts)
