"""bench.json: the headline keys of every section's results, and the targets of ``targets.toml`` checked on them.

Schema "bench/1" (the keys are listed in experiments.bench.suite's docstring): ``ratios`` (ours over a baseline,
of minima), ``ratios_median``, ``convergence``, ``memory``, each key present in every run, null with its reason in
``reasons`` when it could not be measured; ``targets``; ``unreached``; ``errors``; ``sections`` (everything each
section measured) and ``meta``.
"""

from __future__ import annotations

import operator
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from . import convergence, kfac, kfac_jax, sharding, steps
from .timing import GIB

SCHEMA = "bench/1"
TARGETS_FILE = Path(__file__).with_name("targets.toml")
DIRECTIONS = {"at_most": ("<=", operator.le), "at_least": (">=", operator.ge)}
GROUPS = ("ratios", "convergence", "memory")


@dataclass(frozen=True)
class Target:
    """A target of the issues: the bench.json ``key`` (``group.name``) must be ``direction`` ``bound``.

    ``also`` maps an entry field to ``(key, unit)``: further keys held to the same bound (``unit`` is printed
    after their value in the report, and the target's own ``unit`` after its value when any of them is present).
    """

    name: str
    key: str
    bound: float
    direction: str
    note: str | None = None
    unit: str | None = None
    also: dict[str, tuple[str, str | None]] = field(default_factory=dict)

    @property
    def condition(self) -> str:
        """The condition as printed: ``key <= bound`` (with the note in brackets)."""
        text = f"{self.key} {DIRECTIONS[self.direction][0]} {self.bound:g}"
        return text if self.note is None else f"{text} ({self.note})"

    def meets(self, value: float) -> bool:
        return bool(DIRECTIONS[self.direction][1](value, self.bound))


def _checked_key(name: str, where: str, key) -> str:
    if not isinstance(key, str) or key.split(".", 1)[0] not in GROUPS or "." not in key:
        raise ValueError(f"target {name!r}: {where} must be a bench.json key '<group>.<name>' with group one of "
                         f"{GROUPS}, got {key!r}")
    return key


def load_targets(path: Path = TARGETS_FILE) -> dict[str, Target]:
    """The targets of ``path`` (a TOML table per target, in file order); ValueError naming the target and the
    field for an unknown field, a missing or malformed key, or not exactly one of ``at_most`` / ``at_least``."""
    with open(path, "rb") as f:
        tables = tomllib.load(f)
    out = {}
    for name, table in tables.items():
        unknown = set(table) - {"key", "note", "unit", "also", *DIRECTIONS}
        if unknown:
            raise ValueError(f"target {name!r} in {path}: unknown fields {sorted(unknown)}")
        directions = [d for d in DIRECTIONS if d in table]
        if len(directions) != 1 or not isinstance(table[directions[0]], (int, float)):
            raise ValueError(f"target {name!r} in {path}: give exactly one numeric bound of {list(DIRECTIONS)}, "
                             f"got {({d: table[d] for d in directions})}")
        also = {field_name: (_checked_key(name, f"also.{field_name}.key", spec.get("key")), spec.get("unit"))
                for field_name, spec in table.get("also", {}).items()}
        out[name] = Target(name, _checked_key(name, "key", table.get("key")), float(table[directions[0]]),
                           directions[0], table.get("note"), table.get("unit"), also)
    return out


def lookup(bench: dict, dotted: str):
    group, key = dotted.split(".", 1)
    return bench.get(group, {}).get(key)


def targets(bench: dict, definitions: dict[str, Target] | None = None) -> dict:
    """``{name: {"target", "value", "met", ...}}`` for each target (met by the minima; for ratio keys
    ``value_of_medians`` and ``met_by_medians`` alongside; ``reason`` when the value is null)."""
    out = {}
    for name, target in (load_targets() if definitions is None else definitions).items():
        value = lookup(bench, target.key)
        met = None if value is None else target.meets(value)
        if value is None and target.key in bench.get("unreached", []):
            met = False  # Adam reached the threshold, the optimizer did not in the whole run
        entry = {"target": target.condition, "value": value, "met": met}
        if target.key.startswith("ratios."):
            median = bench["ratios_median"].get(target.key.split(".", 1)[1])
            entry["value_of_medians"] = median
            entry["met_by_medians"] = None if median is None else target.meets(median)
        for field_name, (key, _) in target.also.items():
            entry[field_name] = lookup(bench, key)
        also = [entry[field_name] for field_name in target.also if entry[field_name] is not None]
        if value is not None and also:
            entry["met"] = all(target.meets(v) for v in (value, *also))
        if value is None:
            entry["reason"] = bench["reasons"].get(target.key)
        out[name] = entry
    return out


