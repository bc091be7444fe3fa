"""Hardware cost model: modeled time (seconds) and energy (joules) of analog solves and their transfers.

One solve = program the couplings (send ``num_couplings`` values over the digital<->analog link), send the
inputs (``n`` values per right-hand side), let the dynamics run ``t`` tau, read ``n`` values per readout back.
Transfers are serialized on one link of ``link_bandwidth_bps`` at ``conversion_bits`` per value; converters
are assumed pipelined with the link (their time hides behind it) but their energy is counted.

Defaults (REFERENCE.md section 2): R = 1 kOhm, C = 1 nF (tau = RC = 1 us), 16-bit conversion, 50 Gb/s link.
The energy constants are this project's documented assumptions, not numbers from the papers:
1 pJ/bit for the link (a modern SerDes), converters at a Walden figure of merit of 10 fJ per conversion
step (``FOM * 2**bits`` per conversion), and each programmed coupling a resistor R carrying the rms signal
voltage ``signal_voltage_v`` (``V^2 / R`` watts) while the dynamics run.
"""

from __future__ import annotations

from typing import NamedTuple

import equinox as eqx
import jax.numpy as jnp
from jaxtyping import Array, ArrayLike, Float


class CostModel(eqx.Module):
    """Constants of the modeled hardware (SI units)."""

    resistance_ohm: float = 1e3
    capacitance_f: float = 1e-9
    conversion_bits: int = eqx.field(default=16, static=True)
    link_bandwidth_bps: float = 50e9
    link_energy_per_bit_j: float = 1e-12
    converter_fom_j: float = 10e-15
    signal_voltage_v: float = 0.1

    def __check_init__(self):
        for name in ("resistance_ohm", "capacitance_f", "link_bandwidth_bps"):
            if not getattr(self, name) > 0:
                raise ValueError(f"CostModel.{name} must be > 0, got {getattr(self, name)!r}")
        for name in ("link_energy_per_bit_j", "converter_fom_j", "signal_voltage_v"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"CostModel.{name} must be >= 0, got {getattr(self, name)!r}")
        if not isinstance(self.conversion_bits, int) or self.conversion_bits < 1:
            raise ValueError(f"CostModel.conversion_bits must be an integer >= 1, got {self.conversion_bits!r}")

    @property
    def tau_s(self) -> float:
        """Time constant of a cell, R C, in seconds."""
        return self.resistance_ohm * self.capacitance_f


class SolveCost(NamedTuple):
    """Modeled cost of one analog solve. Times in seconds, energy in joules."""

    program_s: Float[Array, ""]
    input_s: Float[Array, ""]
    analog_s: Float[Array, ""]
    output_s: Float[Array, ""]
    time_s: Float[Array, ""]
    energy_j: Float[Array, ""]


def transfer_time(num_values: ArrayLike, *, bits: int = 16, bandwidth_bps: float = 50e9) -> Float[Array, ""]:
    """Seconds to move ``num_values`` values of ``bits`` bits over a link of ``bandwidth_bps`` bit/s."""
    return jnp.asarray(num_values, float) * bits / bandwidth_bps


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
    model: CostModel = CostModel(),
    tau_s: float | None = None,
) -> SolveCost:
    """Modeled time and energy of one analog solve of size ``n`` run for ``t`` (units of tau).

    Args:
        n: number of cells (unknowns).
        t: analog run time in units of tau (may be traced).
        num_couplings: programmed values (default ``n * n``, a dense symmetric array); use
            :func:`low_rank_couplings` for a factored drift.
        num_rhs: right-hand sides sent (n values each); each is run for ``t``.
        num_readouts: node-voltage readouts per right-hand side (n values each).
        reprogram: whether the couplings are sent (False: the array already holds them).
        model: the hardware constants.
        tau_s: the cell time constant in seconds (default ``model.tau_s`` = R C); pass ``AnalogDevice.tau``
            to cost a specific device.
    """
    bits, bw = model.conversion_bits, model.link_bandwidth_bps
    couplings = n * n if num_couplings is None else num_couplings
    couplings = jnp.asarray(couplings, float) * (1.0 if reprogram else 0.0)
    inputs = n * num_rhs
    outputs = n * num_rhs * num_readouts
    program_s = transfer_time(couplings, bits=bits, bandwidth_bps=bw)
    input_s = transfer_time(inputs, bits=bits, bandwidth_bps=bw)
    output_s = transfer_time(outputs, bits=bits, bandwidth_bps=bw)
    analog_s = jnp.asarray(t, float) * (model.tau_s if tau_s is None else tau_s) * num_rhs
    values = couplings + inputs + outputs
    energy = (
        values * bits * model.link_energy_per_bit_j
        + values * model.converter_fom_j * 2.0**bits
        + (jnp.asarray(num_couplings if num_couplings is not None else n * n, float) + n)
        * model.signal_voltage_v**2 / model.resistance_ohm * analog_s
    )
    return SolveCost(program_s, input_s, analog_s, output_s, program_s + input_s + analog_s + output_s, energy)
