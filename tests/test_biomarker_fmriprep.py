"""The biomarker pipeline on fMRIPrep-style images: atlas time series, cache, motion from confounds."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

nib = pytest.importorskip("nibabel")

from decoder.cli import main  # noqa: E402

from test_biomarker_pipeline import CONFIG  # noqa: E402

SHAPE = (6, 6, 4)
AFFINE = np.diag([3.0, 3.0, 3.0, 1.0])


def _atlas(path):
    """Four labelled blocks of voxels."""
    labels = np.zeros(SHAPE, dtype=np.int16)
    labels[:3, :3] = 1
    labels[3:, :3] = 2
    labels[:3, 3:] = 3
    labels[3:, 3:] = 4
    nib.save(nib.Nifti1Image(labels, AFFINE), path)
    return labels


def make_fmriprep(root, n_per_site=8, sites=("A", "B"), n_vol=80, seed=0, fd_column=True):
    """fMRIPrep-like derivatives: autism subjects couple regions 1 and 2; they also move more."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True)
    labels = _atlas(root / "atlas.nii.gz")
    rows = []
    for s, site in enumerate(sites):
        for k in range(n_per_site):
            pid = f"{site}{k:02d}"
            autism = k % 2 == 0
            region = rng.normal(size=(n_vol, 4))
            if autism:
                region[:, 1] = 0.9 * region[:, 0] + 0.45 * region[:, 1]
            data = rng.normal(scale=0.5, size=SHAPE + (n_vol,))
            for r in range(4):
                data[labels == r + 1] += region[:, r]
            data += 100.0 + 5.0 * s  # site offset
            func = root / f"sub-{pid}" / "func"
            func.mkdir(parents=True)
            stem = f"sub-{pid}_task-rest"
            img = nib.Nifti1Image(data.astype(np.float32), AFFINE)
            img.header.set_zooms((3.0, 3.0, 3.0, 2.0))
            nib.save(img, func / f"{stem}_space-MNI152NLin2009cAsym_desc-preproc_bold.nii.gz")
            fd = np.abs(rng.normal(0.05 + 0.1 * autism, 0.02, n_vol))
            fd[0] = np.nan
            cols = {"framewise_displacement": fd} if fd_column else {}
            cols["csf"] = rng.normal(size=n_vol)
            pd.DataFrame(cols).to_csv(func / f"{stem}_desc-confounds_timeseries.tsv", sep="\t",
                                      index=False, na_rep="n/a")
            rows.append({"participant_id": f"sub-{pid}", "diagnosis": "autism" if autism
                         else "control", "site": site, "age": 10 + k, "sex": 1 + k % 2})
    pd.DataFrame(rows).to_csv(root / "participants.tsv", sep="\t", index=False)
    return root


def _run(root, out, *extra):
    return main(["run", str(CONFIG), "--data", str(root), "--out", str(out),
                 "--set", "dataset.kind=fmriprep",
                 "--set", f"dataset.atlas={root / 'atlas.nii.gz'}",
                 "--set", "dataset.confounds_strategy=none",
                 "--set", "cv=stratified-kfold", "--set", "n_splits=4", *extra])


def test_images_give_a_learnable_connectome_cached_per_subject(tmp_path, monkeypatch):
    root = make_fmriprep(tmp_path / "fmriprep")
    monkeypatch.setenv("DECODER_CACHE_DIR", str(tmp_path / "cache"))
    out = tmp_path / "run"
    assert _run(root, out, "--set", "save_model=false") == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["n_samples"] == 16 and metrics["dataset"]["kind"] == "fmriprep"
    assert metrics["roc_auc"] > 0.8  # the planted coupling
    # one cached series per subject, in the user's cache and never inside the dataset
    cache = tmp_path / "cache" / "timeseries"
    assert len(list(cache.glob("*.npy"))) == 16
    assert not any(p.name.startswith(".decoder") for p in root.rglob("*"))
    # motion comes from each image's fMRIPrep confounds file
    fd = metrics["confounds"]["mean_fd"]
    assert fd["n"] == 16 and fd["auc_alone"] > 0.9
    # every file the run read is recorded with its checksum: the labels' table, each image,
    # its confounds and the atlas
    paths = {r["path"] for r in metrics["provenance"]["inputs"]}
    assert "participants.tsv" in paths and "atlas.nii.gz" in paths
    assert sum(p.endswith("_desc-preproc_bold.nii.gz") for p in paths) == 16
    assert sum(p.endswith("_desc-confounds_timeseries.tsv") for p in paths) == 16
    assert len(paths) == 16 * 2 + 2


def test_a_cache_that_cannot_be_written_costs_time_not_the_run(tmp_path, caplog):
    root = make_fmriprep(tmp_path / "fmriprep", n_per_site=4)
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    with caplog.at_level("WARNING"):
        assert _run(root, tmp_path / "run", "--set", "save_model=false", "--set", "n_splits=2",
                    "--set", f"dataset.cache_dir={blocker / 'cache'}") == 0
    said = [r.getMessage() for r in caplog.records if "not cached" in r.getMessage()]
    assert len(said) == 1 and "dataset.cache_dir" in said[0]  # once, with the fix
    assert (tmp_path / "run" / "metrics.json").is_file()


