"""``decoder fetch``: DataLad datasets, ABIDE through ``datalad addurls`` over HTTP, errors.

The ABIDE tests serve three real subjects (and the real phenotypic table)
from a temporary copy laid out like the S3 bucket, over HTTP on 127.0.0.1.
"""

from __future__ import annotations

import functools
import http.server
import json
import os
import shutil
import threading
from pathlib import Path

import numpy as np
import pytest
from conftest import ROOT, git, needs_shared, shared_data, skip_without_datalad
from conftest import run_cli as decoder_cli

from decoder.data.fetch import _glob_regex, check_timeseries_1d, fetch, human_size
from decoder.errors import DataError

skip_without_datalad()

REPO = ROOT
SHARED = shared_data()
ROIS = "Outputs/cpac/filt_noglobal/rois_ho"
PHENO = "Phenotypic_V1_0b_preprocessed1.csv"
SUBJECTS = ["Pitt_0050003", "Pitt_0050004", "Pitt_0050005"]


pytestmark = pytest.mark.usefixtures("git_identity")


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):  # keep the test output clean
        pass


@pytest.fixture
def bucket(tmp_path):
    """Three ABIDE subjects + the phenotypic table served on 127.0.0.1 (stops by itself)."""
    if not SHARED:
        pytest.skip("DECODER_SHARED_DATA is not set (real data absent)")
    src = Path(SHARED) / "abide_pcp"
    root = tmp_path / "bucket"
    (root / ROIS).mkdir(parents=True)
    shutil.copy(src / PHENO, root / PHENO)
    for fid in SUBJECTS:
        shutil.copy(src / ROIS / f"{fid}_rois_ho.1D", root / ROIS)
    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(_Quiet, directory=str(root)))
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    stopper = threading.Timer(300, server.shutdown)  # bounded even if teardown never runs
    stopper.daemon = True
    stopper.start()
    yield {"root": root, "url": f"http://127.0.0.1:{server.server_address[1]}/"}
    stopper.cancel()
    server.shutdown()
    server.server_close()


# ---------------------------------------------------------------------------
# ABIDE: addurls from the phenotypic table
# ---------------------------------------------------------------------------

@needs_shared
def test_abide_fetch_builds_a_datalad_dataset_with_addurls(bucket, tmp_path):
    to = tmp_path / "abide"
    res = decoder_cli("fetch", "abide-pcp", "--subjects", "50003", "Pitt_0050004", "50005",
                      "--base-url", bucket["url"], "--to", str(to), "-J", "2")
    assert res.returncode == 0, res.stderr
    assert "3 files to download (647.4 kB)" in res.stdout  # sizes before downloading
    for fid in SUBJECTS:
        f = to / ROIS / f"{fid}_rois_ho.1D"
        assert f.read_bytes() == (Path(SHARED) / "abide_pcp" / ROIS / f.name).read_bytes()
        assert f.is_symlink()  # annexed: tracked with its checksum
        info = json.loads(git("annex", "whereis", "--json", str(f.relative_to(to)), cwd=to))
        urls = [u for loc in info["whereis"] for u in loc["urls"]]
        assert urls == [bucket["url"] + f"{ROIS}/{fid}_rois_ho.1D"]
    assert (to / PHENO).is_file()
    assert git("config", "-f", ".datalad/config", "--get", "datalad.dataset.id", cwd=to).strip()
    assert git("status", "--porcelain", cwd=to) == ""
    assert not list((to / ROIS).glob("Pitt_0050006*"))  # only the subjects asked for

    # the ABIDE reader reads the fetched folder like the original layout
    abide = pytest.importorskip("decoder.data.abide", reason="ABIDE reader not available")
    loaded = abide.load_abide(to)
    assert sorted(loaded.file_ids) == SUBJECTS
    assert all(ts.shape[1] == 111 for ts in loaded.time_series)

    # idempotent: a second fetch downloads nothing and commits nothing
    head = git("rev-parse", "HEAD", cwd=to)
    again = decoder_cli("fetch", "abide-pcp", "--subjects", "50003", "50004", "50005",
                        "--base-url", bucket["url"], "--to", str(to))
    assert again.returncode == 0, again.stderr
    assert "0 files to download" in again.stdout
    assert git("rev-parse", "HEAD", cwd=to) == head


