"""The benchmark suite: the project against its peers and baselines, every number a ratio measured in one run.

    python scripts/bench.py [--quick] [--out bench.json] [--report bench.md] [--only SECTION,...]

Sections (``--only`` / ``--skip`` take these names):

  ou           OU simulation (scripts/bench_ou.py): our exact path sampling vs the public PyPI ``thermox``
               (its own virtual environment, a worker subprocess, interleaved calls) at d = 10, 100, 400 with
               1,000 time points; our diffrax Euler-Maruyama vs our exact law; Krylov vs dense exact.
  steps        optimizer step cost on the paper's MNIST CNN, batch 64 (scripts/bench_tngd.py): TNGD (t = 5, 50
               tau, noisy, 8-bit, Monte-Carlo Fisher), TNGD-Adam, NGD-Woodbury, NGD-CG (c = 200) over
               ``optax.adam``; model calls per step; XLA peak memory of the compiled step.
  kfac         K-FAC and thermodynamic K-FAC (refresh every 10 steps) over Adam on an MLP 784-1024-1024-10,
               batch 512 (optimizers and step from scripts/bench_kfac.py; steps timed in whole refresh periods).
  scaling      the paper's runtime figure: time per iteration against parameter count N (an MLP 100-h-20
               widened, batch 32, dz = 20) for TNGD, NGD (dense, small N only), NGD-CG (c = 200) and
               NGD-Woodbury, as simulated wall time and as modeled hardware time from the transform's state.
  memory       TNGD at N ~ 1e6 with b dz = 640 (MLP 784-1258-10, batch 64): XLA's memory analysis of the
               compiled step, and the peak RSS of one step measured in a fresh subprocess.
  kfac_jax     K-FAC and thermodynamic K-FAC against DeepMind's kfac-jax (scripts/bench_kfac_jax.py: kfac-jax
               0.0.8 on jax 0.8.3 in its own virtual environment, a worker subprocess, interleaved rounds) on the
               MLP 784-1024-1024-10, batch 512, curvature and inverse refresh every 1 and every 10 steps.
  sharding     data parallelism (scripts/bench_sharding.py): the K-FAC MLP above on 4 CPU host devices (batch
               sharded, K-FAC's layer solves spread) over the same step on 1, in a subprocess with
               XLA_FLAGS=--xla_force_host_platform_device_count=4; --quick: Adam and thermodynamic K-FAC.
  convergence  steps and modeled hardware time to 90% and 95% test accuracy, each optimizer against Adam, 3
               seeds, median (experiments.run through Hydra, scripts/figures.py's configurations; finished run
               directories under --runs-dir are reused). Full run: the MNIST split in ../shared/data/mnist (Adam,
               TNGD t = 50 on the paper's device, exact NGD, thermodynamic K-FAC refreshing every 10 steps on the
               paper's and an ideal device, capped at 300 steps) plus digits (Adam, TNGD, thermodynamic K-FAC) as
               a secondary task.
               --quick: digits only (Adam, TNGD on the paper's device, thermodynamic K-FAC), evaluated every 5
               steps, TNGD capped at 60 steps and thermodynamic K-FAC at 100.

--quick (under 5 minutes on 2 cores): OU at d = 10, 100 with 3 repeats; the CNN step for Adam, TNGD t = 50, TNGD
with the Monte-Carlo Fisher, TNGD-Adam and NGD-Woodbury; K-FAC: Adam and thermodynamic K-FAC only, 2 rounds;
scaling at N ~ 3e3 and 1e5 (dense NGD up to 5e3); memory as in the full run; kfac-jax with 2 rounds, its
default estimation mode and refresh 10 only; no sharding section (FULL_RUN_ONLY); convergence on digits.

Timing: every comparison is interleaved (baseline and candidates called in turn) on a warmed-up, compiled step;
each case keeps its median and its minimum over repeats. The headline ``ratios.*`` are ratios of *minima* (load
on a shared machine only adds time, so the minimum is the least contaminated estimate of each side's cost);
``ratios_median.*`` holds the ratios of medians. Ours over the baseline: lower is better.

bench.json keys (schema "bench/1"; a value that could not be measured is null and ``reasons`` says why):
  ratios.ou_exact_over_thermox                   our exact path sampling / public thermox.sample, d = 100
  ratios.tngd_t50_step_over_adam                 TNGD (t = 50 tau, exact GGN) step / Adam step, MNIST CNN
  ratios.tngd_t5_step_over_adam                  ... t = 5 tau
  ratios.tngd_mc_fisher_step_over_adam           TNGD with the Monte-Carlo Fisher / Adam
  ratios.tngd_quantized_8bit_step_over_adam      TNGD on an 8-bit device / Adam
  ratios.tngd_adam_step_over_adam                TNGD-Adam / Adam
  ratios.ngd_woodbury_step_over_adam             NGD-Woodbury / Adam
  ratios.ngd_cg_step_over_adam                   NGD-CG (c = 200) / Adam
  ratios.kfac_step_over_adam                     digital K-FAC (refresh 10, factors by curvature propagation:
                                                 "ggn_curvature_prop", kfac-jax's default) / Adam, MLP
                                                 784-1024-1024-10, b 512
  ratios.thermo_kfac_step_over_adam              thermodynamic K-FAC (ideal device, solve; refresh 10,
                                                 ggn_curvature_prop) / Adam, same MLP and batch
  ratios.thermo_kfac_8bit_step_over_adam         the same on an 8-bit DAC/ADC device
  ratios.<kfac|thermo_kfac>_ggn_step_over_adam   the same two with the exact GGN factors (9 reverse passes)
  ratios.kfac_step_over_kfac_jax                 our K-FAC / kfac-jax, both estimating the factors by curvature
                                                 propagation (kfac-jax's default), refresh 10, MLP
                                                 784-1024-1024-10, b 512, raw wall times per step
  ratios.thermo_kfac_step_over_kfac_jax          thermodynamic K-FAC (ideal device, solve) / kfac-jax, same
  ratios.<...>_over_kfac_jax_refresh1            the same two with curvature and inverses refreshed every step
  ratios.<opt>_4_devices_over_1                  step time on 4 host devices / on 1 (opt = adam, kfac,
                                                 thermo_kfac; the K-FAC MLP; the devices share the CPU's cores)
  ratios_median.*                                the same ratios of medians
  convergence.<opt>_steps_to_<p>_over_adam       median steps to p% test accuracy / Adam's on the primary task
                                                 (meta.convergence_task: mnist, or digits with --quick); p = 90,
                                                 95; opt = tngd (paper device), tngd_t50_ideal, thermo_kfac
                                                 (paper device), thermo_kfac_ideal, ngd_woodbury; null with the reason
                                                 where Adam (or the optimizer) does not reach p%
  convergence.<opt>_modeled_time_to_<p>_over_adam  the same for modeled hardware time
  convergence.digits_<...>                       the same on digits, the full run's secondary task
  memory.tngd_n1e6_peak_gib                      XLA peak (arguments + outputs + temporaries) of one TNGD step at N
                                                 ~ 1e6, b dz = 640, GiB
  memory.tngd_n1e6_rss_peak_gib                  process peak RSS during that step (fresh subprocess), GiB
  memory.tngd_n1e6_rss_growth_gib                peak RSS during the step minus the RSS before it, GiB
  targets.<name>                                 {"target", "value", "met", ...} for each target of the issue
                                                 (met by the minima; "met_by_medians" alongside)
  reasons["<group>.<key>"]                       why that key is null
  unreached                                      convergence keys that are null because the optimizer never
                                                 reached the threshold (uncapped) where Adam did: target not met
  errors.<section>                               a section that raised: its error and traceback
  sections.<name>                                each section's full results (timings, sizes, settings)
  meta                                           date, command, git SHA, machine, load averages, elapsed seconds,
                                                 quick, convergence_task, OPENBLAS_NUM_THREADS
"""

