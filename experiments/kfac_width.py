r"""The thermodynamic K-FAC paper's scaling claim: its advantage over digital K-FAC grows with the layer width n.

For each width n an MLP in -> n -> n -> 10 is trained with digital K-FAC on real data (MNIST from a directory, or
the digits), so its Kronecker factors are real ones; the middle layer's damped factors (n + 1 inputs with the bias,
n outputs) are then handed to the two block solvers, whose work records are priced by the hardware models:

- digital (:class:`kfac_thermo.DigitalKronecker`): two SPD inverses at each refresh (O(n^3)), the products
  ``S^-1 G A^-1`` every step (O(n^3) too, but matrix products);
- thermodynamic (:class:`kfac_thermo.ThermoKronecker`, method "solve"): both factors programmed at a refresh
  (n^2 couplings each), every step the gradient block in and out of the device twice (O(n^2) values) and two
  runs of t tau, where t is what the measured factors need to relax to the converters' precision:
  ``t = ln(2^bits) / lambda_min(P)`` for the drift ``P = M / max |M_ij|`` the device holds (its smallest eigenvalue
  from the measured condition number; O(n^2 kappa) in all, with ``kappa`` of the real factors, not an assumed one).

A step's modeled time is the refresh amortised over the refresh period plus the per-step work (the statistics,
the same for both, left out). Writes ``<out>/kfac-width.png``, ``.md`` and ``.json`` (the rows, read by the
reproduction table's row of this claim, ``experiments.claims``).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import optax

import kfac_thermo

from . import hardware, rundir
from .data import load_digits, load_mnist
from .models import split_model

WIDTHS = (64, 128, 256, 512, 1024, 2048)
WIDTHS_QUICK = (64, 256, 1024)
PERIOD, STEPS, BATCH, DAMPING, BITS = 10, 60, 256, 1e-2, 16
PLATFORMS = ("a100+paper", "h100+optimistic")


def trained_factors(width: int, images: np.ndarray, labels: np.ndarray, seed: int = 0):
    """The middle layer's K-FAC factors ``(A, S)`` after ``STEPS`` steps of digital K-FAC on the data."""
    import equinox as eqx

    inputs = images.reshape(len(images), -1).astype(np.float32)
    model = eqx.nn.MLP(inputs.shape[1], 10, width, depth=2, activation=jax.nn.relu, key=jr.key(seed))
    params, predict_fn = split_model(model)
    x = jnp.asarray(inputs[:BATCH])
    tx = kfac_thermo.kfac(0.01, predict_fn=predict_fn, loss="softmax_cross_entropy", damping=DAMPING,
                          example_inputs=x, curvature_period=PERIOD, inverse_period=PERIOD)

    @jax.jit
    def step(params, state, x, y):
        loss = lambda p: optax.softmax_cross_entropy_with_integer_labels(predict_fn(p, x), y).mean()
        grads = jax.grad(loss)(params)
        updates, state = tx.update(grads, state, params, batch=(x, y))
        return optax.apply_updates(params, updates), state

    state = tx.init(params)
    rng = np.random.default_rng(seed)
    for _ in range(STEPS):
        batch = rng.choice(len(inputs), BATCH, replace=False)
        params, state = step(params, state, jnp.asarray(inputs[batch]), jnp.asarray(labels[batch]))
    kfac_state = next(s for s in jax.tree_util.tree_leaves(state, is_leaf=lambda s: isinstance(
        s, kfac_thermo.KFACState)) if isinstance(s, kfac_thermo.KFACState))
    return kfac_state.factors[1]  # (A, S) of the n -> n layer


def relaxation_time(M: np.ndarray, bits: int = BITS) -> tuple[float, float]:
    """``(kappa(M), t)``: the condition number of a damped factor and the run time (tau of the normalised drift
    ``M / max |M_ij|``) after which the transient ``exp(-lambda_min t)`` is below ``2^-bits``."""
    w = np.linalg.eigvalsh(np.asarray(M, np.float64))
    lam_min = w[0] / np.abs(M).max()
    return float(w[-1] / w[0]), float(bits * math.log(2.0) / lam_min)


