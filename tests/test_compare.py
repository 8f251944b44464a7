"""Paired comparison of two runs: DeLong's AUC test, the sign-flip accuracy test, `decoder compare`."""

from __future__ import annotations

import json
from math import comb
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from test_abide_reader import make_layout

from decoder.cli import main
from decoder.errors import DataError
from decoder.evaluation.compare import (auc_interval, compare_runs, corrected_resampled_ttest,
                                        delong_test, paired_sign_flip_test)
from pipelines import run_config

CONFIG = Path(__file__).resolve().parents[1] / "configs" / "abide.yaml"


def _delong_by_definition(y, a, b):
    """AUCs and the variance of their difference from the O(m × n) placement values."""
    y = np.asarray(y, bool)
    comps = []
    for s in (a, b):
        pos, neg = s[y][:, None], s[~y][None, :]
        psi = (pos > neg) + 0.5 * (pos == neg)
        comps.append((psi.mean(), psi.mean(axis=1), psi.mean(axis=0)))
    m, n = y.sum(), (~y).sum()
    s10 = np.cov(np.vstack([comps[0][1], comps[1][1]]))
    s01 = np.cov(np.vstack([comps[0][2], comps[1][2]]))
    s = s10 / m + s01 / n
    return comps[0][0], comps[1][0], s[0, 0] + s[1, 1] - 2 * s[0, 1]


def test_delong_equals_its_definition_with_ties():
    rng = np.random.default_rng(0)
    y = rng.random(120) < 0.4
    a = np.round(y + rng.normal(size=120), 1)          # rounded: many tied scores
    b = np.round(0.5 * y + rng.normal(size=120), 1)
    res = delong_test(y, a, b)
    auc_a, auc_b, var = _delong_by_definition(y, a, b)
    assert res["auc_a"] == pytest.approx(auc_a) and res["auc_b"] == pytest.approx(auc_b)
    assert res["se"] == pytest.approx(np.sqrt(var))
    assert res["diff"] == pytest.approx(auc_b - auc_a)
    lo, hi = res["ci95"]
    assert lo < res["diff"] < hi and hi - lo == pytest.approx(2 * 1.959964 * res["se"])


def test_auc_interval_uses_delongs_variance_and_covers_the_true_auc():
    from scipy.stats import norm
    rng = np.random.default_rng(3)
    y = rng.random(90) < 0.45
    a = np.round(y + rng.normal(size=90), 1)
    auc, _, var = _delong_by_definition(y, a, np.zeros(90))   # a constant adds nothing
    lo, hi = auc_interval(y, a)
    assert (lo + hi) / 2 == pytest.approx(auc) and hi - lo == pytest.approx(
        2 * norm.ppf(0.975) * np.sqrt(var))
    # binormal scores (shift 1): true AUC = Phi(1 / sqrt 2); 95 % of intervals cover it
    truth = norm.cdf(1 / np.sqrt(2))
    covered = []
    for _ in range(400):
        y = rng.random(120) < 0.4
        lo, hi = auc_interval(y, y + rng.normal(size=120))
        covered.append(lo <= truth <= hi)
    assert 0.91 <= np.mean(covered) <= 0.98
    assert auc_interval([1, 0, 0, 0], [0.9, 0.1, 0.2, 0.3]) is None   # one positive
    # perfectly ranked or all tied: DeLong's variance is 0, and no interval beats [1, 1]
    assert auc_interval([1, 1, 0, 0], [0.9, 0.8, 0.1, 0.2]) is None
    assert auc_interval([1, 1, 0, 0], [0.5, 0.5, 0.5, 0.5]) is None
    assert auc_interval([1, 1, 0, 0], [0.9, 0.1, 0.8, 0.2]) is not None  # one pair swapped


def test_delong_p_values_are_calibrated_when_the_models_are_equally_good():
    # two noisy readings of the same signal: correlated scores, equal true AUC
    rng = np.random.default_rng(1)
    ps = []
    for _ in range(400):
        y = rng.random(150) < 0.5
        signal = y + rng.normal(size=150)
        ps.append(delong_test(y, signal + 0.7 * rng.normal(size=150),
                              signal + 0.7 * rng.normal(size=150))["p"])
    rejected = np.mean(np.array(ps) < 0.05)
    assert 0.02 < rejected < 0.09   # ignoring the correlation would give about 0