def test_motion_can_be_removed_and_a_participants_column_wins(tmp_path):
    root = make_fmriprep(tmp_path / "fmriprep", fd_column=False)
    out = tmp_path / "run"
    assert _run(root, out, "--set", "save_model=false") == 0
    assert json.loads((out / "metrics.json").read_text())["confounds"] == {}
    table = pd.read_csv(root / "participants.tsv", sep="\t")
    table["mean_fd"] = np.linspace(0.05, 0.3, len(table))
    table.to_csv(root / "participants.tsv", sep="\t", index=False)
    assert _run(root, tmp_path / "run2", "--set", "save_model=false",
                "--set", "confounds.remove=[mean_fd]") == 0
    metrics = json.loads((tmp_path / "run2" / "metrics.json").read_text())
    assert metrics["confounds"]["mean_fd"]["n"] == 16
    assert metrics["model"]["confounds_removed"] == ["mean_fd"]


def test_bids_sex_letters_become_codes_for_combat_and_name_the_subgroups(tmp_path):
    root = make_fmriprep(tmp_path / "fmriprep")
    table = pd.read_csv(root / "participants.tsv", sep="\t")
    table["sex"] = table["sex"].map({1: "M", 2: "F"})          # as BIDS tables write it
    table.to_csv(root / "participants.tsv", sep="\t", index=False)
    out = tmp_path / "run"
    assert _run(root, out, "--set", "save_model=false", "--set", "harmonize.method=combat") == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert {g: v["n"] for g, v in metrics["per_subgroup"]["sex"].items()} == {"male": 8,
                                                                              "female": 8}
    pred = pd.read_csv(out / "predictions.tsv", sep="\t")
    assert sorted(set(pred["sex"])) == ["female", "male"]
    # a numeric column of the dataset's own coding is used as it is, but not named
    table["sex"] = table["sex"].map({"M": 0, "F": 1})
    table.to_csv(root / "participants.tsv", sep="\t", index=False)
    assert _run(root, tmp_path / "run2", "--set", "save_model=false") == 0
    metrics = json.loads((tmp_path / "run2" / "metrics.json").read_text())
    assert "sex" not in metrics["per_subgroup"] and "age" in metrics["per_subgroup"]


def test_an_atlas_or_confounds_edited_in_place_are_not_served_from_the_cache(tmp_path):
    from decoder.features.timeseries import extract_timeseries
    root = make_fmriprep(tmp_path / "fmriprep", n_per_site=1)
    bold = sorted(root.rglob("*_bold.nii.gz"))[0]
    atlas, cache = root / "atlas.nii.gz", tmp_path / "cache"
    first = extract_timeseries(bold, str(atlas), confounds_strategy=None, cache_dir=cache)
    labels = np.asarray(nib.load(atlas).dataobj)
    labels[labels == 4] = 3  # the same file name, other regions
    nib.save(nib.Nifti1Image(labels, AFFINE), atlas)
    second = extract_timeseries(bold, str(atlas), confounds_strategy=None, cache_dir=cache)
    assert first.shape[1] == 4 and second.shape[1] == 3
    assert len(list(cache.glob("*.npy"))) == 2


def test_a_confounds_table_without_the_strategys_columns_is_one_line(tmp_path):
    from decoder.errors import DataError
    from decoder.features.timeseries import extract_timeseries
    root = make_fmriprep(tmp_path / "fmriprep", n_per_site=1)  # its table has fd and csf only
    bold = sorted(root.rglob("*_bold.nii.gz"))[0]
    with pytest.raises(DataError, match="no usable fMRIPrep confounds for strategy 'simple'"):
        extract_timeseries(bold, str(root / "atlas.nii.gz"), confounds_strategy="simple")


def _participants(root):
    return pd.read_csv(root / "participants.tsv", sep="\t", dtype=str)


def test_sites_exclude_and_max_subjects_choose_the_subjects_as_for_abide(tmp_path, monkeypatch):
    root = make_fmriprep(tmp_path / "fmriprep", n_per_site=6, sites=("A", "B", "C"))
    monkeypatch.setenv("DECODER_CACHE_DIR", str(tmp_path / "cache"))
    out = tmp_path / "run"
    assert _run(root, out, "--set", "save_model=false", "--set", "dataset.sites=[A,B]",
                "--set", "dataset.exclude=[A00,sub-B01]", "--set", "n_splits=2") == 0
    m = json.loads((out / "metrics.json").read_text())
    assert m["dataset"]["n_subjects"] == 10 and set(m["per_site"]) == {"A", "B"}
    used = {p["path"] for p in m["provenance"]["inputs"] if p["path"].endswith("_bold.nii.gz")}
    assert not any("sub-A00" in p or "sub-B01" in p or "sub-C" in p for p in used)
    assert _run(root, tmp_path / "four", "--set", "save_model=false", "--set",
                "dataset.max_subjects=8", "--set", "n_splits=2", "--set",
                "harmonize.method=none") == 0
    assert json.loads((tmp_path / "four" / "metrics.json").read_text())["dataset"]["n_subjects"] == 8


