"""The training loop: jit-compiled steps, metrics, modeled hardware time, orbax checkpoints and resume."""

from __future__ import annotations

import dataclasses
import os
import time
import warnings
from typing import Any, Callable

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

from . import console, hardware, rundir
from .divergence import DivergenceMonitor
from .task import Task

DATA_AXIS = "data"


def _state_fields(opt_state: Any, name: str) -> list:
    """Every ``name`` field of the states in ``opt_state`` (a chain holds several)."""
    return [getattr(s, name) for s in jax.tree_util.tree_leaves(opt_state, is_leaf=lambda s: hasattr(s, name))
            if hasattr(s, name)]


def counts_skips(opt_state: Any) -> bool:
    """Whether the optimizer counts the steps it skips (a ``skipped`` field in its state, as kfac_thermo's)."""
    return bool(_state_fields(opt_state, "skipped"))


def skipped_steps(opt_state: Any) -> jax.Array:
    """Steps skipped so far (non-finite gradient or direction), summed over the chain's states; 0 if uncounted."""
    return sum(_state_fields(opt_state, "skipped"), jnp.zeros([], jnp.int32))


def train_step(loss_fn: Callable, optimizer: optax.GradientTransformation) -> Callable:
    """One training update, not jitted: ``step(params, opt_state, inputs, targets, key) -> (params, opt_state,
    loss)``, the value and gradient of ``loss_fn(params, inputs, targets, key)``, the optimizer's update (which gets
    the batch as ``batch=(inputs, targets)`` for its curvature) and the updated parameters. The benchmarks
    (experiments.bench) time this same step."""
    def step(params, opt_state, inputs, targets, key):
        loss, grads = jax.value_and_grad(loss_fn)(params, inputs, targets, key)
        updates, opt_state = optimizer.update(grads, opt_state, params, batch=(inputs, targets))
        return optax.apply_updates(params, updates), opt_state, loss

    return step


def make_step(task: Task, optimizer: optax.GradientTransformation):
    update = train_step(task.train_loss, optimizer)

    def step(params, opt_state, inputs, targets, key):
        params, opt_state, loss = update(params, opt_state, inputs, targets, key)
        return params, opt_state, loss, skipped_steps(opt_state)

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


@dataclasses.dataclass
class LoopState:
    """The loop's host-side state, checkpointed with params and optimizer state as JSON: the cumulative times are
    Python (float64) sums, so a resumed run logs the same numbers as an uninterrupted one at any step.

    Attributes:
        step: steps taken.
        planned_steps: steps the run is to take (``epochs`` of the task, capped by ``run.max_steps``).
        wall_time_s: cumulative seconds, measured (compilation excluded).
        accounts: the cumulative ``experiments.hardware.ACCOUNTS`` (modeled and paper-accounting time and energy).
        pending_work, pending_steps: the work (as a dict) of the steps taken since the last metrics record.
        failed: ``{"step", "error"}`` when a step raised (the run stops there), else None.
        divergence: the :class:`DivergenceMonitor`'s state.
        diverged: ``{"step", "reason", "action"}`` of the first divergence, or None.
        extended: ``{"at_step", "from", "to"}`` of every change of ``planned_steps`` on resume.
    """

    step: int = 0
    planned_steps: int = 0
    wall_time_s: float = 0.0
    accounts: dict = dataclasses.field(default_factory=lambda: dict.fromkeys(hardware.ACCOUNTS, 0.0))
    pending_work: dict | None = None
    pending_steps: int = 0
    failed: dict | None = None
    divergence: dict = dataclasses.field(default_factory=dict)
    diverged: dict | None = None
    extended: list = dataclasses.field(default_factory=list)


def checkpoint_manager(run_dir: str) -> ocp.CheckpointManager:
    """The orbax manager of ``run_dir``'s checkpoints (the last two kept)."""
    return ocp.CheckpointManager(os.path.abspath(os.path.join(run_dir, "checkpoints")),
                                 options=ocp.CheckpointManagerOptions(max_to_keep=2, create=True))


def trained_params(run_dir: str, task: Task, optimizer: optax.GradientTransformation) -> Any:
    """The parameters of ``run_dir``'s latest checkpoint (a finished run's: its final parameters), restored into
    the structure of ``task`` and ``optimizer``'s state."""
    manager = checkpoint_manager(run_dir)
    if manager.latest_step() is None:
        raise FileNotFoundError(f"{run_dir} holds no checkpoint to take trained parameters from")
    state = {"params": task.params, "opt_state": optimizer.init(task.params)}
    restored = manager.restore(manager.latest_step(), args=ocp.args.Composite(
        state=ocp.args.StandardRestore(state), loop=ocp.args.JsonRestore()))
    return restored.state["params"]


