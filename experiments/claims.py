r"""The papers' claims, checked against this project's runs of their figures (``experiments.figures``).

Each :class:`Claim` names the figure and what the paper states, computes ours from the figure's finished runs
(means and spreads over seeds), and gives a verdict: "holds", "holds in part" or "does not hold", with the reason
in one sentence. The claims of the studies that are not training runs (Fig. 2's timings, the K-FAC width study)
read the record the study wrote beside its figure (``<out>/<study>.json``, :data:`STUDY_CLAIMS`). A claim whose
runs are missing says so instead of guessing. ``python scripts/reproduction.py --data-dir ... [--runs ...]`` writes
the README's table (``figures/reproduction.md``) after the figures have run.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
from typing import Any, Callable

import numpy as np

from . import figures, rundir
from .plots import moving_average


@dataclasses.dataclass
class Curve:
    """A figure curve's finished runs: per seed its metrics records and summary."""

    legend: str
    runs: list[dict]

    def summaries(self) -> list[dict]:
        return [run["summary"] for run in self.runs]

    def final(self, key: str) -> np.ndarray:
        """Each seed's last value of ``key`` (a test metric, ``train_loss``, or an account)."""
        return np.array([next((r[key] for r in reversed(run["metrics"]) if key in r), np.nan) for run in self.runs])

    def smoothed_final_loss(self, window: int = 200) -> np.ndarray:
        """Each seed's training loss averaged over its last ``window`` steps (the paper's smoothing)."""
        return np.array([np.mean([r["train_loss"] for r in run["metrics"] if "train_loss" in r][-window:])
                         for run in self.runs])

    def first_reaching(self, threshold: float, key: str = "step", metric: str = "test_accuracy") -> np.ndarray:
        """Each seed's ``key`` (step, or an account) at its first evaluation with ``metric >= threshold`` (inf when
        it never gets there)."""
        out = []
        for run in self.runs:
            hit = next((r for r in run["metrics"] if r.get(metric, -np.inf) >= threshold), None)
            out.append(np.inf if hit is None else hit[key])
        return np.array(out, float)

    def first_smoothed_below(self, target: float, window: int) -> np.ndarray:
        """Each seed's first step at which its training loss averaged over the last ``window`` steps is at or below
        ``target`` (inf when it never is)."""
        out = []
        for run in self.runs:
            records = [r for r in run["metrics"] if "train_loss" in r]
            if len(records) < window:  # too short for one average (moving_average would shrink its window)
                out.append(np.inf)
                continue
            hit = np.flatnonzero(moving_average(np.array([r["train_loss"] for r in records]), window) <= target)
            out.append(records[hit[0] + window - 1]["step"] if hit.size else np.inf)
        return np.array(out, float)

    def per_step(self, key: str) -> np.ndarray:
        """Each seed's ``key`` (a cumulative account) per step, over its whole run."""
        return np.array([run["metrics"][-1][key] / run["metrics"][-1]["step"] for run in self.runs])

    def stopped(self) -> list[str]:
        return [why for run in self.runs if (why := run["stopped"])]


def load(figure: figures.Figure, args) -> dict[str, Curve]:
    """The figure's curves as run (only runs with a summary; none when a figure has not run)."""
    curves: dict[str, Curve] = {}
    cap = figures.step_cap(figure, args)
    for curve, _, job in figures.figure_jobs(figure, args):
        run_dir = str(figures.run_directory(args.runs, job))
        entry = curves.setdefault(curve.label, Curve(curve.legend, []))
        if os.path.exists(os.path.join(run_dir, rundir.SUMMARY)):
            run = rundir.read_run(run_dir, cap)
            entry.runs.append({**run, "stopped": figures.stop_reason(run["summary"])})
    return curves


def spread(values: np.ndarray, spec: str = ".3f") -> str:
    """``mean ± std (n seeds)``; unreached (inf) values counted and said."""
    finite = values[np.isfinite(values)]
    if not finite.size:
        return f"never ({len(values)} seeds)"
    text = f"{finite.mean():{spec}}" + (f" ± {finite.std():{spec}}" if finite.size > 1 else "")
    missing = len(values) - finite.size
    return text + f" ({finite.size} seeds" + (f"; {missing} never" if missing else "") + ")"


@dataclasses.dataclass(frozen=True)
class Claim:
    """One row of the reproduction table."""

    figure: str
    statement: str
    check: Callable[[Any], tuple[str, str, str]]  # a figure's curves or a study's record -> (ours, verdict, reason)


