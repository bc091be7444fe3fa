"""Experiment trackers (``run.logger``): a run's records mirrored into TensorBoard, Weights & Biases or MLflow.

``metrics.jsonl`` stays the run's own record (the plots, recost and figures read only it); a tracker receives the
same records as it is written, with the resolved config as hyperparameters at the start and the summary at the
end. Each writes offline into the run directory, so nothing leaves the machine:

- ``tensorboard``: event files in the run directory itself (``tensorboard --logdir runs`` lists every run by its
  directory name): one scalar per numeric field of each record, tagged by its key (nested keys joined by ``/``:
  ``work/flops/update``), at the record's step; the config in the HParams dashboard; the summary as text.
- ``wandb``: an offline run under ``<run_dir>/wandb`` (``wandb sync`` uploads it later): the same scalars, the
  config as the run's config, the summary as its summary.
- ``mlflow``: a file store at ``file:<run_dir>/mlruns`` (``mlflow ui --backend-store-uri <run_dir>/mlruns``): the
  scalars as metrics, the config as params, the summary as the artifact ``summary.json``.
- ``jsonl``: ``metrics.jsonl`` only.

A resumed run appends: TensorBoard's reader drops the events of steps its new records write again; W&B and MLflow
start another run in the same store.
"""

from __future__ import annotations

import contextlib
import json
import os
import pathlib
import socket
import time
from typing import Any, Iterator

from .identity import flatten

PROJECT = "thermo-opt"


def _missing(logger: str, package: str) -> ImportError:
    return ImportError(f"run.logger={logger} needs the {package} package, which is not installed: "
                       f"pip install {package}" + (" (or pip install 'thermo-opt[trackers]')"
                                                   if package == "tensorboard" else ""))


def scalars(record: dict[str, Any]) -> dict[str, float]:
    """The numeric fields of a metrics record other than ``step``, nested keys joined by ``/``."""
    flat = flatten({key: value for key, value in record.items() if key != "step"})
    return {key.replace(".", "/"): float(value) for key, value in flat.items()
            if isinstance(value, (int, float)) and not isinstance(value, bool)}


def hyperparameters(config: dict[str, Any]) -> dict[str, bool | int | float | str]:
    """The resolved config as flat ``{dotted key: value}``, values a tracker can show (None and lists as JSON text)."""
    return {key: value if isinstance(value, (bool, int, float, str)) else json.dumps(value)
            for key, value in flatten(config).items()}


class Tracker:
    """Where a run's records go besides ``metrics.jsonl``; this base class (``run.logger=jsonl``) sends them nowhere.

    ``log`` gets each record as written, ``finish`` the summary, ``close`` ends the tracker's run (``failed`` when
    the run raised)."""

    def __init__(self, run_dir: str, config: dict[str, Any]):
        """``run.logger=jsonl``: nothing to open; the trainer writes ``metrics.jsonl`` and ``config.yaml`` itself."""

    def log(self, record: dict[str, Any]) -> None:
        """Nothing beyond ``metrics.jsonl``, where the trainer has already written ``record``."""

    def finish(self, summary: dict[str, Any]) -> None:
        """Nothing beyond ``summary.json``, which the trainer writes."""

    def close(self, failed: bool) -> None:
        """Nothing to close."""


