"""The benchmark suite (experiments.bench) on tiny sizes: every cheap piece of its API runs and the JSON keeps its
documented keys.

No timing assertions (the machine is shared): only that the pieces run, return what the report and the keys
need, and that a null always comes with its reason.
"""

import json

import jax.numpy as jnp
import pytest

from experiments.bench import (
    convergence, kfac, kfac_jax, memory, ou, report, results, scaling, sharding, steps, timing,
)
from experiments.bench.workers import clock

REQUIRED_KEYS = {
    "ratios": ["ou_exact_over_thermox", "muon_step_over_adam", "sophia_step_over_adam", "tngd_t50_step_over_adam", "tngd_mc_fisher_step_over_adam",
               "tngd_adam_step_over_adam", "thermo_kfac_step_over_adam", "kfac_step_over_kfac_jax",
               "thermo_kfac_step_over_kfac_jax", "adam_4_devices_over_1", "kfac_4_devices_over_1",
               "thermo_kfac_4_devices_over_1"],
    "convergence": ["tngd_steps_to_90_over_adam", "thermo_kfac_steps_to_90_over_adam", "tngd_steps_to_95_over_adam",
                    "thermo_kfac_steps_to_95_over_adam"],
    "memory": ["tngd_n1e6_peak_gib"],
}


def test_timing_helpers_interleave_and_summarise():
    calls = []
    times = clock.interleaved({"a": lambda s: calls.append(("a", s)) or 1.0,
                                 "b": lambda s: calls.append(("b", s)) or 2.0}, repeats=2)
    assert calls == [("a", 1), ("b", 1), ("a", 2), ("b", 2)]
    stats = {k: clock.summary(v) for k, v in times.items()}
    assert clock.ratio(stats["b"], stats["a"]) == 2.0 and clock.ratio(None, stats["a"]) is None


@pytest.fixture(scope="module")
def cnn_steps():
    return steps.section(True, repeats=1, names=("adam", "tngd_t50"), image=8, batch=4, channels=2, hidden=4,
                               verbose=False, min_call_s=0.01)


def test_step_section_on_a_tiny_cnn(cnn_steps):
    result = cnn_steps
    assert set(result["ratios"]) == set(result["ratios_min"]) == {"tngd_t50_step_over_adam"}
    tngd = result["results"]["tngd_t50"]
    assert tngd["step_min_s"] > 0 and tngd["model_calls"] > 1 and tngd["modeled_time_s"] > 0
    assert tngd["peak_bytes"] is None or tngd["peak_bytes"] > 0
    assert "adam" in steps.table(result)


def test_step_section_times_muon_and_sophia_beside_adam():
    """The runner's Muon and Sophia-G in the step-cost section; Sophia-G's model calls are the mean over its
    refresh period (the gradient, plus a forward and a reverse pass every 10 steps)."""
    result = steps.section(True, repeats=1, names=("adam", "muon", "sophia"), image=8, batch=4, channels=2,
                           hidden=4, verbose=False, min_call_s=0.01)
    assert set(result["ratios"]) == {"muon_step_over_adam", "sophia_step_over_adam"}
    muon, sophia = result["results"]["muon"], result["results"]["sophia"]
    assert muon["model_calls"] == 1.0 and sophia["model_calls"] == pytest.approx(1.2)
    assert muon["modeled_time_s"] > 0 and sophia["modeled_time_s"] > 0
    assert result["results"]["sophia"]["stats"]["steps_per_call"] % steps.PERIODS["sophia"] == 0


def test_scaling_section_skips_dense_ngd_above_its_limit():
    result = scaling.section(True, repeats=1, sizes=(300, 1200), inputs=8, outputs=3, batch=4,
                                   cg_iterations=2, dense_max_n=500, include=("adam", "ngd", "ngd_cg"))
    small, large = result["rows"]
    assert "ngd" in small["optimizers"] and "ngd" in large["skipped"]
    for row in result["rows"]:
        for name in ("adam", "ngd_cg"):
            entry = row["optimizers"][name]
            assert entry["wall_s"]["min_s"] > 0 and entry["modeled_time_s"] > 0
    assert "skipped" in scaling.markdown(result)


def test_memory_section_measures_xla_and_rss_of_a_small_tngd_step():
    result = memory.section(True, hidden=16, inputs=12, outputs=3, batch=4, subprocess_rss=False)
    assert result["xla"]["peak_bytes"] > 0 and result["setting"]["b_dz"] == 12
    probe = memory.probe(hidden=16, inputs=12, outputs=3, batch=4)
    assert probe["xla"]["peak_bytes"] > 0 and probe["step_s"] > 0


