"""thermox.cost: the modeled time and energy of a solve on an AnalogPlatform equal the hand-computed formulas.

Constants (REFERENCE.md section 2): R = 1 kOhm, C = 1 nF (tau = RC = 1 us), 16-bit conversion, 50 Gb/s link.
Formulas: transfer time = values * bits / bandwidth; analog time = t * tau per right-hand side; energy =
values * bits * E_bit + values * FOM * 2^bits + (couplings + n) * V^2 / R * analog time.
All comparisons in float64 at rtol 1e-12 (a handful of floating-point operations on each side).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from thermox import cost

RTOL = 1e-12


def test_defaults(x64):
    m = cost.AnalogPlatform()
    assert m.resistance_ohm == 1e3 and m.capacitance_f == 1e-9
    assert m.conversion_bits == 16 and m.link_bandwidth_bps == 50e9
    assert np.isclose(m.tau_s, 1e-6, rtol=RTOL) and m.links == 1 and not m.on_chip_couplings


def test_transfer_time(x64):
    paper = cost.AnalogPlatform()
    assert np.isclose(float(cost.transfer_time(1000, bits=0, platform=paper)), 1000 * 16 / 50e9, rtol=RTOL)
    slow = cost.AnalogPlatform(link_bandwidth_bps=1e6, links=2)
    assert np.isclose(float(cost.transfer_time(7, bits=8, platform=slow)), 7 * 8 / 2e6, rtol=RTOL)


@pytest.mark.parametrize("n, t, num_rhs, num_readouts", [(10, 5.0, 1, 1), (64, 50.0, 3, 4), (1, 0.0, 1, 1)])
def test_solve_cost_components(x64, n, t, num_rhs, num_readouts):
    c = cost.solve_cost(n, t, num_rhs=num_rhs, num_readouts=num_readouts)
    bits, bw, tau = 16, 50e9, 1e3 * 1e-9
    couplings, inputs, outputs = n * n, n * num_rhs, n * num_rhs * num_readouts
    expected = {
        "program_s": couplings * bits / bw,
        "input_s": inputs * bits / bw,
        "output_s": outputs * bits / bw,
        "analog_s": t * tau * num_rhs,
    }
    for name, value in expected.items():
        assert np.isclose(float(getattr(c, name)), value, rtol=RTOL, atol=0), name
    assert np.isclose(float(c.time_s), sum(expected.values()), rtol=RTOL)
    values = couplings + inputs + outputs
    energy = values * bits * 1e-12 + values * 10e-15 * 2.0**bits + (couplings + n) * 0.1**2 / 1e3 * expected["analog_s"]
    assert np.isclose(float(c.energy_j), energy, rtol=RTOL)


def test_no_reprogram_and_low_rank_couplings(x64):
    n, r, t = 100, 4, 10.0
    assert cost.low_rank_couplings(n, r) == r * (r + 2 * n)
    k = cost.low_rank_couplings(n, r)
    c = cost.solve_cost(n, t, num_couplings=k)
    assert np.isclose(float(c.program_s), k * 16 / 50e9, rtol=RTOL)
    kept = cost.solve_cost(n, t, num_couplings=k, reprogram=False)
    assert float(kept.program_s) == 0.0
    # The couplings still dissipate while the dynamics run; only their transfer is saved.
    values = 2 * n
    energy = values * 16 * 1e-12 + values * 10e-15 * 2.0**16 + (k + n) * 0.1**2 / 1e3 * t * 1e-6
    assert np.isclose(float(kept.energy_j), energy, rtol=RTOL)


def test_custom_model_and_traced_time(x64):
    platform = cost.AnalogPlatform(resistance_ohm=2e3, capacitance_f=5e-10, conversion_bits=8, link_bandwidth_bps=1e9)
    f = jax.jit(lambda t: cost.solve_cost(20, t, platform=platform).time_s)
    expected = lambda t: (400 + 20 + 20) * 8 / 1e9 + t * 2e3 * 5e-10
    for t in (1.0, 30.0):
        assert np.isclose(float(f(jnp.asarray(t))), expected(t), rtol=RTOL)


def test_time_constant_and_converter_bits(x64):
    """A platform built from its tau; converter bits set per solve replace the platform's conversion bits."""
    platform = cost.AnalogPlatform.with_tau(2.5e-6)
    assert np.isclose(platform.tau_s, 2.5e-6, rtol=RTOL) and platform.resistance_ohm == 1e3
    c = cost.solve_cost(16, 8.0, num_rhs=2, bits=8, platform=platform)
    assert np.isclose(float(c.analog_s), 8.0 * 2.5e-6 * 2, rtol=RTOL)
    assert np.isclose(float(c.program_s), 256 * 8 / 50e9, rtol=RTOL)


@pytest.mark.parametrize("kwargs, match", [
    ({"resistance_ohm": 0.0}, "resistance_ohm must be finite and > 0"),
    ({"capacitance_f": -1e-9}, "capacitance_f must be finite and > 0"),
    ({"link_bandwidth_bps": 0.0}, "link_bandwidth_bps must be finite and > 0"),
    ({"link_bandwidth_bps": float("inf")}, "link_bandwidth_bps must be finite and > 0"),
    ({"conversion_bits": 0}, "conversion_bits must be an integer >= 1"),
    ({"links": 0}, "links must be an integer >= 1"),
    ({"link_energy_per_bit_j": -1.0}, "link_energy_per_bit_j must be finite and >= 0"),
])
def test_bad_platform(kwargs, match):
    with pytest.raises(ValueError, match=match):
        cost.AnalogPlatform(**kwargs)
