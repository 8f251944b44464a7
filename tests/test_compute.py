"""Compute backends: local joblib by default, Dask distributed when a scheduler is set."""

from __future__ import annotations

import functools

import nibabel as nib
import numpy as np
import pytest

from decoder.compute import (COMPUTE_DEFAULTS, DaskBackend, LocalBackend, backend_from_config,
                             get_backend, map_subjects)
from decoder.errors import ConfigError, DataError
from decoder.features.extract import extract_subjects


def _square_or_fail(x):
    if x == 3:
        raise DataError(f"subject {x}: bold file is empty", "re-run preprocessing")
    if x == 5:
        raise ZeroDivisionError("division by zero\nwith a second line")
    return x * x


def _scaled(x, factor):
    return x * factor


def test_default_backend_is_local_joblib(monkeypatch):
    monkeypatch.delenv("DECODER_SCHEDULER", raising=False)
    backend = get_backend()
    assert isinstance(backend, LocalBackend) and backend.n_jobs == 1
    assert isinstance(backend_from_config({"compute": {"n_jobs": 2}}), LocalBackend)
    assert backend_from_config({}).n_jobs == COMPUTE_DEFAULTS["n_jobs"]


@pytest.mark.parametrize("n_jobs", [1, 2])
def test_failures_are_reported_per_item_and_the_rest_continue(n_jobs):
    result = map_subjects(_square_or_fail, range(7), keys=[f"s{i}" for i in range(7)],
                          n_jobs=n_jobs, progress=False)
    assert list(result.results) == ["s0", "s1", "s2", "s4", "s6"]  # input order
    assert result.results["s6"] == 36
    assert list(result.failures) == ["s3", "s5"] and not result.ok
    assert result.failures["s3"] == ("subject 3: bold file is empty — fix: re-run preprocessing")
    assert result.failures["s5"].startswith("ZeroDivisionError:")
    assert "\n" not in result.failures["s5"]
    assert "Traceback" in result.tracebacks["s5"]
    summary = result.summary()
    assert summary.startswith("5/7 subjects done") and "2 failed" in summary and "s3" in summary


def test_mapping_items_partial_functions_and_cached_values():
    seen = []
    result = map_subjects(functools.partial(_scaled, factor=10), {"a": 1, "b": 2, "c": 3},
                          cached={"b": -1}, on_result=lambda k, v: seen.append((k, v)),
                          progress=False)
    assert result.results == {"a": 10, "b": -1, "c": 30}
    assert result.n_cached == 1 and "(1 from cache)" in result.summary()
    assert sorted(seen) == [("a", 10), ("c", 30)]  # cached items are not rerun


def test_a_failing_result_callback_marks_the_item_failed():
    def store(key, value):
        if key == "b":
            raise OSError("disk full")

    result = map_subjects(functools.partial(_scaled, factor=1),
                          {"a": 1, "b": 2}, on_result=store, progress=False)
    assert list(result.results) == ["a"] and "disk full" in result.failures["b"]


def test_bad_settings_are_one_line_config_errors(monkeypatch):
    monkeypatch.delenv("DECODER_SCHEDULER", raising=False)
    with pytest.raises(ConfigError, match="tcp://"):
        get_backend("localhost:8786")
    with pytest.raises(ConfigError, match="n_jobs"):
        get_backend(n_jobs=0)
    with pytest.raises(ConfigError, match="not unique"):
        map_subjects(_scaled, [1, 2], keys=["x", "x"])
    with pytest.raises(ConfigError) as err:
        get_backend("tcp://127.0.0.1:9", timeout=1)  # nothing listens on the discard port
    assert "cannot reach the Dask scheduler at tcp://127.0.0.1:9" in str(err.value)
    assert "unset compute.scheduler" in str(err.value)
    assert "\n" not in str(err.value)