@needs_shared
def test_a_local_file_url_mirror_works_like_a_server(bucket, tmp_path):
    # git-annex refuses file:// URLs unless told; a mirror the user names is allowed
    to = tmp_path / "abide"
    spaced = bucket["root"].with_name("mir ror é")      # a folder typed as it is
    bucket["root"].rename(spaced)
    bucket["root"] = spaced
    mirror = f"file://{spaced}"
    res = decoder_cli("fetch", "abide-pcp", "--subjects", "50003", "--base-url", mirror,
                      "--to", str(to))
    assert res.returncode == 0, res.stderr
    f = to / ROIS / f"{SUBJECTS[0]}_rois_ho.1D"
    assert f.read_bytes() == (bucket["root"] / ROIS / f.name).read_bytes()
    # dropped, it is got again from the mirror it was added from
    git("annex", "drop", "--force", str(f.relative_to(to)), cwd=to)
    assert not f.exists()
    again = decoder_cli("fetch", "abide-pcp", "--subjects", "50003", "--base-url", mirror,
                        "--to", str(to))
    assert again.returncode == 0, again.stderr
    assert f.read_bytes() == (bucket["root"] / ROIS / f.name).read_bytes()


@needs_shared
def test_dropped_abide_file_is_got_again_from_its_recorded_url(bucket, tmp_path):
    import datalad.api as dl
    to = tmp_path / "abide"
    fetch("abide-pcp", subjects=["50003"], to=to, base_url=bucket["url"], echo=lambda m: None)
    rel = f"{ROIS}/Pitt_0050003_rois_ho.1D"
    dl.drop(path=str(to / rel), dataset=str(to), result_renderer="disabled")
    assert not (to / rel).exists()
    info = fetch("abide-pcp", subjects=["50003"], to=to, base_url=bucket["url"],
                 echo=lambda m: None)
    assert (to / rel).exists() and rel in info["files"]
    assert git("status", "--porcelain", cwd=to) == ""


