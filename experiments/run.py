"""``python -m experiments.run [overrides]``: train one configuration into its run directory.

With no arguments: the paper's small CNN on scikit-learn's digits with TNGD on an ideal device. Overrides select
``task=digits|mnist|squad``,
``optimizer=adam|sgd|muon|sophia|tngd|tngd_adam|ngd|ngd_cg|ngd_woodbury|kfac|thermo_kfac``,
``device=ideal|thermal|noisy|quantized8|realistic``, ``+experiment=fig5_squad|paper_squad|quick_squad``, ``seed=...`` and
any field (``optimizer.t=5``); ``-m`` sweeps (``-m optimizer=adam,tngd seed=0,1,2``). ``mesh.data=N`` splits each
batch over N devices (``mesh.distributed=true`` for a multi-host launch: ``MeshSettings`` in config.py).
Each run goes to ``runs/<task>-<optimizer>-<device>-seed<k>-<config hash>`` (``experiments.identity``); the
command exits non-zero when training diverged and stopped (``run.on_divergence``). ``run.logger=tensorboard|wandb|
mlflow`` mirrors the records into an experiment tracker (experiments.trackers); the console shows the run
directory, a line per evaluation and the summary (experiments.console), also written to ``<run dir>/run.log``;
``hydra.verbose=true`` lets the libraries' INFO lines through.
"""

from __future__ import annotations

import os

import hydra
import jax
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig
from tqdm.contrib.logging import logging_redirect_tqdm

from kfac_thermo import data_mesh

from . import console, identity, plots, rundir, trackers
from .config import register_configs, validate
from .optimizers import build_optimizer
from .tasks import build_task
from .trainer import DATA_AXIS, train


def start_processes(cfg) -> None:
    """``jax.distributed.initialize`` for a multi-host launch (``mesh.distributed=true``); None fields are left
    to JAX's cluster auto-detection. CPU hosts exchange their collectives with gloo."""
    if cfg.distributed:
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
        jax.distributed.initialize(coordinator_address=cfg.coordinator_address, num_processes=cfg.num_processes,
                                   process_id=cfg.process_id)


class TrainingDiverged(RuntimeError):
    """The run stopped because training diverged (``run.on_divergence=stop``)."""


def run(cfg: DictConfig, run_dir: str) -> dict:
    """Train the configuration ``cfg`` into ``run_dir`` and return its summary (also ``summary.json``).

    The directory is created, or resumed from its last checkpoint when it holds a run of the same identity
    (``experiments.identity``: the config up to run-control fields), and locked while the run lasts
    (``rundir.open_run``). A run that fails before its first step leaves no directory behind."""
    validate(cfg)
    start_processes(cfg.mesh)
    mesh = data_mesh(cfg.mesh.data, DATA_AXIS)
    writer = jax.process_index() == 0
    with rundir.open_run(run_dir, cfg, writer=writer):
        console.log.info(f"run directory: {run_dir}")
        task = build_task(cfg.task, cfg.seed)
        console.log.info(task.description)
        optimizer = build_optimizer(cfg.optimizer, cfg.device, predict_fn=task.predict_fn, loss=task.loss,
                                    seed=cfg.seed, task_curvature=task.curvature,
                                    example_inputs=jax.tree_util.tree_map(lambda leaf: leaf[:2], task.train[0]),
                                    mesh=mesh)
        # Log lines go above the progress bar (logging_redirect_tqdm), not through it.
        with trackers.open_tracker(cfg.run.logger if writer else "jsonl", run_dir,
                                   identity.resolved(cfg)) as tracker, logging_redirect_tqdm():
            def on_record(record: dict) -> None:
                if task.metric in record:
                    console.log.info(console.record_line(record))
                tracker.log(record)

            summary = train(task, optimizer, cfg.run, run_dir, cfg.seed, mesh, on_record=on_record)
            if writer:
                summary["run_control"] = identity.run_control(cfg)
                rundir.write_json(os.path.join(run_dir, rundir.SUMMARY), summary)
                tracker.finish(summary)
                if cfg.run.plots:
                    plots.plot_run(run_dir)
    return summary


register_configs()
identity.register_resolver()


@hydra.main(config_path="../configs", config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> None:
    hydra_config = HydraConfig.get()
    if not hydra_config.verbose:
        console.quiet_libraries()
    run_dir = hydra_config.runtime.output_dir
    summary = run(cfg, run_dir)
    if not summary:  # not process 0 of a multi-host run
        return
    console.log.info(f"run directory: {run_dir}")
    console.log.info(console.summary_line(summary))
    diverged = summary["diverged"]
    if diverged:
        message = f"training diverged at step {diverged['step']}: {diverged['reason']} (see {run_dir}/summary.json)"
        if diverged["action"] == "stop":
            raise TrainingDiverged(message + "; stopped (run.on_divergence=stop)")
        console.log.warning("warning: " + message)


if __name__ == "__main__":
    main()
