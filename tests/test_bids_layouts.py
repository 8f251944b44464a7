"""BIDS layouts beyond the embedded sample: several subjects, computed masks, fMRIPrep."""

import json
import shutil

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from decoder.data.bids import find_runs, read_tr
from decoder.errors import DataError
from pipelines import run_config

FAST = {"task": "category", "delay": 0.0, "window": 3, "classes": ["face", "house"]}


def _two_subjects(src, dst, runs=(1, 2, 3, 4)):
    """A 2-subject BIDS tree built from the sample (sub-2 = sub-1 with noise)."""
    rng = np.random.default_rng(0)
    dst.mkdir(parents=True)
    shutil.copy(src / "task-objectviewing_bold.json", dst / "task-objectviewing_bold.json")
    shutil.copy(src / "dataset_description.json", dst / "dataset_description.json")
    for sub in ("1", "2"):
        func = dst / f"sub-{sub}" / "func"
        func.mkdir(parents=True)
        mdir = dst / "derivatives" / "masks" / f"sub-{sub}"
        mdir.mkdir(parents=True)
        shutil.copy(src / "derivatives/masks/sub-1/sub-1_desc-slice_mask.nii.gz",
                    mdir / f"sub-{sub}_desc-slice_mask.nii.gz")
        for r in runs:
            name = f"task-objectviewing_run-{r:02d}"
            img = nib.load(src / f"sub-1/func/sub-1_{name}_bold.nii.gz")
            data = np.asarray(img.dataobj).astype(np.float32)
            if sub == "2":
                data = data + rng.normal(scale=data.std() * 0.2, size=data.shape)
            nib.save(nib.Nifti1Image(data, img.affine, img.header),
                     func / f"sub-{sub}_{name}_bold.nii.gz")
            shutil.copy(src / f"sub-1/func/sub-1_{name}_events.tsv",
                        func / f"sub-{sub}_{name}_events.tsv")
    return dst


def test_leave_one_subject_out(sample_copy, tmp_path):
    root = _two_subjects(sample_copy, tmp_path / "bids2")
    m = run_config({**FAST, "cv": "leave-one-subject-out"}, data=root, out=tmp_path / "o")
    assert m["fold_groups"] == ["1", "2"]
    assert m["dataset"]["subjects"] == ["1", "2"]
    assert m["accuracy"] > 0.65  # chance 0.5; sub-2 is sub-1 plus noise


def test_leave_one_subject_out_needs_two_subjects(tmp_path):
    with pytest.raises(DataError, match="at least 2 subjects"):
        run_config({**FAST, "cv": "leave-one-subject-out"}, out=tmp_path / "o")


def test_computed_mask(tmp_path):
    m = run_config({**FAST, "dataset": {"mask": "compute"}}, out=tmp_path / "o")
    assert m["dataset"]["n_voxels"] > 100
    assert m["accuracy"] > 0.8


def test_tr_comes_from_the_sidecar_and_falls_back_to_the_header(sample_copy):
    runs = find_runs(sample_copy, "objectviewing")
    assert len(runs) == 12 and runs[0].tr == 2.5
    (sample_copy / "task-objectviewing_bold.json").unlink()
    hdr_tr = float(nib.load(runs[0].bold).header.get_zooms()[3])
    assert read_tr(runs[0].bold, sample_copy) == pytest.approx(hdr_tr)


def test_fmriprep_derivatives_with_confounds(sample_copy, tmp_path):
    """fMRIPrep layout: space-*_desc-preproc_bold + desc-confounds_timeseries.tsv."""
    root = tmp_path / "fmriprep"
    func = root / "sub-1" / "func"
    func.mkdir(parents=True)
    rng = np.random.default_rng(1)
    for r in (1, 2, 3, 4):
        stem = f"sub-1_task-objectviewing_run-{r:02d}"
        shutil.copy(sample_copy / f"sub-1/func/{stem}_bold.nii.gz",
                    func / f"{stem}_space-MNI152NLin2009cAsym_desc-preproc_bold.nii.gz")
        (func / f"{stem}_space-MNI152NLin2009cAsym_desc-preproc_bold.json").write_text(
            json.dumps({"RepetitionTime": 2.5}))
        shutil.copy(sample_copy / f"sub-1/func/{stem}_events.tsv", func / f"{stem}_events.tsv")
        shutil.copy(sample_copy / "derivatives/masks/sub-1/sub-1_desc-slice_mask.nii.gz",
                    func / f"{stem}_space-MNI152NLin2009cAsym_desc-brain_mask.nii.gz")
        n = 121
        cols = {}
        for base in ("trans_x", "trans_y", "trans_z", "rot_x", "rot_y", "rot_z"):
            v = rng.normal(scale=0.05, size=n).cumsum()
            d = np.r_[np.nan, np.diff(v)]
            cols[base] = v
            cols[f"{base}_derivative1"] = d
            cols[f"{base}_power2"] = v ** 2
            cols[f"{base}_derivative1_power2"] = d ** 2
        for base in ("csf", "white_matter", "global_signal"):
            v = rng.normal(size=n)
            cols[base] = v
            cols[f"{base}_derivative1"] = np.r_[np.nan, np.diff(v)]
            cols[f"{base}_power2"] = v ** 2
            cols[f"{base}_derivative1_power2"] = np.r_[np.nan, np.diff(v)] ** 2
        cols["framewise_displacement"] = np.r_[np.nan, np.abs(rng.normal(scale=0.05, size=n - 1))]
        for k in range(3):
            cols[f"cosine{k:02d}"] = np.cos(np.pi * (k + 1) * (np.arange(n) + 0.5) / n)
        pd.DataFrame(cols).to_csv(func / f"{stem}_desc-confounds_timeseries.tsv", sep="\t",
                                  index=False, na_rep="n/a")
        (func / f"{stem}_desc-confounds_timeseries.json").write_text("{}")
    raw = {**FAST, "dataset": {"space": "MNI152NLin2009cAsym", "confounds": "simple"}}
    m = run_config(raw, data=root, out=tmp_path / "o")
    assert m["dataset"]["n_runs"] == 4
    assert any("confounds_timeseries" in r["path"] for r in m["provenance"]["inputs"])
    assert m["accuracy"] > 0.65  # 4 runs and ~30 regressed confounds; chance 0.5


def test_runs_load_identically_on_a_dask_cluster(tmp_path):
    """compute.scheduler sends per-run loading to Dask; results do not change."""
    distributed = pytest.importorskip("distributed")
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  host="127.0.0.1", dashboard_address=None) as cluster:
        a = run_config({**FAST, "compute": {"scheduler": cluster.scheduler_address}},
                       out=tmp_path / "dask")
    b = run_config(FAST, out=tmp_path / "local")
    assert a["accuracy"] == b["accuracy"]
    assert a["fold_scores"] == b["fold_scores"]
