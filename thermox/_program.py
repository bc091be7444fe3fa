r"""The device protocol: program a drift once, then run it for any right-hand side and read it out.

    programmed = thermox.program(device, A, method="auto")     capacity, couplings (quantized, mismatched),
                                                                the method's preparation (an eigh, ...), once
    voltages = programmed.run(b, start, key=key, t=t)          inputs through the DAC, the OU dynamics for t tau
    readout = programmed.readout(b, start, key=key, t=t)       the run, then device.num_readouts samples
                                                                readout_interval tau apart, each through the ADC,
                                                                averaged (value), and the final node voltages
    x = programmed.solve(b, x0, key=key, t=t)                  readout(b, load(x0)).value
    law = programmed.law(t)                                    a dense drift's readout at a fixed t, as operators

Every user of the device (``thermox.linalg``, TNGD, thermodynamic K-FAC) goes through this module: no other code
applies a converter, noise or an OU law.
"""

from __future__ import annotations

from typing import NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
from jaxtyping import Array, ArrayLike, Float, PRNGKeyArray

from ._dense_law import OULawOperators, ou_law_operators
from ._device import AnalogDevice
from ._drift import AbstractDrift, DenseDrift, EigenDrift, as_drift
from ._evolve import check_run, check_time, check_vector
from ._methods import AbstractMethod, Diffrax, Exact, MethodName, resolve_method

Vector = Float[ArrayLike, "n *k"]
Time = float | Float[Array, ""]


class Readout(NamedTuple):
    """One readout of the device.

    Attributes:
        value: the digital readout: the ADC conversion of the node voltages, averaged over ``num_readouts``.
        voltages: the node voltages at the end of the readout (what a device that is not reset carries over).
    """

    value: Array
    voltages: Array


class Programmed(eqx.Module):
    """A drift programmed on a device: its realised couplings and the method's preparation, reused by every run.

    Build it with :func:`program`.

    Attributes:
        device: the chip.
        couplings: the drift the couplings realise (quantized to ``coupling_bits``, times ``1 + mismatch E``).
        prepared: the same drift with the method's preparation done (an ``EigenDrift``, a diagonalized Gram, ...).
        method: how runs are computed (``thermox.Exact()``, ``Krylov``, ``Diffrax``).
    """

    device: AnalogDevice
    couplings: AbstractDrift
    prepared: AbstractDrift
    method: AbstractMethod

    @property
    def size(self) -> int:
        """Number of cells used."""
        return self.couplings.size

    def load(self, x0: Float[ArrayLike, "n *k"]) -> Float[Array, "n *k"]:
        """Digital values placed on the nodes through the DAC: the node voltages to start a run from."""
        return self.device.dac(check_vector(x0, self.size, "x0"))

    def read(self, voltages: Float[Array, "n *k"]) -> Float[Array, "n *k"]:
        """One readout of the node voltages through the ADC."""
        return self.device.adc(voltages)

    def _inputs(self, b, start, t, window, key, start_name):
        """The checked right-hand side through the DAC, the start voltages, the times and the noise temperature."""
        b, start, t, window, kappa0 = check_run(self.size, b, start, t, window, self.device.kappa0, key,
                                                x0_name=start_name)
        return self.device.dac(b), start, t, window, kappa0

    def _advance(self, b, start, key, t, window, kappa0):
        return self.method.advance(self.prepared, b, start, key=key, t=t, kappa0=kappa0, window=window,
                                   saturation=self.device.saturation)

    def run(self, b: Vector, start: Vector | None = None, *, key: PRNGKeyArray | None, t: Time,
            window: Time | None = None) -> Float[Array, "n *k"]:
        r"""The node voltages after running ``dx = -(A x - dac(b)) ds + sqrt(2 kappa0) dW`` for ``t`` tau (held at
        the rails if the device saturates), or their average over the last ``window`` tau; before the ADC.

        Args:
            b: right-hand side(s), shape (n,) or (n, k), loaded through the DAC.
            start: node voltages at the start (a previous run's, or :meth:`load` of digital values); None: zero.
            key: PRNG key of the thermal noise (None only on a noiseless device).
            t: run time in units of tau.
            window: averaging window in units of tau, ``0 < window <= t`` (None: the final voltages).
        """
        b, start, t, window, kappa0 = self._inputs(b, start, t, window, key, "start")
        return self._advance(b, start, key, t, window, kappa0)

    def readout(self, b: Vector, start: Vector | None = None, *, key: PRNGKeyArray | None, t: Time,
                window: Time | None = None) -> Readout:
        r"""A run of ``t`` tau (:meth:`run`), then the readout: ``device.num_readouts`` samples of the node voltages,
        ``device.readout_interval`` tau apart (the first at ``t``), each through the ADC, averaged digitally. The
        samples are exact draws of the process: each is one Markov transition of the interval from the previous.

        Returns:
            The averaged digital readout and the node voltages at the last sample.
        """
        return self._readout(b, start, key, t, window, "start")

    def _readout(self, b, start, key, t, window, start_name) -> Readout:
        count = self.device.num_readouts
        if count > 1 and window is not None:
            raise ValueError("thermox: a window average and num_readouts > 1 are two readout modes; use one")
        b, start, t, window, kappa0 = self._inputs(b, start, t, window, key, start_name)
        if count == 1:
            voltages = self._advance(b, start, key, t, window, kappa0)
            return Readout(self.read(voltages), voltages)
        keys = None if key is None else jr.split(key, count)
        voltages = self._advance(b, start, None if keys is None else keys[0], t, None, kappa0)
        interval = self.device.readout_interval

        def sample(carry, key):
            voltages, total = carry
            voltages = self._advance(b, voltages, key, interval, None, kappa0)
            return (voltages, total + self.read(voltages)), None

        (voltages, total), _ = jax.lax.scan(sample, (voltages, self.read(voltages)),
                                            None if keys is None else keys[1:], length=count - 1)
        return Readout(total / count, voltages)

    def solve(self, b: Vector, x0: Vector | None = None, *, key: PRNGKeyArray | None, t: Time,
              window: Time | None = None) -> Float[Array, "n *k"]:
        """The digital readout of a run from the digital start values ``x0`` (zeros when None): ``b`` and ``x0``
        through the DAC, the run, the ADC (averaged over ``device.num_readouts`` samples)."""
        start = None if x0 is None else self.load(x0)
        return self._readout(b, start, key, t, window, "x0").value

    def law(self, t: float | Float[Array, ""]) -> "FixedTimeLaw":
        """The readout of runs of ``t`` tau from zero as a :class:`FixedTimeLaw` (a dense drift only), formed from
        these couplings and preparation."""
        return _fixed_time_law(self.device, self.couplings, t, self.prepared, self.method)


