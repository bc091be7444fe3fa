r"""A Langevin circuit: the device with a nonlinear drift, sampling ``exp(-U / kappa0)``.

The node voltages obey (s = time / tau)

    dx = -grad U(x) ds + sqrt(2 kappa0) dW,

whose stationary law is proportional to ``exp(-U(x) / kappa0)`` (Fokker-Planck: the flux
``-grad U p - kappa0 grad p`` vanishes for that ``p``). The OU solver is the case ``U = x^T A x / 2 - b^T x``.
To sample a posterior ``exp(-V)`` on a device at temperature ``kappa0`` pass ``grad U = kappa0 grad V``.

Simulated through the general diffrax path (``thermox.Diffrax``: any solver at a fixed step, the rails after every
step). With Euler-Maruyama (``diffrax.Euler()``) this is the unadjusted Langevin algorithm at step ``h = dt``: its
stationary law is biased by O(h) (for a quadratic ``U`` with Hessian eigenvalue ``lambda`` the variance along that
mode is ``kappa0 / (lambda (1 - h lambda / 2))``, a relative bias of ``h lambda / 2 + O(h^2)``), which the hardware,
integrating in continuous time, does not have.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import jax.random as jr
from jaxtyping import Array, ArrayLike, Float, PRNGKeyArray

from ._device import AnalogDevice
from ._evolve import check_time, check_vector
from ._methods import AbstractMethod, Diffrax, MethodName, as_method

GradPotential = Callable[[Float[Array, " n"]], Float[Array, " n"]]


def _concrete_time(value, name: str, *, allow_zero: bool) -> float:
    if isinstance(value, jax.core.Tracer):
        raise ValueError(f"thermox.langevin: {name} must be a concrete number (it fixes the step count), got a tracer")
    return check_time(value, f"langevin {name}", allow_zero=allow_zero)


def _check_device(device: AnalogDevice, key: PRNGKeyArray | None) -> None:
    if device.is_noiseless:
        raise ValueError("thermox.langevin: the device is noiseless (kappa0 = 0): Langevin sampling needs thermal "
                         "noise (kappa0 > 0); without it the voltages descend to a minimum of U")
    if key is None:
        raise ValueError("thermox.langevin: pass key= (the PRNG key of the thermal noise)")
    if not device.is_ideal_couplings:
        raise ValueError("thermox.langevin: coupling_bits / mismatch act on programmed matrix entries, which a "
                         "gradient callable does not expose; quantize or perturb the potential's parameters in it")
    if device.num_readouts != 1:
        raise ValueError("thermox.langevin: each sample is one ADC readout (spaced by interval=); use a device with "
                         f"num_readouts=1, got {device.num_readouts}")


def langevin(
    device: AnalogDevice,
    grad_potential: GradPotential,
    x0: Float[ArrayLike, " n"],
    *,
    key: PRNGKeyArray,
    num_samples: int,
    burn_in: float,
    interval: float,
    method: AbstractMethod | MethodName = "diffrax",
) -> Float[Array, "num_samples n"]:
    r"""Samples of ``exp(-U / kappa0)`` from the device run as the Langevin circuit
    ``dx = -grad U(x) ds + sqrt(2 kappa0) dW``.

    Protocol: ``x0`` goes through the DAC onto the nodes; the circuit runs ``burn_in`` tau, then ``num_samples``
    times ``interval`` tau, the node voltages read through the ADC after each interval (the voltages themselves
    run on unread). The rails ``|x_i| <= device.saturation`` hold after every step when set.

    Args:
        device: the chip; needs ``kappa0 > 0``, ideal couplings (the drift is a callable, not programmed entries)
            and ``num_readouts = 1``.
        grad_potential: ``x -> grad U(x)``, shape (n,) to (n,), in volts per tau (jax-traceable).
        x0: start values, shape (n,), loaded through the DAC.
        key: PRNG key of the thermal noise.
        num_samples: number of readouts (static, >= 1).
        burn_in: run time before the first interval, units of tau (concrete, >= 0).
        interval: run time between readouts, units of tau (concrete, > 0).
        method: a ``thermox.Diffrax(solver, dt)`` (``EulerMaruyama(dt)``) or ``"diffrax"`` (Euler, dt = 0.1); the
            step count of a run of ``t`` tau is ``ceil(t / dt)``.

    Returns:
        The ADC readouts, shape (num_samples, n).

    Example:
        >>> device = thermox.AnalogDevice(kappa0=1.0)
        >>> xs = thermox.langevin(device, lambda x: x, jnp.zeros(3), key=jax.random.key(0), num_samples=1000,
        ...                       burn_in=5.0, interval=1.0, method=thermox.EulerMaruyama(dt=0.05))  # ~ N(0, I)
    """
    _check_device(device, key)
    method = as_method(method)
    if not isinstance(method, Diffrax):
        raise ValueError(f"thermox.langevin: a nonlinear drift has no closed-form law; use thermox.Diffrax(solver, "
                         f"dt) or thermox.EulerMaruyama(dt), not {type(method).__name__}")
    if isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples < 1:
        raise ValueError(f"thermox.langevin: num_samples must be an integer >= 1, got {num_samples!r}")
    burn_in = _concrete_time(burn_in, "burn_in", allow_zero=True)
    interval = _concrete_time(interval, "interval", allow_zero=False)
    x0 = jnp.asarray(x0)
    if x0.ndim != 1:
        raise ValueError(f"thermox.langevin: x0 must be a vector of shape (n,), got shape {x0.shape}")
    n = x0.shape[0]
    device.check_capacity(n)
    x0 = check_vector(x0, n, "x0")
    gradient = jax.eval_shape(grad_potential, x0)
    if getattr(gradient, "shape", None) != x0.shape:
        raise ValueError(f"thermox.langevin: grad_potential must map shape {x0.shape} to {x0.shape}, got "
                         f"{getattr(gradient, 'shape', type(gradient).__name__)}")

    kappa0 = jnp.asarray(device.kappa0, x0.dtype)
    field = lambda x: -grad_potential(x).astype(x.dtype)
    run = lambda x, key, t: method.integrate(field, x, key=key, t=t, kappa0=kappa0, saturation=device.saturation)
    burn_key, sample_key = jr.split(key)
    x = device.dac(x0)
    if burn_in > 0:
        x = run(x, burn_key, burn_in)

    def sample(x, key):
        x = run(x, key, interval)
        return x, device.adc(x)

    _, samples = jax.lax.scan(sample, x, jr.split(sample_key, num_samples))
    return samples
