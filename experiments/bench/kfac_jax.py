"""Step time of our K-FAC and thermodynamic K-FAC against DeepMind's ``kfac-jax``, measured in one run.

    python scripts/bench_kfac_jax.py [--quick] [--rounds N] [--out bench_kfac_jax.json] [--cache-dir DIR]

The problem (both sides, ``workers/kfac_jax_problem.py``): an MLP 784-1024-1024-10 with ReLU (the same plain-JAX
function and the same float32 initial parameters on both sides), one batch of 512 standard-normal inputs with
random labels out of 10, softmax cross-entropy, learning rate 1e-3, damping 1e-3, curvature and inverse refresh
every 1 and every 10 steps.

- Ours (this environment): ``kfac_thermo.kfac`` and ``kfac_thermo.thermo_kfac(method="solve", t=1e3)`` on the
  ideal device, as in experiments.bench.kfac (factored damping, EMA 0.95, no momentum), with
  ``curvature_period = inverse_period = `` the refresh period, in the benchmarks' jit-compiled train step
  (experiments.bench.problems.cross_entropy_step) donating the parameters and state; the factors estimated as
  kfac-jax's mode they are compared with (``OUR_CURVATURE``).
- kfac-jax (its own virtual environment, created once under the cache directory, where
  ``workers/kfac_jax_worker.py`` runs as a worker subprocess): ``kfac_jax.Optimizer`` on the same function, its
  layers found by its automatic registration (the run fails if any of the three dense layers is not given a
  Kronecker-factored dense block), the loss registered with ``register_softmax_cross_entropy_loss``, its own
  ``jax.value_and_grad``, ``use_adaptive_learning_rate/momentum/damping=False`` with learning rate 1e-3, momentum
  0 and damping 1e-3 passed to ``step`` (with ``global_step_int``, so no step-counter sync), factored (pi)
  damping, EMA 0.95, ``curvature_update_period = inverse_update_period = `` the refresh period, no burn-in. Two
  estimation modes, each against ours with the same estimator: ``ggn_curvature_prop`` (its default and the
  headline: one Rademacher-weighted reverse pass per curvature refresh, an unbiased estimate of the GGN factors;
  ours ``curvature="ggn_curvature_prop"``) and ``ggn_exact`` (the exact GGN factors from all 10 loss-Hessian
  square-root columns; ours ``curvature="ggn"``, the same factors from its 9 reverse passes).
- ``optax.adam(1e-3)`` in both environments: the normaliser.

Protocol: every optimizer is compiled and run for WARM_ROUNDS rounds before timing (compilation excluded). Then
rounds are interleaved (ours, theirs, ours, ...; a pause of PAUSE_S before each lets the other process's XLA threads
go quiet), each round running one whole refresh period of consecutive steps (1 or 10; Adam: ADAM_STEPS) from the
carried parameters and state and ending on ``block_until_ready``, timed inside the process that runs it (the
worker round trip is not timed). Each round gives wall and CPU time per step (CPU: the process's own
``time.process_time``, all its threads: less sensitive to other jobs on a shared machine); each case keeps the
median and the minimum over rounds (15; ``--quick``: 5, and kfac-jax's headline mode only). Ratios are ours over
kfac-jax (lower is better), raw and normalised by each environment's own Adam, ``(ours / our Adam) / (kfac-jax /
its Adam)``. The headline (``ratios``, and ``kfac_step_over_kfac_jax`` / ``thermo_kfac_step_over_kfac_jax`` in
bench.json) is the raw ratio of minimum wall times per step at refresh 10 against ``ggn_curvature_prop``:
what a user switching from kfac-jax to ours gets on this machine, jax versions included (kfac-jax cannot run on
ours), and the minimum as the suite's least load-contaminated estimate; ``ratios_median`` holds the medians. The
normalised ratio separates the implementations from the two jax/XLA versions: where it differs from the raw one,
the jax versions account for the difference.

kfac-jax 0.0.8 (the newest) fails on jax 0.9.2 and 0.10.2 in its own graph matcher (``ValueError: too many
values to unpack`` from ``Primitive.get_bind_params``), so its environment pins jax and jaxlib 0.8.3 (the newest
0.8 release; if that pin cannot be installed, whatever pip resolves below 0.9, recorded in the results).
OPENBLAS_NUM_THREADS=1 in both processes (the worker inherits it): LAPACK's own threads fight XLA's thread pool
for the cores (experiments.bench.kfac). float32 throughout.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path
from typing import Callable

import jax
import optax

from . import problems
from .tables import fmt, markdown_table, ms
from .venv import DEFAULT_CACHE_DIR, WORKERS, Unavailable, cached_venv, start_worker
from .workers.clock import interleaved, summary
from .workers.kfac_jax_problem import (
    ADAM_STEPS, BATCH, DAMPING, EMA_DECAY, LEARNING_RATE, SIZES, Training, case, init_params, make_batch, predict,
)
from .workers.protocol import package_versions

jax.config.update("jax_enable_x64", False)

SCHEMA = "bench_kfac_jax/1"
THERMO_T = 1e3
PERIODS = (1, 10)
HEADLINE_PERIOD = 10  # the setting; bench.json's un-suffixed keys
PAUSE_S = 0.2
KFAC_JAX_VERSION, KFAC_JAX_JAX_VERSION = "0.0.8", "0.8.3"
KFAC_JAX_MODES = ("ggn_curvature_prop", "ggn_exact")
HEADLINE_MODE = "ggn_curvature_prop"
OUR_CURVATURE = {"ggn_curvature_prop": "ggn_curvature_prop", "ggn_exact": "ggn"}  # kfac-jax mode: ours
OURS = ("kfac", "thermo_kfac")


def kfac_jax_python(cache_dir: Path) -> Path:
    """The interpreter of the kfac-jax environment (created under ``cache_dir`` if missing)."""
    pinned = [f"kfac-jax=={KFAC_JAX_VERSION}", f"jax=={KFAC_JAX_JAX_VERSION}", f"jaxlib=={KFAC_JAX_JAX_VERSION}"]
    resolved = [f"kfac-jax=={KFAC_JAX_VERSION}", "jax<0.9", "jaxlib<0.9"]
    venv = cache_dir / f"bench-venv-kfac-jax-{KFAC_JAX_VERSION}-jax-{KFAC_JAX_JAX_VERSION}"
    return cached_venv(venv, "import kfac_jax", lambda: [pinned, resolved])


def versions(*packages: str) -> dict:
    """This environment's Python version and the installed version of each package."""
    return {"python": platform.python_version(), **package_versions(*packages)}


