r"""The posterior study: Laplace uncertainty from the optimizers' curvature, digital and on the device (#17).

A CNN trained by Adam (the fig3 preset, seed 0) gives the MAP ``theta*``; each Laplace structure (full GGN,
K-FAC, diagonal, last layer) is fitted at it with the prior precision chosen by the Laplace evidence (post hoc, as
laplace-torch does: ``theta*`` was trained without that prior), and predicts by the linearised (GLM) Monte-Carlo
predictive over its samples, the predictive Laplace Redux recommends. The device samples the full-GGN posterior
(``P = n G + delta I`` programmed as the low-rank ``delta I + W W^T``) in a small sweep of temperature, run time
and converter bits, against the exact digital samples of the same posterior. Scored on the test split (accuracy,
NLL, ECE, Brier) and by telling it from out-of-distribution images (the test images rotated by 90 degrees, and
the test images with their pixels shuffled) by the predictive confidence (AUROC).

    python scripts/figures.py uncertainty [--data-dir MNIST] [--quick]
"""

from __future__ import annotations

import dataclasses
import time

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np

import kfac_thermo as kt
import thermox

from . import calibration, hardware
from .optimizers import build_optimizer
from .tasks import build_task
from .trainer import trained_params


@dataclasses.dataclass(frozen=True)
class Settings:
    """How much of the study runs.

    Attributes:
        full_examples: training examples in the full GGN (a seeded subset standing for all, None: all of them);
            the other structures use every training example.
        samples: posterior samples per predictive.
        bootstrap: resamples of the samples for the NLL's Monte-Carlo spread.
        structures: the Laplace structures fitted ("full" is the one the device samples).
    """

    full_examples: int | None = 500
    samples: int = 100
    bootstrap: int = 200
    structures: tuple[str, ...] = kt.LAPLACE_STRUCTURES


FULL, QUICK = Settings(), Settings(full_examples=200, samples=50, bootstrap=100)


@dataclasses.dataclass(frozen=True)
class DeviceRun:
    """One device configuration of the sweep; times in units of the slowest relaxation time ``1 / lambda_min(P)``.

    Attributes:
        label: the row's name.
        device: ``thermox.AnalogDevice`` fields besides the noise temperature.
        kappa0: noise temperature over the posterior's temperature.
        t: run time before a sample.
        chain: samples read ``interval`` apart on one chain (False: each a fresh run of ``t`` from ``theta*``).
    """

    label: str
    device: dict
    kappa0: float = 1.0
    t: float = 5.0
    chain: bool = True


INTERVAL = 3.0  # relaxation times between chain samples: the slowest mode keeps e^-3 = 5% of its correlation
DEVICE_SWEEP = (
    DeviceRun("kappa0 = T, t = 5 relaxation times (chain)", {}),
    DeviceRun("kappa0 = T, fresh runs of t = 0.2 relaxation times", {}, t=0.2, chain=False),
    DeviceRun("kappa0 = T / 10 (mis-set temperature), chain", {}, kappa0=0.1),
    DeviceRun("8-bit DAC/ADC and couplings, chain", {"dac_bits": 8, "adc_bits": 8, "coupling_bits": 8}),
)


def ood_sets(images: np.ndarray, seed: int) -> dict[str, np.ndarray]:
    """Out-of-distribution inputs made from the test images: each rotated by 90 degrees, and each with its pixels
    shuffled (the same intensities, no digit)."""
    rng = np.random.default_rng(seed)
    flat = images.reshape(len(images), -1)
    shuffled = np.stack([row[rng.permutation(row.size)] for row in flat]).reshape(images.shape)
    return {"rotated 90": np.rot90(images, axes=(1, 2)).copy(), "pixels shuffled": shuffled}


@eqx.filter_jit
def _sample_probs(posterior: kt.LaplacePosterior, inputs, samples) -> jax.Array:
    """Softmax of the linearised model at each sample, (S, b, classes)."""
    return jax.nn.softmax(posterior.output_samples(inputs, samples, linearised=True), axis=-1)