@pytest.mark.parametrize("case", ["typo in exclude", "unknown site"])
def test_a_selection_naming_nobody_is_a_one_line_error(tmp_path, capsys, case):
    root = make_fmriprep(tmp_path / "fmriprep", n_per_site=4)
    extra = {"typo in exclude": ["--set", "dataset.exclude=[sub-A99]"],
             "unknown site": ["--set", "dataset.sites=[Z]"]}[case]
    assert _run(root, tmp_path / "run", *extra) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and {"typo in exclude": "'sub-A99' is not a participant_id",
                                "unknown site": "no participant from site 'Z'"}[case] in err


@pytest.mark.parametrize("values, expected", [
    ({"sub-A01": "n/a"}, "diagnosis of 'sub-A01' is missing (1 participant(s))"),
    ({"sub-A01": ""}, "diagnosis of 'sub-A01' is missing"),
    ({"sub-A01": "asperger"}, "diagnosis has 3 values (asperger, autism, control)"),
])
def test_a_diagnosis_that_is_neither_group_is_refused_not_taken_for_control(
        tmp_path, capsys, values, expected):
    root = make_fmriprep(tmp_path / "fmriprep", n_per_site=4)
    table = _participants(root)
    for pid, value in values.items():
        table.loc[table.participant_id == pid, "diagnosis"] = value
    table.to_csv(root / "participants.tsv", sep="\t", index=False)
    assert _run(root, tmp_path / "run", "--dry-run") == 2   # known before any image is read
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and expected in err and "participants.tsv" in err


def test_diagnoses_match_in_any_letter_case_and_as_numbers_written(tmp_path, monkeypatch):
    monkeypatch.setenv("DECODER_CACHE_DIR", str(tmp_path / "cache"))
    root = make_fmriprep(tmp_path / "fmriprep", n_per_site=4)
    table = _participants(root)
    table["diagnosis"] = table["diagnosis"].map({"autism": "1", "control": "2"})
    table.loc[0, "age"] = "n/a"    # a float-looking table elsewhere must not turn '1' into 1.0
    table.to_csv(root / "participants.tsv", sep="\t", index=False)
    out = tmp_path / "run"
    assert _run(root, out, "--set", "dataset.positive_label=1", "--set", "save_model=false",
                "--set", "harmonize.method=none", "--set", "n_splits=2") == 0
    assert json.loads((out / "metrics.json").read_text())["dataset"]["n_autism"] == 4
    table["diagnosis"] = table["diagnosis"].map({"1": "Autism", "2": "Control"})
    table.to_csv(root / "participants.tsv", sep="\t", index=False)
    assert _run(root, tmp_path / "again", "--set", "save_model=false", "--set",
                "harmonize.method=none", "--set", "n_splits=2") == 0
    assert json.loads((tmp_path / "again" / "metrics.json").read_text())["dataset"][
        "n_autism"] == 4


def test_two_images_of_one_subject_are_refused_not_chosen_in_silence(tmp_path, capsys):
    root = make_fmriprep(tmp_path / "fmriprep", n_per_site=4)
    func = root / "sub-A01" / "func"
    bold = next(func.glob("*_desc-preproc_bold.nii.gz"))
    (func / bold.name.replace("task-rest", "task-movie")).write_bytes(bold.read_bytes())
    assert _run(root, tmp_path / "run", "--dry-run") == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "sub-A01: 2 images match dataset.bold_pattern" in err
    assert "narrow dataset.bold_pattern" in err


@pytest.mark.parametrize("second_id", ["sub-A01", "A01"])
def test_a_participant_in_two_rows_is_refused_not_read_twice(tmp_path, capsys, second_id):
    """Two rows of one subject (one autism, one control) would put its image in the data
    twice with opposite labels, possibly in a training and a test fold at once."""
    root = make_fmriprep(tmp_path / "fmriprep", n_per_site=4)
    table = _participants(root)
    twin = table[table.participant_id == "sub-A01"].assign(participant_id=second_id)
    twin["diagnosis"] = "control" if twin["diagnosis"].iloc[0] == "autism" else "autism"
    pd.concat([table, twin]).to_csv(root / "participants.tsv", sep="\t", index=False)
    out = tmp_path / "run"
    assert _run(root, out, "--dry-run") == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "participant 'sub-A01' has 2 rows" in err
    assert "keep one row per participant" in err and not out.exists()
    # the same row written twice says nothing new: taken once
    pd.concat([table, table.iloc[:1]]).to_csv(root / "participants.tsv", sep="\t", index=False)
    assert _run(root, out, "--dry-run") == 0
    assert "subjects: 8 (" in capsys.readouterr().out