def our_training(optimizer: optax.GradientTransformation, steps: int) -> Training:
    """``optimizer`` on the problem in the benchmarks' train step, from its own (donated) initial parameters."""
    params, batch = init_params(), make_batch()
    step = problems.cross_entropy_step(optimizer, predict, donate=True)
    return Training(lambda params, state, count: step(params, state, *batch), params, optimizer.init(params), steps)


def our_trainings(periods: tuple[int, ...], modes: tuple[str, ...]) -> dict[str, Training]:
    """Adam, K-FAC and thermodynamic K-FAC (ideal device, ``method="solve"``) per refresh period and kfac-jax
    estimation mode (ours with the matching curvature, ``OUR_CURVATURE``), here."""
    import kfac_thermo

    example_inputs = make_batch()[0]
    trainings = {"adam": our_training(optax.adam(LEARNING_RATE), ADAM_STEPS)}
    for period in periods:
        for mode in modes:
            common = dict(predict_fn=predict, loss="softmax_cross_entropy", damping=DAMPING, ema_decay=EMA_DECAY,
                          example_inputs=example_inputs, curvature_period=period, inverse_period=period,
                          curvature=OUR_CURVATURE[mode], key=jax.random.key(1))
            trainings[case("kfac", period, mode)] = our_training(kfac_thermo.kfac(LEARNING_RATE, **common), period)
            trainings[case("thermo_kfac", period, mode)] = our_training(
                kfac_thermo.thermo_kfac(LEARNING_RATE, method="solve", t=THERMO_T, **common), period)
    return trainings