def test_delong_detects_a_better_model():
    rng = np.random.default_rng(2)
    y = rng.random(400) < 0.5
    res = delong_test(y, y + 2.0 * rng.normal(size=400), y + 0.5 * rng.normal(size=400))
    assert res["diff"] > 0.1 and res["p"] < 1e-4


def test_delong_needs_both_classes():
    with pytest.raises(DataError, match="2 samples of each class"):
        delong_test([1, 1, 1, 0], [0.1, 0.2, 0.3, 0.4], [0.1, 0.2, 0.3, 0.4])


def test_identical_rankings_have_p_one():
    y = np.array([0, 1, 0, 1, 1, 0])
    s = np.array([0.1, 0.9, 0.3, 0.8, 0.4, 0.2])
    res = delong_test(y, s, 2 * s + 1)
    assert res["diff"] == 0 and res["p"] == 1.0


def test_independent_samples_give_mcnemar_exact_test():
    a = np.array([1] * 50 + [0] * 12 + [1] * 4 + [0] * 34, bool)
    b = np.array([1] * 50 + [1] * 12 + [0] * 4 + [0] * 34, bool)
    res = paired_sign_flip_test(a, b)
    # two-sided exact binomial on the 16 discordant samples, 12 of them in B's favour
    k, n = 4, 16
    expected = min(1.0, 2 * sum(comb(n, i) for i in range(k + 1)) / 2 ** n)
    assert res["method"] == "mcnemar-exact" and res["p"] == pytest.approx(expected)
    assert res["b_only"] == 12 and res["a_only"] == 4
    assert res["diff"] == pytest.approx(8 / 100)


def test_folds_flip_as_a_whole():
    # 4 folds of 25 autocorrelated volumes: B is better on 3 folds, worse on 1
    units = np.repeat(np.arange(4), 25)
    a = np.zeros(100, bool)
    b = np.zeros(100, bool)
    b[:30] = True          # fold 0: +25, fold 1: +5
    a[75:80] = True        # fold 3: -5
    b[50:60] = True        # fold 2: +10
    res = paired_sign_flip_test(a, b, units=units)
    per_fold = np.array([25, 5, 10, -5])
    signs = np.array(np.meshgrid(*[[1, -1]] * 4)).reshape(4, -1).T
    expected = np.mean(np.abs(signs @ per_fold) >= abs(per_fold.sum()))
    assert res["method"] == "sign-flip-exact" and res["n_units"] == 4
    assert res["p"] == pytest.approx(expected)
    # treating the volumes as independent would claim far more certainty
    assert paired_sign_flip_test(a, b)["p"] < 1e-6 < res["p"]


def test_many_units_use_a_reproducible_monte_carlo():
    # 30 folds of 10 volumes; B is right on 1-2 more volumes in 24 folds, A on 1 more in 6
    per_fold = np.array([2, 1, 1, 2, 1] * 4 + [1, 2, 1, 2] + [-1] * 6)
    units = np.repeat(np.arange(30), 10)
    a = np.zeros(300, bool)
    b = np.zeros(300, bool)
    for u, d in enumerate(per_fold):
        (b if d > 0 else a)[10 * u:10 * u + abs(d)] = True
    r1 = paired_sign_flip_test(a, b, units=units, n_permutations=2000, random_state=5)
    r2 = paired_sign_flip_test(a, b, units=units, n_permutations=2000, random_state=5)
    assert r1 == r2 and r1["method"] == "sign-flip-monte-carlo" and r1["n_units"] == 30
    assert r1["diff"] == pytest.approx(per_fold.sum() / 300)
    assert 1 / 2001 <= r1["p"] < 0.01


def test_corrected_t_inflates_the_variance_for_overlapping_training_sets():
    rng = np.random.default_rng(8)
    d = 0.02 + 0.03 * rng.standard_normal(30)       # e.g. 3 repeats x 10 folds
    res = corrected_resampled_ttest(d, test_train_ratio=1 / 9)
    se = np.sqrt((1 / 30 + 1 / 9) * d.var(ddof=1))
    assert res["diff"] == pytest.approx(d.mean()) and res["se"] == pytest.approx(se)
    assert res["t"] == pytest.approx(d.mean() / se) and res["df"] == 29
    assert res["p"] == pytest.approx(2 * stats.t.sf(abs(d.mean() / se), 29))
    lo, hi = stats.t.interval(0.95, 29, loc=d.mean(), scale=se)
    assert res["ci95"] == pytest.approx([lo, hi])
    naive = stats.ttest_1samp(d, 0.0)               # treats the folds as independent
    assert naive.pvalue < 0.01 < res["p"]
    assert corrected_resampled_ttest(np.zeros(10), 0.1)["p"] == 1.0
    assert corrected_resampled_ttest(np.full(10, 0.05), 0.1)["p"] == 0.0
    with pytest.raises(DataError, match="at least 2 folds"):
        corrected_resampled_ttest([0.1], 0.1)


