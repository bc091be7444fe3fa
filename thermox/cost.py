r"""The analog hardware model: modeled time (seconds) and energy (joules) of the device's work.

The device's work is counted, never priced, by whoever runs it (values through the DAC, coupling values
programmed, values read through the ADC, the run time in units of tau, the resistors' time); an
:class:`AnalogPlatform` prices it:

- transfers: every value crosses the digital<->analog link at its converter's bits (an ideal converter, bits
  None or 0, at the platform's ``conversion_bits``), over ``links`` parallel links of ``link_bandwidth_bps``
  each; coupling values do not cross the link when the platform computes them on chip
  (``on_chip_couplings``: the TNGD paper's suggestion of programming the Jacobian in place);
- the dynamics: the run time in tau times ``tau_s = R C``;
- energy: ``link_energy_per_bit_j`` per bit moved, a converter at a Walden figure of merit of
  ``converter_fom_j`` per conversion step (``FOM 2^bits`` per converted value), and every resistor carrying the rms
  signal voltage ``signal_voltage_v`` (``V^2 / R`` watts) while the dynamics run.

Transfers and the run are serialized (the readout waits for the run); converters are pipelined with the link.
The defaults are the TNGD paper's Appendix C constants (R = 1 kOhm, C = 1 nF: tau = 1 us; 16-bit conversion;
50 Gb/s); the energy constants are this project's documented assumptions, not numbers from the papers (1 pJ/bit
for a modern SerDes link, 10 fJ per conversion step, 0.1 V rms).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Float


class AnalogPlatform(eqx.Module):
    """Constants of the modeled analog hardware and its link (SI units).

    Attributes:
        resistance_ohm: R of a cell (and of each coupling resistor).
        capacitance_f: C of a cell; ``tau_s = R C``.
        conversion_bits: bits per value of an ideal (unquantized) converter in the simulation.
        link_bandwidth_bps: bit/s of one digital<->analog link.
        links: parallel links (transfers split evenly over them).
        link_energy_per_bit_j: energy per bit moved over the link.
        converter_fom_j: Walden figure of merit, joules per conversion step.
        signal_voltage_v: rms signal voltage on a resistor while the dynamics run.
        on_chip_couplings: couplings are computed on the chip, so they do not cross the link.
    """

    resistance_ohm: float = 1e3
    capacitance_f: float = 1e-9
    conversion_bits: int = eqx.field(default=16, static=True)
    link_bandwidth_bps: float = 50e9
    links: int = eqx.field(default=1, static=True)
    link_energy_per_bit_j: float = 1e-12
    converter_fom_j: float = 10e-15
    signal_voltage_v: float = 0.1
    on_chip_couplings: bool = eqx.field(default=False, static=True)

    def __check_init__(self):
        for name in ("resistance_ohm", "capacitance_f", "link_bandwidth_bps"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                raise ValueError(f"AnalogPlatform.{name} must be finite and > 0, got {value!r}")
        for name in ("link_energy_per_bit_j", "converter_fom_j", "signal_voltage_v"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
                raise ValueError(f"AnalogPlatform.{name} must be finite and >= 0, got {value!r}")
        for name in ("conversion_bits", "links"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"AnalogPlatform.{name} must be an integer >= 1, got {value!r}")

    @property
    def tau_s(self) -> float:
        """Time constant of a cell, R C, in seconds."""
        return self.resistance_ohm * self.capacitance_f

    @classmethod
    def with_tau(cls, tau_s: float, **fields) -> "AnalogPlatform":
        """A platform whose cells have time constant ``tau_s`` (C chosen for the given R)."""
        resistance = fields.pop("resistance_ohm", cls.resistance_ohm)
        return cls(resistance_ohm=resistance, capacitance_f=tau_s / resistance, **fields)


class AnalogCost(NamedTuple):
    """Modeled cost of analog work. Times in seconds, energy in joules."""

    program_s: Float[Array, ""]
    input_s: Float[Array, ""]
    analog_s: Float[Array, ""]
    output_s: Float[Array, ""]
    time_s: Float[Array, ""]
    energy_j: Float[Array, ""]


def _array_module(*values):
    """numpy for host numbers (pricing recorded work after a run), jax.numpy for jax arrays and tracers."""
    return jnp if any(isinstance(v, (jax.Array, jax.core.Tracer)) for v in values) else np


def transfer_time(num_values: ArrayLike, *, bits: ArrayLike, platform: AnalogPlatform) -> Float[Array, ""]:
    """Seconds to move ``num_values`` values of ``bits`` bits (0: the platform's ``conversion_bits``) over the
    platform's links."""
    xp = _array_module(num_values, bits)
    return xp.asarray(num_values, float) * _bits(bits, platform) / (platform.link_bandwidth_bps * platform.links)


def _bits(bits: ArrayLike, platform: AnalogPlatform) -> Float[Array, ""]:
    xp = _array_module(bits)
    bits = xp.asarray(bits, float)
    return xp.where(bits > 0, bits, float(platform.conversion_bits))


def analog_cost(
    *,
    dac_values: ArrayLike,
    coupling_values: ArrayLike,
    adc_values: ArrayLike,
    analog_tau: ArrayLike,
    resistor_tau: ArrayLike,
    dac_bits: ArrayLike = 0,
    coupling_bits: ArrayLike = 0,
    adc_bits: ArrayLike = 0,
    platform: AnalogPlatform = AnalogPlatform(),
) -> AnalogCost:
    r"""Time and energy of analog work given as counts (module docstring).

    Args:
        dac_values, coupling_values, adc_values: values through the DAC, programmed, and through the ADC.
        analog_tau: run time on the critical path, units of tau.
        resistor_tau: sum over runs of (resistors held + cells) x run time, units of tau.
        dac_bits, coupling_bits, adc_bits: bits per value (0: an ideal converter, at ``conversion_bits``).
        platform: the hardware constants.
    """
    xp = _array_module(dac_values, coupling_values, adc_values, analog_tau, resistor_tau, dac_bits, coupling_bits,
                       adc_bits)
    couplings_moved = 0.0 if platform.on_chip_couplings else xp.asarray(coupling_values, float)
    program_s = transfer_time(couplings_moved, bits=coupling_bits, platform=platform)
    input_s = transfer_time(dac_values, bits=dac_bits, platform=platform)
    output_s = transfer_time(adc_values, bits=adc_bits, platform=platform)
    analog_s = xp.asarray(analog_tau, float) * platform.tau_s
    conversions = [(couplings_moved, coupling_bits), (dac_values, dac_bits), (adc_values, adc_bits)]
    link_j = sum(xp.asarray(v, float) * _bits(b, platform) for v, b in conversions) * platform.link_energy_per_bit_j
    converter_j = sum(xp.asarray(v, float) * 2.0 ** _bits(b, platform) for v, b in conversions) * platform.converter_fom_j
    resistor_j = (xp.asarray(resistor_tau, float) * platform.tau_s
                  * platform.signal_voltage_v**2 / platform.resistance_ohm)
    return AnalogCost(program_s, input_s, analog_s, output_s, program_s + input_s + analog_s + output_s,
                      link_j + converter_j + resistor_j)


def low_rank_couplings(n: int, rank: int) -> int:
    """Resistors for a drift ``W M W^T`` held as three arrays (W: n x r, M: r x r, W^T): ``r (r + 2n)``.

    This is TNGD's hardware: J_f, H_L and J_f^T with r = batch x output dimension.
    """
    return rank * (rank + 2 * n)


def solve_cost(
    n: int,
    t: ArrayLike,
    *,
    num_couplings: ArrayLike | None = None,
    num_rhs: int = 1,
    num_readouts: int = 1,
    reprogram: bool = True,
    bits: int | None = None,
    platform: AnalogPlatform = AnalogPlatform(),
) -> AnalogCost:
    """Modeled time and energy of one analog solve of size ``n`` run for ``t`` (units of tau).

    Args:
        n: number of cells (unknowns).
        t: analog run time in units of tau (may be traced).
        num_couplings: programmed values (default ``n * n``, a dense symmetric array); use
            :func:`low_rank_couplings` for a factored drift.
        num_rhs: right-hand sides sent (n values each); each is run for ``t``.
        num_readouts: node-voltage readouts per right-hand side (n values each).
        reprogram: whether the couplings are sent (False: the array already holds them; they still dissipate).
        bits: converter bits (None: the platform's ``conversion_bits``).
        platform: the hardware constants.
    """
    couplings = n * n if num_couplings is None else num_couplings
    runs_tau = jnp.asarray(t, float) * num_rhs
    return analog_cost(
        dac_values=n * num_rhs, coupling_values=jnp.asarray(couplings, float) * (1.0 if reprogram else 0.0),
        adc_values=n * num_rhs * num_readouts, analog_tau=runs_tau,
        resistor_tau=(jnp.asarray(couplings, float) + n) * runs_tau,
        dac_bits=bits or 0, coupling_bits=bits or 0, adc_bits=bits or 0, platform=platform,
    )


def langevin_cost(
    n: int,
    *,
    num_couplings: ArrayLike,
    num_samples: int,
    burn_in: ArrayLike,
    interval: ArrayLike,
    bits: int | None = None,
    platform: AnalogPlatform = AnalogPlatform(),
) -> AnalogCost:
    """Modeled time and energy *per sample* of a Langevin run (``thermox.langevin``), the whole run's cost divided
    by ``num_samples``.

    The run: the couplings are programmed once (``num_couplings`` values, e.g. the data matrix's N d entries for a
    logistic-regression potential; the nonlinear elements are not priced) and the start state's n values go through
    the DAC; the circuit runs ``burn_in + num_samples interval`` tau on the critical path, its resistors and n cells
    all held the whole time; each sample is n values through the ADC. As ``num_samples`` grows the cost per sample
    tends to ``interval`` tau of dynamics plus n ADC values.

    Args:
        n: cells (dimension of the sampled variable).
        num_couplings: programmed values.
        num_samples: readouts of n values.
        burn_in, interval: run times in units of tau.
        bits: converter bits (None: the platform's ``conversion_bits``).
        platform: the hardware constants.
    """
    xp = _array_module(num_couplings, burn_in, interval)
    run_tau = xp.asarray(burn_in, float) + num_samples * xp.asarray(interval, float)
    total = analog_cost(
        dac_values=n, coupling_values=num_couplings, adc_values=n * num_samples, analog_tau=run_tau,
        resistor_tau=(xp.asarray(num_couplings, float) + n) * run_tau,
        dac_bits=bits or 0, coupling_bits=bits or 0, adc_bits=bits or 0, platform=platform,
    )
    return AnalogCost(*(field / num_samples for field in total))