def layer_works(A, S, t: float) -> dict[str, kfac_thermo.Work]:
    """One K-FAC step's work on this layer for each solver, the refresh amortised over ``PERIOD`` steps."""
    G = jnp.zeros((S.shape[0], A.shape[0]), A.dtype)
    out = {}
    for name, solver in (("digital", kfac_thermo.DigitalKronecker()),
                         ("thermodynamic", kfac_thermo.ThermoKronecker(t=t))):
        prepared, refresh = solver.refresh((A, S), jnp.asarray(DAMPING, A.dtype), None)
        _, _, apply = solver.apply(prepared, G, (), step=jnp.asarray(1), key=None)
        out[name] = jax.device_get(kfac_thermo.sequential_work([refresh.scaled(1.0 / PERIOD), apply]))
    return out


def study(widths, images, labels) -> list[dict]:
    profile = hardware.PassProfile(1, *(hardware.PassCost(0.0, 0.0, 0.0),) * 2)  # no model passes in these works
    rows = []
    for n in widths:
        A, S = trained_factors(n, images, labels)
        A_d, S_d = kfac_thermo.factored_damping(A, S, DAMPING)
        (kappa_a, t_a), (kappa_s, t_s) = relaxation_time(A_d), relaxation_time(S_d)
        t = max(t_a, t_s)
        works = layer_works(A, S, t)
        row = {"n": n, "kappa_A": kappa_a, "kappa_S": kappa_s, "t_tau": t}
        for spec in PLATFORMS:
            platforms = hardware.Hardware.build(spec)
            for name, work in works.items():
                row[f"{name} {spec}"] = hardware.step_cost(work, profile, platforms.digital, platforms.analog).time_s
        rows.append(row)
        print(f"  kfac-width n = {n}: kappa_A {kappa_a:.3g}, kappa_S {kappa_s:.3g}, t {t:.3g} tau", flush=True)
    return rows


def markdown(rows: list[dict], note: str) -> str:
    header = ["n", "kappa(A_d)", "kappa(S_d)", "t needed (tau)"] + [
        f"{name} s/step ({spec})" for spec in PLATFORMS for name in ("digital", "thermodynamic")]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in rows:
        cells = [f"{r['n']}", f"{r['kappa_A']:.3g}", f"{r['kappa_S']:.3g}", f"{r['t_tau']:.3g}"] + [
            f"{r[f'{name} {spec}']:.3g}" for spec in PLATFORMS for name in ("digital", "thermodynamic")]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n\n" + note + "\n"


def plot(rows: list[dict], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = [r["n"] for r in rows]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for spec, style in zip(PLATFORMS, ("-", "--")):
        for name, color in (("digital", "C0"), ("thermodynamic", "C3")):
            axes[0].plot(n, [r[f"{name} {spec}"] for r in rows], style, color=color, marker="o",
                         label=f"{name} K-FAC, {spec}")
    axes[0].set(xscale="log", yscale="log", xlabel="layer width n",
                ylabel="modeled time per K-FAC step of the layer (s)")
    axes[0].legend(fontsize=7)
    axes[1].plot(n, [r["kappa_A"] for r in rows], marker="o", label="kappa of A + damping (inputs)")
    axes[1].plot(n, [r["kappa_S"] for r in rows], marker="o", label="kappa of S + damping (output derivatives)")
    axes[1].set(xscale="log", yscale="log", xlabel="layer width n", ylabel="measured condition number")
    axes[1].legend(fontsize=7)
    fig.suptitle("Thermodynamic K-FAC paper: the advantage against layer width, with real factors' conditioning")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def make(out_stem: str, data_dir: str | None, quick: bool) -> str:
    if data_dir:
        train, _ = load_mnist(data_dir, 5000, 5000, 0)
        source = "MNIST (5,000 training images)"
    else:
        train, _ = load_digits(497, 0)
        source = "scikit-learn digits"
    rows = study(WIDTHS_QUICK if quick else WIDTHS, train.images, train.labels)
    note = (f"Factors from {STEPS} steps of digital K-FAC (batch {BATCH}, damping {DAMPING}, refresh every {PERIOD}) "
            f"on an MLP in -> n -> n -> 10 trained on {source}; t relaxes the normalised drift to 2^-{BITS}; the "
            f"refresh is amortised over {PERIOD} steps; the statistics (the same for both) are left out."
            + (" [quick form]" if quick else ""))
    text = markdown(rows, note)
    rundir.write_json(out_stem + ".json", {"rows": [{k: float(v) for k, v in r.items()} for r in rows],
                                           "platforms": list(PLATFORMS), "quick": quick})
    with open(out_stem + ".md", "w") as f:
        f.write("# Thermodynamic K-FAC against digital K-FAC, per layer, against its width n\n\n" + text)
    plot(rows, out_stem + ".png")
    return text
