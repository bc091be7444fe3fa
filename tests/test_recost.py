"""python -m experiments.recost: a finished run priced again from its work records reproduces its own logged times
under the hardware it ran with, prices other hardware without re-running, and refuses what it cannot price."""

import json

import numpy as np
import pytest

from experiments import recost, rundir
from experiments.run import run
from test_runner import QUIET, make_config


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A TNGD run and an Adam run on digits, 12 steps each, evaluated every 4."""
    root = tmp_path_factory.mktemp("recost")
    dirs = {}
    for name in ("tngd", "adam"):
        dirs[name] = str(root / name)
        run(make_config(f"optimizer={name}", "run.max_steps=12", "run.eval_every=4", *QUIET), dirs[name])
    return dirs


def test_recost_under_the_runs_own_hardware_reproduces_its_logged_times(finished, tmp_path):
    out = tmp_path / "same"
    assert recost.main([finished["tngd"], finished["adam"], "hardware=a100+paper", "--target", "0.5",
                        "--out", str(out)]) == 0
    table = json.loads((out / "summary.json").read_text())["runs"]
    for path in finished.values():
        last = rundir.read_metrics(path)[-1]
        row = table[path]
        for account in ("modeled", "paper"):
            # The same records priced by the same formulas, summed in the same order: equal to rounding.
            assert row[account]["total_time_s"] == pytest.approx(last[f"{account}_time_s"], rel=1e-12)
            assert row[account]["total_energy_j"] == pytest.approx(last[f"{account}_energy_j"], rel=1e-12)
    assert (out / "curves.png").stat().st_size > 0 and "| tngd |" in (out / "summary.md").read_text()


def test_recost_under_other_hardware_changes_only_the_prices(finished, tmp_path):
    base, fast = tmp_path / "base", tmp_path / "fast"
    recost.main([finished["tngd"], "hardware=a100+paper", "--out", str(base)])
    recost.main([finished["tngd"], "hardware=a100+paper", "analog.link_bandwidth_bps=5e12", "--out", str(fast)])
    slow_row = json.loads((base / "summary.json").read_text())["runs"][finished["tngd"]]
    fast_row = json.loads((fast / "summary.json").read_text())["runs"][finished["tngd"]]
    slow_terms, fast_terms = slow_row["modeled_terms_per_step_s"], fast_row["modeled_terms_per_step_s"]
    # 100x the bandwidth: programming and transfers take 1/100 of the time; the rest is unchanged.
    assert fast_terms["program_s"] == pytest.approx(slow_terms["program_s"] / 100, rel=1e-9)
    assert fast_terms["transfer_s"] == pytest.approx(slow_terms["transfer_s"] / 100, rel=1e-9)
    for term in ("passes_s", "digital_s", "analog_s"):
        assert fast_terms[term] == pytest.approx(slow_terms[term], rel=1e-12)
    assert fast_row["steps"] == slow_row["steps"] == 12


def test_recost_refuses_what_it_cannot_price(finished, tmp_path, capsys):
    old = tmp_path / "old"
    old.mkdir()
    records = [{k: v for k, v in r.items() if k != "work"} for r in rundir.read_metrics(finished["adam"])]
    (old / "metrics.jsonl").write_text("\n".join(json.dumps(r) for r in records) + "\n")
    cases = [
        ([finished["adam"], "hardware=tpu+paper"], "unknown digital hardware preset 'tpu'"),
        ([finished["adam"], "hardware=a100+paper", "analog.link_bandwidth_bps=-1"], "link_bandwidth_bps must be"),
        ([finished["adam"], "hardware=a100+paper", "digital.peak_flops=0"], "peak_flops must be finite and > 0"),
        ([finished["adam"], "hardware=a100+paper", "analog.tau_s=0"], "tau_s must be finite and > 0"),
        ([finished["adam"], "hardware=a100+paper", "analog.bandwidth=1"], "unknown analog hardware field"),
        ([str(old), "hardware=a100+paper"], "has no work records"),
        ([str(tmp_path / "missing"), "hardware=a100+paper"], "is not a run directory"),
        (["hardware=a100+paper"], "give at least one run directory"),
        ([finished["adam"], "link=5"], "unknown argument 'link=5'"),
    ]
    for argv, message in cases:
        assert recost.main(argv + ["--out", str(tmp_path / "out")]) == 2, argv
        assert message in capsys.readouterr().err, argv


def test_modeled_time_of_a_step_is_the_work_priced(finished):
    """The logged cumulative modeled time is the running sum of the priced per-step work records."""
    records = rundir.read_metrics(finished["tngd"])
    record = recost.RunRecord(finished["tngd"])
    priced = recost.price(record, recost.hw.Hardware.build("a100+paper"))
    np.testing.assert_allclose(np.cumsum(priced["modeled_time_s"]), [r["modeled_time_s"] for r in records],
                               rtol=1e-12)


def test_crossover_time_to_target_is_the_logged_modeled_time_at_the_first_hit(finished):
    """experiments.crossover's affine map ``host + bits / (B links) + analog_tau tau``, evaluated at the analog
    platform the run was priced with (a100 + paper: 50 Gb/s, tau = 1 us), is the run's own cumulative modeled time
    at its first evaluation reaching the target; over the grid it falls with bandwidth and rises with tau."""
    from experiments import crossover, hardware

    digital, analog = hardware.digital_platform("a100"), hardware.analog_platform("paper")
    record = recost.RunRecord(finished["tngd"])
    first_eval = next(r for r in rundir.read_metrics(finished["tngd"]) if "test_accuracy" in r and r["step"] > 0)
    target = first_eval["test_accuracy"]
    hit = crossover.to_target(record, target, digital, analog)
    assert hit.step == first_eval["step"] and hit.link_bits > 0 and hit.analog_tau > 0
    at_paper = hit.time(np.array(analog.link_bandwidth_bps), np.array(analog.tau_s), analog.links)
    assert float(at_paper) == pytest.approx(first_eval["modeled_time_s"], rel=1e-9)
    grid = hit.time(crossover.BANDWIDTHS[None, :], crossover.TAUS[:, None], analog.links)
    assert (np.diff(grid, axis=1) < 0).all() and (np.diff(grid, axis=0) > 0).all()
    assert crossover.to_target(record, 1.01, digital, analog).step is None  # never reached: inf on the grid


def test_crossover_break_even_and_maps_where_a_side_never_reaches_the_target(tmp_path):
    from experiments import crossover

    ratio = np.broadcast_to(1e10 / crossover.BANDWIDTHS[None, :], (crossover.TAUS.size, crossover.BANDWIDTHS.size))
    # the ratio is 1 at 1e10 bit/s; the grid has 20 points a decade, so the first point at or below 1 is within 1.12x
    assert crossover.break_even_bandwidth(ratio, 1e-6) == pytest.approx(1e10, rel=0.13)
    assert crossover.break_even_bandwidth(ratio * 1e6, 1e-6) is None
    never = {"time": np.full(ratio.shape, np.inf), "energy": np.full(crossover.TAUS.shape, np.nan), "at_paper": np.inf}
    maps = {"tngd / adam, a100": {"time": ratio, "energy": np.ones(crossover.TAUS.size), "at_paper": 1.0},
            "thermo-kfac / adam, a100": never}
    crossover.plot_maps(maps, str(tmp_path / "maps.png"), "test")
    assert (tmp_path / "maps.png").stat().st_size > 0
