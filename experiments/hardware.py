r"""Hardware models: a step's work record priced as time and energy on a digital platform plus an analog one.

A run records what each step did (:class:`kfac_thermo.Work`: model passes, digital flops / bytes / kernel
launches by kind, values through the device's converters, analog run time in tau); this module prices it, during
the run and again afterwards under other assumptions (``python -m experiments.recost``), never re-running:

- digital work on a roofline :class:`DigitalPlatform`: each kind takes ``max(flops / peak, bytes / bandwidth)`` plus
  ``kernels x launch latency``, energy at the board's ``power_w`` while busy. A model pass is priced from its
  :class:`PassProfile` (flops, bytes and kernels of one forward and one reverse pass of the task's model at the
  run's batch, from XLA's cost analysis of the compiled passes, measured once per run);
- analog work on a :class:`thermox.cost.AnalogPlatform` (:func:`thermox.cost.analog_cost`).

Two accountings, side by side for every run (:func:`accountings`):

- ``modeled``: every digital piece on the roofline of the chosen platform (Adam included), plus the analog
  platform;
- ``paper``: as the TNGD paper's Fig. 3 (its Appendix C): the model passes at the wall time measured for them on
  this machine (:func:`measure_pass_seconds`), the rest of the digital work on this machine's calibrated roofline
  (:func:`calibrate`), plus the analog work at the paper's constants.

Presets are data: ``configs/hardware/digital/*.yaml`` (datasheet figures of NVIDIA A100 and H100, and ``cpu``:
calibrated on the user's machine by a short micro-benchmark) and ``configs/hardware/analog/*.yaml`` (``paper``:
Appendix C; ``optimistic``; ``pessimistic``). No cost constant lives anywhere else in the project.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import pathlib
import re
import time
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from omegaconf import OmegaConf

from kfac_thermo import DIGITAL_KINDS, Work, digital_work, sequential_work, work_records
from thermox.cost import AnalogPlatform, analog_cost

PRESETS = pathlib.Path(__file__).resolve().parent.parent / "configs" / "hardware"


@dataclasses.dataclass(frozen=True)
class DigitalPlatform:
    """A digital accelerator or CPU as a roofline (SI units).

    Attributes:
        name: what it is (for tables).
        peak_flops: sustained floating-point throughput, flop/s.
        memory_bandwidth: sustained memory bandwidth, bytes/s.
        launch_latency_s: fixed cost of one kernel launch (or of one dispatched operation on a CPU), seconds.
        power_w: board power while busy, watts (energy = busy time x power).
    """

    name: str
    peak_flops: float
    memory_bandwidth: float
    launch_latency_s: float
    power_w: float

    def __post_init__(self):
        for field in ("peak_flops", "memory_bandwidth", "power_w"):
            value = getattr(self, field)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                raise ValueError(f"DigitalPlatform.{field} must be finite and > 0, got {value!r}")
        value = self.launch_latency_s
        if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
            raise ValueError(f"DigitalPlatform.launch_latency_s must be finite and >= 0, got {value!r}")

    def seconds(self, flops, bytes_, kernels):
        """Roofline time of kernels doing ``flops`` and moving ``bytes_``: the slower of compute and memory, plus
        the launches."""
        flops, bytes_, kernels = (np.asarray(v, float) for v in (flops, bytes_, kernels))
        return np.maximum(flops / self.peak_flops, bytes_ / self.memory_bandwidth) + kernels * self.launch_latency_s


class PassCost(NamedTuple):
    """Flops, bytes of memory traffic and kernel launches of one model pass over ``examples`` examples."""

    flops: float
    bytes: float
    kernels: float


class PassProfile(NamedTuple):
    """One forward and one reverse pass of a task's model over a batch of ``examples`` examples."""

    examples: int
    forward: PassCost
    reverse: PassCost

    def as_dict(self) -> dict:
        return {"examples": self.examples, "forward": self.forward._asdict(), "reverse": self.reverse._asdict()}

    @classmethod
    def from_dict(cls, record: dict) -> "PassProfile":
        return cls(int(record["examples"]), PassCost(**record["forward"]), PassCost(**record["reverse"]))


