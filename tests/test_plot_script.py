"""experiments.plots (scripts/plot.py) reads run directories only: seeds grouped, tables with mean and spread."""

import json
import pathlib

import pytest

from experiments import figures
from experiments import plots as plot


def fake_run(directory: pathlib.Path, final: float, loss0: float) -> str:
    directory.mkdir(parents=True)
    records = [{"step": s, "train_loss": loss0 / s, "wall_time_s": 0.1 * s, "modeled_time_s": 1e-3 * s}
               for s in range(1, 11)]
    records[4]["test_accuracy"] = final / 2
    records[9]["test_accuracy"] = final
    (directory / "metrics.jsonl").write_text("\n".join(json.dumps(r) for r in records) + "\n")
    summary = {"metric": "test_accuracy", "steps": 10, "planned_steps": 10, "final": {"test_accuracy": final},
               "best_test_accuracy": final, "final_train_loss": loss0 / 10, "wall_time_s": 1.0, "modeled_time_s": 0.01}
    (directory / "summary.json").write_text(json.dumps(summary))
    return str(directory)


def test_compare_groups_seeds_and_writes_figure_and_table(tmp_path):
    runs = [fake_run(tmp_path / "adam-seed0", 0.90, 2.0), fake_run(tmp_path / "adam-seed1", 0.94, 2.0),
            fake_run(tmp_path / "tngd-seed0", 0.96, 1.0)]
    markdown = plot.compare(runs, str(tmp_path / "out" / "cmp"), smooth=3, title="test")
    assert (tmp_path / "out" / "cmp.png").stat().st_size > 0
    assert (tmp_path / "out" / "cmp.md").read_text().endswith(markdown)
    rows = {line.split("|")[1].strip(): line for line in markdown.splitlines()[2:]}
    assert set(rows) == {"adam", "tngd"}
    assert "| 2 | 0.92 ± 0.02 |" in rows["adam"]  # mean and population std of 0.90 and 0.94
    assert "| 1 | 0.96 |" in rows["tngd"]


def test_mean_curve_smooths_with_a_moving_average(tmp_path):
    runs = plot.load_groups([fake_run(tmp_path / "a-seed0", 0.9, 10.0)], None)["a"]
    x, y = plot.mean_curve(runs, "step", "train_loss", smooth=2)
    assert list(x) == list(range(2, 11))
    assert y[0] == pytest.approx((10.0 + 5.0) / 2)


# --- experiments.figures (scripts/figures.py): which run directories it makes and reuses ---


FIGURE_JOB = ["task=digits", "run.progress=false", "run.plots=false", "optimizer=adam", "seed=0"]


def test_figures_name_run_directories_by_config():
    digits = figures.run_directory("runs", FIGURE_JOB)
    mnist = figures.run_directory("runs", ["task=mnist", "task.data_dir=/data", *FIGURE_JOB[1:]])
    assert digits != mnist and digits.parent == mnist.parent and digits.name.startswith("digits-adam-ideal-seed0-")
    capped = figures.run_directory("runs", [*FIGURE_JOB, "run.max_steps=2"])
    assert capped == digits  # run control: a longer --max-steps extends the same run
    assert figures.output_stem("figures", "mnist", ["task=digits"]) == "figures/mnist-digits"
    assert figures.output_stem("figures", "mnist", ["task=mnist", "task.data_dir=/data"]) == "figures/mnist"


def test_figures_reuse_a_run_only_when_its_config_and_steps_match(tmp_path, monkeypatch):
    from experiments import rundir

    run_dir = tmp_path / "adam-seed0"
    figures.run_once([*FIGURE_JOB, "run.max_steps=2"], run_dir)
    figures.run_once([*FIGURE_JOB, "run.max_steps=6"], run_dir)  # not reused: extended to 6 steps
    assert [r["step"] for r in rundir.read_metrics(str(run_dir))] == [1, 2, 3, 4, 5, 6]
    with pytest.raises(rundir.ConfigMismatchError, match="learning_rate"):
        figures.run_once([*FIGURE_JOB, "run.max_steps=6", "optimizer.learning_rate=0.5"], run_dir)
    monkeypatch.setattr(figures, "run", lambda *a: pytest.fail("a finished run of the same config is rerun"))
    figures.run_once([*FIGURE_JOB, "run.max_steps=6"], run_dir)
