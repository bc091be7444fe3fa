"""Benchmark exact OU path sampling: our ``thermox.sample_path`` against the public PyPI ``thermox``.

    python scripts/bench_ou.py [--quick] [--out bench_ou.json] [--repeats N] [--cache-dir DIR]

The process, in our convention (time in units of tau):

    dx = -(A x - b) ds + sqrt(2 kappa0) dW,

is, in the public package's convention ``dx = -A (x - b') dt + sqrt(D) dW``, the same process with
``b = A b'`` and ``D = 2 kappa0 I``. Both packages are imported as ``thermox``, so the public one runs in
its own virtual environment (created on demand under the cache directory) as a worker subprocess
(``workers/thermox_worker.py``) that this module drives over stdin/stdout; the timed calls alternate (ours,
theirs, ours, theirs, ...) so both see the same machine state. All timings are float32 (JAX's default dtype),
jit-compiled, warmed up, the median of several repeats with ``block_until_ready``.

Sections:
  1. path sampling, d = 10, 100, 400 with 1,000 time points, ours vs public thermox (its default
     ``associative_scan=True`` and its sequential ``lax.scan``), and a check that both give the same law;
  2. our ``thermox.evolve`` final-state readout: diffrax Euler-Maruyama vs the exact path;
  3. our ``thermox.evolve``: Krylov (Lanczos) vs dense exact (eigh) at growing d.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from .tables import fmt, markdown_table, ms
from .venv import DEFAULT_CACHE_DIR, WORKERS, Worker, cached_venv, latest_version, start_worker
from .workers.clock import interleaved as _interleaved
from .workers.clock import summary, timed, warm_up

jax.config.update("jax_enable_x64", False)

SCHEMA = "bench_ou/1"
NUM_TIMES = 1000
T_END = 5.0
KAPPA0 = 1.0
SPECTRUM = (0.2, 2.0)
LAW_SAMPLES = 200
LAW_MARGIN_Z = 5.0
LAW_D = 100
RATIO_D = 100
PUBLIC_VARIANTS = {"thermox": True, "thermox_scan": False}  # name -> associative_scan
PAUSE_S = 0.2  # before each timed call: lets the other process's XLA worker threads stop spinning


def ou_problem(d: int, seed: int = 0) -> dict[str, np.ndarray]:
    """A symmetric drift with eigenvalues geometrically spaced in SPECTRUM, and the path's data.

    Returns float64 arrays: ``A``, ``b_public`` (the public package's displacement ``b'``), ``b`` (our
    bias ``A b'``), ``x0``, ``ts`` (NUM_TIMES points on [0, T_END]) and ``D = 2 kappa0 I``.
    """
    rng = np.random.default_rng(seed)
    Q, _ = np.linalg.qr(rng.standard_normal((d, d)))
    A = (Q * np.geomspace(*SPECTRUM, d)) @ Q.T
    A = 0.5 * (A + A.T)
    b_public = rng.standard_normal(d)
    return {
        "A": A,
        "b_public": b_public,
        "b": A @ b_public,
        "x0": rng.standard_normal(d),
        "ts": np.linspace(0.0, T_END, NUM_TIMES),
        "D": 2.0 * KAPPA0 * np.eye(d),
    }


def key_of(seed: int):
    """A raw PRNG key (accepted by both packages)."""
    return jax.random.PRNGKey(seed)


# --------------------------------------------------------------------------------------------------
# The public package's environment
# --------------------------------------------------------------------------------------------------


def public_python(cache_dir: Path) -> Path:
    """The interpreter of a virtual environment holding the newest public thermox, created if missing.

    JAX is pinned to this environment's version so both sides run the same XLA; if that pin cannot be
    installed, the versions pip resolves are used (and recorded).
    """
    def requirements() -> list[list[str]]:
        public = f"thermox=={latest_version('thermox')}"
        return [[public, f"jax=={jax.__version__}", f"jaxlib=={jax.__version__}"], [public]]

    return cached_venv(cache_dir / "bench-venv-thermox", "import thermox; thermox.sample", requirements)


def start_public_worker(cache_dir: Path) -> tuple[Worker | None, dict]:
    """Start the worker; returns it (or None) and what is recorded about the public package."""
    return start_worker(lambda: public_python(cache_dir), WORKERS / "thermox_worker.py", "public thermox")


# --------------------------------------------------------------------------------------------------
# Benchmarks (our thermox)
# --------------------------------------------------------------------------------------------------


def interleaved(runners: dict[str, Callable[[int], float]], repeats: int) -> dict[str, list[float]]:
    """Seconds of each runner per repeat, called in turn with a pause of PAUSE_S before each call."""
    return _interleaved(runners, repeats, pause_s=PAUSE_S)


def our_path_sampler():
    import thermox

    return jax.jit(lambda key, ts, x0, A, b: thermox.sample_path(A, b, x0, key=key, ts=ts, kappa0=KAPPA0))


def as_f32(problem: dict, names: tuple[str, ...]) -> tuple:
    return tuple(jnp.asarray(problem[name], jnp.float32) for name in names)


def bench_path(d: int, worker: Worker | None, repeats: int, tmp: Path) -> dict:
    """Ours vs the public sampler on the same 1,000-point path of dimension d."""
    problem = ou_problem(d)
    ours = our_path_sampler()
    args = as_f32(problem, ("ts", "x0", "A", "b"))
    firsts = {"ours": warm_up(ours, key_of(0), *args)}
    runners = {"ours": lambda seed: timed(ours, key_of(seed), *args)}
    if worker is not None:
        path = tmp / f"problem_{d}.npz"
        np.savez(path, **problem)
        firsts.update(worker.call("load", path=str(path), variants=PUBLIC_VARIANTS)["first_call_s"])
        for variant in PUBLIC_VARIANTS:
            runners[variant] = lambda seed, v=variant: worker.call("time", variant=v, seed=seed)["seconds"]
    times = interleaved(runners, repeats)
    result = {"d": d, "num_times": NUM_TIMES}
    for name in ("ours", *PUBLIC_VARIANTS):
        result[name] = summary(times[name], firsts[name]) if name in times else None
    for name in PUBLIC_VARIANTS:
        for stat, suffix in (("median_s", ""), ("min_s", "_min")):
            result[f"ours_over_{name}{suffix}"] = (
                result["ours"][stat] / result[name][stat] if result[name] else None
            )
    return result


def exact_final_law(problem: dict) -> tuple[np.ndarray, np.ndarray]:
    """Mean and covariance of x(T_END) in float64: ``A^-1 b + e^{-AT}(x0 - A^-1 b)``, ``kappa0 A^-1 (I - e^{-2AT})``."""
    w, V = np.linalg.eigh(problem["A"])
    x_star = V @ (V.T @ problem["b"] / w)
    mean = x_star + V @ (np.exp(-w * T_END) * (V.T @ (problem["x0"] - x_star)))
    cov = (V * (KAPPA0 * -np.expm1(-2 * w * T_END) / w)) @ V.T
    return mean, cov


def law_check(worker: Worker | None, tmp: Path) -> dict:
    """Empirical mean (and covariance trace) of the final point over LAW_SAMPLES keys, ours vs public.

    Disjoint keys make the two samples independent; each statistic's z-score uses the exact covariance,
    and the check passes when every |z| < LAW_MARGIN_Z.
    """
    import thermox

    problem = ou_problem(LAW_D)
    ts, x0, A, b = as_f32(problem, ("ts", "x0", "A", "b"))
    final = jax.jit(jax.vmap(lambda key: thermox.sample_path(A, b, x0, key=key, ts=ts, kappa0=KAPPA0)[-1]))
    ours = np.asarray(final(jax.random.split(key_of(1), LAW_SAMPLES)), np.float64)
    mean, cov = exact_final_law(problem)
    n = LAW_SAMPLES
    result = {
        "d": LAW_D, "num_samples": n, "margin_abs_z": LAW_MARGIN_Z,
        "max_abs_z_ours_vs_exact_mean": float(np.max(np.abs(ours.mean(0) - mean) / np.sqrt(np.diag(cov) / n))),
    }
    checks = [result["max_abs_z_ours_vs_exact_mean"]]
    if worker is not None:
        path = tmp / "law.npz"
        np.savez(path, **problem)
        worker.call("load", path=str(path), variants=PUBLIC_VARIANTS)
        theirs = np.asarray(worker.call("final_points", seed=2, num=n)["points"])
        mean_gap = ours.mean(0) - theirs.mean(0)
        trace_gap = np.trace(np.cov(ours.T)) - np.trace(np.cov(theirs.T))
        result["max_abs_mean_diff"] = float(np.max(np.abs(mean_gap)))
        result["max_abs_z_mean_ours_vs_thermox"] = float(np.max(np.abs(mean_gap) / np.sqrt(2 * np.diag(cov) / n)))
        result["abs_z_cov_trace_ours_vs_thermox"] = float(abs(trace_gap) / np.sqrt(4 * np.sum(cov * cov) / (n - 1)))
        checks += [result["max_abs_z_mean_ours_vs_thermox"], result["abs_z_cov_trace_ours_vs_thermox"]]
    result["passed"] = bool(max(checks) < LAW_MARGIN_Z)
    return result


def evolve_readout(method: str) -> Callable:
    """jit-compiled ``thermox.evolve`` final-state readout ``(key, A, b, x0) -> x(T_END)``.

    diffrax takes NUM_TIMES - 1 Euler-Maruyama steps, as many as the path has transitions.
    """
    import thermox

    how = thermox.EulerMaruyama(dt=T_END / (NUM_TIMES - 1)) if method == "diffrax" else method
    return jax.jit(lambda key, A, b, x0: thermox.evolve(A, b, x0, key=key, t=T_END, kappa0=KAPPA0, method=how))


def bench_evolve(d: int, methods: tuple[str, str], repeats: int) -> dict:
    """Two ``thermox.evolve`` methods on the same problem, interleaved; plus their gap with the same key.

    With one key, the exact and Krylov readouts apply the same functions of A to the same noise, so
    their relative gap measures the Krylov error; diffrax draws its own Brownian path (gap not recorded).
    """
    args = as_f32(ou_problem(d), ("A", "b", "x0"))
    fns = {method: evolve_readout(method) for method in methods}
    firsts = {method: warm_up(fn, key_of(0), *args) for method, fn in fns.items()}
    runners = {method: lambda seed, fn=fn: timed(fn, key_of(seed), *args) for method, fn in fns.items()}
    times = interleaved(runners, repeats)
    result = {"d": d, **{method: summary(times[method], firsts[method]) for method in methods}}
    result["ratio"] = result[methods[0]]["median_s"] / result[methods[1]]["median_s"]
    result["ratio_min"] = result[methods[0]]["min_s"] / result[methods[1]]["min_s"]
    if "diffrax" not in methods:
        a, b = (np.asarray(fns[m](key_of(0), *args), np.float64) for m in methods)
        result["rel_diff"] = float(np.linalg.norm(a - b) / np.linalg.norm(b))
    return result


def run_benchmarks(
    quick: bool = False,
    repeats: int | None = None,
    *,
    cache_dir: Path = DEFAULT_CACHE_DIR,
    public: bool = True,
    path_sizes: tuple[int, ...] | None = None,
    krylov_sizes: tuple[int, ...] | None = None,
    euler_d: int = LAW_D,
    law: bool = True,
) -> dict:
    """Every benchmark of this module; returns the results dict that ``main`` writes as JSON.

    ``public=False`` skips the public thermox (no virtual environment, no subprocess); ``law=False`` skips the
    same-law check. Sizes default to (10, 100, 400) paths and (100, 400, 1600) Krylov sizes, fewer with ``quick``.
    """
    started = time.perf_counter()
    repeats = repeats or (3 if quick else 25)
    path_sizes = path_sizes or ((10, 100) if quick else (10, 100, 400))
    krylov_sizes = krylov_sizes or ((100, 400) if quick else (100, 400, 1600))
    results = {
        "schema": SCHEMA,
        "config": {
            "quick": quick, "dtype": "float32", "num_times": NUM_TIMES, "t_end": T_END, "kappa0": KAPPA0,
            "spectrum": list(SPECTRUM), "repeats": repeats, "jax_version": jax.__version__,
            "python": platform.python_version(), "machine": platform.machine(), "cpu_count": os.cpu_count(),
            "jax_backend": jax.default_backend(), "pause_s": PAUSE_S,
            "load_avg_1min_at_start": os.getloadavg()[0],
        },
    }
    if public:
        worker, results["public_thermox"] = start_public_worker(cache_dir)
    else:
        worker, results["public_thermox"] = None, {"available": False, "reason": "not requested (public=False)"}
    try:
        with tempfile.TemporaryDirectory() as tmp:
            results["ou_path"] = [bench_path(d, worker, repeats, Path(tmp)) for d in path_sizes]
            results["law_check"] = law_check(worker, Path(tmp)) if law else None
    finally:
        if worker is not None:
            worker.close()
    euler = bench_evolve(euler_d, ("diffrax", "exact"), repeats)
    results["euler_vs_exact"] = {**euler, "dt": T_END / (NUM_TIMES - 1)}
    results["krylov_vs_exact"] = [bench_evolve(d, ("krylov", "exact"), repeats) for d in krylov_sizes]
    at_ratio_d = next((r for r in results["ou_path"] if r["d"] == RATIO_D), None)
    get = lambda name: None if at_ratio_d is None else at_ratio_d[name]
    reason = None
    if worker is None:
        reason = results["public_thermox"]["reason"]
    elif at_ratio_d is None:
        reason = f"d = {RATIO_D} not among the path sizes {list(path_sizes)}"
    results["ratios"] = {
        "ou_exact_over_thermox": get("ours_over_thermox"),
        "ou_exact_over_thermox_min": get("ours_over_thermox_min"),
        "ou_exact_over_thermox_scan": get("ours_over_thermox_scan"),
        "reason": reason,
    }
    results["load_avg_1min_at_end"] = os.getloadavg()[0]
    results["elapsed_s"] = time.perf_counter() - started
    return results


def section(quick: bool, repeats: int | None = None, *, public: bool = True, cache_dir=None,
            path_sizes=None, krylov_sizes=None, euler_d: int | None = None, law: bool = True) -> dict:
    """The suite's ``ou`` section: :func:`run_benchmarks`, with the headline ratio at d = 100 (of minima and of
    medians)."""
    options = {} if cache_dir is None else {"cache_dir": Path(cache_dir)}
    if euler_d is not None:
        options["euler_d"] = euler_d
    raw = run_benchmarks(quick, repeats, public=public, path_sizes=path_sizes, krylov_sizes=krylov_sizes, law=law,
                         **options)
    ratios = raw["ratios"]
    return {
        "ratio_min": ratios["ou_exact_over_thermox_min"],
        "ratio_median": ratios["ou_exact_over_thermox"],
        "reason": ratios["reason"],
        "raw": raw,
    }


# --------------------------------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------------------------------


def evolve_ratio_text(row: dict) -> str:
    """Ratio of medians (ratio of minima) of a :func:`bench_evolve` row."""
    return f"{fmt(row['ratio'])} ({fmt(row.get('ratio_min'))})"


def ratios_text(row: dict, name: str) -> str:
    """Ratio of medians (ratio of minima) of ours over the public variant ``name``."""
    if row[f"ours_over_{name}"] is None:
        return "n/a"
    return f"{row[f'ours_over_{name}']:.2f} ({row[f'ours_over_{name}_min']:.2f})"


def report(results: dict) -> str:
    """The markdown tables of :func:`run_benchmarks`'s results."""
    cfg = results["config"]
    public = results["public_thermox"]
    name = f"thermox {public['thermox']}" if public["available"] else "thermox (unavailable)"
    parts = [
        f"dtype {cfg['dtype']}, {cfg['num_times']} time points on [0, {cfg['t_end']}], kappa0 = {cfg['kappa0']}, "
        f"spectrum {cfg['spectrum']}, ms: median (min) of {cfg['repeats']} interleaved repeats; "
        f"ours: jax {cfg['jax_version']}; public: "
        + (f"{name}, jax {public['jax']}" if public["available"] else f"skipped ({public['reason']})")
        + f"; 1-min load average {cfg['load_avg_1min_at_start']:.1f} at start, "
        f"{results['load_avg_1min_at_end']:.1f} at end ({cfg['cpu_count']} CPUs)",
        "",
        "### Exact OU path sampling: ours vs public thermox (ratio = ours / theirs of medians (of minima); "
        "lower is better)",
        markdown_table(
            ["d", "ours sample_path", f"{name} sample (assoc. scan)", "ratio", "thermox sample (lax.scan)", "ratio"],
            [[r["d"], ms(r["ours"]), ms(r["thermox"]), ratios_text(r, "thermox"),
              ms(r["thermox_scan"]), ratios_text(r, "thermox_scan")] for r in results["ou_path"]],
        ),
    ]
    law = results["law_check"]
    if law is not None:
        rows = [["ours vs exact mean: max |z|", f"{law['max_abs_z_ours_vs_exact_mean']:.2f}"]]
        if "max_abs_z_mean_ours_vs_thermox" in law:
            rows += [["ours vs thermox mean: max |z|", f"{law['max_abs_z_mean_ours_vs_thermox']:.2f}"],
                     ["ours vs thermox mean: max |diff|", f"{law['max_abs_mean_diff']:.3g}"],
                     ["ours vs thermox covariance trace: |z|", f"{law['abs_z_cov_trace_ours_vs_thermox']:.2f}"]]
        parts += [
            "",
            f"### Same law? final point, d = {law['d']}, {law['num_samples']} keys each, margin |z| < "
            f"{law['margin_abs_z']:g}: {'PASS' if law['passed'] else 'FAIL'}",
            markdown_table(["statistic", "value"], rows),
        ]
    euler = results["euler_vs_exact"]
    parts += [
        "",
        f"### Final-state readout x({cfg['t_end']}), d = {euler['d']}: diffrax Euler-Maruyama "
        f"(dt = {euler['dt']:.4g}, {cfg['num_times'] - 1} steps) vs exact",
        markdown_table(["d", "diffrax Euler", "exact", "Euler / exact (of minima)"],
                       [[euler["d"], ms(euler["diffrax"]), ms(euler["exact"]), evolve_ratio_text(euler)]]),
        "",
        "### thermox.evolve final state: Krylov (Lanczos, krylov_dim 64) vs dense exact (eigh)",
        markdown_table(
            ["d", "krylov", "exact", "krylov / exact (of minima)", "relative gap (same key)"],
            [[r["d"], ms(r["krylov"]), ms(r["exact"]), evolve_ratio_text(r), f"{r['rel_diff']:.1e}"]
             for r in results["krylov_vs_exact"]],
        ),
        "",
        f"ratios.ou_exact_over_thermox (d = {RATIO_D}, medians): {fmt(results['ratios']['ou_exact_over_thermox'])}"
        f"; of minima: {fmt(results['ratios']['ou_exact_over_thermox_min'])}",
    ]
    return "\n".join(parts)


def markdown(result: dict) -> str:
    """The suite report's section: :func:`report` under its title."""
    return "\n".join(["## 1. OU simulation (scripts/bench_ou.py)", "", report(result["raw"])])


def main(argv: list[str] | None = None) -> int:
    """The command line (module docstring); exit status 1 when the same-law check fails."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer sizes and repeats (a smoke run)")
    parser.add_argument("--out", default="bench_ou.json", help="JSON results file (default: bench_ou.json)")
    parser.add_argument("--repeats", type=int, default=None, help="timed repeats per case (default 25; quick 3)")
    parser.add_argument("--cache-dir", type=Path, default=DEFAULT_CACHE_DIR,
                        help="where the public thermox's virtual environment is kept")
    args = parser.parse_args(argv)
    results = run_benchmarks(args.quick, args.repeats, cache_dir=args.cache_dir)
    Path(args.out).write_text(json.dumps(results, indent=2) + "\n")
    print(report(results))
    print(f"\nwrote {args.out} in {results['elapsed_s']:.0f} s")
    return 0 if results["law_check"]["passed"] else 1
