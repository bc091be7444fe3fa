"""The public PyPI ``thermox``'s side of the OU benchmark (experiments.bench.ou), run in its own environment.

``python -E -s thermox_worker.py``: serves the main process's requests on stdin (``protocol``): ``versions``,
``load`` (a problem saved by the main process as ``.npz``, jit-compiled and warmed per variant), ``time`` (one
timed call of a variant) and ``final_points`` (the last point of many sampled paths, for the same-law check).
The ``thermox`` imported here is the public package, never this project's.
"""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

import protocol  # noqa: E402
from clock import timed, warm_up  # noqa: E402

jax.config.update("jax_enable_x64", False)


class PublicSampler:
    """The public ``thermox.sample`` on one problem, jit-compiled, one function per variant.

    Args:
        path: an ``.npz`` with float64 ``ts``, ``x0``, ``A``, ``b_public`` (the public convention's displacement
            ``b'``) and ``D`` (the diffusion matrix), as experiments.bench.ou.ou_problem makes them.
        variants: name -> the public ``sample``'s ``associative_scan`` flag.
    """

    def __init__(self, path: str, variants: dict[str, bool]):
        import thermox

        if not hasattr(thermox, "sample") or hasattr(thermox, "sample_path"):
            raise RuntimeError(f"worker imported the wrong thermox: {thermox.__file__}")
        data = np.load(path)
        self.args = tuple(jnp.asarray(data[name], jnp.float32) for name in ("ts", "x0", "A", "b_public", "D"))
        self.fns = {
            name: jax.jit(lambda key, ts, x0, A, b, D, flag=flag: thermox.sample(key, ts, x0, A, b, D, flag))
            for name, flag in variants.items()
        }
        self.first_call_s = {name: warm_up(fn, jax.random.PRNGKey(0), *self.args) for name, fn in self.fns.items()}

        def final_points(keys, ts, x0, A, b, D):
            return jax.vmap(lambda key: thermox.sample(key, ts, x0, A, b, D)[-1])(keys)

        self.final_points_fn = jax.jit(final_points)

    def time(self, variant: str, seed: int) -> float:
        return timed(self.fns[variant], jax.random.PRNGKey(seed), *self.args)

    def final_points(self, seed: int, num: int) -> list:
        keys = jax.random.split(jax.random.PRNGKey(seed), num)
        return np.asarray(self.final_points_fn(keys, *self.args), np.float64).tolist()


def main() -> None:
    """Serve JSON-line requests on stdin: load a problem, time a call, or sample final points."""
    loaded: dict[str, PublicSampler] = {}

    def load(path: str, variants: dict[str, bool]) -> dict:
        loaded["sampler"] = PublicSampler(path, variants)
        return {"first_call_s": loaded["sampler"].first_call_s}

    protocol.serve({
        "versions": lambda: protocol.package_versions("thermox", "jax", "jaxlib"),
        "load": load,
        "time": lambda variant, seed: {"seconds": loaded["sampler"].time(variant, seed)},
        "final_points": lambda seed, num: {"points": loaded["sampler"].final_points(seed, num)},
    })


if __name__ == "__main__":
    main()