_NOT_KERNELS = {"parameter", "constant", "tuple", "get-tuple-element", "bitcast"}


def _kernels(compiled) -> int:
    """Operations of the compiled program's entry computation that launch work (fusions, dots, convolutions ...):
    the kernel launches a GPU would make for it."""
    text = compiled.as_text()
    body = text[text.index("ENTRY"):].split("\n", 1)[1]
    ops = []
    for line in body.splitlines():
        _, equals, rhs = line.partition(" = ")
        match = re.search(r"(?:^|\s)([a-z][\w-]*)\(", rhs) if equals else None
        if match:
            ops.append(match.group(1))
    return sum(op not in _NOT_KERNELS for op in ops)


def _analysis(compiled) -> tuple[float, float]:
    analysis = compiled.cost_analysis()
    analysis = analysis[0] if isinstance(analysis, (list, tuple)) else analysis
    return float(analysis.get("flops", 0.0)), float(analysis.get("bytes accessed", 0.0))


def measure_passes(predict_fn: Callable, params: Any, inputs: Any) -> PassProfile:
    """:class:`PassProfile` of ``predict_fn`` on the batch ``inputs`` from XLA's cost analysis of the compiled
    forward pass and of one reverse pass (a VJP, which repeats the forward: its cost minus the forward's)."""
    examples = jax.tree_util.tree_leaves(inputs)[0].shape[0]
    forward = jax.jit(predict_fn).lower(params, inputs).compile()
    outputs = jax.eval_shape(predict_fn, params, inputs)

    def reverse(params, cotangent):
        _, vjp = jax.vjp(lambda p: predict_fn(p, inputs), params)
        return vjp(cotangent)

    both = jax.jit(reverse).lower(params, jnp.zeros(outputs.shape, outputs.dtype)).compile()
    f_flops, f_bytes = _analysis(forward)
    b_flops, b_bytes = _analysis(both)
    f_kernels, b_kernels = _kernels(forward), _kernels(both)
    return PassProfile(examples, PassCost(f_flops, f_bytes, f_kernels),
                       PassCost(max(b_flops - f_flops, 0.0), max(b_bytes - f_bytes, 0.0),
                                max(b_kernels - f_kernels, 1)))


def _median_seconds(fn: Callable, *args, repeats: int) -> float:
    jax.block_until_ready(fn(*args))
    times = []
    for _ in range(repeats):
        tic = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - tic)
    return float(np.median(times))


def measure_pass_seconds(predict_fn: Callable, params: Any, inputs: Any, *, repeats: int = 20) -> dict[str, float]:
    """Wall seconds of one forward and one reverse pass of ``predict_fn`` on ``inputs`` on this machine (medians;
    the reverse pass as a VJP's time minus the forward's), for the ``paper`` accounting."""
    outputs = jax.eval_shape(predict_fn, params, inputs)
    cotangent = jnp.ones(outputs.shape, outputs.dtype)
    forward = jax.jit(predict_fn)
    both = jax.jit(lambda p, ct: jax.vjp(lambda q: predict_fn(q, inputs), p)[1](ct))
    f = _median_seconds(forward, params, inputs, repeats=repeats)
    b = _median_seconds(both, params, cotangent, repeats=repeats)
    return {"forward_s": f, "reverse_s": max(b - f, 0.0)}


