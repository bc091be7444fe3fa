"""experiments.plots (scripts/plot.py) reads run directories only: seeds grouped, tables with mean and spread."""

import json
import pathlib

import numpy as np
import pytest

from experiments import figures
from experiments import plots as plot


def fake_run(directory: pathlib.Path, final: float, loss0: float) -> str:
    directory.mkdir(parents=True)
    records = [{"step": 0, "wall_time_s": 0.0, "modeled_time_s": 0.0, "test_accuracy": 0.0}]
    records += [{"step": s, "train_loss": loss0 / s, "wall_time_s": 0.1 * s, "modeled_time_s": 1e-3 * s}
                for s in range(1, 11)]
    records[5]["test_accuracy"] = final / 2
    records[10]["test_accuracy"] = final
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


def test_table_counts_a_run_that_stopped_before_its_first_evaluation_apart(tmp_path):
    # a seed that failed at step 3 (its summary has no test metric) is not averaged as a number
    runs = [fake_run(tmp_path / "tngd-seed0", 0.90, 2.0), fake_run(tmp_path / "tngd-seed1", 0.94, 2.0)]
    summary_path = pathlib.Path(runs[1]) / "summary.json"
    summary = json.loads(summary_path.read_text())
    summary.update(final={}, best_test_accuracy=None, steps=3)
    summary_path.write_text(json.dumps(summary))
    row = plot.table(plot.load_groups(runs, None)).splitlines()[2]
    assert "| 2 | 0.9 (1 of 2) | 0.9 (1 of 2) |" in row and "| 3-10 |" in row


def test_curves_smooth_each_seed_with_a_moving_average(tmp_path):
    runs = plot.load_groups([fake_run(tmp_path / "a-seed0", 0.9, 10.0), fake_run(tmp_path / "a-seed1", 0.9, 20.0)],
                            None)["a"]
    x, ys = plot.curves(runs, "step", "train_loss", smooth=2)
    assert list(x) == list(range(2, 11)) and ys.shape == (2, 9)
    assert ys[:, 0] == pytest.approx([(10.0 + 5.0) / 2, (20.0 + 10.0) / 2])
    x, ys = plot.curves(runs, "step", "test_accuracy", smooth=1)
    assert list(x) == [0, 5, 10]  # the evaluation at step 0 starts the curve


def test_curves_of_seeds_that_stopped_early_end_where_they_stopped(tmp_path):
    runs = plot.load_groups([fake_run(tmp_path / f"a-seed{k}", 0.9, 10.0) for k in range(3)], None)["a"]
    runs[1]["metrics"] = runs[1]["metrics"][:4]  # stopped at step 3: its step-0 evaluation, losses of steps 1-3
    runs[2]["metrics"] = [r for r in runs[2]["metrics"] if "train_loss" in r][:2]  # stopped at step 2
    x, ys = plot.curves(runs, "step", "train_loss", smooth=2)
    assert list(x) == list(range(2, 11)) and ys.shape == (3, 9)  # the window shrinks to no seed's length
    assert np.isnan(ys[1, 2:]).all() and not np.isnan(ys[1, :2]).any() and np.isnan(ys[2, 1:]).all()
    x, ys = plot.curves(runs, "step", "test_accuracy", smooth=1)  # seed 2 never evaluated: left out
    assert list(x) == [0, 5, 10] and ys.shape == (2, 3) and np.isnan(ys[1, 1:]).all()
    runs = [dict(r, metrics=[m for m in r["metrics"] if "test_accuracy" not in m]) for r in runs]
    assert plot.curves(runs, "step", "test_accuracy", smooth=1)[1].size == 0


def test_figure_plots_against_steps_wall_and_modeled_time_in_words_with_a_band_over_seeds(tmp_path):
    """Axes labelled in words with units (no raw record keys), one column per x (steps, wall-clock seconds, modeled
    hardware seconds), each curve the mean over seeds with a min-max band."""
    finals = (0.90, 0.94)
    groups = plot.load_groups([fake_run(tmp_path / f"adam-seed{i}", f, 2.0) for i, f in enumerate(finals)]
                              + [fake_run(tmp_path / "tngd-seed0", 0.96, 1.0)], None)
    fig = plot.figure(groups, smooth=1, title="test")
    axes = fig.axes
    assert [ax.get_xlabel() for ax in axes] == ["step", "wall-clock time (s)", "modeled hardware time (s)"] * 2
    assert {ax.get_ylabel() for ax in axes} == {"training loss", "test accuracy"}
    labels = [ax.get_xlabel() for ax in axes] + [ax.get_ylabel() for ax in axes]
    assert not any("_" in label for label in labels), labels
    assert "min-max over seeds" in fig._suptitle.get_text()
    accuracy_vs_step = axes[3]
    mean = accuracy_vs_step.lines[0]
    assert list(mean.get_xdata()) == [0, 5, 10]
    assert mean.get_ydata()[-1] == pytest.approx(np.mean(finals))
    # The time axes start at 0 too (symmetric-log: linear up to the earliest record's time).
    for ax in axes[4:]:
        assert ax.get_xscale() == "symlog" and ax.lines[0].get_xdata()[0] == 0 and ax.get_xlim()[0] == 0
    # One band (the group of two seeds; none for a single seed), spanning the seeds' lowest to highest values.
    (band,) = accuracy_vs_step.collections
    top = band.get_paths()[0].vertices[:, 1]
    assert top.max() == pytest.approx(max(finals)) and top.min() == pytest.approx(0.0)
    assert [text.get_text() for text in axes[0].get_legend().get_texts()] == ["adam (2 seeds)", "tngd (1 seed)"]
    import matplotlib.pyplot as plt

    plt.close(fig)


def test_plot_run_writes_the_run_directorys_figure(tmp_path):
    run_dir = fake_run(tmp_path / "adam-seed0", 0.9, 2.0)
    assert pathlib.Path(plot.plot_run(run_dir)).stat().st_size > 0


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
    assert [r["step"] for r in rundir.read_metrics(str(run_dir))] == [0, 1, 2, 3, 4, 5, 6]
    with pytest.raises(rundir.ConfigMismatchError, match="learning_rate"):
        figures.run_once([*FIGURE_JOB, "run.max_steps=6", "optimizer.learning_rate=0.5"], run_dir)
    monkeypatch.setattr(figures, "run", lambda *a: pytest.fail("a finished run of the same config is rerun"))
    figures.run_once([*FIGURE_JOB, "run.max_steps=6"], run_dir)
    # a run finished before a run-control field existed (run.logger) is finished for that field's every value
    summary = json.loads((run_dir / rundir.SUMMARY).read_text())
    del summary["run_control"]["run.logger"]
    (run_dir / rundir.SUMMARY).write_text(json.dumps(summary))
    figures.run_once([*FIGURE_JOB, "run.max_steps=6", "run.logger=tensorboard"], run_dir)
    # a run of the same config that failed (a device certificate) is reported, not run again; another config is
    summary.update(failed={"step": 4, "error": "thermox.Diffrax: Euler-Maruyama is unstable at dt=0.1"}, steps=3)
    (run_dir / rundir.SUMMARY).write_text(json.dumps(summary))
    figures.run_once([*FIGURE_JOB, "run.max_steps=6"], run_dir)
    assert "unstable at dt=0.1" in figures.failed_before(run_dir, figures.compose_config([*FIGURE_JOB]))
    assert figures.failed_before(run_dir, figures.compose_config([*FIGURE_JOB, "optimizer.learning_rate=0.5"])) is None
