"""run.logger (experiments.trackers) and the console (experiments.console): a tracker holds the same records as
metrics.jsonl, read back by the tracker's own reader; a missing package is an error naming its pip install; the
console shows the run directory and rounded metric lines, also in run.log, and no library INFO lines."""

import json
import os
import pathlib
import re
import subprocess
import sys

import numpy as np
import pytest

from experiments import console, identity, rundir, trackers
from experiments.config import LOGGERS
from experiments.run import run
from test_runner import QUIET, make_config

ROOT = pathlib.Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
       "OPENBLAS_NUM_THREADS": "1"}
SHORT = ["optimizer=adam", "run.max_steps=4", "run.eval_every=2", *QUIET]


def test_every_logger_of_the_schema_has_a_tracker_and_none_changes_the_run_identity():
    assert set(trackers.TRACKERS) == set(LOGGERS)
    names = {identity.run_name(make_config("optimizer=adam", f"run.logger={name}")) for name in LOGGERS}
    assert len(names) == 1


def test_tensorboard_event_file_holds_the_metrics_records_config_and_summary(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    summary = run(make_config(*SHORT, "run.logger=tensorboard"), str(tmp_path))
    assert list(tmp_path.glob("events.out.tfevents.*"))
    events = EventAccumulator(str(tmp_path), size_guidance={"scalars": 0, "tensors": 0})
    events.Reload()
    records = rundir.read_metrics(str(tmp_path))
    expected = {}  # tag -> [(step, value)], from metrics.jsonl
    for record in records:
        for tag, value in trackers.scalars(record).items():
            expected.setdefault(tag, []).append((record["step"], value))
    assert set(events.Tags()["scalars"]) == set(expected)
    assert {"train_loss", "test_accuracy", "modeled_time_s", "work/flops/update"} <= set(expected)
    for tag, points in expected.items():
        logged = [(e.step, e.value) for e in events.Scalars(tag)]
        assert [step for step, _ in logged] == [step for step, _ in points], tag
        # TensorBoard stores float32: equal to float32 rounding.
        np.testing.assert_array_equal(np.float32([v for _, v in logged]), np.float32([v for _, v in points]), tag)
    assert [e.step for e in events.Scalars("test_accuracy")] == [0, 2, 4]
    assert "_hparams_/session_start_info" in events.Tags()["tensors"]
    (text,) = events.Tensors("summary")
    assert json.loads(text.tensor_proto.string_val[0].decode())["steps"] == summary["steps"] == 4


@pytest.mark.parametrize("package, first_import", [("wandb", "wandb"), ("mlflow", "mlflow.entities"),
                                                   ("tensorboard", "tensorboard.compat.proto")])
def test_a_missing_tracker_package_is_an_error_naming_its_pip_install(tmp_path, monkeypatch, package, first_import):
    monkeypatch.setitem(sys.modules, first_import, None)  # its import fails as if the package were not installed
    logger = package
    with pytest.raises(ImportError, match=f"run.logger={logger} needs the {package} package.*pip install {package}"):
        run(make_config(*SHORT, f"run.logger={logger}"), str(tmp_path / "run"))
    assert not (tmp_path / "run").exists()  # refused before the first step: no directory left behind


def test_wandb_offline_run_in_the_run_directory(tmp_path):
    pytest.importorskip("wandb", reason="wandb is optional (not in the dev extra): pip install wandb")
    run(make_config(*SHORT, "run.logger=wandb"), str(tmp_path))
    (offline,) = (tmp_path / "wandb").glob("offline-run-*")
    assert list(offline.glob("*.wandb"))


def test_mlflow_file_store_in_the_run_directory(tmp_path):
    pytest.importorskip("mlflow", reason="mlflow is optional (not in the dev extra): pip install mlflow")
    from mlflow.tracking import MlflowClient

    run(make_config(*SHORT, "run.logger=mlflow"), str(tmp_path))
    client = MlflowClient(tracking_uri=(tmp_path / "mlruns").as_uri())
    (found,) = client.search_runs([client.get_experiment_by_name(trackers.PROJECT).experiment_id])
    history = client.get_metric_history(found.info.run_id, "test_accuracy")
    assert [m.step for m in history] == [0, 2, 4] and found.data.params["optimizer.name"] == "adam"


def test_console_numbers_have_four_significant_digits():
    assert console.number(0.95171234) == "0.9517" and console.number(2.3e-5 / 3) == "7.667e-06"
    assert console.number(300) == "300"
    line = console.record_line({"step": 20, "train_loss": 0.412345, "test_accuracy": 0.901234, "wall_time_s": 1.23456,
                                "modeled_time_s": 0.00251234, "work": {}})
    assert line == ("step 20: train loss 0.4123, test accuracy 0.9012, wall 1.235 s, modeled hardware 0.002512 s")


def command(run_dir, *overrides) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "experiments.run", *SHORT, f"hydra.run.dir={run_dir}", *overrides],
                          cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=300)


@pytest.mark.slow  # two fresh processes: the backend's INFO line comes once per process
def test_the_console_shows_the_run_directory_and_rounded_metrics_without_library_noise(tmp_path):
    done = command(tmp_path / "quiet")
    assert done.returncode == 0, done.stderr[-2000:]
    lines = done.stdout.splitlines()
    assert lines[0] == f"run directory: {tmp_path / 'quiet'}" and lines[-2] == lines[0]
    assert re.fullmatch(r"test accuracy: final \S+, best \S+, steps 4, wall \S+ s, modeled hardware \S+ s",
                        lines[-1]), lines[-1]
    steps = [line for line in lines if line.startswith("step ")]
    assert [line.split(":")[0] for line in steps] == ["step 0", "step 2", "step 4"]
    text = " ".join(line.split(":", 1)[1] for line in steps + lines[-1:])
    numbers = re.findall(r"(?<![\w.])\d[\d.]*(?:e[+-]\d+)?", text)
    digits = lambda n: len(re.sub(r"\D", "", n.split("e")[0]).lstrip("0"))  # significant digits
    assert len(numbers) > 10 and all(digits(n) <= 4 for n in numbers), numbers
    for noise in ("libtpu", "Unable to initialize backend", "INFO", "absl", "orbax"):
        assert noise not in done.stdout + done.stderr, noise
    log = (tmp_path / "quiet" / "run.log").read_text()
    assert all(line in log for line in steps + [lines[0], lines[-1]])
    # hydra.verbose lets the libraries' lines through (the check above can fail).
    verbose = command(tmp_path / "verbose", "hydra.verbose=true")
    assert verbose.returncode == 0 and "Unable to initialize backend" in verbose.stdout + verbose.stderr