def calibrate(*, matmul_size: int = 1024, copy_megabytes: int = 64, repeats: int = 10,
              power_w: float = 65.0) -> DigitalPlatform:
    """A roofline of this machine from a short micro-benchmark (about a second): ``peak_flops`` from a float32
    ``matmul_size``^3 matrix product, ``memory_bandwidth`` from an element-wise pass over ``copy_megabytes`` MB
    (read and write, in place), ``launch_latency_s`` from a jitted scalar add; ``power_w`` is not measurable here and is
    the caller's figure (65 W: a desktop CPU package)."""
    a = jnp.ones((matmul_size, matmul_size), jnp.float32)
    matmul = _median_seconds(jax.jit(lambda x: x @ x), a, repeats=repeats)
    n = copy_megabytes * 2**20 // 4
    # The buffer is donated: without it every call writes to freshly mapped pages and measures page faults.
    update = jax.jit(lambda v: v * 1.0001 + 1.0, donate_argnums=0)
    x = jax.block_until_ready(update(jnp.ones((n,), jnp.float32)))
    times = []
    for _ in range(repeats):
        tic = time.perf_counter()
        x = jax.block_until_ready(update(x))
        times.append(time.perf_counter() - tic)
    stream = float(np.median(times))
    tiny = _median_seconds(jax.jit(lambda v: v + 1.0), jnp.ones((), jnp.float32), repeats=max(repeats, 50))
    return DigitalPlatform("this machine (calibrated)", 2.0 * matmul_size**3 / matmul, 2.0 * 4 * n / stream,
                           tiny, power_w)


# ------------------------------------------------------------------------------------------------ presets

def preset_names(kind: str) -> list[str]:
    """The preset names of ``kind`` ("digital" or "analog")."""
    return sorted(p.stem for p in (PRESETS / kind).glob("*.yaml"))


def _load(kind: str, name: str, overrides: dict | None) -> dict:
    path = PRESETS / kind / f"{name}.yaml"
    if not path.exists():
        raise ValueError(f"unknown {kind} hardware preset {name!r}; choose one of {preset_names(kind)}")
    fields = OmegaConf.to_container(OmegaConf.load(path)) or {}
    fields.update(overrides or {})
    return fields


def digital_platform(name: str, overrides: dict | None = None) -> DigitalPlatform:
    """The digital preset ``name`` (``configs/hardware/digital/<name>.yaml``) with field ``overrides``; a preset
    with ``calibrate: true`` is measured on this machine (:func:`calibrate`)."""
    fields = _load("digital", name, overrides)
    known = {f.name for f in dataclasses.fields(DigitalPlatform)} | {"calibrate"}
    unknown = set(fields) - known
    if unknown:
        raise ValueError(f"unknown digital hardware field(s) {sorted(unknown)} in {name!r}; fields are {sorted(known)}")
    if fields.pop("calibrate", False):
        measured = calibrate(power_w=fields.pop("power_w", 65.0))
        fields = {**dataclasses.asdict(measured), **fields}
    return DigitalPlatform(**fields)


def analog_platform(name: str, overrides: dict | None = None) -> AnalogPlatform:
    """The analog preset ``name`` (``configs/hardware/analog/<name>.yaml``) with field ``overrides``; ``tau_s``
    may be given in place of the capacitance."""
    fields = _load("analog", name, overrides)
    known = {f.name for f in dataclasses.fields(AnalogPlatform)} | {"tau_s"}
    unknown = set(fields) - known
    if unknown:
        raise ValueError(f"unknown analog hardware field(s) {sorted(unknown)} in {name!r}; fields are {sorted(known)}")
    tau = fields.pop("tau_s", None)
    if tau is not None:
        if not (isinstance(tau, (int, float)) and math.isfinite(tau) and tau > 0):
            raise ValueError(f"analog hardware tau_s must be finite and > 0, got {tau!r}")
        return AnalogPlatform.with_tau(float(tau), **fields)
    return AnalogPlatform(**fields)


def parse_hardware(spec: str) -> tuple[str, str]:
    """``"<digital>+<analog>"`` (e.g. ``"a100+paper"``) as its two preset names."""
    parts = spec.split("+")
    if len(parts) != 2 or not all(parts):
        raise ValueError(f"hardware must be '<digital>+<analog>' (e.g. 'a100+paper'), got {spec!r}; digital presets "
                         f"{preset_names('digital')}, analog presets {preset_names('analog')}")
    return parts[0], parts[1]


# ------------------------------------------------------------------------------------------------ pricing

class StepCost(NamedTuple):
    """One step's modeled time (seconds) and energy (joules), with the terms a reader asks about."""

    time_s: float
    energy_j: float
    passes_s: float
    digital_s: float
    program_s: float
    transfer_s: float
    analog_s: float

    def as_dict(self) -> dict[str, float]:
        return {k: float(v) for k, v in self._asdict().items()}