def ratio_keys(period: int) -> dict[str, str]:
    """bench.json's key for each of ours at ``period`` (un-suffixed at HEADLINE_PERIOD)."""
    suffix = "" if period == HEADLINE_PERIOD else f"_refresh{period}"
    return {name: f"{name}_step_over_kfac_jax{suffix}" for name in OURS}


RATIO_KEYS = tuple(key for period in PERIODS for key in ratio_keys(period).values())


def skipped(reason: str, periods: tuple[int, ...] = PERIODS) -> dict:
    """The result when kfac-jax could not run: every ratio None, with the reason."""
    keys = [key for period in periods for key in ratio_keys(period).values()]
    return {"schema": SCHEMA, "reason": reason, "ratios": dict.fromkeys(keys), "ratios_median": dict.fromkeys(keys),
            **{key: None for key in ratio_keys(HEADLINE_PERIOD).values()}, "periods": {}}


def quotient(a: float | None, b: float | None) -> float | None:
    """``a / b``, None when either is missing (or b is 0)."""
    return None if a is None or not b else a / b


def compare(ours: dict, theirs: dict, adam_ours: dict, adam_theirs: dict) -> dict:
    """Ours over kfac-jax from the per-case summaries ``{"wall": summary, "cpu": summary}``: raw and normalised."""
    out = {}
    for clock in ("wall", "cpu"):
        for stat in ("median_s", "min_s"):
            raw = quotient(ours[clock][stat], theirs[clock][stat])
            adams = quotient(adam_ours[clock][stat], adam_theirs[clock][stat])
            out[f"{clock}_{stat[:-2]}"] = raw
            out[f"{clock}_{stat[:-2]}_normalised"] = quotient(raw, adams)
    return out


def summarise(times: dict[str, list[tuple[float, float]]], first_round_s: dict[str, float],
              periods: tuple[int, ...], modes: tuple[str, ...]) -> dict:
    """Per-case summaries and the ratios, from the interleaved ``(wall, cpu)`` rounds of each case.

    Case names: ``"adam"`` / ``"kfac_jax adam"`` (the two environments' Adam) and :func:`case` names.
    """
    cases = {name: {"wall": summary([t[0] for t in rounds], first_round_s.get(name)),
                    "cpu": summary([t[1] for t in rounds])} for name, rounds in times.items()}
    adam_ours, adam_theirs = cases["adam"], cases["kfac_jax adam"]
    result = {"cases": cases, "periods": {}, "ratios": {}, "ratios_median": {}}
    for period in periods:
        entry = {}
        for name, key in ratio_keys(period).items():
            entry[name] = {mode: compare(cases[case(name, period, mode)], cases[case("kfac_jax", period, mode)],
                                         adam_ours, adam_theirs) for mode in modes}
            headline = entry[name].get(HEADLINE_MODE, {})
            result["ratios"][key] = headline.get("wall_min")
            result["ratios_median"][key] = headline.get("wall_median")
        result["periods"][str(period)] = entry
    result.update({key: result["ratios"][key] for key in ratio_keys(HEADLINE_PERIOD).values()})
    return result


