"""A run's identity: its whole resolved config except the run-control fields (``config.RUN_CONTROL``).

Two configs with the same identity take the same steps and record the same numbers, so they may share a run
directory (one resumes or extends the other); any other difference is another run. The directory name spells the
identity as a readable prefix and a hash, ``<task>-<optimizer>-<device>-seed<k>-<hash>``: the hash covers
everything but the seed (which the prefix spells out), so the seeds of one configuration share it and differ in
``seed<k>`` only (how ``scripts/plot.py`` groups them).
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from omegaconf import DictConfig, OmegaConf

from .config import RUN_CONTROL

HASH_LENGTH = 8
ABSENT = "<absent>"


def resolved(cfg: DictConfig) -> dict[str, Any]:
    """The config as plain nested dicts with every interpolation resolved (Hydra's own ``hydra`` node left out)."""
    return {key: OmegaConf.to_container(value, resolve=True) if OmegaConf.is_config(value) else value
            for key, value in cfg.items() if key != "hydra"}


def flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"run": {"max_steps": 2}}`` -> ``{"run.max_steps": 2}``."""
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            flat.update(flatten(value, name + "."))
        else:
            flat[name] = value
    return flat


def identity(cfg: DictConfig) -> dict[str, Any]:
    """The flat ``{dotted key: value}`` of every field that is not run control."""
    return {key: value for key, value in flatten(resolved(cfg)).items() if key not in RUN_CONTROL}


def run_control(cfg: DictConfig) -> dict[str, Any]:
    """The flat ``{dotted key: value}`` of the run-control fields (None for a field the config lacks)."""
    flat = flatten(resolved(cfg))
    return {key: flat.get(key) for key in RUN_CONTROL}


def config_hash(cfg: DictConfig) -> str:
    """First ``HASH_LENGTH`` hex digits of the SHA-256 of the identity without ``seed`` (canonical JSON)."""
    fields = {key: value for key, value in identity(cfg).items() if key != "seed"}
    text = json.dumps(fields, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:HASH_LENGTH]


def run_name(cfg: DictConfig) -> str:
    """``<task>-<optimizer>-<device>-seed<k>-<hash>``, e.g. ``digits-adam-ideal-seed0-3fa9c2d1``."""
    tree = resolved(cfg)
    return (f"{tree['task']['name']}-{tree['optimizer']['name']}-{tree['device']['name']}-seed{tree['seed']}-"
            f"{config_hash(cfg)}")


def changed_keys(stored: DictConfig, requested: DictConfig) -> list[tuple[str, Any, Any]]:
    """``(key, stored value, requested value)`` of every identity field that differs (``ABSENT`` where one side
    lacks it), sorted by key."""
    old, new = identity(stored), identity(requested)
    return [(key, old.get(key, ABSENT), new.get(key, ABSENT)) for key in sorted(old.keys() | new.keys())
            if old.get(key, ABSENT) != new.get(key, ABSENT)]


def register_resolver() -> None:
    """``${run_name:}`` in Hydra's config (``hydra.run.dir``, ``hydra.sweep.subdir``) -> :func:`run_name` of the
    job's config. Idempotent."""
    if not OmegaConf.has_resolver("run_name"):
        OmegaConf.register_new_resolver("run_name", lambda *, _root_: run_name(_root_))