def test_ou_section_without_the_public_package():
    result = ou.section(True, repeats=1, public=False, path_sizes=(8,), krylov_sizes=(8,), euler_d=8,
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
    result = kfac_jax.section(True, cache_dir=no_venv_dir)
    assert result["kfac_step_over_kfac_jax"] is None and result["reason"]


@pytest.fixture(scope="module")
def sharded():
    return sharding.section(True, devices=2, hidden=16, batch=8)


def test_sharding_section_times_two_host_devices_against_one(sharded):
    assert sharded["reason"] is None and set(sharded["ratios"]) == {"adam", "thermo_kfac"}
    assert all(ratio > 0 for ratio in sharded["ratios"].values()) and sharded["setting"]["devices"] == 2
    assert "| thermo_kfac |" in sharding.report(sharded)


def test_convergence_bookkeeping():
    records = [{"step": 5, "test_accuracy": 0.5, "modeled_time_s": 1.0, "wall_time_s": 0.1},
               {"step": 10, "test_accuracy": 0.92, "modeled_time_s": 2.0, "wall_time_s": 0.2}]
    assert convergence.first_reaching(records, 0.9)["step"] == 10 and convergence.first_reaching(records, 0.95) is None
    assert convergence.median_or_none([10, None, 20]) == 20 and convergence.median_or_none([10, None, None]) is None


def test_assembled_json_has_every_documented_key_and_a_reason_for_each_null(cnn_steps, sharded, no_venv_dir):
    sections = {"steps": cnn_steps, "kfac_jax": kfac_jax.section(True, cache_dir=no_venv_dir),
                "sharding": sharded}
    meta = {"date": "today", "command": "python scripts/bench.py", "git_sha": None, "quick": True,
            "machine": timing.machine(), "load_avg_start": 0.0, "load_avg_end": 0.0, "elapsed_s": 1.0}
    result = results.assemble(sections, {"_skipped": {"ou": "test"}}, meta)
    for group, keys in REQUIRED_KEYS.items():
        for key in keys:
            assert key in result[group], f"{group}.{key}"
            if result[group][key] is None:
                assert result["reasons"].get(f"{group}.{key}"), f"null {group}.{key} without a reason"
    assert result["ratios"]["tngd_t50_step_over_adam"] > 0
    assert set(result["targets"]) == set(results.load_targets())
    json.dumps(result, default=str)
    text = report.report(result)
    assert "## Targets" in text and "tngd_t50_step_le_10x_adam" in text and "4 host devices over 1" in text


@pytest.mark.slow
def test_quick_convergence_runs_on_digits(tmp_path):
    result = convergence.section(True, seeds=1, runs_dir=str(tmp_path), labels=("adam",))
    adam = result["tasks"]["digits"]["optimizers"]["adam"]
    assert adam["seeds"][0]["steps"] == 300


def test_kfac_section_finds_every_optimizer_it_reports():
    """Every optimizer the K-FAC section reports is one of experiments.bench.kfac.optimizers() (quick set)."""
    predict = lambda params, x: x @ params
    available = kfac.optimizers(predict, jnp.zeros((4, 3)), True)
    assert {ours: kfac.kfac_name(available, ours) for ours in kfac.WANTED} == {
        "adam": "adam", "kfac": "kfac ggn_curvature_prop",
        "thermo_kfac": "thermo_kfac solve ideal ggn_curvature_prop",
        "thermo_kfac_8bit": "thermo_kfac solve 8-bit ggn_curvature_prop",
        "kfac_ggn": "kfac", "thermo_kfac_ggn": "thermo_kfac solve ideal"}


def test_targets_are_read_from_the_data_file_and_a_bad_entry_is_named(tmp_path):
    definitions = results.load_targets()
    assert definitions["tngd_t50_step_le_10x_adam"].condition == "ratios.tngd_t50_step_over_adam <= 10"
    assert definitions["ou_sampler_at_least_public_thermox"].condition.endswith("<= 1 (ours at least as fast)")
    memory_target = {"m": definitions["tngd_n1e6_memory_fits_24_gib"]}
    fits = {"memory": {"tngd_n1e6_peak_gib": 1.0, "tngd_n1e6_rss_peak_gib": 2.0}, "reasons": {}}
    too_big = {"memory": {"tngd_n1e6_peak_gib": 1.0, "tngd_n1e6_rss_peak_gib": 30.0}, "reasons": {}}
    assert results.targets(fits, memory_target)["m"]["met"] is True
    assert results.targets(too_big, memory_target)["m"] == {"target": "memory.tngd_n1e6_peak_gib <= 24",
                                                            "value": 1.0, "met": False, "rss_peak_gib": 30.0}
    at_least = {"y": results.Target("y", "ratios.a", 2.0, "at_least")}
    bench = {"ratios": {"a": 3.0}, "ratios_median": {"a": 1.0}, "reasons": {}}
    assert results.targets(bench, at_least)["y"] == {"target": "ratios.a >= 2", "value": 3.0, "met": True,
                                                     "value_of_medians": 1.0, "met_by_medians": False}
    bad = tmp_path / "targets.toml"
    for text, message in (('key = "ratios.a"\nat_most = 1\nat_least = 0', "target 'x' .* exactly one numeric bound"),
                          ('key = "speed"\nat_most = 1', "target 'x': key must be a bench.json key"),
                          ('key = "ratios.a"\nat_most = 1\nbound = 2', r"target 'x' .* unknown fields \['bound'\]")):
        bad.write_text("[x]\n" + text + "\n")
        with pytest.raises(ValueError, match=message):
            results.load_targets(bad)

