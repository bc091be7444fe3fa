"""``AnalogDevice``: the non-idealities of one thermodynamic solver chip, applied where the hardware applies them."""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
from jaxtyping import Array, ArrayLike, Float, PRNGKeyArray

from ._drift import AbstractDrift, DenseDrift, DiagonalDrift, EigenDrift, LowRankDrift
from ._quantize import convert


def _concrete(x) -> bool:
    return not isinstance(x, jax.core.Tracer)


class AnalogDevice(eqx.Module):
    """A thermodynamic (OU) solver chip. The defaults describe an ideal device: no noise, no quantization.

    Protocol of one solve: inputs (``b``, and a given start state) go through the DAC; the drift matrix
    is programmed into the coupling array (quantized to ``coupling_bits`` and perturbed by the chip's
    fixed ``mismatch``); the node voltages evolve by ``dx = -(A x - b) dt/tau + sqrt(2 kappa0/tau) dW``,
    held inside ``[-saturation, saturation]`` when set; after the run time they are read through the ADC.

    Run times are in units of the cell time constant tau = R C, which only the hardware cost model prices
    (``thermox.cost.AnalogPlatform``): the physics, and so the training, does not depend on its value.

    Attributes:
        kappa0: noise temperature, volts^2; the stationary covariance is ``kappa0 A^-1``.
        dac_bits: input converter resolution (None: ideal).
        dac_range: DAC full-scale amplitude in volts (None: auto-ranged by a digital gain per transfer).
        adc_bits: output converter resolution (None: ideal).
        adc_range: ADC full-scale amplitude in volts (None: auto-ranged).
        coupling_bits: resolution of each programmed coupling (None: ideal), auto-ranged by max |A_ij|.
        mismatch: relative standard deviation of the fixed per-chip error of each programmed coupling.
        key: the chip's identity: the PRNG key its mismatch pattern is drawn from (needed if mismatch > 0).
        capacity: number of cells (None: unlimited); a larger problem is refused.
        saturation: rail voltage bounding every node (None: unbounded); needs the diffrax path.
        num_readouts: samples of the node voltages averaged into one readout (static, >= 1): after the run, one
            every ``readout_interval``, each through the ADC, averaged digitally. Averaging ``k`` independent
            samples divides the readout's thermal variance by ``k``; samples closer than the relaxation time are
            correlated and gain less. The extra run time is :attr:`readout_time`; each sample is one ADC transfer.
        readout_interval: time between readout samples, units of tau (> 0).
    """

    kappa0: float | Float[Array, ""] = 0.0
    dac_bits: int | None = eqx.field(default=None, static=True)
    dac_range: float | None = eqx.field(default=None, static=True)
    adc_bits: int | None = eqx.field(default=None, static=True)
    adc_range: float | None = eqx.field(default=None, static=True)
    coupling_bits: int | None = eqx.field(default=None, static=True)
    mismatch: float | Float[Array, ""] = 0.0
    key: PRNGKeyArray | None = None
    capacity: int | None = eqx.field(default=None, static=True)
    saturation: float | None = eqx.field(default=None, static=True)
    num_readouts: int = eqx.field(default=1, static=True)
    readout_interval: float | Float[Array, ""] = 1.0

    def __check_init__(self):
        for name in ("dac_bits", "adc_bits", "coupling_bits"):
            bits = getattr(self, name)
            if bits is not None and (not isinstance(bits, int) or bits < 1):
                raise ValueError(f"AnalogDevice.{name} must be an integer >= 1 or None, got {bits!r}")
        for name in ("dac_range", "adc_range", "saturation"):
            value = getattr(self, name)
            if value is not None and not (value > 0 and np.isfinite(value)):
                raise ValueError(f"AnalogDevice.{name} must be > 0 and finite, or None, got {value!r}")
        positive_int = lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 1
        if self.capacity is not None and not positive_int(self.capacity):
            raise ValueError(f"AnalogDevice.capacity must be an integer >= 1 or None, got {self.capacity!r}")
        if not positive_int(self.num_readouts):
            raise ValueError(f"AnalogDevice.num_readouts must be an integer >= 1, got {self.num_readouts!r}")
        checks = (("kappa0", lambda v: v >= 0, ">= 0"),
                  ("mismatch", lambda v: v >= 0, ">= 0"), ("readout_interval", lambda v: v > 0, "> 0"))
        for name, ok, what in checks:
            value = getattr(self, name)
            if _concrete(value) and not (bool(np.isfinite(value)) and bool(ok(np.asarray(value)))):
                raise ValueError(f"AnalogDevice.{name} must be finite and {what}, got {value!r}")
        if _concrete(self.mismatch) and self.mismatch > 0 and self.key is None:
            raise ValueError("AnalogDevice.mismatch > 0 needs key= (the chip's PRNG key its errors are drawn from)")

    @property
    def is_noiseless(self) -> bool:
        """True when ``kappa0`` is a concrete zero, so no thermal noise is drawn; a traced ``kappa0`` (under
        ``jax.jit`` or ``optax.inject_hyperparams``) counts as noisy."""
        return _concrete(self.kappa0) and bool(np.asarray(self.kappa0) == 0)

    @property
    def readout_time(self) -> float | Float[Array, ""]:
        """Run time the readout adds after a run, units of tau: ``(num_readouts - 1) readout_interval``."""
        return (self.num_readouts - 1) * self.readout_interval

    @property
    def is_ideal_couplings(self) -> bool:
        """True when the programmed drift equals the requested one.

        Without a chip ``key`` there is no mismatch pattern (``mismatch`` is then never applied), so the
        couplings are ideal whatever ``mismatch`` holds, including a traced value under ``jax.jit``.
        """
        if self.coupling_bits is not None:
            return False
        return self.key is None or (_concrete(self.mismatch) and bool(np.asarray(self.mismatch) == 0))

    def check_capacity(self, n: int) -> None:
        """Refuse a problem of ``n`` variables that does not fit the chip's cells."""
        if self.capacity is not None and n > self.capacity:
            raise ValueError(
                f"thermox: problem dimension n={n} exceeds the device capacity of {self.capacity} cells; "
                "use a larger device (capacity=None is unlimited) or split the problem"
            )

    def dac(self, x: Float[ArrayLike, "..."]) -> Float[Array, "..."]:
        """Digital-to-analog conversion of inputs (right-hand side, start state)."""
        return convert(x, self.dac_bits, self.dac_range)

    def adc(self, x: Float[ArrayLike, "..."]) -> Float[Array, "..."]:
        """Analog-to-digital conversion of the node voltages read out."""
        return convert(x, self.adc_bits, self.adc_range)

    def mismatch_pattern(self, n: int, dtype) -> Float[Array, "n n"]:
        """The chip's fixed relative coupling errors: symmetric, unit-variance entries, from ``key``."""
        draws = jr.normal(self.key, (n, n), dtype)
        upper = jnp.triu(draws)
        return upper + jnp.triu(draws, 1).T

    def program(self, drift: AbstractDrift) -> AbstractDrift:
        """The drift the couplings actually realise: quantized to ``coupling_bits``, times ``1 + mismatch E``."""
        if self.is_ideal_couplings:
            return drift
        if isinstance(drift, EigenDrift):
            raise ValueError(
                "thermox: coupling_bits / mismatch act on the programmed matrix entries; pass the dense "
                "matrix, not a precomputed EigenDrift"
            )
        if isinstance(drift, DiagonalDrift):
            return DiagonalDrift(self._program_array(drift.diagonal[:, None], symmetric=False)[:, 0])
        if isinstance(drift, LowRankDrift) and drift.matrix is not None:
            return LowRankDrift.from_factor(drift.shift, self._program_array(drift.matrix, symmetric=False))
        if not isinstance(drift, DenseDrift):
            raise ValueError(
                "thermox: coupling_bits / mismatch need the programmed couplings entry by entry: a dense drift "
                f"matrix, a DiagonalDrift or a LowRankDrift.from_factor; got {type(drift).__name__}, whose "
                "couplings are not held entry by entry"
            )
        return DenseDrift(self._program_array(drift.matrix, symmetric=True))

    def _program_array(self, matrix: Float[Array, "n m"], *, symmetric: bool) -> Float[Array, "n m"]:
        """Couplings as realised: quantized (auto-ranged) then times the chip's fixed ``1 + mismatch E``."""
        matrix = convert(matrix, self.coupling_bits, None)
        if self.key is None:
            return matrix
        if symmetric:
            pattern = self.mismatch_pattern(matrix.shape[0], matrix.dtype)
        else:
            pattern = jr.normal(self.key, matrix.shape, matrix.dtype)
        return matrix * (1.0 + self.mismatch * pattern)
