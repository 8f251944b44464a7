"""DataLad inputs: get only what a pipeline reads, record provenance, fail cleanly offline.

Real data only: the OpenNeuro ds000105 DataLad dataset (a git bundle whose
annexed content lives on S3, unreachable from CI) and a DataLad dataset built
here from the shared Haxby slice.  Needs DECODER_SHARED_DATA.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from conftest import ROOT, git, needs_shared, shared_data, skip_without_datalad
from conftest import run_cli as decoder_cli

from decoder.data.datalad import DataladInputs, dataset_root, ensure_local, is_datalad_dataset
from decoder.errors import DataError

skip_without_datalad()

REPO = ROOT
SHARED = shared_data()
DS105_ID = "c01c2348-8708-11e8-930d-0242ac12000d"
DS105_COMMIT = "b2677616e86113ec230e6189ad2341ffcc065c83"
BOLD1 = "sub-1/func/sub-1_task-objectviewing_run-01_bold.nii.gz"
EVENTS1 = "sub-1/func/sub-1_task-objectviewing_run-01_events.tsv"
# a quick category run: two classes, fixed delay and window
FAST = ["--set", "classes=face,house", "--set", "delay=5.0", "--set", "window=1"]


pytestmark = pytest.mark.usefixtures("git_identity")


def annex_tmp_files(ds: Path) -> list[Path]:
    tmp = ds / ".git" / "annex" / "tmp"
    return [p for p in tmp.rglob("*") if p.is_file()] if tmp.is_dir() else []


@pytest.fixture(scope="module")
def ds105(tmp_path_factory):
    """A fresh clone of the real OpenNeuro ds000105 DataLad dataset (content on S3)."""
    if not SHARED:
        pytest.skip("DECODER_SHARED_DATA is not set (real data absent)")
    bundle = Path(SHARED) / "openneuro" / "ds000105.bundle"
    if not bundle.is_file():
        pytest.skip(f"{bundle} is absent")
    dest = tmp_path_factory.mktemp("ds105") / "ds000105"
    subprocess.run(["git", "clone", "-q", str(bundle), str(dest)], check=True)
    return dest


@pytest.fixture(scope="module")
def haxby_ds(tmp_path_factory):
    """A DataLad dataset made from the shared Haxby slice, published to a RIA store."""
    import datalad.api as dl
    if not SHARED:
        pytest.skip("DECODER_SHARED_DATA is not set (real data absent)")
    base = tmp_path_factory.mktemp("haxby")
    src = base / "origin"
    # text files (events, JSON sidecars) in git, images annexed: the OpenNeuro layout
    ds = dl.create(path=str(src), cfg_proc="text2git", result_renderer="disabled")
    shutil.copytree(Path(SHARED) / "haxby2001_sub1_slice", src, dirs_exist_ok=True)
    dl.save(dataset=str(src), message="Haxby 2001 subject 1 slice", result_renderer="disabled")
    store = base / "store"
    dl.create_sibling_ria(url=f"ria+file://{store}", name="ria", dataset=str(src),
                          new_store_ok=True, result_renderer="disabled")
    dl.push(dataset=str(src), to="ria", result_renderer="disabled")
    return {"path": src, "id": ds.id, "commit": git("rev-parse", "HEAD", cwd=src).strip(),
            "url": f"ria+file://{store}#{ds.id}", "base": base}


def clone(url: str, dest: Path) -> Path:
    import datalad.api as dl
    dl.clone(source=url, path=str(dest), result_renderer="disabled")
    return dest


def published_clone(tmp_path: Path, make, message: str = "toy data"):
    """A dataset whose files ``make(folder)`` writes, saved (everything annexed), pushed to
    a RIA store and cloned without content: ``(clone, origin, dataset id)``."""
    import datalad.api as dl
    src = tmp_path / "origin"
    ds = dl.create(path=str(src), result_renderer="disabled")
    make(src)
    dl.save(dataset=str(src), message=message, result_renderer="disabled")
    store = tmp_path / "store"
    dl.create_sibling_ria(url=f"ria+file://{store}", name="ria", dataset=str(src),
                          new_store_ok=True, result_renderer="disabled")
    dl.push(dataset=str(src), to="ria", result_renderer="disabled")
    return clone(f"ria+file://{store}#{ds.id}", tmp_path / "clone"), src, ds.id


# ---------------------------------------------------------------------------
# plain folders: a no-op
# ---------------------------------------------------------------------------

def test_plain_folder_is_not_a_dataset_and_get_is_a_no_op():
    sample = REPO / "decoder" / "data" / "_sample" / "haxby2001_sub1_slice"
    assert not is_datalad_dataset(sample)  # inside the project's git repo, but no annex
    prov = ensure_local(sample, [EVENTS1])
    assert prov == {"is_datalad": False, "dataset_id": None, "commit": None, "files": {}}


def test_missing_file_in_a_plain_folder_names_the_file(tmp_path):
    with pytest.raises(DataError, match=r"sub-9/func/x_bold.nii.gz not found"):
        ensure_local(tmp_path, ["sub-9/func/x_bold.nii.gz"])


# ---------------------------------------------------------------------------
# the real OpenNeuro dataset, offline
# ---------------------------------------------------------------------------

@needs_shared
def test_ds000105_clone_is_detected_with_its_id_and_commit(ds105):
    assert dataset_root(ds105 / "sub-1" / "func") == ds105
    with DataladInputs(ds105 / "sub-1") as dl:  # a folder inside the dataset
        assert dl.is_datalad and dl.top == ds105
    prov = ensure_local(ds105, [EVENTS1])  # in git: nothing to fetch
    assert prov["is_datalad"] is True
    assert prov["dataset_id"] == DS105_ID
    assert prov["commit"] == DS105_COMMIT
    assert prov["files"][EVENTS1]["git_blob"] == git("rev-parse", f"HEAD:{EVENTS1}",
                                                     cwd=ds105).strip()


@needs_shared
def test_events_are_read_through_the_project_from_a_fresh_clone(ds105):
    bids = pytest.importorskip("decoder.data.bids", reason="BIDS reader not available yet")
    import pandas as pd
    ensure_local(ds105, [EVENTS1])
    reader = getattr(bids, "read_events", None)
    events = reader(ds105 / EVENTS1) if reader else pd.read_csv(ds105 / EVENTS1, sep="\t")
    assert {"onset", "duration", "trial_type"} <= set(events.columns)
    assert {"face", "house", "scrambledpix"} <= set(events["trial_type"])


@needs_shared
def test_provenance_records_the_annex_key_of_an_annexed_file(ds105):
    with DataladInputs(ds105) as dl:
        prov = dl.provenance([BOLD1, EVENTS1])
    key = prov["files"][BOLD1]["annex_key"]
    assert key == Path(os.readlink(ds105 / BOLD1)).name  # the key the symlink points to
    assert key.startswith("MD5E-s25669537--")
    assert prov["files"][BOLD1]["git_blob"] is None
    assert prov["files"][EVENTS1]["annex_key"] is None


@needs_shared
def test_unreachable_content_gives_one_error_naming_file_and_url(ds105):
    with pytest.raises(DataError) as info:
        with DataladInputs(ds105) as dl:
            dl.get([EVENTS1, BOLD1])
    msg = str(info.value)
    assert "\n" not in msg
    assert f"cannot fetch {BOLD1}" in msg
    assert "https://s3.amazonaws.com/openneuro.org/ds000105/" + BOLD1 in msg
    assert git("status", "--porcelain", cwd=ds105) == ""
    assert not (ds105 / BOLD1).exists()  # still a dangling link, no partial file
    assert annex_tmp_files(ds105) == []


@needs_shared
def test_decoder_run_on_the_offline_clone_fails_in_one_line_and_leaves_it_clean(ds105,
                                                                               tmp_path):
    pytest.importorskip("pipelines.category", reason="category pipeline not available yet")
    res = decoder_cli("run", "configs/haxby.yaml", "--data", str(ds105),
                      "--out", str(tmp_path / "out"), *FAST)
    assert res.returncode != 0
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1, res.stderr
    assert lines[0].startswith("decoder: error: cannot fetch sub-1/func/")
    assert "https://s3.amazonaws.com/openneuro.org/ds000105/" in lines[0]
    assert "more files not fetched" in lines[0]  # fails fast: one attempt, not one per file
    assert git("status", "--porcelain", cwd=ds105) == ""
    assert annex_tmp_files(ds105) == []
    assert not (tmp_path / "out" / "metrics.json").exists()


# ---------------------------------------------------------------------------
# a local DataLad dataset with a RIA sibling
# ---------------------------------------------------------------------------

@needs_shared
def test_get_fetches_only_the_listed_files_and_drops_them_on_request(haxby_ds, tmp_path):
    ds = clone(haxby_ds["url"], tmp_path / "clone")
    run2 = "sub-1/func/sub-1_task-objectviewing_run-02_bold.nii.gz"
    assert not (ds / BOLD1).exists() and not (ds / run2).exists()
    with DataladInputs(ds, drop_fetched=True) as dl:
        files = dl.get([BOLD1])
        assert files == [ds / BOLD1]
        assert (ds / BOLD1).read_bytes() == (haxby_ds["path"] / BOLD1).read_bytes()
        assert not (ds / run2).exists()  # not asked for, not fetched
        assert dl.fetched == [ds / BOLD1]
        assert dl.get([BOLD1]) == [ds / BOLD1] and dl.fetched == [ds / BOLD1]  # no refetch
    assert not (ds / BOLD1).exists()  # dropped again on exit
    assert git("status", "--porcelain", cwd=ds) == ""


@needs_shared
def test_a_clone_given_as_a_relative_path_with_dots_gets_its_files(haxby_ds, tmp_path):
    clone(haxby_ds["url"], tmp_path / "clone")
    (tmp_path / "work").mkdir()
    res = decoder_cli("run", ROOT / "configs" / "haxby.yaml", "--data", "../clone",
                      "--out", tmp_path / "out", *FAST, cwd=tmp_path / "work")
    assert res.returncode == 0, res.stderr
    assert (tmp_path / "clone" / BOLD1).exists()


@needs_shared
def test_content_present_before_is_never_dropped(haxby_ds, tmp_path):
    ds = clone(haxby_ds["url"], tmp_path / "clone")
    ensure_local(ds, [BOLD1])
    with DataladInputs(ds, drop_fetched=True) as dl:
        dl.get([BOLD1])
        assert dl.fetched == []
    assert (ds / BOLD1).exists()


@needs_shared
def test_ensure_local_returns_id_commit_and_keys_of_a_clone(haxby_ds, tmp_path):
    ds = clone(haxby_ds["url"], tmp_path / "clone")
    prov = ensure_local(ds, [BOLD1, EVENTS1])
    assert (ds / BOLD1).exists() and (ds / EVENTS1).exists()
    assert prov["dataset_id"] == haxby_ds["id"]
    assert prov["commit"] == haxby_ds["commit"]
    assert prov["files"][BOLD1]["annex_key"] == Path(os.readlink(ds / BOLD1)).name


@needs_shared
def test_decoder_run_on_a_plain_clone_gets_inputs_and_records_provenance(haxby_ds, tmp_path):
    pytest.importorskip("pipelines.category", reason="category pipeline not available yet")
    ds = clone(haxby_ds["url"], tmp_path / "clone")  # no fetch: content is in the store
    out = tmp_path / "out"
    res = decoder_cli("run", "configs/haxby.yaml", "--data", str(ds), "--out", str(out), *FAST)
    assert res.returncode == 0, res.stderr
    prov = json.loads((out / "metrics.json").read_text())["provenance"]
    assert prov["dataset"]["dataset_id"] == haxby_ds["id"]
    assert prov["dataset"]["commit"] == haxby_ds["commit"]
    assert prov["dataset"]["files"][BOLD1]["annex_key"] == Path(os.readlink(ds / BOLD1)).name
    assert prov["dataset"]["files"][EVENTS1]["git_blob"] is not None  # text2git: in git
    assert git("status", "--porcelain", cwd=ds) == ""
    # inputs are recorded by their names in the dataset, not where the annex links lead
    paths = {r["path"] for r in prov["inputs"]}
    assert BOLD1 in paths and not any(".git/annex" in p for p in paths)
    # so the run can be reproduced on another fresh clone, whose content is not there yet
    again = clone(haxby_ds["url"], tmp_path / "clone2")
    res = decoder_cli("reproduce", str(out), "--data", str(again), "--out", str(tmp_path / "r"))
    assert res.returncode == 0, res.stderr
    assert res.stdout.startswith("reproduced exactly")


def test_biomarker_run_on_a_clone_of_images_gets_every_file_it_reads(tmp_path):
    """fMRIPrep-style images in a DataLad dataset (everything annexed): a run on a fresh
    clone gets the images, their confounds and the participants table, and records the
    dataset's id and commit."""
    from test_biomarker_fmriprep import _run, make_fmriprep
    make_fmriprep(tmp_path / "made", n_per_site=4)
    clone_, src, ds_id = published_clone(
        tmp_path, lambda d: shutil.copytree(tmp_path / "made", d, dirs_exist_ok=True))
    assert not (clone_ / "participants.tsv").exists()  # annexed, not fetched yet
    out = tmp_path / "run"
    assert _run(clone_, out, "--set", "save_model=false", "--set", "n_splits=2") == 0
    prov = json.loads((out / "metrics.json").read_text())["provenance"]
    assert prov["dataset"]["dataset_id"] == ds_id
    assert prov["dataset"]["commit"] == git("rev-parse", "HEAD", cwd=src).strip()
    keys = prov["dataset"]["files"]
    confounds = [k for k in keys if k.endswith("_desc-confounds_timeseries.tsv")]
    assert len(confounds) == 8 and all(keys[k]["annex_key"] for k in confounds)
    assert keys["participants.tsv"]["annex_key"] and keys["atlas.nii.gz"]["annex_key"]
    assert git("status", "--porcelain", cwd=clone_) == ""