from __future__ import annotations

import argparse
import datetime
import gc
import json
import math
import os

# XLA's LAPACK calls on CPU (eigh, Cholesky) run on OpenBLAS's own threads, which fight XLA's thread pool for the
# cores: on a 2-core machine that made a 1025 x 1025 eigh take 0.3-3.7 s instead of 70 ms (scripts/bench_kfac.py).
# Set before numpy/scipy/jax load OpenBLAS; subprocesses (the public thermox worker, the memory probe) inherit it.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
import pathlib
import shlex
import statistics
import subprocess
import sys
import time
import traceback

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import jax.random as jr  # noqa: E402
import optax  # noqa: E402

import _timing  # noqa: E402
import bench_tngd  # noqa: E402
from _timing import GIB, StepTimer, fmt, markdown_table, ms, time_steps  # noqa: E402

SCHEMA = "bench/1"
SECTIONS = ("ou", "steps", "kfac", "scaling", "memory", "kfac_jax", "sharding", "convergence")
FULL_RUN_ONLY = {  # sections --quick leaves out (unless named in --only), with the reason reported
    "sharding": "full run only, to keep --quick under 5 minutes (python scripts/bench_sharding.py --quick)",
}
MNIST_DIR = ROOT.parent / "shared" / "data" / "mnist"

# Scaling (TNGD paper Fig. 2): an MLP SCALING_INPUTS -> h -> SCALING_DZ, batch SCALING_BATCH.
SCALING_INPUTS, SCALING_DZ, SCALING_BATCH = 100, 20, 32
SCALING_SIZES = (1e4, 3e4, 1e5, 3e5, 1e6)
SCALING_SIZES_QUICK = (3e3, 1e5)
DENSE_MAX_N = 1e4  # dense NGD: an N x N matrix and an O(N^3) Cholesky per step (10-25 s at N = 1e4 here)
DENSE_MAX_N_QUICK = 5e3
QUICK_CONVERGENCE_LABELS = ("adam", "tngd-t50", "thermo-kfac")  # the issue's keys: TNGD and thermo K-FAC vs Adam
# Memory: TNGD, N ~ 1e6 parameters, batch 64, 10 outputs (b dz = 640): MLP 784 -> 1258 -> 10.
MEMORY_INPUTS, MEMORY_HIDDEN, MEMORY_DZ, MEMORY_BATCH = 784, 1258, 10, 64
MEMORY_BUDGET_GIB = 24.0

TARGETS = {  # name: (key, bound): the target is met when the value is <= the bound
    "tngd_t50_step_le_10x_adam": ("ratios.tngd_t50_step_over_adam", 10.0),
    "tngd_mc_fisher_step_le_3x_adam": ("ratios.tngd_mc_fisher_step_over_adam", 3.0),
    "thermo_kfac_step_le_3x_adam": ("ratios.thermo_kfac_step_over_adam", 3.0),
    "thermo_kfac_8bit_step_le_3x_adam": ("ratios.thermo_kfac_8bit_step_over_adam", 3.0),
    "thermo_kfac_le_half_kfac_jax": ("ratios.thermo_kfac_step_over_kfac_jax", 0.5),
    "ou_sampler_at_least_public_thermox": ("ratios.ou_exact_over_thermox", 1.0),
    "tngd_steps_to_90_le_half_adam": ("convergence.tngd_steps_to_90_over_adam", 0.5),
    "tngd_steps_to_95_le_half_adam": ("convergence.tngd_steps_to_95_over_adam", 0.5),
    "thermo_kfac_steps_to_90_le_half_adam": ("convergence.thermo_kfac_steps_to_90_over_adam", 0.5),
    "thermo_kfac_steps_to_95_le_half_adam": ("convergence.thermo_kfac_steps_to_95_over_adam", 0.5),
    "tngd_n1e6_memory_fits_24_gib": ("memory.tngd_n1e6_peak_gib", MEMORY_BUDGET_GIB),
}


def log(message: str) -> None:
    print(message, flush=True)


def cross_entropy_step(optimizer, predict_fn):
    """The train step every section times: softmax cross-entropy, gradient, update, apply (bench_tngd's)."""
    return bench_tngd.make_step(optimizer, predict_fn)


# ==================================================================================================
# 1. OU simulation
# ==================================================================================================


def section_ou(quick: bool, repeats: int | None = None, *, public: bool = True, cache_dir=None,
               path_sizes=None, krylov_sizes=None, euler_d: int | None = None, law: bool = True) -> dict:
    """scripts/bench_ou.py's benchmarks; the headline ratio at d = 100 (of minima and of medians)."""
    import bench_ou

    options = {} if cache_dir is None else {"cache_dir": pathlib.Path(cache_dir)}
    if euler_d is not None:
        options["euler_d"] = euler_d
    raw = bench_ou.run_benchmarks(quick, repeats, public=public, path_sizes=path_sizes,
                                  krylov_sizes=krylov_sizes, law=law, **options)
    ratios = raw["ratios"]
    return {
        "ratio_min": ratios["ou_exact_over_thermox_min"],
        "ratio_median": ratios["ou_exact_over_thermox"],
        "reason": ratios["reason"],
        "raw": raw,
    }


# ==================================================================================================
# 2. Optimizer step cost on the paper's CNN (bench_tngd) and on the K-FAC MLP (bench_kfac)
# ==================================================================================================


def section_steps(quick: bool, repeats: int | None = None, names=None, **problem) -> dict:
    """bench_tngd.bench on the paper's MNIST CNN, batch 64."""
    names = names or (("adam", "tngd_t50", "tngd_mc_fisher", "tngd_adam", "ngd_woodbury") if quick
                      else bench_tngd.ALL)
    return bench_tngd.bench(names, repeats or (5 if quick else 10), **problem)


KFAC_WANTED = {  # our name: the words of bench_kfac.optimizers()'s name for it (any order)
    "adam": ("adam",),
    # The headline pair: factors by curvature propagation (one reverse pass per refresh), kfac-jax's default.
    "kfac": ("kfac", "ggn_curvature_prop"),
    "thermo_kfac": ("thermo_kfac", "solve", "ideal", "ggn_curvature_prop"),  # the paper's method 2, ideal device
    "thermo_kfac_8bit": ("thermo_kfac", "solve", "8-bit", "ggn_curvature_prop"),
    # The exact GGN factors (the optimizers' default curvature: dz - 1 = 9 reverse passes per refresh).
    "kfac_ggn": ("kfac",),
    "thermo_kfac_ggn": ("thermo_kfac", "solve", "ideal"),
}
KFAC_RATIOS = tuple(name for name in KFAC_WANTED if name != "adam")


