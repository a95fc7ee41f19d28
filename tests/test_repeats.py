"""Repeated seeds: one run per (variant, seed), aggregates across seeds and paired comparisons of variants."""
from __future__ import annotations

from medattn.store.rundir import ExperimentDir

from .conftest import paired_experiment


def test_seeds_run_each_pair_aggregate_and_compare(write, cli, tmp_path):
    exp_file = write("rep.yaml", paired_experiment(
        "rep", tmp_path / "runs", "{n_train: 16, n_val: 8, n_test: 12}",
        "{checkpoints: [last], bootstrap: {resamples: 0}}", "[roc_auc, accuracy]"))
    code, out, err = cli("run", exp_file, "--set", "seeds=[0,1]")
    assert code == 0, err
    exp = ExperimentDir(tmp_path / "runs" / "rep")
    assert sorted(r.root.relative_to(exp.root).as_posix() for r in exp.runs()) == [
        "none/seed-0", "none/seed-1", "se/seed-0", "se/seed-1"]
    assert exp.run("se", 1).read_config()["seed"] == 1 and "seeds" not in exp.run("se", 1).read_config()
    summary = exp.read_table("summary")
    assert {(r["variant"], r["seed"]) for r in summary} == {("none", "0"), ("none", "1"), ("se", "0"), ("se", "1")}
    agg = [r for r in exp.read_table("aggregate") if r["metric"] == "accuracy" and r["table"] == "summary"]
    assert {r["variant"] for r in agg} == {"none", "se"} and all(r["n"] == "2" for r in agg)
    for r in agg:
        means = [float(s["accuracy"]) for s in summary if s["variant"] == r["variant"]]
        assert abs(float(r["mean"]) - sum(means) / 2) < 1e-9
    comp = exp.read_table("comparisons")
    assert {(r["variant"], r["reference"], r["metric"]) for r in comp} == {("se", "none", "roc_auc"),
                                                                          ("se", "none", "accuracy")}
    assert all(0 <= float(r["p"]) <= 1 and float(r["p_adjusted"]) >= float(r["p"]) for r in comp)
    # two seeds on the same images: OR-Hillis, whose denominator degrees of freedom are at least r - 1 = 1
    assert all(r["test"].startswith("OR-Hillis") and float(r["ddf"]) >= 1 for r in comp)
    assert exp.table("comparisons", "md").is_file() and exp.table("aggregate", "md").is_file()
    # a grid slice skips the (variant, seed) pairs that are done
    code, out, err = cli("run", exp_file, "--set", "seeds=[0,1]", "--shard", "0/1")
    assert code == 0 and out.count("complete") == 4 and "0 to run" in out


def test_paper_grid_with_seeds_plans_one_run_per_variant_and_seed(tmp_path):
    from pathlib import Path

    from medattn.config import load_experiment
    from medattn.runs.plan import plan

    preset = Path(__file__).resolve().parents[1] / "experiments" / "goncalves2021" / "cbis_ddsm.yaml"
    exp = load_experiment(preset, [f"dataset.params.root={tmp_path}", "seeds=[0,1]", f"output_dir={tmp_path}"])
    runs = plan(exp, writes=False)
    assert len(runs) == 2 * len(exp.variants) == 24
    labels = {run.label for run, _ in runs}
    assert "densenet121_mldamdaug/seed-1" in labels
    assert all(run.config["seed"] == run.seed and "seeds" not in run.config for run, _ in runs)