def test_abide_run_on_a_clone_gets_only_the_chosen_subjects_files(tmp_path):
    """An ABIDE dataset (everything annexed): a run of two sites out of three gets the
    phenotypic table and those sites' files, and leaves the third site's unfetched."""
    from test_abide_reader import make_layout
    clone_, _, _ = published_clone(tmp_path, lambda d: make_layout(d, n_sites=3, per_site=8))
    out = tmp_path / "run"
    res = decoder_cli("run", "configs/abide.yaml", "--data", str(clone_), "--out", str(out),
                      "--set", "dataset.sites=SITE0,SITE2", "--set", "save_model=false",
                      "--set", "cv=stratified-kfold", "--set", "n_splits=2")
    assert res.returncode == 0, res.stderr
    files = sorted((clone_ / "Outputs/cpac/filt_noglobal/rois_ho").iterdir())
    fetched = {f.name.split("_")[0] for f in files if f.exists()}
    assert len(files) == 24 and fetched == {"SITE0", "SITE2"}
    keys = json.loads((out / "metrics.json").read_text())["provenance"]["dataset"]["files"]
    assert len(keys) == 17 and "Phenotypic_V1_0b_preprocessed1.csv" in keys
    assert not any("SITE1" in k for k in keys)
    assert git("status", "--porcelain", cwd=clone_) == ""


