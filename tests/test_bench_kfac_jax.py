"""experiments.bench.kfac_jax and experiments.bench.venv without kfac-jax: the skip path, the ratio bookkeeping and the
report on made-up timings, the worker protocol and the reuse of a cached environment.

No virtual environment is created and nothing is installed: CI has no kfac-jax (the real comparison runs with
``python scripts/bench_kfac_jax.py``, which creates its environment once).
"""

import pathlib
import sys

import pytest

from experiments.bench import kfac_jax as bkj
from experiments.bench import venv as bench_venv


def test_skips_with_the_reason_when_its_environment_cannot_be_created(tmp_path):
    blocker = tmp_path / "file"  # a file: no directory (hence no venv) can be made under it
    blocker.write_text("")
    result = bkj.kfac_jax_ratio(True, cache_dir=blocker)
    assert "could not run in its own environment" in result["reason"] and "venv" in result["reason"]
    assert result["kfac_step_over_kfac_jax"] is None and result["thermo_kfac_step_over_kfac_jax"] is None
    assert set(result["ratios"]) == set(result["ratios_median"]) == set(bkj.RATIO_KEYS)
    assert all(value is None for value in [*result["ratios"].values(), *result["ratios_median"].values()])
    assert bkj.report(result) == f"kfac-jax comparison not run: {result['reason']}"
    assert blocker.read_text() == ""


def made_up_times() -> dict:
    """Rounds of (wall, cpu) seconds: our Adam 10 ms, theirs 20 ms; each K-FAC with the curvature-propagation
    estimator twice (kfac-jax) or 2-3x (ours) its own Adam, the exact GGN 1.5x that."""
    times = {"adam": [(0.010, 0.020), (0.012, 0.022)], "kfac_jax adam": [(0.020, 0.040), (0.024, 0.044)]}
    for period in bkj.PERIODS:
        for mode, factor in (("ggn_curvature_prop", 1.0), ("ggn_exact", 1.5)):
            for name in bkj.OURS:
                times[bkj.case(name, period, mode)] = [(0.020 * factor, 0.040 * factor), (0.030 * factor, 0.050)]
            times[bkj.case("kfac_jax", period, mode)] = [(0.040 * factor, 0.080 * factor)] * 2
    return times


def test_ratios_raw_and_normalised_by_each_environments_adam():
    result = bkj.summarise(made_up_times(), {"adam": 1.0}, bkj.PERIODS, bkj.KFAC_JAX_MODES)
    assert result["cases"]["adam"]["wall"]["first_call_s"] == 1.0
    assert result["cases"]["adam"]["wall"]["median_s"] == pytest.approx(0.011)
    kfac = result["periods"]["10"]["kfac"]["ggn_curvature_prop"]
    assert kfac["wall_min"] == pytest.approx(0.5)  # 20 ms / 40 ms
    assert kfac["wall_median"] == pytest.approx(0.025 / 0.040)
    assert kfac["wall_min_normalised"] == pytest.approx(0.5 / (0.010 / 0.020))  # Adams 10 vs 20 ms: 1.0
    assert kfac["cpu_median"] == pytest.approx(0.045 / 0.080)
    # Each of ours is divided by kfac-jax with the same estimator (ours with the exact GGN: 30 ms / 60 ms).
    assert result["periods"]["1"]["thermo_kfac"]["ggn_exact"]["wall_min"] == pytest.approx(0.5)
    assert result["periods"]["1"]["thermo_kfac"]["ggn_exact"]["wall_median"] == pytest.approx(0.0375 / 0.060)
    assert result["kfac_step_over_kfac_jax"] == result["ratios"]["kfac_step_over_kfac_jax"] == pytest.approx(0.5)
    assert result["ratios_median"]["thermo_kfac_step_over_kfac_jax_refresh1"] == pytest.approx(0.025 / 0.040)
    assert set(result["ratios"]) == set(bkj.RATIO_KEYS)


def test_report_lists_every_case_and_ratio():
    result = bkj.summarise(made_up_times(), {}, bkj.PERIODS, bkj.KFAC_JAX_MODES)
    result["versions"] = {"ours": {"jax": "0.10.2"}, "kfac_jax": {"kfac-jax": "0.0.8", "jax": "0.8.3"}}
    result["setting"] = {"model": "MLP", "batch": 512, "dtype": "float32", "learning_rate": 1e-3, "damping": 1e-3,
                         "rounds": 2, "adam_steps_per_round": 10, "load_avg_1min": [1.0, 2.0], "cpu_count": 2,
                         "headline_mode": bkj.HEADLINE_MODE, "headline_period": bkj.HEADLINE_PERIOD}
    text = bkj.report(result)
    assert "kfac-jax 0.0.8: jax 0.8.3" in text and text.count("ggn_curvature_prop (headline)") == len(bkj.OURS)
    assert "| kfac_jax ggn_exact refresh 1 | 60.0 (60.0) |" in text
    assert text.count("\n| 10 | ") == 4 and text.count("\n| 1 | ") == 4


def test_worker_protocol_round_trip_and_death(tmp_path):
    script = tmp_path / "echo_worker.py"
    script.write_text(f"import sys\nsys.path.insert(0, {str(bench_venv.WORKERS)!r})\nimport protocol\n"
                      "protocol.serve({'echo': lambda **kwargs: kwargs})\n")
    worker = bench_venv.Worker(pathlib.Path(sys.executable), script, "echo")
    assert worker.call("echo", x=1, y=[2]) == {"x": 1, "y": [2]}
    with pytest.raises(bench_venv.Unavailable, match="echo worker died .* during 'nope'"):
        worker.call("nope")
    worker.process.wait(timeout=60)


def test_cached_environment_is_reused_when_its_probe_passes(tmp_path):
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    (venv / "bin" / "python").symlink_to(sys.executable)

    def requirements():
        raise AssertionError("a working environment must not be recreated")

    assert bench_venv.cached_venv(venv, "import json", requirements) == venv / "bin" / "python"
