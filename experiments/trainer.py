"""The training loop: jit-compiled steps, metrics, modeled hardware time, orbax checkpoints and resume."""

from __future__ import annotations

import os
import time
from typing import Any

import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import optax
import orbax.checkpoint as ocp
from jax.sharding import Mesh
from tqdm.auto import tqdm

import kfac_thermo
from kfac_thermo import data_mesh, replicate, shard_batch

from . import hardware, rundir
from .tasks import Task

DATA_AXIS = "data"


def modeled_step_seconds(opt_state: Any, batch_size: int, num_params: int) -> jax.Array:
    """Modeled hardware seconds of the last step (:func:`experiments.hardware.step_seconds`): the work records in
    the optimizer state (``kfac_thermo.total_work``) after the gradient's own forward and reverse pass."""
    gradient = kfac_thermo.digital_work(forward_passes=1, reverse_passes=1, examples=batch_size, params=num_params)
    return hardware.step_seconds(gradient.then(kfac_thermo.total_work(opt_state)))


def make_step(task: Task, optimizer: optax.GradientTransformation, num_params: int):
    def step(params, opt_state, inputs, targets, key):
        loss, grads = jax.value_and_grad(task.train_loss)(params, inputs, targets, key)
        updates, opt_state = optimizer.update(grads, opt_state, params, batch=(inputs, targets))
        params = optax.apply_updates(params, updates)
        return params, opt_state, loss, modeled_step_seconds(opt_state, targets.shape[0], num_params)

    return jax.jit(step, donate_argnums=(0, 1))


def batch_indices(num_examples: int, batch_size: int, seed: int, step: int) -> np.ndarray:
    """Indices of ``step``'s batch: epoch-wise seeded permutations, last partial batch dropped."""
    per_epoch = num_examples // batch_size
    epoch, position = divmod(step, per_epoch)
    order = np.random.default_rng([seed, epoch]).permutation(num_examples)
    return order[position * batch_size : (position + 1) * batch_size]


def process_batch(data, indices: np.ndarray, mesh: Mesh):
    """The global batch ``data[indices]`` sharded over the mesh's data axis: each process (host) loads its own
    consecutive share of the indices."""
    share = len(indices) // jax.process_count()
    mine = indices[jax.process_index() * share : (jax.process_index() + 1) * share]
    return shard_batch(jax.tree_util.tree_map(lambda leaf: leaf[mine], data), mesh, DATA_AXIS)


def host_local(tree):
    """A replicated tree's values as this process's single-device arrays (for metrics and evaluation)."""
    return jax.tree_util.tree_map(lambda leaf: leaf.addressable_data(0), tree)