def _need(curves: dict[str, Curve], *labels: str) -> str | None:
    missing = [label for label in labels if not curves.get(label) or not curves[label].runs]
    return f"runs missing: {', '.join(missing)}" if missing else None


def fig3_accuracy(c):
    if why := _need(c, "adam", "tngd-exact-law", "ngd-exact"):
        return why, "not run", ""
    adam, tngd, ngd = (c[k].final("test_accuracy") for k in ("adam", "tngd-exact-law", "ngd-exact"))
    ours = f"Adam {spread(adam)}, TNGD {spread(tngd)}, exact NGD {spread(ngd)} after 10 epochs"
    near = lambda v: abs(np.nanmean(v) - 0.94) <= 0.02
    verdict = "holds" if near(adam) and near(tngd) else "holds in part" if near(adam) or near(tngd) else "does not hold"
    return ours, verdict, "on half the paper's training images (5,000) the accuracies are read against its ~94%"


def fig3_euler(c):
    if why := _need(c, "tngd"):
        return why, "not run", ""
    stops = c["tngd"].stopped()
    if not stops:
        return f"TNGD by Euler-Maruyama: {spread(c['tngd'].final('test_accuracy'))} final accuracy", "holds", \
            "the paper's simulation ran the whole schedule"
    return (f"{len(stops)} of {len(c['tngd'].runs)} seeds stop: {stops[0]}", "does not hold",
            "lambda_max of the GGN passes 2 / dt = 20 after ~35 steps, where Euler-Maruyama at dt = 0.1 tau is "
            "unstable; the device's exact law (the same physics) trains on")


def fig3_runtime(c):
    if why := _need(c, "adam", "tngd-exact-law"):
        return why, "not run", ""
    adam, tngd = c["adam"], c["tngd-exact-law"]
    per_step = tngd.per_step("paper_time_s") / adam.per_step("paper_time_s")
    t_adam = adam.first_reaching(0.9, "paper_time_s")
    t_tngd = tngd.first_reaching(0.9, "paper_time_s")
    ours = (f"paper accounting: TNGD {np.mean(per_step):.3g}x Adam's time per iteration; time to 90%: Adam "
            f"{spread(t_adam, '.3g')} s, TNGD {spread(t_tngd, '.3g')} s")
    wins = np.nanmedian(t_tngd) < np.nanmedian(t_adam)
    return (ours, "holds" if wins else "does not hold",
            "with the paper's own Appendix C constants the b dz (b dz + 2N) couplings reprogrammed every step "
            "cost more than the steps TNGD saves" if not wins else "fewer steps outweigh the per-step cost")


def fig3_close_to_ngd(c):
    if why := _need(c, "tngd-exact-law", "ngd-exact"):
        return why, "not run", ""
    tngd, ngd = c["tngd-exact-law"].smoothed_final_loss(), c["ngd-exact"].smoothed_final_loss()
    ours = f"final training loss (200-step average): TNGD {spread(tngd)}, exact NGD {spread(ngd)}"
    close = abs(np.mean(tngd) - np.mean(ngd)) <= 2 * max(np.std(tngd), np.std(ngd), 0.02)
    return ours, "holds" if close else "does not hold", "within two seed spreads" if close else \
        "outside two seed spreads"


def fig4a(c):
    labels = [f"tngd-t{t}" for t in (5, 10, 20, 50)]
    if why := _need(c, *labels, "ngd-exact"):
        return why, "not run", ""
    ngd = np.mean(c["ngd-exact"].smoothed_final_loss())
    gaps = [abs(np.mean(c[label].smoothed_final_loss()) - ngd) for label in labels]
    ours = "final training loss minus exact NGD's: " + ", ".join(
        f"t = {t}: {g:.3f}" for t, g in zip((5, 10, 20, 50), gaps))
    monotone = all(a >= b - 0.01 for a, b in zip(gaps, gaps[1:]))
    return ours, "holds" if monotone and gaps[-1] < gaps[0] else "does not hold", \
        "the gap shrinks as t grows" if monotone else "the gap does not shrink with t"


