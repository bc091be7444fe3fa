"""The markdown report of a bench.json: the run, the targets, the headline keys, then each section's tables."""

from __future__ import annotations

import importlib

from . import SECTIONS
from .tables import fmt, markdown_table
from .results import load_targets


def _yes_no(met) -> str:
    return "n/a" if met is None else ("**met**" if met else "not met")


def _target_rows(bench: dict) -> list[list]:
    definitions = load_targets()
    rows = []
    for name, t in bench["targets"].items():
        value = fmt(t["value"], ".3g")
        if "value_of_medians" in t:
            value += f" ({fmt(t['value_of_medians'], '.3g')})"
        target = definitions.get(name)
        also = {} if target is None else {f: unit for f, (_, unit) in target.also.items() if t.get(f) is not None}
        if also:
            value += f" {target.unit}" + "".join(f"; {t[f]:.2f} {unit}" for f, unit in also.items())
        rows.append([name, f"`{t['target']}`", value, _yes_no(t["met"]), t.get("reason") or ""])
    return rows


def report(bench: dict) -> str:
    """The whole report (what experiments.bench writes to ``--report``)."""
    meta, sections = bench["meta"], bench["sections"]
    lines = [
        "# Benchmarks",
        "",
        f"Date: {meta['date']}  ",
        f"Command: `{meta['command']}`  ",
        f"Git: {meta['git_sha']}; jax {meta['machine']['jax_version']} ({meta['machine']['jax_backend']}), "
        f"{meta['machine']['cpu_count']} CPUs, 1-min load average {fmt(meta['load_avg_start'], '.1f')} at start, "
        f"{fmt(meta['load_avg_end'], '.1f')} at end; {meta['elapsed_s']:.0f} s"
        + (" (--quick)" if meta["quick"] else ""),
        "",
        "Ratios are ours over the baseline, measured interleaved in this run: lower is better. Headline values are "
        "ratios of minima over repeats (load on a shared machine only adds time); medians in parentheses.",
        "",
        "## Targets",
        "",
        markdown_table(["target", "condition", "value", "met", "reason / note"], _target_rows(bench)),
        "",
    ]

    lines += ["## Headline keys (bench.json)", ""]
    rows = [[f"ratios.{k}", fmt(v, ".3g"), fmt(bench["ratios_median"].get(k), ".3g"),
             bench["reasons"].get(f"ratios.{k}", "")] for k, v in bench["ratios"].items()]
    rows += [[f"convergence.{k}", fmt(v, ".3g"), "", bench["reasons"].get(f"convergence.{k}", "")]
             for k, v in sorted(bench["convergence"].items())]
    rows += [[f"memory.{k}", fmt(v, ".3g"), "", bench["reasons"].get(f"memory.{k}", "")]
             for k, v in bench["memory"].items()]
    lines += [markdown_table(["key", "value (min)", "median", "reason if null"], rows), ""]

    failed = {name: error for name, error in bench["errors"].items() if name != "_skipped"}
    if failed:
        lines += ["## Errors", ""] + [f"- {name}: {error['error']}" for name, error in failed.items()] + [""]
    not_run = bench["errors"].get("_skipped", {})
    if not_run:
        lines += ["Sections not run: " + "; ".join(f"{name} ({why})" for name, why in not_run.items()), ""]

    for name in SECTIONS:
        if sections.get(name):
            lines += [importlib.import_module(f"{__package__}.{name}").markdown(sections[name]), ""]
    return "\n".join(lines)