def train(task: Task, optimizer: optax.GradientTransformation, settings, run_dir: str, seed: int,
          mesh: Mesh | None = None) -> dict:
    """Train ``task`` with ``optimizer`` into ``run_dir``, resuming from its latest checkpoint if any.

    Each batch is split over the ``"data"`` axis of ``mesh`` (default: one device); parameters and optimizer
    state are replicated. Writes (from process 0) ``metrics.jsonl`` (step, train_loss, test metrics at eval
    steps, wall_time_s excluding compilation, modeled_time_s, cumulative), ``summary.json`` and ``plots.png``;
    checkpoints every ``settings.checkpoint_every`` steps and at the end.
    """
    mesh = data_mesh(1, DATA_AXIS) if mesh is None else mesh
    inputs, targets = task.train
    num_examples = len(targets)
    if num_examples < task.batch_size:
        raise ValueError(f"batch_size {task.batch_size} exceeds the {num_examples} training examples")
    devices = mesh.shape[DATA_AXIS]
    if task.batch_size % devices:
        raise ValueError(f"batch_size {task.batch_size} can't be split evenly over mesh.data={devices} devices: "
                         f"choose a batch size divisible by {devices}")
    writer = jax.process_index() == 0
    total = (num_examples // task.batch_size) * task.epochs
    if settings.max_steps is not None:
        total = min(total, settings.max_steps)
    num_params = sum(int(leaf.size) for leaf in jax.tree_util.tree_leaves(task.params))

    state = {
        "params": task.params,
        "opt_state": optimizer.init(task.params),
        "step": jnp.zeros([], jnp.int32),
        "wall_time_s": jnp.zeros([], jnp.float64 if jax.config.jax_enable_x64 else jnp.float32),
        "modeled_time_s": jnp.zeros([], jnp.float32),
    }
    state = replicate(state, mesh)
    manager = ocp.CheckpointManager(
        os.path.abspath(os.path.join(run_dir, "checkpoints")),
        options=ocp.CheckpointManagerOptions(max_to_keep=2, create=True),
    )
    if manager.latest_step() is not None:
        state = manager.restore(manager.latest_step(), args=ocp.args.StandardRestore(state))
    start_step = int(host_local(state["step"]))
    if writer:
        rundir.truncate_metrics(run_dir, start_step if manager.latest_step() is not None else -1)

    batch_at = lambda step: process_batch((inputs, targets), batch_indices(num_examples, task.batch_size, seed, step),
                                          mesh)
    key = jr.fold_in(jr.key(seed), 2)
    key_at = lambda step: replicate(jr.fold_in(key, step), mesh)
    compiled = make_step(task, optimizer, num_params).lower(
        state["params"], state["opt_state"], *batch_at(0), key_at(0)).compile()
    params, opt_state = state["params"], state["opt_state"]
    wall, modeled = float(host_local(state["wall_time_s"])), float(host_local(state["modeled_time_s"]))
    bar = tqdm(total=total, initial=start_step, disable=not (settings.progress and writer), desc="train",
               unit="step")
    for step in range(start_step, total):
        batch = batch_at(step)
        tic = time.perf_counter()
        params, opt_state, loss, step_modeled = compiled(params, opt_state, *batch, key_at(step))
        loss = float(host_local(loss))
        wall += time.perf_counter() - tic
        modeled += float(host_local(step_modeled))
        done = step + 1
        record = {"step": done, "train_loss": loss, "wall_time_s": wall, "modeled_time_s": modeled}
        if done % settings.eval_every == 0 or done == total:
            record.update(task.evaluate(host_local(params)))
        if writer and (done % settings.log_every == 0 or task.metric in record):
            rundir.append_metrics(run_dir, record)
        bar.update(1)
        bar.set_postfix(loss=f"{loss:.4f}", **({task.metric: f"{record[task.metric]:.4f}"} if task.metric in record else {}))
        if not np.isfinite(loss):
            bar.close()
            raise FloatingPointError(f"training loss became {loss} at step {done}; see {run_dir}/metrics.jsonl")
        if done % settings.checkpoint_every == 0 or done == total:
            state = {"params": params, "opt_state": opt_state,
                     **replicate({"step": jnp.asarray(done, jnp.int32),
                                  "wall_time_s": jnp.asarray(wall, state["wall_time_s"].dtype),
                                  "modeled_time_s": jnp.asarray(modeled, jnp.float32)}, mesh)}
            manager.save(done, args=ocp.args.StandardSave(state))
    bar.close()
    manager.wait_until_finished()
    manager.close()
    return summarize(task, run_dir, total) if writer else {}


def summarize(task: Task, run_dir: str, total: int) -> dict:
    """``summary.json`` from ``metrics.jsonl``: final and best metric, steps and times."""
    records = rundir.read_metrics(run_dir)
    evals = [r for r in records if task.metric in r]
    last = records[-1] if records else {}
    summary = {
        "task": task.description,
        "metric": task.metric,
        "steps": last.get("step", 0),
        "planned_steps": total,
        "final": {k: v for k, v in (evals[-1] if evals else {}).items() if k.startswith("test_")},
        f"best_{task.metric}": max((r[task.metric] for r in evals), default=None),
        "final_train_loss": last.get("train_loss"),
        "wall_time_s": last.get("wall_time_s"),
        "modeled_time_s": last.get("modeled_time_s"),
    }
    rundir.write_json(os.path.join(run_dir, rundir.SUMMARY), summary)
    return summary
