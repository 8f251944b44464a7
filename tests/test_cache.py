"""Content-hash feature cache: keys follow content and parameters, writes are atomic."""

from __future__ import annotations

import os
import shutil

import nibabel as nib
import numpy as np
import pytest

from decoder.features import _cache, _extract
from decoder.features._cache import FeatureCache
from decoder.features.extract import extract_labels, extract_subjects

SHAPE = (10, 9, 8)
AFFINE = np.diag([3.0, 3.0, 3.0, 1.0])


@pytest.fixture
def cache(tmp_path):
    return FeatureCache(tmp_path / "cache", namespace="test")


def test_key_follows_content_not_name_or_timestamp(tmp_path, cache):
    a = tmp_path / "a.bin"
    a.write_bytes(b"fmri" * 1000)
    key = cache.key([a], {"t_r": 2.0})
    copy = tmp_path / "renamed.bin"
    shutil.copy(a, copy)
    assert cache.key([copy], {"t_r": 2.0}) == key
    os.utime(a, (1, 1))
    assert cache.key([a], {"t_r": 2.0}) == key
    a.write_bytes(b"fmri" * 999 + b"fmrJ")
    assert cache.key([a], {"t_r": 2.0}) != key


def test_key_follows_parameters_and_namespace(tmp_path, cache):
    a = tmp_path / "a.bin"
    a.write_bytes(b"x")
    assert cache.key([a], {"t_r": 2.0}) != cache.key([a], {"t_r": 2.5})
    assert cache.key([a], {}) != FeatureCache(cache.root, namespace="other").key([a], {})
    arr = np.arange(6.0)
    assert cache.key([arr], {}) == cache.key([arr.copy()], {})
    assert cache.key([arr], {}) != cache.key([arr.astype(np.float32)], {})


def test_unchanged_files_are_not_hashed_again(tmp_path, cache, monkeypatch):
    a = tmp_path / "a.bin"
    a.write_bytes(b"abc")
    first = cache.file_digest(a)
    cache.save_digests()
    reopened = FeatureCache(cache.root, namespace="test")

    def _fail(path):
        raise AssertionError("file re-hashed although its stat did not change")

    monkeypatch.setattr(_cache, "sha256_file", _fail)
    assert reopened.file_digest(a) == first
    a.write_bytes(b"abcd")
    with pytest.raises(AssertionError, match="re-hashed"):
        reopened.file_digest(a)


def test_put_get_round_trip_is_atomic(cache):
    key = "ab" + "0" * 62
    assert cache.get(key) is None and key not in cache
    signals = np.random.default_rng(0).normal(size=(5, 3))
    path = cache.put(key, {"run_0": signals}, {"subject": "sub-01"})
    arrays, meta = cache.get(key)
    np.testing.assert_array_equal(arrays["run_0"], signals)
    assert meta == {"subject": "sub-01"} and key in cache
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temp file left


def test_damaged_entry_counts_as_missing(cache):
    key = "cd" + "1" * 62
    path = cache.put(key, {"x": np.ones(3)})
    path.write_bytes(path.read_bytes()[:40])
    assert cache.get(key) is None


def _write_subject(path, seed):
    rng = np.random.default_rng(seed)
    data = rng.normal(500, 20, size=SHAPE + (12,)).astype(np.float32)
    nib.save(nib.Nifti1Image(data, AFFINE), path)


@pytest.fixture
def study(tmp_path):
    atlas = np.zeros(SHAPE, np.int16)
    atlas[1:-1, 1:-1, 1:-1] = np.random.default_rng(1).integers(1, 5, size=(8, 7, 6))
    nib.save(nib.Nifti1Image(atlas, AFFINE), tmp_path / "atlas.nii.gz")
    subjects = {}
    for i in range(3):
        path = tmp_path / f"sub-{i}_bold.nii.gz"
        _write_subject(path, i)
        subjects[f"sub-{i}"] = path
    return tmp_path / "atlas.nii.gz", subjects


def _count_reductions(monkeypatch):
    calls = []
    original = _extract.reduce_file

    def counting(path, *args, **kwargs):
        calls.append(str(path))
        return original(path, *args, **kwargs)

    monkeypatch.setattr(_extract, "reduce_file", counting)
    return calls


def test_rerun_skips_finished_subjects_and_retries_failed_ones(tmp_path, study, monkeypatch):
    atlas, subjects = study
    subjects = dict(subjects, **{"sub-late": tmp_path / "sub-late_bold.nii.gz"})  # not there yet
    first = extract_subjects(subjects, atlas, cache_dir=tmp_path / "cache", detrend=True)
    assert list(first.failures) == ["sub-late"] and "not found" in first.failures["sub-late"]
    assert list(first.results) == ["sub-0", "sub-1", "sub-2"]
    assert "1 failed" in first.summary() and "sub-late" in first.summary()

    _write_subject(tmp_path / "sub-late_bold.nii.gz", 9)
    calls = _count_reductions(monkeypatch)
    second = extract_subjects(subjects, atlas, cache_dir=tmp_path / "cache", detrend=True)
    assert calls == [str(tmp_path / "sub-late_bold.nii.gz")]
    assert second.ok and second.n_cached == 3 and list(second.results) == list(subjects)
    for sub in first.results:
        np.testing.assert_array_equal(second.results[sub], first.results[sub])
    np.testing.assert_array_equal(second.results["sub-late"],
                                  extract_labels(subjects["sub-late"], atlas, detrend=True))


def test_changed_parameters_or_inputs_are_recomputed(tmp_path, study, monkeypatch):
    atlas, subjects = study
    extract_subjects(subjects, atlas, cache_dir=tmp_path / "cache")
    calls = _count_reductions(monkeypatch)
    extract_subjects(subjects, atlas, cache_dir=tmp_path / "cache", detrend=True)
    assert len(calls) == 3  # a new parameter: every subject again
    calls.clear()
    _write_subject(subjects["sub-1"], 42)
    result = extract_subjects(subjects, atlas, cache_dir=tmp_path / "cache", detrend=True)
    assert calls == [str(subjects["sub-1"])] and result.n_cached == 2
