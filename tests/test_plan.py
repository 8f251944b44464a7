"""``decoder run --dry-run``: what a run would read, get and write, without doing it."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from conftest import ROOT, git, needs_shared, shared_data
from test_abide_reader import make_layout

from decoder.cli import main
from decoder.errors import DataError
from pipelines.plan import plan

HAXBY = ROOT / "configs" / "haxby.yaml"
ABIDE = ROOT / "configs" / "abide.yaml"


def _dry(capsys, *args) -> tuple[int, str, str]:
    rc = main(["run", *map(str, args), "--dry-run"])
    out, err = capsys.readouterr()
    return rc, out, err.strip()


def _snapshot(folder: Path) -> dict:
    return {p.relative_to(folder).as_posix(): p.stat().st_mtime_ns
            for p in sorted(folder.rglob("*"))}


def test_the_plan_of_the_embedded_sample_matches_what_the_run_then_does(tmp_path, capsys):
    from decoder.config import load_yaml
    out = tmp_path / "run"
    rc, text, _ = _dry(capsys, HAXBY, "--out", out, "--set", "classes=face,house,cat")
    assert rc == 0 and not out.exists()  # nothing written
    assert "classes: 3 (face 144, house 144, cat 144 events)" in text
    assert "12 folds (one run held out each)" in text and "nothing was got, run or written" in text
    p = plan(load_yaml(HAXBY) | {"classes": ["face", "house", "cat"]}, out=out)
    assert main(["run", str(HAXBY), "--out", str(out), "--set", "classes=face,house,cat"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert p["config_sha256"] == metrics["provenance"]["config_sha256"]
    assert p["design"]["n_folds"] == len(metrics["fold_scores"])
    assert sorted(p["design"]["classes"]) == sorted(metrics["classes"])
    read = {r["path"] for r in metrics["provenance"]["inputs"]}
    assert p["inputs"]["n_files"] == len(read) and p["inputs"]["to_get"] == []
    capsys.readouterr()
    rc, text, _ = _dry(capsys, HAXBY, "--out", out)
    assert rc == 0 and f"output: {out} (holds a run, which this run would replace)" in text


def test_a_dry_run_stops_on_what_would_stop_the_run_in_one_line(tmp_path, sample_copy, capsys):
    rc, _, err = _dry(capsys, HAXBY, "--data", sample_copy, "--set", "classes=face,dog")
    assert rc == 2 and "dog" in err and "\n" not in err
    rc, _, err = _dry(capsys, HAXBY, "--data", sample_copy, "--set", "cv=leave-one-subject-out")
    assert rc == 2 and "needs at least 2 subjects" in err
    rc, _, err = _dry(capsys, HAXBY, "--data", sample_copy, "--set", "cleaning.high_pass=0.3")
    assert rc == 2 and "is not below the Nyquist frequency of the data (0.2 Hz" in err
    (tmp_path / "file").write_text("mine")
    rc, _, err = _dry(capsys, HAXBY, "--out", tmp_path / "file")
    assert rc == 2 and "is not a folder" in err and (tmp_path / "file").read_text() == "mine"
    events = next(sample_copy.rglob("*run-02_events.tsv"))
    original = events.read_text()
    events.write_text(original + "400.0\t9.0\tface\n")      # the run lasts 121 x 2.5 s
    rc, _, err = _dry(capsys, HAXBY, "--data", sample_copy)
    assert rc == 2 and "run-02_events.tsv: event at 400.0 s is beyond the end of the run" in err
    events.write_text(original)
    next(sample_copy.rglob("*run-03_events.tsv")).unlink()
    before = _snapshot(sample_copy)
    rc, _, err = _dry(capsys, HAXBY, "--data", sample_copy)
    assert rc == 2 and "no events.tsv for" in err and "run-03_bold.nii.gz" in err
    assert _snapshot(sample_copy) == before


def test_a_dry_run_checks_the_compute_settings_the_run_would_refuse(tmp_path, capsys):
    for args, words in ((("-J", "0"), "compute.n_jobs must be a non-zero integer, got 0"),
                        (("--set", "compute.n_jobs=two"), "compute.n_jobs"),
                        (("--scheduler", "bogus"), "'bogus' is not a scheduler address")):
        rc, _, err = _dry(capsys, HAXBY, "--out", tmp_path / "o", *args)
        assert rc == 2 and words in err and "\n" not in err, args
    # an address is accepted and said to be untried: a dry run contacts nothing
    rc, text, _ = _dry(capsys, HAXBY, "--out", tmp_path / "o", "--scheduler", "tcp://h:8786")
    assert rc == 0 and "compute: Dask scheduler tcp://h:8786 (not contacted in a dry run)" in text


def test_an_abide_plan_counts_subjects_sites_and_folds_without_reading_series(tmp_path,
                                                                               capsys):
    root = make_layout(tmp_path / "abide", n_sites=3, per_site=8)
    # a series that a run would refuse: the plan does not read it
    damaged = root / "Outputs/cpac/filt_noglobal/rois_ho/SITE2_0000203_rois_ho.1D"
    damaged.write_text("#10\n")
    rc, text, _ = _dry(capsys, ABIDE, "--data", root, "--out", tmp_path / "o")
    assert rc == 0
    assert "subjects: 24 (12 autism, 12 control) from 3 sites" in text
    assert "inputs: 25 files, 25 here" in text and "3 folds (one site held out each)" in text
    rc, text, _ = _dry(capsys, ABIDE, "--data", root, "--out", tmp_path / "o",
                       "--set", "dataset.exclude=SITE2_0000203", "--set", "cv=stratified-kfold",
                       "--set", "n_splits=4", "--set", "dataset.sites=SITE1,SITE2")
    assert rc == 0 and "subjects: 15 (" in text and "evaluation: 4 folds;" in text
    rc, _, err = _dry(capsys, ABIDE, "--data", root, "--set", "cv=stratified-group-kfold",
                      "--set", "n_splits=5")
    assert rc == 2 and "needs at least 5 sites, the data have 3" in err


def test_an_abide_plan_names_a_site_of_one_subject(tmp_path, capsys):
    from test_abide_reader import _edit_table
    root = make_layout(tmp_path / "abide", n_sites=3, per_site=8)
    _edit_table(root, lambda t: t.assign(SITE_ID=t["SITE_ID"].where(
        t["FILE_ID"] != "SITE2_0000200", "LONE")))
    rc, text, _ = _dry(capsys, ABIDE, "--data", root)
    assert rc == 0 and "from 4 sites (smallest: LONE, 1)" in text
    assert "sites with a single subject" in text and text.count("LONE") == 2


def test_a_one_class_dataset_is_refused_by_the_plan(tmp_path, capsys):
    from test_abide_reader import _edit_table
    root = make_layout(tmp_path / "abide")
    _edit_table(root, lambda t: t.assign(DX_GROUP=2))
    rc, _, err = _dry(capsys, ABIDE, "--data", root)
    assert rc == 2 and "all 24 subjects are control" in err


@needs_shared
def test_the_real_abide_plan_gives_the_documented_cohort(shared, capsys):
    rc, text, _ = _dry(capsys, ABIDE, "--data", shared / "abide_pcp")
    assert rc == 0
    assert "subjects: 871 (403 autism, 468 control) from 20 sites" in text
    assert "inputs: 872 files, 872 here" in text and "20 folds (one site held out each)" in text


def _datalad():
    pytest.importorskip("datalad.api", reason="DataLad is not installed")


@needs_shared
@pytest.mark.usefixtures("git_identity")
def test_on_a_fresh_clone_of_openneuro_ds000105_it_counts_what_would_be_got(tmp_path, capsys):
    """The real OpenNeuro dataset, content not here: the sizes come from the annex keys."""
    _datalad()
    from decoder.data.datalad import annex_key_size
    ds = tmp_path / "ds000105"
    subprocess.run(["git", "clone", "-q", str(shared_data() / "openneuro" / "ds000105.bundle"),
                    str(ds)], check=True)
    before = git("status", "--porcelain", "--ignored", cwd=ds)
    rc, text, _ = _dry(capsys, HAXBY, "--data", ds, "--set", "dataset.subjects=[1]",
                       "--set", "dataset.mask=compute", "--out", tmp_path / "o")
    assert rc == 0
    keys = [git("annex", "lookupkey", f, cwd=ds).strip() for f in
            sorted(p.relative_to(ds).as_posix() for p in (ds / "sub-1" / "func").iterdir()
                   if p.name.endswith("_bold.nii.gz"))]
    total = sum(annex_key_size(k) for k in keys)
    from decoder.data.fetch import human_size
    assert len(keys) == 12 and f"12 to get ({human_size(total)})" in text
    assert "DataLad dataset c01c2348-8708-11e8-930d-0242ac12000d, commit b2677616" in text
    assert "classes: 8 (" in text and "runs: 12 of 1 subject(s) (sub-1); TR 2.5 s" in text
    assert git("status", "--porcelain", "--ignored", cwd=ds) == before
    assert git("annex", "find", cwd=ds).strip() == ""  # no content got
    assert not (tmp_path / "o").exists()
    # the README shows this very output: its lines (but the paths) are what the run prints
    readme = (ROOT / "README.md").read_text()
    block = readme.split("$ decoder run configs/haxby.yaml --data data/ds000105 ", 1)[1]
    shown = block.split("```", 1)[0].splitlines()[1:]
    lines = text.splitlines()
    for line in shown:
        if not line.startswith(("data:", "output:")):
            assert line in lines, (line, text)


@pytest.mark.usefixtures("git_identity")
def test_an_abide_clone_without_its_table_is_planned_as_a_run_would_start(tmp_path, capsys):
    _datalad()
    import datalad.api as dl
    from test_datalad import published_clone
    clone_, _, _ = published_clone(tmp_path, lambda d: make_layout(d, n_sites=2, per_site=4))
    rc, text, _ = _dry(capsys, ABIDE, "--data", clone_)
    assert rc == 0 and "inputs: 9 files, 0 here (0 B), 9 to get (" in text
    assert "subjects: chosen from the table above, which is not here yet" in text
    dl.get(path=str(clone_ / "Phenotypic_V1_0b_preprocessed1.csv"), dataset=str(clone_),
           result_renderer="disabled")
    rc, text, _ = _dry(capsys, ABIDE, "--data", clone_, "--set", "dataset.sites=SITE1",
                       "--set", "cv=stratified-kfold", "--set", "n_splits=2")
    assert rc == 0 and "inputs: 5 files, 1 here" in text and "4 to get (" in text
    assert "subjects: 4 (2 autism, 2 control) from 1 site (" in text
    assert git("annex", "find", cwd=clone_).strip() == "Phenotypic_V1_0b_preprocessed1.csv"


def test_plan_raises_data_errors_as_a_library_function(tmp_path):
    with pytest.raises(DataError, match="ABIDE root folder not found"):
        plan({"task": "biomarker"}, data=tmp_path / "nowhere")