def program(device: AnalogDevice, A, *, method: AbstractMethod | MethodName = "auto") -> Programmed:
    """Program the drift ``A`` on ``device``: check that it fits, realise its couplings (``device.program``:
    quantization and the chip's mismatch) and prepare ``method`` on them once.

    Args:
        device: the chip.
        A: SPD drift: dense (n, n) array, ``thermox.EigenDrift`` / ``LowRankDrift`` / ``OperatorDrift``, or a
            lineax operator.
        method: a method object (``thermox.Exact()``, ``Krylov(dim, rtol)``, ``Diffrax(solver, dt)``,
            ``EulerMaruyama(dt)``, ``Auto()``) or the name of a default one; ``"auto"`` is ``Diffrax`` when the
            device saturates, else ``Exact`` for a dense drift and ``Krylov`` for a low-rank or matrix-free one.
    """
    drift = as_drift(A)
    device.check_capacity(drift.size)
    couplings = device.program(drift)
    method = resolve_method(method, couplings, device.saturation)
    return Programmed(device, couplings, method.prepare(couplings), method)


def _closed_form(device: AnalogDevice) -> bool:
    """A fixed-time readout has dense closed-form operators: no rails and a single readout sample."""
    return device.saturation is None and device.num_readouts == 1


def _default_method(device: AnalogDevice) -> AbstractMethod:
    return Diffrax() if device.saturation is not None else Exact()


def _fixed_time_law(device, couplings, t, prepared=None, method=None) -> "FixedTimeLaw":
    if not isinstance(couplings, DenseDrift):
        raise ValueError(f"thermox: a fixed-time law needs dense programmed couplings, got {type(couplings).__name__}")
    t = check_time(t, "run time t", allow_zero=False)
    if _closed_form(device):
        state = ou_law_operators(couplings.matrix, t, device.kappa0, noisy=not device.is_noiseless)
        return FixedTimeLaw(device, t, state)
    if device.saturation is not None:  # then ``method`` (if given) is a Diffrax and ``prepared`` its certificate
        method = Diffrax() if method is None else method
        return FixedTimeLaw(device, t, method.prepare(couplings) if prepared is None else prepared, method)
    state = prepared if isinstance(prepared, EigenDrift) else Exact().prepare(couplings)
    return FixedTimeLaw(device, t, state, Exact())


