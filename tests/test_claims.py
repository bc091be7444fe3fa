"""The reproduction table's verdicts (experiments.claims) on synthetic runs whose answers are known by
construction: a claim's numbers, its verdict, and the note that marks runs which are not the figure's full form."""

import numpy as np

from experiments import claims, figures


def run(accuracies, losses=None, steps=None, max_steps=None, stopped=None, paper_time_per_step=1.0):
    """One seed's records: evaluations every 10 steps with the given accuracies and a constant account rate."""
    steps = steps or [10 * (i + 1) for i in range(len(accuracies))]
    losses = losses or [1.0] * len(accuracies)
    metrics = [{"step": s, "test_accuracy": a, "train_loss": l, "paper_time_s": paper_time_per_step * s}
               for s, a, l in zip(steps, accuracies, losses)]
    return {"summary": {"run_control": {"run.max_steps": max_steps}}, "metrics": metrics, "stopped": stopped}


def curve(*runs):
    return claims.Curve("legend", list(runs))


def test_first_reaching_and_spread_count_seeds_that_never_get_there():
    c = curve(run([0.5, 0.91, 0.95]), run([0.5, 0.6, 0.92]), run([0.1, 0.2, 0.3]))
    np.testing.assert_array_equal(c.first_reaching(0.9), [20, 30, np.inf])
    assert claims.spread(c.first_reaching(0.9), ".3g") == "25 ± 5 (2 seeds; 1 never)"
    assert claims.spread(np.array([np.inf])) == "never (1 seeds)"


def test_euler_claim_does_not_hold_when_a_seed_stops():
    stopped = curve(run([0.5], stopped="failed at step 35: Euler-Maruyama unstable"), run([0.5, 0.9]))
    ours, verdict, _ = claims.fig3_euler({"tngd": stopped})
    assert verdict == "does not hold" and ours.startswith("1 of 2 seeds stop: failed at step 35")
    assert claims.fig3_euler({"tngd": curve(run([0.5, 0.9]))})[1] == "holds"
    assert claims.fig3_euler({})[1] == "not run"


def test_runtime_claim_compares_time_to_target_in_the_paper_accounting():
    adam = curve(run([0.5, 0.9]), run([0.5, 0.9]))  # 90% at step 20, 1 s per step: 20 s
    fast = curve(*(run([0.9], paper_time_per_step=1.5) for _ in range(2)))  # step 10 at 1.5 s per step: 15 s
    slow = curve(*(run([0.9], paper_time_per_step=3.0) for _ in range(2)))  # 30 s
    assert claims.fig3_runtime({"adam": adam, "tngd-exact-law": fast})[1] == "holds"
    ours, verdict, _ = claims.fig3_runtime({"adam": adam, "tngd-exact-law": slow})
    assert verdict == "does not hold" and "TNGD 3x Adam's time per iteration" in ours


