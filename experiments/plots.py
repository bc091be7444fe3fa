"""Compare finished runs: curves against steps, wall-clock seconds and modeled hardware seconds, and a markdown table.

    python scripts/plot.py RUN_DIR [RUN_DIR ...] --out comparison   # writes comparison.png and comparison.md

Reads only run directories (``metrics.jsonl``, ``summary.json``). Runs whose directory names differ only in
``seed<k>`` are grouped: each curve is the mean over the group's seeds with a shaded band from the lowest to the
highest seed (min-max; the train loss smoothed by a moving average first, 200 points in the paper), and the table
reports mean +- standard deviation. The x of a time axis is the mean over seeds of the cumulative seconds at each
record (``wall_time_s``: measured, compilation excluded; ``modeled_time_s``: the modeled hardware,
experiments.hardware). The time axes are symmetric-logarithmic (the optimizers' step times differ by orders of
magnitude): linear from 0 to the earliest record's time, logarithmic beyond, so every curve starts at its
evaluation at step 0. :func:`plot_run` draws one run directory's ``plots.png``.
"""

from __future__ import annotations

import argparse
import os
import re
from collections import defaultdict

import numpy as np

from .rundir import read_run


def group_label(run_dir: str) -> str:
    return re.sub(r"-?seed\d+", "", os.path.basename(os.path.normpath(run_dir))) or run_dir


def moving_average(values: np.ndarray, window: int) -> np.ndarray:
    window = max(1, min(window, len(values)))
    return np.convolve(values, np.ones(window) / window, mode="valid")


def load_groups(run_dirs: list[str], labels: list[str] | None, last_step: int | None = None
                ) -> dict[str, list[dict]]:
    """The runs grouped by label (seeds of one curve together), each read to ``last_step`` (``read_run``)."""
    groups: dict[str, list[dict]] = defaultdict(list)
    for i, run_dir in enumerate(run_dirs):
        groups[labels[i] if labels else group_label(run_dir)].append(read_run(run_dir, last_step))
    return groups


def curves(runs: list[dict], x_key: str, y_key: str, smooth: int) -> tuple[np.ndarray, np.ndarray]:
    """``(x, ys)``: the seeds' ``y_key`` (``ys``, one row per seed, each smoothed by a ``smooth``-point moving
    average) against the mean over seeds of ``x_key``, over the records that hold ``y_key`` (runs share their step
    grid). A seed that stopped early is NaN past its end, so each point is over the seeds that reached it; seeds
    without any such record are left out (``ys`` has no rows when no seed has one)."""
    series = [s for s in ([r for r in run["metrics"] if y_key in r] for run in runs) if s]
    if not series:
        return np.zeros(0), np.zeros((0, 0))
    length = max(len(s) for s in series)
    window = max(1, min(smooth, min(len(s) for s in series)))
    pad = lambda values: np.pad(values, (0, length - window + 1 - len(values)), constant_values=np.nan)
    xs = np.array([pad(np.array([r[x_key] for r in s], float)[window - 1:]) for s in series])
    ys = np.array([pad(moving_average(np.array([r[y_key] for r in s], float), window)) for s in series])
    return np.nanmean(xs, axis=0), ys


AXES = (("step", "step"), ("wall_time_s", "wall-clock time (s)"), ("modeled_time_s", "modeled hardware time (s)"))
WORDS = {"train_loss": "training loss", "test_accuracy": "test accuracy", "test_loss": "test loss",
         "test_f1": "test F1", "test_exact_match": "test exact match"}
BAND = "mean over seeds, band: min-max over seeds"


def words(key: str) -> str:
    """A record key as an axis label: ``test_accuracy`` -> ``test accuracy``."""
    return WORDS.get(key, key.replace("_", " "))


