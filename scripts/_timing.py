"""Timing and memory helpers shared by the benchmark scripts (bench.py, bench_ou.py, bench_tngd.py).

The machine these scripts run on is usually shared, so every comparison is *interleaved*: the runners being
compared are called in turn (a, b, a, b, ...) so that all of them see the same background load, and each case is
summarised by its median and its minimum. Load only ever adds time, so the minimum over interleaved repeats is
the least contaminated estimate of a case's own cost; the median says what a user of a loaded machine sees.

This module imports jax and the standard library only: bench_ou.py's worker imports it inside the public
``thermox`` package's virtual environment, where the project's own packages must not be importable.
"""

from __future__ import annotations

import os
import platform
import statistics
import time
from typing import Any, Callable, Sequence, TypeVar

import jax

GIB = float(2**30)
T = TypeVar("T")


# --------------------------------------------------------------------------------------------------
# Calls
# --------------------------------------------------------------------------------------------------


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
    times: dict[str, list[float]] = {name: [] for name in runners}
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


# --------------------------------------------------------------------------------------------------
# Training steps that carry their state
# --------------------------------------------------------------------------------------------------


class StepTimer:
    """A jit-compiled training step ``step(params, state, *batch) -> (params, state, loss)`` being timed.

    :meth:`compile` lowers and compiles it once (the compiled executable is what gets timed, and its XLA memory
    analysis is kept); each call of the timer runs ``steps_per_call`` steps from the carried parameters and
    state and returns the mean seconds per step, so the optimizer's state advances as in training (step
    counters, device voltages, refresh periods). With ``min_call_s``, :meth:`warm` raises ``steps_per_call``
    (in multiples of the given one, e.g. whole refresh periods) until a call lasts about that long, so a fast
    step (Adam) is averaged over as much wall time as a slow one and both see the same background load.
    ``block_each_step`` waits for every step before dispatching the next (as a train loop that reads the loss
    does): needed with several CPU host devices, where a deep queue of steps with collectives can deadlock
    XLA's CPU runtime (executions blocked in an all-reduce hold the threads that the other devices' turns need).
    """

    def __init__(self, step: Callable, params: Any, state: Any, batch: tuple, steps_per_call: int = 1,
                 min_call_s: float = 0.0, max_steps_per_call: int = 200, block_each_step: bool = False):
        self.step, self.batch, self.steps_per_call = step, tuple(batch), steps_per_call
        self.block_each_step = block_each_step
        self.min_call_s, self.max_steps_per_call = min_call_s, max_steps_per_call
        self.params, self.state = params, state
        self.compiled: Callable | None = None
        self.compile_s: float | None = None
        self.first_call_s: float | None = None
        self.memory: dict | None = None

    def compile(self) -> "StepTimer":
        start = time.perf_counter()
        compiled = self.step.lower(self.params, self.state, *self.batch).compile()
        self.compile_s = time.perf_counter() - start
        self.memory = memory_stats(compiled)
        self.compiled = compiled
        return self

    def warm(self) -> "StepTimer":
        """Compile (if needed), run one call untimed, and calibrate ``steps_per_call`` to ``min_call_s``."""
        if self.compiled is None:
            self.compile()
        self.first_call_s = self(0)
        if self.min_call_s > 0:
            per_step = self.first_call_s if self.first_call_s > 0.05 * self.min_call_s else self(0)
            base = self.steps_per_call
            multiple = max(1, int(self.min_call_s / max(per_step * base, 1e-9) + 0.999))
            self.steps_per_call = min(base * multiple, max(base, self.max_steps_per_call // base * base))
        return self

    def __call__(self, seed: int = 0) -> float:
        del seed
        params, state = self.params, self.state
        start = time.perf_counter()
        for _ in range(self.steps_per_call):
            params, state, loss = self.compiled(params, state, *self.batch)
            if self.block_each_step:
                jax.block_until_ready(loss)
        jax.block_until_ready((params, loss))
        seconds = (time.perf_counter() - start) / self.steps_per_call
        self.params, self.state = params, state
        return seconds


def time_steps(timers: dict[str, StepTimer], repeats: int, pause_s: float = 0.0,
               on_compiled: Callable[[str, StepTimer], None] | None = None) -> dict[str, dict]:
    """Warm every timer (compile + one untimed call), then time them interleaved ``repeats`` times.

    Returns per name a :func:`summary` (seconds per step) plus ``compile_s`` and XLA's ``memory`` analysis.
    ``on_compiled(name, timer)`` is called after each warm-up (progress output).
    """
    for name, timer in timers.items():
        timer.warm()
        if on_compiled is not None:
            on_compiled(name, timer)
    times = interleaved(dict(timers), repeats, pause_s)
    return {
        name: {**summary(times[name], timer.first_call_s), "compile_s": timer.compile_s, "memory": timer.memory,
               "steps_per_call": timer.steps_per_call}
        for name, timer in timers.items()
    }


# --------------------------------------------------------------------------------------------------
# Memory
# --------------------------------------------------------------------------------------------------


def memory_stats(compiled) -> dict | None:
    """XLA's buffer assignment of a compiled executable (``.memory_analysis()``), in bytes.

    ``peak_bytes`` = arguments + outputs - aliased + temporaries: everything the executable's buffers can hold
    at once (an upper bound of its live memory). XLA's own ``peak_memory_in_bytes`` is kept as
    ``xla_peak_bytes``; on CPU it can be below the temporaries alone, so it is not the headline. This is the
    memory the executable needs, not the process's RSS (no Python, no compiler, no allocator slack).
    """
    try:
        stats = compiled.memory_analysis()
    except Exception:  # noqa: BLE001 - some backends have none
        return None
    if stats is None:
        return None
    out = {name: int(getattr(stats, f"{name}_size_in_bytes", 0) or 0)
           for name in ("argument", "output", "alias", "temp", "generated_code")}
    out["xla_peak_bytes"] = getattr(stats, "peak_memory_in_bytes", None)
    out["peak_bytes"] = out["argument"] + out["output"] - out["alias"] + out["temp"]
    return out


def _status_kib(field: str) -> int | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def rss_bytes() -> int | None:
    """The process's resident set size now (Linux ``VmRSS``), or None."""
    kib = _status_kib("VmRSS")
    return None if kib is None else 1024 * kib


def reset_peak_rss() -> bool:
    """Reset the kernel's resident-set high-water mark (``VmHWM``) to the current RSS (Linux >= 4.0)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def peak_rss_bytes() -> int | None:
    """The process's resident-set high-water mark since start or the last :func:`reset_peak_rss` (``VmHWM``)."""
    kib = _status_kib("VmHWM")
    return None if kib is None else 1024 * kib


# --------------------------------------------------------------------------------------------------
# Machine and report helpers
# --------------------------------------------------------------------------------------------------


def load_average() -> float | None:
    try:
        return os.getloadavg()[0]
    except OSError:
        return None


def machine() -> dict:
    """What the numbers were measured on."""
    return {
        "python": platform.python_version(), "machine": platform.machine(), "cpu_count": os.cpu_count(),
        "jax_version": jax.__version__, "jax_backend": jax.default_backend(),
        "load_avg_1min": load_average(),
    }


def markdown_table(headers: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def ms(stats: dict | None, digits: int = 2) -> str:
    """``median (min)`` milliseconds of a :func:`summary`."""
    if not stats:
        return "n/a"
    return f"{1e3 * stats['median_s']:.{digits}f} ({1e3 * stats['min_s']:.{digits}f})"


def fmt(value: float | None, spec: str = ".2f") -> str:
    return "n/a" if value is None else format(value, spec)
