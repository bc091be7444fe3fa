"""Hardware models (experiments.hardware, thermox.cost): rooflines give the datasheet's numbers, presets load and
refuse bad fields, the calibrated preset matches a timed matmul, and a work record is priced term by term.

Exact comparisons are float64 formulas on both sides (rtol 1e-12); the calibration check is a factor of 2 (the
issue's bound: two timings of the same kernel on a shared 2-core machine).
"""

import time

import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest

from experiments import hardware as hw
from kfac_thermo._work import analog, digital
from thermox.cost import AnalogPlatform, analog_cost

RTOL = 1e-12


@pytest.mark.parametrize("name, flops, bandwidth", [("a100", 19.5e12, 2.039e12), ("h100", 67e12, 3.35e12)])
def test_roofline_presets_give_datasheet_numbers(name, flops, bandwidth):
    platform = hw.digital_platform(name)
    # A pure-compute kernel (no memory traffic) runs at the peak flop rate, a pure-bandwidth one at the memory
    # bandwidth; one launch each.
    assert np.isclose(platform.seconds(1e12, 0.0, 1), 1e12 / flops + platform.launch_latency_s, rtol=RTOL)
    assert np.isclose(platform.seconds(0.0, 1e9, 1), 1e9 / bandwidth + platform.launch_latency_s, rtol=RTOL)
    # The roofline takes the slower of the two.
    assert np.isclose(platform.seconds(1e12, 1e9, 0), max(1e12 / flops, 1e9 / bandwidth), rtol=RTOL)


def test_calibrated_preset_matches_a_timed_matmul():
    platform = hw.digital_platform("cpu")
    a = jnp.ones((1024, 1024), jnp.float32)
    matmul = jax.jit(lambda x: x @ x)
    jax.block_until_ready(matmul(a))
    times = []
    for _ in range(10):
        tic = time.perf_counter()
        jax.block_until_ready(matmul(a))
        times.append(time.perf_counter() - tic)
    measured = 2.0 * 1024**3 / float(np.median(times))
    assert 0.5 <= platform.peak_flops / measured <= 2.0, (platform.peak_flops, measured)
    assert platform.memory_bandwidth > 0 and platform.launch_latency_s > 0


def test_analog_presets():
    paper = hw.analog_platform("paper")
    assert paper == AnalogPlatform()
    assert np.isclose(paper.tau_s, 1e-6, rtol=RTOL) and paper.link_bandwidth_bps == 50e9
    assert paper.conversion_bits == 16 and not paper.on_chip_couplings
    assert hw.analog_platform("optimistic").on_chip_couplings
    assert np.isclose(hw.analog_platform("pessimistic").tau_s, 1e-5, rtol=RTOL)
    assert np.isclose(hw.analog_platform("paper", {"tau_s": 2e-8}).tau_s, 2e-8, rtol=RTOL)


