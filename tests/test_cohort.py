"""`decoder predict` on a cohort: a saved model applied to many subjects at once, scored
where their diagnoses are known, with a new site harmonised as in the evaluation."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from decoder.cli import main
from decoder.errors import DataError
from decoder.evaluation.metrics import wilson_interval
from pipelines import biomarker
from pipelines.cohort import predict_cohort, read_participants

from test_abide_reader import make_layout

CONFIG = Path(__file__).resolve().parents[1] / "configs" / "abide.yaml"


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A ComBat model trained on sites 0–2 of a toy ABIDE layout; site 3 is a new cohort."""
    tmp = tmp_path_factory.mktemp("cohort")
    root = make_layout(tmp / "abide", n_sites=4, per_site=10, signal=0.9)
    out = tmp / "run"
    assert main(["run", str(CONFIG), "--data", str(root), "--out", str(out),
                 "--set", "dataset.sites=SITE0,SITE1,SITE2"]) == 0
    folder = root / "Outputs" / "cpac" / "filt_noglobal" / "rois_ho"
    new = sorted(folder.glob("SITE3_*.1D"))
    seen = sorted(folder.glob("SITE0_*.1D"))[:3]
    return {"root": root, "model": out / "model.skops", "new": new, "seen": seen,
            "table": root / "Phenotypic_V1_0b_preprocessed1.csv"}


def _ages(tmp_path, files, site=None):
    """A participants table giving each file an age and a sex (and a site)."""
    path = tmp_path / "participants.tsv"
    ids = [Path(f).name[:-len(".1D")] for f in files]
    rows = [f"{i}\t{10 + k}\t{1 + k % 2}" + (f"\t{site}" if site else "")
            for k, i in enumerate(ids)]
    path.write_text("subject\tage\tsex" + ("\tsite" if site else "") + "\n"
                    + "\n".join(rows) + "\n")
    return path, pd.DataFrame({"age": [10.0 + k for k in range(len(ids))],
                               "sex": [1.0 + k % 2 for k in range(len(ids))]})


def test_a_new_site_is_harmonised_with_its_own_subjects_as_in_the_evaluation(trained,
                                                                               tmp_path):
    participants, covariates = _ages(tmp_path, trained["new"])
    table, _ = predict_cohort(trained["new"], trained["model"], participants, site="SITE3")
    bundle = biomarker.load_model(trained["model"])
    est = bundle["estimator"]
    series = [biomarker.read_subject_input(f) for f in trained["new"]]
    together = est.predict_proba(series, sites=np.array(["SITE3"] * len(series)),
                                 covariates=covariates)[:, list(est.classes_).index("autism")]
    assert np.allclose(table["p_autism"], together)
    # one by one, a subject of an unseen site can have no site adjustment: not the same
    alone = [biomarker.predict_subject(ts, bundle, site="SITE3", age=a, sex=x)["probability"]
             for ts, a, x in zip(series, covariates["age"], covariates["sex"])]
    assert not np.allclose(table["p_autism"], alone)
    # ... which is what subjects without a site get, even when predicted together
    unsited, _ = predict_cohort(trained["new"], trained["model"])
    assert np.allclose(unsited["p_autism"], alone)
    assert list(table.index) == [f.name[:-len(".1D")] for f in trained["new"]]
    # a new site is adjusted with each subject's age and sex: without them, an error
    with pytest.raises(DataError, match="new site 'SITE3' with ComBat and needs each "
                                        "subject's age"):
        predict_cohort(trained["new"], trained["model"], site="SITE3")