def train(task: Task, optimizer: optax.GradientTransformation, settings, run_dir: str, seed: int,
          mesh: Mesh | None = None, on_record: Callable[[dict], None] = lambda record: None) -> dict:
    """Train ``task`` with ``optimizer`` into ``run_dir``, resuming from its latest checkpoint if any, and return
    the summary (see :func:`summarize`; process 0 only, ``{}`` elsewhere).

    Each batch is split over the ``"data"`` axis of ``mesh`` (default: one device); parameters and optimizer
    state are replicated. Writes (from process 0) ``hardware.json`` (the pricing of the run's work:
    :class:`experiments.hardware.RunAccounting`) and ``metrics.jsonl``: a step-0 record of the test metrics before
    any update (zero times and work), then per record step, train_loss, test metrics at eval
    steps, ``work`` (the :class:`kfac_thermo.Work` of the ``work_steps`` steps since the previous record: the
    gradient's passes and the optimizer's records), wall_time_s excluding compilation and the modeled and
    paper-accounting time and energy (all cumulative), skipped_steps (cumulative, for optimizers that count
    them); checkpoints every ``settings.checkpoint_every`` steps and at the end. A
    resumed run may have another ``max_steps`` (the summary lists the change under ``extended``). On divergence
    (:class:`DivergenceMonitor`) it stops after logging the step, without a checkpoint, or warns once. Every record
    written is also handed to ``on_record`` (process 0; the runner's console lines and experiment trackers).
    """
    mesh = data_mesh(1, DATA_AXIS) if mesh is None else mesh
    inputs, targets = task.train
    num_examples = len(targets)
    if num_examples == 0:
        raise ValueError(f"{task.description}: no training examples")
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

    state = replicate({"params": task.params, "opt_state": optimizer.init(task.params)}, mesh)
    counted = counts_skips(state["opt_state"])
    manager = checkpoint_manager(run_dir)
    loop = LoopState(planned_steps=total)
    if manager.latest_step() is not None:
        restored = manager.restore(manager.latest_step(), args=ocp.args.Composite(
            state=ocp.args.StandardRestore(state), loop=ocp.args.JsonRestore()))
        state, loop = restored.state, LoopState(**restored.loop)
        if loop.step > total:
            raise ValueError(f"run directory {run_dir} already holds {loop.step} steps: run.max_steps="
                             f"{settings.max_steps} can't shorten it (raise it, or use another directory)")
        if loop.planned_steps != total:
            loop.extended.append({"at_step": loop.step, "from": loop.planned_steps, "to": total})
            loop.planned_steps = total
    monitor = DivergenceMonitor(settings.divergence_factor, settings.divergence_window,
                                settings.divergence_spike_factor, **loop.divergence)

    batch_at = lambda step: process_batch((inputs, targets), batch_indices(num_examples, task.batch_size, seed, step),
                                          mesh)
    key = jr.fold_in(jr.key(seed), 2)
    key_at = lambda step: replicate(jr.fold_in(key, step), mesh)
    params, opt_state = state["params"], state["opt_state"]
    accounting = hardware.RunAccounting.open(run_dir, task.predict_fn, host_local(params),
                                             host_local(batch_at(0)[0]), metric=task.metric, writer=writer)
    if loop.step < total:
        compiled = make_step(task, optimizer).lower(params, opt_state, *batch_at(0), key_at(0)).compile()
    pending = None if loop.pending_work is None else kfac_thermo.Work.from_dict(loop.pending_work)
    if loop.step == 0:
        # The initial evaluation, before any update: the curves start at the untrained model.
        initial = {"step": 0, "wall_time_s": 0.0, **loop.accounts, **task.evaluate(host_local(params)),
                   "work": kfac_thermo.Work.zero().as_dict(), "work_steps": 0}
        if counted:
            initial["skipped_steps"] = 0
    if writer:
        # Once the step compiled (a run that fails before leaves no records): a fresh run (also one killed before
        # its first checkpoint) starts its records again, a resumed one rewrites what came after its checkpoint.
        if loop.step == 0:
            rundir.write_metrics(run_dir, [initial])
            on_record(initial)
        else:
            rundir.truncate_metrics(run_dir, loop.step)
            console.log.info(f"resuming at step {loop.step} of {total} (its checkpoint)")
    bar = tqdm(total=total, initial=loop.step, disable=not (settings.progress and writer), desc="train",
               unit="step")
    try:
        for step in range(loop.step, total):
            batch = batch_at(step)
            tic = time.perf_counter()
            params, opt_state, loss, skipped = compiled(params, opt_state, *batch, key_at(step))
            loss = float(host_local(loss))
            loop.wall_time_s += time.perf_counter() - tic
            work = hardware.step_work(host_local(kfac_thermo.work_records(opt_state)), task.batch_size, num_params)
            for name, value in accounting.price(work).items():
                loop.accounts[name] += value
            pending = work if pending is None else pending.then(work)
            loop.pending_steps += 1
            loop.step = done = step + 1
            record = {"step": done, "train_loss": loss, "wall_time_s": loop.wall_time_s, **loop.accounts}
            if counted:
                record["skipped_steps"] = int(host_local(skipped))
            reason = monitor.observe(loss)
            stop = False
            if reason and loop.diverged is None:
                loop.diverged = {"step": done, "reason": reason, "action": settings.on_divergence}
                stop = settings.on_divergence == "stop"
                if not stop:
                    warnings.warn(f"{run_dir}: training diverged at step {done} ({reason}); going on "
                                  "(run.on_divergence=warn)", RuntimeWarning, stacklevel=2)
            if done % settings.eval_every == 0 or done == total or stop:
                record.update(task.evaluate(host_local(params)))
            if done % settings.log_every == 0 or task.metric in record:
                record.update(work=pending.as_dict(), work_steps=loop.pending_steps)
                pending, loop.pending_steps = None, 0
                if writer:
                    rundir.append_metrics(run_dir, record)
                    on_record(record)
            bar.update(1)
            bar.set_postfix(loss=f"{loss:.4f}",
                            **({task.metric: f"{record[task.metric]:.4f}"} if task.metric in record else {}))
            if stop:
                break
            if done % settings.checkpoint_every == 0 or done == total:
                loop.divergence = monitor.state()
                loop.pending_work = None if pending is None else pending.as_dict()
                manager.save(done, args=ocp.args.Composite(state=ocp.args.StandardSave({"params": params,
                                                                                         "opt_state": opt_state}),
                                                           loop=ocp.args.JsonSave(dataclasses.asdict(loop))))
    except Exception as error:
        # A run that fails part-way (a device error, an unstable simulation) says so in its summary.
        bar.close()
        if writer:
            loop.failed = {"step": loop.step + 1, "error": failure_message(error)}
            rundir.write_json(os.path.join(run_dir, rundir.SUMMARY), summarize(task, run_dir, loop, counted))
        raise
    bar.close()
    manager.wait_until_finished()
    manager.close()
    return summarize(task, run_dir, loop, counted) if writer else {}