def kfac_name(available, ours: str) -> str | None:
    """The name bench_kfac.optimizers() gives our ``ours`` (exact words, e.g. "thermo_kfac solve ideal")."""
    words = set(KFAC_WANTED[ours])
    matches = [name for name in available if set(name.split()) == words]
    return matches[0] if matches else None


def section_kfac(quick: bool, rounds: int | None = None, *, hidden: int | None = None,
                 batch: int | None = None) -> dict:
    """Adam, K-FAC and thermodynamic K-FAC from scripts/bench_kfac.py, timed here in whole refresh periods.

    Each timer call runs one period (bench_kfac.PERIOD steps: one curvature and inverse refresh, then cheap
    steps) and reports seconds per step; warm-up is one period (compilation and the first refresh).
    ``hidden``/``batch`` shrink the MLP for smoke tests. Raises if bench_kfac is absent or incomplete.
    """
    import equinox as eqx

    import bench_kfac
    from experiments.models import count_parameters, split_model

    missing = [name for name in ("optimizers", "BATCH", "INPUTS", "HIDDEN", "CLASSES", "PERIOD")
               if not hasattr(bench_kfac, name)]
    if missing:
        raise RuntimeError(f"scripts/bench_kfac.py lacks {missing}")
    hidden = hidden or bench_kfac.HIDDEN
    batch = batch or bench_kfac.BATCH
    k_model, k_x, k_y = jr.split(jr.key(0), 3)
    model = eqx.nn.MLP(bench_kfac.INPUTS, bench_kfac.CLASSES, hidden, depth=2, activation=jax.nn.relu, key=k_model)
    params, predict_fn = split_model(model)
    inputs = jr.normal(k_x, (batch, bench_kfac.INPUTS))
    labels = jr.randint(k_y, (batch,), 0, bench_kfac.CLASSES)
    available = bench_kfac.optimizers(predict_fn, inputs, True)
    wanted = ("adam", "thermo_kfac") if quick else tuple(KFAC_WANTED)
    names = {ours: kfac_name(available, ours) for ours in wanted}
    absent = [" ".join(KFAC_WANTED[ours]) for ours, name in names.items() if name is None]
    if absent:
        raise RuntimeError(f"scripts/bench_kfac.py's optimizers() has none named {absent} (it has {sorted(available)})")
    period = bench_kfac.PERIOD
    timers = {ours: StepTimer(cross_entropy_step(available[name], predict_fn), params, available[name].init(params),
                              (inputs, labels), steps_per_call=period, min_call_s=1.0)
              for ours, name in names.items()}
    rounds = rounds or (2 if quick else 5)
    stats = time_steps(timers, rounds, on_compiled=lambda n, t: log(
        f"  kfac: compiled {n} ({t.compile_s:.1f} s; first period {t.first_call_s * period:.1f} s)"))
    results = {}
    for name, timer in timers.items():
        state = _kfac_state(timer.state)
        results[name] = {
            "optimizer": names[name], "step_s": stats[name]["median_s"], "step_min_s": stats[name]["min_s"],
            "stats": stats[name],
            "model_calls_last_step": None if state is None else bench_tngd.model_calls(timer.state),
            "modeled_time_s_last_step": None if state is None else bench_tngd.modeled_time_s(
                timer.state, batch, count_parameters(params)),
            "peak_bytes": (stats[name]["memory"] or {}).get("peak_bytes"),
        }
    adam = results["adam"]
    return {
        "setting": {"model": f"MLP {bench_kfac.INPUTS}-{hidden}-{hidden}-{bench_kfac.CLASSES}",
                    "parameters": count_parameters(params), "batch": batch, "period": period,
                    "rounds": rounds, "source": "optimizers from scripts/bench_kfac.py",
                    "timing": "interleaved rounds of one refresh period each; seconds per step"},
        "results": results,
        "ratios": {f"{n}_step_over_adam": r["step_s"] / adam["step_s"] for n, r in results.items() if n != "adam"},
        "ratios_min": {f"{n}_step_over_adam": r["step_min_s"] / adam["step_min_s"]
                       for n, r in results.items() if n != "adam"},
    }


def _kfac_state(state):
    import kfac_thermo

    is_kfac = lambda s: isinstance(s, kfac_thermo.KFACState)
    return next((s for s in jax.tree_util.tree_leaves(state, is_leaf=is_kfac) if is_kfac(s)), None)


def section_kfac_jax(quick: bool, cache_dir=None) -> dict:
    """scripts/bench_kfac_jax.py's ``kfac_jax_ratio``: ``ratios`` (of minima), ``ratios_median`` and ``reason``
    (None, or why kfac-jax could not run), per refresh period; its environment is kept under ``cache_dir``."""
    import bench_kfac_jax

    options = {} if cache_dir is None else {"cache_dir": pathlib.Path(cache_dir)}
    if quick:  # 2 interleaved rounds (the script's --quick: 5) at refresh 10 only keep bench.py --quick short
        options.update(rounds=2, periods=(bench_kfac_jax.HEADLINE_PERIOD,))
    return bench_kfac_jax.kfac_jax_ratio(quick, **options)


def section_sharding(quick: bool) -> dict:
    """scripts/bench_sharding.py's ``sharding_ratio``: per optimizer the 4-device over 1-device step time
    (``ratios`` of minima, ``ratios_median``), or ``reason`` why it could not run."""
    import bench_sharding

    return bench_sharding.sharding_ratio(quick)


# ==================================================================================================
# 3. Scaling with the parameter count
# ==================================================================================================


def mlp_problem(inputs: int, hidden: int, outputs: int, batch: int, seed: int = 0):
    """``(params, predict_fn, x, labels)``: a one-hidden-layer tanh MLP and a random batch."""
    import equinox as eqx

    from experiments.models import split_model

    k_model, k_x, k_y = jr.split(jr.key(seed), 3)
    model = eqx.nn.MLP(inputs, outputs, hidden, depth=1, activation=jnp.tanh, key=k_model)
    params, predict_fn = split_model(model)
    return params, predict_fn, jr.normal(k_x, (batch, inputs)), jr.randint(k_y, (batch,), 0, outputs)


def hidden_for(n_params: float, inputs: int, outputs: int) -> int:
    """Hidden width of an MLP inputs -> h -> outputs with about ``n_params`` parameters."""
    return max(1, round((n_params - outputs) / (inputs + 1 + outputs)))


