"""What a run directory holds (resolved config, versions, metrics.jsonl, summary.json, plots, checkpoints, run.log) and
how a run opens one: created or checked against its stored config, and locked against a second process."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import shutil
import subprocess
from importlib import metadata
from typing import Any, Iterator

from omegaconf import DictConfig, OmegaConf

from . import identity

CONFIG = "config.yaml"
VERSIONS = "versions.json"
METRICS = "metrics.jsonl"
SUMMARY = "summary.json"
LOCK = "run.lock"
LOG = "run.log"  # Hydra's job log (configs/hydra/job_logging/run.yaml), which may start before the run opens


class ConfigMismatchError(ValueError):
    """The run directory holds a run of another config."""


class RunLockedError(RuntimeError):
    """Another process holds the run directory's lock."""


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


def write_text(path: str, text: str) -> None:
    """Write ``path`` atomically: a reader (or a resumed run after a kill) sees the old file or the new one."""
    partial = f"{path}.partial"
    with open(partial, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(partial, path)


def read_json(path: str) -> Any:
    with open(path) as f:
        return json.load(f)


def write_json(path: str, data: Any) -> None:
    write_text(path, json.dumps(data, indent=2))


def read_metrics(run_dir: str) -> list[dict]:
    """The records of ``metrics.jsonl``; a last line cut short by a kill is dropped."""
    path = os.path.join(run_dir, METRICS)
    if not os.path.exists(path):
        return []
    with open(path) as f:
        lines = [line for line in f.read().split("\n") if line.strip()]
    records = []
    for number, line in enumerate(lines):
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            if number < len(lines) - 1:
                raise ValueError(f"{path}: line {number + 1} is not JSON: {line[:80]!r}") from None
    return records


def write_metrics(run_dir: str, records: list[dict]) -> None:
    """``metrics.jsonl`` holding exactly ``records`` (written atomically)."""
    write_text(os.path.join(run_dir, METRICS), "".join(json.dumps(record) + "\n" for record in records))


def truncate_metrics(run_dir: str, last_step: int) -> None:
    """Keep only records up to ``last_step`` (a resumed run rewrites what came after its checkpoint)."""
    if os.path.exists(os.path.join(run_dir, METRICS)):
        write_metrics(run_dir, [r for r in read_metrics(run_dir) if r["step"] <= last_step])


def append_metrics(run_dir: str, record: dict) -> None:
    with open(os.path.join(run_dir, METRICS), "a") as f:
        f.write(json.dumps(record) + "\n")


def _acquire_lock(run_dir: str) -> int:
    """An exclusive ``flock`` on ``run_dir/run.lock`` holding this process's pid. The kernel drops the lock when
    its holder exits, however it dies, so a lock file left by a dead process is simply taken over."""
    path = os.path.join(run_dir, LOCK)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as error:
        if error.errno not in (errno.EAGAIN, errno.EACCES):
            os.close(fd)
            raise
        holder = os.read(fd, 64).decode(errors="replace").strip() or "unknown"
        os.close(fd)
        raise RunLockedError(f"run directory {run_dir} is in use by process {holder} (it holds {path}); wait for "
                             "it to finish or choose another directory") from None
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()}\n".encode())
    return fd


def _release_lock(fd: int) -> None:
    os.ftruncate(fd, 0)
    fcntl.flock(fd, fcntl.LOCK_UN)
    os.close(fd)


def _check_or_store_config(run_dir: str, cfg: DictConfig) -> None:
    """Store the resolved ``cfg`` as ``config.yaml`` in a new run directory; in an existing one, require the stored
    config to have the same identity (run-control fields may differ)."""
    path = os.path.join(run_dir, CONFIG)
    if not os.path.exists(path):
        others = sorted(set(os.listdir(run_dir)) - {LOCK, LOG})
        if others:
            raise ConfigMismatchError(f"{run_dir} is not empty ({', '.join(others[:5])}) and holds no {CONFIG}: "
                                      "not a run directory; choose another one")
        write_text(path, OmegaConf.to_yaml(OmegaConf.create(identity.resolved(cfg))))
        write_json(os.path.join(run_dir, VERSIONS), versions())
        return
    changed = identity.changed_keys(OmegaConf.load(path), cfg)
    if changed:
        listed = "; ".join(f"{key}: {old!r} stored, {new!r} requested" for key, old, new in changed)
        raise ConfigMismatchError(
            f"run directory {run_dir} holds a run of another config ({path}): {listed}. Only run-control fields "
            f"(experiments.config.RUN_CONTROL) may change on resume; use another directory (the default name "
            f"{identity.run_name(cfg)} carries the config's hash)")


