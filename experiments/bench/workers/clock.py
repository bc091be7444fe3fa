"""Timing of calls, interleaved so that every case sees the same background load (standard library and jax).

The machine the benchmarks run on is usually shared, so every comparison is *interleaved*: the runners being
compared are called in turn (a, b, a, b, ...) and each case is summarised by its median and its minimum. Load
only ever adds time, so the minimum over interleaved repeats is the least contaminated estimate of a case's own
cost; the median says what a user of a loaded machine sees.
"""

from __future__ import annotations

import statistics
import time
from typing import Callable, Sequence, TypeVar

import jax

T = TypeVar("T")


def timed(fn: Callable, *args) -> float:
    """Wall-clock seconds of one call ``fn(*args)``, waiting for its result (``block_until_ready``)."""
    start = time.perf_counter()
    jax.block_until_ready(fn(*args))
    return time.perf_counter() - start


def warm_up(fn: Callable, *args) -> float:
    """Compile and run ``fn`` twice; returns the seconds of the first (compiling) call."""
    first = timed(fn, *args)
    timed(fn, *args)
    return first


def summary(times: Sequence[float], first_call_s: float | None = None) -> dict:
    """``{"median_s", "min_s", "first_call_s", "times_s"}`` of repeated timings."""
    times = [float(t) for t in times]
    return {
        "median_s": statistics.median(times),
        "min_s": min(times),
        "first_call_s": first_call_s,
        "times_s": times,
    }


def interleaved(runners: dict[str, Callable[[int], T]], repeats: int, pause_s: float = 0.0,
                ) -> dict[str, list[T]]:
    """What each runner returns per repeat, called in turn (a, b, a, b, ...); ``runner(seed) -> seconds`` (or any
    measurement, e.g. a ``(wall, cpu)`` pair).

    ``pause_s`` sleeps before each call (lets another process's XLA worker threads stop spinning).
    """
    times: dict[str, list[T]] = {name: [] for name in runners}
    for seed in range(1, repeats + 1):
        for name, runner in runners.items():
            if pause_s:
                time.sleep(pause_s)
            times[name].append(runner(seed))
    return times


def ratio(ours: dict | None, baseline: dict | None, stat: str = "min_s") -> float | None:
    """``ours[stat] / baseline[stat]`` of two :func:`summary` dicts (None when either is missing)."""
    if not ours or not baseline or ours.get(stat) is None or not baseline.get(stat):
        return None
    return ours[stat] / baseline[stat]
