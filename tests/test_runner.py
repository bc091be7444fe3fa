"""The hydra runner: composition, every optimizer on digits, resume, run-directory contents, bad overrides."""

import gzip
import json
import os
import pathlib
import re
import shutil
import struct
import subprocess
import sys
from unittest import mock

import numpy as np
import pytest
from hydra import compose, initialize_config_dir
from hydra.errors import ConfigCompositionException

from experiments import rundir
from experiments.data import load_mnist, read_idx
from experiments.run import main, run

CONFIGS = str(pathlib.Path(__file__).resolve().parents[1] / "configs")
MNIST_DIR = pathlib.Path(__file__).resolve().parents[2] / "shared" / "data" / "mnist"
QUIET = ["run.progress=false", "run.plots=false"]


def make_config(*overrides):
    with initialize_config_dir(config_dir=CONFIGS, version_base="1.3"):
        return compose("config", overrides=list(overrides))


def cli(*args) -> int:
    """``python -m experiments.run *args`` in this process; its exit code."""
    with mock.patch.object(sys, "argv", ["experiments.run", f"--config-path={CONFIGS}", *args]):
        try:
            main()
        except SystemExit as exit_:
            return exit_.code
    return 0


def test_default_config_is_tngd_on_digits_with_an_ideal_device():
    cfg = make_config()
    assert (cfg.task.name, cfg.optimizer.name, cfg.device.name) == ("digits", "tngd", "ideal")
    assert cfg.device.kappa0 == 0.0 and cfg.device.dac_bits is None


@pytest.mark.parametrize(
    "optimizer", ["adam", "sgd", "muon", "sophia", "tngd", "tngd_adam", "ngd", "ngd_cg", "ngd_woodbury", "kfac",
                  "thermo_kfac"]
)
def test_every_optimizer_runs_two_steps_on_digits(tmp_path, optimizer):
    extra = ["task.channels=2", "task.hidden=4"] if optimizer == "ngd" else []  # dense NGD is O(N^3)
    cfg = make_config(f"optimizer={optimizer}", "run.max_steps=2", "run.eval_every=2", *QUIET, *extra)
    summary = run(cfg, str(tmp_path))
    assert summary["steps"] == 2
    initial, *records = rundir.read_metrics(str(tmp_path))
    assert [r["step"] for r in records] == [1, 2]
    assert all(np.isfinite(r["train_loss"]) and r["modeled_time_s"] > 0 for r in records)
    assert 0.0 <= records[-1]["test_accuracy"] <= 1.0
    # The evaluation before any update: the untrained model, no time spent, no work done.
    assert initial["step"] == 0 and 0.0 <= initial["test_accuracy"] <= 1.0 and "train_loss" not in initial
    assert initial["wall_time_s"] == initial["modeled_time_s"] == 0.0 and initial["work_steps"] == 0
    for name in ("config.yaml", "versions.json", "summary.json", "metrics.jsonl"):
        assert (tmp_path / name).exists(), name


def test_run_directory_holds_plots_versions_and_summary(tmp_path):
    cfg = make_config("optimizer=adam", "run.max_steps=6", "run.eval_every=3", "run.progress=false")
    run(cfg, str(tmp_path))
    assert (tmp_path / "plots.png").stat().st_size > 0
    versions = json.loads((tmp_path / "versions.json").read_text())
    assert versions["jax"] and "git_sha" in versions
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["steps"] == 6 and summary["best_test_accuracy"] is not None
    assert summary["wall_time_s"] > 0 and summary["modeled_time_s"] > 0


MEASURED = ("wall_time_s", "paper_time_s", "paper_energy_j")


