"""Fast labels extraction gives NiftiLabelsMasker's results, file formats included."""

from __future__ import annotations

import gzip
import warnings
import zlib

import nibabel as nib
import numpy as np
import pytest
from nilearn.maskers import NiftiLabelsMasker
from sklearn.base import clone

from decoder.errors import DataError, DecoderError
from decoder.features import _extract
from decoder.features.extract import LabelsExtractor, extract_labels

SHAPE = (13, 11, 9)
N_VOL = 24
AFFINE = np.array([[-3.0, 0, 0, 18], [0, 3.0, 0, -15], [0, 0, 3.0, -12], [0, 0, 0, 1]])
RTOL = 1e-5


def _atlas(rng):
    """Blocky atlas with non-consecutive ids and a background margin."""
    lab = np.zeros(SHAPE, dtype=np.int16)
    ids = [3, 7, 8, 42, 100, 255]
    core = rng.choice(ids, size=(SHAPE[0] - 2, SHAPE[1] - 2, SHAPE[2] - 2))
    lab[1:-1, 1:-1, 1:-1] = core
    return lab


def _bold(rng, dtype=np.int16, n_vol=N_VOL):
    base = rng.normal(900, 150, size=SHAPE + (1,))
    data = base + rng.normal(0, 25, size=SHAPE + (n_vol,))
    return data.astype(dtype)


