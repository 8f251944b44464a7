"""data_manifest.yaml: the declared datasets, and a clear error for a broken manifest."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from decoder.data.manifest import (file_patterns, load_checksums, load_manifest,
                                   validate_manifest)
from decoder.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]
MANIFEST = REPO / "data_manifest.yaml"
SHARED = os.environ.get("DECODER_SHARED_DATA")


def entry(**over):
    base = {"title": "t", "kind": "datalad", "source": "https://example.org/ds.git",
            "version": "1.0.0", "license": "CC0-1.0", "citation": "c", "size": "1 MB",
            "files": {"category": ["sub-{subject}/func/*_bold.nii.gz"]}}
    base.update(over)
    return base


def test_manifest_declares_every_dataset_with_source_version_licence_citation_size():
    datasets = load_manifest(MANIFEST)
    for name in ("ds000105", "ds000228", "ds000030", "abide-pcp", "hcp-openaccess",
                 "haxby-sample"):
        assert name in datasets
        e = datasets[name]
        for key in ("source", "version", "license", "citation", "size", "files"):
            assert e[key], f"{name}: {key} empty"
    assert datasets["ds000105"]["source"] == "https://github.com/OpenNeuroDatasets/ds000105.git"
    assert datasets["ds000105"]["commit"] == "b2677616e86113ec230e6189ad2341ffcc065c83"
    assert datasets["hcp-openaccess"]["requires"] == ["aws-credentials"]
    assert datasets["abide-pcp"]["kind"] == "addurls"
    sample = datasets["haxby-sample"]
    assert "CC-BY-SA-3.0" in sample["license"] and "CC0" in sample["license"]
    assert "Science 293:2425" in sample["citation"]


def test_sample_entry_points_at_the_embedded_files():
    from decoder.data.manifest import embedded_path
    sample = load_manifest(MANIFEST)["haxby-sample"]
    root = embedded_path(sample)
    for pat in file_patterns(sample, subjects=["1"]):
        assert list(root.glob(pat)), f"{pat} matches nothing in {root}"


def test_file_patterns_expand_subjects_and_keep_shared_files_once():
    ds = load_manifest(MANIFEST)["ds000105"]
    pats = file_patterns(ds, ["category"], ["1", "sub-2"])
    assert pats.count("task-objectviewing_bold.json") == 1
    assert "sub-1/func/sub-1_task-objectviewing_run-*_bold.nii.gz" in pats
    assert "sub-2/func/sub-2_task-objectviewing_run-*_events.tsv" in pats
    assert not any("anat" in p for p in pats)
    assert "sub-*/anat/sub-*_T1w.nii.gz" in file_patterns(ds)  # all subjects, all pipelines
    with pytest.raises(ConfigError, match="no files for pipeline 'biomarker'"):
        file_patterns(ds, ["biomarker"])


def test_abide_checksum_list_covers_the_quality_checked_subjects():
    sums = load_checksums(load_manifest(MANIFEST)["abide-pcp"])
    rois = [p for p in sums if p.endswith("_rois_ho.1D")]
    assert len(rois) == 871
    assert "Phenotypic_V1_0b_preprocessed1.csv" in sums
    assert all(p.startswith("Outputs/cpac/filt_noglobal/rois_ho/") for p in rois)


@pytest.mark.skipif(not SHARED, reason="DECODER_SHARED_DATA is not set (real data absent)")
def test_abide_checksums_match_the_real_files():
    from decoder._utils import sha256_file
    sums = load_checksums(load_manifest(MANIFEST)["abide-pcp"])
    root = Path(SHARED) / "abide_pcp"
    for rel in ["Phenotypic_V1_0b_preprocessed1.csv",
                "Outputs/cpac/filt_noglobal/rois_ho/Pitt_0050003_rois_ho.1D"]:
        size, digest = sums[rel]
        assert (root / rel).stat().st_size == size
        assert sha256_file(root / rel) == digest


@pytest.mark.parametrize("mutate, message", [
    (lambda d: d["datasets"]["x"].pop("license"), "dataset 'x': missing key 'license'"),
    (lambda d: d["datasets"]["x"].update(kind="ftp"), "kind 'ftp' is not one of"),
    (lambda d: d["datasets"]["x"].update(licence="CC0"), "unknown key 'licence'"),
    (lambda d: d["datasets"]["x"].update(files={"category": []}), "files.category must be"),
    (lambda d: d["datasets"]["x"].update(files={"c": ["/abs/*.nii"]}), "relative to the"),
    (lambda d: d["datasets"]["x"].update(files={"c": ["sub-{sub}/x"]}), "placeholder"),
    (lambda d: d["datasets"]["x"].update(commit="v1"), "is not a git commit id"),
    (lambda d: d["datasets"]["x"].update(requires=["vpn"]), "unknown requirement 'vpn'"),
    (lambda d: d["datasets"]["x"].update(kind="addurls"), "missing key 'table'"),
    (lambda d: d.update(datasets={}), "'datasets' must be a non-empty mapping"),
])
def test_broken_manifest_is_rejected_naming_entry_and_key(mutate, message):
    data = {"manifest_version": 1, "datasets": {"x": entry()}}
    mutate(data)
    with pytest.raises(ConfigError) as info:
        validate_manifest(data, "m.yaml")
    assert message in str(info.value)
    assert str(info.value).startswith("m.yaml")


def test_suggests_the_closest_key_for_a_typo():
    data = {"datasets": {"x": {**entry(), "citaton": "c"}}}
    with pytest.raises(ConfigError, match="did you mean 'citation'"):
        validate_manifest(data)


def test_cli_reports_a_broken_manifest_in_one_line(tmp_path):
    bad = tmp_path / "manifest.yaml"
    data = {"datasets": {"x": entry()}}
    del data["datasets"]["x"]["size"]
    bad.write_text(yaml.safe_dump(data))
    res = subprocess.run([sys.executable, "-m", "decoder.cli", "fetch", "x", "--manifest",
                          str(bad), "--to", str(tmp_path / "x")],
                         capture_output=True, text=True, cwd=tmp_path)
    assert res.returncode != 0
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1
    assert "dataset 'x': missing key 'size'" in lines[0]
    assert not (tmp_path / "x").exists()


def test_invalid_yaml_names_the_line(tmp_path):
    bad = tmp_path / "manifest.yaml"
    bad.write_text("datasets:\n  x: [unclosed\n")
    with pytest.raises(ConfigError, match=r"not valid YAML \(line"):
        load_manifest(bad)


def test_unknown_dataset_name_suggests_the_closest():
    from decoder.data.manifest import get_entry
    with pytest.raises(ConfigError, match="did you mean 'ds000105'"):
        get_entry("ds00105", MANIFEST)


def test_fetch_list_names_every_dataset_with_its_licence_and_citation(capsys):
    from decoder.cli import main
    assert main(["fetch", "--list"]) == 0
    said = capsys.readouterr().out
    declared = load_manifest(MANIFEST)
    for name, e in declared.items():
        assert f"{name}  " in said
        assert " ".join(str(e["license"]).split()) in said
        assert " ".join(str(e["citation"]).split())[:60] in said
    assert main(["fetch"]) == 2  # neither a name nor --list
    assert "decoder fetch --list" in capsys.readouterr().err