def _nll_curve(probs: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """NLL of the Monte-Carlo predictive from the first s samples, s = 1..S."""
    running = np.cumsum(probs[:, np.arange(len(labels)), labels], axis=0) / np.arange(1, len(probs) + 1)[:, None]
    return -np.mean(np.log(np.maximum(running, 1e-12)), axis=1)


def _bootstrap_nll(probs: np.ndarray, labels: np.ndarray, resamples: int, seed: int) -> float:
    """Standard deviation of the predictive's NLL over resamplings of its samples (its Monte-Carlo error)."""
    rng = np.random.default_rng(seed)
    picked = probs[:, np.arange(len(labels)), labels]
    nll = [-np.mean(np.log(np.maximum(picked[rng.integers(0, len(picked), len(picked))].mean(0), 1e-12)))
           for _ in range(resamples)]
    return float(np.std(nll))


def _evaluate(sets: dict[str, tuple[np.ndarray, np.ndarray | None]], predict) -> dict:
    """Scores on the test set and the OOD AUROCs of ``predict(inputs) -> probabilities``."""
    probs = {name: np.asarray(predict(x)) for name, (x, _) in sets.items()}
    x, labels = sets["test"]
    out = calibration.scores(probs["test"], labels)
    for name in sets:
        if name != "test":
            out[f"auroc {name}"] = calibration.ood_auroc(probs["test"], probs[name])
    return out


def _price(work: kt.Work, digital: str) -> tuple[float, float]:
    """Modeled seconds and joules of ``work`` (no model passes) on the ``digital`` preset and the paper's analog
    platform."""
    zero = hardware.PassCost(0.0, 0.0, 0.0)
    cost = hardware.step_cost(work, hardware.PassProfile(1, zero, zero), hardware.digital_platform(digital),
                              hardware.analog_platform("paper"))
    return cost.time_s, cost.energy_j


def make(stem: str, map_run: str, cfg, quick: bool, seed: int = 0) -> str:
    """Run the study on the MAP of the finished run ``map_run`` (its resolved config ``cfg``) and write ``stem.md``
    and ``stem.png``; returns the markdown."""
    settings = QUICK if quick else FULL
    task = build_task(cfg.task, cfg.seed)
    optimizer = build_optimizer(cfg.optimizer, cfg.device, predict_fn=task.predict_fn, loss=task.loss, seed=cfg.seed,
                                task_curvature=task.curvature,
                                example_inputs=jax.tree_util.tree_map(lambda leaf: leaf[:2], task.train[0]))
    params = trained_params(map_run, task, optimizer)
    x_train, y_train = (jnp.asarray(a) for a in task.train)
    test_x, test_y = task.test
    sets = {"test": (jnp.asarray(test_x), test_y), **{k: (jnp.asarray(v), None) for k, v in ood_sets(test_x, seed).items()}}
    n = len(y_train)
    rows, curves, posteriors = {}, {}, {}
    predict = jax.jit(lambda x: jax.nn.softmax(task.predict_fn(params, x), axis=-1))
    rows["MAP (Adam)"] = {**_evaluate(sets, predict), "delta": None, "fit_s": 0.0}
    key = jr.key(seed)
    for structure in settings.structures:
        data = (x_train, y_train)
        if structure == "full" and settings.full_examples and settings.full_examples < n:
            keep = np.sort(np.random.default_rng(seed).permutation(n)[:settings.full_examples])
            data = (x_train[keep], y_train[keep])
        start = time.perf_counter()
        posterior = kt.laplace(task.predict_fn, params, data, structure=structure, num_data=n, batch_size=128)
        posterior = posterior.optimize_prior_precision()
        jax.block_until_ready(posterior.blocks)
        fit_s = time.perf_counter() - start
        samples = posterior.sample(jr.fold_in(key, len(rows)), settings.samples)
        name = f"Laplace {structure}" + (f" ({len(data[1])} examples)" if len(data[1]) < n else "")
        rows[name] = {**_evaluate(sets, lambda x: _sample_probs(posterior, x, samples).mean(0)),
                      "delta": float(posterior.prior_precision), "fit_s": fit_s}
        posteriors[structure] = (posterior, samples)
    full, digital_samples = posteriors["full"]
    digital_probs = np.asarray(_sample_probs(full, sets["test"][0], digital_samples))
    curves["digital (exact samples)"] = _nll_curve(digital_probs, test_y)
    spread = _bootstrap_nll(digital_probs, test_y, settings.bootstrap, seed)
    relax = 1.0 / float(full.prior_precision)  # lambda_min(delta I + W W^T) = delta: W has fewer columns than rows
    device_rows = {"digital (exact samples)": {"nll": float(curves["digital (exact samples)"][-1]), "nll_sd": spread,
                                               **calibration.scores(digital_probs.mean(0), test_y),
                                               "cost": {p: _per_sample(full.digital_sampling_work(), p)
                                                        for p in ("a100", "cpu")}}}
    for i, run in enumerate(DEVICE_SWEEP):
        device = thermox.AnalogDevice(kappa0=run.kappa0 * float(full.temperature), **run.device)
        interval = INTERVAL * relax if run.chain else None
        samples = full.sample_on_device(device, jr.fold_in(key, 100 + i), settings.samples, t=run.t * relax,
                                        interval=interval)
        probs = np.asarray(_sample_probs(full, sets["test"][0], samples))
        curves[run.label] = _nll_curve(probs, test_y)
        work = full.device_sampling_work(device, t=run.t * relax, interval=interval)
        device_rows[run.label] = {"nll": float(curves[run.label][-1]),
                                  "nll_sd": _bootstrap_nll(probs, test_y, settings.bootstrap, seed),
                                  **calibration.scores(probs.mean(0), test_y),
                                  "cost": {"analog": _per_sample(work, "a100")}}
    text = _markdown(task.description, rows, device_rows, curves, settings, relax, quick)
    _plot(stem + ".png", rows, curves)
    with open(stem + ".md", "w") as f:
        f.write(text)
    return text


def _per_sample(work: tuple[kt.Work, kt.Work], digital: str) -> dict[str, float]:
    setup, sample = work
    (setup_s, setup_j), (sample_s, sample_j) = _price(setup, digital), _price(sample, digital)
    return {"setup_s": setup_s, "setup_j": setup_j, "sample_s": sample_s, "sample_j": sample_j}


def samples_to_reach(curve: np.ndarray, target: float, tolerance: float) -> int | None:
    """The fewest samples from which the Monte-Carlo NLL stays within ``tolerance`` of ``target``, or None."""
    inside = np.abs(curve - target) <= tolerance
    if not inside[-1]:
        return None
    outside = np.flatnonzero(~inside)
    return 1 if outside.size == 0 else int(outside[-1]) + 2


def _markdown(description, rows, device_rows, curves, settings, relax, quick) -> str:
    form = " [quick]" if quick else ""
    ood = [k for k in next(iter(rows.values())) if k.startswith("auroc")]
    lines = [f"# Laplace uncertainty{form}: {description}", "",
             f"Linearised (GLM) Monte-Carlo predictive over {settings.samples} samples for every Laplace row; prior "
             "precision delta by the Laplace evidence (post hoc). OOD: AUROC of the maximum probability, test vs. "
             "OOD images.", "",
             "| method | accuracy | NLL | ECE | Brier | " + " | ".join(f"AUROC {k[6:]}" for k in ood)
             + " | delta | fit s |", "|" + "---|" * (7 + len(ood))]
    for name, r in rows.items():
        delta = "" if r["delta"] is None else f"{r['delta']:.3g}"
        lines.append(f"| {name} | {r['accuracy']:.4f} | {r['nll']:.4f} | {r['ece']:.4f} | {r['brier']:.4f} | "
                     + " | ".join(f"{r[k]:.3f}" for k in ood) + f" | {delta} | {r['fit_s']:.1f} |")
    digital = device_rows["digital (exact samples)"]
    lines += ["", f"## The device sampling the full-GGN posterior (relaxation time 1 / lambda_min(P) = {relax:.3g} "
              f"tau; chain samples {INTERVAL:g} relaxation times apart)", "",
              "| sampler | NLL ± MC sd | ECE | samples to the digital NLL (± 2 sd) | setup s | s / sample | "
              "J / sample |", "|---|---|---|---|---|---|---|"]
    for name, r in device_rows.items():
        need = samples_to_reach(curves[name], digital["nll"], 2 * digital["nll_sd"])
        for platform, c in r["cost"].items():
            where = {"a100": "digital, A100", "cpu": "digital, CPU preset", "analog": "analog (paper constants)"}
            lines.append(f"| {name} [{where[platform]}] | {r['nll']:.4f} ± {r['nll_sd']:.4f} | {r['ece']:.4f} | "
                         f"{need if need is not None else 'not within ' + str(len(curves[name]))} | "
                         f"{c['setup_s']:.3g} | {c['sample_s']:.3g} | {c['sample_j']:.3g} |")
    return "\n".join(lines) + "\n"


def _plot(path: str, rows: dict, curves: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.2))
    for name, curve in curves.items():
        left.plot(np.arange(1, len(curve) + 1), curve, label=name)
    left.axhline(rows["MAP (Adam)"]["nll"], color="k", ls=":", label="MAP")
    left.set(xscale="log", xlabel="posterior samples", ylabel="test NLL (linearised MC predictive)",
             title="full-GGN Laplace: device vs. exact samples")
    left.legend(fontsize=7)
    names = list(rows)
    x = np.arange(len(names))
    right.bar(x - 0.2, [rows[n]["nll"] for n in names], 0.4, label="NLL")
    right.bar(x + 0.2, [rows[n]["ece"] for n in names], 0.4, label="ECE")
    right.set_xticks(x, names, rotation=20, ha="right", fontsize=7)
    right.set(title="test NLL and ECE")
    right.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