# ---------------------------------------------------------------------------
# decoder run --datalad, then datalad rerun
# ---------------------------------------------------------------------------

@pytest.mark.slow
def test_datalad_rerun_reproduces_metrics_except_timing(tmp_path):
    pytest.importorskip("pipelines.category", reason="category pipeline not available yet")
    import datalad.api as dl
    from decoder.results import strip_timing
    ds = tmp_path / "analysis"
    dl.create(path=str(ds), result_renderer="disabled")
    out = ds / "results" / "haxby"
    res = decoder_cli("run", str(REPO / "configs" / "haxby.yaml"), "--out", str(out),
                      "--datalad", *FAST)
    assert res.returncode == 0, res.stderr
    # the recorded command ran from the dataset's top; where the results are is said in full
    assert (f"run recorded with 'datalad run' in the dataset {ds}: results in "
            f"{out / 'metrics.json'}; replay it with 'datalad rerun' there") in res.stdout
    first = json.loads((out / "metrics.json").read_text())
    log = git("log", "-1", "--format=%B", cwd=ds)
    assert "DATALAD RUNCMD" in log and "results/haxby" in log
    assert git("status", "--porcelain", cwd=ds) == ""
    dl.rerun(dataset=str(ds), result_renderer="disabled")
    second = json.loads((out / "metrics.json").read_text())
    assert strip_timing(first) == strip_timing(second)
    assert git("status", "--porcelain", cwd=ds) == ""


