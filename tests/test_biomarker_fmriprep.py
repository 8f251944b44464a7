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