def failure_message(error: BaseException) -> str:
    """One line naming what failed: the message of the library's check (from ``thermox`` or ``kfac``, also when
    it comes wrapped in a runtime error of a host callback), else the error's first line."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    for line in lines:
        start = min((line.find(name) for name in ("thermox", "kfac") if name in line), default=-1)
        if start >= 0:
            return line[start:]
    return f"{type(error).__name__}: {(lines or [''])[0]}"


def summarize(task: Task, run_dir: str, loop: LoopState, counted: bool) -> dict:
    """The run's summary from ``metrics.jsonl`` and the loop state: final and best metric, steps, times, skipped
    steps (for optimizers that count them), divergence and changes of the planned steps."""
    records = rundir.read_metrics(run_dir)
    evals = [r for r in records if task.metric in r]
    last = records[-1] if records else {}
    summary = {
        "task": task.description,
        "metric": task.metric,
        "steps": last.get("step", 0),
        "planned_steps": loop.planned_steps,
        "final": {k: v for k, v in (evals[-1] if evals else {}).items() if k.startswith("test_")},
        f"best_{task.metric}": max((r[task.metric] for r in evals), default=None),
        "final_train_loss": last.get("train_loss"),
        "wall_time_s": last.get("wall_time_s"),
        **{name: last.get(name) for name in hardware.ACCOUNTS},
        "hardware": hardware.DEFAULT_HARDWARE,
        "diverged": loop.diverged,
        "failed": loop.failed,
        "extended": loop.extended,
    }
    if counted:
        summary["skipped_steps"] = last.get("skipped_steps", 0)
    return summary
