"""A run directory belongs to one config: identity in the name and config.yaml, a lock against a second process,
resume (after kill -9, also inside a checkpoint write) identical to an uninterrupted run, divergence reporting."""

import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest
from omegaconf import OmegaConf

from experiments import identity, rundir
from experiments.config import DEVICE_PRESETS, OPTIMIZERS
from experiments.run import run
from test_runner import CONFIGS, QUIET, cli, make_config

ROOT = os.path.dirname(CONFIGS)
ENV = {**os.environ, "PYTHONPATH": os.pathsep.join([ROOT, os.environ.get("PYTHONPATH", "")]),
       "OPENBLAS_NUM_THREADS": "1"}
ADAM = ["optimizer=adam", *QUIET]
# Adam's modeled step time is a float32 constant whose running sum is not exact in float32 (TNGD resumes the same
# way, tests/test_runner.py, but compiles 5x slower).
RESUMED = ["optimizer=adam", "run.eval_every=10", "run.checkpoint_every=5", "run.max_steps=40", *QUIET]

# Runs experiments.run.run in a subprocess that SIGKILLs itself: "after_step N" right after step N's metrics
# record is written; "in_save N" inside the N-th checkpoint write (orbax writes the step into a temporary
# directory; the kill comes in the middle of writing the loop state's JSON there).
DRIVER = """
import json, os, signal, sys
import orbax.checkpoint as ocp
from hydra import compose, initialize_config_dir
from experiments import rundir
from experiments.run import run

configs, kind, at, run_dir, *overrides = sys.argv[1:]
at = int(at)
if kind == "after_step":
    append = rundir.append_metrics
    def append_then_die(directory, record):
        append(directory, record)
        if record["step"] == at:
            os.kill(os.getpid(), signal.SIGKILL)
    rundir.append_metrics = append_then_die
else:
    calls = []
    async def die_in_write(self, item, directory):  # JsonCheckpointHandler's writer coroutine (private)
        calls.append(1)
        if len(calls) == at:
            (directory / "metadata").write_text(json.dumps(item)[:20])
            os.kill(os.getpid(), signal.SIGKILL)
        (directory / "metadata").write_text(json.dumps(item))
    ocp.handlers.JsonCheckpointHandler._save_fn = die_in_write
with initialize_config_dir(config_dir=configs, version_base="1.3"):
    cfg = compose("config", overrides=overrides)
run(cfg, run_dir)
"""


def killed_run(kind: str, at: int, run_dir, overrides) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", DRIVER, CONFIGS, kind, str(at), str(run_dir), *overrides],
                          env=ENV, capture_output=True, text=True, timeout=300)


def without_measured(records):
    """A run's records without what it measured on this machine (wall time, the paper accounting's timed passes)."""
    return [{k: v for k, v in r.items() if k not in ("wall_time_s", "paper_time_s", "paper_energy_j")}
            for r in records]


# --- identity ----------------------------------------------------------------------------------------------


def test_run_name_is_a_readable_prefix_and_the_config_hash():
    base = make_config("optimizer=adam")
    name = identity.run_name(base)
    assert re.fullmatch(r"digits-adam-ideal-seed0-[0-9a-f]{8}", name), name
    assert identity.run_name(make_config("optimizer=adam", "optimizer.learning_rate=0.5")) != name
    assert identity.run_name(make_config("optimizer=adam", "task.hidden=8")) != name
    # run control does not change the identity; the seeds of one config share the hash
    assert identity.run_name(make_config("optimizer=adam", "run.max_steps=7", *QUIET)) == name
    assert identity.run_name(make_config("optimizer=adam", "run.logger=tensorboard")) == name
    assert identity.run_name(make_config("optimizer=adam", "seed=3")) == name.replace("seed0", "seed3")


@pytest.mark.parametrize("optimizer", sorted(OPTIMIZERS))
@pytest.mark.parametrize("device", sorted(DEVICE_PRESETS))
def test_stored_config_yaml_keeps_the_identity(tmp_path, optimizer, device):
    cfg = make_config(f"optimizer={optimizer}", f"device={device}", "task=mnist", "task.data_dir=/data")
    (tmp_path / "config.yaml").write_text(OmegaConf.to_yaml(OmegaConf.create(identity.resolved(cfg))))
    assert identity.changed_keys(OmegaConf.load(tmp_path / "config.yaml"), cfg) == []


