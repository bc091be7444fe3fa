"""Error of ``thermox.linalg.solve`` against converter / coupling resolution, as a markdown table.

A fixed random SPD system (n = 32, condition number 10) is solved on a noiseless device (kappa0 = 0)
run for t = 1e3 tau, long enough that the relaxation error ``e^{-lambda_min t}`` is zero, so what remains
is quantization alone. For bits = 2, 4, ..., 16 the table gives the relative error
``|x - A^-1 b| / |A^-1 b|`` and its ratio to the previous row's with all three non-idealities at that
resolution (``dac_bits = adc_bits = coupling_bits``), then with each one alone. Computed in float64.

At low resolution the quantized coupling matrix can lose positive definiteness; the device then has no
stationary state (the OU dynamics diverge), which the table shows as "unstable" (an infinite error).

Exits with status 1 if the total-error column is not monotone non-increasing in the bits (a later row
may tie an earlier one only at the float64 floor).

Usage:
    python scripts/quantization_table.py
"""

from __future__ import annotations

import sys

import jax
import jax.numpy as jnp
import numpy as np

import thermox

N = 32
CONDITION = 10.0
RUN_TIME = 1e3
SEED = 0
BITS = (2, 4, 6, 8, 10, 12, 14, 16)
FLOOR = 1e3 * np.finfo(np.float64).eps
SETTINGS = {
    "all": ("dac_bits", "adc_bits", "coupling_bits"),
    "DAC only": ("dac_bits",),
    "ADC only": ("adc_bits",),
    "couplings only": ("coupling_bits",),
}


def spd_system(n: int, condition: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``A = Q diag(geomspace(1, condition)) Q^T`` with a random orthogonal Q, and a random ``b``."""
    rng = np.random.default_rng(seed)
    Q, _ = np.linalg.qr(rng.standard_normal((n, n)))
    A = (Q * np.geomspace(1.0, condition, n)) @ Q.T
    return 0.5 * (A + A.T), rng.standard_normal(n)


def programmed_min_eigenvalue(A: np.ndarray, device: thermox.AnalogDevice) -> float:
    """Smallest eigenvalue of the drift the device's couplings actually realise."""
    programmed = device.program(thermox.DenseDrift(jnp.asarray(A)))
    return float(np.linalg.eigvalsh(np.asarray(programmed.matrix))[0])


def relative_error(A: np.ndarray, b: np.ndarray, bits: int, converters: tuple[str, ...]) -> float:
    """Relative error of the device's readout with ``converters`` at ``bits`` bits, the rest ideal.

    Infinite when the programmed drift is not positive definite (the device diverges).
    """
    device = thermox.AnalogDevice(kappa0=0.0, **{name: bits for name in converters})
    if programmed_min_eigenvalue(A, device) <= 0:
        return float("inf")
    x = thermox.linalg.solve(jnp.asarray(A), jnp.asarray(b), key=jax.random.PRNGKey(SEED), t=RUN_TIME, device=device)
    exact = np.linalg.solve(A, b)
    return float(np.linalg.norm(np.asarray(x) - exact) / np.linalg.norm(exact))


def is_monotone(errors: list[float]) -> bool:
    """Non-increasing, except that values under the float floor may tie or jitter."""
    return all(later <= max(earlier, FLOOR) for earlier, later in zip(errors, errors[1:]))


def ratio_column(errors: list[float]) -> list[str]:
    """Each error over the previous row's (blank for the first row)."""
    return [""] + [f"{later / earlier:.3f}" if np.isfinite(earlier) and earlier > 0 else "n/a"
                   for earlier, later in zip(errors, errors[1:])]


def error_text(value: float) -> str:
    return f"{value:.3e}" if np.isfinite(value) else "unstable"


def markdown(errors: dict[str, list[float]]) -> str:
    headers = ["bits"]
    for name in errors:
        headers += [f"{name}: relative error", f"{name}: ratio to previous"]
    columns = [[str(bits) for bits in BITS]]
    for values in errors.values():
        columns += [[error_text(value) for value in values], ratio_column(values)]
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(row) + " |" for row in zip(*columns)]
    return "\n".join(lines)


def main() -> int:
    with jax.enable_x64(True):
        A, b = spd_system(N, CONDITION, SEED)
        errors = {
            name: [relative_error(A, b, bits, converters) for bits in BITS]
            for name, converters in SETTINGS.items()
        }
        coupling_min_eigenvalues = {
            bits: programmed_min_eigenvalue(A, thermox.AnalogDevice(coupling_bits=bits)) for bits in BITS
        }
    print(
        f"thermox.linalg.solve, n = {N}, cond(A) = {np.linalg.cond(A):.1f}, t = {RUN_TIME:g} tau, kappa0 = 0, "
        f"float64, seed {SEED}; relative error |x - A^-1 b| / |A^-1 b|; ratio = this row's error / previous row's\n"
    )
    print(markdown(errors))
    print()
    for bits, lowest in coupling_min_eigenvalues.items():
        if lowest <= 0:
            print(f"unstable at {bits} bits: the quantized couplings have smallest eigenvalue {lowest:.3g} <= 0")
    for name, values in errors.items():
        print(f"{name}: {'monotone non-increasing' if is_monotone(values) else 'NOT monotone'}")
    if not is_monotone(errors["all"]):
        print("FAIL: the total error does not decrease monotonically with the bits", file=sys.stderr)
        return 1
    return 0