def _pass_scale(work: Work, profile: PassProfile) -> float:
    """Flops and bytes of a pass grow with its examples; the profile was measured at ``profile.examples``."""
    examples = float(work.examples)
    return examples / profile.examples if examples > 0 else 1.0


def step_cost(work: Work, profile: PassProfile, digital: DigitalPlatform, analog: AnalogPlatform, *,
              pass_seconds: dict[str, float] | None = None) -> StepCost:
    """The price of one step's ``work``: model passes from ``profile`` on ``digital``'s roofline (or at the measured
    ``pass_seconds``, scaled by the examples), the other digital kinds on the roofline, the analog work on
    ``analog`` (module docstring). Host work, transfers and the analog run are serialized."""
    scale = _pass_scale(work, profile)
    fwd, rev = float(work.forward_passes), float(work.reverse_passes)
    if pass_seconds is None:
        one = lambda p: float(digital.seconds(p.flops * scale, p.bytes * scale, p.kernels))
        passes_s = fwd * one(profile.forward) + rev * one(profile.reverse)
    else:
        passes_s = scale * (fwd * pass_seconds["forward_s"] + rev * pass_seconds["reverse_s"])
    digital_s = float(sum(digital.seconds(work.flops[k], work.bytes[k], work.kernels[k]) for k in DIGITAL_KINDS))
    device = analog_cost(
        dac_values=work.dac_values, coupling_values=work.coupling_values, adc_values=work.adc_values,
        analog_tau=work.analog_tau, resistor_tau=work.resistor_tau, dac_bits=work.dac_bits,
        coupling_bits=work.coupling_bits, adc_bits=work.adc_bits, platform=analog,
    )
    host_s = passes_s + digital_s
    time_s = host_s + float(device.time_s)
    return StepCost(time_s, host_s * digital.power_w + float(device.energy_j), passes_s, digital_s,
                    float(device.program_s), float(device.input_s + device.output_s), float(device.analog_s))


@dataclasses.dataclass(frozen=True)
class Hardware:
    """The platforms the ``modeled`` accounting prices a run's steps on."""

    digital: DigitalPlatform
    analog: AnalogPlatform

    @classmethod
    def build(cls, spec: str, *, digital_overrides: dict | None = None,
              analog_overrides: dict | None = None) -> "Hardware":
        """From ``"<digital>+<analog>"`` preset names (:func:`parse_hardware`) and field overrides."""
        digital, analog = parse_hardware(spec)
        return cls(digital_platform(digital, digital_overrides), analog_platform(analog, analog_overrides))


@dataclasses.dataclass(frozen=True)
class Measured:
    """What a run measured on its machine at its start, for the ``paper`` accounting: the calibrated roofline
    (:func:`calibrate`) and the wall seconds of one forward and one reverse pass (:func:`measure_pass_seconds`)."""

    machine: DigitalPlatform
    pass_seconds: dict[str, float]

    def as_dict(self) -> dict:
        return {"machine": dataclasses.asdict(self.machine), "pass_seconds": dict(self.pass_seconds)}

    @classmethod
    def from_dict(cls, record: dict) -> "Measured":
        return cls(DigitalPlatform(**record["machine"]), dict(record["pass_seconds"]))


def accountings(work: Work, profile: PassProfile, hardware: Hardware, measured: Measured,
                paper: AnalogPlatform) -> dict[str, StepCost]:
    """``{"modeled": ..., "paper": ...}`` for one step (module docstring); ``paper`` is the analog preset of that
    name (:func:`analog_platform`), loaded once by the caller."""
    return {
        "modeled": step_cost(work, profile, hardware.digital, hardware.analog),
        "paper": step_cost(work, profile, measured.machine, paper, pass_seconds=measured.pass_seconds),
    }


# ------------------------------------------------------------------------------------------------ a run's books

DEFAULT_HARDWARE = "a100+paper"
"""The hardware a run's logged ``modeled_*`` figures use; ``python -m experiments.recost`` prices it on others."""