def fig4b(c):
    labels = [f"tngd-t5-delay{d:g}" for d in (0.0, 0.2, 1.0)]
    if why := _need(c, *labels, "ngd-exact"):
        return why, "not run", ""
    losses = [c[label].smoothed_final_loss() for label in labels]
    ngd = c["ngd-exact"].smoothed_final_loss()
    ours = ", ".join(f"t_d = {d:g}: {spread(v)}" for d, v in zip((0, 0.2, 1), losses)) + f"; exact NGD {spread(ngd)}"
    helps = np.mean(losses[2]) < np.mean(losses[0]) - np.std(losses[0])
    beats = min(np.mean(v) for v in losses[1:]) < np.mean(ngd)
    verdict = "holds" if helps and beats else "holds in part" if helps or beats else "does not hold"
    reason = ("a delay lowers the final training loss" + (" and beats exact NGD" if beats else
                                                          ", without beating exact NGD")) if helps else \
        "the delay does not lower the final training loss beyond the seed spread"
    return ours, verdict, reason


def fig7(c):
    labels = [f"tngd-t1-kappa{k:g}" for k in (0.1, 0.01, 0.001)] + ["tngd-t1-noiseless"]
    if why := _need(c, *labels):
        return why, "not run", ""
    losses = {label: c[label].smoothed_final_loss() for label in labels}
    clean = losses["tngd-t1-noiseless"]
    ours = ", ".join(f"kappa0 = {k:g}: {spread(losses[f'tngd-t1-kappa{k:g}'])}" for k in (0.1, 0.01, 0.001)) + \
        f"; noiseless {spread(clean)} (final training loss)"
    band = 2 * max(np.std(clean), 0.01)
    gaps = {k: np.mean(losses[f"tngd-t1-kappa{k:g}"]) - np.mean(clean) for k in (0.01, 0.001)}
    within = [k for k, gap in gaps.items() if abs(gap) <= band]
    verdict = "holds" if len(within) == 2 else "holds in part" if within else "does not hold"
    return ours, verdict, (f"final training loss above noiseless: kappa0 = 0.01 by {gaps[0.01]:.3f}, kappa0 = 0.001 by "
                           f"{gaps[0.001]:.3f}, against two seed spreads ({band:.3f})")


def _bits_labels() -> list[str]:
    return [curve.label for curve in figures.BITS_CURVES]


def _advantage_kept(score: dict[str, float], what: str, spec: str, never: str) -> tuple[str, str, str]:
    """The share of digital K-FAC's lead over Adam kept at each bit width, ``(Adam - bits) / (Adam - K-FAC)`` on a
    ``score`` where lower is better (steps to a target); a width that never scores (inf) keeps none."""
    text = lambda label: f"{score[label]:{spec}}" if np.isfinite(score[label]) else "never"
    gain = score["adam"] - score["kfac"]
    if not np.isfinite(gain) or gain <= 0:
        return (f"{what}: Adam {text('adam')}, K-FAC {text('kfac')}", "does not hold",
                "digital K-FAC has no advantage over Adam to keep on this task")
    kept = {b: (score["adam"] - score[f"thermo-kfac-{b}bit"]) / gain for b in figures.BITS}
    ours = (f"{what}: Adam {text('adam')}, K-FAC {text('kfac')}, ideal device "
            f"{text('thermo-kfac-ideal')}; advantage kept: "
            + ", ".join(f"{b} bits {100 * k:.0f}%" if np.isfinite(k) else f"{b} bits none ({never})"
                        for b, k in kept.items()))
    enough = [b for b, k in kept.items() if k >= 0.5]
    verdict = "holds" if 8 in enough else "holds in part" if enough else "does not hold"
    return ours, verdict, (f"at {min(enough)} bits and more at least half the advantage is kept" if enough
                           else "every tested bit width loses more than half the advantage")


def kfac_bits(c):
    """MNIST: median steps to 90% test accuracy."""
    if why := _need(c, *_bits_labels()):
        return why, "not run", ""
    steps = {label: np.median(c[label].first_reaching(0.9)) for label in _bits_labels()}
    return _advantage_kept(steps, "median steps to 90%", "g", "never reaches 90%")


QA_WINDOW = 50  # steps of the training-loss average on the QA task (its figures' smoothing)


