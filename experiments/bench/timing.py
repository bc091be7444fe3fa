"""Timing of training steps that carry their state, XLA's and the process's memory, and the machine.

Every comparison is interleaved (``experiments.bench.workers.clock``, where the rationale is): each case keeps the
median and the minimum of its repeats.
"""

from __future__ import annotations

import os
import platform
import time
from typing import Any, Callable

import jax

from .workers.clock import interleaved, summary

GIB = float(2**30)


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

    Returns per name a :func:`~experiments.bench.workers.clock.summary` (seconds per step) plus ``compile_s``,
    XLA's ``memory`` analysis and ``steps_per_call``. ``on_compiled(name, timer)`` is called after each warm-up
    (progress output).
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


def _proc_kib(path: str, field: str) -> int | None:
    """The value in KiB of ``field`` in a Linux ``/proc`` status file, or None."""
    try:
        with open(path) as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def rss_bytes() -> int | None:
    """The process's resident set size now (Linux ``VmRSS``), or None."""
    kib = _proc_kib("/proc/self/status", "VmRSS")
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
    kib = _proc_kib("/proc/self/status", "VmHWM")
    return None if kib is None else 1024 * kib


def available_bytes() -> int | None:
    """The machine's available memory (Linux ``MemAvailable``), or None."""
    kib = _proc_kib("/proc/meminfo", "MemAvailable")
    return None if kib is None else 1024 * kib


# --------------------------------------------------------------------------------------------------
# Machine
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
