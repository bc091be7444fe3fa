r"""The work record: what one optimizer step did, as counts, never as costs.

Every optimizer (the natural-gradient and K-FAC families here, and any optax transformation wrapped by
:func:`kfac_thermo.with_work`) reports one :class:`Work` per step in its state. A hardware model turns it into time
and energy afterwards (``experiments.hardware``), so changing a link bandwidth, a time constant or a digital
platform never needs a re-run; only what changes the training itself (noise, bits, run time) does.

Digital work is counted by kind (:data:`DIGITAL_KINDS`) as flops, bytes of memory traffic and kernel launches,
which a roofline model prices; model passes are counted apart (their flops depend on the model, which the hardware
model measures once). Analog work is the values moved through the converters (inputs through the DAC, programmed
couplings, readouts through the ADC) with their bits, and the analog run time on the critical path in units of
tau. The simulation's own cost (eigendecompositions of the exact law) is not work: the hardware would not do it.
"""

from __future__ import annotations

from typing import NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Float

DIGITAL_KINDS = ("gram", "cholesky", "eigh", "inverse", "precondition", "update")
"""Kinds of digital work: Gram products (Jacobian Grams, Kronecker factors), Cholesky factorisations,
eigendecompositions, explicit inverses, preconditioning products (``S^-1 G A^-1``, Woodbury and CG products,
``W c``), and the optimizer's element-wise update."""

Scalar = Float[Array, ""]


def _scalar(value: ArrayLike) -> Scalar:
    return jnp.asarray(value, jnp.float32)


def _by_kind(values: dict[str, ArrayLike] | None) -> dict[str, Scalar]:
    values = {} if values is None else dict(values)
    unknown = set(values) - set(DIGITAL_KINDS)
    if unknown:
        raise ValueError(f"unknown digital work kind(s) {sorted(unknown)}; the kinds are {DIGITAL_KINDS}")
    return {kind: _scalar(values.get(kind, 0.0)) for kind in DIGITAL_KINDS}


class Work(NamedTuple):
    """Counts of one optimizer step's work (float32 scalars, so the record jits as part of the state).

    Attributes:
        forward_passes: model forward passes, each over ``examples`` examples.
        reverse_passes: model reverse passes (one output cotangent each), over the same examples.
        examples: examples per pass (the batch size); 0 when no pass ran.
        params: parameters the passes differentiate (N).
        flops: other digital floating-point operations by kind (:data:`DIGITAL_KINDS`).
        bytes: digital memory traffic by kind, bytes.
        kernels: digital kernel launches by kind.
        dac_values: values sent to the analog device through its DAC (right-hand sides, start states).
        coupling_values: coupling values programmed into the device.
        adc_values: values read back through the ADC.
        dac_bits, coupling_bits, adc_bits: bits per value (0: an ideal converter, priced at the platform's bits).
        analog_tau: analog run time on the critical path, units of tau (runs one after another add up, runs on
            parallel solvers overlap).
        analog_solvers: analog solvers that ran in parallel (0: none ran).
        resistor_tau: sum over the analog runs of (couplings held on the chip + its cells) x the run's time in
            tau: what the resistors dissipate while the dynamics run, whether or not they were programmed this step.
    """

    forward_passes: Scalar
    reverse_passes: Scalar
    examples: Scalar
    params: Scalar
    flops: dict[str, Scalar]
    bytes: dict[str, Scalar]
    kernels: dict[str, Scalar]
    dac_values: Scalar
    coupling_values: Scalar
    adc_values: Scalar
    dac_bits: Scalar
    coupling_bits: Scalar
    adc_bits: Scalar
    analog_tau: Scalar
    analog_solvers: Scalar
    resistor_tau: Scalar

    # ------------------------------------------------------------------------------------------ constructors

    @classmethod
    def zero(cls) -> "Work":
        """No work."""
        return digital()

    # ------------------------------------------------------------------------------------------ combinators

    def then(self, other: "Work") -> "Work":
        """This work followed by ``other`` on the same hardware: everything adds up (analog runs one after the
        other); ``examples``, ``params``, the bits and the number of parallel solvers are the larger of the two."""
        return _combine([self, other], parallel_runs=False)

    def where(self, condition: Array, other: "Work") -> "Work":
        """This record where ``condition`` holds, else ``other`` (for work done under ``lax.cond``)."""
        return jax.tree_util.tree_map(lambda a, b: jnp.where(condition, a, b), self, other)

    def scaled(self, factor: ArrayLike) -> "Work":
        """Every count times ``factor`` (``examples``, ``params`` and the bits unchanged)."""
        keep = ("examples", "params", "dac_bits", "coupling_bits", "adc_bits", "analog_solvers")
        fields = {name: value if name in keep else jax.tree_util.tree_map(lambda v: v * factor, value)
                  for name, value in self._asdict().items()}
        return Work(**fields)

    def as_dict(self) -> dict[str, float | dict[str, float]]:
        """Plain Python numbers (for ``metrics.jsonl``); call outside ``jit``."""
        return {name: ({k: float(v) for k, v in value.items()} if isinstance(value, dict) else float(value))
                for name, value in self._asdict().items()}

    @classmethod
    def from_dict(cls, record: dict) -> "Work":
        """The inverse of :meth:`as_dict` (a record read back from ``metrics.jsonl``), as host (numpy float32)
        numbers, exactly as the run's own records read to the host."""
        missing = set(cls._fields) - set(record)
        if missing:
            raise ValueError(f"a work record needs the fields {sorted(missing)}")
        host = lambda value: np.asarray(value, np.float32)
        return cls(**{name: ({kind: host(value) for kind, value in record[name].items()}
                             if name in ("flops", "bytes", "kernels") else host(record[name]))
                      for name in cls._fields})