def test_a_region_outside_an_image_keeps_its_column_and_the_others_their_places(
        tmp_path, caplog):
    from decoder.features.timeseries import extract_timeseries
    root = make_fmriprep(tmp_path / "fmriprep", n_per_site=2, sites=("A",))
    bold = next(root.rglob("*_desc-preproc_bold.nii.gz"))
    img = nib.load(bold)
    full = extract_timeseries(bold, root / "atlas.nii.gz", confounds_strategy=None)
    cropped = tmp_path / "cropped_bold.nii.gz"   # x ≥ 3 cut off: regions 2 and 4 are gone
    nib.save(nib.Nifti1Image(np.asarray(img.dataobj)[:3], img.affine, img.header), cropped)
    caplog.set_level("WARNING", logger="decoder.features.timeseries")
    ts = extract_timeseries(cropped, root / "atlas.nii.gz", confounds_strategy=None)
    assert ts.shape == full.shape == (80, 4)
    assert np.all(ts[:, [1, 3]] == 0)                     # no signal, in their places
    assert np.allclose(ts[:, [0, 2]], full[:, [0, 2]], atol=1e-5)
    assert "cropped_bold.nii.gz: 2 atlas region(s) outside the image (labels 2, 4)" in \
        caplog.text


def test_the_repetition_time_comes_from_the_sidecar_when_the_header_has_none(tmp_path, caplog):
    from decoder.features.timeseries import extract_timeseries
    root = make_fmriprep(tmp_path / "fmriprep", n_per_site=2, sites=("A",))
    bold = next(root.rglob("*_desc-preproc_bold.nii.gz"))
    filtered = extract_timeseries(bold, root / "atlas.nii.gz", confounds_strategy=None)
    img = nib.load(bold)
    img.header.set_zooms((3.0, 3.0, 3.0, 0.0))
    no_tr = tmp_path / "sub-x_desc-preproc_bold.nii.gz"
    nib.save(img, no_tr)
    caplog.set_level("WARNING", logger="decoder.features.timeseries")
    unfiltered = extract_timeseries(no_tr, root / "atlas.nii.gz", confounds_strategy=None)
    assert "no repetition time" in caplog.text and "sub-x_desc-preproc_bold.json" in caplog.text
    assert not np.allclose(unfiltered, filtered, atol=1e-3)
    (tmp_path / "sub-x_desc-preproc_bold.json").write_text('{"RepetitionTime": 2.0}')
    assert np.allclose(extract_timeseries(no_tr, root / "atlas.nii.gz",
                                          confounds_strategy=None), filtered, atol=1e-5)


def test_too_short_an_image_is_a_one_line_error_naming_it(tmp_path):
    from decoder.errors import DataError
    from decoder.features.timeseries import extract_timeseries
    root = make_fmriprep(tmp_path / "fmriprep", n_per_site=2, sites=("A",), n_vol=12)
    bold = next(root.rglob("*_desc-preproc_bold.nii.gz"))
    with pytest.raises(DataError, match=r"_bold\.nii\.gz: 12 volumes are too few to band-pass"):
        extract_timeseries(bold, root / "atlas.nii.gz", confounds_strategy=None)