def kfac_bits_qa(c):
    """QA: steps until the 50-step average training loss reaches Adam's final one (mean over seeds), and F1."""
    if why := _need(c, *_bits_labels()):
        return why, "not run", ""
    target = float(np.mean(c["adam"].smoothed_final_loss(QA_WINDOW)))
    steps = {label: np.median(c[label].first_smoothed_below(target, QA_WINDOW)) for label in _bits_labels()}
    ours, verdict, reason = _advantage_kept(steps, f"median steps to Adam's final training loss {target:.3f} "
                                            f"({QA_WINDOW}-step average)", "g", "never gets there")
    f1 = ", ".join(f"{label} {_final_f1(c[label])}" for label in _bits_labels())
    causes = sorted({_stop_parts(why)[1] for label in _bits_labels() for why in c[label].stopped()})
    return ours + f"; test F1: {f1}" + "".join(f"; stopped: {why}" for why in causes), verdict, reason


def _final_f1(curve: Curve) -> str:
    """A curve's final test F1 (mean over seeds), or where its first stopped seed stopped: the last evaluation of
    a run that failed early is the untrained model's, not a result."""
    if stops := curve.stopped():
        return _stop_parts(stops[0])[0]
    f1 = np.mean(curve.final("test_f1"))
    return f"{f1:.1f}" if np.isfinite(f1) else "none"


def _stop_parts(why: str) -> tuple[str, str]:
    """``("failed at step k", cause)`` of a :func:`experiments.figures.stop_reason` text (``"<where>: <cause>"``;
    the cause may hold colons of its own)."""
    where, cause = why.split(": ", 1)
    return where, cause


def fig5(c):
    """Training loss and F1 of Adam and the two TNGDs; a TNGD curve whose Euler-Maruyama runs stopped is read from
    its exact-law twin (the same device without a time step), as fig3 does, and the row says so."""
    labels = {}
    stopped = []
    for name in ("tngd", "tngd-adam"):
        exact = f"{name}-exact-law"
        if c.get(name) and c[name].runs and c[name].stopped() and c.get(exact) and c[exact].runs:
            labels[name] = exact
            stopped.append(f"{name} by Euler-Maruyama: {c[name].stopped()[0]}")
        else:
            labels[name] = name
    if why := _need(c, "adam", *labels.values()):
        return why, "not run", ""
    loss = {k: c[labels.get(k, k)].smoothed_final_loss(50) for k in ("adam", "tngd", "tngd-adam")}
    f1 = {k: c[labels.get(k, k)].final("test_f1") for k in ("adam", "tngd", "tngd-adam")}
    ours = ", ".join(f"{k}{' (exact law)' if labels.get(k, k) != k else ''}: loss {spread(loss[k])}, F1 "
                     f"{spread(f1[k], '.1f')}" for k in loss) + "".join(f"; {s}" for s in stopped)
    worse = np.mean(loss["tngd"]) > np.mean(loss["adam"])
    best = np.mean(loss["tngd-adam"]) < min(np.mean(loss["adam"]), np.mean(loss["tngd"]))
    verdict = "holds" if worse and best else "holds in part" if worse or best else "does not hold"
    return ours, verdict, ("TNGD's training loss ends above Adam's" if worse else "TNGD ends below Adam") + (
        " and TNGD-Adam's below both" if best else ", but TNGD-Adam is not the lowest")


SECOND_ORDER = {"ngd": "dense NGD", "ngd_cg": "NGD-CG", "ngd_woodbury": "NGD-Woodbury"}
ABOUT_100X = 100 / 3  # "about 100x": within a factor of 3


def fig2(record: dict | None):
    """Fig. 2's record (``figures.make_fig2``): each measured second-order method's time per iteration over TNGD's
    in the paper's accounting (the passes as measured, the device as estimated), at every width."""
    if record is None:
        return "fig2.json missing (python scripts/figures.py fig2)", "not run", ""
    speedups, parts = [], []
    for row in record["rows"]:
        o = row["optimizers"]
        tngd = o["tngd"]["paper_time_s"]
        ratios = {m: o[m]["wall_s"]["median_s"] / tngd for m in SECOND_ORDER if m in o}
        speedups += [(v, SECOND_ORDER[m], row["n_params"]) for m, v in ratios.items()]
        parts.append(f"N = {row['n_params']:,}: " + ", ".join(f"{SECOND_ORDER[m]} {v:.3g}x" for m, v in ratios.items()))
    ours = (f"time per iteration over TNGD's (paper accounting; median of {record['setting']['repeats']} timings): "
            + "; ".join(parts) + (" [quick form]" if record.get("quick") else ""))
    low, high = min(speedups), max(speedups)
    verdict = ("holds" if low[0] >= ABOUT_100X else "holds in part" if high[0] >= ABOUT_100X else "does not hold")
    if verdict == "holds":
        return ours, verdict, f"every measured method is at least {low[0]:.2g}x slower than TNGD"
    far = sorted({name for v, name, _ in speedups if v >= ABOUT_100X})
    return ours, verdict, (f"{low[1]} at N = {low[2]:,} takes {low[0]:.2g}x TNGD's time" + (
        f"; only {', '.join(far)} is 33x or more slower" if far else "; no method is 33x slower"))