def _write_biomarker_run(path, subjects, diagnosis, p_autism, accuracy=None, folds=None):
    path.mkdir(parents=True)
    pred = pd.DataFrame({"subject": subjects, "site": "S", "diagnosis": diagnosis,
                         "p_autism": p_autism,
                         "predicted": np.where(np.asarray(p_autism) > 0.5, "autism", "control")})
    if folds is not None:
        pred["fold"] = folds
    pred.set_index("subject").to_csv(path / "predictions.tsv", sep="\t")
    acc = float(np.mean(pred["predicted"] == pred["diagnosis"]))
    (path / "metrics.json").write_text(json.dumps({"task": "biomarker", "cv": "leave-site-out",
                                                   "accuracy": acc, "roc_auc": None}))


def test_biomarker_runs_pair_subjects_by_id(tmp_path):
    rng = np.random.default_rng(4)
    ids = [f"sub{i:03d}" for i in range(200)]
    diag = np.where(rng.random(200) < 0.5, "autism", "control")
    truth = (diag == "autism").astype(float)
    pa = 1 / (1 + np.exp(-(truth - 0.5 + rng.normal(size=200))))
    pb = 1 / (1 + np.exp(-(3 * (truth - 0.5) + rng.normal(size=200))))
    _write_biomarker_run(tmp_path / "a", ids, diag, pa)
    order = rng.permutation(200)[:180]           # B: shuffled rows, 20 subjects missing
    _write_biomarker_run(tmp_path / "b", [ids[i] for i in order], diag[order], pb[order])
    res = compare_runs(tmp_path / "a", tmp_path / "b")
    assert res["n_paired"] == 180 and res["n_only_a"] == 20 and res["n_only_b"] == 0
    keep = np.sort(order)
    direct = delong_test(diag[keep] == "autism", pa[keep], pb[keep])
    assert res["roc_auc"]["diff"] == pytest.approx(direct["diff"])
    assert res["roc_auc"]["p"] == pytest.approx(direct["p"])
    assert res["roc_auc"]["diff"] > 0 and res["accuracy"]["diff"] > 0
    # folds were not recorded here, and the subjects differ: no corrected t-test
    assert not res["corrected_t"]["available"]


def test_runs_without_a_recorded_config_are_not_said_to_differ_in_everything(tmp_path,
                                                                              capsys):
    from decoder.cli import main
    ids = [f"sub{i:03d}" for i in range(40)]
    diag = np.array(["autism", "control"] * 20)
    p = np.linspace(0.1, 0.9, 40)
    _write_biomarker_run(tmp_path / "a", ids, diag, p)
    _write_biomarker_run(tmp_path / "b", ids, diag, p[::-1])
    metrics = json.loads((tmp_path / "a" / "metrics.json").read_text())
    metrics["provenance"] = {"config": {"task": "biomarker", "model": "ridge"}}
    (tmp_path / "a" / "metrics.json").write_text(json.dumps(metrics))
    res = compare_runs(tmp_path / "a", tmp_path / "b", n_permutations=200, random_state=7)
    assert res["config_missing"] == ["B"] and res["config_differences"] == []
    # the settings of the random tests are part of the result
    assert res["n_permutations"] == 200 and res["random_state"] == 7
    assert main(["compare", str(tmp_path / "a"), str(tmp_path / "b")]) == 0
    assert ("B differs from A in: not known (no config recorded in the metrics.json of B)"
            in capsys.readouterr().out)