HARDWARE_FILE = "hardware.json"
ACCOUNTS = ("modeled_time_s", "modeled_energy_j", "paper_time_s", "paper_energy_j")


class RunAccounting:
    """The pricing of one run's steps (module docstring): its model's :class:`PassProfile`, what it measured on its
    machine (:class:`Measured`) and the hardware of its ``modeled`` accounting, kept in ``hardware.json`` so that
    a resumed run prices its steps exactly as an uninterrupted one and ``experiments.recost`` can price them again.
    """

    def __init__(self, profile: PassProfile, measured: Measured, spec: str = DEFAULT_HARDWARE):
        self.profile, self.measured, self.spec = profile, measured, spec
        self.hardware = Hardware.build(spec)
        self.paper = analog_platform("paper")

    @classmethod
    def open(cls, run_dir: str, predict_fn: Callable, params: Any, inputs: Any, *, metric: str,
             writer: bool = True) -> "RunAccounting":
        """The run's accounting from ``run_dir/hardware.json``, or measured now on the batch ``inputs`` (about a
        second plus two compilations) and written there."""
        path = pathlib.Path(run_dir) / HARDWARE_FILE
        if path.exists():
            record = json.loads(path.read_text())
            return cls(PassProfile.from_dict(record["profile"]), Measured.from_dict(record["measured"]),
                       record["hardware"])
        profile = measure_passes(predict_fn, params, inputs)
        measured = Measured(calibrate(), measure_pass_seconds(predict_fn, params, inputs))
        accounting = cls(profile, measured)
        if writer:
            record = {"hardware": accounting.spec, "metric": metric, "profile": profile.as_dict(),
                      "measured": measured.as_dict()}
            temporary = path.with_suffix(".tmp")
            temporary.write_text(json.dumps(record, indent=2))
            temporary.replace(path)
        return accounting

    def price(self, work: Work, steps: int = 1) -> dict[str, float]:
        """``ACCOUNTS`` of ``work`` done over ``steps`` identical steps (its mean step priced, times ``steps``)."""
        mean = work if steps == 1 else work.scaled(1.0 / steps)
        costs = accountings(mean, self.profile, self.hardware, self.measured, self.paper)
        return {f"{name}_{unit}": steps * getattr(costs[name], field)
                for name in ("modeled", "paper") for unit, field in (("time_s", "time_s"), ("energy_j", "energy_j"))}


@functools.lru_cache(maxsize=None)
def gradient_work(examples: int, params: int) -> Work:
    """The gradient's own model passes (one forward, one reverse over the batch), which every optimizer needs (host
    numbers)."""
    return jax.device_get(digital_work(forward_passes=1, reverse_passes=1, examples=examples, params=params))


def step_work(opt_state: Any, examples: int, params: int) -> Work:
    """A training step's whole work, as host numbers: the gradient's passes, then the optimizer's records
    (``kfac_thermo``'s work records in its state)."""
    return sequential_work([gradient_work(examples, params), *jax.device_get(work_records(opt_state))])


@functools.lru_cache(maxsize=None)
def _preset_hardware(spec: str) -> Hardware:
    return Hardware.build(spec)


def modeled_seconds(opt_state: Any, profile: PassProfile, examples: int, params: int,
                    spec: str = DEFAULT_HARDWARE) -> float:
    """Modeled seconds of the last step of an optimizer state (gradient and optimizer work, the ``modeled``
    accounting on the presets ``spec``): what the benchmarks report beside their measured step times."""
    hardware = _preset_hardware(spec)
    return step_cost(step_work(opt_state, examples, params), profile, hardware.digital, hardware.analog).time_s


def paper_seconds(opt_state: Any, profile: PassProfile, measured: Measured, examples: int, params: int) -> float:
    """The ``paper`` accounting of the last step of an optimizer state: the model passes at their ``measured``
    wall time, the rest on the measured machine's roofline, the analog work at the paper's constants."""
    return step_cost(step_work(opt_state, examples, params), profile, measured.machine, analog_platform("paper"),
                     pass_seconds=measured.pass_seconds).time_s