def _why(errors: dict, section: str, default: str) -> str:
    if section in errors:
        return f"section {section!r} failed: {errors[section]['error']}"
    if errors.get("_skipped", {}).get(section):
        return f"section {section!r} not run ({errors['_skipped'][section]})"
    return default


def assemble(sections: dict, errors: dict, meta: dict) -> dict:
    """bench.json from the sections' results, the failed or skipped sections (``errors``) and ``meta``."""
    ratios, ratios_median, reasons = {}, {}, {}
    memory, found = {}, {}

    ou = sections.get("ou") or {}
    ratios["ou_exact_over_thermox"] = ou.get("ratio_min")
    ratios_median["ou_exact_over_thermox"] = ou.get("ratio_median")
    if ou.get("ratio_min") is None:
        reasons["ratios.ou_exact_over_thermox"] = ou.get("reason") or _why(errors, "ou", "section not run")
    for section, names, absent in (
            ("steps", steps.ALL[1:], "not in this run's step section (--quick times a subset)"),
            ("kfac", kfac.RATIOS, "not timed in this run (--quick times Adam and thermodynamic K-FAC only)")):
        result = sections.get(section)
        for name in names:
            key = f"{name}_step_over_adam"
            if result and key in result["ratios"]:
                ratios[key], ratios_median[key] = result["ratios_min"][key], result["ratios"][key]
            else:
                ratios[key] = ratios_median[key] = None
                reasons[f"ratios.{key}"] = _why(errors, section, f"{name} {absent}")
    kj = sections.get("kfac_jax")
    for key in kfac_jax.RATIO_KEYS:
        ratios[key] = kj["ratios"].get(key) if kj else None
        ratios_median[key] = kj["ratios_median"].get(key) if kj else None
        if ratios[key] is None:
            reasons[f"ratios.{key}"] = (kj["reason"] or "not measured in this run (--quick: refresh 10 only)"
                                        if kj else _why(errors, "kfac_jax", ""))

    sharded = sections.get("sharding") or {}
    for name in sharding.OPTIMIZERS:
        key = f"{name}_4_devices_over_1"
        ratios[key] = sharded.get("ratios", {}).get(name)
        ratios_median[key] = sharded.get("ratios_median", {}).get(name)
        if ratios[key] is None:
            reasons[f"ratios.{key}"] = (sharded.get("reason") or f"{name} not timed (--quick: Adam and thermo_kfac)"
                                        if sharded else _why(errors, "sharding", "section not run"))

    mem = sections.get("memory")
    if mem and mem["xla"]:
        memory["tngd_n1e6_peak_gib"] = mem["xla"]["peak_bytes"] / GIB
        rss = mem.get("rss") or {}
        memory["tngd_n1e6_rss_peak_gib"] = None if rss.get("rss_peak_bytes") is None else rss["rss_peak_bytes"] / GIB
        memory["tngd_n1e6_rss_growth_gib"] = (None if rss.get("rss_growth_bytes") is None
                                              else rss["rss_growth_bytes"] / GIB)
        if not rss:
            reasons["memory.tngd_n1e6_rss_peak_gib"] = mem["rss_reason"]
    else:
        memory = {"tngd_n1e6_peak_gib": None, "tngd_n1e6_rss_peak_gib": None, "tngd_n1e6_rss_growth_gib": None}
        reasons["memory.tngd_n1e6_peak_gib"] = _why(errors, "memory", "no XLA memory analysis on this backend")

    conv = sections.get("convergence")
    if conv:
        meta["convergence_task"] = conv["primary"]
        found, conv_reasons, unreached = convergence.ratios(conv)
        reasons.update({f"convergence.{k}": v for k, v in conv_reasons.items()})
    else:
        unreached = []
    for key in convergence.HEADLINE_KEYS:
        if key not in found:
            found[key] = None
            reasons.setdefault(f"convergence.{key}", _why(errors, "convergence", "section not run"))

    out = {"schema": SCHEMA, "meta": meta, "ratios": ratios, "ratios_median": ratios_median,
           "convergence": found, "memory": memory, "reasons": reasons, "unreached": unreached, "errors": errors}
    out["targets"] = targets(out)
    out["sections"] = sections
    return out
