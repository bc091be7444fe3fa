"""``python -m experiments.run [overrides]``: train one configuration into its run directory.

With no arguments: the paper's small CNN on scikit-learn's digits with TNGD on an ideal device. Overrides select
``task=digits|mnist|squad``, ``optimizer=adam|sgd|tngd|tngd_adam|ngd|ngd_cg|ngd_woodbury|kfac|thermo_kfac``,
``device=ideal|paper|noisy|quantized8|realistic``, ``+experiment=paper_mnist|paper_squad``, ``seed=...`` and
any field (``optimizer.t=5``); ``-m`` sweeps (``-m optimizer=adam,tngd seed=0,1,2``). ``mesh.data=N`` splits each
batch over N devices (``mesh.distributed=true`` for a multi-host launch: ``MeshSettings`` in config.py).
"""

from __future__ import annotations

import logging
import os

import hydra
import jax
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from kfac_thermo import data_mesh

from . import rundir
from .config import register_configs
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


def run(cfg: DictConfig, run_dir: str) -> dict:
    """Train the configuration ``cfg`` into ``run_dir`` (created; resumed if it holds a checkpoint)."""
    start_processes(cfg.mesh)
    mesh = data_mesh(cfg.mesh.data, DATA_AXIS)
    writer = jax.process_index() == 0
    if writer:
        os.makedirs(run_dir, exist_ok=True)
        with open(os.path.join(run_dir, "config.yaml"), "w") as f:
            f.write(OmegaConf.to_yaml(cfg, resolve=True))
        rundir.write_json(os.path.join(run_dir, "versions.json"), rundir.versions())
    task = build_task(cfg.task, cfg.seed)
    optimizer = build_optimizer(cfg.optimizer, cfg.device, predict_fn=task.predict_fn, loss=task.loss, seed=cfg.seed,
                                task_curvature=task.curvature,
                                example_inputs=jax.tree_util.tree_map(lambda leaf: leaf[:2], task.train[0]),
                                mesh=mesh)
    summary = train(task, optimizer, cfg.run, run_dir, cfg.seed, mesh)
    if cfg.run.plots and writer:
        rundir.plot_run(run_dir, task.metric)
    return summary


register_configs()


@hydra.main(config_path="../configs", config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> None:
    logging.getLogger("absl").setLevel(logging.WARNING)  # orbax's per-save INFO lines
    summary = run(cfg, HydraConfig.get().runtime.output_dir)
    if not summary:  # not process 0 of a multi-host run
        return
    print(f"{summary['task']}\n{summary['metric']}: final {summary['final'].get(summary['metric'])}, "
          f"best {summary['best_' + summary['metric']]}, steps {summary['steps']}, "
          f"wall {summary['wall_time_s']:.1f} s, modeled hardware {summary['modeled_time_s']:.4f} s")


if __name__ == "__main__":
    main()