def scaling_optimizers(predict_fn, n_params: int, *, cg_iterations: int = 200, dense_max_n: float = DENSE_MAX_N,
                       include=("adam", "tngd", "ngd", "ngd_cg", "ngd_woodbury")) -> tuple[dict, dict]:
    """The optimizers of the runtime figure at one size, and the skipped ones with their reason."""
    import kfac_thermo
    import thermox

    common = dict(predict_fn=predict_fn, loss="softmax_cross_entropy", damping=0.01)
    factories = {
        "adam": lambda: optax.adam(1e-3),
        "tngd": lambda: kfac_thermo.tngd(0.01, t=50.0, device=thermox.AnalogDevice(kappa0=0.01), key=jr.key(3),
                                         **common),
        "ngd": lambda: kfac_thermo.ngd(0.01, **common),
        "ngd_cg": lambda: kfac_thermo.ngd_cg(0.01, iterations=cg_iterations, **common),
        "ngd_woodbury": lambda: kfac_thermo.ngd_woodbury(0.01, **common),
    }
    chosen, skipped = {}, {}
    for name in include:
        if name == "ngd" and n_params > dense_max_n:
            gib = 4.0 * n_params**2 / GIB
            skipped[name] = (f"dense NGD forms the N x N matrix ({gib:.2g} GiB in float32 at N = {n_params:,}) and "
                             f"factors it in O(N^3) = {n_params**3 / 3:.1e} flops per step: run only for N <= "
                             f"{dense_max_n:,.0f}" + (" (--quick; 10,000 in the full run)"
                                                      if dense_max_n < DENSE_MAX_N else ""))
            continue
        chosen[name] = factories[name]()
    return chosen, skipped


def section_scaling(quick: bool, repeats: int | None = None, *, sizes=None, inputs: int = SCALING_INPUTS,
                    outputs: int = SCALING_DZ, batch: int = SCALING_BATCH, cg_iterations: int = 200,
                    dense_max_n: float | None = None,
                    include=("adam", "tngd", "ngd", "ngd_cg", "ngd_woodbury")) -> dict:
    """Per-iteration wall time and modeled hardware time against N (TNGD paper Fig. 2)."""
    from experiments.models import count_parameters

    sizes = sizes or (SCALING_SIZES_QUICK if quick else SCALING_SIZES)
    repeats = repeats or (2 if quick else 3)
    if dense_max_n is None:
        dense_max_n = DENSE_MAX_N_QUICK if quick else DENSE_MAX_N
    rows = []
    for target in sizes:
        hidden = hidden_for(target, inputs, outputs)
        params, predict_fn, x, y = mlp_problem(inputs, hidden, outputs, batch)
        n_params = count_parameters(params)
        chosen, skipped = scaling_optimizers(predict_fn, n_params, cg_iterations=cg_iterations,
                                             dense_max_n=dense_max_n, include=include)
        timers = {name: StepTimer(cross_entropy_step(opt, predict_fn), params, opt.init(params), (x, y),
                                  min_call_s=0.1)
                  for name, opt in chosen.items()}
        stats = time_steps(timers, repeats, on_compiled=lambda n, t, N=n_params: log(
            f"  scaling N = {N:,}: compiled {n} ({t.compile_s:.1f} s, first step {t.first_call_s:.2f} s)"))
        row = {"n_target": target, "n_params": n_params, "hidden": hidden, "skipped": skipped, "optimizers": {}}
        for name, timer in timers.items():
            row["optimizers"][name] = {
                "wall_s": stats[name], "model_calls": bench_tngd.model_calls(timer.state),
                "modeled_time_s": bench_tngd.modeled_time_s(timer.state, batch, n_params),
                "peak_bytes": (stats[name]["memory"] or {}).get("peak_bytes"),
            }
        rows.append(row)
        del timers, stats
        gc.collect()
    return {
        "setting": {"model": f"MLP {inputs}-h-{outputs} (tanh), hidden width widened", "batch": batch, "dz": outputs,
                    "cg_iterations": cg_iterations, "dense_max_n": dense_max_n, "repeats": repeats,
                    "tngd": "t = 50 tau, kappa0 = 0.01, exact low-rank law, damping 0.01",
                    "modeled": "experiments.hardware.step_seconds of the work records and the gradient's passes"},
        "rows": rows,
    }


# ==================================================================================================
# Memory: TNGD at N ~ 1e6, b dz = 640
# ==================================================================================================


def memory_problem(hidden: int = MEMORY_HIDDEN, inputs: int = MEMORY_INPUTS, outputs: int = MEMORY_DZ,
                   batch: int = MEMORY_BATCH):
    """``(step, params, state, batch, n_params)`` of one TNGD step (t = 50, noisy device) on the memory MLP."""
    import kfac_thermo
    import thermox
    from experiments.models import count_parameters

    params, predict_fn, x, y = mlp_problem(inputs, hidden, outputs, batch)
    optimizer = kfac_thermo.tngd(0.01, predict_fn=predict_fn, loss="softmax_cross_entropy", damping=0.01, t=50.0,
                                 device=thermox.AnalogDevice(kappa0=0.01), key=jr.key(3))
    return cross_entropy_step(optimizer, predict_fn), params, optimizer.init(params), (x, y), count_parameters(params)


def memory_probe(hidden: int = MEMORY_HIDDEN, inputs: int = MEMORY_INPUTS, outputs: int = MEMORY_DZ,
                 batch: int = MEMORY_BATCH) -> dict:
    """In this process: compile one TNGD step, then run it once and measure the RSS high-water mark.

    The kernel's peak-RSS counter is reset after compilation, so ``rss_peak_bytes`` is the process's peak
    while the step ran (runtime, Python and all) and ``rss_growth_bytes`` what the step added to the RSS.
    """
    step, params, state, data, n_params = memory_problem(hidden, inputs, outputs, batch)
    compiled = step.lower(params, state, *data).compile()
    xla = _timing.memory_stats(compiled)
    gc.collect()
    reset = _timing.reset_peak_rss()
    before = _timing.rss_bytes()
    start = time.perf_counter()
    jax.block_until_ready(compiled(params, state, *data))
    seconds = time.perf_counter() - start
    peak = _timing.peak_rss_bytes()
    return {"n_params": n_params, "xla": xla, "rss_before_bytes": before, "rss_peak_bytes": peak,
            "rss_growth_bytes": None if peak is None or before is None else peak - before,
            "peak_reset": reset, "step_s": seconds}


def section_memory(quick: bool, *, hidden: int = MEMORY_HIDDEN, inputs: int = MEMORY_INPUTS,
                   outputs: int = MEMORY_DZ, batch: int = MEMORY_BATCH, subprocess_rss: bool = True) -> dict:
    """XLA's memory analysis in this process (compile only), then the RSS of one step in a fresh subprocess
    (only if XLA's figure leaves room in the machine's available memory)."""
    step, params, state, data, n_params = memory_problem(hidden, inputs, outputs, batch)
    compiled = step.lower(params, state, *data).compile()
    xla = _timing.memory_stats(compiled)
    del compiled, step, params, state, data
    gc.collect()
    result = {"setting": {"model": f"MLP {inputs}-{hidden}-{outputs}", "n_params": n_params, "batch": batch,
                          "dz": outputs, "b_dz": batch * outputs, "optimizer": "tngd t = 50, kappa0 = 0.01"},
              "xla": xla, "rss": None, "rss_reason": None}
    available = _available_bytes()
    if not subprocess_rss:
        result["rss_reason"] = "not requested"
    elif xla is not None and available is not None and xla["peak_bytes"] > 0.7 * available:
        result["rss_reason"] = (f"XLA needs {xla['peak_bytes'] / GIB:.1f} GiB, more than 70% of the "
                                f"{available / GIB:.1f} GiB available: not run")
    else:
        command = [sys.executable, str(pathlib.Path(__file__).resolve()), "--memory-probe",
                   json.dumps({"hidden": hidden, "inputs": inputs, "outputs": outputs, "batch": batch})]
        done = subprocess.run(command, capture_output=True, text=True, timeout=1800)
        if done.returncode == 0:
            result["rss"] = json.loads(done.stdout.strip().splitlines()[-1])
        else:
            result["rss_reason"] = f"memory probe exited {done.returncode}: {done.stderr.strip()[-300:]}"
    return result