def test_a_scheduler_set_by_the_environment_is_named_as_such_in_the_fix(monkeypatch):
    monkeypatch.setenv("DECODER_SCHEDULER", "tcp://127.0.0.1:9")
    with pytest.raises(ConfigError, match=r"unset \$DECODER_SCHEDULER to run locally"):
        get_backend("tcp://127.0.0.1:9", timeout=1)


def test_environment_variable_selects_the_scheduler(monkeypatch):
    monkeypatch.setenv("DECODER_SCHEDULER", "not-an-address")
    with pytest.raises(ConfigError, match="not-an-address"):
        get_backend()


@pytest.fixture
def study(tmp_path):
    shape, affine = (10, 9, 8), np.diag([3.0, 3.0, 3.0, 1.0])
    rng = np.random.default_rng(3)
    atlas = np.zeros(shape, np.int16)
    atlas[1:-1, 1:-1, 1:-1] = rng.integers(1, 6, size=(8, 7, 6))
    nib.save(nib.Nifti1Image(atlas, affine), tmp_path / "atlas.nii.gz")
    subjects = {}
    for i in range(4):
        path = tmp_path / f"sub-{i}.nii.gz"
        nib.save(nib.Nifti1Image(rng.normal(100, 5, size=shape + (15,)).astype(np.float32),
                                 affine), path)
        subjects[f"sub-{i}"] = path
    subjects["sub-broken"] = tmp_path / "sub-broken.nii.gz"
    subjects["sub-broken"].write_bytes(b"\x1f\x8b not really gzip")
    return tmp_path / "atlas.nii.gz", subjects


def test_dask_local_cluster_gives_the_local_results(study):
    distributed = pytest.importorskip("distributed")
    atlas, subjects = study
    kw = dict(detrend=True, standardize="zscore_sample", progress=False)
    local = extract_subjects(subjects, atlas, **kw)
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  host="127.0.0.1", dashboard_address=None) as cluster:
        address = cluster.scheduler_address
        assert address.startswith("tcp://127.0.0.1:")
        with get_backend(address) as backend:
            assert isinstance(backend, DaskBackend) and "2 workers" in backend.name
            remote = extract_subjects(subjects, atlas, backend=backend, **kw)
        # the config route opens (and closes) its own client
        via_config = map_subjects(_square_or_fail, [1, 3],
                                  backend=None, scheduler=address, progress=False)
    assert list(remote.results) == list(local.results) == ["sub-0", "sub-1", "sub-2", "sub-3"]
    for sub in local.results:
        np.testing.assert_array_equal(remote.results[sub], local.results[sub])
    assert remote.failures == local.failures and "sub-broken" in remote.failures
    assert remote.backend.startswith("dask (tcp://127.0.0.1")
    assert via_config.results == {"1": 1} and "bold file is empty" in via_config.failures["3"]


def test_no_more_processes_than_cores_or_tasks_are_started(monkeypatch, caplog):
    import os
    import joblib
    from decoder.compute import local_workers
    monkeypatch.setattr(os, "cpu_count", lambda: 4)
    assert local_workers(1) == 1 and local_workers(3) == 3
    assert local_workers(-1) == 4 and local_workers(-2) == 3 and local_workers(-9) == 1
    assert local_workers(3, n_tasks=2) == 2
    with caplog.at_level("WARNING"):
        assert local_workers(100_000) == 4  # '-J 100000' on a 4-core machine
    assert "more than the 4 cores" in caplog.text
    # the backend and the biomarker folds pass the capped number to joblib
    seen = []
    real = joblib.Parallel

    class Recording(real):
        def __init__(self, n_jobs=None, **kw):
            seen.append(n_jobs)
            super().__init__(n_jobs=n_jobs, **kw)

    monkeypatch.setattr(joblib, "Parallel", Recording)
    list(LocalBackend(1000).run(abs, [("a", -1), ("b", -2)]))
    from pipelines.biomarker import _map_folds
    assert _map_folds({"compute": {"n_jobs": 1000}}, abs, [(-1,), (-2,), (-3,)]) == [1, 2, 3]
    assert seen and all(n <= 4 for n in seen) and seen[-1] == 3
