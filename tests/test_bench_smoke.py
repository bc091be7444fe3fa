"""scripts/bench.py on tiny sizes: every cheap piece of its API runs and the JSON keeps its documented keys.

No timing assertions (the machine is shared): only that the pieces run, return what the report and the keys
need, and that a null always comes with its reason.
"""

import json
import pathlib
import sys

import jax.numpy as jnp
import pytest

SCRIPTS = pathlib.Path(__file__).resolve().parents[1] / "scripts"
sys.path.insert(0, str(SCRIPTS))

import _timing  # noqa: E402
import bench  # noqa: E402

REQUIRED_KEYS = {
    "ratios": ["ou_exact_over_thermox", "tngd_t50_step_over_adam", "tngd_mc_fisher_step_over_adam",
               "tngd_adam_step_over_adam", "thermo_kfac_step_over_adam", "kfac_step_over_kfac_jax",
               "thermo_kfac_step_over_kfac_jax", "adam_4_devices_over_1", "kfac_4_devices_over_1",
               "thermo_kfac_4_devices_over_1"],
    "convergence": ["tngd_steps_to_90_over_adam", "thermo_kfac_steps_to_90_over_adam", "tngd_steps_to_95_over_adam",
                    "thermo_kfac_steps_to_95_over_adam"],
    "memory": ["tngd_n1e6_peak_gib"],
}


def test_timing_helpers_interleave_and_summarise():
    calls = []
    times = _timing.interleaved({"a": lambda s: calls.append(("a", s)) or 1.0,
                                 "b": lambda s: calls.append(("b", s)) or 2.0}, repeats=2)
    assert calls == [("a", 1), ("b", 1), ("a", 2), ("b", 2)]
    stats = {k: _timing.summary(v) for k, v in times.items()}
    assert _timing.ratio(stats["b"], stats["a"]) == 2.0 and _timing.ratio(None, stats["a"]) is None


@pytest.fixture(scope="module")
def steps():
    return bench.section_steps(True, repeats=1, names=("adam", "tngd_t50"), image=8, batch=4, channels=2, hidden=4,
                               verbose=False, min_call_s=0.01)


def test_step_section_on_a_tiny_cnn(steps):
    result = steps
    assert set(result["ratios"]) == set(result["ratios_min"]) == {"tngd_t50_step_over_adam"}
    tngd = result["results"]["tngd_t50"]
    assert tngd["step_min_s"] > 0 and tngd["model_calls"] > 1 and tngd["modeled_time_s"] > 0
    assert tngd["peak_bytes"] is None or tngd["peak_bytes"] > 0
    assert "adam" in bench.bench_tngd.table(result)


def test_scaling_section_skips_dense_ngd_above_its_limit():
    result = bench.section_scaling(True, repeats=1, sizes=(300, 1200), inputs=8, outputs=3, batch=4,
                                   cg_iterations=2, dense_max_n=500, include=("adam", "ngd", "ngd_cg"))
    small, large = result["rows"]
    assert "ngd" in small["optimizers"] and "ngd" in large["skipped"]
    for row in result["rows"]:
        for name in ("adam", "ngd_cg"):
            entry = row["optimizers"][name]
            assert entry["wall_s"]["min_s"] > 0 and entry["modeled_time_s"] > 0
    assert "skipped" in bench.scaling_report(result)


def test_memory_section_measures_xla_and_rss_of_a_small_tngd_step():
    result = bench.section_memory(True, hidden=16, inputs=12, outputs=3, batch=4, subprocess_rss=False)
    assert result["xla"]["peak_bytes"] > 0 and result["setting"]["b_dz"] == 12
    probe = bench.memory_probe(hidden=16, inputs=12, outputs=3, batch=4)
    assert probe["xla"]["peak_bytes"] > 0 and probe["step_s"] > 0


def test_ou_section_without_the_public_package():
    result = bench.section_ou(True, repeats=1, public=False, path_sizes=(8,), krylov_sizes=(8,), euler_d=8,
                              law=False)
    assert result["ratio_min"] is None and "not requested" in result["reason"]
    assert result["raw"]["ou_path"][0]["ours"]["min_s"] > 0