def test_with_abides_table_the_cohort_is_scored_and_training_subjects_are_left_out(
        trained, tmp_path, capsys):
    out = tmp_path / "cohort.tsv"
    files = [str(f) for f in trained["new"] + trained["seen"]]
    assert main(["predict", str(trained["model"]), *files,
                 "--participants", str(trained["table"]), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    table = pd.read_csv(out, sep="\t")
    summary = json.loads(out.with_suffix(".json").read_text())
    pheno = pd.read_csv(trained["table"]).set_index("FILE_ID")
    # each file found its row: site, age, sex and diagnosis from the phenotypic table
    assert list(table["site"]) == list(pheno.loc[table["subject"], "SITE_ID"])
    assert np.allclose(table["age"], pheno.loc[table["subject"], "AGE_AT_SCAN"])
    assert list(table["sex"]) == list(pheno.loc[table["subject"], "SEX"])  # codes, as given
    assert set(pd.read_csv(out, sep="\t", dtype=str)["sex"]) <= {"1", "2"}  # not 2.0
    assert list(table["diagnosis"]) == [{1: "autism", 2: "control"}[d]
                                        for d in pheno.loc[table["subject"], "DX_GROUP"]]
    # SITE0 subjects trained the model: flagged, and not scored
    assert list(table["in_training"]) == [False] * 10 + [True] * 3
    assert summary["n_in_training"] == 3
    new = table[~table["in_training"]]
    correct = (new["p_autism"] > 0.5) == (new["diagnosis"] == "autism")
    scores = summary["scores"]
    assert scores["n"] == 10 and scores["accuracy"] == pytest.approx(correct.mean())
    assert scores["accuracy_ci95"] == pytest.approx(
        list(wilson_interval(int(correct.sum()), len(new))))
    assert list(scores["per_site"]) == ["SITE3"]
    # calibration at the new site: the mean probability against the observed rate
    from sklearn.metrics import brier_score_loss
    positive = (new["diagnosis"] == "autism").to_numpy()
    cal = scores["calibration"]
    assert cal["mean_predicted"] == pytest.approx(new["p_autism"].mean())
    assert cal["observed_rate"] == pytest.approx(positive.mean())
    assert cal["brier"] == pytest.approx(brier_score_loss(positive, new["p_autism"]))
    assert sum(b["n"] for b in cal["bins"]) == 10
    assert f"Brier score {cal['brier']:.3f}" in printed
    assert "3 of them were training subjects of the model, left out of the scores" in printed
    assert f"accuracy {scores['accuracy']:.3f}" in printed
    # the new site, named in the table, was harmonised with its own subjects
    pheno_ages = tmp_path / "ages.tsv"
    pheno_ages.write_text("subject\tage\tsex\n" + "".join(
        f"{i}_rois_ho\t{pheno.loc[i, 'AGE_AT_SCAN']}\t{pheno.loc[i, 'SEX']}\n"
        for i in new["subject"]))
    again, _ = predict_cohort(trained["new"], trained["model"], pheno_ages, site="SITE3")
    assert np.allclose(new["p_autism"], again["p_autism"])


def test_a_cohort_out_named_json_keeps_the_table_beside_it_not_under_it(trained, tmp_path):
    out = tmp_path / "p.json"
    assert main(["predict", str(trained["model"]), *map(str, trained["new"][:2]),
                 "--out", str(out)]) == 0
    # the summary is the .json asked for; the table did not get overwritten by it
    assert json.loads(out.read_text())["table"] == str(tmp_path / "p.tsv")
    assert len(pd.read_csv(tmp_path / "p.tsv", sep="\t")) == 2
    # a .csv table is comma-separated
    out = tmp_path / "p.csv"
    assert main(["predict", str(trained["model"]), *map(str, trained["new"][:2]),
                 "--out", str(out)]) == 0
    assert len(pd.read_csv(out)) == 2 and (tmp_path / "p.json").exists()


def test_the_cohort_summary_names_the_content_of_its_table(trained, tmp_path):
    import hashlib
    out = tmp_path / "p.tsv"
    assert main(["predict", str(trained["model"]), *map(str, trained["new"][:2]),
                 "--out", str(out)]) == 0
    summary = json.loads(out.with_suffix(".json").read_text())
    assert summary["table_sha256"] == hashlib.sha256(out.read_bytes()).hexdigest()
    # a table edited (or a rewrite interrupted) after the summary no longer matches it
    out.write_text(out.read_text().replace("\n", "\r\n"))
    assert summary["table_sha256"] != hashlib.sha256(out.read_bytes()).hexdigest()


def test_without_a_table_subjects_are_named_after_their_files_and_not_scored(trained, tmp_path):
    out = tmp_path / "p.tsv"
    assert main(["predict", str(trained["model"]), *map(str, trained["new"][:2]),
                 "--out", str(out)]) == 0
    table = pd.read_csv(out, sep="\t")
    assert list(table["subject"]) == [f.name[:-3] for f in trained["new"][:2]]
    assert json.loads(out.with_suffix(".json").read_text())["scores"] is None


def test_participants_tables_in_bids_words(tmp_path):
    path = tmp_path / "participants.tsv"
    path.write_text("participant_id\tsex\tage\tdiagnosis\tsite\n"
                    "sub-01\tF\t9.5\tASD\tA\nsub-02\tmale\t-9999\tcontrol\tA\nsub-03\t\t\t\tB\n")
    t = read_participants(path)
    assert list(t.index) == ["sub-01", "sub-02", "sub-03"]
    assert t["sex"].tolist()[:2] == [2.0, 1.0] and np.isnan(t["sex"].iloc[2])
    assert t["age"].iloc[0] == 9.5 and t["age"].isna().tolist()[1:] == [True, True]
    assert t["diagnosis"].tolist()[:2] == ["autism", "control"]
    assert pd.isna(t["diagnosis"].iloc[2])


@pytest.mark.parametrize("case", ["no row", "bad sex", "bad diagnosis", "no id column",
                                  "age for a cohort", "two rows", "empty"])
def test_cohort_errors_are_one_line_and_keep_earlier_predictions(trained, tmp_path, capsys,
                                                                 case):
    out = tmp_path / "predictions.tsv"
    out.write_text("earlier results\n")
    files = [str(f) for f in trained["new"][:3]]
    ids = [Path(f).name[:-len("_rois_ho.1D")] for f in files]
    table = tmp_path / "participants.tsv"
    rows = {"no row": [("subject", "sex"), (ids[0], "1"), (ids[1], "2")],
            "bad sex": [("subject", "sex"), *((i, "3") for i in ids)],
            "bad diagnosis": [("subject", "diagnosis"), *((i, "maybe") for i in ids)],
            "no id column": [("name", "sex"), *((i, "1") for i in ids)],
            "age for a cohort": [("subject",), *((i,) for i in ids)],
            "two rows": [("subject",), *((i,) for i in ids), (ids[0],)],
            "empty": []}[case]
    table.write_text("".join("\t".join(r) + "\n" for r in rows))
    extra = ["--age", "9"] if case == "age for a cohort" else []
    rc = main(["predict", str(trained["model"]), *files, "--participants", str(table),
               "--out", str(out), *extra])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "\n" not in err and "fix:" in err
    expected = {"no row": Path(files[2]).name, "bad sex": "sex '3'",
                "bad diagnosis": "diagnosis 'maybe'", "no id column": "no subject column",
                "age for a cohort": "--age applies to one subject",
                "two rows": "more than one row",
                "empty": "participants.tsv: the file is empty"}[case]
    assert expected in err
    assert out.read_text() == "earlier results\n"


def test_a_held_out_site_gets_exactly_its_leave_site_out_probabilities(trained, tmp_path):
    """Trained on the other sites and given the site's subjects with ABIDE's table, the
    saved model reproduces the site's fold of the leave-site-out evaluation."""
    lso = tmp_path / "lso"
    assert main(["run", str(CONFIG), "--data", str(trained["root"]), "--out", str(lso),
                 "--set", "save_model=false"]) == 0
    held_out = pd.read_csv(lso / "predictions.tsv", sep="\t").set_index("subject")
    table, scores = predict_cohort(trained["new"], trained["model"], trained["table"])
    assert np.allclose(table["p_autism"], held_out.loc[table.index, "p_autism"],
                       rtol=0, atol=1e-12)
    per_site = json.loads((lso / "metrics.json").read_text())["per_site"]["SITE3"]
    assert scores["accuracy"] == per_site["accuracy"]


def test_a_site_written_in_another_case_is_not_taken_for_a_new_site(trained, capsys):
    bundle = biomarker.load_model(trained["model"])
    ts = biomarker.read_subject_input(trained["seen"][0])
    with pytest.raises(DataError, match="site 'site0' is not one of the model's sites; did "
                                        "you mean 'SITE0'"):
        biomarker.predict_subject(ts, bundle, site="site0", age=12)
    rc = main(["predict", str(trained["model"]), str(trained["seen"][0]), "--site", "SITE0"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "needs the subject's age" in err and "predict_subject" not in err
    # a site the model never saw is said to get no adjustment
    result = biomarker.predict_subject(ts, bundle, site="ELSEWHERE", age=12)
    assert result["warnings"] == ["site 'ELSEWHERE' is not one of the model's 3 training "
                                  "sites: no site adjustment"]


def test_training_subjects_are_recognised_by_their_file_names_without_a_table(trained):
    table, _ = predict_cohort(trained["seen"] + trained["new"][:2], trained["model"])
    assert table["in_training"].tolist() == [True] * 3 + [False] * 2


@pytest.mark.parametrize("layout", ["tabs in a .csv", "semicolons", "trailing separators"])
def test_tables_are_read_whatever_separator_a_spreadsheet_used(tmp_path, layout):
    rows = [["subject", "age", "sex", "diagnosis"], ["s01", "9.5", "F", "ASD"],
            ["s02", "12", "M", "control"]]
    sep, suffix = {"tabs in a .csv": ("\t", ".csv"), "semicolons": (";", ".csv"),
                   "trailing separators": ("\t", ".tsv")}[layout]
    lines = [sep.join(r) for r in rows]
    if layout == "trailing separators":  # every data row ends with one more separator
        lines = [lines[0]] + [line + sep for line in lines[1:]]
    path = tmp_path / f"participants{suffix}"
    path.write_text("\n".join(lines) + "\n")
    t = read_participants(path)
    assert list(t.index) == ["s01", "s02"]
    assert t["age"].tolist() == [9.5, 12.0] and t["sex"].tolist() == [2.0, 1.0]
    assert t["diagnosis"].tolist() == ["autism", "control"]


@pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning")  # the point
def test_a_series_no_connectivity_can_be_computed_from_is_named(trained, tmp_path):
    good = trained["new"][0]
    bad = tmp_path / "SITE3_overflow_rois_ho.1D"
    ts = np.loadtxt(good, skiprows=1)
    np.savetxt(bad, ts * 1e200, delimiter="\t", header=good.read_text().splitlines()[0][1:])
    with pytest.raises(DataError, match=r"SITE3_overflow_rois_ho\.1D: "):
        predict_cohort([good, bad], trained["model"])


def test_each_subjects_unusual_series_is_noted_in_the_cohort_table(trained, tmp_path):
    model = biomarker.load_model(trained["model"])
    shortest = model["n_timepoints"][0]
    short = tmp_path / "SITE3_short_rois_ho.1D"
    lines = trained["new"][0].read_text().splitlines()
    short.write_text("\n".join(lines[:1 + shortest - 5]) + "\n")  # header + a shorter scan
    table, _ = predict_cohort([trained["new"][1], short], model)
    assert table["notes"].iloc[0] == ""
    assert table["notes"].iloc[1].startswith(f"{shortest - 5} time points, fewer than the "
                                             f"model's shortest training scan ({shortest})")


def test_one_subject_predicted_alone_is_flagged_when_the_model_was_trained_on_it(
        trained, tmp_path, capsys):
    for f, seen in ((trained["seen"][0], True), (trained["new"][0], False)):
        out = tmp_path / f"{f.stem}.json"
        assert main(["predict", str(trained["model"]), str(f), "--out", str(out)]) == 0
        printed = capsys.readouterr().out
        result = json.loads(out.read_text())
        assert result["in_training"] is seen
        assert ("one of the model's training subjects" in printed) is seen
        assert any("training subjects" in w for w in result["warnings"]) is seen


def test_an_age_outside_the_training_ages_is_noted(trained):
    bundle = biomarker.load_model(trained["model"])
    assert bundle["ages"] == [10.0, 21.0]         # sites 0-2 of the toy layout
    ts = biomarker.read_subject_input(trained["new"][0])
    assert not [w for w in biomarker.predict_subject(ts, bundle, age=15)["warnings"]
                if w.startswith("age")]
    notes = biomarker.predict_subject(ts, bundle, age=3)["warnings"]
    assert ("age 3 is outside the ages of the model's training subjects (10–21 years): the "
            "model has not learned from subjects of this age") in notes


def test_a_combat_model_says_when_a_subject_gets_no_site_adjustment(trained, caplog):
    bundle = biomarker.load_model(trained["model"])
    ts = biomarker.read_subject_input(trained["new"][0])
    notes = biomarker.predict_subject(ts, bundle)["warnings"]
    assert any(n.startswith("no site given: the scan gets no site adjustment") for n in notes)
    caplog.clear()
    notes = biomarker.predict_subject(ts, bundle, site="ELSEWHERE", age=12)["warnings"]
    assert notes == ["site 'ELSEWHERE' is not one of the model's 3 training sites: no site "
                     "adjustment"]
    assert "ComBat" not in caplog.text  # said once, in the notes


@pytest.mark.parametrize("row, named", [
    ("s01\t-5\t0.1", "age of 's01' is '-5'"),
    ("s01\ttwelve\t0.1", "age of 's01' is 'twelve'"),
    ("s01\t12\tabc", "mean_fd of 's01' is 'abc'"),
    ("s01\t12\t-0.2", "mean_fd of 's01' is '-0.2'"),
])
def test_participant_values_are_checked_like_the_single_subject_options(tmp_path, row, named):
    from pipelines.cohort import read_participants
    table = tmp_path / "participants.tsv"
    table.write_text("subject\tage\tmean_fd\n" + row + "\n")
    with pytest.raises(DataError, match=named):
        read_participants(table)
    table.write_text("subject\tage\tmean_fd\ns01\t-9999\t\ns02\t12.5\t0.1\n")  # ABIDE's code
    values = read_participants(table)
    assert pd.isna(values.loc["s01", "age"]) and values.loc["s02", "age"] == 12.5


@pytest.mark.parametrize("content, named", [
    (b"PK\x03\x04" + b"\x00" * 100, "an Excel workbook (.xlsx), not a text table"),
    ("subject\tage\ns01\t12\n".encode("utf-16"), "UTF-16 text"),
    ("subject\tage\ns\xe9b\t12\n".encode("latin-1"), "not UTF-8 text (byte 13)"),
])
def test_a_spreadsheet_not_saved_as_text_is_named_as_such(tmp_path, content, named):
    from pipelines.cohort import read_participants
    table = tmp_path / "participants.csv"
    table.write_bytes(content)
    with pytest.raises(DataError, match=named.replace("(", r"\(").replace(")", r"\)")) as err:
        read_participants(table)
    assert "save it from the spreadsheet as CSV or tab-separated text, UTF-8" in str(err.value)


def test_with_skip_bad_a_file_that_cannot_be_predicted_is_listed_and_the_rest_go_on(
        trained, tmp_path, capsys):
    good = [str(f) for f in trained["new"][:6]]
    short, empty = (tmp_path / f.name for f in trained["new"][6:8])  # rows in the table
    short.write_text("\n".join(Path(good[0]).read_text().splitlines()[:6]) + "\n")
    empty.write_text("")
    files = [good[0], str(short), *good[1:3], str(empty), *good[3:]]
    out = tmp_path / "cohort.tsv"
    # by default the first bad file stops everything, and says how to go on without it
    rc = main(["predict", str(trained["model"]), *files, "--participants",
               str(trained["table"]), "--out", str(out)])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "\n" not in err and err.count(short.name) == 1
    assert "--skip-bad" in err and not out.exists()
    assert main(["predict", str(trained["model"]), *files, "--participants",
                 str(trained["table"]), "--out", str(out), "--skip-bad"]) == 0
    printed = capsys.readouterr().out
    table = pd.read_csv(out, sep="\t", keep_default_na=False)
    summary = json.loads(out.with_suffix(".json").read_text())
    # every file keeps its row, in the order given; the bad ones say why, without a call
    assert list(table["input"]) == files and table.columns[-1] == "error"
    bad = table["error"] != ""
    assert list(bad) == [False, True, False, False, True, False, False, False]
    assert table.loc[bad, "error"].str.startswith(str(tmp_path)).all()
    assert (table.loc[bad, ["p_autism", "predicted"]] == "").all().all()
    assert summary["n_failed"] == 2 and summary["n_subjects"] == 8
    assert [f["input"] for f in summary["failed"]] == [str(short), str(empty)]
    assert "2 not predicted (--skip-bad)" in printed
    assert printed.count("not predicted: ") == 2
    # the others are predicted and scored exactly as they would be without the bad files
    # (the new site's ComBat estimated from the good subjects only)
    alone, scores = predict_cohort(good, trained["model"], trained["table"])
    assert np.allclose(table.loc[~bad, "p_autism"].astype(float), alone["p_autism"])
    assert summary["scores"]["n"] == scores["n"] == 6
    assert summary["scores"]["accuracy"] == pytest.approx(scores["accuracy"])


def test_a_file_the_participants_table_does_not_name_is_listed_with_skip_bad(trained,
                                                                             tmp_path, capsys):
    good = [str(f) for f in trained["new"][:4]]
    stranger = tmp_path / "stranger_rois_ho.1D"      # no row of the table names it
    stranger.write_bytes(Path(good[0]).read_bytes())
    files = [good[0], str(stranger), *good[1:]]
    out = tmp_path / "cohort.tsv"
    rc = main(["predict", str(trained["model"]), *files, "--participants",
               str(trained["table"]), "--out", str(out)])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and f"{stranger}: no row of" in err and "--skip-bad" in err
    assert main(["predict", str(trained["model"]), *files, "--participants",
                 str(trained["table"]), "--out", str(out), "--skip-bad"]) == 0
    table = pd.read_csv(out, sep="\t", keep_default_na=False)
    assert list(table["input"]) == files
    assert table["error"].tolist()[1].startswith(f"{stranger}: no row of")
    assert table.loc[1, "subject"] == "stranger_rois_ho" and table.loc[1, "diagnosis"] == ""
    alone, _ = predict_cohort(good, trained["model"], trained["table"])
    assert np.allclose(table.drop(index=1)["p_autism"].astype(float), alone["p_autism"])


def test_out_never_replaces_an_input_the_model_or_a_runs_own_predictions(trained, tmp_path,
                                                                           capsys):
    model = trained["model"]
    victim = tmp_path / trained["new"][0].name
    victim.write_bytes(trained["new"][0].read_bytes())
    table = tmp_path / "parts.tsv"
    table.write_bytes(trained["table"].read_bytes())
    run_predictions = model.parent / "predictions.tsv"
    before = {p: p.read_bytes() for p in (victim, table, model, run_predictions)}
    for argv in ([str(model), str(victim), "--out", str(victim)],
                 [str(model), str(victim), "--out", str(model)],
                 [str(model), str(victim), str(trained["new"][1]), "--participants", str(table),
                  "--out", str(table)],
                 [str(model), str(victim), str(trained["new"][1]),
                  "--out", str(run_predictions)]):
        assert main(["predict", *argv]) == 2
        err = capsys.readouterr().err.strip()
        assert "\n" not in err and "would be overwritten" in err
    assert {p: p.read_bytes() for p in before} == before


def test_a_training_subjects_file_under_another_name_is_still_recognised(trained, tmp_path,
                                                                         capsys):
    renamed = tmp_path / "renamed.1D"
    renamed.write_bytes(trained["seen"][0].read_bytes())
    out = tmp_path / "p.json"
    assert main(["predict", str(trained["model"]), str(renamed), "--out", str(out)]) == 0
    assert json.loads(out.read_text())["in_training"] is True
    capsys.readouterr()
    table, _ = predict_cohort([renamed, trained["new"][0]], trained["model"])
    assert list(table["in_training"]) == [True, False]