def test_a_new_subjects_image_is_reduced_as_the_training_images_were(tmp_path, capsys,
                                                                     monkeypatch):
    monkeypatch.setenv("DECODER_CACHE_DIR", str(tmp_path / "cache"))
    root = make_fmriprep(tmp_path / "fmriprep", n_per_site=6)
    rng = np.random.default_rng(1)
    for path in root.rglob("*_desc-confounds_timeseries.tsv"):  # what 'simple' reads
        table = pd.read_csv(path, sep="\t", na_values="n/a")
        for base in ("trans_x", "trans_y", "trans_z", "rot_x", "rot_y", "rot_z",
                     "white_matter", "csf"):
            table[base] = rng.normal(size=len(table))
            for suffix in ("_derivative1", "_power2", "_derivative1_power2"):
                table[base + suffix] = rng.normal(size=len(table))
        table["cosine00"] = np.cos(np.linspace(0, np.pi, len(table)))
        table.to_csv(path, sep="\t", index=False, na_rep="n/a")
    out = tmp_path / "run"
    assert main(["run", str(CONFIG), "--data", str(root), "--out", str(out),
                 "--set", "dataset.kind=fmriprep", "--set", f"dataset.atlas={root / 'atlas.nii.gz'}",
                 "--set", "dataset.confounds_strategy=simple", "--set", "cv=stratified-kfold",
                 "--set", "n_splits=3", "--set", "harmonize.method=none"]) == 0
    card = json.loads((out / "model_card.json").read_text())
    assert card["data"]["confounds_strategy"] == "simple" and "pipeline" not in card["data"]
    assert card["data"]["source"].startswith("fMRIPrep") and "ABIDE" not in card["citation"]
    metrics = json.loads((out / "metrics.json").read_text())
    assert card["provenance"]["created"] == metrics["provenance"]["created"]
    assert card["provenance"]["libraries"] == metrics["provenance"]["libraries"]
    from decoder._utils import sha256_file
    assert card["model_sha256"] == sha256_file(out / "model.skops")   # tied to its model
    bold = next(root.rglob("sub-A00*_desc-preproc_bold.nii.gz"))
    from pipelines import biomarker
    from decoder.features.timeseries import extract_timeseries
    bundle = biomarker.load_model(out / "model.skops")
    got = biomarker.read_subject_input(bold, atlas=root / "atlas.nii.gz", model=bundle)
    assert np.allclose(got, extract_timeseries(bold, root / "atlas.nii.gz",
                                               confounds_strategy="simple"))
    assert not np.allclose(got, extract_timeseries(bold, root / "atlas.nii.gz",
                                                   confounds_strategy=None))
    pred = tmp_path / "pred.json"
    assert main(["predict", str(out / "model.skops"), str(bold), "--atlas",
                 str(root / "atlas.nii.gz"), "--out", str(pred)]) == 0
    assert json.loads(pred.read_text())["extraction"] == {
        "atlas": str(root / "atlas.nii.gz"), "confounds_strategy": "simple", "atlas_type": None}
    # another atlas file with as many regions is refused, not silently used
    other = tmp_path / "renumbered.nii.gz"
    labels = np.asarray(nib.load(root / "atlas.nii.gz").dataobj)
    nib.save(nib.Nifti1Image(np.where(labels > 0, 5 - labels, 0).astype(np.int16), AFFINE),
             other)
    assert main(["predict", str(out / "model.skops"), str(bold), "--atlas", str(other),
                 "--out", str(tmp_path / "p.json")]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "is not the atlas the model was trained with" in err


def test_a_model_saved_with_other_library_versions_says_so_when_it_predicts():
    from pipelines import biomarker
    from decoder.results import current_environment
    now = current_environment()
    bundle = {"environment": {**now, "libraries": {**now["libraries"], "scikit-learn": "1.2.0"}}}
    notes = biomarker.environment_notes(bundle)
    assert len(notes) == 1 and "scikit-learn 1.2.0 (now " in notes[0]
    assert biomarker.environment_notes({"environment": now}) == []
    assert biomarker.environment_notes({}) == []     # older models record nothing


@pytest.mark.parametrize("setting, expected", [
    ("dataset.confounds_strategy=foo", "dataset.confounds_strategy 'foo' is not a nilearn"),
    ("dataset.atlas=missing_atlas.nii.gz", "atlas file not found: "),
])
def test_a_dry_run_refuses_what_the_run_would(tmp_path, capsys, setting, expected):
    root = make_fmriprep(tmp_path / "fmriprep", n_per_site=4)
    assert _run(root, tmp_path / "run", "--set", setting, "--dry-run") == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and expected in err


def test_a_missing_age_is_imputed_and_said_so_as_for_abide(tmp_path, monkeypatch):
    monkeypatch.setenv("DECODER_CACHE_DIR", str(tmp_path / "cache"))
    root = make_fmriprep(tmp_path / "fmriprep", n_per_site=4)
    table = _participants(root)
    table.loc[table.participant_id == "sub-B02", "age"] = "n/a"
    table.to_csv(root / "participants.tsv", sep="\t", index=False)
    out = tmp_path / "run"
    assert _run(root, out, "--set", "save_model=false", "--set", "n_splits=2") == 0
    m = json.loads((out / "metrics.json").read_text())
    said = "age missing or not a number for 1 participant(s) (e.g. sub-B02)"
    assert any(said in n for n in m["dataset"]["notes"])
    assert any(said in w for w in m["warnings"])


def test_atlas_files_that_are_not_what_they_say_are_one_line_errors(tmp_path):
    from decoder.errors import DataError
    from decoder.features.timeseries import load_atlas
    root = make_fmriprep(tmp_path / "fmriprep", n_per_site=2, sites=("A",))
    with pytest.raises(DataError, match="a 3-D image is not a maps atlas"):
        load_atlas(root / "atlas.nii.gz", "maps")
    # a labels atlas resampled with continuous interpolation blends labels at borders
    img = nib.load(root / "atlas.nii.gz")
    labels = np.asarray(img.dataobj).astype(np.float32)
    nib.save(nib.Nifti1Image(labels, img.affine), tmp_path / "whole.nii.gz")
    assert load_atlas(tmp_path / "whole.nii.gz")["labels"] == load_atlas(
        root / "atlas.nii.gz")["labels"]            # whole-valued floats are labels
    blended = labels.copy()
    blended[blended > 0] += 0.4
    nib.save(nib.Nifti1Image(blended, img.affine), tmp_path / "blended.nii.gz")
    with pytest.raises(DataError, match=r"blended.nii.gz: .*not whole numbers \(e.g. 1.4\)"
                       r".*nearest-neighbour"):
        load_atlas(tmp_path / "blended.nii.gz")
    # an integer image stored with a scale factor reads as 1.0000000149…: those are labels
    scaled = nib.Nifti1Image((labels * 10).astype(np.int16), img.affine)
    scaled.header.set_slope_inter(0.1, 0)
    nib.save(scaled, tmp_path / "scaled.nii.gz")
    assert load_atlas(tmp_path / "scaled.nii.gz")["labels"] == load_atlas(
        root / "atlas.nii.gz")["labels"]
    labels[0, 0, 0] = np.nan
    nib.save(nib.Nifti1Image(labels, img.affine), tmp_path / "nan.nii.gz")
    with pytest.raises(DataError, match="NaN or infinite"):
        load_atlas(tmp_path / "nan.nii.gz")
    table = tmp_path / "coords.tsv"
    table.write_text("name\tX\tY\tZ\nPCC\t0\t-52\t26\nmPFC\t0\t54\t-4\n")
    atlas = load_atlas(table)      # capital headers and a name column are fine
    assert atlas["coords"].tolist() == [[0, -52, 26], [0, 54, -4]]
    table.write_text("name\tx\ty\nPCC\t0\t-52\n")
    with pytest.raises(DataError, match="not a table of x, y, z coordinates"):
        load_atlas(table)


def test_a_damaged_cache_file_is_extracted_again(tmp_path, caplog):
    from decoder.features.timeseries import extract_timeseries
    root = make_fmriprep(tmp_path / "fmriprep", n_per_site=2, sites=("A",))
    bold = next(root.rglob("*_desc-preproc_bold.nii.gz"))
    cache = tmp_path / "cache"
    first = extract_timeseries(bold, root / "atlas.nii.gz", confounds_strategy=None,
                               cache_dir=cache)
    (npy,) = cache.glob("*.npy")
    npy.write_bytes(npy.read_bytes()[:60])
    again = extract_timeseries(bold, root / "atlas.nii.gz", confounds_strategy=None,
                               cache_dir=cache)
    assert np.allclose(again, first) and "damaged cached series" in caplog.text
    assert np.allclose(np.load(npy), first)     # and cached again


def test_an_image_without_signal_is_named_with_the_subject_to_exclude(tmp_path, capsys,
                                                                      monkeypatch):
    monkeypatch.setenv("DECODER_CACHE_DIR", str(tmp_path / "cache"))
    root = make_fmriprep(tmp_path / "fmriprep", n_per_site=4)
    bold = next(root.rglob("sub-A01*_desc-preproc_bold.nii.gz"))
    img = nib.load(bold)
    nib.save(nib.Nifti1Image(np.full(img.shape, np.nan, np.float32), img.affine, img.header),
             bold)
    assert _run(root, tmp_path / "run") == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and bold.name in err and "dataset.exclude=sub-A01" in err


def test_subject_folders_named_without_sub_are_found_as_in_the_hcp_layout(tmp_path, monkeypatch):
    """HCP1200/<id>/MNINonLinear/Results/rfMRI_REST1_LR/rfMRI_REST1_LR.nii.gz: the folders
    have no 'sub-' and the file name no BIDS entities; bold_pattern picks one run."""
    monkeypatch.setenv("DECODER_CACHE_DIR", str(tmp_path / "cache"))
    bids = make_fmriprep(tmp_path / "fmriprep", n_per_site=4, sites=("A",))
    hcp = tmp_path / "HCP1200"
    hcp.mkdir()
    for func in sorted(bids.glob("sub-*/func")):
        sid = func.parent.name[len("sub-"):]
        for run in ("LR", "RL"):
            res = hcp / sid / "MNINonLinear" / "Results" / f"rfMRI_REST1_{run}"
            res.mkdir(parents=True)
            (res / f"rfMRI_REST1_{run}.nii.gz").write_bytes(
                next(func.glob("*_bold.nii.gz")).read_bytes())
    table = _participants(bids)
    table["participant_id"] = table["participant_id"].str[len("sub-"):]   # as HCP's Subject
    table.to_csv(tmp_path / "participants.tsv", sep="\t", index=False)   # the user's own
    out = tmp_path / "run"
    assert main(["run", str(CONFIG), "--data", str(hcp), "--out", str(out),
                 "--set", "dataset.kind=fmriprep", "--set", f"dataset.atlas={bids / 'atlas.nii.gz'}",
                 "--set", f"dataset.participants={tmp_path / 'participants.tsv'}",
                 "--set", "dataset.confounds_strategy=none",
                 "--set", "dataset.bold_pattern=rfMRI_REST1_LR.nii.gz",
                 "--set", "cv=stratified-kfold", "--set", "n_splits=2",
                 "--set", "save_model=false"]) == 0
    m = json.loads((out / "metrics.json").read_text())
    used = sorted(p["path"] for p in m["provenance"]["inputs"] if "rfMRI" in p["path"])
    assert m["dataset"]["n_subjects"] == 4 and len(used) == 4
    assert all(p.endswith("rfMRI_REST1_LR/rfMRI_REST1_LR.nii.gz") for p in used)
    assert m["dataset"]["label_column"] == "diagnosis"


def test_another_label_is_said_to_be_coded_autism_and_control(tmp_path, monkeypatch, capsys):
    """Predicting sex: outputs keep the codes autism/control and say what they stand for."""
    monkeypatch.setenv("DECODER_CACHE_DIR", str(tmp_path / "cache"))
    root = make_fmriprep(tmp_path / "fmriprep", n_per_site=6)
    table = _participants(root)
    table["sex"] = np.where(table["diagnosis"] == "autism", "F", "M")   # a learnable label
    table.to_csv(root / "participants.tsv", sep="\t", index=False)
    out = tmp_path / "run"
    assert _run(root, out, "--set", "dataset.label_column=sex",
                "--set", "dataset.positive_label=F") == 0
    m = json.loads((out / "metrics.json").read_text())
    assert (m["dataset"]["label_column"], m["dataset"]["positive_label"]) == ("sex", "F")
    said = "autism = sex F; control = the other sex value"
    assert said in (out / "model_card.md").read_text()
    assert any("'sex' is the label" in n for n in m["dataset"]["notes"])
    bold = next((root / "sub-A00" / "func").glob("*_bold.nii.gz"))
    capsys.readouterr()
    assert main(["predict", str(out / "model.skops"), str(bold), "--atlas",
                 str(root / "atlas.nii.gz"), "--age", "12", "--out",
                 str(tmp_path / "p.json")]) == 0
    assert f"({said})" in capsys.readouterr().out
    assert json.loads((tmp_path / "p.json").read_text())["class_codes"] == said
    from decoder.models.model_card import label_codes   # autism itself needs no words
    assert label_codes({"kind": "fmriprep", "label_column": "dx", "positive_label": "Autism"}) \
        is None and label_codes({"kind": "abide", "positive_label": "F"}) is None


def test_a_label_that_is_a_covariate_is_not_given_to_combat(tmp_path, monkeypatch):
    """Predicting sex: ComBat adjusts each subject with its own covariates, so with sex among
    them a held-out subject's label would enter its features. The label is dropped."""
    from decoder.models.biomarker_models import ConnectomeClassifier
    from pipelines import resolve_config
    from pipelines.biomarker import load_subjects, model_covariates
    monkeypatch.setenv("DECODER_CACHE_DIR", str(tmp_path / "cache"))
    root = make_fmriprep(tmp_path / "fmriprep", n_per_site=6)
    cfg = resolve_config({"task": "biomarker", "dataset": {
        "kind": "fmriprep", "atlas": str(root / "atlas.nii.gz"), "confounds_strategy": "none",
        "label_column": "sex", "positive_label": "2"}})
    subjects = load_subjects(cfg, root)
    assert "sex" not in model_covariates(cfg, subjects).columns
    assert "age" in model_covariates(cfg, subjects).columns
    assert any("'sex' is the label" in n for n in subjects.notes)
    # why: with sex as a covariate, flipping held-out subjects' sex moves their features
    covs = [np.asarray(t) for t in subjects.time_series]
    cov = subjects.covariates.assign(sex=_participants(root)["sex"].to_numpy(float))
    tr, te = np.arange(len(covs)) % 3 != 0, np.arange(len(covs)) % 3 == 0
    est = ConnectomeClassifier(harmonize="combat", reliability="none").fit(
        [c for c, k in zip(covs, tr) if k], subjects.diagnosis[tr],
        sites=np.asarray(subjects.sites)[tr], covariates=cov[tr])
    test = [c for c, k in zip(covs, te) if k]
    flipped = cov[te].assign(sex=3 - cov[te]["sex"])
    p, q = (est.features(test, sites=np.asarray(subjects.sites)[te], covariates=c)
            for c in (cov[te], flipped))
    assert max(np.abs(p[k] - q[k]).max() for k in p) > 1e-3


def test_a_label_column_that_is_the_site_column_is_refused_before_any_image(tmp_path):
    from decoder.errors import ConfigError
    from pipelines import resolve_config
    from pipelines.biomarker import check_config
    cfg = resolve_config({"task": "biomarker", "dataset": {
        "kind": "fmriprep", "atlas": "power", "label_column": "site", "positive_label": "A"}})
    with pytest.raises(ConfigError, match="label_column and dataset.site_column are both"):
        check_config(cfg)


@pytest.mark.parametrize("dataset, message", [
    ({"label_column": "SEX"}, "dataset.label_column applies to dataset.kind: fmriprep"),
    ({"negative_label": "control"}, "dataset.negative_label applies to dataset.kind: fmriprep"),
    ({"kind": "bids"}, "dataset.kind 'bids' is not supported"),
    ({"kind": "fmriprep", "atlas": "power", "participants": ""}, "dataset.participants is empty"),
    ({"kind": "fmriprep", "atlas": "power", "label_column": None},
     "dataset.label_column is empty"),
    ({"kind": "fmriprep", "atlas": "power", "negative_label": "Autism"},
     "dataset.negative_label and dataset.positive_label are both 'autism'"),
])
def test_dataset_keys_that_cannot_work_are_refused_before_any_data(dataset, message):
    """An images-only key on ABIDE (silently ignored: the run decoded DX_GROUP all the
    same), an unknown kind, an empty table or column, the two groups the same value."""
    from decoder.errors import ConfigError
    from pipelines import resolve_config
    from pipelines.biomarker import check_config
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
        check_config(resolve_config({"task": "biomarker", "dataset": dataset}))


def test_negative_label_compares_two_groups_of_several_and_leaves_the_others_out(
        tmp_path, monkeypatch, caplog, capsys):
    """ds000030-like: CONTROL, SCHZ and BIPOLAR in one column; SCHZ vs CONTROL is asked."""
    monkeypatch.setenv("DECODER_CACHE_DIR", str(tmp_path / "cache"))
    root = make_fmriprep(tmp_path / "fmriprep", n_per_site=6)
    table = _participants(root)
    table["diagnosis"] = table["diagnosis"].map({"autism": "SCHZ", "control": "CONTROL"})
    table.loc[table.participant_id.isin(["sub-A05", "sub-B05"]), "diagnosis"] = "BIPOLAR"
    table.to_csv(root / "participants.tsv", sep="\t", index=False)
    assert _run(root, tmp_path / "no", "--set", "dataset.positive_label=SCHZ", "--dry-run") == 2
    assert "name the comparison group with dataset.negative_label" in capsys.readouterr().err
    assert _run(root, tmp_path / "plan", "--set", "dataset.positive_label=SCHZ",
                "--set", "dataset.negative_label=control", "--set", "n_splits=2",
                "--dry-run") == 0
    plan = capsys.readouterr().out
    assert "subjects: 10 (6 autism, 4 control)" in plan
    assert "note: the classes are codes: autism = diagnosis SCHZ; control = diagnosis control" \
        in plan
    assert _run(root, tmp_path / "plan", "--set", "dataset.positive_label=SCHZ",
                "--set", "dataset.negative_label=control", "--set", "n_splits=2",
                "--set", "dataset.max_subjects=6", "--set", "harmonize.method=none",
                "--dry-run") == 0      # the first 6 of the two groups, not of all three
    assert "subjects: 6 (" in capsys.readouterr().out
    out = tmp_path / "run"
    assert _run(root, out, "--set", "dataset.positive_label=SCHZ",
                "--set", "dataset.negative_label=control", "--set", "n_splits=2") == 0
    m = json.loads((out / "metrics.json").read_text())
    assert m["dataset"]["n_subjects"] == 10 and m["dataset"]["n_autism"] == 6
    assert any("2 participant(s) with another diagnosis left out (bipolar 2)" in w
               for w in m["warnings"])
    used = [p["path"] for p in m["provenance"]["inputs"]]
    assert not any("sub-A05" in p or "sub-B05" in p for p in used)   # never read
    assert "autism = diagnosis SCHZ; control = diagnosis control" in \
        (out / "model_card.md").read_text()
    assert _run(root, tmp_path / "typo", "--set", "dataset.positive_label=SCHZ",
                "--set", "dataset.negative_label=CONTRL", "--dry-run") == 2
    assert "no participant has diagnosis 'CONTRL'" in capsys.readouterr().err


def test_a_gender_column_is_the_sex_covariate_and_not_one_when_it_is_the_label(tmp_path,
                                                                              monkeypatch):
    """ds000030 writes sex as 'gender' (M/F): ComBat preserves it, unless it is the label."""
    from pipelines import resolve_config
    from pipelines.biomarker import load_subjects, model_covariates
    monkeypatch.setenv("DECODER_CACHE_DIR", str(tmp_path / "cache"))
    root = make_fmriprep(tmp_path / "fmriprep", n_per_site=6)
    table = _participants(root).rename(columns={"sex": "gender"})
    table["gender"] = table["gender"].astype(int).map({1: "M", 2: "F"})
    table.to_csv(root / "participants.tsv", sep="\t", index=False)
    base = {"kind": "fmriprep", "atlas": str(root / "atlas.nii.gz"),
            "confounds_strategy": "none"}
    cfg = resolve_config({"task": "biomarker", "dataset": base})
    subjects = load_subjects(cfg, root)
    assert sorted(set(model_covariates(cfg, subjects)["sex"])) == [1, 2]   # ABIDE's codes
    cfg = resolve_config({"task": "biomarker", "dataset": {
        **base, "label_column": "gender", "positive_label": "F"}})
    subjects = load_subjects(cfg, root)
    assert "sex" not in model_covariates(cfg, subjects).columns
    assert any("'gender' is the label" in n for n in subjects.notes)


def test_a_sex_column_of_numbers_and_words_is_refused_before_any_image(tmp_path, capsys,
                                                                      monkeypatch):
    """M/F with one '2': read as numbers, every letter became missing, then the commonest
    value, and ComBat preserved a constant."""
    monkeypatch.setenv("DECODER_CACHE_DIR", str(tmp_path / "cache"))
    root = make_fmriprep(tmp_path / "fmriprep", n_per_site=4)
    table = _participants(root)
    table["sex"] = table["sex"].astype(int).map({1: "M", 2: "F"}).astype(object)
    table.loc[0, "sex"] = "2"
    table.to_csv(root / "participants.tsv", sep="\t", index=False)
    assert _run(root, tmp_path / "run") == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "column 'sex' mixes numbers and words ('2', " in err
    assert "participants.tsv" in err and not (tmp_path / "cache").exists()


def test_a_participants_csv_is_read_comma_separated_and_a_misnamed_one_is_named(tmp_path,
                                                                              capsys):
    root = make_fmriprep(tmp_path / "fmriprep", n_per_site=4)
    table = _participants(root)
    table.to_csv(root / "participants.csv", index=False)
    assert _run(root, tmp_path / "csv", "--set", "dataset.participants=participants.csv",
                "--dry-run") == 0
    assert "subjects: 8 (" in capsys.readouterr().out
    table.to_csv(root / "participants.tsv", index=False)          # commas in a .tsv
    assert _run(root, tmp_path / "tsv", "--dry-run") == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "comma-separated, read as tab-separated" in err
    assert _run(root, tmp_path / "dir", "--set", f"dataset.participants={root}",
                "--dry-run") == 2
    assert "is a folder" in capsys.readouterr().err
    assert _run(root, tmp_path / "gone", "--set", "dataset.participants=nope.tsv",
                "--dry-run") == 2
    assert "--set dataset.participants=PATH" in capsys.readouterr().err