def kfac_width(record: dict | None):
    """The width study's record (``experiments.kfac_width``): per platform the advantage ``a(n)`` = digital over
    thermodynamic modeled time per K-FAC step of a layer; it grows when the least-squares exponent p of
    ``a ~ n^p`` is positive and ``a`` ends above where it starts."""
    if record is None:
        return "kfac-width.json missing (python scripts/figures.py kfac-width --data-dir ...)", "not run", ""
    rows = record["rows"]
    n = np.array([r["n"] for r in rows])
    parts, grows = [], []
    for spec in record["platforms"]:
        a = np.array([r[f"digital {spec}"] / r[f"thermodynamic {spec}"] for r in rows])
        p = np.polyfit(np.log(n), np.log(a), 1)[0]
        grows.append(bool(p > 0 and a[-1] > a[0]))
        parts.append(f"{spec}: digital / device time {a[0]:.2g} at n = {n[0]:g} to {a[-1]:.2g} at n = {n[-1]:g} "
                     f"(a ~ n^{p:.2f})")
    kappa = f"kappa(A) {rows[0]['kappa_A']:.3g} to {rows[-1]['kappa_A']:.3g}"
    ours = "; ".join(parts) + f"; {kappa}" + (" [quick form]" if record.get("quick") else "")
    verdict = "holds" if all(grows) else "holds in part" if any(grows) else "does not hold"
    grown = ", ".join(spec for spec, g in zip(record["platforms"], grows) if g) or "no platform"
    flat = ", ".join(spec for spec, g in zip(record["platforms"], grows) if not g)
    return ours, verdict, f"the advantage grows with n on {grown}" + (f", not on {flat}" if any(grows) and flat else "")


CLAIMS = {
    "fig3": [Claim("Fig. 3", "TNGD and Adam both reach about 94% test accuracy", fig3_accuracy),
             Claim("Fig. 3", "the paper's simulation (Euler-Maruyama, dt = 0.1 tau) of TNGD at t = 50 tau",
                   fig3_euler),
             Claim("Fig. 3 / sec. 5.1", "TNGD beats Adam against runtime (measured Adam, estimated TNGD); about 2x "
                   "Adam's time per iteration", fig3_runtime),
             Claim("Fig. 3 / 4a", "TNGD at t = 50 tau is close to exact NGD", fig3_close_to_ngd)],
    "fig4a": [Claim("Fig. 4a", "TNGD approaches exact NGD as t grows over {5, 10, 20, 50} tau", fig4a)],
    "fig4b": [Claim("Fig. 4b", "a delay t_d in {0.2, 1} tau at t = 5 tau helps and can beat exact NGD", fig4b)],
    "fig7": [Claim("Fig. 7", "at t = tau, kappa0 <= 0.01 barely changes training", fig7)],
    "kfac-bits": [Claim("thermodynamic K-FAC paper", "quantized thermodynamic K-FAC keeps most of K-FAC's "
                        "advantage over Adam (MNIST)", kfac_bits)],
    "kfac-bits-qa": [Claim("thermodynamic K-FAC paper", "quantized thermodynamic K-FAC keeps most of K-FAC's "
                           "advantage over Adam (QA LoRA)", kfac_bits_qa)],
    "fig5": [Claim("Fig. 5", "QA fine-tuning: plain TNGD trains worse than Adam, TNGD-Adam best (training loss)",
                   fig5)],
}


STUDY_CLAIMS = {
    "fig2": [Claim("Fig. 2", "TNGD about 100x faster per iteration than the other second-order methods (CNN widened, "
                   "b = 32, dz = 20, c = 200; digital measured, TNGD estimated)", fig2)],
    "kfac-width": [Claim("thermodynamic K-FAC paper", "the advantage over digital K-FAC grows with the layer width n "
                         "(modeled time per K-FAC step, real factors' condition numbers)", kfac_width)],
}