@pytest.fixture
def no_venv_dir(tmp_path):
    """A cache directory under which no virtual environment can be created (it is a file): kfac-jax is skipped."""
    blocker = tmp_path / "file"
    blocker.write_text("")
    return blocker


def test_kfac_jax_section_gives_a_reason_when_unavailable(no_venv_dir):
    result = bench.section_kfac_jax(True, cache_dir=no_venv_dir)
    assert result["kfac_step_over_kfac_jax"] is None and result["reason"]


@pytest.fixture(scope="module")
def sharding():
    import bench_sharding

    return bench_sharding.sharding_ratio(True, devices=2, hidden=16, batch=8)


def test_sharding_section_times_two_host_devices_against_one(sharding):
    import bench_sharding

    assert sharding["reason"] is None and set(sharding["ratios"]) == {"adam", "thermo_kfac"}
    assert all(ratio > 0 for ratio in sharding["ratios"].values()) and sharding["setting"]["devices"] == 2
    assert "| thermo_kfac |" in bench_sharding.report(sharding)


def test_convergence_bookkeeping():
    records = [{"step": 5, "test_accuracy": 0.5, "modeled_time_s": 1.0, "wall_time_s": 0.1},
               {"step": 10, "test_accuracy": 0.92, "modeled_time_s": 2.0, "wall_time_s": 0.2}]
    assert bench.first_reaching(records, 0.9)["step"] == 10 and bench.first_reaching(records, 0.95) is None
    assert bench.median_or_none([10, None, 20]) == 20 and bench.median_or_none([10, None, None]) is None


def test_assembled_json_has_every_documented_key_and_a_reason_for_each_null(steps, sharding, no_venv_dir):
    sections = {"steps": steps, "kfac_jax": bench.section_kfac_jax(True, cache_dir=no_venv_dir),
                "sharding": sharding}
    meta = {"date": "today", "command": "python scripts/bench.py", "git_sha": None, "quick": True,
            "machine": _timing.machine(), "load_avg_start": 0.0, "load_avg_end": 0.0, "elapsed_s": 1.0}
    result = bench.assemble(sections, {"_skipped": {"ou": "test"}}, meta)
    for group, keys in REQUIRED_KEYS.items():
        for key in keys:
            assert key in result[group], f"{group}.{key}"
            if result[group][key] is None:
                assert result["reasons"].get(f"{group}.{key}"), f"null {group}.{key} without a reason"
    assert result["ratios"]["tngd_t50_step_over_adam"] > 0
    assert set(result["targets"]) == set(bench.TARGETS)
    json.dumps(result, default=str)
    text = bench.report(result)
    assert "## Targets" in text and "tngd_t50_step_le_10x_adam" in text and "4 host devices over 1" in text


@pytest.mark.slow
def test_quick_convergence_runs_on_digits(tmp_path):
    result = bench.section_convergence(True, seeds=1, runs_dir=str(tmp_path), labels=("adam",))
    adam = result["tasks"]["digits"]["optimizers"]["adam"]
    assert adam["seeds"][0]["steps"] == 300


def test_kfac_section_finds_every_optimizer_it_reports():
    """Every optimizer bench.py reports from the K-FAC section is one of scripts/bench_kfac.py's (quick set)."""
    import bench_kfac

    predict = lambda params, x: x @ params
    available = bench_kfac.optimizers(predict, jnp.zeros((4, 3)), True)
    assert {ours: bench.kfac_name(available, ours) for ours in bench.KFAC_WANTED} == {
        "adam": "adam", "kfac": "kfac ggn_curvature_prop",
        "thermo_kfac": "thermo_kfac solve ideal ggn_curvature_prop",
        "thermo_kfac_8bit": "thermo_kfac solve 8-bit ggn_curvature_prop",
        "kfac_ggn": "kfac", "thermo_kfac_ggn": "thermo_kfac solve ideal"}