def table(groups: dict[str, list[dict]]) -> str:
    metric = next(iter(groups.values()))[0]["summary"]["metric"]
    lines = [f"| run | seeds | final {metric} | best {metric} | final train loss | steps | wall (s) | modeled hardware (s) |",
             "|---|---|---|---|---|---|---|---|"]
    for label, runs in groups.items():
        def stat(get):
            # a run that stopped before its first evaluation has no test metric: counted apart, not averaged
            values = np.array([np.nan if (v := get(r["summary"])) is None else v for r in runs], dtype=float)
            kept = values[np.isfinite(values)]
            if not kept.size:
                return "none"
            text = f"{kept.mean():.4g} ± {kept.std():.2g}" if kept.size > 1 else f"{kept[0]:.4g}"
            return text + (f" ({kept.size} of {values.size})" if kept.size < values.size else "")
        steps = sorted({r["summary"]["steps"] for r in runs})
        lines.append(
            f"| {label} | {len(runs)} | {stat(lambda s: s['final'].get(metric))} | "
            f"{stat(lambda s: s.get('best_' + metric))} | {stat(lambda s: s['final_train_loss'])} "
            f"| {steps[0] if len(steps) == 1 else f'{steps[0]}-{steps[-1]}'} "
            f"| {stat(lambda s: s['wall_time_s'])} | {stat(lambda s: s['modeled_time_s'])} |"
        )
    return "\n".join(lines) + "\n"


def figure(groups: dict[str, list[dict]], smooth: int, title: str):
    """The comparison figure of ``groups`` (label -> runs): training loss (top) and the test metric (bottom)
    against steps, wall-clock seconds and modeled hardware seconds; each curve the mean over its seeds with a
    min-max band. Returns the matplotlib figure (the caller saves and closes it)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metric = next(iter(groups.values()))[0]["summary"]["metric"]
    fig, axes = plt.subplots(2, len(AXES), figsize=(15, 7.5), squeeze=False)
    earliest = [np.inf] * len(AXES)  # per column, the smallest positive x (a time axis' linear range)
    for label, runs in groups.items():
        for col, (x_key, _) in enumerate(AXES):
            for row, (y_key, window) in enumerate((("train_loss", smooth), (metric, 1))):
                x, ys = curves(runs, x_key, y_key, window)
                if not ys.size:  # every seed stopped before its first record of y_key
                    continue
                earliest[col] = min(earliest[col], np.min(x[x > 0], initial=np.inf))
                line, = axes[row, col].plot(x, np.nanmean(ys, axis=0), lw=1.0, marker="o" if row else None,
                                            ms=2.5, label=f"{label} ({len(runs)} seed{'s' * (len(runs) > 1)})")
                if len(ys) > 1:
                    axes[row, col].fill_between(x, np.nanmin(ys, axis=0), np.nanmax(ys, axis=0),
                                                color=line.get_color(), alpha=0.2, lw=0)
    loss_label = words("train_loss") + (f" (moving average of {smooth})" if smooth > 1 else "")
    for col, (x_key, x_label) in enumerate(AXES):
        axes[0, col].set(xlabel=x_label, ylabel=loss_label, yscale="log")
        axes[1, col].set(xlabel=x_label, ylabel=words(metric))
        if x_key != "step" and np.isfinite(earliest[col]):
            for row in (0, 1):
                axes[row, col].set_xscale("symlog", linthresh=earliest[col])
                axes[row, col].set_xlim(left=0.0)
    axes[0, 0].legend(fontsize=8)
    fig.suptitle(f"{title}\n{BAND}" if title else BAND)
    fig.tight_layout()
    return fig


def plot_run(run_dir: str, smooth: int = 1) -> str:
    """One run directory's curves (:func:`figure`) as ``<run_dir>/plots.png``; returns its path."""
    import matplotlib.pyplot as plt

    fig = figure(load_groups([run_dir], None), smooth, os.path.basename(os.path.abspath(run_dir)))
    path = os.path.join(run_dir, "plots.png")
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def compare(run_dirs: list[str], out: str, *, labels: list[str] | None = None, smooth: int = 20,
            title: str = "", last_step: int | None = None) -> str:
    """Write ``out.png`` and ``out.md`` for ``run_dirs`` (each read to ``last_step``, when given); returns the
    markdown table."""
    groups = load_groups(run_dirs, labels, last_step)
    markdown = table(groups)
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    import matplotlib.pyplot as plt

    fig = figure(groups, smooth, title)
    fig.savefig(out + ".png", dpi=110)
    plt.close(fig)
    with open(out + ".md", "w") as f:
        f.write(f"# {title}\n\n" if title else "")
        f.write(markdown)
    return markdown


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", help="run directories")
    parser.add_argument("--out", default="comparison", help="output path without extension")
    parser.add_argument("--smooth", type=int, default=20, help="moving-average window of the loss curves")
    parser.add_argument("--title", default="")
    args = parser.parse_args()
    print(compare(args.runs, args.out, smooth=args.smooth, title=args.title))


if __name__ == "__main__":
    main()
