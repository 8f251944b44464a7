"""Category decoding refuses task inputs that would silently give a wrong result."""

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from decoder.errors import ConfigError, DataError
from decoder.features.task import check_finite_in_mask
from pipelines import check_config, run_config

from test_bad_inputs import _assert_one_line_error, _run
from test_category_pipeline import FAST

RUN3 = "sub-1/func/sub-1_task-objectviewing_run-03_bold.nii.gz"


def _category(tmp_path, data=None, **overrides):
    return run_config({"task": "category", **FAST, "classes": ["face", "house"], **overrides},
                      data=data, out=tmp_path / "out")


# ------------------------------------------------------------------ NaN in bold runs
def test_a_bold_run_of_nan_is_a_one_line_error_naming_the_file(cli, sample_copy, tmp_path):
    # the masker would turn the NaN into zeros and the run would be decoded as flat
    img = nib.load(sample_copy / RUN3)
    nan = np.full(img.shape, np.nan, dtype=np.float32)
    nib.save(nib.Nifti1Image(nan, img.affine), sample_copy / RUN3)
    _assert_one_line_error(_run(cli, sample_copy, tmp_path, "--set", "classes=face,house"),
                           "run-03_bold.nii.gz contains NaN (or inf) values inside the mask",
                           "fix:")


def test_a_single_non_finite_value_inside_the_mask_is_reported_with_its_extent():
    data = np.zeros((4, 3, 2, 10), dtype=np.float32)
    data[1, 1, 0, 7] = np.inf
    mask = nib.Nifti1Image(np.ones((4, 3, 2), dtype=np.uint8), np.eye(4))
    with pytest.raises(DataError, match=r"run\.nii\.gz .*\(1 of 24 voxels, 1 of 10 volumes\)"):
        check_finite_in_mask(data, mask, "run.nii.gz")


def test_nan_outside_the_mask_is_accepted():
    data = np.zeros((4, 3, 2, 10), dtype=np.float32)
    data[0] = np.nan
    inside = np.ones((4, 3, 2), dtype=np.uint8)
    inside[0] = 0
    check_finite_in_mask(data, nib.Nifti1Image(inside, np.eye(4)), "run.nii.gz")


# ------------------------------------------------------------- classes across runs
def test_a_class_present_in_only_one_run_is_an_error_naming_the_run(sample_copy, tmp_path):
    events = sorted((sample_copy / "sub-1" / "func").glob("*_events.tsv"))
    for path in events[1:]:
        ev = pd.read_csv(path, sep="\t")
        ev[ev.trial_type != "face"].to_csv(path, sep="\t", index=False)
    with pytest.raises(DataError) as err:
        _category(tmp_path, data=sample_copy, classes=["face", "house", "cat"])
    msg = str(err.value)
    assert "'face' only in" in msg and msg.count("_events.tsv") == 1
    assert "run-01_events.tsv" in msg
    assert "--set classes=house,cat" in msg


# ------------------------------------------------------------------- config values
@pytest.mark.parametrize("window", [0, 2.5, -3, True, "three"])
def test_window_must_be_a_whole_number_of_volumes(window):
    with pytest.raises(ConfigError, match="window must be 'auto' or a whole number"):
        check_config({"task": "category", "window": window})


def test_window_candidates_must_be_whole_numbers_of_volumes():
    with pytest.raises(ConfigError, match="window_candidates must be whole numbers"):
        check_config({"task": "category", "window": "auto", "window_candidates": [1, 2.5]})


def test_a_whole_window_written_as_a_float_is_accepted():
    check_config({"task": "category", "window": 3.0})


def test_a_window_longer_than_the_shortest_run_is_an_error(tmp_path):
    with pytest.raises(DataError, match=r"window 500 is longer than the shortest run "
                                        r"\(121 volumes: .*_bold\.nii\.gz\)"):
        _category(tmp_path, window=500)


@pytest.mark.parametrize("tr", [-2, 0, "fast"])
def test_the_tr_override_must_be_positive(tr):
    with pytest.raises(ConfigError, match="dataset.tr must be a positive number of seconds"):
        check_config({"task": "category", "dataset": {"tr": tr}})


def test_a_negative_tr_is_reported_as_such_not_as_an_events_problem(cli, tmp_path):
    proc = cli("run", "configs/haxby.yaml", "--out", tmp_path / "o", "--set", "dataset.tr=-2")
    _assert_one_line_error(proc, "dataset.tr must be a positive number")
    assert "events" not in proc.stderr