def _maximum(a, b):
    """``max(a, b)`` elementwise: in numpy for host values (records read back from a run), else in jax."""
    host = not any(isinstance(v, (jax.Array, jax.core.Tracer)) for v in (a, b))
    return np.maximum(a, b) if host else jnp.maximum(a, b)


def _combine(works: Sequence[Work], *, parallel_runs: bool) -> Work:
    first, *rest = works
    out = first._asdict()
    for work in rest:
        for name, value in work._asdict().items():
            if name in ("flops", "bytes", "kernels"):
                out[name] = {k: out[name][k] + value[k] for k in DIGITAL_KINDS}
            elif name == "analog_tau":
                out[name] = _maximum(out[name], value) if parallel_runs else out[name] + value
            elif name == "analog_solvers":
                out[name] = out[name] + value if parallel_runs else _maximum(out[name], value)
            elif name in ("examples", "params", "dac_bits", "coupling_bits", "adc_bits"):
                out[name] = _maximum(out[name], value)
            else:
                out[name] = out[name] + value
    return Work(**out)


def sequential(works: Sequence[Work]) -> Work:
    """Works done one after another (:meth:`Work.then` folded); :meth:`Work.zero` for none."""
    return _combine(list(works) or [Work.zero()], parallel_runs=False)


def parallel(works: Sequence[Work]) -> Work:
    """Works on separate analog solvers sharing one host and one link (K-FAC's layers): digital work and
    transfers add up, analog run times overlap (the longest counts) and the solvers add up."""
    return _combine(list(works) or [Work.zero()], parallel_runs=True)


def digital(
    *,
    forward_passes: ArrayLike = 0.0,
    reverse_passes: ArrayLike = 0.0,
    examples: ArrayLike = 0.0,
    params: ArrayLike = 0.0,
    flops: dict[str, ArrayLike] | None = None,
    bytes: dict[str, ArrayLike] | None = None,
    kernels: dict[str, ArrayLike] | None = None,
) -> Work:
    """A record of digital work only: model passes and flops / bytes / kernel launches by kind."""
    zero = _scalar(0.0)
    return Work(_scalar(forward_passes), _scalar(reverse_passes), _scalar(examples), _scalar(params),
                _by_kind(flops), _by_kind(bytes), _by_kind(kernels), *([zero] * 9))


def analog(
    *,
    dac_values: ArrayLike = 0.0,
    coupling_values: ArrayLike = 0.0,
    adc_values: ArrayLike = 0.0,
    dac_bits: int | None = None,
    coupling_bits: int | None = None,
    adc_bits: int | None = None,
    analog_tau: ArrayLike = 0.0,
    solvers: ArrayLike = 1.0,
    resistor_tau: ArrayLike = 0.0,
) -> Work:
    """A record of analog work on one solver: values through the converters (bits None: an ideal converter), the
    run time in units of tau and the resistors' ``resistor_tau`` (:class:`Work`)."""
    bits = lambda b: _scalar(0.0 if b is None else b)
    return digital()._replace(
        dac_values=_scalar(dac_values), coupling_values=_scalar(coupling_values), adc_values=_scalar(adc_values),
        dac_bits=bits(dac_bits), coupling_bits=bits(coupling_bits), adc_bits=bits(adc_bits),
        analog_tau=_scalar(analog_tau), analog_solvers=_scalar(solvers), resistor_tau=_scalar(resistor_tau))
