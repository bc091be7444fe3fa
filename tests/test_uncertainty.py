"""The posterior study's scores against hand computations, and the study end to end on a short digits run."""


import numpy as np
import pytest

from experiments import calibration, figures, uncertainty


def test_scores_by_hand():
    probs = np.array([[0.9, 0.1], [0.6, 0.4], [0.3, 0.7], [0.2, 0.8]])
    labels = np.array([0, 1, 1, 1])
    got = calibration.scores(probs, labels, bins=2)
    # confidences 0.9, 0.6, 0.7, 0.8 all fall in the bin (0.5, 1]: accuracy 3/4 against mean confidence 0.75
    assert got["accuracy"] == 0.75 and got["ece"] == pytest.approx(0.0)
    assert got["nll"] == pytest.approx(-np.mean(np.log([0.9, 0.4, 0.7, 0.8])))
    assert got["brier"] == pytest.approx(np.mean([0.02, 0.72, 0.18, 0.08]))
    got = calibration.scores(np.array([[0.9, 0.1], [0.45, 0.55]]), np.array([1, 1]), bins=2)
    # bin (0.5, 1]: both, accuracy 1/2, confidence 0.725
    assert got["ece"] == pytest.approx(0.225)
    with pytest.raises(ValueError, match="non-finite"):
        calibration.scores(np.array([[np.nan, 1.0]]), np.array([0]))
    with pytest.raises(ValueError, match="one label per example"):
        calibration.scores(probs, labels[:2])


def test_auroc_bounds():
    confident = np.array([[0.99, 0.01]] * 5)
    unsure = np.array([[0.5, 0.5]] * 5)
    assert calibration.ood_auroc(confident, unsure) == 1.0
    assert calibration.ood_auroc(unsure, unsure) == 0.5


def test_nll_curve_and_samples_to_reach():
    probs = np.random.default_rng(0).dirichlet(np.ones(3), size=(6, 4))  # (S, b, classes)
    labels = np.array([0, 1, 2, 0])
    curve = uncertainty._nll_curve(probs, labels)
    for s in (1, 3, 6):
        mean = probs[:s].mean(0)
        assert curve[s - 1] == pytest.approx(-np.mean(np.log(mean[np.arange(4), labels])))
    assert uncertainty.samples_to_reach(np.array([3.0, 1.2, 0.95, 1.05, 1.0]), 1.0, 0.1) == 3
    assert uncertainty.samples_to_reach(np.array([1.0, 1.0]), 1.0, 0.1) == 1
    assert uncertainty.samples_to_reach(np.array([1.0, 2.0]), 1.0, 0.1) is None


def test_ood_sets_keep_the_pixels():
    images = np.random.default_rng(1).random((3, 8, 8))
    sets = uncertainty.ood_sets(images, 0)
    np.testing.assert_array_equal(sets["rotated 90"][0], np.rot90(images[0]))
    np.testing.assert_allclose(np.sort(sets["pixels shuffled"].reshape(3, -1)), np.sort(images.reshape(3, -1)))


def test_study_runs_end_to_end_on_digits(tmp_path, monkeypatch):
    monkeypatch.setattr(uncertainty, "QUICK", uncertainty.Settings(full_examples=40, samples=6, bootstrap=5,
                                                                         structures=("full", "kfac")))
    monkeypatch.setattr(uncertainty, "DEVICE_SWEEP", uncertainty.DEVICE_SWEEP[:2])
    job = ["task=digits", "run.progress=false", "run.plots=false", "optimizer=adam", "seed=0", "run.max_steps=30"]
    run_dir = tmp_path / "map"
    figures.run_once(job, run_dir)
    text = uncertainty.make(str(tmp_path / "uncertainty"), str(run_dir), figures.compose_config(job), quick=True)
    assert "| Laplace kfac |" in text and "| Laplace full (40 examples) |" in text
    assert "fresh runs of t = 0.2" in text and (tmp_path / "uncertainty.png").exists()