@needs_shared
def test_truncated_served_file_is_rejected_by_name_and_fetch_resumes(bucket, tmp_path):
    served = bucket["root"] / ROIS / "Pitt_0050004_rois_ho.1D"
    good = served.read_bytes()
    served.write_bytes(good[: len(good) // 2])  # the server sends half the file
    to = tmp_path / "abide"
    res = decoder_cli("fetch", "abide-pcp", "--subjects", *SUBJECTS,
                      "--base-url", bucket["url"], "--to", str(to))
    assert res.returncode != 0
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1, res.stderr
    assert "Pitt_0050004_rois_ho.1D" in lines[0] and "truncated or corrupted" in lines[0]
    assert git("status", "--porcelain", cwd=to) == ""  # clean, nothing half-added
    assert not (to / ROIS / "Pitt_0050004_rois_ho.1D").exists()
    assert "Pitt_0050004" not in git("ls-files", cwd=to)
    assert (to / ROIS / "Pitt_0050003_rois_ho.1D").exists()  # the good ones are kept
    tmp = to / ".git" / "annex" / "tmp"
    assert not tmp.is_dir() or not [p for p in tmp.rglob("*") if p.is_file()]

    served.write_bytes(good)  # the server is fixed: the same command completes the fetch
    res = decoder_cli("fetch", "abide-pcp", "--subjects", *SUBJECTS,
                      "--base-url", bucket["url"], "--to", str(to))
    assert res.returncode == 0, res.stderr
    assert "1 file to download" in res.stdout
    assert (to / ROIS / "Pitt_0050004_rois_ho.1D").read_bytes() == good


@needs_shared
def test_corrupted_file_without_a_recorded_checksum_is_caught_by_its_structure(
        bucket, tmp_path):
    manifest = tmp_path / "manifest.yaml"
    text = (REPO / "data_manifest.yaml").read_text()
    manifest.write_text(text.replace("    checksums: data_checksums/abide-pcp.tsv\n", ""))
    served = bucket["root"] / ROIS / "Pitt_0050005_rois_ho.1D"
    lines = served.read_text().splitlines(keepends=True)
    lines[10] = lines[10].replace("\t", "\tX", 1)  # a corrupted value
    served.write_text("".join(lines))
    with pytest.raises(DataError, match=r"Pitt_0050005_rois_ho.1D.* line 11: non-numeric"):
        fetch("abide-pcp", subjects=["50005"], to=tmp_path / "abide", base_url=bucket["url"],
              manifest=manifest, echo=lambda m: None)
    assert git("status", "--porcelain", cwd=tmp_path / "abide") == ""


@needs_shared
def test_missing_file_on_the_server_names_the_file_and_url(bucket, tmp_path):
    (bucket["root"] / ROIS / "Pitt_0050005_rois_ho.1D").unlink()
    with pytest.raises(DataError) as info:
        fetch("abide-pcp", subjects=["50005"], to=tmp_path / "abide", base_url=bucket["url"],
              echo=lambda m: None)
    msg = str(info.value)
    assert f"cannot fetch {ROIS}/Pitt_0050005_rois_ho.1D from {bucket['url']}{ROIS}/" in msg
    assert git("status", "--porcelain", cwd=tmp_path / "abide") == ""


@needs_shared
def test_unknown_or_fileless_subject_is_a_clear_error(bucket, tmp_path):
    with pytest.raises(DataError, match="subject '99999' is not in"):
        fetch("abide-pcp", subjects=["99999"], to=tmp_path / "a", base_url=bucket["url"],
              echo=lambda m: None)
    with pytest.raises(DataError, match="subject '50002' has no preprocessed file"):
        fetch("abide-pcp", subjects=["50002"], to=tmp_path / "a", base_url=bucket["url"],
              echo=lambda m: None)


# ---------------------------------------------------------------------------
# DataLad datasets
# ---------------------------------------------------------------------------

@needs_shared
def test_fetch_from_a_ria_store_then_run(tmp_path):
    import datalad.api as dl
    src = tmp_path / "haxby"
    ds = dl.create(path=str(src), cfg_proc="text2git", result_renderer="disabled")
    shutil.copytree(Path(SHARED) / "haxby2001_sub1_slice", src, dirs_exist_ok=True)
    dl.save(dataset=str(src), message="Haxby slice", result_renderer="disabled")
    store = tmp_path / "store"
    dl.create_sibling_ria(url=f"ria+file://{store}", name="ria", dataset=str(src),
                          new_store_ok=True, result_renderer="disabled")
    dl.push(dataset=str(src), to="ria", result_renderer="disabled")
    commit = git("rev-parse", "HEAD", cwd=src).strip()

    to = tmp_path / "fetched"
    res = decoder_cli("fetch", "haxby-sample", "--base-url", f"ria+file://{store}#{ds.id}",
                      "--to", str(to), "--subjects", "1")
    assert res.returncode == 0, res.stderr
    assert f"DataLad dataset {ds.id}, commit {commit[:8]}" in res.stdout
    bold = sorted(to.glob("sub-1/func/*_bold.nii.gz"))
    assert len(bold) == 12 and all(p.exists() for p in bold)  # content present
    assert git("status", "--porcelain", cwd=to) == ""

    pytest.importorskip("pipelines.category", reason="category pipeline not available yet")
    out = tmp_path / "out"
    res = decoder_cli("run", "configs/haxby.yaml", "--data", str(to), "--out", str(out),
                      "--set", "classes=face,house", "--set", "delay=5.0", "--set", "window=1")
    assert res.returncode == 0, res.stderr
    prov = json.loads((out / "metrics.json").read_text())["provenance"]["dataset"]
    assert prov["dataset_id"] == ds.id and prov["commit"] == commit
    key = Path(os.readlink(bold[0])).name
    assert prov["files"][bold[0].relative_to(to).as_posix()]["annex_key"] == key


@needs_shared
def test_fetch_openneuro_clone_pins_version_and_fails_offline_in_one_line(tmp_path):
    bundle = Path(SHARED) / "openneuro" / "ds000105.bundle"
    to = tmp_path / "ds000105"
    res = decoder_cli("fetch", "ds000105", "--base-url", str(bundle), "--to", str(to),
                      "--subjects", "1")
    assert res.returncode != 0
    assert "files to download (" in res.stdout and "MB)" in res.stdout  # size first
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1
    assert "cannot fetch sub-1/" in lines[0] and "s3.amazonaws.com/openneuro.org" in lines[0]
    assert git("rev-parse", "HEAD", cwd=to).strip() == \
        "b2677616e86113ec230e6189ad2341ffcc065c83"
    assert git("status", "--porcelain", cwd=to) == ""
    # a subject the dataset does not have: said before any download
    with pytest.raises(DataError, match=r"no file in .* matches 'sub-9/func/"):
        fetch("ds000105", subjects=["9"], to=to, base_url=str(bundle), echo=lambda m: None)


def test_a_failed_clone_gives_gits_reason_not_the_command_line():
    from decoder.data.fetch import _clone_reason
    msg = ("CommandError: 'git -c diff.ignoreSubmodules=none clone --progress "
           "https://github.com/OpenNeuroDatasets/ds000105.git /tmp/w/ds' failed with exitcode "
           "128 [err: 'Cloning into '/tmp/w/ds'... fatal: unable to access 'https://github.com/"
           "OpenNeuroDatasets/ds000105.git/': Could not resolve host: github.com']")
    assert _clone_reason(msg) == ("unable to access 'https://github.com/OpenNeuroDatasets/"
                                  "ds000105.git/': Could not resolve host: github.com")
    assert _clone_reason("no dataset created") == "no dataset created"


def test_subject_ids_that_swallow_the_dataset_name_or_are_missing_are_said(tmp_path):
    res = decoder_cli("fetch", "--subjects", "1", "2", "ds000105", "--to", str(tmp_path / "d"))
    assert res.returncode == 2 and len(res.stderr.strip().splitlines()) == 1
    assert ("'ds000105' after --subjects was read as a subject ID" in res.stderr
            and "decoder fetch ds000105 --subjects 1 2" in res.stderr)
    # "--subjects" with no ID is not "every subject"
    res = decoder_cli("fetch", "ds000105", "--subjects", "--to", str(tmp_path / "d"))
    assert res.returncode == 2 and "--subjects is given without any subject ID" in res.stderr
    assert not (tmp_path / "d").exists()


def test_embedded_sample_becomes_a_datalad_dataset_idempotently(tmp_path):
    to = tmp_path / "sample"
    first = fetch("haxby-sample", to=to, echo=lambda m: None)
    assert (to / ".datalad" / "config").is_file()
    assert len(first["files"]) == 27 and first["dataset_id"]
    assert not (to / "sub-1/func/sub-1_task-objectviewing_run-01_events.tsv").is_symlink()
    assert (to / "sub-1/func/sub-1_task-objectviewing_run-01_bold.nii.gz").is_symlink()
    second = fetch("haxby-sample", to=to, echo=lambda m: None)
    assert second["commit"] == first["commit"] and second["dataset_id"] == first["dataset_id"]


def test_hcp_without_aws_credentials_says_what_to_do(tmp_path, monkeypatch):
    monkeypatch.delenv("AWS_ACCESS_KEY_ID", raising=False)
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY", raising=False)
    res = decoder_cli("fetch", "hcp-openaccess", "--to", str(tmp_path / "hcp"),
                      "--subjects", "100206")
    assert res.returncode != 0
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1
    assert "needs AWS credentials" in lines[0] and "db.humanconnectome.org" in lines[0]
    assert "AWS_ACCESS_KEY_ID" in lines[0]
    assert not (tmp_path / "hcp").exists()


def _two_subject_bids_dataset(path: Path) -> None:
    """A DataLad BIDS dataset of two subjects with an fMRIPrep derivative; the images
    (binary) are annexed, the text files in git."""
    import datalad.api as dl
    dl.create(path=str(path), cfg_proc="text2git", result_renderer="disabled")
    (path / "participants.tsv").write_text("participant_id\tage\nsub-01\t30\nsub-02\t31\n")
    (path / "dataset_description.json").write_text('{"Name": "two", "BIDSVersion": "1.8.0"}')
    rng = np.random.default_rng(0)
    for sub in ("01", "02"):
        for rel in (f"sub-{sub}/func/sub-{sub}_task-rest_bold.nii.gz",
                    f"derivatives/fmriprep/sub-{sub}/func/sub-{sub}_task-rest_desc-"
                    "preproc_bold.nii.gz"):
            (path / rel).parent.mkdir(parents=True, exist_ok=True)
            (path / rel).write_bytes(rng.bytes(2048))
    (path / "derivatives/fmriprep/dataset_description.json").write_text('{"Name": "fmriprep"}')
    for sub in ("01", "02"):   # fMRIPrep's per-subject report, at the derivative's top
        (path / f"derivatives/fmriprep/sub-{sub}.html").write_bytes(rng.bytes(512))
    dl.save(dataset=str(path), message="two subjects", result_renderer="disabled")


def test_subjects_of_a_bids_dataset_given_by_path_get_only_their_folders(tmp_path):
    src = tmp_path / "src"
    _two_subject_bids_dataset(src)
    to = tmp_path / "fetched"
    res = decoder_cli("fetch", str(src), "--to", str(to), "--subjects", "01")
    assert res.returncode == 0, res.stderr
    for sub, got in (("01", True), ("02", False)):
        for rel in (f"sub-{sub}/func/sub-{sub}_task-rest_bold.nii.gz",
                    f"derivatives/fmriprep/sub-{sub}/func/sub-{sub}_task-rest_desc-"
                    "preproc_bold.nii.gz"):
            assert (to / rel).is_symlink()          # every file is in the clone ...
            assert (to / rel).exists() is got       # ... only sub-01's content was got
    assert (to / "participants.tsv").read_text().startswith("participant_id")
    assert (to / "derivatives/fmriprep/sub-01.html").exists()
    assert not (to / "derivatives/fmriprep/sub-02.html").exists()
    # what was got is data: the count leaves out git's and DataLad's own files
    assert "6 files (" in res.stdout   # 2 at the top, sub-01's image, 3 of the derivative
    # a label the dataset does not have is named with the ones it has, and gets nothing
    res = decoder_cli("fetch", str(src), "--to", str(tmp_path / "other"), "--subjects", "03")
    assert res.returncode != 0 and len(res.stderr.strip().splitlines()) == 1
    assert "no sub-03 folder in" in res.stderr and "sub-01, sub-02" in res.stderr
    assert not (tmp_path / "other" / "sub-01/func/sub-01_task-rest_bold.nii.gz").exists()


def test_existing_non_dataset_folder_is_not_overwritten(tmp_path):
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "keep.txt").write_text("mine")
    with pytest.raises(DataError, match="is not empty and is not a DataLad dataset"):
        fetch("haxby-sample", to=tmp_path / "x", echo=lambda m: None)
    assert (tmp_path / "x" / "keep.txt").read_text() == "mine"


# ---------------------------------------------------------------------------
# building blocks
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("pattern, path, hit", [
    ("sub-*/func/*_bold.nii.gz", "sub-1/func/sub-1_run-01_bold.nii.gz", True),
    ("sub-*/func/*_bold.nii.gz", "sub-1/anat/sub-1_bold.nii.gz", False),
    ("sub-*/func/*_bold.nii.gz", "sub-1/func/x/y_bold.nii.gz", False),  # * stays in a folder
    ("**/*.tsv", "a/b/c.tsv", True),
    ("**/*.tsv", "c.tsv", True),
    ("**", "anything/at/all", True),
    ("run-0[12]_bold.nii.gz", "run-02_bold.nii.gz", True),
    ("run-0[12]_bold.nii.gz", "run-03_bold.nii.gz", False),
    ("sub-1/x.json", "sub-10/x.json", False),
])
def test_glob_semantics(pattern, path, hit):
    assert bool(_glob_regex(pattern).match(path)) is hit


@needs_shared
def test_timeseries_check_accepts_the_real_file_and_rejects_damaged_copies(tmp_path):
    real = Path(SHARED) / "abide_pcp" / ROIS / "Pitt_0050003_rois_ho.1D"
    n_t, n_r = check_timeseries_1d(real)
    assert n_r == 111 and n_t > 50
    raw = real.read_bytes()
    cases = {
        "cut.1D": (raw[: len(raw) // 3], "truncated"),
        "cut_at_line.1D": (raw[: raw.index(b"\n", len(raw) // 3) + 1] + b"1\t2\n", "2 values"),
        "html.1D": (b"<html><body>Access denied</body></html>\n", "no '#' header"),
        "header_only.1D": (raw[: raw.index(b"\n") + 1], "no time points"),
    }
    for name, (data, message) in cases.items():
        (tmp_path / name).write_bytes(data)
        with pytest.raises(DataError, match=message):
            check_timeseries_1d(tmp_path / name)


def test_human_size():
    assert human_size(512) == "512 B"
    assert human_size(1_830_000_000) == "1.8 GB"
    assert human_size(None) == "unknown size"


@needs_shared
def test_biomarker_pipeline_gets_dropped_abide_files_and_records_the_dataset(bucket, tmp_path):
    """`decoder run configs/abide.yaml --data <DataLad clone>` needs no fetch step first."""
    import datalad.api as dl
    from pipelines import resolve_config
    from pipelines.biomarker import load_subjects
    to = tmp_path / "abide"
    fetch("abide-pcp", subjects=["50003", "50004", "50005"], to=to, base_url=bucket["url"],
          echo=lambda m: None)
    rel = f"{ROIS}/Pitt_0050004_rois_ho.1D"
    dl.drop(path=str(to / rel), dataset=str(to), result_renderer="disabled")
    assert not (to / rel).exists()
    subjects = load_subjects(resolve_config({"task": "biomarker"}), data=to)
    assert sorted(subjects.ids) == SUBJECTS
    assert (to / rel).exists()
    info = subjects.dataset_info
    dataset_id = git("config", "-f", ".datalad/config", "--get", "datalad.dataset.id", cwd=to)
    assert info["dataset_id"] == dataset_id.strip()
    assert info["commit"] == git("rev-parse", "HEAD", cwd=to).strip()
    assert git("status", "--porcelain", cwd=to) == ""


def test_fetch_finds_the_git_annex_of_its_environment_when_it_is_not_activated(tmp_path):
    import subprocess
    import sys
    env = {**os.environ, "PATH": "/usr/bin:/bin"}  # the environment's bin folder left out
    res = subprocess.run([sys.executable, "-m", "decoder.cli", "fetch", "haxby-sample",
                          "--to", str(tmp_path / "sample")], capture_output=True, text=True,
                         cwd=REPO, env=env, check=False)
    assert res.returncode == 0, res.stderr
    assert (tmp_path / "sample" / "sub-1").is_dir()


def test_without_git_annex_anywhere_nothing_is_created(tmp_path, monkeypatch):
    from decoder.data import datalad as dl
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    monkeypatch.setattr(dl.sys, "executable", str(tmp_path / "empty" / "python"))
    with pytest.raises(DataError, match="git-annex is not installed"):
        fetch("haxby-sample", to=tmp_path / "sample", echo=lambda m: None)
    assert not (tmp_path / "sample").exists()
