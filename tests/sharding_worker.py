"""Run by tests/test_sharding.py in a subprocess with XLA_FLAGS=--xla_force_host_platform_device_count=4.

``python tests/sharding_worker.py optimizers`` prints a JSON object: per optimizer the largest relative
difference between parameters after three float64 steps on one device and on a batch sharded over 4 devices
(K-FAC also with its per-layer solves spread over the devices), and whether every device holds the same values.
``python tests/sharding_worker.py distribute`` checks ``kfac_thermo.distribute`` against a plain loop.
``python tests/sharding_worker.py runner DIR`` trains digits for a few steps with ``mesh.data=4`` and 1.
``python tests/sharding_worker.py host DIR PORT ID`` is process ID of a 2-process (2 hosts x 2 devices) run of the
same job with ``mesh.data=4 mesh.distributed=true``, coordinated on localhost:PORT.
"""

from __future__ import annotations

import json
import pathlib
import sys

import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import optax

import kfac_thermo
import thermox
from experiments.models import SmallCNN, split_model

STEPS, BATCH = 3, 16


def problem():
    model = SmallCNN(8, key=jr.key(0), channels=2, hidden=6)
    params, predict_fn = split_model(model)
    params = jax.tree_util.tree_map(lambda leaf: leaf.astype(jnp.float64), params)
    inputs = jr.normal(jr.key(1), (BATCH, 8, 8), jnp.float64)
    labels = jr.randint(jr.key(2), (BATCH,), 0, 10)
    return params, predict_fn, inputs, labels


def optimizers(predict_fn, inputs) -> dict:
    """Name -> ``make(mesh)``: the optimizer for a run on ``mesh`` (None: one device). The "spread" K-FAC
    variants also spread their per-layer solves over the mesh's devices."""
    common = dict(predict_fn=predict_fn, loss="softmax_cross_entropy", damping=1e-2)
    noisy = thermox.AnalogDevice(kappa0=1e-3)
    kfac_common = dict(common, example_inputs=inputs, curvature_period=2, inverse_period=2)
    thermo_kfac = lambda mesh: kfac_thermo.thermo_kfac(0.1, t=1e3, device=noisy, key=jr.key(4), mesh=mesh,
                                                       **kfac_common)
    return {
        "tngd": lambda _: kfac_thermo.tngd(0.1, t=50.0, device=noisy, key=jr.key(3), **common),
        "ngd": lambda _: kfac_thermo.ngd(0.1, **common),
        "ngd_woodbury": lambda _: kfac_thermo.ngd_woodbury(0.1, **common),
        "kfac": lambda _: kfac_thermo.kfac(0.1, **kfac_common),
        "kfac spread": lambda mesh: kfac_thermo.kfac(0.1, mesh=mesh, **kfac_common),
        "thermo_kfac spread": thermo_kfac,
    }


def train(optimizer, predict_fn, params, inputs, labels, mesh=None):
    def loss_fn(params, inputs, labels):
        return optax.softmax_cross_entropy_with_integer_labels(predict_fn(params, inputs), labels).mean()

    @jax.jit
    def step(params, state, inputs, labels):
        grads = jax.grad(loss_fn)(params, inputs, labels)
        updates, state = optimizer.update(grads, state, params, batch=(inputs, labels))
        return optax.apply_updates(params, updates), state

    state = optimizer.init(params)
    if mesh is not None:
        params, state = kfac_thermo.replicate((params, state), mesh)
        inputs, labels = kfac_thermo.shard_batch((inputs, labels), mesh)
    for _ in range(STEPS):  # waited for one by one: see kfac_thermo/_parallel.py on CPU host devices
        params, state = jax.block_until_ready(step(params, state, inputs, labels))
    return params


def same_on_every_device(tree) -> bool:
    return all(
        all(np.array_equal(np.asarray(shard.data), np.asarray(leaf.addressable_shards[0].data))
            for shard in leaf.addressable_shards)
        for leaf in jax.tree_util.tree_leaves(tree)
    )


