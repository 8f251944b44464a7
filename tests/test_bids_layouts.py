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


def _fmriprep_layout(sample_copy, root, runs=(1, 2, 3, 4)):
    """fMRIPrep layout built from the sample: space-*_desc-preproc_bold, its brain mask,
    the raw-named events and a desc-confounds_timeseries.tsv of every run."""
    func = root / "sub-1" / "func"
    func.mkdir(parents=True)
    rng = np.random.default_rng(1)
    for r in runs:
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
    return root


FMRIPREP = {**FAST, "dataset": {"space": "MNI152NLin2009cAsym", "confounds": "simple"}}


def test_fmriprep_derivatives_with_confounds(sample_copy, tmp_path):
    """fMRIPrep layout: space-*_desc-preproc_bold + desc-confounds_timeseries.tsv."""
    root = _fmriprep_layout(sample_copy, tmp_path / "fmriprep")
    m = run_config(FMRIPREP, data=root, out=tmp_path / "o")
    assert m["dataset"]["n_runs"] == 4
    assert any("confounds_timeseries" in r["path"] for r in m["provenance"]["inputs"])
    assert m["accuracy"] > 0.65  # 4 runs and ~30 regressed confounds; chance 0.5


def test_a_confound_strategy_nilearn_lacks_stops_before_any_data(tmp_path, capsys):
    from decoder.cli import main
    assert main(["run", "configs/haxby.yaml", "--set", "dataset.confounds=simpel",
                 "--dry-run"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "dataset.confounds 'simpel' is not a nilearn" in err
    assert "simple, scrubbing, compcor, ica_aroma" in err


@pytest.mark.parametrize("damage", ["cut short", "columns missing"])
def test_a_damaged_confounds_file_is_named_in_one_line(sample_copy, tmp_path, capsys, damage):
    """A cut-short file (another run's, or a copy that stopped) and one without the
    strategy's columns: the file is named, with the fix, in training and in predict."""
    from decoder.cli import main
    root = _fmriprep_layout(sample_copy, tmp_path / "fmriprep")
    conf = next((root / "sub-1" / "func").glob("*run-02_desc-confounds_timeseries.tsv"))
    table = pd.read_csv(conf, sep="\t")
    table = table.iloc[:50] if damage == "cut short" else table.drop(columns=["trans_z"])
    table.to_csv(conf, sep="\t", index=False, na_rep="n/a")
    with pytest.raises(DataError) as err:
        run_config(FMRIPREP, data=root, out=tmp_path / "o")
    msg = str(err.value)
    assert "\n" not in msg and str(conf) in msg
    assert ("50 rows of confounds for a run of 121 volumes" in msg if damage == "cut short"
            else "trans_z" in msg)
    assert "use the confounds file fMRIPrep wrote for this run" in msg
    # a model trained with the strategy, on the undamaged runs, decoding the damaged one
    ok = _fmriprep_layout(sample_copy, tmp_path / "ok", runs=(1, 3, 4))
    run_config({**FMRIPREP, "save_model": True}, data=ok, out=tmp_path / "m")
    bold = next((root / "sub-1" / "func").glob("*run-02_*desc-preproc_bold.nii.gz"))
    assert main(["predict", str(tmp_path / "m" / "model.skops"), str(bold),
                 "--out", str(tmp_path / "p.json")]) == 2
    printed = capsys.readouterr().err.strip()
    assert "\n" not in printed and str(conf) in printed and "Traceback" not in printed


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