def _available_bytes() -> int | None:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return 1024 * int(line.split()[1])
    except OSError:
        return None
    return None


# ==================================================================================================
# 5. Convergence
# ==================================================================================================


def convergence_runs(task: str) -> list[tuple[str, list[str]]]:
    """(label, overrides): scripts/figures.py's MNIST figure (Adam, TNGD t = 50 on the paper's device, exact NGD)
    plus thermodynamic K-FAC on the paper's device."""
    import figures

    runs = [(label, overrides) for label, overrides in figures.figure_runs("mnist", None)]
    if task == "digits":  # exact NGD (Woodbury) adds nothing on digits but time
        return [r for r in runs if r[0] != "ngd-exact"] + [("thermo-kfac", ["optimizer=thermo_kfac", "device=paper"])]
    # MNIST: the CNN's first dense layer has a 5,409 x 5,409 input factor, so factors and device programming are
    # refreshed every 10 steps (~0.5-1 s per step here instead of ~5 s).
    periods = ["optimizer.curvature_period=10", "optimizer.inverse_period=10"]
    return runs + [("thermo-kfac", ["optimizer=thermo_kfac", "device=paper", *periods]),
                   ("thermo-kfac-ideal", ["optimizer=thermo_kfac", "device=ideal", *periods])]


LABEL_KEYS = {"adam": "adam", "tngd-t50": "tngd", "ngd-exact": "ngd_woodbury", "thermo-kfac": "thermo_kfac",
              "thermo-kfac-ideal": "thermo_kfac_ideal"}
THERMO_KFAC_MNIST_MAX_STEPS = 300  # both devices; Adam's median seed reaches 90% in ~220 steps


def _run_config(overrides: list[str], run_dir: pathlib.Path) -> str:
    """Run one configuration through experiments.run (scripts/figures.py's run_once); a finished run directory
    is reused. Returns how the run was made."""
    import figures

    summary = run_dir / "summary.json"
    if summary.exists():
        done = json.loads(summary.read_text())
        if done["steps"] == done["planned_steps"]:
            return "reused run directory"
    figures.run_once(overrides, run_dir)
    return "experiments.run"


def first_reaching(records: list[dict], threshold: float, metric: str = "test_accuracy") -> dict | None:
    """The first evaluated record with ``metric >= threshold``: its step, modeled and wall time."""
    for record in records:
        if record.get(metric) is not None and record[metric] >= threshold:
            return {"step": record["step"], "modeled_time_s": record["modeled_time_s"],
                    "wall_time_s": record["wall_time_s"]}
    return None


def median_or_none(values: list[float | None]) -> float | None:
    """Median with unreached (None) counted as +infinity; None if the median itself is unreached."""
    if not values:
        return None
    value = statistics.median([math.inf if v is None else v for v in values])
    return None if math.isinf(value) else value


def task_convergence(task: str, quick: bool, *, data_dir: str | None, seeds: int, runs_dir: str, eval_every: int,
                     max_steps: dict, labels, thresholds=(0.90, 0.95)) -> dict:
    """Every run of ``convergence_runs(task)`` (restricted to ``labels``) for ``seeds`` seeds; per optimizer the
    median over seeds of the steps and modeled time to each threshold (an unreached seed counts as infinite)."""
    from experiments.rundir import read_metrics

    task_overrides = (["task=digits"] if task == "digits"
                      else ["task=mnist", f"task.data_dir={os.path.abspath(data_dir)}"])
    base = task_overrides + ["run.progress=false", "run.plots=false", f"run.eval_every={eval_every}",
                             "run.checkpoint_every=100000"]
    folder = pathlib.Path(runs_dir) / f"{'quick' if quick else 'full'}-{task}"
    per_label = {}
    for label, overrides in convergence_runs(task):
        if labels is not None and label not in labels:
            continue
        cap = max_steps.get(label)
        extra = [] if cap is None else [f"run.max_steps={cap}"]
        per_seed, via = [], set()
        for seed in range(seeds):
            run_dir = folder / f"{label}-seed{seed}"
            start = time.perf_counter()
            try:
                via.add(_run_config(base + overrides + extra + [f"seed={seed}"], run_dir))
            except Exception as error:  # noqa: BLE001 - one optimizer failing must not sink the section
                per_label[label] = {"error": f"{type(error).__name__}: {error}"}
                log(f"  convergence {task} {label} seed {seed} failed: {error}")
                break
            records = read_metrics(str(run_dir))
            evals = [r for r in records if "test_accuracy" in r]
            per_seed.append({
                "seed": seed, "run_dir": str(run_dir), "steps": records[-1]["step"] if records else 0,
                "final_test_accuracy": evals[-1]["test_accuracy"] if evals else None,
                "best_test_accuracy": max((r["test_accuracy"] for r in evals), default=None),
                "reached": {f"{round(100 * p)}": first_reaching(evals, p) for p in thresholds},
                "seconds": time.perf_counter() - start,
            })
            log(f"  convergence {task} {label} seed {seed}: best {per_seed[-1]['best_test_accuracy']:.3f}, "
                f"{per_seed[-1]['seconds']:.0f} s")
        if label in per_label:
            continue
        summary = {"cap_steps": cap, "runner": sorted(via), "seeds": per_seed}
        for p in thresholds:
            key = f"{round(100 * p)}"
            hits = [s["reached"][key] for s in per_seed]
            summary[f"median_steps_to_{key}"] = median_or_none([None if h is None else h["step"] for h in hits])
            summary[f"median_modeled_time_to_{key}"] = median_or_none(
                [None if h is None else h["modeled_time_s"] for h in hits])
            summary[f"seeds_reaching_{key}"] = sum(h is not None for h in hits)
        per_label[label] = summary
    return {
        "setting": {"task": task, "seeds": seeds, "eval_every": eval_every, "max_steps": max_steps,
                    "runs_dir": str(folder), "thresholds": list(thresholds),
                    "note": ("scikit-learn digits (1,300 train / 497 test, batch 64, 15 epochs = 300 steps)"
                             + ("; second-order optimizers capped" if any(max_steps.values()) else "")
                             if task == "digits" else
                             "MNIST split (5,000 / 5,000 of t10k), batch 64, 10 epochs (780 steps): the paper's "
                             "protocol")},
        "optimizers": per_label,
    }


