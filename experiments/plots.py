"""Compare finished runs: curves against steps and modeled hardware time, and a markdown table.

    python scripts/plot.py RUN_DIR [RUN_DIR ...] --out comparison   # writes comparison.png and comparison.md

Reads only run directories (``metrics.jsonl``, ``summary.json``, ``config.yaml``). Runs whose directory names
differ only in ``seed<k>`` are grouped: curves show the mean over seeds (train loss smoothed by a moving average,
200 points in the paper) and the table reports mean +- standard deviation.
"""

from __future__ import annotations

import argparse
import json
import os
import re
from collections import defaultdict

import numpy as np

from .rundir import read_metrics


def group_label(run_dir: str) -> str:
    return re.sub(r"-?seed\d+", "", os.path.basename(os.path.normpath(run_dir))) or run_dir


def moving_average(values: np.ndarray, window: int) -> np.ndarray:
    window = max(1, min(window, len(values)))
    return np.convolve(values, np.ones(window) / window, mode="valid")


def load_groups(run_dirs: list[str], labels: list[str] | None) -> dict[str, list[dict]]:
    groups: dict[str, list[dict]] = defaultdict(list)
    for i, run_dir in enumerate(run_dirs):
        with open(os.path.join(run_dir, "summary.json")) as f:
            summary = json.load(f)
        label = labels[i] if labels else group_label(run_dir)
        groups[label].append({"summary": summary, "metrics": read_metrics(run_dir)})
    return groups


def mean_curve(runs: list[dict], x_key: str, y_key: str, smooth: int) -> tuple[np.ndarray, np.ndarray]:
    """Mean over seeds of ``y_key`` against the first run's ``x_key`` (runs share their step grid)."""
    series = [[r for r in run["metrics"] if y_key in r] for run in runs]
    length = min(len(s) for s in series)
    x = np.mean([[r[x_key] for r in s[:length]] for s in series], axis=0)
    y = np.mean([[r[y_key] for r in s[:length]] for s in series], axis=0)
    if smooth > 1:
        y = moving_average(y, smooth)
        x = x[len(x) - len(y):]
    return x, y


def table(groups: dict[str, list[dict]]) -> str:
    metric = next(iter(groups.values()))[0]["summary"]["metric"]
    lines = [f"| run | seeds | final {metric} | best {metric} | final train loss | steps | wall (s) | modeled hardware (s) |",
             "|---|---|---|---|---|---|---|---|"]
    for label, runs in groups.items():
        def stat(get):
            values = np.array([get(r["summary"]) for r in runs], dtype=float)
            return f"{values.mean():.4g} ± {values.std():.2g}" if len(values) > 1 else f"{values[0]:.4g}"
        lines.append(
            f"| {label} | {len(runs)} | {stat(lambda s: s['final'][metric])} | {stat(lambda s: s['best_' + metric])} "
            f"| {stat(lambda s: s['final_train_loss'])} | {runs[0]['summary']['steps']} "
            f"| {stat(lambda s: s['wall_time_s'])} | {stat(lambda s: s['modeled_time_s'])} |"
        )
    return "\n".join(lines) + "\n"


def plot(groups: dict[str, list[dict]], out_png: str, smooth: int, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metric = next(iter(groups.values()))[0]["summary"]["metric"]
    fig, axes = plt.subplots(2, 2, figsize=(11, 7.5))
    for label, runs in groups.items():
        for col, x_key in enumerate(("step", "modeled_time_s")):
            x, y = mean_curve(runs, x_key, "train_loss", smooth)
            axes[0, col].plot(x, y, label=label, lw=1.0)
            x, y = mean_curve(runs, x_key, metric, 1)
            axes[1, col].plot(x, y, label=label, marker="o", ms=2.5, lw=1.0)
    for col, x_label in enumerate(("step", "modeled hardware time (s)")):
        axes[0, col].set(xlabel=x_label, ylabel=f"train loss (moving average {smooth})", yscale="log")
        axes[1, col].set(xlabel=x_label, ylabel=metric)
    axes[1, 1].set_xscale("log")
    axes[0, 1].set_xscale("log")
    axes[0, 0].legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(out_png, dpi=110)
    plt.close(fig)


def compare(run_dirs: list[str], out: str, *, labels: list[str] | None = None, smooth: int = 20,
            title: str = "") -> str:
    """Write ``out.png`` and ``out.md`` for ``run_dirs``; returns the markdown table."""
    groups = load_groups(run_dirs, labels)
    markdown = table(groups)
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    plot(groups, out + ".png", smooth, title)
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