def kfac_jax_ratio(quick: bool, *, cache_dir: Path = DEFAULT_CACHE_DIR, rounds: int | None = None,
                   periods: tuple[int, ...] = PERIODS, modes: tuple[str, ...] | None = None) -> dict:
    """Time ours and kfac-jax interleaved (module docstring); the results, with ratios ours / kfac-jax.

    Returns ``kfac_step_over_kfac_jax`` and ``thermo_kfac_step_over_kfac_jax`` (refresh 10, raw ratio of minimum
    wall times against ``ggn_curvature_prop``; None when kfac-jax could not run, with ``reason``), the same keys
    and their ``_refresh1`` versions under ``ratios`` (of minima) and ``ratios_median``, and ``periods``,
    ``cases``, ``versions`` and ``setting`` with everything measured. ``quick``: 5 rounds instead of 15, and
    kfac-jax's headline estimation mode only (``modes`` defaults to both otherwise).
    """
    started = time.perf_counter()
    rounds = rounds or (5 if quick else 15)
    modes = modes or ((HEADLINE_MODE,) if quick else KFAC_JAX_MODES)
    worker, kfac_jax = start_worker(lambda: kfac_jax_python(Path(cache_dir)), WORKERS / "kfac_jax_worker.py",
                                    "kfac-jax")
    if worker is None:
        return skipped(f"kfac-jax {KFAC_JAX_VERSION} could not run in its own environment: {kfac_jax['reason']}",
                       periods)
    try:
        print(f"  compiling ours and kfac-jax {kfac_jax['kfac-jax']} (jax {kfac_jax['jax']})", flush=True)
        setup = worker.call("setup", periods=list(periods), modes=list(modes))
        ours = our_trainings(periods, modes)
        first_round_s = {name: training.warm() for name, training in ours.items()}
        first_round_s.update(setup["first_round_s"])
        theirs = lambda name: lambda seed: tuple(worker.call("run", name=name)["times"])
        runners: dict[str, Callable[[int], tuple[float, float]]] = {
            "adam": lambda seed: ours["adam"](), "kfac_jax adam": theirs("kfac_jax adam")}
        for period in periods:
            for mode in modes:
                for name in OURS:
                    runners[case(name, period, mode)] = lambda seed, n=case(name, period, mode): ours[n]()
                runners[case("kfac_jax", period, mode)] = theirs(case("kfac_jax", period, mode))
        load_start = os.getloadavg()[0]
        times = interleaved(runners, rounds, pause_s=PAUSE_S)
    except Unavailable as error:
        return skipped(f"kfac-jax {KFAC_JAX_VERSION} stopped during the run: {error}", periods)
    finally:
        worker.close()
    result = {"schema": SCHEMA, "reason": None, **summarise(times, first_round_s, periods, modes)}
    result["versions"] = {"ours": versions("jax", "jaxlib", "optax"), "kfac_jax": kfac_jax}
    result["blocks"] = setup["blocks"]
    result["setting"] = {
        "model": "MLP " + "-".join(map(str, SIZES)) + " (ReLU)", "batch": BATCH, "dtype": "float32",
        "learning_rate": LEARNING_RATE, "damping": DAMPING, "ema_decay": EMA_DECAY, "thermo_kfac_t": THERMO_T,
        "periods": list(periods), "kfac_jax_modes": list(modes), "headline_mode": HEADLINE_MODE,
        "headline_period": HEADLINE_PERIOD, "rounds": rounds, "adam_steps_per_round": ADAM_STEPS,
        "pause_s": PAUSE_S, "quick": quick, "cpu_count": os.cpu_count(), "machine": platform.machine(),
        "openblas_num_threads": os.environ.get("OPENBLAS_NUM_THREADS"),
        "load_avg_1min": [load_start, os.getloadavg()[0]], "elapsed_s": time.perf_counter() - started,
    }
    return result


def section(quick: bool, cache_dir=None) -> dict:
    """The suite's ``kfac_jax`` section: :func:`kfac_jax_ratio`'s ``ratios`` (of minima), ``ratios_median`` and
    ``reason`` (None, or why kfac-jax could not run), per refresh period; its environment is kept under
    ``cache_dir``. ``quick``: 2 interleaved rounds (this module's own --quick: 5) at refresh 10 only."""
    options = {} if cache_dir is None else {"cache_dir": Path(cache_dir)}
    if quick:
        options.update(rounds=2, periods=(HEADLINE_PERIOD,))
    return kfac_jax_ratio(quick, **options)


