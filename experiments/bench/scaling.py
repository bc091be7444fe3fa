"""The TNGD paper's runtime figure: time per iteration against the parameter count N.

A model widened to N parameters, batch 32, dz = 20 — an MLP 100-h-20 (tanh; the suite's section), or the MNIST CNN
with its hidden layer widened (``model="cnn"``: the paper's Fig. 2) — with TNGD (t = 50 tau, noiseless, the exact
law), dense NGD (small N only), NGD-CG (c = 200 iterations) and NGD-Woodbury, each over Adam, as simulated wall
time and as modeled hardware time of the step's work records.
"""

from __future__ import annotations

import gc

import optax

import kfac_thermo
import thermox
from experiments import hardware
from experiments.models import count_parameters

from . import problems
from .tables import markdown_table, ms
from .timing import GIB, StepTimer, time_steps

INPUTS, DZ, BATCH = 100, 20, 32
SIZES = (1e4, 3e4, 1e5, 3e5, 1e6)
SIZES_QUICK = (3e3, 1e5)
DENSE_MAX_N = 1e4  # dense NGD: an N x N matrix and an O(N^3) Cholesky per step (10-25 s at N = 1e4 here)
DENSE_MAX_N_QUICK = 5e3
OPTIMIZERS = ("adam", "tngd", "ngd", "ngd_cg", "ngd_woodbury")


CNN_IMAGE, CNN_CHANNELS = 28, 8


def hidden_for(n_params: float, inputs: int, outputs: int) -> int:
    """Hidden width of an MLP inputs -> h -> outputs (``inputs`` features into the hidden layer; for the CNN its
    flattened convolution output) with about ``n_params`` parameters."""
    return max(1, round((n_params - outputs) / (inputs + 1 + outputs)))


def problem(model: str, target: float, inputs: int, outputs: int, batch: int):
    """``(hidden, (params, predict_fn, x, y))`` of the widened ``model`` ("mlp" or "cnn") at about ``target``
    parameters."""
    if model == "cnn":
        features = CNN_CHANNELS * (CNN_IMAGE - 2) ** 2
        hidden = hidden_for(target - 10 * CNN_CHANNELS, features, outputs)
        return hidden, problems.cnn(CNN_IMAGE, batch, outputs, channels=CNN_CHANNELS, hidden=hidden)
    if model != "mlp":
        raise ValueError(f"unknown scaling model {model!r}; choose 'mlp' or 'cnn'")
    hidden = hidden_for(target, inputs, outputs)
    return hidden, problems.mlp(inputs, hidden, outputs, batch)


def optimizers(predict_fn, n_params: int, *, cg_iterations: int = 200, dense_max_n: float = DENSE_MAX_N,
               include=OPTIMIZERS) -> tuple[dict, dict]:
    """The optimizers of the runtime figure at one size, and the skipped ones with their reason."""
    common = dict(predict_fn=predict_fn, loss="softmax_cross_entropy", damping=0.01)
    factories = {
        "adam": lambda: optax.adam(1e-3),
        "tngd": lambda: kfac_thermo.tngd(0.01, t=50.0, device=thermox.AnalogDevice(), **common),
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


def section(quick: bool, repeats: int | None = None, *, sizes=None, inputs: int = INPUTS, outputs: int = DZ,
            batch: int = BATCH, cg_iterations: int = 200, dense_max_n: float | None = None,
            include=OPTIMIZERS, model: str = "mlp") -> dict:
    """The suite's ``scaling`` section: per-iteration wall time and modeled hardware time against N (TNGD paper
    Fig. 2); ``quick``: N ~ 3e3 and 1e5, dense NGD up to 5e3, 2 repeats."""
    sizes = sizes or (SIZES_QUICK if quick else SIZES)
    repeats = repeats or (2 if quick else 3)
    if dense_max_n is None:
        dense_max_n = DENSE_MAX_N_QUICK if quick else DENSE_MAX_N
    rows = []
    machine = hardware.calibrate()
    for target in sizes:
        hidden, (params, predict_fn, x, y) = problem(model, target, inputs, outputs, batch)
        n_params = count_parameters(params)
        chosen, skipped = optimizers(predict_fn, n_params, cg_iterations=cg_iterations, dense_max_n=dense_max_n,
                                     include=include)
        timers = {name: StepTimer(problems.cross_entropy_step(opt, predict_fn), params, opt.init(params), (x, y),
                                  min_call_s=0.1)
                  for name, opt in chosen.items()}
        stats = time_steps(timers, repeats, on_compiled=lambda n, t, N=n_params: print(
            f"  scaling N = {N:,}: compiled {n} ({t.compile_s:.1f} s, first step {t.first_call_s:.2f} s)", flush=True))
        profile = hardware.measure_passes(predict_fn, params, x)
        measured = hardware.Measured(machine, hardware.measure_pass_seconds(predict_fn, params, x))
        row = {"n_target": target, "n_params": n_params, "hidden": hidden, "skipped": skipped, "optimizers": {}}
        for name, timer in timers.items():
            row["optimizers"][name] = {
                "wall_s": stats[name], "model_calls": problems.model_calls(timer.state),
                "modeled_time_s": problems.modeled_time_s(timer.state, profile, n_params),
                "paper_time_s": hardware.paper_seconds(timer.state, profile, measured, batch, n_params),
                "peak_bytes": (stats[name]["memory"] or {}).get("peak_bytes"),
            }
        rows.append(row)
        del timers, stats
        gc.collect()
    return {
        "setting": {"model": (f"MNIST CNN ({CNN_CHANNELS} channels) -> h -> {outputs}" if model == "cnn"
                              else f"MLP {inputs}-h-{outputs} (tanh)") + ", hidden width widened",
                    "batch": batch, "dz": outputs,
                    "cg_iterations": cg_iterations, "dense_max_n": dense_max_n, "repeats": repeats,
                    "tngd": "t = 50 tau, noiseless, exact low-rank law, damping 0.01",
                    "modeled": "the work records and the gradient's passes priced by experiments.hardware on "
                               f"{hardware.DEFAULT_HARDWARE}",
                    "paper": "the paper's accounting: the passes at their wall time measured here, the rest on this "
                             "machine's calibrated roofline, the analog work at the paper's Appendix C constants"},
        "rows": rows,
    }


def markdown(scaling: dict) -> str:
    """The suite report's section: wall and modeled time per optimizer and size, and what was skipped."""
    s = scaling["setting"]
    names = list(OPTIMIZERS)
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