def section_convergence(quick: bool, *, data_dir: str | None = None, seeds: int = 3, runs_dir: str = "runs/bench",
                        labels=None) -> dict:
    """Convergence against Adam: the primary task is MNIST in the full run (Adam, TNGD, exact NGD, thermodynamic
    K-FAC on the paper's and an ideal device refreshing every 10 steps, capped at THERMO_KFAC_MNIST_MAX_STEPS) and
    digits with --quick. The full run adds digits (Adam, TNGD, thermodynamic K-FAC, 15 epochs) as a secondary
    task."""
    tasks, skipped = {}, {}
    if quick:
        tasks["digits"] = task_convergence(
            "digits", quick, data_dir=None, seeds=seeds, runs_dir=runs_dir, eval_every=5,
            max_steps={"adam": None, "tngd-t50": 60, "thermo-kfac": 100},
            labels=QUICK_CONVERGENCE_LABELS if labels is None else labels)
        return {"primary": "digits", "tasks": tasks, "skipped": skipped}
    if data_dir is None or not any(pathlib.Path(data_dir, f"t10k-images-idx3-ubyte{ext}").exists()
                                   for ext in ("", ".gz")):
        raise FileNotFoundError(f"MNIST (t10k-images-idx3-ubyte[.gz]) not found in {data_dir}")
    mnist_labels = [l for l, _ in convergence_runs("mnist") if labels is None or l in labels]
    tasks["mnist"] = task_convergence("mnist", quick, data_dir=data_dir, seeds=seeds, runs_dir=runs_dir,
                                      eval_every=10, labels=mnist_labels,
                                      max_steps={l: THERMO_KFAC_MNIST_MAX_STEPS for l in mnist_labels
                                                 if l.startswith("thermo-kfac")})
    digits_labels = [l for l in ("adam", "tngd-t50", "thermo-kfac") if labels is None or l in labels]
    tasks["digits"] = task_convergence("digits", quick, data_dir=None, seeds=seeds, runs_dir=runs_dir,
                                       eval_every=5, max_steps={}, labels=digits_labels)
    return {"primary": "mnist", "tasks": tasks, "skipped": skipped}


def convergence_ratios(section: dict, thresholds=(90, 95)) -> tuple[dict, dict, list]:
    """``convergence.<opt>_<steps|modeled_time>_to_<p>_over_adam`` of the primary task (and, prefixed with the
    task's name, of the others), the reason for each null, and the keys whose optimizer never reached the
    threshold (uncapped) where Adam did: a null that means the target is not met."""
    ratios, reasons, unreached = {}, {}, []
    for task, result in section["tasks"].items():
        prefix = "" if task == section["primary"] else f"{task}_"
        r, why, missed = _task_ratios(result, thresholds)
        ratios.update({prefix + k: v for k, v in r.items()})
        reasons.update({prefix + k: v for k, v in why.items()})
        unreached += sorted(f"convergence.{prefix}{k}" for k in missed)
    return ratios, reasons, unreached


def _task_ratios(result: dict, thresholds) -> tuple[dict, dict, set]:
    ratios, reasons, unreached = {}, {}, set()
    per = result["optimizers"]
    adam = per.get("adam", {})
    task = result["setting"]["task"]
    for label, summary in per.items():
        if label == "adam":
            continue
        key = LABEL_KEYS.get(label, label.replace("-", "_"))
        for p in thresholds:
            for what in ("steps", "modeled_time"):
                name = f"{key}_{what}_to_{p}_over_adam"
                ours, base = summary.get(f"median_{what}_to_{p}"), adam.get(f"median_{what}_to_{p}")
                if "error" in summary:
                    reasons[name] = f"{label} failed: {summary['error']}"
                elif not adam or "error" in adam:
                    reasons[name] = f"adam failed: {adam.get('error', 'not run')}"
                elif base is None:
                    reasons[name] = f"Adam's median seed does not reach {p}% within {_steps_text(adam)} on {task}"
                    if ours is not None and what == "steps":
                        total = max(s["steps"] for s in adam["seeds"])
                        reasons[name] += (f"; {label} does, in {ours:.0f} steps (so the ratio is below "
                                          f"{ours / total:.2g})")
                elif ours is None:
                    reasons[name] = (f"{label}'s median seed does not reach {p}% within {_steps_text(summary)} "
                                     f"on {task} (Adam: {adam[f'median_steps_to_{p}']:.0f} steps)")
                    if not summary.get("cap_steps"):
                        unreached.add(name)
                ratios[name] = None if name in reasons else ours / base
    return ratios, reasons, unreached


def _steps_text(summary: dict) -> str:
    steps = max((s["steps"] for s in summary.get("seeds", [])), default=0)
    return f"{steps} steps" + (" (capped)" if summary.get("cap_steps") else "")


# ==================================================================================================
# Assembly: keys, targets, report
# ==================================================================================================


def assemble(sections: dict, errors: dict, meta: dict) -> dict:
    ratios, ratios_median, reasons = {}, {}, {}
    memory, convergence = {}, {}

    ou = sections.get("ou") or {}
    ratios["ou_exact_over_thermox"] = ou.get("ratio_min")
    ratios_median["ou_exact_over_thermox"] = ou.get("ratio_median")
    if ou.get("ratio_min") is None:
        reasons["ratios.ou_exact_over_thermox"] = ou.get("reason") or _why(errors, "ou", "section not run")
    steps = sections.get("steps")
    for name in bench_tngd.ALL[1:]:
        key = f"{name}_step_over_adam"
        if steps and key in steps["ratios"]:
            ratios[key], ratios_median[key] = steps["ratios_min"][key], steps["ratios"][key]
        else:
            ratios[key] = ratios_median[key] = None
            reasons[f"ratios.{key}"] = _why(errors, "steps", f"{name} not in this run's step section (--quick "
                                                             "times a subset)")
    kfac = sections.get("kfac")
    for name in KFAC_RATIOS:
        key = f"{name}_step_over_adam"
        if kfac and key in kfac["ratios"]:
            ratios[key], ratios_median[key] = kfac["ratios_min"][key], kfac["ratios"][key]
        else:
            ratios[key] = ratios_median[key] = None
            reasons[f"ratios.{key}"] = _why(errors, "kfac", f"{name} not timed in this run (--quick times Adam and "
                                                            "thermodynamic K-FAC only)")
    import bench_kfac_jax

    kj = sections.get("kfac_jax")
    for key in bench_kfac_jax.RATIO_KEYS:
        ratios[key] = kj["ratios"].get(key) if kj else None
        ratios_median[key] = kj["ratios_median"].get(key) if kj else None
        if ratios[key] is None:
            reasons[f"ratios.{key}"] = (kj["reason"] or "not measured in this run (--quick: refresh 10 only)"
                                        if kj else _why(errors, "kfac_jax", ""))

    sharded = sections.get("sharding") or {}
    for name in ("adam", "kfac", "thermo_kfac"):
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
        convergence, conv_reasons, unreached = convergence_ratios(conv)
        reasons.update({f"convergence.{k}": v for k, v in conv_reasons.items()})
    else:
        unreached = []
    for key in ("tngd_steps_to_90_over_adam", "thermo_kfac_steps_to_90_over_adam", "tngd_steps_to_95_over_adam",
                "thermo_kfac_steps_to_95_over_adam"):
        if key not in convergence:
            convergence[key] = None
            reasons.setdefault(f"convergence.{key}", _why(errors, "convergence", "section not run"))

    out = {"schema": SCHEMA, "meta": meta, "ratios": ratios, "ratios_median": ratios_median,
           "convergence": convergence, "memory": memory, "reasons": reasons, "unreached": unreached,
           "errors": errors}
    out["targets"] = targets(out)
    out["sections"] = sections
    return out


