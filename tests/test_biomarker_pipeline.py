"""The biomarker pipeline end to end: metrics contract, leakage, saved model, bad inputs."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from decoder.cli import main
from decoder.config import merge_with_defaults
from decoder.evaluation.compare import auc_interval
from decoder.features.connectome import (Connectivity, split_half_covariances,
                                         subject_covariances)
from decoder.models import biomarker_models
from decoder.features.harmonize import ComBat
from pipelines import biomarker

from test_abide_reader import make_layout

SHARED = os.environ.get("DECODER_SHARED_DATA")
CONFIG = Path(__file__).resolve().parents[1] / "configs" / "abide.yaml"
CONTRACT = ("task", "dataset", "cv", "n_samples", "n_classes", "classes", "accuracy",
            "balanced_accuracy", "roc_auc", "chance", "fold_scores", "permutation_p",
            "runtime_s", "provenance", "confusion_matrix", "per_class", "per_site")


def _config(**over):
    cfg = merge_with_defaults({"task": "biomarker"}, biomarker.DEFAULTS)
    for key, value in over.items():
        node = cfg
        *head, last = key.split(".")
        for k in head:
            node = node[k]
        node[last] = value
    return cfg


def test_cli_run_on_abide_layout_writes_contract_model_and_card(tmp_path):
    root = make_layout(tmp_path / "abide", n_sites=4, per_site=10, signal=0.9)
    out = tmp_path / "run"
    rc = main(["run", str(CONFIG), "--data", str(root), "--out", str(out),
               "--set", "harmonize.method=combat"])
    assert rc == 0
    metrics = json.loads((out / "metrics.json").read_text())
    for key in CONTRACT:
        assert key in metrics, key
    assert metrics["cv"] == "leave-site-out" and len(metrics["fold_scores"]) == 4
    assert set(metrics["per_site"]) == {"SITE0", "SITE1", "SITE2", "SITE3"}
    # each fold is named by the site it held out, and scores that site alone
    assert sorted(metrics["fold_groups"]) == sorted(metrics["per_site"])
    for site, score in zip(metrics["fold_groups"], metrics["fold_scores"]):
        assert score == pytest.approx(metrics["per_site"][site]["accuracy"])
    # the planted coupling is learnable across sites
    assert metrics["roc_auc"] > 0.8
    inputs = metrics["provenance"]["inputs"]
    assert len(inputs) == 41 and all(len(r["sha256"]) == 64 for r in inputs)
    # the labels, sites, age and sex come from the phenotypic table: it is an input too
    assert "Phenotypic_V1_0b_preprocessed1.csv" in {r["path"] for r in inputs}
    assert (out / "model.skops").is_file() and (out / "predictions.tsv").is_file()
    card = json.loads((out / "model_card.json").read_text())
    assert card["evaluation"]["cv"] == "leave-site-out" and "intended_use" in card
    assert "NOT a diagnostic device" in (out / "model_card.md").read_text()
    # the saved model predicts a subject's file through the CLI
    f = next((root / "Outputs/cpac/filt_noglobal/rois_ho").glob("*.1D"))
    pred = tmp_path / "pred.json"
    assert main(["predict", str(out / "model.skops"), str(f), "--out", str(pred),
                 "--site", "SITE1", "--age", "14", "--sex", "m"]) == 0
    result = json.loads(pred.read_text())
    assert 0.0 <= result["probability"] <= 1.0
    # the bundle itself carries the subgroup scores of its evaluation
    metrics = json.loads((out / "metrics.json").read_text())
    assert result["subgroups"]["age"] == {"group": "12–17",
                                          **metrics["per_subgroup"]["age"]["12–17"]}
    assert result["subgroups"]["sex"]["group"] == "male"
    (out / "model_card.json").unlink()
    assert main(["predict", str(out / "model.skops"), str(f), "--out", str(pred),
                 "--site", "SITE1", "--age", "14", "--sex", "m"]) == 0
    assert json.loads(pred.read_text())["subgroups"] == result["subgroups"]


def test_repeated_kfold_records_every_repetition(tmp_path, capsys):
    root = make_layout(tmp_path / "abide", n_sites=3, per_site=12, signal=0.9)
    out = tmp_path / "run"
    rc = main(["run", str(CONFIG), "--data", str(root), "--out", str(out),
               "--set", "cv=repeated-stratified-kfold", "--set", "n_splits=3",
               "--set", "n_repeats=3", "--set", "save_model=false"])
    assert rc == 0
    assert "per repetition (3): accuracy" in capsys.readouterr().out
    metrics = json.loads((out / "metrics.json").read_text())
    pred = pd.read_csv(out / "predictions.tsv", sep="\t").set_index("subject")
    reps = pd.read_csv(out / "repeats.tsv", sep="\t").set_index("subject").loc[pred.index]
    autism = (pred["diagnosis"] == "autism").to_numpy()
    rep = metrics["repeats"]
    assert rep["n_repeats"] == 3 and len(rep["accuracy"]) == 3
    for r in range(3):
        folds = reps[f"fold_r{r}"]
        assert sorted(folds.unique()) == [0, 1, 2]                  # every subject held out once
        for f in range(3):                                          # stratified
            assert 4 <= autism[(folds == f).to_numpy()].sum() <= 8
        p = reps[f"p_autism_r{r}"].to_numpy()
        assert rep["accuracy"][r] == pytest.approx(np.mean((p > 0.5) == autism))
    assert rep["accuracy_mean"] == pytest.approx(np.mean(rep["accuracy"]))
    # the pooled probability is the mean over repetitions; fold is the first repetition's
    p_cols = reps[[f"p_autism_r{r}" for r in range(3)]].to_numpy()
    assert np.allclose(pred["p_autism"], p_cols.mean(axis=1))
    assert (pred["fold"] == reps["fold_r0"]).all()
    assert not (reps["fold_r0"] == reps["fold_r1"]).all()          # a new split each time


def test_leave_site_out_folds_are_the_sites(tmp_path):
    root = make_layout(tmp_path / "abide", n_sites=3, per_site=8, signal=0.9)
    out = tmp_path / "run"
    out.mkdir()
    (out / "repeats.tsv").write_text("subject\tfold_r0\n")       # from an earlier repeated run
    (out / "metrics.json").write_text(json.dumps({"files": ["repeats.tsv"]}))
    assert main(["run", str(CONFIG), "--data", str(root), "--out", str(out),
                 "--set", "save_model=false"]) == 0
    pred = pd.read_csv(out / "predictions.tsv", sep="\t")
    assert (pred.groupby("site")["fold"].nunique() == 1).all()
    assert pred["fold"].nunique() == 3
    assert json.loads((out / "metrics.json").read_text())["repeats"] is None
    assert not (out / "repeats.tsv").exists()


def test_stratified_kfold_and_dataset_keys_via_set(tmp_path):
    root = make_layout(tmp_path / "abide", n_sites=2, per_site=10, derivative="rois_cc200",
                       strategy="filt_global", pipeline="ccs")
    out = tmp_path / "run"
    rc = main(["run", str(CONFIG), "--data", str(root), "--out", str(out),
               "--set", "cv=stratified-kfold", "--set", "n_splits=5",
               "--set", "dataset.pipeline=ccs", "--set", "dataset.strategy=filt_global",
               "--set", "dataset.derivative=rois_cc200", "--set", "save_model=false"])
    assert rc == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["cv"] == "stratified-kfold" and len(metrics["fold_scores"]) == 5
    assert metrics["fold_groups"] is None  # folds of mixed sites are numbered
    assert metrics["dataset"]["derivative"] == "rois_cc200"


def test_bad_dataset_key_is_one_line_error(tmp_path, capsys):
    root = make_layout(tmp_path / "abide", n_sites=2, per_site=4)
    rc = main(["run", str(CONFIG), "--data", str(root), "--out", str(tmp_path / "o"),
               "--set", "dataset.derivative=rois_hoo"])
    err = capsys.readouterr().err.strip()
    assert rc != 0 and "rois_hoo" in err and "\n" not in err and "Traceback" not in err


def test_tangent_reference_combat_and_reliability_see_only_training_subjects(tmp_path,
                                                                             monkeypatch):
    root = make_layout(tmp_path / "abide", n_sites=3, per_site=8)
    cfg = _config(**{"harmonize.method": "combat"})
    subjects = biomarker.load_subjects(cfg, root)
    covs = subject_covariances(subjects.time_series)
    halves = split_half_covariances(subjects.time_series)
    seen = {"connectivity": [], "combat": [], "reliability": []}
    real_conn_fit, real_combat_fit = Connectivity.fit, ComBat.fit
    real_rel = biomarker_models.split_half_reliability

    def spy_rel(full, h1, h2):
        seen["reliability"].append(len(full))
        return real_rel(full, h1, h2)

    def spy_conn(self, X, y=None):
        seen["connectivity"].append(np.asarray(X).copy())
        return real_conn_fit(self, X, y)

    def spy_combat(self, X, y=None, sites=None, covariates=None):
        seen["combat"].append(np.asarray(sites).copy())
        return real_combat_fit(self, X, y, sites=sites, covariates=covariates)

    monkeypatch.setattr(Connectivity, "fit", spy_conn)
    monkeypatch.setattr(ComBat, "fit", spy_combat)
    monkeypatch.setattr(biomarker_models, "split_half_reliability", spy_rel)
    _, folds = biomarker.cross_validate(cfg, covs, subjects.diagnosis.astype(str),
                                        subjects.sites, subjects.covariates, halves=halves)
    n_kinds = len(cfg["connectivity"]["kinds"])
    assert len(seen["connectivity"]) == len(folds) * n_kinds
    for i, (train, test) in enumerate(folds):
        for k in range(n_kinds):
            fitted_on = seen["connectivity"][i * n_kinds + k]
            assert np.array_equal(fitted_on, covs[train])  # exactly the training subjects
            held_out_site = set(subjects.sites[test])
            assert held_out_site.isdisjoint(seen["combat"][i * n_kinds + k])
            # edge reliabilities come from the training subjects' scan halves only
            assert seen["reliability"][i * n_kinds + k] == len(train)


def test_shuffled_labels_give_chance_auc(tmp_path):
    root = make_layout(tmp_path / "abide", n_sites=4, per_site=16, signal=0.9)
    cfg = _config()
    subjects = biomarker.load_subjects(cfg, root)
    covs = subject_covariances(subjects.time_series)
    halves = split_half_covariances(subjects.time_series)
    y = subjects.diagnosis.astype(str)
    proba, _ = biomarker.cross_validate(cfg, covs, y, subjects.sites, subjects.covariates,
                                        halves=halves)
    from sklearn.metrics import roc_auc_score
    real = roc_auc_score(y == "autism", proba[0])
    rng = np.random.default_rng(0)
    null = []
    for _ in range(4):
        perm = rng.permutation(y)
        p, _ = biomarker.cross_validate(cfg, covs, y, subjects.sites, subjects.covariates,
                                        labels=perm, halves=halves)
        null.append(roc_auc_score(perm == "autism", p[0]))
    assert real > 0.85
    assert abs(np.mean(null) - 0.5) < 0.15


@pytest.mark.parametrize("over", [{}, {"harmonize.method": "combat",
                                      "confounds.remove": ["mean_fd"]},
                                  {"model": "logistic"}])
def test_leave_site_out_permutations_refit_only_the_models_with_the_same_null(tmp_path, over):
    # nothing before the models sees a label, so refitting the models alone on cached
    # features must give exactly the null of refitting every step
    from decoder.features.connectome import split_half_covariances, subject_covariances
    root = make_layout(tmp_path / "abide", n_sites=3, per_site=10, signal=0.5)
    cfg = _config(**over)
    subjects = biomarker.load_subjects(cfg, root)     # the layout records mean FD
    covs = subject_covariances(subjects.time_series)
    halves = split_half_covariances(subjects.time_series)
    diag = subjects.diagnosis.astype(str)
    cov = biomarker.model_covariates(cfg, subjects)
    perms = biomarker.within_site_permutations(diag, subjects.sites, 3, random_state=0)
    for perm in perms:                                   # each site keeps its class balance
        for s in np.unique(subjects.sites):
            m = subjects.sites == s
            assert sorted(perm[m]) == sorted(diag[m])
    fast = biomarker._permutation_null_fixed_folds(cfg, covs, diag, subjects.sites, cov,
                                                   perms, halves)
    # with the fold classifiers of the observed evaluation reused, the same null again
    fitted = []
    biomarker.cross_validate(cfg, covs, diag, subjects.sites, cov, halves=halves,
                             estimators=fitted)
    assert biomarker._permutation_null_fixed_folds(
        cfg, covs, diag, subjects.sites, cov, perms, halves, fitted) == pytest.approx(
            fast, abs=1e-12)
    slow = []
    for perm in perms:
        proba, _ = biomarker.cross_validate(cfg, covs, diag, subjects.sites, cov, labels=perm,
                                            halves=halves)
        slow.append(np.mean((proba[0] > 0.5) == (perm == "autism")))
    assert fast == pytest.approx(slow, abs=1e-12)
    assert len(set(np.round(fast, 6))) > 1 or len(fast) == 1   # the labels really changed


def test_permutation_p_is_reported_when_asked(tmp_path):
    root = make_layout(tmp_path / "abide", n_sites=3, per_site=8, signal=0.9)
    metrics = biomarker.run(_config(n_permutations=3, save_model=False), data=root,
                            out=tmp_path / "o")
    assert 0 < metrics["permutation_p"] <= 1
    assert np.load(tmp_path / "o" / "arrays.npz")["permutation_null"].shape == (3,)


def test_single_subject_site_is_logged_not_fatal(tmp_path, caplog):
    root = make_layout(tmp_path / "abide", n_sites=3, per_site=8)
    import pandas as pd
    pheno = pd.read_csv(root / "Phenotypic_V1_0b_preprocessed1.csv", index_col=0)
    pheno.loc[pheno["FILE_ID"] == "SITE2_0000200", "SITE_ID"] = "SOLO"
    pheno.to_csv(root / "Phenotypic_V1_0b_preprocessed1.csv")
    with caplog.at_level("WARNING"):
        metrics = biomarker.run(_config(**{"harmonize.method": "combat", "save_model": False}),
                                data=root, out=tmp_path / "o")
    assert "SOLO" in caplog.text
    assert metrics["per_site"]["SOLO"]["n"] == 1 and metrics["per_site"]["SOLO"]["roc_auc"] is None


@pytest.mark.shared
@pytest.mark.skipif(not SHARED, reason="DECODER_SHARED_DATA not set: real ABIDE data absent")
def test_real_abide_three_sites_leave_site_out(tmp_path):
    root = Path(SHARED) / "abide_pcp"
    if not root.is_dir():
        pytest.skip(f"{root} absent")
    cfg = _config(**{"dataset.sites": ["NYU", "UM_1", "USM"], "save_model": False})
    metrics = biomarker.run(cfg, data=root, out=tmp_path / "o")
    assert metrics["n_samples"] == 172 + 86 + 67
    assert set(metrics["per_site"]) == {"NYU", "UM_1", "USM"}
    assert metrics["roc_auc"] > 0.6  # real signal generalises to an unseen site


def test_relative_data_path_is_read_from_the_working_directory(tmp_path, monkeypatch):
    make_layout(tmp_path / "data" / "abide", n_sites=3, per_site=8, signal=0.9)
    monkeypatch.chdir(tmp_path)
    rc = main(["run", str(CONFIG), "--data", "data/abide", "--out", "run",
               "--set", "save_model=false"])
    assert rc == 0
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["n_samples"] == 24
    assert Path(metrics["dataset"]["root"]) == tmp_path / "data" / "abide"


def test_run_reports_the_connections_that_go_with_the_output(tmp_path):
    root = make_layout(tmp_path / "abide", n_sites=3, per_site=12, signal=0.9)
    out = tmp_path / "run"
    assert main(["run", str(CONFIG), "--data", str(root), "--out", str(out),
                 "--set", "save_model=false"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    edges = metrics["edges"]
    assert edges["kind"] == "correlation" and edges["n_folds"] == 3 and len(edges["top"]) == 10
    table = pd.read_csv(out / "edges.tsv", sep="\t")
    assert len(table) == 6 * 5 // 2
    # the planted coupling: regions 10-11 are coupled positively in autism, negatively in controls
    top = table.iloc[0]
    assert (top.region_a, top.region_b) == (10, 11)
    assert top.higher_in == "autism" and top.pattern > 0.8 and top.sign_consistency == 1.0
    assert edges["top"][0]["regions"] == ["10", "11"]
    # rois_ho codes carry their Harvard-Oxford names
    assert edges["top"][0]["names"] == ["Left Thalamus", "Left Caudate"]
    assert (top.name_a, top.name_b) == ("Left Thalamus", "Left Caudate")
    html = (out / "report.html").read_text()
    assert "go with the classifier" in html and "Left Thalamus" in html


@pytest.mark.parametrize("setting, named", [
    ("model=forest", "model 'forest'"),
    ("cv=leave-one-run-out", "cv 'leave-one-run-out'"),
    ("connectivity.kinds=tangent,covariance", "connectivity kind 'covariance'"),
    ("connectivity.reference=harmonic", "connectivity.reference 'harmonic'"),
    ("connectivity.shrinkage=1.5", "connectivity.shrinkage '1.5'"),
    ("harmonize.unseen_site=nearest", "harmonize.unseen_site 'nearest'"),
    ("n_splits=1", "n_splits '1'"),
    ("n_permutations=-5", "n_permutations must be a whole number from 0"),
    ("compute.n_jobs=0", "compute.n_jobs '0'"),
])
def test_a_wrong_choice_is_named_before_any_data_are_read(tmp_path, capsys, setting, named):
    # no --data at all: the config's own mistake is what the user needs to hear first
    rc = main(["run", str(CONFIG), "--out", str(tmp_path / "o"), "--set", setting])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and named in err and "fix:" in err, err
    assert "\n" not in err and "--data" not in err
    assert not (tmp_path / "o").exists()


def test_valid_choices_pass_the_config_check():
    from pipelines import resolve_config
    from pipelines.biomarker import check_config
    for sets in ({}, {"cv": "stratified-10fold", "connectivity": {"shrinkage": 0.2}},
                 {"cv": "repeated-stratified-kfold", "connectivity": {"shrinkage": "none",
                                                                       "reference": "geometric"},
                  "harmonize": {"method": "none", "unseen_site": "pooled"}, "model": "svm"}):
        check_config(resolve_config({"task": "biomarker", **sets}))


def test_without_data_the_error_says_where_to_get_them(tmp_path, capsys):
    rc = main(["run", str(CONFIG), "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "--data" in err and "decoder fetch abide-pcp" in err and "\n" not in err


def test_scores_by_sex_and_age_band_come_from_the_held_out_predictions(tmp_path, capsys):
    root = make_layout(tmp_path / "abide", n_sites=3, per_site=12, signal=0.9)
    out = tmp_path / "run"
    assert main(["run", str(CONFIG), "--data", str(root), "--out", str(out),
                 "--set", "save_model=false"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    (acc_lo, acc_hi), (auc_lo, auc_hi) = metrics["accuracy_ci95"], metrics["roc_auc_ci95"]
    assert (f"95% CI: accuracy [{acc_lo:.3f}, {acc_hi:.3f}] (Wilson), roc_auc [{auc_lo:.3f}, "
            f"{auc_hi:.3f}] (DeLong)") in capsys.readouterr().out
    pred = pd.read_csv(out / "predictions.tsv", sep="\t")
    pheno = pd.read_csv(root / "Phenotypic_V1_0b_preprocessed1.csv").set_index("FILE_ID")
    # the subject's recorded sex (ABIDE: 1 male, 2 female) and age reach predictions.tsv
    assert list(pred["sex"]) == [{1: "male", 2: "female"}[pheno.loc[s, "SEX"]]
                                 for s in pred["subject"]]
    assert np.allclose(pred["age"], pheno.loc[pred["subject"], "AGE_AT_SCAN"])
    groups = metrics["per_subgroup"]
    assert list(groups["sex"]) == ["male", "female"]
    assert list(groups["age"]) == ["under 12", "12–17", "18 and over"]
    band = pd.cut(pred["age"], [0, 12, 18, np.inf], right=False,
                  labels=["under 12", "12–17", "18 and over"]).astype(str)
    for name, labels in (("sex", pred["sex"]), ("age", band)):
        assert sum(g["n"] for g in groups[name].values()) == len(pred)
        for label, g in groups[name].items():
            rows = pred[labels == label]
            correct = (rows["p_autism"] > 0.5) == (rows["diagnosis"] == "autism")
            n_autism = int((rows["diagnosis"] == "autism").sum())
            assert g["n"] == len(rows) and g["n_autism"] == n_autism
            assert g["accuracy"] == pytest.approx(correct.mean())
            assert g["accuracy_ci95"] == pytest.approx(_wilson(int(correct.sum()), len(rows)))
            auc_ci = auc_interval(rows["diagnosis"] == "autism", rows["p_autism"])
            assert g["roc_auc_ci95"] == (None if auc_ci is None else pytest.approx(auc_ci))
    # the pooled accuracy's interval too (subjects are independent), and the AUC's (DeLong)
    correct = (pred["p_autism"] > 0.5) == (pred["diagnosis"] == "autism")
    assert metrics["accuracy_ci95"] == pytest.approx(_wilson(int(correct.sum()), len(pred)))
    lo, hi = metrics["roc_auc_ci95"]
    assert lo < metrics["roc_auc"] < hi or metrics["roc_auc"] == 1.0
    assert metrics["roc_auc_ci95"] == pytest.approx(
        auc_interval(pred["diagnosis"] == "autism", pred["p_autism"]))


def _wilson(k, n):
    from scipy.stats import binomtest
    ci = binomtest(k, n).proportion_ci(confidence_level=0.95, method="wilson")
    return [ci.low, ci.high]


def test_a_subgroup_with_one_class_has_no_auc_and_empty_groups_are_left_out():
    diag = np.array(["autism", "control", "autism", "control", "autism"])
    proba = np.array([0.9, 0.2, 0.4, 0.3, 0.8])
    cov = pd.DataFrame({"age": [8.0, 9.0, 30.0, 31.0, np.nan], "sex": [1, 1, 2, 2, 2]})
    groups = biomarker.subject_groups(cov)
    assert list(groups["age"]) == ["under 12", "under 12", "18 and over", "18 and over", None]
    res = biomarker.per_subgroup_metrics(diag, proba, groups)
    assert list(res["age"]) == ["under 12", "18 and over"]        # no 12–17 subject
    assert res["sex"]["female"]["n"] == 3
    assert res["sex"]["female"]["accuracy"] == pytest.approx(2 / 3)
    assert res["sex"]["male"]["roc_auc"] == 1.0
    one_class = biomarker.per_subgroup_metrics(diag[:1], proba[:1],
                                               biomarker.subject_groups(cov[:1]))
    assert one_class["sex"]["male"]["roc_auc"] is None
    # sex codes are only named for datasets whose coding is known
    assert "sex" not in biomarker.subject_groups(cov, sex_coded=False)


def test_the_model_card_reports_and_cautions_on_the_subgroup_scores():
    from decoder.models.model_card import build_model_card, card_markdown
    per_subgroup = {"sex": {"male": {"n": 700, "n_autism": 340, "accuracy": 0.71, "roc_auc": 0.77},
                            "female": {"n": 140, "n_autism": 50, "accuracy": 0.62,
                                       "accuracy_ci95": [0.538, 0.696], "roc_auc": 0.70}},
                    "age": {"under 12": {"n": 200, "n_autism": 80, "accuracy": 0.66,
                                         "roc_auc": 0.72}}}
    card = build_model_card({"accuracy": 0.7, "per_subgroup": per_subgroup},
                            {"dataset": {"kind": "abide"}}, 840, ["A", "B"], list(range(5)))
    assert card["evaluation"]["per_subgroup"] == per_subgroup
    limitation = next(x for x in card["limitations"] if x.startswith("Held-out accuracy by group"))
    assert "male 0.710 (n=700), female 0.620 (n=140)" in limitation
    assert "under 12" not in limitation            # one band alone compares with nothing
    md = card_markdown(card)
    assert "| female | 140 | 50 | 0.620 | 0.538–0.696 | 0.700 |" in md
    assert "| male | 700 | 340 | 0.710 | — | 0.770 |" in md and "| age band (years) |" in md
    assert not [x for x in build_model_card({}, {}, 1, ["A"], [0])["limitations"]
                if x.startswith("Held-out accuracy by group")]
    # whom the model was trained on comes from the data, not from a fixed sentence
    aged = build_model_card({"per_subgroup": per_subgroup}, {"dataset": {"kind": "abide"}}, 840,
                            ["A"], [0], ages=[6.5, 58.0])
    assert aged["data"]["ages"] == [6.5, 58.0] and "ages 6.5–58 years" in card_markdown(aged)
    assert ("Training subjects: 700 male and 140 female, aged 6.5–58 years. Subjects outside "
            "these ages") in " ".join(aged["limitations"])


@pytest.mark.parametrize("cv", ["leave-site-out", "stratified-kfold"])
def test_folds_in_parallel_processes_give_identical_results(tmp_path, cv):
    root = make_layout(tmp_path / "abide", n_sites=3, per_site=10, signal=0.8)
    runs = {}
    for n_jobs in (1, 2):
        out = tmp_path / f"j{n_jobs}"
        assert main(["run", str(CONFIG), "--data", str(root), "--out", str(out), "--set",
                     f"cv={cv}", "--set", "n_splits=3", "--set", "n_permutations=4",
                     "--set", "save_model=false", "--set", f"compute.n_jobs={n_jobs}"]) == 0
        runs[n_jobs] = (pd.read_csv(out / "predictions.tsv", sep="\t"),
                        json.loads((out / "metrics.json").read_text()),
                        np.load(out / "arrays.npz")["permutation_null"])
    (p1, m1, null1), (p2, m2, null2) = runs[1], runs[2]
    assert np.array_equal(p1["p_autism"], p2["p_autism"]) and list(p1["fold"]) == list(p2["fold"])
    assert m1["edges"] == m2["edges"] and m1["permutation_p"] == m2["permutation_p"]
    assert np.array_equal(null1, null2) and len(null1) == 4


def test_the_interval_with_sites_resampled_comes_from_the_held_out_predictions(tmp_path, capsys):
    from decoder.evaluation.metrics import cluster_bootstrap_interval
    root = make_layout(tmp_path / "abide", n_sites=5, per_site=10, signal=0.9)
    out = tmp_path / "run"
    assert main(["run", str(CONFIG), "--data", str(root), "--out", str(out),
                 "--set", "save_model=false", "--set", "random_state=3"]) == 0
    boot = json.loads((out / "metrics.json").read_text())["site_bootstrap"]
    pred = pd.read_csv(out / "predictions.tsv", sep="\t")
    again = cluster_bootstrap_interval(pred["diagnosis"] == "autism", pred["p_autism"],
                                       pred["site"], random_state=3)
    assert boot["n_clusters"] == 5 and boot["accuracy_ci95"] == pytest.approx(
        again["accuracy_ci95"])
    lo, hi = boot["accuracy_ci95"]
    assert (f"95% CI with sites resampled (5 sites, BCa bootstrap): accuracy [{lo:.3f}, "
            f"{hi:.3f}]") in capsys.readouterr().out


def test_a_later_run_in_the_same_folder_leaves_nothing_of_the_earlier_one(tmp_path):
    root = make_layout(tmp_path / "abide", n_sites=3, per_site=8)
    out = tmp_path / "run"
    assert main(["run", str(CONFIG), "--data", str(root), "--out", str(out)]) == 0
    first = json.loads((out / "metrics.json").read_text())["files"]
    assert {"model.skops", "model_card.json", "model_card.md", "predictions.tsv"} <= set(first)
    assert all((out / f).is_file() for f in first)
    (out / "my_notes.txt").write_text("mine")
    assert main(["run", str(CONFIG), "--data", str(root), "--out", str(out),
                 "--set", "save_model=false"]) == 0
    files = json.loads((out / "metrics.json").read_text())["files"]
    assert "model.skops" not in files
    for name in ("model.skops", "model_card.json", "model_card.md"):
        assert not (out / name).exists()       # a model of other settings would mislead
    assert (out / "my_notes.txt").read_text() == "mine"   # not a file of a run: kept
    # a folder written before runs listed their files: the files a run may write
    metrics = json.loads((out / "metrics.json").read_text())
    del metrics["files"]
    (out / "metrics.json").write_text(json.dumps(metrics))
    (out / "arrays.npz").write_bytes(b"an earlier permutation null")
    assert main(["run", str(CONFIG), "--data", str(root), "--out", str(out),
                 "--set", "save_model=false"]) == 0
    assert not (out / "arrays.npz").exists() and (out / "my_notes.txt").exists()


def test_files_of_your_own_in_a_folder_without_a_run_are_left_alone(tmp_path):
    root = make_layout(tmp_path / "abide", n_sites=3, per_site=8)
    out = tmp_path / "mine"
    out.mkdir()
    for name in ("arrays.npz", "edges.tsv", "repeats.tsv"):   # names a run may write too
        (out / name).write_text(f"my {name}")
    assert main(["run", str(CONFIG), "--data", str(root), "--out", str(out),
                 "--set", "save_model=false"]) == 0
    assert (out / "arrays.npz").read_text() == "my arrays.npz"   # not written by a run
    assert (out / "repeats.tsv").read_text() == "my repeats.tsv"
    assert (out / "edges.tsv").read_text() != "my edges.tsv"     # the run's own, replaced


def test_a_run_that_fails_while_writing_leaves_the_earlier_run_whole(tmp_path, monkeypatch,
                                                                     capsys):
    import errno

    from decoder import results
    root = make_layout(tmp_path / "abide", n_sites=3, per_site=8)
    out = tmp_path / "run"
    assert main(["run", str(CONFIG), "--data", str(root), "--out", str(out)]) == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    calls = []

    def full_disk(path, data):  # the third file of the next run finds the disk full
        calls.append(path)
        if len(calls) == 3:
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        return real(path, data)

    real = results.atomic_write_bytes
    monkeypatch.setattr(results, "atomic_write_bytes", full_disk)
    assert main(["run", str(CONFIG), "--data", str(root), "--out", str(out),
                 "--set", "connectivity.kinds=[correlation]"]) != 0
    capsys.readouterr()
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before  # no staging left either


def test_an_output_folder_that_cannot_be_written_is_named_before_the_data_are_read(
        tmp_path, capsys):
    (tmp_path / "a_file").write_text("x")
    for out, named in ((tmp_path / "a_file", "exists and is not a folder"),
                       (tmp_path / "a_file" / "run", "is a file")):
        rc = main(["run", str(CONFIG), "--data", str(tmp_path / "no_such_data"),
                   "--out", str(out)])
        err = capsys.readouterr().err.strip()
        assert rc == 2 and named in err and "--out" in err and "\n" not in err


def test_a_dataset_of_one_diagnosis_says_so(tmp_path, capsys):
    from test_abide_reader import _edit_table
    root = make_layout(tmp_path / "abide")
    _edit_table(root, lambda t: t.assign(DX_GROUP=1))
    rc = main(["run", str(CONFIG), "--data", str(root), "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "all 24 subjects are autism" in err and "\n" not in err


@pytest.mark.parametrize("sets, named", [
    (["model_params.foo=1"], "model_params.foo is not a parameter of model 'ridge'"),
    (["model_params.alphas=abc"], "ridge alphas 'abc' are not positive numbers"),
    (["model=svm", "model_params.tol=abc"], "The 'tol' parameter of LinearSVC"),
    (["model=mlp", "model_params.hidden=abc"], "The 'hidden' parameter of TorchMLPClassifier"),
])
def test_model_parameters_are_checked_before_the_data(tmp_path, capsys, sets, named):
    args = [a for s in sets for a in ("--set", s)]
    rc = main(["run", str(CONFIG), "--out", str(tmp_path / "o"), *args])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and named in err and "\n" not in err and "--data" not in err


def test_more_group_folds_than_sites_is_a_one_line_error(tmp_path, capsys):
    root = make_layout(tmp_path / "abide", n_sites=3, per_site=8)
    rc = main(["run", str(CONFIG), "--data", str(root), "--out", str(tmp_path / "o"),
               "--set", "cv=stratified-group-kfold", "--set", "n_splits=5"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "needs at least 5 sites, the data have 3" in err and "\n" not in err


def test_excluding_a_subject_that_does_not_exist_is_an_error(tmp_path, capsys):
    root = make_layout(tmp_path / "abide", n_sites=3, per_site=8)
    rc = main(["run", str(CONFIG), "--data", str(root), "--out", str(tmp_path / "o"),
               "--set", "dataset.exclude=SITE0_0000001,NOPE_001"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "dataset.exclude: 'NOPE_001' is not a FILE_ID" in err


def test_an_excluded_subjects_damaged_file_is_never_read(tmp_path, capsys):
    # the one-line error for a truncated file says to exclude the subject: that must work
    root = make_layout(tmp_path / "abide", n_sites=3, per_site=8)
    damaged = root / "Outputs/cpac/filt_noglobal/rois_ho/SITE0_0000001_rois_ho.1D"
    damaged.write_text(damaged.read_text().splitlines()[0] + "\n1\t2\t3\t4\t5\t6\n")
    args = ["run", str(CONFIG), "--data", str(root), "--out", str(tmp_path / "o"),
            "--set", "save_model=false", "--set", "cv=stratified-kfold", "--set", "n_splits=2"]
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert "SITE0_0000001_rois_ho.1D: 1 time points, at least 20" in err
    assert "--set dataset.exclude=SITE0_0000001" in err
    assert main([*args, "--set", "dataset.exclude=SITE0_0000001"]) == 0
    metrics = json.loads((tmp_path / "o" / "metrics.json").read_text())
    assert metrics["n_samples"] == 23


@pytest.mark.parametrize("cv", ["leave-site-out", "stratified-kfold"])
def test_folds_on_a_dask_cluster_give_the_results_of_local_folds(tmp_path, cv):
    """compute.scheduler sends the folds (and the permutations' folds) to Dask workers."""
    distributed = pytest.importorskip("distributed")
    from pipelines import biomarker
    root = make_layout(tmp_path / "abide", n_sites=3, per_site=10, signal=0.8)
    common = ["--data", str(root), "--set", f"cv={cv}", "--set", "n_splits=3",
              "--set", "n_permutations=3", "--set", "save_model=false"]
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  host="127.0.0.1", dashboard_address=None) as cluster:
        assert main(["run", str(CONFIG), "--out", str(tmp_path / "dask"), *common,
                     "--scheduler", cluster.scheduler_address]) == 0
        assert not biomarker._FOLD_CLUSTERS           # its client closed with the run
        # the folds ran there: 3 folds, and under stratified folds 3 per permutation too
        ran = {name: prefix.state_counts.get("memory", 0)
               for name, prefix in cluster.scheduler.task_prefixes.items()}
        assert ran.get("fit_fold", 0) == (3 if cv == "leave-site-out" else 3 * 4)
        assert ran.get("fold_null", 0) == (3 if cv == "leave-site-out" else 0)
    assert main(["run", str(CONFIG), "--out", str(tmp_path / "local"), *common]) == 0
    runs = {}
    for name in ("dask", "local"):
        out = tmp_path / name
        runs[name] = (pd.read_csv(out / "predictions.tsv", sep="\t"),
                      json.loads((out / "metrics.json").read_text()),
                      np.load(out / "arrays.npz")["permutation_null"])
    (p1, m1, n1), (p2, m2, n2) = runs["dask"], runs["local"]
    assert np.array_equal(p1["p_autism"], p2["p_autism"]) and list(p1["fold"]) == list(p2["fold"])
    assert m1["edges"] == m2["edges"] and m1["permutation_p"] == m2["permutation_p"]
    assert np.array_equal(n1, n2) and len(n1) == 3


def test_a_scheduler_that_is_not_an_address_stops_a_dry_run(tmp_path, capsys):
    rc = main(["run", str(CONFIG), "--out", str(tmp_path / "o"), "--dry-run",
               "--scheduler", "my cluster"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "is not a scheduler address" in err and "\n" not in err


def test_a_scheduler_in_the_environment_that_is_not_an_address_stops_a_dry_run(
        tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("DECODER_SCHEDULER", "not an address")
    rc = main(["run", str(CONFIG), "--out", str(tmp_path / "o"), "--dry-run"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "is not a scheduler address" in err
