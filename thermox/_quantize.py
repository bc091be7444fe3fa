"""Uniform converters (DAC / ADC / coupling programming) of the analog device."""

from __future__ import annotations

import jax.numpy as jnp
from jaxtyping import Array, ArrayLike, Float


def quantize(
    x: Float[ArrayLike, "..."], bits: int, full_scale: Float[ArrayLike, ""]
) -> Float[Array, "..."]:
    """Two's-complement mid-tread uniform quantizer with ``bits`` bits.

    Codes ``k`` in ``[-2**(bits-1), 2**(bits-1) - 1]`` stand for the values ``k * step`` with
    ``step = full_scale / 2**(bits-1)``, so zero is exact, the range is
    ``[-full_scale, full_scale - step]`` and values outside it are clipped (saturate) to the end codes.
    Inside the range the error is at most ``step / 2``.

    Args:
        x: values to convert (volts, or the unit of ``full_scale``).
        bits: converter resolution, a static integer >= 1.
        full_scale: positive full-scale amplitude, same unit as ``x``.

    Returns:
        The converted values, same shape and unit as ``x``.
    """
    if bits < 1:
        raise ValueError(f"quantizer bits must be >= 1, got {bits}")
    x = jnp.asarray(x)
    half_codes = 2.0 ** (bits - 1)
    step = full_scale / half_codes
    codes = jnp.clip(jnp.round(x / step), -half_codes, half_codes - 1)
    return codes * step


def convert(
    x: Float[ArrayLike, "..."], bits: int | None, full_scale: float | None
) -> Float[Array, "..."]:
    """A converter with optional auto-ranging: ``bits=None`` is ideal (identity).

    With ``full_scale=None`` the converter is auto-ranged: a digital gain maps ``max|x|`` onto the
    full-scale amplitude before conversion and is undone after it (an ideal programmable-gain stage),
    so only the relative resolution ``2**-(bits-1)`` of the largest entry is lost. A fixed
    ``full_scale`` (in the unit of ``x``) clips what lies outside it.
    """
    x = jnp.asarray(x)
    if bits is None:
        return x
    if full_scale is not None:
        return quantize(x, bits, full_scale)
    peak = jnp.max(jnp.abs(x))
    # Scale so the largest magnitude sits on the largest positive code (no clipping at +peak).
    half_codes = 2.0 ** (bits - 1)
    gain_range = jnp.where(peak > 0, peak * half_codes / max(half_codes - 1.0, 1.0), 1.0)
    return quantize(x, bits, gain_range)