@pytest.mark.parametrize("call, match", [
    (lambda: hw.digital_platform("tpu9"), "unknown digital hardware preset 'tpu9'"),
    (lambda: hw.analog_platform("quantum"), "unknown analog hardware preset 'quantum'"),
    (lambda: hw.digital_platform("a100", {"peak_flop": 1.0}), r"unknown digital hardware field\(s\) \['peak_flop'\]"),
    (lambda: hw.analog_platform("paper", {"bandwidth": 1.0}), r"unknown analog hardware field\(s\) \['bandwidth'\]"),
    (lambda: hw.digital_platform("a100", {"peak_flops": 0.0}), "peak_flops must be finite and > 0"),
    (lambda: hw.digital_platform("a100", {"memory_bandwidth": -1.0}), "memory_bandwidth must be finite and > 0"),
    (lambda: hw.analog_platform("paper", {"link_bandwidth_bps": 0.0}), "link_bandwidth_bps must be finite and > 0"),
    (lambda: hw.analog_platform("paper", {"tau_s": 0.0}), "tau_s must be finite and > 0"),
    (lambda: hw.analog_platform("paper", {"links": 0}), "links must be an integer >= 1"),
    (lambda: hw.parse_hardware("a100"), "hardware must be '<digital>\\+<analog>'"),
])
def test_bad_hardware(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_analog_cost_term_by_term(x64):
    platform = AnalogPlatform(link_bandwidth_bps=1e9, links=2)
    cost = analog_cost(dac_values=100, coupling_values=1000, adc_values=50, analog_tau=30.0, resistor_tau=5000.0,
                       dac_bits=8, coupling_bits=0, adc_bits=12, platform=platform)
    bw = 2e9
    assert np.isclose(float(cost.program_s), 1000 * 16 / bw, rtol=RTOL)
    assert np.isclose(float(cost.input_s), 100 * 8 / bw, rtol=RTOL)
    assert np.isclose(float(cost.output_s), 50 * 12 / bw, rtol=RTOL)
    assert np.isclose(float(cost.analog_s), 30.0 * 1e-6, rtol=RTOL)
    bits = 1000 * 16 + 100 * 8 + 50 * 12
    energy = bits * 1e-12 + (1000 * 2.0**16 + 100 * 2.0**8 + 50 * 2.0**12) * 10e-15 + 5000 * 1e-6 * 0.1**2 / 1e3
    assert np.isclose(float(cost.energy_j), energy, rtol=RTOL)
    on_chip = analog_cost(dac_values=100, coupling_values=1000, adc_values=50, analog_tau=30.0, resistor_tau=0.0,
                          platform=AnalogPlatform(on_chip_couplings=True))
    assert float(on_chip.program_s) == 0.0


def _small_model():
    from experiments.models import split_model
    import equinox as eqx

    params, predict_fn = split_model(eqx.nn.MLP(8, 3, 16, depth=1, key=jr.key(0)))
    return params, predict_fn, jnp.zeros((32, 8))


def test_pass_profile_counts_the_model():
    params, predict_fn, x = _small_model()
    profile = hw.measure_passes(predict_fn, params, x)
    # Forward: two dense layers, 2 b (8 x 16 + 16 x 3) multiply-adds; XLA counts at least those flops.
    assert profile.examples == 32
    assert profile.forward.flops >= 2 * 32 * (8 * 16 + 16 * 3)
    assert profile.reverse.flops >= profile.forward.flops  # a reverse pass costs about twice a forward
    assert profile.forward.kernels >= 1 and profile.reverse.kernels >= 1
    assert hw.PassProfile.from_dict(profile.as_dict()) == profile


def test_step_cost_term_by_term(x64):
    profile = hw.PassProfile(64, hw.PassCost(1e7, 4e6, 8), hw.PassCost(2e7, 9e6, 13))
    a100, paper = hw.digital_platform("a100"), hw.analog_platform("paper")
    work = digital(forward_passes=2, reverse_passes=3, examples=128, params=1000, flops={"gram": 5e8},
                   bytes={"gram": 1e6}, kernels={"gram": 2}).then(
        analog(dac_values=1000, coupling_values=10**6, adc_values=1000, analog_tau=50.0, resistor_tau=5e7))
    cost = hw.step_cost(work, profile, a100, paper)
    pass_s = lambda p: max(2 * p.flops / 19.5e12, 2 * p.bytes / 2.039e12) + p.kernels * 5e-6  # 128 = 2 x 64 examples
    passes = 2 * pass_s(profile.forward) + 3 * pass_s(profile.reverse)
    gram = max(5e8 / 19.5e12, 1e6 / 2.039e12) + 2 * 5e-6
    transfers = (10**6 + 2000) * 16 / 50e9
    assert np.isclose(cost.passes_s, passes, rtol=1e-6)
    assert np.isclose(cost.digital_s, gram, rtol=1e-6)
    assert np.isclose(cost.time_s, passes + gram + transfers + 50e-6, rtol=1e-6)
    measured = hw.step_cost(work, profile, a100, paper, pass_seconds={"forward_s": 1e-3, "reverse_s": 2e-3})
    assert np.isclose(measured.passes_s, 2 * (2 * 1e-3 + 3 * 2e-3), rtol=1e-6)