def test_mismatched_runs_are_one_line_errors(tmp_path, capsys):
    _write_biomarker_run(tmp_path / "a", ["s1", "s2", "s3"], ["autism", "control", "autism"],
                         [0.7, 0.2, 0.4])
    _write_biomarker_run(tmp_path / "b", ["s1", "s2", "s3"], ["autism", "autism", "autism"],
                         [0.7, 0.2, 0.4])
    _write_biomarker_run(tmp_path / "c", ["x1", "x2"], ["autism", "control"], [0.7, 0.2])
    with pytest.raises(DataError, match="subject s2 has different diagnoses"):
        compare_runs(tmp_path / "a", tmp_path / "b")
    with pytest.raises(DataError, match="no subject in common"):
        compare_runs(tmp_path / "a", tmp_path / "c")
    assert main(["compare", str(tmp_path / "a"), str(tmp_path / "nowhere")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("decoder: error:") and "run directory not found" in err
    assert len(err.splitlines()) == 1


def test_cli_compares_two_biomarker_pipeline_runs(tmp_path, capsys):
    root = make_layout(tmp_path / "abide", n_sites=3, per_site=12, signal=0.9)
    runs = {}
    for name, sets in (("plain", ["harmonize.method=none"]), ("combat", [])):
        runs[name] = tmp_path / name
        args = ["run", str(CONFIG), "--data", str(root), "--out", str(runs[name]),
                "--set", "save_model=false"]
        for s in sets:
            args += ["--set", s]
        assert main(args) == 0
    out = tmp_path / "cmp.json"
    assert main(["compare", str(runs["plain"]), str(runs["combat"]), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "paired on 36 subjects" in printed and "DeLong" in printed
    res = json.loads(out.read_text())
    # which settings B changes, and nothing else (not where it ran, not the data root)
    assert res["config_differences"] == [{"key": "harmonize.method", "a": "none",
                                          "b": "combat"}]
    assert "B differs from A in: harmonize.method none → combat" in printed
    metrics = {k: json.loads((v / "metrics.json").read_text()) for k, v in runs.items()}
    assert res["n_paired"] == 36 and res["accuracy"]["unit"] == "subject"
    assert res["accuracy"]["diff"] == pytest.approx(
        metrics["combat"]["accuracy"] - metrics["plain"]["accuracy"])
    assert res["roc_auc"]["auc_a"] == pytest.approx(metrics["plain"]["roc_auc"])
    assert res["roc_auc"]["auc_b"] == pytest.approx(metrics["combat"]["roc_auc"])
    # a run against itself: no difference, nothing to test
    same = compare_runs(runs["combat"], runs["combat"])
    assert same["accuracy"]["diff"] == 0 and same["accuracy"]["p"] == 1.0
    assert same["config_differences"] == []
    assert same["roc_auc"]["p"] == 1.0


def test_category_runs_use_the_folds_as_units(tmp_path):
    common = {"task": "category", "delay": 0.0, "classes": ["face", "house"]}
    run_config({**common, "window": 1}, out=tmp_path / "w1")
    m3 = run_config({**common, "window": 3}, out=tmp_path / "w3")
    res = compare_runs(tmp_path / "w1", tmp_path / "w3")
    assert res["task"] == "category" and res["roc_auc"] is None
    assert res["accuracy"]["unit"] == "fold" and res["accuracy"]["n_units"] == 12
    assert res["accuracy"]["method"] in ("sign-flip-exact", "mcnemar-exact")
    assert res["n_paired"] == m3["n_samples"]
    # other classes decode other samples: not comparable
    run_config({**common, "classes": ["face", "cat"], "window": 3}, out=tmp_path / "fc")
    with pytest.raises(DataError, match=r"different samples or folds \(classes face,house → "
                                        r"face,cat\)"):
        compare_runs(tmp_path / "w3", tmp_path / "fc")


def _fold_differences(run_a, run_b, n_rep):
    """Per-fold accuracy differences (B − A) recomputed from the runs' repeats.tsv."""
    ra, rb = (pd.read_csv(r / "repeats.tsv", sep="\t").set_index("subject") for r in (run_a, run_b))
    truth = pd.read_csv(run_a / "predictions.tsv", sep="\t").set_index("subject")["diagnosis"]
    truth = truth.loc[ra.index] == "autism"
    diffs = []
    for r in range(n_rep):
        for f in np.unique(ra[f"fold_r{r}"]):
            m = (ra[f"fold_r{r}"] == f).to_numpy()
            acc = [np.mean((t[f"p_autism_r{r}"].to_numpy()[m] > 0.5) == truth.to_numpy()[m])
                   for t in (ra, rb)]
            diffs.append(acc[1] - acc[0])
    return np.asarray(diffs)


def test_runs_on_the_same_folds_get_the_corrected_t_test(tmp_path, capsys):
    root = make_layout(tmp_path / "abide", n_sites=3, per_site=12, signal=0.9)
    runs = {}
    for name, sets in (("plain", ["harmonize.method=none"]), ("combat", []),
                       ("lso", []), ("kfold", ["cv=stratified-kfold", "n_splits=3"])):
        runs[name] = tmp_path / name
        args = ["run", str(CONFIG), "--data", str(root), "--out", str(runs[name]),
                "--set", "save_model=false"]
        if name in ("plain", "combat"):
            args += ["--set", "cv=repeated-stratified-kfold", "--set", "n_splits=3",
                     "--set", "n_repeats=2"]
        for s in sets:
            args += ["--set", s]
        assert main(args) == 0
    capsys.readouterr()
    res = compare_runs(runs["plain"], runs["combat"])
    ct = res["corrected_t"]
    assert ct["available"] and ct["n_repeats"] == 2 and ct["accuracy"]["n_units"] == 6
    diffs = _fold_differences(runs["plain"], runs["combat"], 2)
    assert ct["accuracy"]["diff"] == pytest.approx(diffs.mean())
    assert ct["accuracy"]["test_train_ratio"] == pytest.approx(0.5)   # 12 / 24 subjects
    assert ct["roc_auc"]["n_units"] == 6 and 0 <= ct["roc_auc"]["p"] <= 1
    # a run against itself: no difference in any fold
    same = compare_runs(runs["combat"], runs["combat"])["corrected_t"]
    assert same["accuracy"]["p"] == 1.0 and same["accuracy"]["diff"] == 0
    # leave-site-out against stratified k-fold: other folds, no corrected test
    other = compare_runs(runs["lso"], runs["kfold"])["corrected_t"]
    assert not other["available"] and "different folds" in other["reason"]
    # leave-site-out against itself: the sites are the folds
    lso = compare_runs(runs["lso"], runs["lso"])["corrected_t"]
    assert lso["available"] and lso["accuracy"]["n_units"] == 3
    assert main(["compare", str(runs["plain"]), str(runs["combat"])]) == 0
    assert "corrected resampled t" in capsys.readouterr().out


def test_runs_without_folds_say_why_there_is_no_corrected_test(tmp_path):
    ids = ["s1", "s2", "s3", "s4"]
    diag = ["autism", "control", "autism", "control"]
    _write_biomarker_run(tmp_path / "a", ids, diag, [0.7, 0.2, 0.4, 0.3])
    _write_biomarker_run(tmp_path / "b", ids, diag, [0.6, 0.3, 0.6, 0.4])
    ct = compare_runs(tmp_path / "a", tmp_path / "b")["corrected_t"]
    assert not ct["available"] and "records no folds" in ct["reason"]
    # with folds, but B lacks a subject: the training sets were not the same
    _write_biomarker_run(tmp_path / "c", ids + ["s5"], diag + ["control"],
                         [0.7, 0.2, 0.4, 0.3, 0.1], folds=[0, 0, 1, 1, 1])
    _write_biomarker_run(tmp_path / "d", ids, diag, [0.6, 0.3, 0.6, 0.4], folds=[0, 0, 1, 1])
    ct = compare_runs(tmp_path / "c", tmp_path / "d")["corrected_t"]
    assert not ct["available"] and "different subjects" in ct["reason"]


def test_category_runs_get_the_corrected_t_test_over_runs(tmp_path):
    common = {"task": "category", "delay": 0.0, "classes": ["face", "house"]}
    run_config({**common, "window": 1}, out=tmp_path / "w1")
    run_config({**common, "window": 3}, out=tmp_path / "w3")
    res = compare_runs(tmp_path / "w1", tmp_path / "w3")
    ct = res["corrected_t"]
    assert ct["available"] and ct["accuracy"]["n_units"] == 12 and ct["roc_auc"] is None
    assert ct["accuracy"]["test_train_ratio"] == pytest.approx(1 / 11, rel=0.05)
    pa, pb = (pd.read_csv(tmp_path / w / "predictions.tsv", sep="\t") for w in ("w1", "w3"))
    per_fold = [(pb.predicted == pb.true)[pb.fold == f].mean()
                - (pa.predicted == pa.true)[pa.fold == f].mean() for f in np.unique(pa.fold)]
    assert ct["accuracy"]["diff"] == pytest.approx(np.mean(per_fold))