class FixedTimeLaw(eqx.Module):
    r"""The readout of runs of ``t`` tau from zero on one programmed dense drift ``P``, as a random function of the
    right-hand side and a key, cached for repeated runs (thermodynamic K-FAC forms one per refresh).

    With neither rails nor readout averaging the law is closed-form: ``x = M(P) dac(b) + C(P)^{1/2} z`` with dense
    operators (``state`` an :class:`OULawOperators`, formed by the certified relaxed path: the SPD inverse when
    ``lambda_min(P) t >= -log eps``, else one ``eigh``; see :func:`thermox.ou_law_operators`). Otherwise ``state``
    is the prepared drift (an ``EigenDrift`` for averaged readouts, the certified couplings for ``Diffrax`` with the
    rails) and each run is one :meth:`Programmed.readout`.

    ``state`` holds arrays only: keep it (e.g. in an optimizer state) and re-attach the device with
    ``FixedTimeLaw(device, t, state)``; :meth:`initial_state` gives a placeholder of the same structure.
    Non-finite right-hand sides give non-finite readouts without an error, so that the caller's policy decides.
    """

    device: AnalogDevice
    t: float | Float[Array, ""]
    state: OULawOperators | AbstractDrift
    method: AbstractMethod | None = None

    @classmethod
    def program(cls, device: AnalogDevice, A: Float[ArrayLike, "n n"], t: float | Float[Array, ""]) -> "FixedTimeLaw":
        """Program the dense drift ``A`` on ``device`` (capacity, quantized and mismatched couplings) and form the
        law of runs of ``t`` tau, without the eigendecomposition a general :func:`program` would prepare."""
        drift = A if isinstance(A, DenseDrift) else DenseDrift(jnp.asarray(A))
        device.check_capacity(drift.size)
        return _fixed_time_law(device, device.program(drift), t)

    @staticmethod
    def initial_state(device: AnalogDevice, n: int, dtype) -> OULawOperators | AbstractDrift:
        """A placeholder ``state`` (identity operators) with the structure a law of ``device`` has."""
        eye = jnp.eye(n, dtype=dtype)
        if _closed_form(device):
            return OULawOperators(eye, None if device.is_noiseless else eye)
        if device.saturation is not None:
            return DenseDrift(eye)
        return EigenDrift(jnp.ones((n,), dtype), eye)

    @property
    def size(self) -> int:
        return self.state.mean.shape[0] if isinstance(self.state, OULawOperators) else self.state.size

    def _programmed(self) -> Programmed:
        method = self.method if self.method is not None else _default_method(self.device)
        return Programmed(self.device, self.state, self.state, method)

    def _general(self, b, key, rows, read: bool):
        """A run of the programmed drift on the columns of ``b`` (its rows when ``rows``), non-finite passed through."""
        b = b.T if rows else b
        finite = jnp.all(jnp.isfinite(b))
        programmed = self._programmed()
        b_safe = jnp.where(finite, b, 0.0)
        x = (programmed.readout(b_safe, key=key, t=self.t).value if read
             else programmed.run(b_safe, key=key, t=self.t))
        x = jnp.where(finite, x, jnp.nan)
        return x.T if rows else x

    def run(self, b: Float[Array, "n k"], key: PRNGKeyArray | None, *, rows: bool = False) -> Float[Array, "n k"]:
        """The node voltages of one run with the columns of ``b`` (its rows when ``rows``: ``x^T`` for ``b^T``,
        without a transpose) as biases, before the ADC: ``M(P) dac(b) + C(P)^{1/2} z``."""
        if not isinstance(self.state, OULawOperators):
            return self._general(b, key, rows, read=False)
        law = self.state
        b = self.device.dac(b)
        x = b @ law.mean.T if rows else law.mean @ b
        if law.noise is not None:
            z = jr.normal(key, b.shape, b.dtype)
            x = x + (z @ law.noise.T if rows else law.noise @ z)
        return x

    def solve(self, b: Float[Array, "n k"], key: PRNGKeyArray | None, *, rows: bool = False) -> Float[Array, "n k"]:
        """The digital readout of one run (:meth:`run`, then the ADC; averaged over ``device.num_readouts``)."""
        if not isinstance(self.state, OULawOperators):
            return self._general(b, key, rows, read=True)
        return self.device.adc(self.run(b, key, rows=rows))

    def solve_identity(self, key: PRNGKeyArray | None) -> Float[Array, "n n"]:
        """:meth:`solve` of the identity (the device's estimate of ``P^-1`` for a relaxed run) without a product with
        it: the DAC maps ``I`` to ``q I`` (zero is an exact code and each entry's conversion depends on the peak, 1,
        only), so the mean is ``q M(P)``."""
        if not isinstance(self.state, OULawOperators):
            return self.solve(jnp.eye(self.size, dtype=jax.tree_util.tree_leaves(self.state)[0].dtype), key)
        law = self.state
        n, dtype = law.mean.shape[0], law.mean.dtype
        x = self.device.dac(jnp.ones((), dtype)) * law.mean
        if law.noise is not None:
            x = x + law.noise @ jr.normal(key, (n, n), dtype)
        return self.device.adc(x)
