"""One command per figure or claim of the papers: runs its configurations (reusing finished runs of exactly the same
config), then writes ``<out>/<figure>.png`` and ``<out>/<figure>.md``.

    python scripts/figures.py fig3  --data-dir ../shared/data/mnist    # TNGD vs Adam vs exact NGD, 5 seeds
    python scripts/figures.py fig4a --data-dir ../shared/data/mnist    # t in {5, 10, 20, 50} tau vs exact NGD
    python scripts/figures.py fig4b --data-dir ../shared/data/mnist    # t_d in {0, 0.2, 1} tau at t = 5 tau
    python scripts/figures.py fig7  --data-dir ../shared/data/mnist    # kappa0 in {0.1, 0.01, 0.001} at t = tau
    python scripts/figures.py fig7-t50 --data-dir ../shared/data/mnist # the same at t = 50 tau
    python scripts/figures.py kfac-bits --data-dir ../shared/data/mnist   # thermodynamic K-FAC vs converter bits
    python scripts/figures.py kfac-bits-qa --data-path ../shared/data/squad/dev-v1.1.json.zip  # the same on QA LoRA
    python scripts/figures.py baselines --data-dir ../shared/data/mnist   # Adam, Muon, Sophia-G, K-FAC, TNGD
    python scripts/figures.py fig5 --data-path ../shared/data/squad/dev-v1.1.json.zip   # QA fine-tuning
    python scripts/figures.py all --data-dir ... [--data-path ...]     # every figure

The configurations are the papers' (``FIGURES``; the presets in ``configs/optimizer/*_paper.yaml``): TNGD by the
papers' Euler-Maruyama simulation at dt = 0.1 tau, reset at every iteration unless t_d > 0, on a noiseless device
(the main runs list no noise); ``Figure.note`` says where a figure's runs differ from the paper's. ``--quick``
runs fewer seeds and steps and marks its rows. Without ``--data-dir`` the MNIST figures run on scikit-learn's
digits, as a check of the pipeline (``<figure>-digits`` files). Runs go to
``<runs>/<task>-<optimizer>-<device>-seed<k>-<config hash>`` (experiments.identity), so a run is reused by any
figure with the same resolved config and by no other; a larger ``--max-steps`` extends the runs of a smaller one
(``--quick`` runs are the first steps of the full ones).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import pathlib

import numpy as np
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from . import hardware, identity, rundir
from .plots import compare
from .run import run

ROOT = pathlib.Path(__file__).resolve().parents[1]

@dataclasses.dataclass(frozen=True)
class Curve:
    """One curve of a figure: a label for files and tables, the config overrides that define it, and words for the
    legend."""

    label: str
    overrides: tuple[str, ...]
    legend: str


@dataclasses.dataclass(frozen=True)
class Figure:
    """A figure (or claim) of the papers as this project runs it.

    Attributes:
        name: the command's name (``python scripts/figures.py <name>``).
        paper: which figure or section of which paper, and what it claims.
        task: "mnist" (the 5k/5k split of ``--data-dir``; digits without it, as a pipeline check) or "squad".
        curves: the configurations.
        seeds: seeds of the full form.
        max_steps: the full form's cap on every run's steps (None: the task's epochs).
        quick_seeds, quick_max_steps: the ``--quick`` form (its rows are marked so).
        smooth: moving-average window of the training-loss curves (the paper's 200 points).
        note: how the runs differ from the paper's, in one sentence (empty when they do not).
    """

    name: str
    paper: str
    task: str
    curves: tuple[Curve, ...]
    seeds: int = 5
    max_steps: int | None = None
    quick_seeds: int = 2
    quick_max_steps: int | None = 200
    smooth: int = 200
    note: str = ""


def _curve(label: str, legend: str, *overrides: str) -> Curve:
    return Curve(label, tuple(overrides), legend)


TNGD = ("optimizer=tngd_paper", "device=ideal")  # the main runs: Euler-Maruyama dt = 0.1, reset, noiseless
EXACT_LAW = "optimizer.method=auto"  # the same device by its exact law: the fast path
ADAM = _curve("adam", "Adam (lr 1e-3)", "optimizer=adam")
NGD = _curve("ngd-exact", "exact NGD (Woodbury)", "optimizer=ngd_paper")
MNIST_SPLIT = ("MNIST: the paper trained on 10,000 images of the training set, which is not available here; ours is "
               "the stratified 5,000 / 5,000 split of the 10,000-image test set.")
EULER_UNSTABLE = (" The paper's Euler-Maruyama at dt = 0.1 tau is unstable on this model once lambda_max(G) passes "
                  "2 / dt = 20, from about step 35 (fig3: it fails there): these curves use the exact law of the same "
                  "device, which has no step to be unstable.")
KFAC_PERIODS = ("optimizer.curvature_period=10", "optimizer.inverse_period=10")
BITS = (4, 6, 8, 12, 16)
# The thermodynamic K-FAC paper's quantization claim (MNIST and QA): Adam, digital K-FAC, the device with ideal
# converters and with b-bit converters and couplings, all refreshed every 10 steps.
BITS_CURVES = (ADAM, _curve("kfac", "digital K-FAC (lr 0.01)", "optimizer=kfac", *KFAC_PERIODS),
               _curve("thermo-kfac-ideal", "thermodynamic K-FAC, ideal converters", "optimizer=thermo_kfac",
                      "device=thermal", *KFAC_PERIODS)) + tuple(
    _curve(f"thermo-kfac-{b}bit", f"thermodynamic K-FAC, {b}-bit converters and couplings", "optimizer=thermo_kfac",
           "device=thermal", f"device.dac_bits={b}", f"device.adc_bits={b}", f"device.coupling_bits={b}",
           *KFAC_PERIODS) for b in BITS)

FIGURES = {figure.name: figure for figure in (
    Figure("fig3", "TNGD paper (arXiv 2405.13817) Fig. 3: TNGD against Adam and exact NGD on MNIST, against "
           "iterations and runtime", "mnist",
           (ADAM, _curve("tngd", "TNGD, t = 50 tau (Euler-Maruyama dt = 0.1)", *TNGD),
            _curve("tngd-exact-law", "TNGD, t = 50 tau (exact law)", *TNGD, EXACT_LAW), NGD),
           note=MNIST_SPLIT),
    Figure("fig4a", "TNGD paper Fig. 4a: TNGD approaches exact NGD as t grows (t in {5, 10, 20, 50} tau)", "mnist",
           tuple(_curve(f"tngd-t{t}", f"TNGD, t = {t} tau", *TNGD, EXACT_LAW, f"optimizer.t={t}")
                 for t in (5, 10, 20, 50)) + (NGD,), note=MNIST_SPLIT + EULER_UNSTABLE),
    Figure("fig4b", "TNGD paper Fig. 4b: a delay t_d in {0, 0.2, 1} tau at t = 5 tau helps and can beat exact NGD",
           "mnist",
           tuple(_curve(f"tngd-t5-delay{d:g}", f"TNGD, t = 5 tau, t_d = {d:g} tau", *TNGD, EXACT_LAW, "optimizer.t=5",
                        f"optimizer.delay={d}") for d in (0.0, 0.2, 1.0)) + (NGD,),
           note=MNIST_SPLIT + " With t_d > 0 the device state carries over between iterations (Appendix B)."
                + EULER_UNSTABLE),
    Figure("fig7", "TNGD paper Fig. 7 (E.1.1): thermal noise kappa0 in {0.1, 0.01, 0.001} at t = tau barely matters "
           "below 0.01", "mnist",
           tuple(_curve(f"tngd-t1-kappa{k:g}", f"TNGD, t = tau, kappa0 = {k:g}", *TNGD, EXACT_LAW, "optimizer.t=1",
                        f"device.kappa0={k}") for k in (0.1, 0.01, 0.001))
           + (_curve("tngd-t1-noiseless", "TNGD, t = tau, noiseless", *TNGD, EXACT_LAW, "optimizer.t=1"),),
           note=MNIST_SPLIT + " The paper gives no lambda, lr or reset for this study: the main runs' (0.01, 0.01, "
                "reset) are used." + EULER_UNSTABLE),
    Figure("fig7-t50", "The noise study at t = 50 tau, the main runs' time (not in the paper: the combination users "
           "ask about)", "mnist",
           tuple(_curve(f"tngd-t50-kappa{k:g}", f"TNGD, t = 50 tau, kappa0 = {k:g} (exact law)", *TNGD, EXACT_LAW,
                        f"device.kappa0={k}") for k in (0.1, 0.01, 0.001, 1e-6))
           + (_curve("tngd-t50-noiseless", "TNGD, t = 50 tau, noiseless (exact law)", *TNGD, EXACT_LAW),),
           note=MNIST_SPLIT + EULER_UNSTABLE),
    Figure("kfac-bits", "Thermodynamic K-FAC paper (arXiv 2502.08603): quantized thermodynamic K-FAC keeps most of "
           "K-FAC's advantage over Adam (MNIST)", "mnist",
           BITS_CURVES, seeds=3, max_steps=300, quick_max_steps=100,
           note=MNIST_SPLIT + " The paper's workloads (ViT on ImageNet, a GNN) are out of reach here; factors and "
                              "device refreshed every 10 steps; thermal noise 1e-6; 300 steps (enough for Adam to reach "
                              "90%; a thermodynamic K-FAC step costs about 1 s here)."),
    Figure("kfac-bits-qa", "Thermodynamic K-FAC paper (arXiv 2502.08603): quantized thermodynamic K-FAC keeps most "
           "of K-FAC's advantage over Adam (the QA LoRA task)", "squad",
           BITS_CURVES, seeds=1, quick_seeds=1, max_steps=300, quick_max_steps=100, smooth=50,
           note="Fig. 5's QA task (MiniLM + LoRA r = 2 on the 38 training articles of the SQuAD v1.1 dev set, batch 8, "
                "sequence length 128), 300 steps (a third of the epoch; a K-FAC step costs several seconds here); "
                "K-FAC factors of every LoRA matrix and the span head refreshed every 10 steps, thermal noise 1e-6. "
                "Steps to a target are steps until the 50-step average training loss reaches Adam's final one."),
    Figure("baselines", "The baselines a researcher would pick today beside Adam on MNIST: Muon and Sophia-G (the "
           "diagonal-Hessian family), digital K-FAC and TNGD", "mnist",
           (ADAM, _curve("muon", "Muon (lr 0.02, Adam 1e-3 on the conv kernel and biases)", "optimizer=muon"),
            _curve("sophia", "Sophia-G (lr 1e-3, GNB curvature every 10 steps)", "optimizer=sophia"),
            _curve("kfac", "digital K-FAC", "optimizer=kfac", *KFAC_PERIODS),
            _curve("tngd-exact-law", "TNGD, t = 50 tau (exact law)", *TNGD, EXACT_LAW)),
           seeds=3, max_steps=300, quick_max_steps=100,
           note=MNIST_SPLIT + " Every optimizer at its defaults (experiments/config.py; TNGD the paper's main runs, "
                              "K-FAC refreshed every 10 steps), none tuned for this figure; 300 steps."),
    Figure("fig5", "TNGD paper Fig. 5: QA fine-tuning with LoRA; plain TNGD trains worse than Adam, TNGD-Adam best",
           "squad",
           (ADAM, _curve("tngd", "TNGD (lr 0.01, t = 0.4 tau, lambda = 1)", "optimizer=tngd_qa_paper", "device=ideal"),
            _curve("tngd-adam", "TNGD-Adam (lr 1e-3, beta1 = beta2 = 0)", "optimizer=tngd_adam_qa_paper",
                   "device=ideal"),
            _curve("tngd-exact-law", "TNGD (the same device by its exact law)", "optimizer=tngd_qa_paper",
                   "device=ideal", EXACT_LAW),
            _curve("tngd-adam-exact-law", "TNGD-Adam (the same device by its exact law)",
                   "optimizer=tngd_adam_qa_paper", "device=ideal", EXACT_LAW)),
           seeds=1, quick_seeds=1, quick_max_steps=100, smooth=50,
           note="MiniLM (22M parameters) in place of DistilBERT; the 38 training articles of the SQuAD v1.1 dev set "
                "(10 held out, 300 test questions), sequence length 128, batch 8, one epoch; the paper: 800 training "
                "articles of SQuAD's training set, batch 32, 5 epochs. The paper's Euler-Maruyama at dt = 0.02 tau "
                "fails on this model once lambda_max(G) passes 2 / dt = 100 (TNGD at step ~100, TNGD-Adam at ~20): "
                "the exact-law curves run the same device without a time step."),
)}


def task_overrides(figure: Figure, args) -> list[str]:
    """The task of ``figure``: MNIST from ``--data-dir`` (digits without it), SQuAD from ``--data-path``."""
    if figure.task == "squad":
        if not args.data_path:
            raise SystemExit(f"figure {figure.name} needs --data-path to a SQuAD v1.1 JSON (or zip)")
        return ["+experiment=fig5_squad", f"task.data_path={os.path.abspath(args.data_path)}"]
    if args.data_dir:
        return ["task=mnist", f"task.data_dir={os.path.abspath(args.data_dir)}"]
    return ["task=digits"]


def compose_config(overrides: list[str]):
    """The resolved runner config of ``overrides``, as ``python -m experiments.run`` composes it."""
    with initialize_config_dir(config_dir=str(ROOT / "configs"), version_base="1.3"):
        return compose("config", overrides=overrides)


def run_directory(runs: str, overrides: list[str]) -> pathlib.Path:
    """``<runs>/<task>-<optimizer>-<device>-seed<k>-<hash>`` (``experiments.identity.run_name``): named by the
    resolved config alone, so figures that share a configuration (fig3's TNGD is fig4a's t = 50 curve) share its
    runs, and the same curve on other data (digits, MNIST) or settings gets another directory."""
    return pathlib.Path(runs) / identity.run_name(compose_config(overrides))


def output_stem(out: str, figure: str, task: list[str]) -> str:
    """``<out>/<figure>``, ``<out>/<figure>-digits`` for the digits check of a classification figure."""
    return os.path.join(out, figure + ("-digits" if task == ["task=digits"] else ""))


def run_once(overrides: list[str], run_dir: pathlib.Path) -> None:
    """Run one configuration unless ``run_dir`` already holds a finished run of exactly it (``rundir.finished``);
    a run of another config there is an error (``rundir.ConfigMismatchError``). A run that diverges or fails
    part-way is reported and kept (its ``summary.json`` says where), and the figure goes on."""
    cfg = compose_config(overrides)
    if rundir.finished(str(run_dir), cfg):
        return
    if rundir.covers(str(run_dir), cfg):
        print(f"note: {run_dir} holds a longer run of the same config; its first {cfg.run.max_steps} steps are read",
              flush=True)
        return
    if (why := failed_before(run_dir, cfg)) is not None:
        print(f"note: {run_dir} failed before ({why}); kept as it is (delete the directory to run it again)",
              flush=True)
        return
    try:
        summary = run(cfg, str(run_dir))
    except rundir.ConfigMismatchError:
        raise
    except Exception as error:  # noqa: BLE001 - the figure reports the failed run and goes on
        print(f"warning: {run_dir} failed: {type(error).__name__}: {str(error).splitlines()[0]}", flush=True)
        return
    if summary["diverged"]:
        diverged = summary["diverged"]
        print(f"warning: {run_dir} diverged at step {diverged['step']}: {diverged['reason']}", flush=True)


def failed_before(run_dir: pathlib.Path, cfg) -> str | None:
    """The error of an earlier run of exactly ``cfg`` in ``run_dir`` that failed (its summary's ``failed``), or
    None. A failure of the same config (a device certificate, a bad input) is deterministic: the figure reports
    it rather than run it again."""
    path = os.path.join(run_dir, rundir.SUMMARY)
    if not (os.path.exists(path) and os.path.exists(os.path.join(run_dir, rundir.CONFIG))):
        return None
    failed = rundir.read_json(path).get("failed")
    if not failed or identity.changed_keys(OmegaConf.load(os.path.join(run_dir, rundir.CONFIG)), cfg):
        return None
    return f"step {failed['step']}: {failed['error'].splitlines()[0]}"


def stopped_early(run_dir: str, last_step: int | None = None) -> str | None:
    """Why a run (read to ``last_step``: :func:`experiments.rundir.read_run`) stopped before its planned steps
    (divergence or failure, from its summary), or None."""
    if not os.path.exists(os.path.join(run_dir, rundir.SUMMARY)):
        return "no summary (the run failed before its first step)"
    return stop_reason(rundir.read_run(run_dir, last_step)["summary"])


def stop_reason(summary: dict) -> str | None:
    """Why the run of ``summary`` stopped before its planned steps (divergence or failure), or None."""
    if summary.get("failed"):
        return f"failed at step {summary['failed']['step']}: {summary['failed']['error']}"
    if summary.get("diverged") and summary["steps"] < summary["planned_steps"]:
        return f"diverged at step {summary['diverged']['step']}: {summary['diverged']['reason']}"
    return None


def step_cap(figure: Figure, args) -> int | None:
    """The steps every run of ``figure`` takes (``--max-steps``, its ``--quick`` cap, or its own), None for the
    task's epochs. A longer run of the same config is read to this step (:func:`experiments.rundir.read_run`)."""
    return args.max_steps or (figure.quick_max_steps if args.quick else figure.max_steps)


def figure_jobs(figure: Figure, args) -> list[tuple[Curve, int, list[str]]]:
    """``(curve, seed, overrides)`` of every run of ``figure`` (``--quick``: fewer seeds and steps)."""
    task = task_overrides(figure, args)
    common = task + ["run.progress=false", "run.plots=false"]
    max_steps = step_cap(figure, args)
    if max_steps:
        common.append(f"run.max_steps={max_steps}")
    seeds = args.seeds or (figure.quick_seeds if args.quick else figure.seeds)
    return [(curve, seed, common + list(curve.overrides) + [f"seed={seed}"])
            for curve in figure.curves for seed in range(seeds)]


def make_figure(figure: Figure, args) -> str:
    """Run (or reuse) every run of ``figure``, then write ``<out>/<name>.png`` and ``.md``; returns the markdown."""
    run_dirs, labels = [], []
    for curve, seed, job in figure_jobs(figure, args):
        run_dir = run_directory(args.runs, job)
        print(f"[{figure.name}] {curve.label} seed {seed} -> {run_dir}", flush=True)
        run_once(job, run_dir)
        run_dirs.append(str(run_dir))
        labels.append(curve.legend)
    out = output_stem(args.out, figure.name, task_overrides(figure, args))
    title = figure.paper + (" [quick form]" if args.quick else "")
    kept = [(d, label) for d, label in zip(run_dirs, labels) if os.path.exists(os.path.join(d, rundir.SUMMARY))]
    cap = step_cap(figure, args)
    markdown = compare([d for d, _ in kept], out, labels=[label for _, label in kept], title=title,
                       smooth=figure.smooth, last_step=cap)
    stops = [f"- {label}, {os.path.basename(d)}: {why}" for d, label in zip(run_dirs, labels)
             if (why := stopped_early(d, cap))]
    with open(out + ".md", "a") as f:
        if stops:
            f.write("\nRuns that stopped early (their curves end there):\n" + "\n".join(stops) + "\n")
        if figure.note:
            f.write(f"\n{figure.note}\n")
    print(f"wrote {out}.png and {out}.md")
    return markdown


FIG2_REPEATS = 5
FIG2_DENSE_MAX_N = 1.2e4


def make_fig2(args) -> str:
    """TNGD paper Fig. 2: time per iteration against N on the MNIST CNN with its hidden width widened (b = 32,
    dz = 20, c = 200 CG iterations): the digital methods measured here, TNGD as simulated wall time, as modeled
    hardware time (``experiments.hardware.DEFAULT_HARDWARE``) and in the paper's accounting. The measurements go to
    ``<out>/fig2.json``, which the reproduction table's Fig. 2 row reads (``experiments.claims``)."""
    from .bench import scaling

    sizes = (1e4, 1e5) if args.quick else (1e4, 3e4, 1e5)
    # the paper's 5 seeds as 5 interleaved timings; dense NGD at the smallest width (N ~ 11,000: 0.5 GB, ~10 s a step)
    result = scaling.section(args.quick, repeats=2 if args.quick else FIG2_REPEATS, sizes=sizes, batch=32,
                             outputs=20, cg_iterations=200, dense_max_n=FIG2_DENSE_MAX_N, model="cnn")
    out = os.path.join(args.out, "fig2")
    os.makedirs(args.out, exist_ok=True)
    rundir.write_json(out + ".json", {**result, "quick": args.quick})
    rows = result["rows"]
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    legends = {"adam": "Adam", "ngd": "NGD (dense)", "ngd_cg": "NGD-CG (c = 200)", "ngd_woodbury": "NGD-Woodbury",
               "tngd": "TNGD, simulated on this CPU"}
    for name, legend in legends.items():
        points = [(r["n_params"], r["optimizers"][name]["wall_s"]["median_s"]) for r in rows if name in r["optimizers"]]
        ax.plot(*zip(*points), marker="o", label=f"{legend} (measured)")
    for key, legend in (("modeled_time_s", f"TNGD, modeled ({hardware.DEFAULT_HARDWARE})"),
                        ("paper_time_s", "TNGD, the paper's accounting")):
        ax.plot([r["n_params"] for r in rows], [r["optimizers"]["tngd"][key] for r in rows], "--", marker="s",
                label=legend)
    ax.set(xscale="log", yscale="log", xlabel="parameters N", ylabel="time per iteration (s)",
           title="TNGD paper Fig. 2: per-iteration time, MNIST CNN widened, b = 32, dz = 20")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out + ".png", dpi=110)
    plt.close(fig)
    lines = ["| N | " + " | ".join(f"{n} measured (s)" for n in legends) + " | TNGD modeled (s) | TNGD paper (s) |",
             "|" + "---|" * (len(legends) + 3)]
    for r in rows:
        o = r["optimizers"]
        cells = [f"{o[n]['wall_s']['median_s']:.3g}" if n in o else "skipped" for n in legends]
        lines.append(f"| {r['n_params']:,} | " + " | ".join(cells)
                     + f" | {o['tngd']['modeled_time_s']:.3g} | {o['tngd']['paper_time_s']:.3g} |")
    text = ("# TNGD paper Fig. 2: time per iteration against N" + (" [quick form]" if args.quick else "") + "\n\n"
            + "\n".join(lines) + "\n\nThe paper measured on an AMD EPYC 7763 and estimated TNGD; here a 2-core CPU. "
            f"Dense NGD runs only up to N = {FIG2_DENSE_MAX_N:,.0f} (an N x N matrix).\n")
    with open(out + ".md", "w") as f:
        f.write(text)
    return text


def make_kfac_width(args) -> str:
    from . import kfac_width

    os.makedirs(args.out, exist_ok=True)
    stem = output_stem(args.out, "kfac-width", ["task=mnist"] if args.data_dir else ["task=digits"])
    return kfac_width.make(stem, args.data_dir, args.quick)


CROSSOVER_DIGITS = (ADAM, _curve("kfac", "digital K-FAC", "optimizer=kfac"),
                    _curve("tngd", "TNGD, t = 50 tau (exact law)", *TNGD, EXACT_LAW),
                    _curve("thermo-kfac", "thermodynamic K-FAC", "optimizer=thermo_kfac", "device=thermal"))


def _run_curves(curves, task: list[str], seeds: int, args, max_steps: dict | None = None) -> dict[str, list[str]]:
    """Run (or reuse) ``curves`` on ``task`` for ``seeds`` seeds, each capped at ``max_steps[label]`` steps when
    given; their run directories by label."""
    dirs = {}
    for curve in curves:
        cap = (max_steps or {}).get(curve.label)
        for seed in range(seeds):
            job = task + ["run.progress=false", "run.plots=false", *curve.overrides, f"seed={seed}"]
            job += [f"run.max_steps={cap}"] if cap else []
            run_dir = run_directory(args.runs, job)
            print(f"[crossover] {curve.label} seed {seed} -> {run_dir}", flush=True)
            run_once(job, run_dir)
            dirs.setdefault(curve.label, []).append(str(run_dir))
    return dirs


def make_crossover(args) -> str:
    """Where would the thermodynamic optimizers win? (experiments.crossover): time and energy to 90% test
    accuracy, ours over Adam and over digital K-FAC, across link bandwidth x tau, per digital platform, from the
    recorded digits runs (run here) and MNIST runs (fig3's and kfac-bits' with ``--data-dir``)."""
    from . import crossover, recost

    os.makedirs(args.out, exist_ok=True)
    tasks = {"digits": _run_curves(CROSSOVER_DIGITS, ["task=digits"], 3, args)}
    if args.data_dir:
        mnist = ["task=mnist", f"task.data_dir={os.path.abspath(args.data_dir)}"]
        fig3, bits = FIGURES["fig3"], FIGURES["kfac-bits"]
        pick = lambda figure, label: next(c for c in figure.curves if c.label == label)
        # fig3's Euler-Maruyama TNGD fails at step ~35 on MNIST (EULER_UNSTABLE): its exact-law runs stand for it
        curves = (pick(fig3, "adam"), pick(fig3, "tngd-exact-law"), pick(bits, "kfac"),
                  pick(bits, "thermo-kfac-ideal"))
        seeds = args.seeds or (2 if args.quick else 3)
        # each curve as its figure ran it: fig3's for the task's epochs, kfac-bits' capped (--max-steps overrides)
        caps = {label: args.max_steps or bits.max_steps for label in ("kfac", "thermo-kfac-ideal")}
        runs = _run_curves(curves, mnist, seeds, args, caps)
        tasks["mnist"] = {"adam": runs["adam"], "tngd": runs["tngd-exact-law"], "kfac": runs["kfac"],
                          "thermo-kfac": runs["thermo-kfac-ideal"]}
    analog = hardware.analog_platform("paper")
    lines = ["# Crossover: time to 90% test accuracy, ours over the baseline", "",
             "| task | ours / baseline | platform | ratio at the paper's constants (50 Gb/s, tau = 1 us) | "
             "break-even bandwidth at tau = 1 us | at tau = 10 ns | energy ratio at tau = 1 us | "
             "dominant term of ours at the paper's constants |", "|" + "---|" * 8]
    for task, dirs in tasks.items():
        records = {label: [recost.RunRecord(d) for d in paths] for label, paths in dirs.items()}
        maps = {}
        for platform in ("a100", "h100", "cpu"):
            digital = hardware.digital_platform(platform)
            for ours in ("tngd", "thermo-kfac"):
                for base in ("adam", "kfac"):
                    m = crossover.ratio_maps(records[ours], records[base], 0.9, digital, analog)
                    maps[f"{ours} / {base}, {platform}"] = m
                    fmt = lambda v: "never on the grid" if v is None else f"{v:.3g} bit/s"
                    terms = m["terms_at_paper"]
                    dominant = max(terms, key=terms.get) if terms else "does not reach 90%"
                    energy = m["energy"][np.argmin(np.abs(np.log(crossover.TAUS / 1e-6)))]
                    lines.append(f"| {task} | {ours} / {base} | {digital.name} | {m['at_paper']:.3g} | "
                                 f"{fmt(crossover.break_even_bandwidth(m['time'], 1e-6))} | "
                                 f"{fmt(crossover.break_even_bandwidth(m['time'], 1e-8))} | {energy:.3g} | {dominant} |")
            crossover.plot_maps({k: v for k, v in maps.items() if k.endswith(platform)},
                                os.path.join(args.out, f"crossover-{task}-{platform}.png"),
                                f"{task}: time (top) and energy (bottom) to 90% test accuracy, ours over the baseline, "
                                f"on {digital.name} + the analog platform")
    text = "\n".join(lines) + "\n"
    with open(os.path.join(args.out, "crossover.md"), "w") as f:
        f.write(text)
    return text


def make_uncertainty(args) -> str:
    """Laplace uncertainty (experiments.uncertainty) on the MAP of the Adam curve's seed-0 run (fig3's on MNIST)."""
    from . import uncertainty

    os.makedirs(args.out, exist_ok=True)
    task = task_overrides(FIGURES["fig3"], args)
    job = task + ["run.progress=false", "run.plots=false", *ADAM.overrides, "seed=0"]
    run_dir = run_directory(args.runs, job)
    print(f"[uncertainty] MAP: adam seed 0 -> {run_dir}", flush=True)
    run_once(job, run_dir)
    return uncertainty.make(output_stem(args.out, "uncertainty", task), str(run_dir), compose_config(job),
                            args.quick)


STUDIES = {"fig2": make_fig2, "kfac-width": make_kfac_width, "crossover": make_crossover,
           "uncertainty": make_uncertainty}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("figure", choices=[*FIGURES, *STUDIES, "all"])
    parser.add_argument("--data-dir", help="MNIST IDX directory (default: scikit-learn digits, a pipeline check)")
    parser.add_argument("--data-path", help="SQuAD v1.1 JSON or zip (fig5, kfac-bits-qa)")
    parser.add_argument("--seeds", type=int, help="seeds per curve (default: the figure's: 5 for the TNGD figures)")
    parser.add_argument("--quick", action="store_true", help="fewer seeds and steps; the rows are marked [quick]")
    parser.add_argument("--max-steps", type=int, help="cap every run's steps")
    parser.add_argument("--runs", default="runs/figures", help="where the run directories go")
    parser.add_argument("--out", default="figures", help="where the figures and tables go")
    args = parser.parse_args(argv)
    names = ([n for n, f in FIGURES.items() if f.task != "squad" or args.data_path] + list(STUDIES)
             if args.figure == "all"
             else [args.figure])
    for name in names:
        print(STUDIES[name](args) if name in STUDIES else make_figure(FIGURES[name], args))


if __name__ == "__main__":
    main()
