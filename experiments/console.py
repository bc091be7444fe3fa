"""What a run says while it runs, on the console and in Hydra's ``run.log``: its directory at the start and the
end, one line per evaluation and the summary, numbers at 4 significant digits. Libraries' INFO lines (jax's
backend probing, "Unable to initialize backend 'tpu'", absl's and orbax's per-checkpoint lines) are silenced
unless ``hydra.verbose`` asks for them.

Lines go to the ``experiments`` logger: under ``python -m experiments.run`` Hydra's job logging
(``configs/hydra/job_logging/run.yaml``) shows them and writes them to ``<run_dir>/run.log``; a caller of
``experiments.run.run`` without logging set up sees none of them (INFO is below Python's default level).
"""

from __future__ import annotations

import logging
from typing import Any

log = logging.getLogger("experiments")

NOISY_LOGGERS = ("jax", "absl", "orbax")


def quiet_libraries() -> None:
    """Libraries' loggers at WARNING: their INFO lines are not shown."""
    for name in NOISY_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)


def number(value: Any) -> str:
    """``value`` at 4 significant digits (``0.9517``, ``1.235e-05``); integers and text as they are."""
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def record_line(record: dict[str, Any]) -> str:
    """An evaluation record in words: ``step 20: train loss 0.4123, test accuracy 0.9012, test loss 0.3311, wall
    1.234 s, modeled hardware 0.002512 s`` (skipped steps when there are any)."""
    parts = [f"train loss {number(record['train_loss'])}"] if "train_loss" in record else []
    parts += [f"{key.replace('_', ' ')} {number(value)}" for key, value in record.items() if key.startswith("test_")]
    parts += [f"wall {number(record['wall_time_s'])} s", f"modeled hardware {number(record['modeled_time_s'])} s"]
    if record.get("skipped_steps"):
        parts.append(f"skipped steps {record['skipped_steps']}")
    return f"step {record['step']}: " + ", ".join(parts)


def summary_line(summary: dict[str, Any]) -> str:
    """The headline of a finished run: final and best metric, steps, wall and modeled hardware time."""
    metric = summary["metric"]
    return (f"{metric.replace('_', ' ')}: final {number(summary['final'].get(metric))}, "
            f"best {number(summary['best_' + metric])}, steps {summary['steps']}, wall {number(summary['wall_time_s'])} s, "
            f"modeled hardware {number(summary['modeled_time_s'])} s")