def _why(errors: dict, section: str, default: str) -> str:
    if section in errors:
        return f"section {section!r} failed: {errors[section]['error']}"
    if errors.get("_skipped", {}).get(section):
        return f"section {section!r} not run ({errors['_skipped'][section]})"
    return default


def lookup(bench: dict, dotted: str):
    group, key = dotted.split(".", 1)
    return bench.get(group, {}).get(key)


def targets(bench: dict) -> dict:
    out = {}
    for name, (key, bound) in TARGETS.items():
        value = lookup(bench, key)
        if key == "ratios.ou_exact_over_thermox":  # ours >= thermox in speed: time ratio <= 1
            text = f"{key} <= {bound:g} (ours at least as fast)"
        else:
            text = f"{key} <= {bound:g}"
        met = None if value is None else bool(value <= bound)
        if value is None and key in bench.get("unreached", []):
            met = False  # Adam reached the threshold, the optimizer did not in the whole run
        entry = {"target": text, "value": value, "met": met}
        if key.startswith("ratios."):
            median = bench["ratios_median"].get(key.split(".", 1)[1])
            entry["value_of_medians"] = median
            entry["met_by_medians"] = None if median is None else bool(median <= bound)
        if key == "memory.tngd_n1e6_peak_gib":
            rss = bench["memory"].get("tngd_n1e6_rss_peak_gib")
            entry["rss_peak_gib"] = rss
            if value is not None and rss is not None:
                entry["met"] = bool(max(value, rss) <= bound)
        if value is None:
            entry["reason"] = bench["reasons"].get(key)
        out[name] = entry
    return out


def _yes_no(met) -> str:
    return "n/a" if met is None else ("**met**" if met else "not met")


def report(bench: dict) -> str:
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
    ]
    rows = []
    for name, t in bench["targets"].items():
        value = fmt(t["value"], ".3g")
        if "value_of_medians" in t:
            value += f" ({fmt(t['value_of_medians'], '.3g')})"
        if name == "tngd_n1e6_memory_fits_24_gib" and t.get("rss_peak_gib") is not None:
            value += f" GiB XLA; {t['rss_peak_gib']:.2f} GiB peak RSS"
        rows.append([name, f"`{t['target']}`", value, _yes_no(t["met"]), t.get("reason") or ""])
    lines += [markdown_table(["target", "condition", "value", "met", "reason / note"], rows), ""]

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

    ou = sections.get("ou")
    if ou:
        import bench_ou

        lines += ["## 1. OU simulation (scripts/bench_ou.py)", "", bench_ou.report(ou["raw"]), ""]
    steps = sections.get("steps")
    if steps:
        s = steps["setting"]
        lines += [f"## 2. Optimizer step cost: {s['model']} ({s['parameters']:,} parameters), batch {s['batch']}, "
                  f"{s['repeats']} interleaved repeats", "", bench_tngd.table(steps), "",
                  f"Not run: {'; '.join(f'{k}: {v}' for k, v in steps['skipped'].items())}. Memory: XLA "
                  "memory_analysis() of the compiled step (arguments + outputs + temporaries).", ""]
    kfac = sections.get("kfac")
    if kfac:
        s = kfac["setting"]
        adam = kfac["results"]["adam"]
        rows = [[r["optimizer"], f"{1e3 * r['step_s']:.1f} ({1e3 * r['step_min_s']:.1f})",
                 f"{r['step_s'] / adam['step_s']:.1f} ({r['step_min_s'] / adam['step_min_s']:.1f})",
                 fmt(r["model_calls_last_step"], ".0f"), fmt(r["modeled_time_s_last_step"], ".3g"),
                 fmt(None if r["peak_bytes"] is None else r["peak_bytes"] / 2**20, ".0f")]
                for r in kfac["results"].values()]
        lines += [f"### K-FAC: {s['model']} ({s['parameters']:,} parameters), batch {s['batch']}, refresh every "
                  f"{s['period']} steps, {s['rounds']} interleaved rounds of one period", "",
                  markdown_table(["optimizer", "ms/step: median (min)", "x Adam: median (min)",
                                  "model calls (last step)", "modeled s (last step)", "XLA peak MiB"], rows), ""]
    scaling = sections.get("scaling")
    if scaling:
        lines += [scaling_report(scaling), ""]
    mem = sections.get("memory")
    if mem:
        s, xla, rss = mem["setting"], mem["xla"] or {}, mem.get("rss") or {}
        lines += [f"## Memory: TNGD, {s['model']} ({s['n_params']:,} parameters), batch {s['batch']}, "
                  f"b dz = {s['b_dz']}", "",
                  markdown_table(["measure", "GiB"], [
                      ["XLA peak of the compiled step (args + outputs + temporaries)",
                       fmt(xla.get("peak_bytes", 0) / GIB, ".3f")],
                      ["XLA temporaries", fmt(xla.get("temp", 0) / GIB, ".3f")],
                      ["process peak RSS during one step (fresh subprocess)",
                       fmt(None if rss.get("rss_peak_bytes") is None else rss["rss_peak_bytes"] / GIB, ".3f")],
                      ["RSS growth during the step",
                       fmt(None if rss.get("rss_growth_bytes") is None else rss["rss_growth_bytes"] / GIB, ".3f")],
                  ]), "" if not mem.get("rss_reason") else f"\nRSS not measured: {mem['rss_reason']}", ""]
    kj = sections.get("kfac_jax")
    if kj:
        import bench_kfac_jax

        lines += ["## 4. K-FAC against kfac-jax (scripts/bench_kfac_jax.py)", "", bench_kfac_jax.report(kj), ""]
    sharded = sections.get("sharding")
    if sharded:
        import bench_sharding

        lines += ["## Data parallelism: 4 host devices over 1 (scripts/bench_sharding.py)", "",
                  bench_sharding.report(sharded), ""]
    conv = sections.get("convergence")
    if conv:
        lines += [convergence_report(conv), ""]
    return "\n".join(lines)


