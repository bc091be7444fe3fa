"""A run-time warning when the working precision cannot resolve the readout: ``kappa eps`` above 1%."""

from __future__ import annotations

import warnings

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float

# Relative rounding bound kappa * eps above which a readout is reported as untrustworthy.
UNTRUSTWORTHY = 1e-2


class ConditioningWarning(UserWarning):
    """The drift's conditioning estimate times the working precision's eps exceeds 1%: the readout may be wrong
    in its leading digits (typically float32 with a tiny damping or a long run); use float64 or more damping."""


def _warn(kappa, eps):
    kappa, eps = float(kappa), float(eps)
    warnings.warn(
        f"thermox: the readout's condition number estimate {kappa:.3g} times the working precision's eps "
        f"{eps:.3g} is {kappa * eps:.3g} > {UNTRUSTWORTHY:g}: the result is not trustworthy in this "
        "precision (enable float64, or raise the damping / shorten the run)",
        ConditioningWarning,
        stacklevel=2,
    )


@jax.custom_batching.custom_vmap
def _report(kappa: Float[Array, ""]) -> Float[Array, ""]:
    eps = jnp.finfo(kappa.dtype).eps
    # A NaN estimate (a non-finite drift) is not reported here: the drift's own checks name it.
    jax.lax.cond(kappa * eps > UNTRUSTWORTHY, lambda k: jax.debug.callback(_warn, k, eps), lambda k: None, kappa)
    return kappa


@_report.def_vmap
def _report_batch(axis_size, in_batched, kappa):
    # One report for the batch (its worst estimate): vmapped host callbacks would run once per element.
    _report(jnp.max(kappa) if in_batched[0] else kappa)
    return kappa, in_batched[0]


def warn_if_ill_conditioned(kappa: Float[Array, ""], dtype) -> None:
    """Warn (:class:`ConditioningWarning`, from a host callback, so also under ``jax.jit``) when
    ``kappa * eps(dtype) > 1e-2``: the normwise relative error of a backward-stable evaluation is bounded by about
    ``kappa eps``, and even exact arithmetic on the inputs rounded to ``dtype`` is that far off. Under ``vmap`` the
    batch's largest estimate is reported once."""
    _report(jax.lax.stop_gradient(jnp.asarray(kappa, dtype)))