def compare_optimizers() -> dict:
    params, predict_fn, inputs, labels = problem()
    mesh = kfac_thermo.data_mesh(4)
    results = {}
    for name, make in optimizers(predict_fn, inputs).items():
        reference = train(make(None), predict_fn, params, inputs, labels)
        sharded = train(make(mesh), predict_fn, params, inputs, labels, mesh)
        ref_leaves, leaves = jax.tree_util.tree_leaves(reference), jax.tree_util.tree_leaves(sharded)
        results[name] = {
            "relative_difference": max(float(jnp.max(jnp.abs(a - b)) / jnp.max(jnp.abs(a)))
                                       for a, b in zip(ref_leaves, leaves)),
            "moved": max(float(jnp.max(jnp.abs(a - b))) for a, b in zip(ref_leaves, jax.tree_util.tree_leaves(params))),
            "replicated_on_all_devices": same_on_every_device(sharded),
        }
    return results


def compare_distribute() -> dict:
    mesh = kfac_thermo.data_mesh(4)
    sizes = [3, 5, 7, 4, 6]  # more blocks than devices, of different sizes
    matrices = [jr.normal(jr.key(i), (n, n), jnp.float64) for i, n in enumerate(sizes)]
    matrices = [m @ m.T + jnp.eye(len(m)) for m in matrices]
    block = lambda m: (jnp.linalg.inv(m), thermox.eigh(m)[0], jnp.all(m > -1e3), jnp.asarray(m.shape[0]))
    spread = jax.jit(lambda ms: kfac_thermo.distribute([block] * len(ms), ms, mesh, "data"))(
        kfac_thermo.replicate(matrices, mesh))
    loop = [block(m) for m in matrices]
    return {
        "bitwise_equal": all(np.array_equal(np.asarray(a), np.asarray(b))
                             for got, want in zip(spread, loop) for a, b in zip(got, want)),
        "dtypes": [str(leaf.dtype) for leaf in spread[0]],
        "replicated_on_all_devices": same_on_every_device(spread),
    }


RUNNER_JOB = ["run.max_steps=3", "run.eval_every=3", "run.progress=false", "run.plots=false"]


def train_runner(run_dir: str, *overrides: str) -> list[float]:
    """Train the digits job with ``overrides`` into ``run_dir``; its per-step training losses (process 0)."""
    from hydra import compose, initialize_config_dir

    from experiments import rundir
    from experiments.run import run

    configs = str(pathlib.Path(__file__).resolve().parents[1] / "configs")
    with initialize_config_dir(config_dir=configs, version_base="1.3"):
        run(compose("config", overrides=[*RUNNER_JOB, *overrides]), run_dir)
    return [r["train_loss"] for r in rundir.read_metrics(run_dir) if r["step"]] if jax.process_index() == 0 else []


def compare_runner(run_dir: str) -> dict:
    """The hydra runner (float32, as users train) with ``mesh.data=4`` and ``mesh.data=1``, and the error for a
    batch the devices can't share."""
    losses, errors = {}, {}
    for optimizer in ("kfac", "tngd"):
        for devices in (1, 4):
            losses[f"{optimizer} {devices}"] = train_runner(f"{run_dir}/{optimizer}-{devices}",
                                                            f"optimizer={optimizer}", f"mesh.data={devices}")
    for override in ("mesh.data=3", "mesh.data=8"):
        try:
            train_runner(f"{run_dir}/bad", "optimizer=adam", override)
            errors[override] = None
        except ValueError as error:
            errors[override] = str(error)
    return {"losses": losses, "errors": errors}


def run_host(run_dir: str, port: str, process_id: str) -> dict:
    """This process's part of the 2-host run of the K-FAC digits job."""
    losses = train_runner(run_dir, "optimizer=kfac", "mesh.data=4", "mesh.distributed=true",
                          f"mesh.coordinator_address=localhost:{port}", "mesh.num_processes=2",
                          f"mesh.process_id={process_id}")
    return {"process_count": jax.process_count(), "device_count": jax.device_count(), "losses": losses}


if __name__ == "__main__":
    if sys.argv[1] == "host":  # jax.distributed must start before anything touches the devices
        print(json.dumps(run_host(*sys.argv[2:])))
        sys.exit()
    assert jax.device_count() == 4, f"expected 4 host devices, got {jax.device_count()}"
    if sys.argv[1] == "runner":
        print(json.dumps(compare_runner(sys.argv[2])))
    else:
        jax.config.update("jax_enable_x64", True)
        print(json.dumps({"optimizers": compare_optimizers, "distribute": compare_distribute}[sys.argv[1]]()))