@contextlib.contextmanager
def open_run(run_dir: str, cfg: DictConfig, *, writer: bool = True) -> Iterator[str]:
    """Open ``run_dir`` for a run of ``cfg`` for the duration of the ``with`` block: create it (storing
    ``config.yaml`` and ``versions.json``) or check that its stored config has ``cfg``'s identity, and hold its
    lock. A run that fails before its first metrics record leaves no directory it created behind (a directory
    that existed empty, as Hydra makes it, counts as created). ``writer=False`` (a process other than process 0
    of a multi-host run) only yields.

    Raises:
        ConfigMismatchError: the directory holds a run of another config (the message lists the changed keys).
        RunLockedError: another live process holds the lock (the message names it).
        PermissionError: the directory cannot be created or written.
    """
    if not writer:
        yield run_dir
        return
    fresh = not os.path.isdir(run_dir) or not set(os.listdir(run_dir)) - {LOCK, LOG}
    try:
        os.makedirs(run_dir, exist_ok=True)
        lock = _acquire_lock(run_dir)
    except OSError as error:
        if error.errno not in (errno.EACCES, errno.EPERM, errno.EROFS):
            raise
        raise PermissionError(f"run directory {run_dir} is not writable ({error.strerror}: {error.filename}); "
                              "the runner writes its lock, metrics and checkpoints there") from None
    try:
        _check_or_store_config(run_dir, cfg)
        yield run_dir
    except BaseException:
        if fresh and not os.path.exists(os.path.join(run_dir, METRICS)):
            shutil.rmtree(run_dir, ignore_errors=True)
        raise
    finally:
        _release_lock(lock)


def _same_control(summary: dict, cfg: DictConfig, but: tuple[str, ...] = ()) -> bool:
    # a run-control field newer than the run (absent from its summary) cannot have changed its results
    stored = summary.get("run_control") or {}
    return all(stored.get(key, value) == value for key, value in identity.run_control(cfg).items() if key not in but)


def _done(summary: dict) -> bool:
    """All planned steps taken, or stopped on divergence."""
    return summary["steps"] == summary["planned_steps"] or (summary.get("diverged") or {}).get("action") == "stop"


def covers(run_dir: str, cfg: DictConfig) -> bool:
    """Whether ``run_dir`` holds a finished run of ``cfg``'s identity at least ``cfg.run.max_steps`` long, with the
    same other run-control settings: its first ``max_steps`` steps are ``cfg``'s run (no schedule depends on the
    planned steps, and a resumed run logs what an uninterrupted one does), read by :func:`read_run`."""
    config, summary_path = os.path.join(run_dir, CONFIG), os.path.join(run_dir, SUMMARY)
    max_steps = OmegaConf.select(cfg, "run.max_steps")
    if max_steps is None or not (os.path.exists(config) and os.path.exists(summary_path)):
        return False
    summary = read_json(summary_path)
    return (not identity.changed_keys(OmegaConf.load(config), cfg) and _same_control(summary, cfg, ("run.max_steps",))
            and _done(summary) and summary["steps"] >= max_steps)


def read_run(run_dir: str, last_step: int | None = None) -> dict:
    """``{"summary", "metrics"}`` of ``run_dir``; with ``last_step``, the run as it stood at that step: the records
    after it dropped and the summary's record-derived fields (steps, final and best test metric, final training
    loss, the cumulative times and accounts) taken from the kept records, a divergence or failure after it
    forgotten. A figure capped at ``last_step`` reads a longer run of the same identity this way (:func:`covers`)."""
    summary, metrics = read_json(os.path.join(run_dir, SUMMARY)), read_metrics(run_dir)
    if last_step is None or summary["steps"] <= last_step:
        return {"summary": summary, "metrics": metrics}
    metrics = [r for r in metrics if r["step"] <= last_step]
    last, metric = metrics[-1], summary["metric"]
    evals = [r for r in metrics if metric in r]
    summary = {**summary, **{key: last[key] for key in summary if key in last},
               "steps": last["step"], "planned_steps": last_step, "final_train_loss": last.get("train_loss"),
               "final": {k: v for k, v in (evals[-1] if evals else {}).items() if k.startswith("test_")},
               f"best_{metric}": max((r[metric] for r in evals), default=None), "read_to_step": last_step}
    for event in ("diverged", "failed"):
        if (summary.get(event) or {}).get("step", 0) > last_step:
            summary[event] = None
    return {"summary": summary, "metrics": metrics}


def finished(run_dir: str, cfg: DictConfig) -> bool:
    """Whether ``run_dir`` holds a finished run of ``cfg``: the same identity, last run with the same run-control
    settings, and all its planned steps taken (or stopped on divergence)."""
    config, summary_path = os.path.join(run_dir, CONFIG), os.path.join(run_dir, SUMMARY)
    if not (os.path.exists(config) and os.path.exists(summary_path)):
        return False
    summary = read_json(summary_path)
    return not identity.changed_keys(OmegaConf.load(config), cfg) and _same_control(summary, cfg) and _done(summary)