def test_killed_run_resumes_to_the_same_numbers(tmp_path):
    """A run stopped after its step-4 checkpoint and started again ends exactly like an uninterrupted one."""
    common = ["optimizer=tngd", "device=noisy", "run.eval_every=2", "run.checkpoint_every=4", *QUIET]
    full = run(make_config("run.max_steps=8", *common), str(tmp_path / "full"))
    run(make_config("run.max_steps=4", *common), str(tmp_path / "resumed"))
    resumed = run(make_config("run.max_steps=8", *common), str(tmp_path / "resumed"))
    # Measured on this machine by each run (its wall time, and the paper accounting's timed passes): not compared.
    strip = lambda rs: [{k: v for k, v in r.items() if k not in MEASURED} for r in rs]
    assert strip(rundir.read_metrics(str(tmp_path / "resumed"))) == strip(rundir.read_metrics(str(tmp_path / "full")))
    assert resumed["final"] == full["final"]


@pytest.mark.parametrize(
    "override, error",
    [
        ("optimizer.not_a_field=1", ConfigCompositionException),
        ("seed=abc", ConfigCompositionException),
        ("optimizer=not_an_optimizer", ConfigCompositionException),
        ("device.dac_bits=eight", ConfigCompositionException),
    ],
)
def test_bad_overrides_are_errors_that_name_the_key(override, error):
    with pytest.raises(error, match=override.split("=")[0].split(".")[-1] if "not_an" not in override else "not_an_optimizer"):
        make_config(override)


@pytest.mark.parametrize("override, key, fields", [
    ("+optimizer.lr=1", "optimizer.lr", "name, learning_rate, b1, b2, eps"),  # Hydra's own suggestion for lr=1
    ("+run.epochs=3", "run.epochs", "max_steps, eval_every"),
    ("+lr=1", "lr", "task, optimizer, device, run, mesh, seed"),
])
def test_a_key_added_with_plus_is_refused_naming_it_and_the_valid_fields(tmp_path, override, key, fields):
    """``+key=value`` opens the structured config for an addition Hydra does not check: the runner refuses it."""
    with pytest.raises(ValueError, match=rf"unknown key {re.escape(key)}: .*valid fields are {re.escape(fields)}"):
        run(make_config("optimizer=adam", override, *QUIET), str(tmp_path / "run"))
    assert not (tmp_path / "run").exists()
    assert cli("optimizer=adam", override, *QUIET, f"hydra.run.dir={tmp_path / 'cli'}") == 1


def test_mnist_without_data_dir_is_a_clear_error(tmp_path):
    cfg = make_config("task=mnist", f"task.data_dir={tmp_path / 'nowhere'}", *QUIET)
    with pytest.raises(FileNotFoundError, match="nowhere"):
        run(cfg, str(tmp_path / "run"))
    assert not (tmp_path / "run").exists()  # a run that fails at start leaves no directory behind


def test_a_failed_start_from_the_command_line_leaves_no_directory(tmp_path):
    """Hydra creates the run directory before the runner starts; the runner removes it again."""
    missing = f"task.data_dir={tmp_path / 'nowhere'}"
    assert cli("task=mnist", missing, *QUIET, f"hydra.run.dir={tmp_path / 'run'}") == 1
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("override", ["task.batch_size=0", "task.batch_size=-4", "run.checkpoint_every=0",
                                      "run.eval_every=0", "run.max_steps=0", "optimizer.learning_rate=nan",
                                      "optimizer.learning_rate=-0.1", "run.on_divergence=ignore"])
def test_bad_values_are_errors_that_name_the_field_and_leave_no_directory(tmp_path, override):
    key, value = override.split("=")
    with pytest.raises(ValueError, match=re.escape(f"{key}={value}") + "|" + re.escape(f"{key}='{value}'")):
        run(make_config("optimizer=adam", override, *QUIET), str(tmp_path / "run"))
    assert not (tmp_path / "run").exists()


def write_idx(path: pathlib.Path, array: np.ndarray) -> None:
    """``array`` (uint8) as an IDX file, gzipped for a ``.gz`` path."""
    data = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape) + array.tobytes()
    with (gzip.open if path.suffix == ".gz" else open)(path, "wb") as f:
        f.write(data)


