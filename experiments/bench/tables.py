"""Markdown tables and number formats of the benchmark reports."""

from __future__ import annotations


def markdown_table(headers: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def ms(stats: dict | None, digits: int = 2) -> str:
    """``median (min)`` milliseconds of an ``experiments.bench.workers.clock.summary``."""
    if not stats:
        return "n/a"
    return f"{1e3 * stats['median_s']:.{digits}f} ({1e3 * stats['min_s']:.{digits}f})"


def fmt(value: float | None, spec: str = ".2f") -> str:
    return "n/a" if value is None else format(value, spec)