def _masker(atlas, img, confounds=None, sample_mask=None, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return NiftiLabelsMasker(atlas, **kw).fit_transform(img, confounds=confounds,
                                                            sample_mask=sample_mask)


@pytest.fixture
def rng():
    return np.random.default_rng(7)


@pytest.fixture
def atlas_file(tmp_path, rng):
    path = tmp_path / "atlas.nii.gz"
    nib.save(nib.Nifti1Image(_atlas(rng), AFFINE), path)
    return path


@pytest.fixture
def bold_file(tmp_path, rng):
    path = tmp_path / "bold.nii.gz"
    nib.save(nib.Nifti1Image(_bold(rng), AFFINE), path)
    return path


def _assert_close(ours, ref):
    assert ours.shape == ref.shape
    np.testing.assert_allclose(ours, ref, rtol=RTOL, atol=RTOL * np.abs(ref).max())


@pytest.mark.parametrize("dtype", [np.int16, np.uint8, np.float32, np.float64, ">f4", ">i2"])
@pytest.mark.parametrize("suffix", [".nii.gz", ".nii"])
def test_matches_nilearn_masker_for_every_storage_type(tmp_path, rng, atlas_file, dtype, suffix):
    data = _bold(rng, np.float64)
    if np.dtype(dtype).kind in "iu":
        data = np.clip(data / (8 if np.dtype(dtype).itemsize == 1 else 1), 0, 250 if np.dtype(
            dtype).itemsize == 1 else 30000)
    img = nib.Nifti1Image(data.astype(dtype), AFFINE)
    img.header.set_data_dtype(dtype)
    path = tmp_path / f"bold{suffix}"
    nib.save(img, path)
    ours = extract_labels(path, atlas_file)
    _assert_close(ours, _masker(atlas_file, path))
    assert ours.shape == (N_VOL, 6)


def test_columns_are_region_ids_in_increasing_order(atlas_file, bold_file):
    signals, labels = extract_labels(bold_file, atlas_file, return_labels=True)
    assert labels.tolist() == [3, 7, 8, 42, 100, 255]
    data = nib.load(bold_file).get_fdata()
    atlas = nib.load(atlas_file).get_fdata()
    np.testing.assert_allclose(signals[:, 3], data[atlas == 42].mean(axis=0), rtol=1e-7)


def test_scaled_int16_applies_slope_and_intercept(tmp_path, rng, atlas_file):
    # float data stored as int16: nibabel picks scl_slope/scl_inter to fit the range
    img = nib.Nifti1Image(_bold(rng, np.float64) / 1000.0 + 3.0, AFFINE)
    img.set_data_dtype(np.int16)
    path = tmp_path / "scaled.nii.gz"
    nib.save(img, path)
    proxy = nib.load(path).dataobj
    assert proxy.slope != 1.0 and proxy.inter != 0.0
    _assert_close(extract_labels(path, atlas_file), _masker(atlas_file, path))


def test_non_finite_voxels_count_as_zero_like_nilearn(tmp_path, rng, atlas_file):
    data = _bold(rng, np.float32)
    data[4, 5, 3, 2] = np.nan
    data[6, 5, 4, :] = np.inf
    path = tmp_path / "nan.nii.gz"
    nib.save(nib.Nifti1Image(data, AFFINE), path)
    ours = extract_labels(path, atlas_file)
    assert np.isfinite(ours).all()
    _assert_close(ours, _masker(atlas_file, path))


def test_confounds_detrend_filter_and_standardize_match(atlas_file, bold_file, rng):
    confounds = rng.normal(size=(N_VOL, 4))
    kw = dict(detrend=True, standardize="zscore_sample", high_pass=0.02, t_r=2.0)
    ours = extract_labels(bold_file, atlas_file, confounds, **kw)
    ref = _masker(atlas_file, bold_file, confounds=confounds, **kw)
    _assert_close(ours, ref)
    assert np.allclose(ours.std(axis=0, ddof=1), 1.0)


def test_sample_mask_drops_volumes_like_nilearn(atlas_file, bold_file):
    keep = np.array([i for i in range(N_VOL) if i % 5])
    ours = extract_labels(bold_file, atlas_file, sample_mask=keep)
    assert ours.shape[0] == len(keep)
    _assert_close(ours, _masker(atlas_file, bold_file, sample_mask=keep))


def test_confounds_with_wrong_length_raise_one_line_error(atlas_file, bold_file):
    with pytest.raises(DataError) as err:
        extract_labels(bold_file, atlas_file, np.zeros((N_VOL - 3, 2)))
    assert str(bold_file) in str(err.value) and "\n" not in str(err.value)


def test_three_d_image_gives_one_row(tmp_path, rng, atlas_file):
    path = tmp_path / "vol.nii.gz"
    nib.save(nib.Nifti1Image(_bold(rng, np.float32)[..., 0], AFFINE), path)
    ours = extract_labels(path, atlas_file)
    assert ours.shape == (1, 6)
    _assert_close(ours, np.atleast_2d(_masker(atlas_file, path)))


def test_atlas_on_another_grid_is_resampled_like_the_masker(tmp_path, rng, bold_file):
    fine = np.repeat(np.repeat(np.repeat(_atlas(rng), 2, 0), 2, 1), 2, 2)
    fine_affine = AFFINE.copy()
    fine_affine[:3, :3] /= 2
    atlas = tmp_path / "fine_atlas.nii.gz"
    nib.save(nib.Nifti1Image(fine, fine_affine), atlas)
    _assert_close(extract_labels(bold_file, atlas), _masker(atlas, bold_file))


def test_grid_mismatch_without_resampling_names_both_files(tmp_path, rng, bold_file):
    shifted = AFFINE.copy()
    shifted[:3, 3] += 3
    atlas = tmp_path / "shifted_atlas.nii.gz"
    nib.save(nib.Nifti1Image(_atlas(rng), shifted), atlas)
    with pytest.raises(DataError) as err:
        extract_labels(bold_file, atlas, resample_atlas=False)
    msg = str(err.value)
    assert str(bold_file) in msg and str(atlas) in msg and "\n" not in msg
    assert "resample_atlas" in msg


def test_missing_truncated_and_corrupt_files_raise_data_errors(tmp_path, atlas_file, bold_file):
    with pytest.raises(DataError, match="not found"):
        extract_labels(tmp_path / "absent.nii.gz", atlas_file)
    raw = gzip.decompress(bold_file.read_bytes())
    truncated = tmp_path / "truncated.nii.gz"
    truncated.write_bytes(gzip.compress(raw[: len(raw) - 3000], 1))
    with pytest.raises(DataError, match="truncated"):
        extract_labels(truncated, atlas_file)
    blob = bytearray(bold_file.read_bytes())
    blob[len(blob) // 2: len(blob) // 2 + 64] = bytes(64)
    corrupt = tmp_path / "corrupt.nii.gz"
    corrupt.write_bytes(bytes(blob))
    with pytest.raises(DecoderError) as err:
        extract_labels(corrupt, atlas_file)
    assert str(corrupt) in str(err.value)


def test_multi_member_gzip_and_header_extensions(tmp_path, rng, atlas_file):
    img = nib.Nifti1Image(_bold(rng), AFFINE)
    img.header.extensions.append(nib.nifti1.Nifti1Extension("comment", b"x" * 300))
    plain = tmp_path / "ext.nii"
    nib.save(img, plain)
    assert nib.load(plain).dataobj.offset > 352
    raw = plain.read_bytes()
    cut = len(raw) // 3
    members = tmp_path / "members.nii.gz"
    members.write_bytes(gzip.compress(raw[:cut], 1) + gzip.compress(raw[cut:], 6))
    _assert_close(extract_labels(members, atlas_file), _masker(atlas_file, plain))


def test_block_size_and_codec_do_not_change_results(monkeypatch, atlas_file, bold_file):
    default = extract_labels(bold_file, atlas_file)
    one_volume_blocks = extract_labels(bold_file, atlas_file, block_mb=1e-6)
    np.testing.assert_array_equal(default, one_volume_blocks)
    monkeypatch.setattr(_extract, "_ZMOD", zlib)  # the stdlib fallback
    np.testing.assert_array_equal(default, extract_labels(bold_file, atlas_file))


def test_in_memory_and_file_backed_images_agree(atlas_file, bold_file):
    on_disk = extract_labels(bold_file, atlas_file)
    loaded = nib.load(bold_file)
    np.testing.assert_array_equal(extract_labels(loaded, atlas_file), on_disk)
    in_memory = nib.Nifti1Image(loaded.get_fdata(), loaded.affine)
    _assert_close(extract_labels(in_memory, nib.load(atlas_file)), on_disk)


def test_atlas_without_regions_is_rejected(tmp_path, bold_file):
    empty = tmp_path / "empty_atlas.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros(SHAPE, np.int16), AFFINE), empty)
    with pytest.raises(DataError, match="no region"):
        extract_labels(bold_file, empty)


class TestLabelsExtractor:
    def test_follows_the_scikit_learn_contract(self, atlas_file):
        est = LabelsExtractor(atlas=atlas_file, detrend=True, t_r=2.0)
        params = est.get_params()
        assert params["atlas"] == atlas_file and params["detrend"] is True
        twin = clone(est)
        assert twin.get_params() == params and not hasattr(twin, "region_ids_")

    def test_transform_before_fit_fails(self, atlas_file, bold_file):
        from sklearn.exceptions import NotFittedError
        with pytest.raises(NotFittedError):
            LabelsExtractor(atlas=atlas_file).transform(bold_file)

    def test_lists_of_runs_with_confounds(self, atlas_file, bold_file, rng):
        confounds = [rng.normal(size=(N_VOL, 2)), None]
        est = LabelsExtractor(atlas=atlas_file, standardize="zscore_sample").fit()
        out = est.transform([bold_file, bold_file], confounds=confounds)
        assert isinstance(out, list) and len(out) == 2
        _assert_close(out[0], _masker(atlas_file, bold_file, confounds=confounds[0],
                                      standardize="zscore_sample"))
        _assert_close(out[1], _masker(atlas_file, bold_file, standardize="zscore_sample"))
        assert est.n_regions_ == out[0].shape[1] == 6
        assert est.get_feature_names_out().tolist()[:2] == ["region_3", "region_7"]

    def test_without_atlas_is_a_config_error(self):
        with pytest.raises(DecoderError, match="atlas"):
            LabelsExtractor().fit()