# --------------------------------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------------------------------


def report(result: dict) -> str:
    """Markdown: the time of every case and the ratios ours / kfac-jax (or why they are missing)."""
    if result.get("reason"):
        return f"kfac-jax comparison not run: {result['reason']}"
    s, versions, cases = result["setting"], result["versions"], result["cases"]
    adams = {"adam": cases["adam"], "kfac_jax adam": cases["kfac_jax adam"]}

    def x_adam(name: str) -> str:
        """The case's median wall time over its own environment's Adam."""
        adam = adams["kfac_jax adam" if name.startswith("kfac_jax") else "adam"]
        return fmt(quotient(cases[name]["wall"]["median_s"], adam["wall"]["median_s"]))

    times = markdown_table(
        ["case", "wall ms/step", "CPU ms/step", "x own Adam (wall medians)"],
        [[name, ms(c["wall"], 1), ms(c["cpu"], 1), x_adam(name)] for name, c in cases.items()])
    rows = []
    for period, entry in result["periods"].items():
        for name, by_mode in entry.items():
            for mode, r in by_mode.items():
                headline = mode == s["headline_mode"] and period == str(s["headline_period"])
                rows.append([period, name, mode + (" (headline)" if headline else ""),
                             fmt(r["wall_min"]), fmt(r["wall_median"]), fmt(r["cpu_median"]),
                             fmt(r["wall_min_normalised"]), fmt(r["wall_median_normalised"]),
                             fmt(r["cpu_median_normalised"])])
    ratios = markdown_table(["refresh", "ours", "kfac-jax estimation_mode", "wall (min)", "wall (median)",
                             "CPU (median)", "norm. wall (min)", "norm. wall (median)", "norm. CPU (median)"], rows)
    ours, theirs = versions["ours"], versions["kfac_jax"]
    return "\n".join([
        f"{s['model']}, batch {s['batch']}, {s['dtype']}, lr {s['learning_rate']:g}, damping {s['damping']:g}; "
        f"ours: jax {ours['jax']}, kfac-jax {theirs['kfac-jax']}: jax {theirs['jax']} (its own environment); "
        f"{s['rounds']} interleaved rounds of one refresh period ({s['adam_steps_per_round']} steps for Adam), "
        "ms per step: median (min); "
        f"1-min load average {s['load_avg_1min'][0]:.1f} at start, {s['load_avg_1min'][1]:.1f} at end "
        f"({s['cpu_count']} CPUs)",
        "",
        times,
        "",
        "Ours / kfac-jax (lower is better); normalised: (ours / our Adam) / (kfac-jax / its Adam). Headline: raw "
        f"wall of minima at refresh {s['headline_period']} against {s['headline_mode']}.",
        "",
        ratios,
    ])


def markdown(result: dict) -> str:
    """The suite report's section: :func:`report` under its title."""
    return "\n".join(["## 4. K-FAC against kfac-jax (scripts/bench_kfac_jax.py)", "", report(result)])


def main(argv: list[str] | None = None) -> int:
    """The command line (module docstring); exit status 1 when kfac-jax could not run."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="5 rounds instead of 15, kfac-jax's default estimation mode only")
    parser.add_argument("--rounds", type=int, default=None, help="interleaved timed rounds")
    parser.add_argument("--out", default="bench_kfac_jax.json", help="JSON results (default bench_kfac_jax.json)")
    parser.add_argument("--cache-dir", type=Path, default=DEFAULT_CACHE_DIR,
                        help="where kfac-jax's virtual environment is kept")
    args = parser.parse_args(argv)
    result = kfac_jax_ratio(args.quick, cache_dir=args.cache_dir, rounds=args.rounds)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(report(result))
    print(f"\nwrote {args.out}")
    return 0 if result["reason"] is None else 1
