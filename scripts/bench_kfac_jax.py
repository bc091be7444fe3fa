"""Step time of our K-FAC and thermodynamic K-FAC against DeepMind's ``kfac-jax``, measured in one run.

    python scripts/bench_kfac_jax.py [--quick] [--rounds N] [--out bench_kfac_jax.json] [--cache-dir DIR]

The problem (both sides): an MLP 784-1024-1024-10 with ReLU (the same plain-JAX function and the same float32
initial parameters on both sides), one batch of 512 standard-normal inputs with random labels out of 10, softmax
cross-entropy, learning rate 1e-3, damping 1e-3, curvature and inverse refresh every 1 and every 10 steps.

- Ours (this environment): ``kfac_thermo.kfac`` and ``kfac_thermo.thermo_kfac(method="solve", t=1e3)`` on the
  ideal device, as in scripts/bench_kfac.py (factored damping, EMA 0.95, no momentum), with
  ``curvature_period = inverse_period = `` the refresh period, in a jit-compiled train step that donates the
  parameters and state; the factors estimated as kfac-jax's mode they are compared with (``OUR_CURVATURE``).
- kfac-jax (its own virtual environment, created once under the cache directory by this script, which runs
  itself there as a worker subprocess): ``kfac_jax.Optimizer`` on the same function, its layers found by its
  automatic registration (the run fails if any of the three dense layers is not given a Kronecker-factored dense
  block), the loss registered with ``register_softmax_cross_entropy_loss``, its own ``jax.value_and_grad``,
  ``use_adaptive_learning_rate/momentum/damping=False`` with learning rate 1e-3, momentum 0 and damping 1e-3
  passed to ``step`` (with ``global_step_int``, so no step-counter sync), factored (pi) damping, EMA 0.95,
  ``curvature_update_period = inverse_update_period = `` the refresh period, no burn-in. Two estimation modes,
  each against ours with the same estimator: ``ggn_curvature_prop`` (its default and the headline: one
  Rademacher-weighted reverse pass per curvature refresh, an unbiased estimate of the GGN factors; ours
  ``curvature="ggn_curvature_prop"``) and ``ggn_exact`` (the exact GGN factors from all 10 loss-Hessian
  square-root columns; ours ``curvature="ggn"``, the same factors from its 9 reverse passes).
- ``optax.adam(1e-3)`` in both environments: the normaliser.

Protocol: every optimizer is compiled and run for WARM_ROUNDS rounds before timing (compilation excluded). Then
rounds are interleaved (ours, theirs, ours, ...; a pause of PAUSE_S before each lets the other process's XLA threads
go quiet), each round running one whole refresh period of consecutive steps (1 or 10; Adam: ADAM_STEPS) from the
carried parameters and state and ending on ``block_until_ready``, timed inside the process that runs it (the
worker round trip is not timed). Each round gives wall and CPU time per step (CPU: the process's own
``time.process_time``, all its threads: less sensitive to other jobs on a shared machine); each case keeps the
median and the minimum over rounds (15; ``--quick``: 5, and kfac-jax's headline mode only). Ratios are ours over
kfac-jax (lower is better), raw and normalised by each environment's own Adam, ``(ours / our Adam) / (kfac-jax /
its Adam)``. The headline (``ratios``, and ``kfac_step_over_kfac_jax`` / ``thermo_kfac_step_over_kfac_jax`` in
scripts/bench.py) is the raw ratio of minimum wall times per step at refresh 10 against ``ggn_curvature_prop``:
what a user switching from kfac-jax to ours gets on this machine, jax versions included (kfac-jax cannot run on
ours), and the minimum as bench.py's least load-contaminated estimate; ``ratios_median`` holds the medians. The
normalised ratio separates the implementations from the two jax/XLA versions: where it differs from the raw one,
the jax versions account for the difference.

kfac-jax 0.0.8 (the newest) fails on jax 0.9.2 and 0.10.2 in its own graph matcher (``ValueError: too many
values to unpack`` from ``Primitive.get_bind_params``), so its environment pins jax and jaxlib 0.8.3 (the newest
0.8 release; if that pin cannot be installed, whatever pip resolves below 0.9, recorded in the results).
OPENBLAS_NUM_THREADS=1 in both processes (the worker inherits it): LAPACK's own threads fight XLA's thread pool
for the cores (scripts/bench_kfac.py). float32 throughout.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any, Callable

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402

jax.config.update("jax_enable_x64", False)

# The shared helpers live beside this script; -I (the worker's isolated mode) leaves its directory off sys.path.
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _timing import fmt, interleaved, markdown_table, ms, summary  # noqa: E402
from _venv import (  # noqa: E402
    DEFAULT_CACHE_DIR, Unavailable, cached_venv, parse_args, serve, start_worker,
)

SCHEMA = "bench_kfac_jax/1"
SIZES, BATCH, CLASSES = (784, 1024, 1024, 10), 512, 10
LEARNING_RATE, DAMPING, EMA_DECAY, THERMO_T = 1e-3, 1e-3, 0.95, 1e3
PERIODS = (1, 10)
HEADLINE_PERIOD = 10  # the setting; bench.json's un-suffixed keys
ADAM_STEPS = 10  # per round; a K-FAC round is one refresh period
WARM_ROUNDS = 2
PAUSE_S = 0.2
KFAC_JAX_VERSION, KFAC_JAX_JAX_VERSION = "0.0.8", "0.8.3"
KFAC_JAX_MODES = ("ggn_curvature_prop", "ggn_exact")
HEADLINE_MODE = "ggn_curvature_prop"
OUR_CURVATURE = {"ggn_curvature_prop": "ggn_curvature_prop", "ggn_exact": "ggn"}  # kfac-jax mode: ours
OURS = ("kfac", "thermo_kfac")

Params = list[tuple[jax.Array, jax.Array]]
StepFn = Callable[[Any, Any, int], tuple[Any, Any, jax.Array]]


# --------------------------------------------------------------------------------------------------
# The problem and the timed training (both environments: jax, numpy and optax only)
# --------------------------------------------------------------------------------------------------


def init_params(seed: int = 0) -> Params:
    """``[(W, b), ...]`` of the MLP, LeCun-normal weights and zero biases, float32 (the same in both processes)."""
    rng = np.random.default_rng(seed)
    return [(jnp.asarray(rng.standard_normal((n_in, n_out)) / np.sqrt(n_in), jnp.float32),
             jnp.zeros(n_out, jnp.float32)) for n_in, n_out in zip(SIZES[:-1], SIZES[1:])]


def make_batch(seed: int = 1) -> tuple[jax.Array, jax.Array]:
    """``(inputs (BATCH, 784) float32, labels (BATCH,) int32)``."""
    rng = np.random.default_rng(seed)
    return (jnp.asarray(rng.standard_normal((BATCH, SIZES[0])), jnp.float32),
            jnp.asarray(rng.integers(0, CLASSES, BATCH), jnp.int32))


def predict(params: Params, inputs: jax.Array) -> jax.Array:
    """Logits of the ReLU MLP: ``x @ W + b`` per layer (found as dense layers by both K-FACs)."""
    for i, (weight, bias) in enumerate(params):
        inputs = inputs @ weight + bias
        if i < len(params) - 1:
            inputs = jax.nn.relu(inputs)
    return inputs


def cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """Mean softmax cross-entropy over the batch (integer labels)."""
    return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()


def optax_step(optimizer: optax.GradientTransformation, batch: tuple) -> StepFn:
    """A jit-compiled train step (loss, gradient, update, apply) donating parameters and state."""
    def loss_fn(params: Params, inputs: jax.Array, labels: jax.Array) -> jax.Array:
        return cross_entropy(predict(params, inputs), labels)

    def step(params: Params, state: Any, inputs: jax.Array, labels: jax.Array) -> tuple[Params, Any, jax.Array]:
        loss, grads = jax.value_and_grad(loss_fn)(params, inputs, labels)
        updates, state = optimizer.update(grads, state, params, batch=(inputs, labels))
        return optax.apply_updates(params, updates), state, loss

    donated = jax.jit(step, donate_argnums=(0, 1))
    return lambda params, state, count: donated(params, state, *batch)


class Training:
    """One optimizer training on the batch. Each call (a round) runs ``steps`` steps from the carried parameters
    and state and returns ``(wall, cpu)`` seconds per step (CPU: this process's ``time.process_time``)."""

    def __init__(self, step: StepFn, params: Any, state: Any, steps: int):
        self.step, self.params, self.state, self.steps, self.count = step, params, state, steps, 0

    def __call__(self) -> tuple[float, float]:
        params, state, steps = self.params, self.state, self.steps
        wall, cpu = time.perf_counter(), time.process_time()
        for _ in range(steps):
            params, state, loss = self.step(params, state, self.count)
            self.count += 1
        jax.block_until_ready((params, loss))
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        self.params, self.state = params, state
        return wall / steps, cpu / steps

    def warm(self) -> float:
        """Compile and run WARM_ROUNDS rounds untimed (every refresh branch compiled); seconds of the first."""
        first = self()[0] * self.steps
        for _ in range(WARM_ROUNDS - 1):
            self()
        return first


def optax_training(optimizer: optax.GradientTransformation, steps: int) -> Training:
    """``optimizer`` on the problem, from its own (donated) copy of the initial parameters."""
    params, batch = init_params(), make_batch()
    return Training(optax_step(optimizer, batch), params, optimizer.init(params), steps)


# --------------------------------------------------------------------------------------------------
# Worker: runs inside kfac-jax's virtual environment
# --------------------------------------------------------------------------------------------------


def kfac_jax_training(mode: str, period: int) -> tuple[Training, list[str]]:
    """kfac-jax's optimizer on the problem (module docstring), and the names of the curvature blocks it chose."""
    import kfac_jax

    def loss_fn(params: Params, batch: tuple[jax.Array, jax.Array]) -> jax.Array:
        logits = predict(params, batch[0])
        kfac_jax.register_softmax_cross_entropy_loss(logits, batch[1])
        return cross_entropy(logits, batch[1])

    optimizer = kfac_jax.Optimizer(
        value_and_grad_func=jax.value_and_grad(loss_fn), l2_reg=0.0, use_adaptive_learning_rate=False,
        use_adaptive_momentum=False, use_adaptive_damping=False, estimation_mode=mode, curvature_ema=EMA_DECAY,
        curvature_update_period=period, inverse_update_period=period, num_burnin_steps=0, multi_device=False)
    params, batch, key = init_params(), make_batch(), jax.random.PRNGKey(0)
    state = optimizer.init(params, key, batch)
    hyper = {name: jnp.asarray(value, jnp.float32)
             for name, value in (("learning_rate", LEARNING_RATE), ("momentum", 0.0), ("damping", DAMPING))}

    def step(params: Params, state: Any, count: int) -> tuple[Params, Any, jax.Array]:
        params, state, stats = optimizer.step(params, state, key, batch=batch, global_step_int=count, **hyper)
        return params, state, stats["loss"]

    blocks = [type(block).__name__ for block in optimizer._estimator.blocks]  # no public accessor
    if len(blocks) != len(SIZES) - 1 or not all(name.startswith("Dense") for name in blocks):
        raise RuntimeError(f"kfac-jax's automatic registration did not find the {len(SIZES) - 1} dense layers: "
                           f"blocks {blocks}")
    return Training(step, params, state, period), blocks


def versions(*packages: str) -> dict:
    """This environment's Python version and the installed version of each package."""
    import importlib.metadata

    return {"python": platform.python_version(), **{name: importlib.metadata.version(name) for name in packages}}


def worker_main() -> None:
    """Serve the main process's requests: versions, set up (build and warm every optimizer), run a round."""
    trainings: dict[str, Training] = {}

    def setup(periods: list[int], modes: list[str]) -> dict:
        """Build Adam and kfac-jax per (mode, period), warm them; their first-round seconds and curvature blocks."""
        first_round_s, blocks = {}, {}
        trainings["kfac_jax adam"] = optax_training(optax.adam(LEARNING_RATE), ADAM_STEPS)
        for mode in modes:
            for period in periods:
                trainings[case("kfac_jax", period, mode)], blocks[mode] = kfac_jax_training(mode, period)
        for name, training in trainings.items():
            first_round_s[name] = training.warm()
        return {"first_round_s": first_round_s, "blocks": blocks}

    serve({
        "versions": lambda: versions("kfac-jax", "jax", "jaxlib", "optax"),
        "setup": setup,
        "run": lambda name: {"times": trainings[name]()},
    })


# --------------------------------------------------------------------------------------------------
# Main process
# --------------------------------------------------------------------------------------------------


def case(optimizer: str, period: int, mode: str | None = None) -> str:
    """The name of a timed case: ``"kfac refresh 10"``, ``"kfac_jax ggn_exact refresh 1"``."""
    return f"{optimizer}{'' if mode is None else ' ' + mode} refresh {period}"


def kfac_jax_python(cache_dir: Path) -> Path:
    """The interpreter of the kfac-jax environment (created under ``cache_dir`` if missing)."""
    pinned = [f"kfac-jax=={KFAC_JAX_VERSION}", f"jax=={KFAC_JAX_JAX_VERSION}", f"jaxlib=={KFAC_JAX_JAX_VERSION}"]
    resolved = [f"kfac-jax=={KFAC_JAX_VERSION}", "jax<0.9", "jaxlib<0.9"]
    venv = cache_dir / f"bench-venv-kfac-jax-{KFAC_JAX_VERSION}-jax-{KFAC_JAX_JAX_VERSION}"
    return cached_venv(venv, "import kfac_jax", lambda: [pinned, resolved])


def our_trainings(periods: tuple[int, ...], modes: tuple[str, ...]) -> dict[str, Training]:
    """Adam, K-FAC and thermodynamic K-FAC (ideal device, ``method="solve"``) per refresh period and kfac-jax
    estimation mode (ours with the matching curvature, ``OUR_CURVATURE``), here."""
    import kfac_thermo

    example_inputs = make_batch()[0]
    trainings = {"adam": optax_training(optax.adam(LEARNING_RATE), ADAM_STEPS)}
    for period in periods:
        for mode in modes:
            common = dict(predict_fn=predict, loss="softmax_cross_entropy", damping=DAMPING, ema_decay=EMA_DECAY,
                          example_inputs=example_inputs, curvature_period=period, inverse_period=period,
                          curvature=OUR_CURVATURE[mode], key=jax.random.key(1))
            trainings[case("kfac", period, mode)] = optax_training(kfac_thermo.kfac(LEARNING_RATE, **common), period)
            trainings[case("thermo_kfac", period, mode)] = optax_training(
                kfac_thermo.thermo_kfac(LEARNING_RATE, method="solve", t=THERMO_T, **common), period)
    return trainings


def ratio_keys(period: int) -> dict[str, str]:
    """bench.json's key for each of ours at ``period`` (un-suffixed at HEADLINE_PERIOD)."""
    suffix = "" if period == HEADLINE_PERIOD else f"_refresh{period}"
    return {name: f"{name}_step_over_kfac_jax{suffix}" for name in OURS}


RATIO_KEYS = tuple(key for period in PERIODS for key in ratio_keys(period).values())


def skipped(reason: str, periods: tuple[int, ...] = PERIODS) -> dict:
    """The result when kfac-jax could not run: every ratio None, with the reason."""
    keys = [key for period in periods for key in ratio_keys(period).values()]
    return {"schema": SCHEMA, "reason": reason, "ratios": dict.fromkeys(keys), "ratios_median": dict.fromkeys(keys),
            **{key: None for key in ratio_keys(HEADLINE_PERIOD).values()}, "periods": {}}


def quotient(a: float | None, b: float | None) -> float | None:
    """``a / b``, None when either is missing (or b is 0)."""
    return None if a is None or not b else a / b


def compare(ours: dict, theirs: dict, adam_ours: dict, adam_theirs: dict) -> dict:
    """Ours over kfac-jax from the per-case summaries ``{"wall": summary, "cpu": summary}``: raw and normalised."""
    out = {}
    for clock in ("wall", "cpu"):
        for stat in ("median_s", "min_s"):
            raw = quotient(ours[clock][stat], theirs[clock][stat])
            adams = quotient(adam_ours[clock][stat], adam_theirs[clock][stat])
            out[f"{clock}_{stat[:-2]}"] = raw
            out[f"{clock}_{stat[:-2]}_normalised"] = quotient(raw, adams)
    return out


def summarise(times: dict[str, list[tuple[float, float]]], first_round_s: dict[str, float],
              periods: tuple[int, ...], modes: tuple[str, ...]) -> dict:
    """Per-case summaries and the ratios, from the interleaved ``(wall, cpu)`` rounds of each case.

    Case names: ``"adam"`` / ``"kfac_jax adam"`` (the two environments' Adam) and :func:`case` names.
    """
    cases = {name: {"wall": summary([t[0] for t in rounds], first_round_s.get(name)),
                    "cpu": summary([t[1] for t in rounds])} for name, rounds in times.items()}
    adam_ours, adam_theirs = cases["adam"], cases["kfac_jax adam"]
    result = {"cases": cases, "periods": {}, "ratios": {}, "ratios_median": {}}
    for period in periods:
        entry = {}
        for name, key in ratio_keys(period).items():
            entry[name] = {mode: compare(cases[case(name, period, mode)], cases[case("kfac_jax", period, mode)],
                                         adam_ours, adam_theirs) for mode in modes}
            headline = entry[name].get(HEADLINE_MODE, {})
            result["ratios"][key] = headline.get("wall_min")
            result["ratios_median"][key] = headline.get("wall_median")
        result["periods"][str(period)] = entry
    result.update({key: result["ratios"][key] for key in ratio_keys(HEADLINE_PERIOD).values()})
    return result


def kfac_jax_ratio(quick: bool, *, cache_dir: Path = DEFAULT_CACHE_DIR, rounds: int | None = None,
                   periods: tuple[int, ...] = PERIODS, modes: tuple[str, ...] | None = None) -> dict:
    """Time ours and kfac-jax interleaved (module docstring); the results, with ratios ours / kfac-jax.

    Returns ``kfac_step_over_kfac_jax`` and ``thermo_kfac_step_over_kfac_jax`` (refresh 10, raw ratio of minimum
    wall times against ``ggn_curvature_prop``; None when kfac-jax could not run, with ``reason``), the same keys
    and their ``_refresh1`` versions under ``ratios`` (of minima) and ``ratios_median``, and ``periods``,
    ``cases``, ``versions`` and ``setting`` with everything measured. ``quick``: 5 rounds instead of 15, and
    kfac-jax's headline estimation mode only (``modes`` defaults to both otherwise).
    """
    started = time.perf_counter()
    rounds = rounds or (5 if quick else 15)
    modes = modes or ((HEADLINE_MODE,) if quick else KFAC_JAX_MODES)
    worker, kfac_jax = start_worker(lambda: kfac_jax_python(Path(cache_dir)), Path(__file__).resolve(), "kfac-jax")
    if worker is None:
        return skipped(f"kfac-jax {KFAC_JAX_VERSION} could not run in its own environment: {kfac_jax['reason']}",
                       periods)
    try:
        print(f"  compiling ours and kfac-jax {kfac_jax['kfac-jax']} (jax {kfac_jax['jax']})", flush=True)
        setup = worker.call("setup", periods=list(periods), modes=list(modes))
        ours = our_trainings(periods, modes)
        first_round_s = {name: training.warm() for name, training in ours.items()}
        first_round_s.update(setup["first_round_s"])
        theirs = lambda name: lambda seed: tuple(worker.call("run", name=name)["times"])
        runners: dict[str, Callable[[int], tuple[float, float]]] = {
            "adam": lambda seed: ours["adam"](), "kfac_jax adam": theirs("kfac_jax adam")}
        for period in periods:
            for mode in modes:
                for name in OURS:
                    runners[case(name, period, mode)] = lambda seed, n=case(name, period, mode): ours[n]()
                runners[case("kfac_jax", period, mode)] = theirs(case("kfac_jax", period, mode))
        load_start = os.getloadavg()[0]
        times = interleaved(runners, rounds, pause_s=PAUSE_S)
    except Unavailable as error:
        return skipped(f"kfac-jax {KFAC_JAX_VERSION} stopped during the run: {error}", periods)
    finally:
        worker.close()
    result = {"schema": SCHEMA, "reason": None, **summarise(times, first_round_s, periods, modes)}
    result["versions"] = {"ours": versions("jax", "jaxlib", "optax"), "kfac_jax": kfac_jax}
    result["blocks"] = setup["blocks"]
    result["setting"] = {
        "model": "MLP " + "-".join(map(str, SIZES)) + " (ReLU)", "batch": BATCH, "dtype": "float32",
        "learning_rate": LEARNING_RATE, "damping": DAMPING, "ema_decay": EMA_DECAY, "thermo_kfac_t": THERMO_T,
        "periods": list(periods), "kfac_jax_modes": list(modes), "headline_mode": HEADLINE_MODE,
        "headline_period": HEADLINE_PERIOD, "rounds": rounds, "adam_steps_per_round": ADAM_STEPS,
        "pause_s": PAUSE_S, "quick": quick, "cpu_count": os.cpu_count(), "machine": platform.machine(),
        "openblas_num_threads": os.environ.get("OPENBLAS_NUM_THREADS"),
        "load_avg_1min": [load_start, os.getloadavg()[0]], "elapsed_s": time.perf_counter() - started,
    }
    return result


# --------------------------------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------------------------------


def report(result: dict) -> str:
    """Markdown: the time of every case and the ratios ours / kfac-jax (or why they are missing)."""
    if result.get("reason"):
        return f"kfac-jax comparison not run: {result['reason']}"
    s, versions, cases = result["setting"], result["versions"], result["cases"]
    adams = {"adam": cases["adam"], "kfac_jax adam": cases["kfac_jax adam"]}

    def x_adam(name: str) -> str:
        """The case's median wall time over its own environment's Adam."""
        adam = adams["kfac_jax adam" if name.startswith("kfac_jax") else "adam"]
        return fmt(quotient(cases[name]["wall"]["median_s"], adam["wall"]["median_s"]))

    times = markdown_table(
        ["case", "wall ms/step", "CPU ms/step", "x own Adam (wall medians)"],
        [[name, ms(c["wall"], 1), ms(c["cpu"], 1), x_adam(name)] for name, c in cases.items()])
    rows = []
    for period, entry in result["periods"].items():
        for name, by_mode in entry.items():
            for mode, r in by_mode.items():
                headline = mode == s["headline_mode"] and period == str(s["headline_period"])
                rows.append([period, name, mode + (" (headline)" if headline else ""),
                             fmt(r["wall_min"]), fmt(r["wall_median"]), fmt(r["cpu_median"]),
                             fmt(r["wall_min_normalised"]), fmt(r["wall_median_normalised"]),
                             fmt(r["cpu_median_normalised"])])
    ratios = markdown_table(["refresh", "ours", "kfac-jax estimation_mode", "wall (min)", "wall (median)",
                             "CPU (median)", "norm. wall (min)", "norm. wall (median)", "norm. CPU (median)"], rows)
    ours, theirs = versions["ours"], versions["kfac_jax"]
    return "\n".join([
        f"{s['model']}, batch {s['batch']}, {s['dtype']}, lr {s['learning_rate']:g}, damping {s['damping']:g}; "
        f"ours: jax {ours['jax']}, kfac-jax {theirs['kfac-jax']}: jax {theirs['jax']} (its own environment); "
        f"{s['rounds']} interleaved rounds of one refresh period ({s['adam_steps_per_round']} steps for Adam), "
        "ms per step: median (min); "
        f"1-min load average {s['load_avg_1min'][0]:.1f} at start, {s['load_avg_1min'][1]:.1f} at end "
        f"({s['cpu_count']} CPUs)",
        "",
        times,
        "",
        "Ours / kfac-jax (lower is better); normalised: (ours / our Adam) / (kfac-jax / its Adam). Headline: raw "
        f"wall of minima at refresh {s['headline_period']} against {s['headline_mode']}.",
        "",
        ratios,
    ])


def main() -> int:
    """The command line (module docstring); exit status 1 when kfac-jax could not run."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="5 rounds instead of 15, kfac-jax's default estimation mode only")
    parser.add_argument("--rounds", type=int, default=None, help="interleaved timed rounds")
    parser.add_argument("--out", default="bench_kfac_jax.json", help="JSON results (default bench_kfac_jax.json)")
    args = parse_args(parser, "kfac-jax", worker_main)
    if args is None:
        return 0
    result = kfac_jax_ratio(args.quick, cache_dir=args.cache_dir, rounds=args.rounds)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(report(result))
    print(f"\nwrote {args.out}")
    return 0 if result["reason"] is None else 1


if __name__ == "__main__":
    sys.exit(main())
