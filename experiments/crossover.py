r"""Crossover maps: where would thermodynamic hardware win? Time (and energy) to a target accuracy, ours over a
baseline, across link bandwidth x cell time constant, from recorded runs (never re-run).

A step's modeled time on a digital platform D and an analog platform with link bandwidth B (bit/s, over its
links) and time constant tau is, by :func:`experiments.hardware.step_cost`,

    time = host_D + bits / (B links) + analog_tau tau,

with ``host_D`` the priced digital work (model passes and the other kinds), ``bits`` the bits moved over the link
and ``analog_tau`` the run time in units of tau; its energy is ``host_D power_D + E_link + E_conv +
resistor_tau tau V^2 / R``. Summing each term up to the step where a run first reaches the target gives the time
to target as an affine function of ``1 / B`` and ``tau``: the whole map from three numbers per run.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from thermox.cost import AnalogPlatform

from . import hardware as hw
from .recost import RunRecord


@dataclasses.dataclass(frozen=True)
class ToTarget:
    """A run's totals up to the step it reaches the target (None when it never does): host seconds and joules on a
    digital platform, bits over the link, analog tau, the converter and link joules, and the resistor tau."""

    step: int | None
    host_s: float
    host_j: float
    link_bits: float
    analog_tau: float
    fixed_j: float
    resistor_tau: float

    def time(self, bandwidth_bps: np.ndarray, tau_s: np.ndarray, links: int = 1) -> np.ndarray:
        """Time to target (seconds) on a grid of bandwidths and time constants (broadcast)."""
        if self.step is None:
            return np.full(np.broadcast(bandwidth_bps, tau_s).shape, np.inf)
        return self.host_s + self.link_bits / (bandwidth_bps * links) + self.analog_tau * tau_s

    def energy(self, tau_s: np.ndarray, analog: AnalogPlatform) -> np.ndarray:
        """Energy to target (joules) against the time constant (the resistors dissipate for the run time)."""
        if self.step is None:
            return np.full(np.shape(tau_s), np.inf)
        return self.host_j + self.fixed_j + self.resistor_tau * tau_s * analog.signal_voltage_v**2 / analog.resistance_ohm


def to_target(run: RunRecord, target: float, digital: hw.DigitalPlatform, analog: AnalogPlatform) -> ToTarget:
    """:class:`ToTarget` of ``run`` for ``target`` on ``digital``; ``analog`` fixes everything but B and tau (bits of
    ideal converters, links, on-chip couplings, converter and link energy)."""
    step = next((s for s, value in run.evals if value >= target), None)
    last = run.steps.index(step) + 1 if step is not None else len(run.steps)
    host_s = host_j = bits = tau = fixed = resistor = 0.0
    for work, steps in zip(run.works[:last], run.work_steps[:last]):
        if steps == 0:  # the step-0 evaluation: no work
            continue
        cost = hw.step_cost(work if steps == 1 else work.scaled(1.0 / steps), run.profile, digital, analog)
        cost = cost._replace(**{k: steps * v for k, v in cost._asdict().items()})
        host = cost.passes_s + cost.digital_s
        host_s += host
        host_j += host * digital.power_w
        bits += (cost.program_s + cost.transfer_s) * analog.link_bandwidth_bps * analog.links
        tau += float(work.analog_tau)
        resistor += float(work.resistor_tau)
        resistor_j = float(work.resistor_tau) * analog.tau_s * analog.signal_voltage_v**2 / analog.resistance_ohm
        fixed += cost.energy_j - host * digital.power_w - resistor_j
    return ToTarget(step, host_s, host_j, bits, tau, fixed, resistor)


BANDWIDTHS = np.logspace(9, 13, 81)   # 1 Gb/s to 10 Tb/s
TAUS = np.logspace(-9, -5, 81)        # 1 ns to 10 us
PAPER_POINT = (50e9, 1e-6)            # the TNGD paper's Appendix C constants


def median_time(runs: list[RunRecord], target: float, digital: hw.DigitalPlatform, analog: AnalogPlatform):
    """Median over seeds of the time to target on the (bandwidth, tau) grid (inf where over half never reach it),
    and the median step at which the seeds reach it (None when the median seed does not)."""
    totals = [to_target(run, target, digital, analog) for run in runs]
    grid = np.median([t.time(BANDWIDTHS[None, :], TAUS[:, None], analog.links) for t in totals], axis=0)
    steps = sorted(np.inf if t.step is None else t.step for t in totals)
    step = steps[len(steps) // 2]
    return grid, (None if np.isinf(step) else int(step)), totals


def ratio_maps(ours: list[RunRecord], baseline: list[RunRecord], target: float, digital: hw.DigitalPlatform,
               analog: AnalogPlatform) -> dict:
    """Time-to-target of ``ours`` over ``baseline`` on the grid (both medians over seeds), the same for energy
    (against tau only: the link's energy does not depend on its speed), and what dominates ours at the paper's
    constants."""
    ours_time, ours_step, ours_totals = median_time(ours, target, digital, analog)
    base_time, base_step, base_totals = median_time(baseline, target, digital, analog)
    energy = lambda totals: np.median([t.energy(TAUS, analog) for t in totals], axis=0)
    bw, tau = PAPER_POINT
    i, j = np.argmin(np.abs(np.log(TAUS / tau))), np.argmin(np.abs(np.log(BANDWIDTHS / bw)))
    reached = [t for t in ours_totals if t.step is not None]
    terms = {}
    if reached:
        median = sorted(reached, key=lambda t: t.time(bw, tau, analog.links))[len(reached) // 2]
        terms = {"host (digital) s": median.host_s, "link s": median.link_bits / (bw * analog.links),
                 "analog run s": median.analog_tau * tau}
    return {"time": ours_time / base_time, "energy": energy(ours_totals) / energy(base_totals),
            "at_paper": float(ours_time[i, j] / base_time[i, j]), "ours_step": ours_step, "baseline_step": base_step,
            "terms_at_paper": terms}


def break_even_bandwidth(ratio: np.ndarray, tau_s: float) -> float | None:
    """The smallest grid bandwidth at which the time ratio at ``tau_s`` is at most 1 (None: none on the grid)."""
    row = ratio[np.argmin(np.abs(np.log(TAUS / tau_s)))]
    below = np.nonzero(row <= 1.0)[0]
    return float(BANDWIDTHS[below[0]]) if below.size else None


def plot_maps(maps: dict, path: str, title: str) -> None:
    """One panel per (ours over baseline, platform): log10 of the time ratio, the contour ratio = 1, the paper's
    point; and the energy ratio against tau."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = list(maps)
    fig, axes = plt.subplots(2, len(keys), figsize=(4.2 * len(keys), 7.2), squeeze=False)
    for col, key in enumerate(keys):
        m = maps[key]
        ax = axes[0, col]
        log_ratio = np.log10(np.clip(m["time"], 1e-6, 1e12))
        mesh = ax.pcolormesh(BANDWIDTHS, TAUS, log_ratio, cmap="RdBu_r", vmin=-3, vmax=3, shading="auto")
        if np.isfinite(log_ratio).any() and log_ratio.min() < 0 < log_ratio.max():
            ax.contour(BANDWIDTHS, TAUS, log_ratio, levels=[0.0], colors="k", linewidths=1.5)
        ax.plot(*PAPER_POINT, marker="*", color="gold", ms=14, mec="k", label="paper's constants")
        ax.set(xscale="log", yscale="log", xlabel="link bandwidth (bit/s)", ylabel="cell time constant tau (s)",
               title=f"{key}\ntime to target, ratio {m['at_paper']:.3g} at the star")
        fig.colorbar(mesh, ax=ax, label="log10 (time ours / baseline)")
        energy = np.asarray(m["energy"], float)
        shown = np.isfinite(energy) & (energy > 0)
        axes[1, col].set(xscale="log", xlabel="cell time constant tau (s)", ylabel="energy to target, ours / baseline")
        if shown.any():
            axes[1, col].plot(TAUS[shown], energy[shown])
            axes[1, col].axhline(1.0, color="k", lw=0.8)
            axes[1, col].set_yscale("log")
        else:  # one side never reaches the target: there is no ratio to draw
            axes[1, col].text(0.5, 0.5, "no ratio: the target is not reached", ha="center",
                              transform=axes[1, col].transAxes)
    axes[0, 0].legend(fontsize=8, loc="lower left")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