def fake_mnist(directory: pathlib.Path, n: int = 30) -> None:
    """A t10k-only MNIST directory of ``n`` random 28x28 images, ``n / 10`` per class."""
    directory.mkdir()
    rng = np.random.default_rng(0)
    write_idx(directory / "t10k-images-idx3-ubyte.gz", rng.integers(0, 256, (n, 28, 28), dtype=np.uint8))
    write_idx(directory / "t10k-labels-idx1-ubyte.gz", np.arange(n, dtype=np.uint8) % 10)


def test_a_truncated_gz_is_an_error_naming_the_file(tmp_path):
    fake_mnist(tmp_path / "mnist")
    path = tmp_path / "mnist" / "t10k-images-idx3-ubyte.gz"
    path.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(ValueError, match=re.escape(str(path)) + ".*truncated"):
        read_idx(str(path))


def test_a_task_without_training_examples_is_a_clear_error(tmp_path):
    fake_mnist(tmp_path / "mnist")
    cfg = make_config("task=mnist", f"task.data_dir={tmp_path / 'mnist'}", "task.train_size=0", "task.test_size=10",
                      *QUIET)
    with pytest.raises(ValueError, match="0 train / 10 test images.*no training examples"):
        run(cfg, str(tmp_path / "run"))
    assert not (tmp_path / "run").exists()


@pytest.fixture
def read_only_directory(tmp_path):
    """An empty directory nobody may write to: mode 0555, and immutable (chattr +i) when the tests run as root,
    whom file modes do not stop."""
    directory = tmp_path / "read-only"
    directory.mkdir()
    directory.chmod(0o555)
    immutable = os.geteuid() == 0
    if immutable and (shutil.which("chattr") is None
                      or subprocess.run(["chattr", "+i", str(directory)], capture_output=True).returncode):
        pytest.skip("running as root without chattr +i: no way to make a read-only directory")
    try:
        yield directory
    finally:
        if immutable:
            subprocess.run(["chattr", "-i", str(directory)], check=True)
        directory.chmod(0o755)


@pytest.mark.parametrize("inside", [False, True])
def test_a_read_only_run_directory_is_a_clear_error(read_only_directory, inside):
    run_dir = read_only_directory / "run" if inside else read_only_directory
    with pytest.raises(PermissionError, match=f"run directory {re.escape(str(run_dir))} is not writable"):
        run(make_config("optimizer=adam", "run.max_steps=1", *QUIET), str(run_dir))


def test_idx_reader_rejects_a_non_idx_file(tmp_path):
    bad = tmp_path / "t10k-images-idx3-ubyte"
    bad.write_bytes(b"\x01\x02\x03\x04garbage")
    with pytest.raises(ValueError, match="not an IDX file"):
        read_idx(str(bad))


@pytest.mark.skipif(not MNIST_DIR.exists(), reason=f"real MNIST not at {MNIST_DIR}")
def test_mnist_test_set_split_is_disjoint_and_stratified():
    train, test = load_mnist(str(MNIST_DIR), 5000, 5000, seed=0)
    assert train.images.shape == (5000, 28, 28) and test.images.shape == (5000, 28, 28)
    assert 0.0 <= train.images.min() and train.images.max() <= 1.0
    # Disjoint: no test image equals a train image byte for byte (MNIST has no exact duplicates).
    train_hashes = {img.tobytes() for img in train.images}
    assert not any(img.tobytes() in train_hashes for img in test.images)
    # Stratified: class frequencies of the test part within 1 image of the full set's (980, 1135, ... / 2).
    counts = np.bincount(test.labels, minlength=10)
    full = np.array([980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009])
    assert np.all(np.abs(counts - full / 2) <= 1)


@pytest.mark.slow
@pytest.mark.parametrize("optimizer", ["tngd", "adam"])
def test_default_command_reaches_90_percent_on_digits(tmp_path, optimizer):
    summary = run(make_config(f"optimizer={optimizer}", *QUIET), str(tmp_path))
    assert summary["final"]["test_accuracy"] >= 0.90, summary