def scaling_report(scaling: dict) -> str:
    s = scaling["setting"]
    names = ["adam", "tngd", "ngd", "ngd_cg", "ngd_woodbury"]
    header = ["N"] + [f"{n} wall ms" for n in names] + [f"{n} modeled s" for n in names[1:]]
    rows = []
    skipped: dict[str, list] = {}  # optimizer: [(N, reason), ...]
    for row in scaling["rows"]:
        cells = [f"{row['n_params']:,}"]
        for n in names:
            o = row["optimizers"].get(n)
            cells.append(ms(o["wall_s"], 1) if o else "skipped")
        for n in names[1:]:
            o = row["optimizers"].get(n)
            cells.append(f"{o['modeled_time_s']:.3g}" if o else "skipped")
        rows.append(cells)
        for n, why in row["skipped"].items():
            skipped.setdefault(n, []).append((row["n_params"], why))
    notes = [f"{n} at N = {', '.join(f'{N:,}' for N, _ in entries)}: {entries[0][1]}"
             for n, entries in skipped.items()]
    return "\n".join([
        f"## 3. Scaling: {s['model']}, batch {s['batch']}, dz = {s['dz']}, CG c = {s['cg_iterations']}; "
        f"wall = median (min) of {s['repeats']} interleaved calls, ms per step; modeled = {s['modeled']}", "",
        markdown_table(header, rows), "", *(f"Skipped: {note}" for note in notes)])


def convergence_report(conv: dict) -> str:
    parts = []
    for task, result in conv["tasks"].items():
        s = result["setting"]
        rows = []
        for label, summary in result["optimizers"].items():
            if "error" in summary:
                rows.append([label, "failed", "", "", "", "", "", summary["error"][:160]])
                continue
            best = [x["best_test_accuracy"] for x in summary["seeds"]]
            n = len(summary["seeds"])
            rows.append([
                label, n, f"{statistics.median(best):.3f}",
                *(f"{fmt(summary[f'median_steps_to_{p}'], '.0f')} ({summary[f'seeds_reaching_{p}']}/{n})"
                  for p in ("90", "95")),
                *(fmt(summary[f"median_modeled_time_to_{p}"], ".3g") for p in ("90", "95")),
                ", ".join(summary["runner"]) + (f"; capped at {summary['cap_steps']} steps" if summary["cap_steps"]
                                                else ""),
            ])
        title = "primary" if task == conv["primary"] else "secondary"
        parts += [f"## 5. Convergence ({title}): {task}, {s['seeds']} seeds (median), evaluated every "
                  f"{s['eval_every']} steps", "", s["note"] + f"; run directories in {s['runs_dir']}.", "",
                  markdown_table(["optimizer", "seeds", "best acc. (median)", "steps to 90% (seeds)",
                                  "steps to 95% (seeds)", "modeled s to 90%", "modeled s to 95%", "how"], rows), ""]
    for name, why in conv.get("skipped", {}).items():
        parts.append(f"Not run: {name}: {why}.")
    return "\n".join(parts)


# ==================================================================================================
# Main
# ==================================================================================================


def git_sha() -> str | None:
    try:
        sha = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                             check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain"], cwd=ROOT, capture_output=True, text=True,
                               check=True).stdout.strip()
        return sha + ("-dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return None


def run_sections(args) -> tuple[dict, dict]:
    wanted = [s for s in (args.only.split(",") if args.only else SECTIONS) if s not in set(args.skip.split(","))]
    unknown = set(wanted) - set(SECTIONS)
    if unknown:
        raise SystemExit(f"unknown sections {sorted(unknown)}; choose from {SECTIONS}")
    data_dir = args.data_dir or (str(MNIST_DIR) if MNIST_DIR.exists() else None)
    jobs = {
        "ou": lambda: section_ou(args.quick, cache_dir=args.cache_dir),
        "steps": lambda: section_steps(args.quick),
        "kfac": lambda: section_kfac(args.quick),
        "scaling": lambda: section_scaling(args.quick),
        "memory": lambda: section_memory(args.quick),
        "kfac_jax": lambda: section_kfac_jax(args.quick, cache_dir=args.cache_dir),
        "sharding": lambda: section_sharding(args.quick),
        "convergence": lambda: section_convergence(args.quick, data_dir=data_dir, seeds=args.seeds,
                                                   runs_dir=args.runs_dir),
    }
    sections, errors = {}, {"_skipped": {s: "not selected (--only/--skip)" for s in SECTIONS if s not in wanted}}
    if args.quick and not args.only:
        for name in FULL_RUN_ONLY:
            if name in wanted:
                wanted.remove(name)
                errors["_skipped"][name] = FULL_RUN_ONLY[name]
    if not args.quick and data_dir is None and "convergence" in wanted:
        errors["_skipped"]["convergence"] = f"MNIST not found at {MNIST_DIR} and no --data-dir"
        wanted.remove("convergence")
    for name in wanted:
        log(f"[{name}] ...")
        start = time.perf_counter()
        try:
            sections[name] = jobs[name]()
            sections[name]["elapsed_s"] = time.perf_counter() - start
        except Exception as error:  # noqa: BLE001 - a failing section is reported, the others still run
            errors[name] = {"error": f"{type(error).__name__}: {error}", "traceback": traceback.format_exc()}
            log(f"[{name}] failed: {error}")
        log(f"[{name}] done in {time.perf_counter() - start:.0f} s")
    if not errors["_skipped"]:
        del errors["_skipped"]
    return sections, errors


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true",
                        help="under 5 minutes on 2 cores: fewer sizes, repeats and optimizers; digits convergence")
    parser.add_argument("--out", default="bench.json", help="JSON results (default bench.json)")
    parser.add_argument("--report", default="bench.md", help="markdown report (default bench.md); "
                        "BENCHMARKS.md at the repo root holds the latest full report")
    parser.add_argument("--only", default="", help=f"comma-separated sections to run, of {','.join(SECTIONS)}")
    parser.add_argument("--skip", default="", help="comma-separated sections to leave out")
    parser.add_argument("--data-dir", default=None, help=f"MNIST IDX directory (default {MNIST_DIR} if present)")
    parser.add_argument("--seeds", type=int, default=3, help="convergence seeds (default 3)")
    parser.add_argument("--runs-dir", default=str(ROOT / "runs" / "bench"),
                        help="convergence run directories (finished runs are reused)")
    parser.add_argument("--cache-dir", default=None,
                        help="where the public thermox's and kfac-jax's virtual environments are kept")
    parser.add_argument("--memory-probe", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.memory_probe is not None:
        print(json.dumps(memory_probe(**json.loads(args.memory_probe))))
        return 0

    started = time.perf_counter()
    given = sys.argv[1:] if argv is None else argv
    command = "python " + " ".join(shlex.quote(a) for a in ["scripts/bench.py", *given])
    meta = {"date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "command": command, "git_sha": git_sha(), "quick": args.quick, "machine": _timing.machine(),
            "load_avg_start": _timing.load_average(),
            "openblas_num_threads": os.environ.get("OPENBLAS_NUM_THREADS")}
    sections, errors = run_sections(args)
    meta["load_avg_end"] = _timing.load_average()
    meta["elapsed_s"] = time.perf_counter() - started
    bench = assemble(sections, errors, meta)
    pathlib.Path(args.out).write_text(json.dumps(bench, indent=2, default=str) + "\n")
    text = report(bench)
    pathlib.Path(args.report).write_text(text + "\n")
    print(text)
    print(f"\nwrote {args.out} and {args.report} in {meta['elapsed_s']:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