@pytest.mark.parametrize("pct", [200, 0, -5])
def test_screening_percentile_must_be_a_percentage(pct):
    with pytest.raises(ConfigError, match="screening_percentile must be a percentage"):
        check_config({"task": "category", "screening_percentile": pct})


@pytest.mark.parametrize("pct", [None, 20, 100])
def test_valid_screening_percentiles_are_accepted(pct):
    check_config({"task": "category", "screening_percentile": pct})


# ------------------------------------------------------------------------ subjects
@pytest.mark.parametrize("subjects", [[99], [1, 99]])
def test_an_unknown_subject_is_named_with_the_subjects_present(tmp_path, subjects):
    # [1, 99] used to decode subject 1 alone without a word about 99
    with pytest.raises(DataError, match=r"subject\(s\) 99 not in the dataset .* "
                                        r"\(subjects present: 1\)"):
        _category(tmp_path, dataset={"subjects": subjects})


# ------------------------------------------------------------------ values that would mislead
@pytest.mark.parametrize("overrides, named", [
    ({"random_state": -1}, "random_state must be a whole number from 0 to 4294967295"),
    ({"random_state": 2 ** 32}, "random_state must be a whole number"),
    ({"n_permutations": 10 ** 12}, "n_permutations must be a whole number from 0 to 100,000"),
    ({"blocks": {"max_gap": -1}}, "blocks.max_gap must be a number of seconds"),
    ({"blocks": {"max_gap": float("nan")}}, "blocks.max_gap must be a number of seconds"),
    ({"cleaning": {"high_pass": -1}}, "cleaning.high_pass must be a frequency in Hz above 0"),
    ({"delay_candidates": []}, "delay_candidates must be seconds (0 or more), at least one"),
    ({"betas": {"unit": "foo"}}, "betas.unit must be block or trial, got 'foo'"),
    ({"betas": {"method": "lsx"}}, "betas.method must be lsa or lss, got 'lsx'"),
    ({"betas": {"hrf_model": "foo"}}, "betas.hrf_model 'foo' is not a nilearn HRF model"),
])
def test_values_that_would_fail_later_or_mislead_are_refused_first(overrides, named):
    with pytest.raises(ConfigError, match=named.replace("(", r"\(").replace(")", r"\)")):
        check_config({"task": "category", **overrides})


def test_a_biomarker_seed_is_checked_the_same_way():
    with pytest.raises(ConfigError, match="random_state must be a whole number"):
        check_config({"task": "biomarker", "random_state": -3})


def test_a_high_pass_above_the_nyquist_frequency_is_named(sample_copy, tmp_path):
    with pytest.raises(DataError, match=r"cleaning.high_pass 1e\+09 Hz is not below the Nyquist "
                                        r"frequency of the data \(0.2 Hz at TR 2.5 s\)"):
        _category(tmp_path, data=sample_copy, cleaning={"high_pass": 1e9})


@pytest.mark.parametrize("damage, named", [
    ("header only", "run-04_events.tsv: no events (only a header, or no trial_type)"),
    ("negative duration", "run-04_events.tsv: negative duration on line 2"),
])
def test_events_that_would_silently_change_the_samples_are_refused(sample_copy, tmp_path,
                                                                   damage, named):
    events = next(sample_copy.rglob("*run-04_events.tsv"))
    lines = events.read_text().splitlines()
    if damage == "header only":
        events.write_text(lines[0] + "\n")
    else:
        cols = lines[0].split("\t")
        row = lines[1].split("\t")
        row[cols.index("duration")] = "-0.5"
        events.write_text("\n".join([lines[0], "\t".join(row), *lines[2:]]) + "\n")
    with pytest.raises(DataError, match=named.replace("(", r"\(").replace(")", r"\)")):
        _category(tmp_path, data=sample_copy)


def test_a_run_constant_over_time_is_refused_like_a_run_of_nan(sample_copy, tmp_path):
    img = nib.load(sample_copy / RUN3)
    nib.save(nib.Nifti1Image(np.ones(img.shape, dtype=np.float32), img.affine),
             sample_copy / RUN3)
    with pytest.raises(DataError, match="run-03_bold.nii.gz: every voxel in the mask is "
                                        "constant over time"):
        _category(tmp_path, data=sample_copy)


def test_a_class_listed_twice_is_named():
    from decoder.features.task import select_classes
    blocks = pd.DataFrame({"trial_type": ["face", "house"]})
    with pytest.raises(DataError, match="class 'face' is listed twice in classes"):
        select_classes(blocks, ["face", "face"])