def test_kfac_bits_share_of_the_advantage_kept():
    # Adam reaches 90% at step 100, K-FAC at 20 (an advantage of 80 steps); b bits reach it at 20 + 8 (16 - b) / 2
    reach = lambda step: curve(run([0.5] * (step // 10 - 1) + [0.95]))
    c = {"adam": reach(100), "kfac": reach(20), "thermo-kfac-ideal": reach(20)}
    for b, step in zip(figures.BITS, (100, 80, 40, 30, 20)):
        c[f"thermo-kfac-{b}bit"] = reach(step)
    c["thermo-kfac-4bit"] = curve(run([0.5] * 5))  # never reaches 90%
    ours, verdict, reason = claims.kfac_bits(c)
    # kept = (100 - step) / 80: 6 bits 25%, 8 bits 75%, 12 bits 88%, 16 bits 100%
    assert "4 bits none (never reaches 90%), 6 bits 25%, 8 bits 75%, 12 bits 88%, 16 bits 100%" in ours
    assert verdict == "holds" and reason.startswith("at 8 bits and more")


def test_form_note_marks_fewer_seeds_and_capped_runs():
    fig3 = figures.FIGURES["fig3"]  # 5 seeds, the task's epochs
    full = {"adam": curve(*(run([0.9]) for _ in range(5)))}
    assert claims.form_note(fig3, full) == ""
    few = {"adam": curve(*(run([0.9]) for _ in range(5))), "tngd": curve(*(run([0.9]) for _ in range(3)))}
    assert claims.form_note(fig3, few) == " [3 of the figure's 5 seeds on some curves]"
    capped = {"adam": curve(*(run([0.9], max_steps=100) for _ in range(5)))}
    assert "runs capped at 100 steps" in claims.form_note(fig3, capped)
    bits = figures.FIGURES["kfac-bits"]  # its own cap of 300 steps is its full form
    assert claims.form_note(bits, {"adam": curve(*(run([0.9], max_steps=300) for _ in range(3)))}) == ""


def test_updating_some_figures_keeps_the_other_rows(monkeypatch):
    """``--figures fig7``: fig7's row is recomputed in place, the rows of figures not asked for stay as they were."""
    previous = "\n".join(claims.HEADER + ["| Fig. 3 | TNGD and Adam both reach about 94% test accuracy | old | **holds** | x |",
                                          "| Fig. 7 | at t = tau, kappa0 <= 0.01 barely changes training | old | **not run** |  |"])
    monkeypatch.setattr(claims, "reproduction_rows", lambda args, names: [
        "| Fig. 7 | at t = tau, kappa0 <= 0.01 barely changes training | new | **holds** | y |"] if names == ["fig7"] else [])
    table = claims.reproduction_table(None, ["fig7"], previous).splitlines()
    assert table[:2] == claims.HEADER
    assert table[2].endswith("| old | **holds** | x |") and table[3].endswith("| new | **holds** | y |")
    assert len(table) == 4


def test_noise_claim_compares_small_kappa0_with_noiseless():
    flat = lambda loss: curve(*(run([0.9] * 30, losses=[loss] * 30) for _ in range(2)))
    c = {"tngd-t1-kappa0.1": flat(0.5), "tngd-t1-kappa0.01": flat(0.30), "tngd-t1-kappa0.001": flat(0.29),
         "tngd-t1-noiseless": flat(0.29)}
    ours, verdict, _ = claims.fig7(c)
    assert verdict == "holds" and ours.startswith("kappa0 = 0.1: 0.5")
    c["tngd-t1-kappa0.01"] = flat(0.4)  # 0.11 above noiseless: beyond two seed spreads (floored at 0.01)
    assert claims.fig7(c)[1] == "holds in part"
    c["tngd-t1-kappa0.001"] = flat(0.4)
    assert claims.fig7(c)[1] == "does not hold"


def test_qa_claim_reads_a_stopped_euler_curve_from_its_exact_law_twin():
    def qa(loss, f1, stopped=None):
        c = curve(run([0.0] * 60, losses=[loss] * 60, stopped=stopped))
        c.runs[0]["metrics"][-1]["test_f1"] = f1
        return c

    c = {"adam": qa(1.6, 51.0), "tngd": qa(4.0, 9.0, stopped="failed at step 102: unstable"),
         "tngd-exact-law": qa(2.0, 40.0), "tngd-adam": qa(4.2, 9.0, stopped="failed at step 20: unstable"),
         "tngd-adam-exact-law": qa(1.4, 55.0)}
    ours, verdict, _ = claims.fig5(c)
    assert verdict == "holds" and "tngd (exact law): loss 2.000" in ours and "F1 55.0" in ours
    assert "tngd by Euler-Maruyama: failed at step 102" in ours


def test_smoothed_loss_reaches_a_target_at_the_window_end():
    # losses 3, 3, 1, 1, 1: the 2-step averages 3, 2, 1, 1 end at steps 20, 30, 40, 50
    # a run shorter than the window (one record at a low loss) has no average yet: it never gets there
    c = curve(run([0.0] * 5, losses=[3.0, 3.0, 1.0, 1.0, 1.0]), run([0.0] * 5, losses=[3.0] * 5),
              run([0.0], losses=[0.1]))
    np.testing.assert_array_equal(c.first_smoothed_below(2.0, 2), [30, np.inf, np.inf])


def test_qa_kfac_bits_counts_steps_to_adams_final_loss():
    """Every curve is a ramp down to a floor; a run that fails at its first refresh never gets to Adam's final loss
    and keeps none of the advantage."""
    def ramp(drop_every, floor, stopped=None, f1=50.0):
        losses = [max(floor, 30.0 - i // drop_every) for i in range(300)]
        c = curve(run([0.0] * 300, losses=losses, steps=list(range(1, 301)), stopped=stopped))
        c.runs[0]["metrics"][-1]["test_f1"] = f1
        return c

    adam = ramp(10, 1.0)  # 30 - i // 10: its last 50 steps hold 5, 4, 3, 2, 1 ten times each, averaging 3.0 at step 300
    # K-FAC's max(0.5, 30 - i // 2) first averages 3.0 or less over 50 steps at step 88: an advantage of 212 steps
    c = {"adam": adam, "kfac": ramp(2, 0.5), "thermo-kfac-ideal": ramp(2, 0.5)}
    for b in figures.BITS:
        c[f"thermo-kfac-{b}bit"] = ramp(2, 0.5) if b >= 12 else curve(run(
            [0.0], losses=[30.0], steps=[1], stopped="failed at step 0: not positive definite"))
    ours, verdict, reason = claims.kfac_bits_qa(c)
    assert "Adam's final training loss 3.000" in ours and "Adam 300, K-FAC 88" in ours
    assert "8 bits none (never gets there)" in ours and "12 bits 100%" in ours
    # a stopped run's F1 is where it stopped (its last evaluation is the untrained model's); the cause is said once
    assert "thermo-kfac-8bit failed at step 0, thermo-kfac-12bit 50.0" in ours
    assert ours.count("not positive definite") == 1 and ours.endswith("; stopped: not positive definite")
    assert verdict == "holds in part" and reason.startswith("at 12 bits")


def test_qa_kfac_bits_without_a_kfac_advantage_does_not_hold():
    """Digital K-FAC never reaching Adam's final loss leaves no advantage to keep: the row says "never", not inf."""
    flat = curve(run([0.0] * 60, losses=[4.8] * 60, steps=list(range(1, 61))))
    falling = curve(run([0.0] * 60, losses=[4.8 - i / 20 for i in range(60)], steps=list(range(1, 61))))
    c = {label: flat for label in claims._bits_labels()} | {"adam": falling}
    ours, verdict, reason = claims.kfac_bits_qa(c)
    assert "Adam 60, K-FAC never" in ours and "inf" not in ours
    assert verdict == "does not hold" and reason == "digital K-FAC has no advantage over Adam to keep on this task"


def _fig2_row(n, times, tngd_paper):
    return {"n_params": n, "optimizers": {**{m: {"wall_s": {"median_s": t}} for m, t in times.items()},
                                          "tngd": {"paper_time_s": tngd_paper}}}


def test_fig2_claim_is_the_slowest_gap_of_the_second_order_methods():
    rows = [_fig2_row(10_000, {"ngd": 10.0, "ngd_cg": 5.0, "ngd_woodbury": 4.0}, 0.04),  # 250x, 125x, 100x
            _fig2_row(100_000, {"ngd_cg": 8.0, "ngd_woodbury": 1.0}, 0.05)]  # 160x, 20x
    record = {"rows": rows, "setting": {"repeats": 5}}
    ours, verdict, reason = claims.fig2(record)
    assert "N = 10,000: dense NGD 250x, NGD-CG 125x, NGD-Woodbury 100x" in ours and "NGD-Woodbury 20x" in ours
    assert verdict == "holds in part" and reason.startswith("NGD-Woodbury at N = 100,000 takes 20x")
    rows[1]["optimizers"]["ngd_woodbury"]["wall_s"]["median_s"] = 2.0  # 40x: within a factor 3 of 100x
    assert claims.fig2(record)[1] == "holds"
    assert claims.fig2(None)[1] == "not run"


def test_kfac_width_claim_reads_the_trend_of_the_advantage():
    n = [64, 256, 1024]
    rise = [0.1, 0.2, 0.4]  # a = digital / device grows as n^0.5
    flat = [10.0, 5.0, 10.0]  # ends where it starts: no growth
    rows = [{"n": k, "kappa_A": 5.0 + i, "digital p": r, "thermodynamic p": 1.0, "digital q": f,
             "thermodynamic q": 1.0} for i, (k, r, f) in enumerate(zip(n, rise, flat))]
    ours, verdict, reason = claims.kfac_width({"rows": rows, "platforms": ["p", "q"]})
    assert "p: digital / device time 0.1 at n = 64 to 0.4 at n = 1024 (a ~ n^0.50)" in ours
    assert verdict == "holds in part" and reason == "the advantage grows with n on p, not on q"


def test_study_rows_read_the_records_beside_the_figures(tmp_path):
    import argparse
    import json

    record = {"rows": [_fig2_row(10_000, {"ngd_cg": 5.0}, 0.01)], "setting": {"repeats": 3}}
    (tmp_path / "fig2.json").write_text(json.dumps(record))
    args = argparse.Namespace(out=str(tmp_path), data_dir="/mnist", data_path=None)
    rows = claims.reproduction_rows(args, ["fig2", "kfac-width"])
    assert rows[0].startswith("| Fig. 2 |") and "NGD-CG 500x" in rows[0] and "**holds**" in rows[0]
    assert "kfac-width.json missing" in rows[1] and "**not run**" in rows[1]