def test_datalad_flag_outside_a_dataset_is_a_one_line_error(tmp_path):
    pytest.importorskip("pipelines.category", reason="category pipeline not available yet")
    res = decoder_cli("run", "configs/haxby.yaml", "--out", str(tmp_path / "out"), "--datalad")
    assert res.returncode != 0
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and "not inside a DataLad dataset" in lines[0]
    assert f"'datalad create {tmp_path}'" in lines[0]     # an empty folder: as it is


def test_the_datalad_create_suggested_for_a_folder_with_files_works(tmp_path):
    import re
    import sys
    pytest.importorskip("pipelines.category", reason="category pipeline not available yet")
    work = tmp_path / "study"
    work.mkdir()
    (work / "notes.txt").write_text("mine")
    res = decoder_cli("run", "configs/haxby.yaml", "--out", str(work / "out"), "--datalad")
    assert res.returncode != 0
    suggested = re.search(r"'(datalad create [^']+)'", res.stderr).group(1)
    assert suggested == f"datalad create --force {work}"   # plain 'create' refuses files
    datalad = Path(sys.executable).with_name("datalad")
    done = subprocess.run([str(datalad), *suggested.split()[1:]], capture_output=True,
                          text=True)
    assert done.returncode == 0, done.stderr
    assert (work / ".datalad" / "config").is_file() and (work / "notes.txt").read_text() == "mine"


