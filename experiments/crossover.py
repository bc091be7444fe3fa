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
    for work in run.works[:last]:
        cost = hw.step_cost(work, run.profile, digital, analog)
        host = cost.passes_s + cost.digital_s
        host_s += host
        host_j += host * digital.power_w
        bits += (cost.program_s + cost.transfer_s) * analog.link_bandwidth_bps * analog.links
        tau += float(work.analog_tau)
        resistor += float(work.resistor_tau)
        resistor_j = float(work.resistor_tau) * analog.tau_s * analog.signal_voltage_v**2 / analog.resistance_ohm
        fixed += cost.energy_j - host * digital.power_w - resistor_j
    return ToTarget(step, host_s, host_j, bits, tau, fixed, resistor)
