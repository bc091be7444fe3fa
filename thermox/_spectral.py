r"""Scalar functions of an eigenvalue that give the exact law of the OU readout.

In units where the device time constant is one (``s = t / tau``) the device obeys

    dx = -(A x - b) ds + sqrt(2 kappa0) dW.

Every readout is Gaussian and, because the noise is isotropic, a function of ``A`` applied to vectors:

    readout = x0 + M(A) (b - A x0) + C(A)^{1/2} z,      z ~ N(0, I).

For the final state at time ``t``: ``M(w) = t phi(w t)`` and ``C(w) = 2 kappa0 t phi(2 w t)`` with
``phi(x) = (1 - e^{-x}) / x``, i.e. mean ``e^{-At} x0 + (I - e^{-At}) A^{-1} b`` and covariance
``kappa0 A^{-1} (I - e^{-2At})``. For the average over a window ``[t - T, t]`` the functions below are
the exact averages of the same process. Each is evaluated without cancellation for all ``w >= 0``
(series for small arguments), so a zero eigenvalue (a Krylov breakdown block) gives finite values.
"""

from __future__ import annotations

import math
from typing import Callable

import equinox as eqx
import jax.numpy as jnp
from jaxtyping import Array, Float

ScalarFn = Callable[[Float[Array, "..."]], Float[Array, "..."]]

_SERIES_TERMS = 22


def phi(x: Float[Array, "..."]) -> Float[Array, "..."]:
    """``(1 - exp(-x)) / x``, with the value 1 at x = 0."""
    small = jnp.abs(x) < 1e-6
    safe = jnp.where(small, 1.0, x)
    return jnp.where(small, 1.0 - x / 2.0 + x * x / 6.0, -jnp.expm1(-safe) / safe)


def _series(x: Float[Array, "..."], coefficients: list[float]) -> Float[Array, "..."]:
    """Horner evaluation of ``sum_k coefficients[k] x**k``."""
    out = jnp.zeros_like(x) + coefficients[-1]
    for c in reversed(coefficients[:-1]):
        out = out * x + c
    return out


def _h(x: Float[Array, "..."]) -> Float[Array, "..."]:
    """``int_0^1 ((1 - e^{-x u}) / x)^2 du`` = ``(1 - 2 phi(x) + phi(2x)) / x^2``; 1/3 at x = 0."""
    coefficients = [
        (-1.0) ** k * (2.0**k - 2.0) / math.factorial(k + 1) for k in range(2, 2 + _SERIES_TERMS)
    ]
    small = x < 1.0
    safe = jnp.where(small, 1.0, x)
    closed = (1.0 - 2.0 * phi(safe) + phi(2.0 * safe)) / (safe * safe)
    return jnp.where(small, _series(x, coefficients), closed)


class OULaw(eqx.Module):
    """The readout law of the OU device as eigenvalue functions ``mean_gain`` and ``variance``.

    Attributes:
        t: run time in units of tau (a scalar, may be traced).
        kappa0: noise temperature kappa0 (variance per unit tau of the drive), volts^2.
        window: ``None`` for the final-state readout, else the averaging window T (0 < T <= t), units of tau.
    """

    t: Float[Array, ""]
    kappa0: Float[Array, ""]
    window: Float[Array, ""] | None

    def mean_gain(self, w: Float[Array, "..."]) -> Float[Array, "..."]:
        """M(w): readout mean is ``x0 + M(A)(b - A x0)``."""
        t = self.t
        if self.window is None:
            return t * phi(w * t)
        T = self.window
        a = t - T
        # Small w t: average over [a, t] of s phi(w s) = sum_k (-w)^k s^{k+1}/(k+1)!.
        terms = []
        for k in range(_SERIES_TERMS):
            # mean over [a, t] of s^{k+1} = (t^{k+2} - a^{k+2}) / ((k+2) T), without cancellation.
            powers = sum(t**j * a ** (k + 1 - j) for j in range(k + 2))
            terms.append((-w) ** k * powers / float(math.factorial(k + 1) * (k + 2)))
        series = sum(terms)
        small = w * t < 1.0
        safe = jnp.where(small, 1.0, w)
        closed = (1.0 - jnp.exp(-safe * a) * phi(safe * T)) / safe
        return jnp.where(small, series, closed)

    def variance(self, w: Float[Array, "..."]) -> Float[Array, "..."]:
        """C(w): readout covariance is ``C(A)`` (volts^2)."""
        t = self.t
        if self.window is None:
            return 2.0 * self.kappa0 * t * phi(2.0 * w * t)
        T = self.window
        a = t - T
        inside = T * _h(w * T)
        before = (phi(w * T)) ** 2 * a * phi(2.0 * w * a)
        return 2.0 * self.kappa0 * (inside + before)

    def noise_gain(self, w: Float[Array, "..."]) -> Float[Array, "..."]:
        """C(w)^{1/2}, the gain applied to standard normal noise."""
        return jnp.sqrt(jnp.maximum(self.variance(w), 0.0))
