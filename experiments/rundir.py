"""What a run directory holds: resolved config, versions, metrics.jsonl, summary.json, plots, checkpoints."""

from __future__ import annotations

import json
import os
import subprocess
from importlib import metadata
from typing import Any

METRICS = "metrics.jsonl"
SUMMARY = "summary.json"


def versions() -> dict[str, Any]:
    """Package versions and the project's git SHA (None outside a git checkout)."""
    out: dict[str, Any] = {}
    for package in ("jax", "jaxlib", "optax", "equinox", "diffrax", "lineax", "hydra-core", "orbax-checkpoint"):
        try:
            out[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            out[package] = None
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, check=True)
        dirty = subprocess.run(["git", "status", "--porcelain"], cwd=root, capture_output=True, text=True, check=True)
        out["git_sha"] = sha.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.CalledProcessError):
        out["git_sha"] = None
    return out


def write_json(path: str, data: Any) -> None:
    with open(path, "w") as f:
        json.dump(data, f, indent=2)


def read_metrics(run_dir: str) -> list[dict]:
    path = os.path.join(run_dir, METRICS)
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def truncate_metrics(run_dir: str, last_step: int) -> None:
    """Keep only records up to ``last_step`` (a resumed run rewrites what came after its checkpoint)."""
    kept = [r for r in read_metrics(run_dir) if r["step"] <= last_step]
    with open(os.path.join(run_dir, METRICS), "w") as f:
        for record in kept:
            f.write(json.dumps(record) + "\n")


def append_metrics(run_dir: str, record: dict) -> None:
    with open(os.path.join(run_dir, METRICS), "a") as f:
        f.write(json.dumps(record) + "\n")


def plot_run(run_dir: str, metric: str) -> str:
    """Loss and test metric against steps and against modeled hardware time, as ``plots.png``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    records = read_metrics(run_dir)
    evals = [r for r in records if metric in r]
    fig, axes = plt.subplots(2, 2, figsize=(10, 7))
    for col, x_key, x_label in ((0, "step", "step"), (1, "modeled_time_s", "modeled hardware time (s)")):
        axes[0, col].plot([r[x_key] for r in records], [r["train_loss"] for r in records], lw=0.8)
        axes[0, col].set(xlabel=x_label, ylabel="train loss", yscale="log")
        axes[1, col].plot([r[x_key] for r in evals], [r[metric] for r in evals], marker="o", ms=3)
        axes[1, col].set(xlabel=x_label, ylabel=metric)
    fig.suptitle(os.path.basename(os.path.abspath(run_dir)))
    fig.tight_layout()
    path = os.path.join(run_dir, "plots.png")
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