def test_datalad_flag_checks_the_config_choices_before_recording(tmp_path):
    # a wrong choice is named at once, before the dataset check and before anything is recorded
    res = decoder_cli("run", "configs/abide.yaml", "--out", str(tmp_path / "out"), "--datalad",
                      "--set", "model=forest")
    lines = res.stderr.strip().splitlines()
    assert res.returncode == 2 and len(lines) == 1 and "model 'forest'" in lines[0]
    assert not (tmp_path / "out").exists()


@needs_shared
def test_failed_recorded_run_reports_the_command_error_once_and_records_nothing(ds105,
                                                                                tmp_path):
    pytest.importorskip("pipelines.category", reason="category pipeline not available yet")
    import datalad.api as dl
    ds = tmp_path / "analysis"
    dl.create(path=str(ds), result_renderer="disabled")
    head = git("rev-parse", "HEAD", cwd=ds)
    res = decoder_cli("run", "configs/haxby.yaml", "--data", str(ds105),
                      "--out", str(ds / "results"), "--datalad", *FAST)
    assert res.returncode != 0
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1, res.stderr
    assert lines[0].startswith("decoder: error: cannot fetch sub-1/func/")
    assert git("rev-parse", "HEAD", cwd=ds) == head  # no run record for a failed run
    assert git("status", "--porcelain", cwd=ds) == ""
    assert git("status", "--porcelain", cwd=ds105) == ""


def test_an_hcp_layout_in_a_datalad_dataset_gets_only_the_runs_named(tmp_path, monkeypatch):
    """A literal bold_pattern (rfMRI_REST1_LR.nii.gz) finds annexed images whose content is
    not here yet (rglob of a name without wildcards skips such links), and only they are got."""
    import datalad.api as dl
    from test_biomarker_fmriprep import _participants, make_fmriprep
    from test_biomarker_pipeline import CONFIG
    monkeypatch.setenv("DECODER_CACHE_DIR", str(tmp_path / "cache"))
    bids = make_fmriprep(tmp_path / "fmriprep", n_per_site=4, sites=("A",))
    src = tmp_path / "origin"
    dl.create(path=str(src), result_renderer="disabled")
    images = [next(f.glob("*_bold.nii.gz")) for f in sorted(bids.glob("sub-*/func"))]
    for i, image in enumerate(images):
        for run, content in (("LR", image), ("RL", images[i - 1])):   # RL: other content
            res = src / "HCP1200" / image.name.split("_")[0][len("sub-"):] / "MNINonLinear" \
                / "Results" / f"rfMRI_REST1_{run}"
            res.mkdir(parents=True)
            shutil.copy(content, res / f"rfMRI_REST1_{run}.nii.gz")
            if run == "RL":   # not the bytes of any LR image (one annex object each)
                with open(res / f"rfMRI_REST1_{run}.nii.gz", "ab") as f:
                    f.write(b"\0")
    dl.save(dataset=str(src), message="HCP-like layout", result_renderer="disabled")
    clone = tmp_path / "clone"
    dl.clone(source=str(src), path=str(clone), result_renderer="disabled")
    table = _participants(bids)
    table["participant_id"] = table["participant_id"].str[len("sub-"):]
    table.to_csv(tmp_path / "participants.tsv", sep="\t", index=False)
    out = tmp_path / "run"
    done = decoder_cli("run", CONFIG, "--data", clone / "HCP1200", "--out", out,
                       "--set", "dataset.kind=fmriprep",
                       "--set", f"dataset.atlas={bids / 'atlas.nii.gz'}",
                       "--set", f"dataset.participants={tmp_path / 'participants.tsv'}",
                       "--set", "dataset.bold_pattern=rfMRI_REST1_LR.nii.gz",
                       "--set", "dataset.confounds_strategy=none",
                       "--set", "cv=stratified-kfold", "--set", "n_splits=2",
                       "--set", "harmonize.method=none", "--set", "save_model=false")
    assert done.returncode == 0, done.stderr
    m = json.loads((out / "metrics.json").read_text())
    assert m["dataset"]["n_subjects"] == 4
    assert m["provenance"]["dataset"]["path_in_dataset"] == "HCP1200"
    results = sorted((clone / "HCP1200").glob("*/MNINonLinear/Results/*/*.nii.gz"))
    got = [p.parent.name for p in results if p.exists()]
    assert got == ["rfMRI_REST1_LR"] * 4 and len(results) == 8   # the RL runs stay remote
