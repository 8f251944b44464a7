"""The Streamlit app through ``streamlit.testing.v1.AppTest``: both pages and the error paths.

Every error must appear as one line in an ``st.error`` box, never as a
traceback (``at.exception`` stays empty).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip("streamlit")
from streamlit.testing.v1 import AppTest  # noqa: E402

from test_report import biomarker_run, category_run  # noqa: E402
from decoder.report import figures  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
APP = str(ROOT / "app.py")
EXAMPLES = ROOT / "decoder" / "data" / "_sample" / "abide_examples"


@pytest.fixture
def app(monkeypatch, tmp_path):
    monkeypatch.setenv("DECODER_MODEL", str(biomarker_run() / "model.skops"))
    monkeypatch.setenv("DECODER_RESULTS", str(tmp_path / "results"))
    at = AppTest.from_file(APP, default_timeout=120)
    return at.run()


def _errors(at):
    return [e.value for e in at.error]


def _no_traceback(at):
    assert len(at.exception) == 0, [e.value for e in at.exception]


def _metric(at, label):
    return next(m.value for m in at.metric if m.label == label)


# ------------------------------------------------------------------ biomarker page
def test_biomarker_page_opens_on_an_example_prediction(app):
    _no_traceback(app)
    assert _errors(app) == []
    assert any("Research use only" in w.value for w in app.warning)
    p = float(_metric(app, "Predicted probability of autism"))
    assert 0.0 <= p <= 1.0
    text = " ".join(m.value for m in app.markdown)
    assert f"Predicted probability of autism: {p:.2f}" in text
    assert "Uncertainty:" in text and "held-out training subject" in text
    assert any("Site NYU" in i.value for i in app.info)        # the site caveat
    assert any("Model card" in m.value for m in app.markdown)  # in its expander
    # the subject's strongest connections, and what the model goes with (from its card)
    assert len(app.dataframe) == 2
    model_edges = app.dataframe[1].value
    assert {"region a", "region b", "pattern r", "stronger in"} <= set(model_edges.columns)
    assert model_edges["region a"].str.match(r"(Left|Right) ").all()
    assert any("Activation patterns" in str(c.value) for c in app.caption)
    assert [b.label for b in app.get("download_button")] == [
        "Download this subject's report (HTML)"]


def test_each_example_subject_gets_its_own_prediction(app):
    options = app.selectbox(key="example").options
    assert len(options) == 4
    seen = {}
    for file_id in ("NYU_0050952", "USM_0050433"):
        app.selectbox(key="example").set_value(file_id).run()
        _no_traceback(app)
        assert any(h.value == f"Subject {file_id}" for h in app.subheader)
        seen[file_id] = _metric(app, "Predicted probability of autism")
    assert any("Site USM was not in training" in i.value for i in app.info)


def test_valid_time_series_upload_is_predicted(app):
    app.radio(key="source").set_value("Upload a time series").run()
    data = (EXAMPLES / "UM_1_0050272_rois_ho.1D").read_bytes()
    app.file_uploader(key="ts_upload").upload("UM_1_0050272_rois_ho.1D", data, "text/plain")
    app.selectbox(key="ts_site").set_value("another site (not in training)")
    app.run()
    _no_traceback(app)
    assert _errors(app) == []
    assert any(h.value == "Subject UM_1_0050272_rois_ho.1D" for h in app.subheader)
    assert 0.0 <= float(_metric(app, "Predicted probability of autism")) <= 1.0
    # "another site" is said as such, not as a site left unsaid
    assert any("The site was not in training" in i.value for i in app.info)
    assert not any("Site unknown" in i.value for i in app.info)


def test_an_upload_with_site_age_and_sex_gets_the_accuracy_of_its_subgroup(app):
    # the model harmonises its training sites with ComBat, which needs the subject's age
    card = json.loads((biomarker_run() / "model_card.json").read_text())
    groups = card["evaluation"]["per_subgroup"]
    app.radio(key="source").set_value("Upload a time series").run()
    data = (EXAMPLES / "UM_1_0050272_rois_ho.1D").read_bytes()
    app.file_uploader(key="ts_upload").upload("UM_1_0050272_rois_ho.1D", data, "text/plain")
    app.selectbox(key="ts_site").set_value("SITE0")
    app.number_input(key="ts_age").set_value(14.0)
    app.selectbox(key="ts_sex").set_value("male")
    app.run()
    _no_traceback(app)
    assert _errors(app) == []
    assert any("Site SITE0 was part of training" in i.value for i in app.info)
    line = next(str(c.value) for c in app.caption if "subjects like this one" in str(c.value))
    male, teen = groups["sex"]["male"], groups["age"]["12–17"]
    for what, g in (("male", male), ("age 12–17", teen)):
        lo, hi = g["accuracy_ci95"]
        assert f"{what} {g['accuracy']:.2f} (n={g['n']}, 95% CI {lo:.2f}–{hi:.2f})" in line
    assert f"all subjects {card['evaluation']['accuracy']:.2f}" in line


@pytest.mark.parametrize("name,data,message", [
    ("s.csv", b"1,2,3\n4,5,6\n7,8,9\n", "3 regions, the model expects 111"),
    ("s.csv", b"\x80\x04\x95\x00\x00pickle", "binary file, not a text table"),
    ("s.tsv", b"1\t2\nx\ty\n", "s.tsv"),
])
def test_invalid_time_series_uploads_show_one_line_errors(app, name, data, message):
    app.radio(key="source").set_value("Upload a time series").run()
    app.file_uploader(key="ts_upload").upload(name, data, "text/plain").run()
    _no_traceback(app)
    errors = _errors(app)
    assert len(errors) == 1 and message in errors[0] and "\n" not in errors[0]
    assert not any(m.label.startswith("Predicted") for m in app.metric)


def test_bold_upload_without_an_atlas_waits_and_a_bad_image_is_an_error(app):
    app.radio(key="source").set_value("Upload a BOLD image").run()
    app.file_uploader(key="bold_upload").upload("b.nii.gz", b"not gzip" * 100,
                                                 "application/gzip").run()
    assert _errors(app) == []  # nothing happens before an atlas is chosen
    # no bundled atlas has the model's regions: none is offered, and the page says which
    assert app.selectbox(key="atlas").options == ["Upload a labels atlas"]
    assert any("the atlas the model was trained with (ABIDE rois_ho" in str(c.value)
               for c in app.caption)
    import gzip
    import io

    import nibabel as nib
    import numpy as np
    atlas = nib.Nifti1Image(np.arange(8, dtype=np.int16).reshape(2, 2, 2), np.eye(4))
    raw = io.BytesIO()
    raw.write(atlas.to_bytes())
    app.file_uploader(key="atlas_upload").upload("atlas.nii.gz", gzip.compress(raw.getvalue()),
                                                  "application/gzip").run()
    _no_traceback(app)
    assert len(_errors(app)) == 1 and "not gzip-compressed NIfTI" in _errors(app)[0]


def test_a_missing_model_is_a_one_line_error_on_the_page(monkeypatch, tmp_path):
    monkeypatch.setenv("DECODER_MODEL", str(tmp_path / "absent.skops"))
    at = AppTest.from_file(APP, default_timeout=60).run()
    _no_traceback(at)
    errors = _errors(at)
    assert len(errors) == 1 and "biomarker model not found" in errors[0] and "fix:" in errors[0]


# ------------------------------------------------------------------ decoding page
def test_decoding_page_shows_a_run_directory(app):
    app.radio(key="page").set_value("Decoding").run()
    app.text_input(key="run_dir").set_value(str(category_run())).run()
    _no_traceback(app)
    assert _errors(app) == []
    assert _metric(app, "Accuracy") == "0.812"
    assert _metric(app, "Permutation p") == f"{1 / 61:.3f}"
    # confusion matrix, per-class, folds, permutation histogram, weight maps
    assert len(app.get("image")) == 5
    assert len(app.get("download_button")) == 1
    assert any(c in " ".join(str(e.value) for e in app.code) for c in ("dual-ridge",))


def test_decoding_page_shows_the_searchlight_of_a_run(app, tmp_path):
    from pipelines import run_config
    out = tmp_path / "searchlight"
    run_config({"task": "category", "classes": ["face", "house", "cat"], "delay": 0.0,
                "window": 3, "searchlight": {"radius": 6, "n_permutations": 19}}, out=out)
    app.radio(key="page").set_value("Decoding").run()
    app.text_input(key="run_dir").set_value(str(out)).run()
    _no_traceback(app)
    assert any(m.value == "**Searchlight**" for m in app.markdown)
    facts = next(t.value for t in app.table if "peak accuracy" in t.value.columns)
    assert "530 spheres" in facts["radius"].iloc[0]
    assert "spheres with p_FWE ≤ 0.05" in facts["family-wise error"].iloc[0]
    assert any("neighbouring spheres share voxels" in str(c.value) for c in app.caption)


def test_decoding_page_shows_what_the_run_warned_about(app, tmp_path):
    import json
    import shutil
    run = tmp_path / "run"
    shutil.copytree(category_run(), run)
    m = json.loads((run / "metrics.json").read_text())
    m["warnings"] = ["betas: the trial regressors are nearly collinear"]
    (run / "metrics.json").write_text(json.dumps(m))
    app.radio(key="page").set_value("Decoding").run()
    app.text_input(key="run_dir").set_value(str(run)).run()
    _no_traceback(app)
    assert any(w.value == "During the run: betas: the trial regressors are nearly collinear"
               for w in app.warning)


def test_decoding_page_lists_runs_under_results(monkeypatch, tmp_path):
    from test_report import make_category_run
    monkeypatch.setenv("DECODER_MODEL", str(biomarker_run() / "model.skops"))
    monkeypatch.setenv("DECODER_RESULTS", str(tmp_path / "results"))
    make_category_run(tmp_path / "results" / "haxby", report=False)
    at = AppTest.from_file(APP, default_timeout=60).run()
    at.radio(key="page").set_value("Decoding").run()
    assert at.text_input(key="run_dir").value == str(tmp_path / "results" / "haxby")
    assert _metric(at, "Accuracy") == "0.812"


def test_decoding_page_shows_a_biomarker_run_with_its_site_table(app):
    app.radio(key="page").set_value("Decoding").run()
    app.text_input(key="run_dir").set_value(str(biomarker_run())).run()
    _no_traceback(app)
    sites = app.dataframe[0].value["site"].tolist()
    assert sites == ["SITE0", "SITE1", "SITE2"]
    # the confound check and the edge patterns (matrix, glass brain, named table), as in
    # the report
    text = " ".join(str(e.value) for e in app.markdown)
    assert "Confound check (head motion)" in text and "Connections that go with" in text
    # held-out scores by sex and age band (the toy subjects are boys aged 10 to 17)
    groups = app.dataframe[1].value
    assert list(groups["group"]) == ["male", "under 12", "12–17"]
    assert groups["n"].tolist() == [24, 6, 18]
    assert "mean_fd" in " ".join(app.dataframe[2].value.astype(str).to_numpy().ravel())
    edges = app.dataframe[3].value
    assert {"region a", "region b", "pattern r"} <= set(edges.columns)
    assert edges["region a"].str.match(r"(Left|Right) ").all()
    # per-site bars, pattern matrix, patterns on a glass brain, and the figures of any run
    assert len(app.get("image")) >= 3
    assert any("Pattern r" in str(c.value) for c in app.caption)


@pytest.mark.parametrize("make,message", [
    (lambda p: p / "nowhere", "run directory not found"),
    (lambda p: p, "no metrics.json"),
])
def test_bad_run_directories_are_one_line_errors(app, tmp_path, make, message):
    app.radio(key="page").set_value("Decoding").run()
    app.text_input(key="run_dir").set_value(str(make(tmp_path))).run()
    _no_traceback(app)
    errors = _errors(app)
    assert len(errors) == 1 and message in errors[0]


def test_running_the_embedded_haxby_sample_from_the_page(app):
    app.radio(key="page").set_value("Decoding").run()
    app.radio(key="results_source").set_value("Run the embedded Haxby sample").run()
    assert len(app.get("image")) == 0
    app.number_input(key="n_permutations").set_value(10)
    app.button(key="run_haxby").click().run(timeout=300)
    _no_traceback(app)
    assert _errors(app) == []
    assert float(_metric(app, "Accuracy")) > 0.5  # 8 categories, chance 0.125
    out = Path(app.session_state["haxby_run"])
    assert (out / "metrics.json").is_file() and (out / "report.html").is_file()
    assert json.loads((out / "metrics.json").read_text())["n_permutations"] == 10
    assert len(app.get("image")) == 5
    classes = json.loads((out / "metrics.json").read_text())["classes"]
    assert classes == ["bottle", "cat", "chair", "face", "house", "scissors", "scrambledpix",
                       "shoe"]


def test_a_cohort_of_uploads_is_predicted_scored_and_downloadable(app):
    app.radio(key="source").set_value("Upload a cohort").run()
    _no_traceback(app)
    assert not any(h.value.startswith("Cohort") for h in app.subheader)  # waits for files
    app.checkbox(key="cohort_ex").check().run()  # the embedded subjects, with diagnoses
    _no_traceback(app)
    assert _errors(app) == []
    assert any(h.value == "Cohort: 4 subjects" for h in app.subheader)
    assert _metric(app, "With a diagnosis") == "4"
    assert any("Brier score" in c.value for c in app.caption)  # are the probabilities right?
    tables = [d.value for d in app.dataframe]
    assert any("p_autism" in t.columns and len(t) == 4 for t in tables)
    assert any("site" in t.columns and set(t["site"]) == {"NYU", "UM_1", "USM"} for t in tables)


def test_a_site_of_one_diagnosis_shows_a_dash_for_its_roc_auc_not_none(app):
    app.radio(key="source").set_value("Upload a cohort").run()
    app.checkbox(key="cohort_ex").check().run()   # UM_1 and USM: one subject each
    per_site = next(d.value for d in app.dataframe
                    if "site" in d.value.columns and "ROC AUC" in d.value.columns)
    auc = dict(zip(per_site["site"], per_site["ROC AUC"]))
    assert auc["UM_1"] == auc["USM"] == "—" and auc["NYU"] == "1.000"
    assert all(len(v.split(".")[1]) == 3 for v in per_site["accuracy"])  # same digits
    assert any(c.value == figures.SCORE_TABLE_NOTE for c in app.caption)


def test_a_cohort_scored_on_few_subjects_says_how_uncertain_its_scores_are(app):
    app.radio(key="source").set_value("Upload a cohort").run()
    app.checkbox(key="cohort_ex").check().run()   # the 4 embedded subjects, all scored
    _no_traceback(app)
    acc = next(m for m in app.metric if m.label == "Accuracy").value
    assert len(acc.split(".")[1]) == 2               # two decimals, not three, on n = 4
    warned = [w.value for w in app.warning if w.value.startswith("Only 4 subjects")]
    assert warned and "accuracy 95% CI" in warned[0] and "very uncertain" in warned[0]


def test_uploaded_cohort_files_without_a_table_are_predicted(app):
    app.radio(key="source").set_value("Upload a cohort").run()
    uploader = app.file_uploader(key="cohort_files")
    for name in ("NYU_0050952_rois_ho.1D", "USM_0050433_rois_ho.1D"):
        uploader.upload(name, (EXAMPLES / name).read_bytes(), "text/plain")
    app.run()
    _no_traceback(app)
    assert _errors(app) == []
    assert any(h.value == "Cohort: 2 subjects" for h in app.subheader)
    assert not any(m.label == "With a diagnosis" for m in app.metric)  # nothing to score


def test_a_cohort_file_that_cannot_be_predicted_is_listed_and_the_others_go_on(app):
    app.radio(key="source").set_value("Upload a cohort").run()
    uploader = app.file_uploader(key="cohort_files")
    for name in ("NYU_0050952_rois_ho.1D", "USM_0050433_rois_ho.1D"):
        uploader.upload(name, (EXAMPLES / name).read_bytes(), "text/plain")
    lines = (EXAMPLES / "UM_1_0050272_rois_ho.1D").read_text().splitlines()
    uploader.upload("UM_1_0050272_rois_ho.1D", "\n".join(lines[:6]).encode(), "text/plain")
    app.run()
    _no_traceback(app)
    assert _errors(app) == []
    assert any(h.value == "Cohort: 3 subjects" for h in app.subheader)
    warned = [w.value for w in app.warning if "could not be predicted" in w.value]
    assert len(warned) == 1 and "- UM_1_0050272_rois_ho.1D: " in warned[0]
    shown = next(d.value for d in app.dataframe if "p_autism" in d.value.columns)
    assert shown["p_autism"].isna().tolist() == [False, False, True]


def test_a_bad_cohort_upload_is_a_one_line_error(app):
    app.radio(key="source").set_value("Upload a cohort").run()
    app.file_uploader(key="cohort_files").upload("x.1D", b"\x00\x01binary", "text/plain")
    app.run()
    _no_traceback(app)
    assert any("is a binary file" in e for e in _errors(app))


def test_a_cohort_of_training_subjects_is_flagged_as_not_external(app):
    root = biomarker_run().parent / "abide"  # the data the page's model was trained on
    files = sorted((root / "Outputs").rglob("*.1D"))[:6]
    table = root / "Phenotypic_V1_0b_preprocessed1.csv"
    app.radio(key="source").set_value("Upload a cohort").run()
    uploader = app.file_uploader(key="cohort_files")
    for f in files:
        uploader.upload(f.name, f.read_bytes(), "text/plain")
    app.file_uploader(key="cohort_table").upload(table.name, table.read_bytes(), "text/csv")
    app.run()
    _no_traceback(app)
    assert _errors(app) == []
    assert any("were all training subjects of the model" in w.value for w in app.warning)
    assert not any("left out of the scores" in i.value for i in app.info)


def test_a_clinician_gets_the_terms_explained_and_picks_a_site_from_the_models(app):
    assert any("**ROC AUC**" in m.value and "**Held-out**" in m.value for m in app.markdown)
    app.radio(key="source").set_value("Upload a time series").run()
    options = app.selectbox(key="ts_site").options
    assert options[0] == "not given" and options[-1] == "another site (not in training)"
    assert options[1:-1] == sorted(json.loads(
        (biomarker_run() / "model_card.json").read_text())["data"]["sites"])
    # an age typed out of range is named as typed, not as a clamped value
    data = (EXAMPLES / "UM_1_0050272_rois_ho.1D").read_bytes()
    app.file_uploader(key="ts_upload").upload("UM_1_0050272_rois_ho.1D", data, "text/plain")
    app.number_input(key="ts_age").set_value(-5.0)
    app.run()
    _no_traceback(app)
    assert _errors(app) and "age -5.0 is not an age in years" in _errors(app)[0]


def test_the_decoding_page_takes_the_path_of_metrics_json_itself(app):
    app.radio(key="page").set_value("Decoding").run()
    app.text_input(key="run_dir").set_value(str(category_run() / "metrics.json")).run()
    _no_traceback(app)
    assert _errors(app) == [] and _metric(app, "Accuracy") != "—"


def test_each_uploader_states_the_apps_own_size_limit(app):
    import inspect

    import streamlit
    if "max_upload_size" not in inspect.signature(streamlit.file_uploader).parameters:
        pytest.skip("this Streamlit has no per-uploader size limit")
    from decoder.report import app_helpers as helpers
    mb = {"ts": helpers.MAX_TIMESERIES_BYTES // 2**20, "nifti": helpers.MAX_NIFTI_BYTES // 2**20}
    app.radio(key="source").set_value("Upload a time series").run()
    assert app.file_uploader(key="ts_upload").proto.max_upload_size_mb == mb["ts"] == 10
    app.radio(key="source").set_value("Upload a BOLD image").run()
    assert app.file_uploader(key="bold_upload").proto.max_upload_size_mb == mb["nifti"]
    assert app.file_uploader(key="atlas_upload").proto.max_upload_size_mb == mb["nifti"]
    app.radio(key="source").set_value("Upload a cohort").run()
    assert app.file_uploader(key="cohort_files").proto.max_upload_size_mb == mb["ts"]
    assert app.file_uploader(key="cohort_table").proto.max_upload_size_mb == mb["ts"]