def test_a_changed_config_is_an_error_naming_the_keys_and_keeps_the_old_run(tmp_path):
    run(make_config(*ADAM, "run.max_steps=2"), str(tmp_path))
    stored, metrics = (tmp_path / "config.yaml").read_text(), (tmp_path / "metrics.jsonl").read_text()
    with pytest.raises(rundir.ConfigMismatchError, match=r"optimizer\.learning_rate: 0\.001 stored, 0\.5 requested"):
        run(make_config(*ADAM, "run.max_steps=4", "optimizer.learning_rate=0.5"), str(tmp_path))
    with pytest.raises(rundir.ConfigMismatchError, match=r"optimizer\.name: 'adam' stored, 'sgd' requested"):
        run(make_config("optimizer=sgd", *QUIET, "run.max_steps=2"), str(tmp_path))
    assert (tmp_path / "config.yaml").read_text() == stored and (tmp_path / "metrics.jsonl").read_text() == metrics


def test_extending_max_steps_resumes_and_the_summary_says_so(tmp_path):
    run(make_config(*ADAM, "run.max_steps=3"), str(tmp_path))
    summary = run(make_config(*ADAM, "run.max_steps=5"), str(tmp_path))
    assert summary["steps"] == 5 and summary["extended"] == [{"at_step": 3, "from": 3, "to": 5}]
    assert [r["step"] for r in rundir.read_metrics(str(tmp_path))] == [0, 1, 2, 3, 4, 5]
    assert "skipped_steps" not in summary  # Adam does not count skipped steps
    with pytest.raises(ValueError, match="already holds 5 steps: run.max_steps=2 can't shorten it"):
        run(make_config(*ADAM, "run.max_steps=2"), str(tmp_path))


def test_a_longer_run_read_to_a_step_is_the_shorter_run(tmp_path):
    """A figure capped at 6 steps reads the first 6 of a 12-step run of the same config (``rundir.covers`` and
    ``read_run``): the same records and summary as a 6-step run, apart from what this machine measured."""
    short, long = str(tmp_path / "short"), str(tmp_path / "long")
    ran = run(make_config(*ADAM, "run.eval_every=3", "run.max_steps=6"), short)
    run(make_config(*ADAM, "run.eval_every=3", "run.max_steps=12"), long)
    cfg = make_config(*ADAM, "run.eval_every=3", "run.max_steps=6")
    assert rundir.covers(long, cfg) and not rundir.finished(long, cfg)
    assert not rundir.covers(long, make_config(*ADAM, "run.eval_every=3", "run.max_steps=13"))
    assert not rundir.covers(long, make_config(*ADAM, "run.eval_every=3", "run.max_steps=6", "run.on_divergence=warn"))
    read = rundir.read_run(long, 6)
    assert without_measured(read["metrics"]) == without_measured(rundir.read_metrics(short))
    measured = ("wall_time_s", "paper_time_s", "paper_energy_j", "run_control", "extended", "read_to_step")
    same = lambda summary: {k: v for k, v in summary.items() if k not in measured}
    assert same(read["summary"]) == same(ran) and read["summary"]["read_to_step"] == 6
    assert rundir.read_run(long, 100)["summary"] == rundir.read_json(os.path.join(long, rundir.SUMMARY))


def test_a_multirun_over_two_learning_rates_gives_two_directories(tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "experiments.run", "-m", "optimizer=adam", "optimizer.learning_rate=0.001,0.002",
         "run.max_steps=2", *QUIET, f"hydra.sweep.dir={tmp_path}"],
        cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    runs = sorted(p for p in tmp_path.iterdir() if p.is_dir())
    assert len(runs) == 2 and all(re.fullmatch(r"digits-adam-ideal-seed0-[0-9a-f]{8}", p.name) for p in runs)
    rates = sorted(OmegaConf.load(p / "config.yaml").optimizer.learning_rate for p in runs)
    assert rates == [0.001, 0.002]
    assert all(len(rundir.read_metrics(str(p))) == 3 for p in runs)  # steps 0 (the initial evaluation), 1, 2


# --- lock --------------------------------------------------------------------------------------------------


