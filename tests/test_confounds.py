"""The confound check: does the held-out probability follow head motion beyond the diagnosis?"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from decoder.cli import main
from decoder.evaluation.confounds import confound_check

from test_abide_reader import make_layout
from test_biomarker_pipeline import CONFIG


def _cohort(n=600, seed=0):
    rng = np.random.default_rng(seed)
    y = np.where(rng.random(n) < 0.5, "autism", "control")
    # autism subjects move more, as in ABIDE
    fd = rng.gamma(2.0, 0.05, n) + np.where(y == "autism", 0.05, 0.0)
    return rng, y, fd


def test_a_model_that_tracks_only_the_diagnosis_shows_no_within_group_correlation():
    rng, y, fd = _cohort()
    proba = np.clip(np.where(y == "autism", 0.7, 0.3) + rng.normal(0, 0.1, len(y)), 0, 1)
    out = confound_check(y, proba, pd.DataFrame({"mean_fd": fd}), "autism")["mean_fd"]
    assert out["n"] == len(y)
    assert out["auc_alone"] > 0.6  # motion alone separates the groups somewhat
    for cls in ("autism", "control"):
        assert abs(out["spearman_within_class"][cls]["rho"]) < 0.15


def test_a_model_that_reads_motion_is_caught_within_each_group():
    rng, y, fd = _cohort()
    rank = pd.Series(fd).rank(pct=True).to_numpy()
    proba = np.clip(0.2 + 0.6 * rank + rng.normal(0, 0.05, len(y)), 0, 1)
    out = confound_check(y, proba, pd.DataFrame({"mean_fd": fd}), "autism")["mean_fd"]
    for cls in ("autism", "control"):
        r = out["spearman_within_class"][cls]
        assert r["rho"] > 0.8 and r["p"] < 1e-6
    # it calls high movers autistic: right for the autistic ones among them only
    acc = out["accuracy_by_tertile"]
    assert set(acc) == {"low", "middle", "high"}
    assert all(0.0 <= v <= 1.0 for v in acc.values())


def test_accuracy_by_tertile_counts_the_right_subjects():
    y = np.array(["autism", "control"] * 6)
    fd = np.arange(12, dtype=float)  # thirds: 0-3, 4-7, 8-11
    proba = np.where(y == "autism", 0.9, 0.1)
    proba[:4] = 1 - proba[:4]  # the lowest third all wrong
    out = confound_check(y, proba, pd.DataFrame({"mean_fd": fd}), "autism")["mean_fd"]
    assert out["accuracy_by_tertile"] == {"low": 0.0, "middle": 1.0, "high": 1.0}


def test_missing_values_are_left_out_and_empty_columns_dropped():
    rng, y, fd = _cohort(n=60)
    fd[:10] = np.nan
    proba = rng.random(len(y))
    table = pd.DataFrame({"mean_fd": fd, "unknown": np.nan})
    out = confound_check(y, proba, table, "autism")
    assert set(out) == {"mean_fd"}
    assert out["mean_fd"]["n"] == 50
    json.dumps(out)  # metrics.json-ready: plain floats and None only


def test_one_class_or_tiny_groups_give_none_instead_of_an_error():
    y = np.array(["autism"] * 5 + ["control"] * 2)
    out = confound_check(y, np.linspace(0, 1, 7), pd.DataFrame({"fd": np.arange(7.0)}),
                         "autism")["fd"]
    assert out["spearman_within_class"]["control"] is None
    assert out["spearman_within_class"]["autism"]["rho"] == pytest.approx(1.0)
    only = confound_check(y[:5], np.full(5, 0.6), pd.DataFrame({"fd": np.arange(5.0)}),
                          "autism")["fd"]
    assert only["auc_alone"] is None


def test_the_model_card_states_the_motion_check_as_a_limitation():
    from decoder.models.model_card import build_model_card, card_markdown
    confounds = {"mean_fd": {"n": 10, "auc_alone": 0.6,
                             "spearman_within_class": {"autism": {"rho": 0.2, "p": 0.01},
                                                       "control": None},
                             "accuracy_by_tertile": {"low": 0.7, "middle": 0.7, "high": 0.7}}}
    card = build_model_card({"classes": ["control", "autism"], "confounds": confounds},
                            {"dataset": {"kind": "abide"}}, 10, ["A"], ["r1", "r2"])
    assert card["evaluation"]["confounds"] == confounds
    md = card_markdown(card)
    assert "Head motion differs" in md and "ROC AUC 0.600" in md and "autism 0.200" in md
    plain = build_model_card({"classes": ["control", "autism"]}, {"dataset": {}}, 10, ["A"],
                             ["r1"])
    assert not any("motion" in x for x in plain["limitations"])
    # a motion check that finds nothing is not stated as a limitation
    calm = {"mean_fd": {**confounds["mean_fd"], "auc_alone": 0.48,
                        "spearman_within_class": {"autism": {"rho": 0.03},
                                                  "control": {"rho": -0.05}}}}
    quiet = build_model_card({"confounds": calm}, {"dataset": {"kind": "abide"}}, 10, ["A"],
                             ["r1"])
    assert not any("motion" in x.lower() for x in quiet["limitations"])
    follows = {"mean_fd": {**calm["mean_fd"], "spearman_within_class": {
        "autism": {"rho": 0.25}, "control": {"rho": 0.0}}}}
    said = build_model_card({"confounds": follows}, {"dataset": {"kind": "abide"}}, 10, ["A"],
                            ["r1"])["limitations"][-1]
    assert said.startswith("Head motion hardly differs between the groups")
    assert "correlate with it within each group" in said


def test_mismatched_lengths_are_an_error():
    with pytest.raises(ValueError, match="labels"):
        confound_check(["a", "b"], [0.1], pd.DataFrame({"fd": [1.0, 2.0]}), "a")


def test_pipeline_reports_the_motion_check_in_metrics_and_html(tmp_path):
    root = make_layout(tmp_path / "abide", n_sites=3, per_site=10)
    out = tmp_path / "run"
    assert main(["run", str(CONFIG), "--data", str(root), "--out", str(out),
                 "--set", "save_model=false"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    fd = metrics["confounds"]["mean_fd"]
    assert fd["n"] == 29  # one -9999 left out
    assert fd["auc_alone"] > 0.75  # the layout's autism subjects move more
    assert "Confound check (head motion)" in (out / "report.html").read_text()


def test_pipeline_without_motion_in_the_table_has_an_empty_check(tmp_path):
    root = make_layout(tmp_path / "abide", n_sites=2, per_site=8, mean_fd=False)
    out = tmp_path / "run"
    assert main(["run", str(CONFIG), "--data", str(root), "--out", str(out),
                 "--set", "save_model=false", "--set", "cv=stratified-kfold",
                 "--set", "n_splits=4"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["confounds"] == {}
    assert "Confound check" not in (out / "report.html").read_text()


# --------------------------------------------------------------- removing a confound
def _motion_cohort(n=160, seed=0):
    """Subjects whose only label-related signal is motion-driven coupling of regions 0-1."""
    rng = np.random.default_rng(seed)
    y = np.array(["control", "autism"] * (n // 2))
    fd = rng.gamma(2.0, 0.05, n) + np.where(y == "autism", 0.08, 0.0)
    series = []
    for f in fd:
        ts = rng.normal(size=(100, 6))
        rho = min(3.0 * f, 0.95)  # motion couples regions 0 and 1, linearly in fd
        ts[:, 1] = rho * ts[:, 0] + np.sqrt(1 - rho ** 2) * ts[:, 1]
        series.append(ts)
    covariates = pd.DataFrame({"age": rng.uniform(8, 30, n), "sex": rng.integers(1, 3, n),
                               "mean_fd": fd})
    return series, y, covariates


def _cv_auc(make, series, y, covariates):
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import StratifiedKFold
    p = np.zeros(len(y))
    for tr, te in StratifiedKFold(5, shuffle=True, random_state=0).split(y, y):
        est = make().fit([series[i] for i in tr], y[tr], covariates=covariates.iloc[tr])
        col = list(est.classes_).index("autism")
        p[te] = est.predict_proba([series[i] for i in te], covariates=covariates.iloc[te])[:, col]
    return roc_auc_score(y == "autism", p)


def test_removing_motion_takes_away_a_motion_only_signal():
    from decoder.models.biomarker_models import ConnectomeClassifier
    series, y, cov = _motion_cohort()
    kept = _cv_auc(lambda: ConnectomeClassifier(kinds=("correlation",)), series, y, cov)
    removed = _cv_auc(lambda: ConnectomeClassifier(kinds=("correlation",),
                                                   remove_confounds=("mean_fd",)),
                      series, y, cov)
    assert kept > 0.7  # the classifier reads motion when allowed to
    assert removed < 0.62  # and is near chance once motion is regressed out


def test_confound_slopes_come_from_the_training_subjects_only():
    from decoder.models.biomarker_models import ConnectomeClassifier
    series, y, cov = _motion_cohort(n=60)
    tr = np.arange(40)
    est = ConnectomeClassifier(kinds=("correlation",), reliability="none",
                               remove_confounds=("mean_fd",)).fit(
        [series[i] for i in tr], y[tr], covariates=cov.iloc[tr])
    X = est.connectivity_["correlation"].transform([series[i] for i in tr])
    c = cov["mean_fd"].to_numpy()[tr, None]
    slopes = np.linalg.lstsq(c - c.mean(), X - X.mean(axis=0), rcond=None)[0]
    np.testing.assert_allclose(est.deconfound_["correlation"][1], slopes, atol=1e-10)
    # a test subject without the value gets the training median: same as passing it
    one = [series[50]]
    no_fd = est.predict_proba(one, covariates=cov.iloc[[50]].drop(columns="mean_fd"))
    at_median = cov.iloc[[50]].assign(mean_fd=float(np.median(c)))
    np.testing.assert_allclose(no_fd, est.predict_proba(one, covariates=at_median))


def test_a_confound_missing_at_fit_is_a_one_line_error():
    from decoder.errors import DataError
    from decoder.models.biomarker_models import ConnectomeClassifier
    series, y, cov = _motion_cohort(n=20)
    with pytest.raises(DataError, match="confounds.remove"):
        ConnectomeClassifier(remove_confounds=("mean_fd",)).fit(
            series, y, covariates=cov.drop(columns="mean_fd"))


def test_pipeline_removes_motion_when_asked_and_names_unknown_confounds(tmp_path, capsys):
    root = make_layout(tmp_path / "abide", n_sites=3, per_site=10)
    out = tmp_path / "run"
    assert main(["run", str(CONFIG), "--data", str(root), "--out", str(out),
                 "--set", "confounds.remove=[mean_fd]"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["model"]["confounds_removed"] == ["mean_fd"]
    card = json.loads((out / "model_card.json").read_text())
    assert card["model"]["confounds_removed"] == ["mean_fd"]
    # the saved model still predicts a new subject, who has no motion value
    f = next((root / "Outputs/cpac/filt_noglobal/rois_ho").glob("*.1D"))
    assert main(["predict", str(out / "model.skops"), str(f),
                 "--out", str(tmp_path / "p.json")]) == 0
    no_fd = json.loads((tmp_path / "p.json").read_text())
    assert no_fd["confounds_removed"] == {"mean_fd": None}  # the training median
    # ... or is given the scan's motion (and its site, age and sex for ComBat)
    assert main(["predict", str(out / "model.skops"), str(f), "--mean-fd", "0.4",
                 "--site", "SITE0", "--age", "11", "--sex", "1",
                 "--out", str(tmp_path / "q.json")]) == 0
    with_fd = json.loads((tmp_path / "q.json").read_text())
    assert with_fd["confounds_removed"] == {"mean_fd": 0.4}
    assert with_fd["probability"] != pytest.approx(no_fd["probability"], abs=1e-9)
    capsys.readouterr()
    assert main(["run", str(CONFIG), "--data", str(root), "--out", str(tmp_path / "bad"),
                 "--set", "confounds.remove=[motion]"]) != 0
    err = capsys.readouterr().err
    assert "confounds.remove 'motion' is not supported" in err and "mean_fd" in err
    assert len(err.strip().splitlines()) == 1


def test_a_model_saved_before_confound_removal_existed_loads_and_predicts():
    sio = pytest.importorskip("skops.io")
    from decoder.models.biomarker_models import ConnectomeClassifier
    series, y, cov = _motion_cohort(n=40)
    est = ConnectomeClassifier(kinds=("correlation",)).fit(series, y, covariates=cov)
    expected = est.predict_proba(series[:5])
    del est.remove_confounds, est.deconfound_  # what an older version wrote
    data = sio.dumps(est)
    old = sio.loads(data, trusted=sio.get_untrusted_types(data=data))
    assert old.get_params()["remove_confounds"] == ()
    np.testing.assert_allclose(old.predict_proba(series[:5]), expected)