def study_record(name: str, args) -> dict | None:
    """A study's record, ``<out>/<name>.json`` as ``figures.STUDIES[name]`` wrote it (the MNIST form of kfac-width
    with ``--data-dir``, its digits check without), or None when it has not run."""
    path = os.path.join(args.out, name + ("" if name == "fig2" or args.data_dir else "-digits") + ".json")
    return rundir.read_json(path) if os.path.exists(path) else None


def form_note(figure: figures.Figure, curves: dict[str, Curve]) -> str:
    """Where the runs found differ from the figure's full form: fewer seeds, or a step cap other than its own
    (``--quick`` / ``--max-steps`` runs); empty when they do not. A row with a note is not the paper's setting."""
    notes = []
    seeds = min((len(curve.runs) for curve in curves.values() if curve.runs), default=0)
    if 0 < seeds < figure.seeds:
        notes.append(f"{seeds} of the figure's {figure.seeds} seeds on some curves")
    caps = {run["summary"].get("run_control", {}).get("run.max_steps") for curve in curves.values()
            for run in curve.runs}
    short = sorted(cap for cap in caps if cap is not None and cap != figure.max_steps)
    if short:
        notes.append(f"runs capped at {', '.join(map(str, short))} steps (the full form: "
                     f"{figure.max_steps or 'the task epochs'}): a short form, not the paper's schedule")
    return f" [{'; '.join(notes)}]" if notes else ""


def reproduction_rows(args, names: list[str] | None = None) -> list[str]:
    """The table's rows for the figures and studies ``names`` (all of :data:`CLAIMS` and :data:`STUDY_CLAIMS` when
    None; the QA figures only with --data-path)."""
    checked = []  # (claim, what its check reads, the note on the runs' form)
    for name, claims in CLAIMS.items():
        figure = figures.FIGURES[name]
        if (names is not None and name not in names) or (figure.task == "squad" and not args.data_path):
            continue
        curves = load(figure, args)
        checked += [(claim, curves, form_note(figure, curves)) for claim in claims]
    for name, claims in STUDY_CLAIMS.items():
        if names is None or name in names:
            checked += [(claim, study_record(name, args), "") for claim in claims]
    rows = []
    for claim, evidence, note in checked:
        ours, verdict, reason = claim.check(evidence)
        rows.append(f"| {claim.figure} | {claim.statement} | {ours}{note} | **{verdict}** | {reason} |")
    return rows


HEADER = ["| paper | claim | ours | verdict | why |", "|---|---|---|---|---|"]


def _claim_key(row: str) -> str:
    """A row's paper and claim cells: what identifies it in the table."""
    return "|".join(row.split("|")[1:3])


def reproduction_table(args, names: list[str] | None = None, previous: str | None = None) -> str:
    """The claims table; with ``names``, the rows of those figures only, put in place of their rows in the
    ``previous`` table (whose other rows, from earlier runs, are kept as they are)."""
    rows = reproduction_rows(args, names)
    if previous is not None:
        fresh = {_claim_key(row): row for row in rows}
        kept = [line for line in previous.splitlines() if line.startswith("| ") and line not in HEADER[:1]]
        rows = [fresh.pop(_claim_key(row), row) for row in kept] + list(fresh.values())
    return "\n".join(HEADER + rows) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="The papers' claims against this project's figure runs.")
    parser.add_argument("--data-dir", help="MNIST IDX directory the figures ran on (default: digits)")
    parser.add_argument("--data-path", help="SQuAD v1.1 JSON or zip (fig5)")
    parser.add_argument("--runs", default="runs/figures", help="where the figures' run directories are")
    parser.add_argument("--out", default="figures", help="where reproduction.md goes")
    parser.add_argument("--quick", action="store_true", help="the figures' --quick runs")
    parser.add_argument("--figures", nargs="+", choices=[*CLAIMS, *STUDY_CLAIMS],
                        help="update only these figures' rows of the existing <out>/reproduction.md (the other rows "
                             "stay as earlier runs made them)")
    args = parser.parse_args(argv)
    args.seeds, args.max_steps = None, None
    path = os.path.join(args.out, "reproduction.md")
    previous = None
    if args.figures and os.path.exists(path):
        with open(path) as f:
            previous = f.read()
    table = reproduction_table(args, args.figures, previous)
    os.makedirs(args.out, exist_ok=True)
    with open(path, "w") as f:
        f.write(table)
    print(table)


if __name__ == "__main__":
    main()