class TensorBoardTracker(Tracker):
    def __init__(self, run_dir: str, config: dict[str, Any]):
        try:
            from tensorboard.compat.proto import event_pb2, summary_pb2
            from tensorboard.plugins.hparams import summary_v2 as hparams
            from tensorboard.plugins.text import summary_v2 as text
            from tensorboard.summary.writer.event_file_writer import EventFileWriter
        except ImportError:
            raise _missing("tensorboard", "tensorboard") from None
        self._event, self._summary, self._text = event_pb2.Event, summary_pb2.Summary, text
        self._writer = EventFileWriter(run_dir, flush_secs=10)
        name = os.path.basename(os.path.abspath(run_dir))
        self._write(0, hparams.hparams_pb(hyperparameters(config), trial_id=name, start_time_secs=time.time()))
        self._step = 0

    def _write(self, step: int, summary) -> None:
        self._writer.add_event(self._event(wall_time=time.time(), step=step, summary=summary))

    def log(self, record):
        self._step = record["step"]
        values = [self._summary.Value(tag=tag, simple_value=value) for tag, value in scalars(record).items()]
        self._write(self._step, self._summary(value=values))

    def finish(self, summary):
        # Indented four spaces: the text dashboard renders markdown, and shows a code block as it is.
        body = "\n".join("    " + line for line in json.dumps(summary, indent=2, default=str).splitlines())
        self._write(self._step, self._text.text_pb("summary", body))

    def close(self, failed):
        self._writer.close()


class WandbTracker(Tracker):
    def __init__(self, run_dir: str, config: dict[str, Any]):
        try:
            import wandb
        except ImportError:
            raise _missing("wandb", "wandb") from None
        self._run = wandb.init(project=PROJECT, name=os.path.basename(os.path.abspath(run_dir)), dir=run_dir,
                               mode="offline", config=config)

    def log(self, record):
        self._run.log(scalars(record), step=record["step"])

    def finish(self, summary):
        self._run.summary.update(json.loads(json.dumps(summary, default=str)))

    def close(self, failed):
        self._run.finish(exit_code=1 if failed else 0)


class MlflowTracker(Tracker):
    BATCH = 100  # MLflow's limit of params per log_batch call (metrics: 1000)

    def __init__(self, run_dir: str, config: dict[str, Any]):
        try:
            from mlflow.entities import Metric, Param
            from mlflow.tracking import MlflowClient
        except ImportError:
            raise _missing("mlflow", "mlflow") from None
        self._metric = Metric
        self._client = MlflowClient(tracking_uri=pathlib.Path(run_dir, "mlruns").resolve().as_uri())
        experiment = self._client.get_experiment_by_name(PROJECT)
        experiment_id = (experiment.experiment_id if experiment is not None
                         else self._client.create_experiment(PROJECT))
        self._run_id = self._client.create_run(
            experiment_id, run_name=os.path.basename(os.path.abspath(run_dir)),
            tags={"host": socket.gethostname()}).info.run_id
        params = [Param(key, str(value)) for key, value in hyperparameters(config).items()]
        for start in range(0, len(params), self.BATCH):
            self._client.log_batch(self._run_id, params=params[start:start + self.BATCH])

    def log(self, record):
        now = int(time.time() * 1000)
        self._client.log_batch(self._run_id, metrics=[self._metric(key, value, now, record["step"])
                                                      for key, value in scalars(record).items()])

    def finish(self, summary):
        self._client.log_dict(self._run_id, json.loads(json.dumps(summary, default=str)), "summary.json")

    def close(self, failed):
        self._client.set_terminated(self._run_id, status="FAILED" if failed else "FINISHED")


TRACKERS = {"jsonl": Tracker, "tensorboard": TensorBoardTracker, "wandb": WandbTracker, "mlflow": MlflowTracker}


@contextlib.contextmanager
def open_tracker(logger: str, run_dir: str, config: dict[str, Any]) -> Iterator[Tracker]:
    """The tracker ``logger`` (a ``run.logger`` value) for the run in ``run_dir`` with the resolved ``config``, open
    for the ``with`` block and closed after it (as failed when the block raised).

    Raises:
        ImportError: the tracker's package is not installed (the message names the ``pip install``).
        ValueError: an unknown ``logger``.
    """
    if logger not in TRACKERS:
        raise ValueError(f"run.logger={logger!r}: must be one of {tuple(TRACKERS)}")
    tracker = TRACKERS[logger](run_dir, config)
    try:
        yield tracker
    except BaseException:
        tracker.close(failed=True)
        raise
    tracker.close(failed=False)
