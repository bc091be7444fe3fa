"""Memory of TNGD at N ~ 1e6 parameters with b dz = 640 (MLP 784-1258-10, batch 64, t = 50 tau, kappa0 = 0.01).

XLA's memory analysis of the compiled step in this process (compile only), then the peak RSS of one step in a
fresh subprocess (``python -m experiments.bench --memory-probe ...``, :func:`probe`).
"""

from __future__ import annotations

import gc
import json
import subprocess
import sys
import time

import jax
import jax.random as jr

import kfac_thermo
import thermox
from experiments.models import count_parameters

from . import problems, timing
from .tables import fmt, markdown_table
from .timing import GIB

INPUTS, HIDDEN, DZ, BATCH = 784, 1258, 10, 64


def memory_problem(hidden: int = HIDDEN, inputs: int = INPUTS, outputs: int = DZ, batch: int = BATCH):
    """``(step, params, state, batch, n_params)`` of one TNGD step (t = 50, noisy device) on the memory MLP."""
    params, predict_fn, x, y = problems.mlp(inputs, hidden, outputs, batch)
    optimizer = kfac_thermo.tngd(0.01, predict_fn=predict_fn, loss="softmax_cross_entropy", damping=0.01, t=50.0,
                                 device=thermox.AnalogDevice(kappa0=0.01), key=jr.key(3))
    step = problems.cross_entropy_step(optimizer, predict_fn)
    return step, params, optimizer.init(params), (x, y), count_parameters(params)


def probe(hidden: int = HIDDEN, inputs: int = INPUTS, outputs: int = DZ, batch: int = BATCH) -> dict:
    """In this process: compile one TNGD step, then run it once and measure the RSS high-water mark.

    The kernel's peak-RSS counter is reset after compilation, so ``rss_peak_bytes`` is the process's peak
    while the step ran (runtime, Python and all) and ``rss_growth_bytes`` what the step added to the RSS.
    """
    step, params, state, data, n_params = memory_problem(hidden, inputs, outputs, batch)
    compiled = step.lower(params, state, *data).compile()
    xla = timing.memory_stats(compiled)
    gc.collect()
    reset = timing.reset_peak_rss()
    before = timing.rss_bytes()
    start = time.perf_counter()
    jax.block_until_ready(compiled(params, state, *data))
    seconds = time.perf_counter() - start
    peak = timing.peak_rss_bytes()
    return {"n_params": n_params, "xla": xla, "rss_before_bytes": before, "rss_peak_bytes": peak,
            "rss_growth_bytes": None if peak is None or before is None else peak - before,
            "peak_reset": reset, "step_s": seconds}


def section(quick: bool, *, hidden: int = HIDDEN, inputs: int = INPUTS, outputs: int = DZ, batch: int = BATCH,
            subprocess_rss: bool = True) -> dict:
    """The suite's ``memory`` section (the same with ``quick``): XLA's memory analysis in this process (compile
    only), then the RSS of one step in a fresh subprocess (only if XLA's figure leaves room in the machine's
    available memory)."""
    del quick
    step, params, state, data, n_params = memory_problem(hidden, inputs, outputs, batch)
    compiled = step.lower(params, state, *data).compile()
    xla = timing.memory_stats(compiled)
    del compiled, step, params, state, data
    gc.collect()
    result = {"setting": {"model": f"MLP {inputs}-{hidden}-{outputs}", "n_params": n_params, "batch": batch,
                          "dz": outputs, "b_dz": batch * outputs, "optimizer": "tngd t = 50, kappa0 = 0.01"},
              "xla": xla, "rss": None, "rss_reason": None}
    available = timing.available_bytes()
    if not subprocess_rss:
        result["rss_reason"] = "not requested"
    elif xla is not None and available is not None and xla["peak_bytes"] > 0.7 * available:
        result["rss_reason"] = (f"XLA needs {xla['peak_bytes'] / GIB:.1f} GiB, more than 70% of the "
                                f"{available / GIB:.1f} GiB available: not run")
    else:
        command = [sys.executable, "-m", "experiments.bench", "--memory-probe",
                   json.dumps({"hidden": hidden, "inputs": inputs, "outputs": outputs, "batch": batch})]
        done = subprocess.run(command, capture_output=True, text=True, timeout=1800)
        if done.returncode == 0:
            result["rss"] = json.loads(done.stdout.strip().splitlines()[-1])
        else:
            result["rss_reason"] = f"memory probe exited {done.returncode}: {done.stderr.strip()[-300:]}"
    return result


def markdown(mem: dict) -> str:
    """The suite report's section: XLA's and the process's memory of the step."""
    s, xla, rss = mem["setting"], mem["xla"] or {}, mem.get("rss") or {}
    in_gib = lambda value: fmt(None if value is None else value / GIB, ".3f")
    return "\n".join([
        f"## Memory: TNGD, {s['model']} ({s['n_params']:,} parameters), batch {s['batch']}, b dz = {s['b_dz']}", "",
        markdown_table(["measure", "GiB"], [
            ["XLA peak of the compiled step (args + outputs + temporaries)", in_gib(xla.get("peak_bytes", 0))],
            ["XLA temporaries", in_gib(xla.get("temp", 0))],
            ["process peak RSS during one step (fresh subprocess)", in_gib(rss.get("rss_peak_bytes"))],
            ["RSS growth during the step", in_gib(rss.get("rss_growth_bytes"))],
        ]), "" if not mem.get("rss_reason") else f"\nRSS not measured: {mem['rss_reason']}"])