def test_a_second_process_is_kept_out_by_the_lock(tmp_path):
    run_dir = tmp_path / "run"
    long = [*ADAM, "run.max_steps=1000000", "run.checkpoint_every=1000000"]
    first = subprocess.Popen([sys.executable, "-m", "experiments.run", *long, f"hydra.run.dir={run_dir}"],
                             cwd=ROOT, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 240
        while not (run_dir / "metrics.jsonl").exists():
            assert first.poll() is None, first.stderr.read()[-2000:]
            assert time.monotonic() < deadline, "the first run never started"
            time.sleep(0.2)
        holder = rf"{re.escape(str(run_dir))} is in use by process {first.pid}"
        with pytest.raises(rundir.RunLockedError, match=holder):
            run(make_config(*long), str(run_dir))
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
    # The dead process's lock file is taken over; the run starts again from scratch (it had no checkpoint).
    summary = run(make_config(*ADAM, "run.max_steps=3", "run.checkpoint_every=1000000"), str(run_dir))
    assert summary["steps"] == 3 and [r["step"] for r in rundir.read_metrics(str(run_dir))] == [0, 1, 2, 3]


# --- resume ------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("uninterrupted")
    summary = run(make_config(*RESUMED), str(run_dir))
    return summary, rundir.read_metrics(str(run_dir))


def test_run_killed_at_step_37_resumes_to_the_same_records(tmp_path, uninterrupted):
    done = killed_run("after_step", 37, tmp_path, RESUMED)
    assert done.returncode == -signal.SIGKILL, done.stderr[-2000:]
    assert len(rundir.read_metrics(str(tmp_path))) == 38  # steps 0 to 37
    summary = run(make_config(*RESUMED), str(tmp_path))
    records = rundir.read_metrics(str(tmp_path))
    assert without_measured(records) == without_measured(uninterrupted[1])
    assert summary["modeled_time_s"] == uninterrupted[0]["modeled_time_s"]
    assert summary["final"] == uninterrupted[0]["final"]


def test_run_killed_inside_a_checkpoint_write_resumes_cleanly(tmp_path, uninterrupted):
    done = killed_run("in_save", 3, tmp_path, RESUMED)  # inside step 15's checkpoint
    assert done.returncode == -signal.SIGKILL, done.stderr[-2000:]
    assert any("tmp" in name for name in os.listdir(tmp_path / "checkpoints"))  # the half-written checkpoint
    run(make_config(*RESUMED), str(tmp_path))
    assert without_measured(rundir.read_metrics(str(tmp_path))) == without_measured(uninterrupted[1])


# --- divergence --------------------------------------------------------------------------------------------

# TNGD at learning rate 5 jumps to a training loss of ~1e17 at step 2 and stays above 10x the first step's
# (2.33) from then on: with the spike rule out of the way, diverged at step 21 with the default window of 20.
DIVERGING = ["optimizer=tngd", "optimizer.learning_rate=5", "run.max_steps=100", *QUIET]


def test_divergence_stops_the_run_says_where_and_exits_non_zero(tmp_path):
    summary = run(make_config(*DIVERGING, "run.divergence_spike_factor=1e30"), str(tmp_path / "a"))
    assert summary["diverged"]["step"] == 21 and summary["diverged"]["action"] == "stop"
    assert "above 10 x the first step's" in summary["diverged"]["reason"]
    assert summary["steps"] == 21 and summary["planned_steps"] == 100 and "test_accuracy" in summary["final"]
    assert json.loads((tmp_path / "a" / "summary.json").read_text())["diverged"] == summary["diverged"]
    assert [r["skipped_steps"] for r in rundir.read_metrics(str(tmp_path / "a"))] == [0] * 22  # steps 0 to 21
    # SGD at learning rate 1e30 overflows at step 1: a NaN loss at step 2 stops it at once
    assert cli("optimizer=sgd", "optimizer.learning_rate=1e30", *QUIET, f"hydra.run.dir={tmp_path / 'b'}") == 1
    assert json.loads((tmp_path / "b" / "summary.json").read_text())["diverged"] == {
        "step": 2, "reason": "train loss is nan", "action": "stop"}


def test_a_loss_spike_is_a_divergence(tmp_path):
    # The case: thermal noise kappa0 = 0.1 at damping 1e-4 with the node voltages carried over between
    # steps (reset=false: the noise accumulates towards the stationary variance kappa0 / damping = 1e3 per
    # parameter) blows the parameters up; the loss spikes far above 1000x the first step's (step 68), then falls
    # back as the outputs saturate (never 10x for 20 steps), ending at chance accuracy. The spike rule stops it.
    # (With the default reset at delay 0 the same device trains: 0.78 test accuracy at step 120.)
    summary = run(make_config("device=noisy", "optimizer.damping=1e-4", "optimizer.reset=false", "run.max_steps=120",
                              *QUIET),
                  str(tmp_path))
    assert summary["diverged"]["action"] == "stop" and summary["steps"] < 120
    assert "above 1000 x the first step's" in summary["diverged"]["reason"]


def test_divergence_warns_and_skipped_steps_are_logged(tmp_path):
    # lr 1e30: step 1's update overflows the parameters, so from step 2 on the loss and gradient are NaN and
    # TNGD skips every step (the parameters stay put); the NaN loss at step 2 is a divergence.
    cfg = make_config("optimizer=tngd", "optimizer.learning_rate=1e30", "run.max_steps=6",
                      "run.on_divergence=warn", *QUIET)
    with pytest.warns(RuntimeWarning, match="diverged at step 2"):
        summary = run(cfg, str(tmp_path))
    assert summary["steps"] == 6 and summary["diverged"] == {"step": 2, "reason": "train loss is nan",
                                                             "action": "warn"}
    assert [r["skipped_steps"] for r in rundir.read_metrics(str(tmp_path))] == [0, 0, 1, 2, 3, 4, 5]  # steps 0 to 6
    assert summary["skipped_steps"] == 5
