"""The benchmark suite: the project against its peers and baselines, every number a ratio measured in one run.

    python -m experiments.bench [--quick] [--out bench.json] [--report bench.md] [--only SECTION,...]
    python scripts/bench.py ...                                   (the same)

Sections (``--only`` / ``--skip`` take these names; one module of experiments.bench each):

  ou           OU simulation (experiments.bench.ou): our exact path sampling vs the public PyPI ``thermox``
               (its own virtual environment, a worker subprocess, interleaved calls) at d = 10, 100, 400 with
               1,000 time points; our diffrax Euler-Maruyama vs our exact law; Krylov vs dense exact.
  steps        optimizer step cost on the paper's MNIST CNN, batch 64 (experiments.bench.steps): Muon and Sophia-G
               (the runner's), TNGD (t = 5, 50 tau, noisy, 8-bit, Monte-Carlo Fisher), TNGD-Adam, NGD-Woodbury,
               NGD-CG (c = 200) over ``optax.adam``; model calls per step; XLA peak memory of the compiled step.
  kfac         K-FAC and thermodynamic K-FAC (refresh every 10 steps) over Adam on an MLP 784-1024-1024-10,
               batch 512 (experiments.bench.kfac; steps timed in whole refresh periods).
  scaling      the paper's runtime figure: time per iteration against parameter count N (an MLP 100-h-20
               widened, batch 32, dz = 20) for TNGD, NGD (dense, small N only), NGD-CG (c = 200) and
               NGD-Woodbury, as simulated wall time and as modeled hardware time from the transform's state.
  memory       TNGD at N ~ 1e6 with b dz = 640 (MLP 784-1258-10, batch 64): XLA's memory analysis of the
               compiled step, and the peak RSS of one step measured in a fresh subprocess.
  kfac_jax     K-FAC and thermodynamic K-FAC against DeepMind's kfac-jax (experiments.bench.kfac_jax: kfac-jax
               0.0.8 on jax 0.8.3 in its own virtual environment, a worker subprocess, interleaved rounds) on the
               MLP 784-1024-1024-10, batch 512, curvature and inverse refresh every 1 and every 10 steps.
  sharding     data parallelism (experiments.bench.sharding): the K-FAC MLP above on 4 CPU host devices (batch
               sharded, K-FAC's layer solves spread) over the same step on 1, in a subprocess with
               XLA_FLAGS=--xla_force_host_platform_device_count=4; --quick: Adam and thermodynamic K-FAC.
  convergence  steps and modeled hardware time to 90% and 95% test accuracy, each optimizer against Adam, 3
               seeds, median (experiments.run through Hydra, experiments.figures' configurations; finished run
               directories under --runs-dir are reused). Full run: the MNIST split in ../shared/data/mnist (Adam,
               the paper's main-run TNGD: t = 50 tau, noiseless, reset, by its exact law; exact NGD; thermodynamic
               K-FAC refreshing every 10 steps on the thermal (kappa0 = 1e-6) and the ideal device, capped at 300
               steps) plus digits (Adam, TNGD, thermodynamic K-FAC) as a secondary task.
               --quick: digits only (Adam, TNGD, thermodynamic K-FAC on the thermal device), evaluated every 5
               steps, TNGD capped at 60 steps and thermodynamic K-FAC at 100.

Every section times the same train step (experiments.bench.problems.cross_entropy_step: the trainer's
experiments.trainer.train_step on mean softmax cross-entropy).

--quick (under 5 minutes on 2 cores): OU at d = 10, 100 with 3 repeats; the CNN step for Adam, Muon, Sophia-G,
TNGD t = 50, TNGD with the Monte-Carlo Fisher, TNGD-Adam and NGD-Woodbury; K-FAC: Adam and thermodynamic K-FAC only, 2 rounds;
scaling at N ~ 3e3 and 1e5 (dense NGD up to 5e3); memory as in the full run; kfac-jax with 2 rounds, its
default estimation mode and refresh 10 only; no sharding section (FULL_RUN_ONLY); convergence on digits.

Timing: every comparison is interleaved (baseline and candidates called in turn) on a warmed-up, compiled step;
each case keeps its median and its minimum over repeats. The headline ``ratios.*`` are ratios of *minima* (load
on a shared machine only adds time, so the minimum is the least contaminated estimate of each side's cost);
``ratios_median.*`` holds the ratios of medians. Ours over the baseline: lower is better.

bench.json keys (schema "bench/1"; a value that could not be measured is null and ``reasons`` says why):
  ratios.ou_exact_over_thermox                   our exact path sampling / public thermox.sample, d = 100
  ratios.muon_step_over_adam                     optax.contrib.muon (the runner's optimizer=muon) step / Adam
                                                 step, MNIST CNN
  ratios.sophia_step_over_adam                   Sophia-G (optimizer=sophia; refresh every 10 steps, timed in
                                                 whole periods) / Adam
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
                                                 95; opt = tngd (the paper's main runs), thermo_kfac (thermal
                                                 device), thermo_kfac_ideal, ngd_woodbury; null with the reason
                                                 where Adam (or the optimizer) does not reach p%
  convergence.<opt>_modeled_time_to_<p>_over_adam  the same for modeled hardware time
  convergence.digits_<...>                       the same on digits, the full run's secondary task
  memory.tngd_n1e6_peak_gib                      XLA peak (arguments + outputs + temporaries) of one TNGD step at N
                                                 ~ 1e6, b dz = 640, GiB
  memory.tngd_n1e6_rss_peak_gib                  process peak RSS during that step (fresh subprocess), GiB
  memory.tngd_n1e6_rss_growth_gib                peak RSS during the step minus the RSS before it, GiB
  targets.<name>                                 {"target", "value", "met", ...} for each target of
                                                 experiments/bench/targets.toml (met by the minima;
                                                 "met_by_medians" alongside)
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
import json
import os
import pathlib
import shlex
import subprocess
import sys
import time
import traceback

from . import ROOT, SECTIONS, convergence, kfac, kfac_jax, memory, ou, scaling, sharding, steps, timing
from .report import report
from .results import assemble

FULL_RUN_ONLY = {  # sections --quick leaves out (unless named in --only), with the reason reported
    "sharding": "full run only, to keep --quick under 5 minutes (python scripts/bench_sharding.py --quick)",
}
MNIST_DIR = ROOT.parent / "shared" / "data" / "mnist"


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
    """Run the selected sections in order; their results and ``errors`` (failures, and ``_skipped``: the sections
    not run with the reason)."""
    wanted = [s for s in (args.only.split(",") if args.only else SECTIONS) if s not in set(args.skip.split(","))]
    unknown = set(wanted) - set(SECTIONS)
    if unknown:
        raise SystemExit(f"unknown sections {sorted(unknown)}; choose from {SECTIONS}")
    data_dir = args.data_dir or (str(MNIST_DIR) if MNIST_DIR.exists() else None)
    jobs = {
        "ou": lambda: ou.section(args.quick, cache_dir=args.cache_dir),
        "steps": lambda: steps.section(args.quick),
        "kfac": lambda: kfac.section(args.quick),
        "scaling": lambda: scaling.section(args.quick),
        "memory": lambda: memory.section(args.quick),
        "kfac_jax": lambda: kfac_jax.section(args.quick, cache_dir=args.cache_dir),
        "sharding": lambda: sharding.section(args.quick),
        "convergence": lambda: convergence.section(args.quick, data_dir=data_dir, seeds=args.seeds,
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
        print(f"[{name}] ...", flush=True)
        start = time.perf_counter()
        try:
            sections[name] = jobs[name]()
            sections[name]["elapsed_s"] = time.perf_counter() - start
        except Exception as error:  # noqa: BLE001 - a failing section is reported, the others still run
            errors[name] = {"error": f"{type(error).__name__}: {error}", "traceback": traceback.format_exc()}
            print(f"[{name}] failed: {error}", flush=True)
        print(f"[{name}] done in {time.perf_counter() - start:.0f} s", flush=True)
    if not errors["_skipped"]:
        del errors["_skipped"]
    return sections, errors


def main(argv: list[str] | None = None, *, prog: str = "-m experiments.bench") -> int:
    """The command line (module docstring); ``prog`` is how it was started, after ``python`` (recorded in
    ``meta.command``)."""
    parser = argparse.ArgumentParser(prog=f"python {prog}", description=__doc__.split("\n\n")[0],
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
        print(json.dumps(memory.probe(**json.loads(args.memory_probe))))
        return 0

    started = time.perf_counter()
    given = sys.argv[1:] if argv is None else argv
    command = f"python {prog} " + " ".join(shlex.quote(a) for a in given)
    meta = {"date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "command": command.rstrip(), "git_sha": git_sha(), "quick": args.quick, "machine": timing.machine(),
            "load_avg_start": timing.load_average(),
            "openblas_num_threads": os.environ.get("OPENBLAS_NUM_THREADS")}
    sections, errors = run_sections(args)
    meta["load_avg_end"] = timing.load_average()
    meta["elapsed_s"] = time.perf_counter() - started
    bench = assemble(sections, errors, meta)
    pathlib.Path(args.out).write_text(json.dumps(bench, indent=2, default=str) + "\n")
    text = report(bench)
    pathlib.Path(args.report).write_text(text + "\n")
    print(text)
    print(f"\nwrote {args.out} and {args.report} in {meta['elapsed_s']:.0f} s")
    return 0
