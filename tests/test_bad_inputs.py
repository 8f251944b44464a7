"""Bad inputs: one line on stderr naming the problem and the fix, non-zero exit."""

import gzip
import json

import nibabel as nib
import numpy as np

BOLD = "sub-1/func/sub-1_task-objectviewing_run-01_bold.nii.gz"
EVENTS = "sub-1/func/sub-1_task-objectviewing_run-01_events.tsv"
MASK = "derivatives/masks/sub-1/sub-1_desc-slice_mask.nii.gz"


def _assert_one_line_error(proc, *fragments):
    assert proc.returncode != 0
    err = proc.stderr.strip()
    assert "Traceback" not in proc.stderr
    assert len(err.splitlines()) == 1, err
    assert err.startswith("decoder: error:")
    for f in fragments:
        assert f in err, (f, err)


def _run(cli, data, tmp_path, *extra):
    return cli("run", "configs/haxby.yaml", "--data", data, "--out", tmp_path / "out", *extra)


def test_truncated_nifti(cli, sample_copy, tmp_path):
    p = sample_copy / BOLD
    p.write_bytes(p.read_bytes()[: p.stat().st_size // 2])
    _assert_one_line_error(_run(cli, sample_copy, tmp_path), "run-01_bold.nii.gz",
                           "corrupt or truncated", "fix:")


def test_corrupt_nifti(cli, sample_copy, tmp_path):
    (sample_copy / BOLD).write_bytes(gzip.compress(b"this is not a nifti file" * 10))
    _assert_one_line_error(_run(cli, sample_copy, tmp_path), "run-01_bold.nii.gz", "fix:")


def test_3d_image_where_4d_is_needed(cli, sample_copy, tmp_path):
    img = nib.load(sample_copy / BOLD)
    nib.save(nib.Nifti1Image(np.asarray(img.dataobj)[..., 0], img.affine), sample_copy / BOLD)
    _assert_one_line_error(_run(cli, sample_copy, tmp_path), "3D", "4D")


def test_mask_and_bold_affine_mismatch(cli, sample_copy, tmp_path):
    m = nib.load(sample_copy / MASK)
    aff = m.affine.copy()
    aff[0, 3] += 7.0
    nib.save(nib.Nifti1Image(np.asarray(m.dataobj), aff), sample_copy / MASK)
    _assert_one_line_error(_run(cli, sample_copy, tmp_path), "same grid", "resample")


def test_events_beyond_the_end_of_the_run(cli, sample_copy, tmp_path):
    with open(sample_copy / EVENTS, "a") as fh:
        fh.write("900.0\t0.5\tface\n")
    _assert_one_line_error(_run(cli, sample_copy, tmp_path), "run-01_events.tsv",
                           "beyond the end of the run")


def test_missing_events_column(cli, sample_copy, tmp_path):
    (sample_copy / EVENTS).write_text("onset\tduration\n1\t2\n")
    _assert_one_line_error(_run(cli, sample_copy, tmp_path), "trial_type")


def test_unknown_class_name(cli, tmp_path):
    proc = cli("run", "configs/haxby.yaml", "--out", tmp_path / "o", "--set", "classes=face,hose")
    _assert_one_line_error(proc, "'hose'", "house")


def test_one_class_only(cli, tmp_path):
    proc = cli("run", "configs/haxby.yaml", "--out", tmp_path / "o", "--set", "classes=face")
    _assert_one_line_error(proc, "at least two classes")


def test_config_typo(cli, tmp_path):
    cfg = tmp_path / "bad.yaml"
    cfg.write_text("task: category\nn_permutation: 10\n")
    proc = cli("run", cfg, "--out", tmp_path / "o")
    _assert_one_line_error(proc, "n_permutation", "did you mean 'n_permutations'")


def test_set_typo(cli, tmp_path):
    proc = cli("run", "configs/haxby.yaml", "--out", tmp_path / "o", "--set", "sampels=blocks")
    _assert_one_line_error(proc, "sampels", "samples")


def test_bad_value(cli, tmp_path):
    proc = cli("run", "configs/haxby.yaml", "--out", tmp_path / "o", "--set", "samples=frames")
    _assert_one_line_error(proc, "samples must be volumes, blocks or betas")


def test_missing_data_folder(cli, tmp_path):
    _assert_one_line_error(_run(cli, tmp_path / "nowhere", tmp_path), "nowhere")


def test_debug_shows_the_traceback(cli, tmp_path):
    proc = cli("run", "configs/haxby.yaml", "--debug", "--out", tmp_path / "o",
               "--set", "classes=face,hose")
    assert proc.returncode != 0 and "Traceback" in proc.stderr


def test_a_failed_run_keeps_the_earlier_result(cli, sample_copy, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "metrics.json").write_text(json.dumps({"accuracy": 0.9}))
    p = sample_copy / BOLD
    p.write_bytes(p.read_bytes()[:1000])
    _assert_one_line_error(_run(cli, sample_copy, tmp_path), "run-01")
    assert json.loads((out / "metrics.json").read_text()) == {"accuracy": 0.9}
    assert not [f for f in out.iterdir() if f.name.endswith(".tmp")]


def _annexed_without_content(path):
    """What a DataLad clone holds before 'datalad get': a link into the annex, to nothing."""
    path.unlink(missing_ok=True)
    path.symlink_to("../../.git/annex/objects/Xx/Yy/MD5E-s1--0.tsv/MD5E-s1--0.tsv")


def test_an_annexed_file_without_content_says_how_to_get_it(cli, sample_copy, tmp_path):
    _annexed_without_content(sample_copy / EVENTS)
    _assert_one_line_error(_run(cli, sample_copy, tmp_path), "run-01_events.tsv",
                           "is an annexed file whose content is not here", "datalad get")
    series = tmp_path / "NYU_0050952_rois_ho.1D"
    _annexed_without_content(series)
    from decoder.report.app_helpers import model_path  # the shipped model
    _assert_one_line_error(cli("predict", model_path(), series),
                           "NYU_0050952_rois_ho.1D is an annexed file", "datalad get")


def test_a_loop_of_links_or_a_broken_link_is_named(cli, tmp_path):
    from pipelines.biomarker import SHIPPED_MODEL
    (tmp_path / "a.1D").symlink_to(tmp_path / "b.1D")
    (tmp_path / "b.1D").symlink_to(tmp_path / "a.1D")
    proc = cli("predict", SHIPPED_MODEL, tmp_path / "a.1D")
    _assert_one_line_error(proc, "a.1D is a loop of symbolic links", "fix:")
    assert proc.returncode == 2            # the input's fault, not an internal error
    (tmp_path / "gone.1D").symlink_to(tmp_path / "moved.1D")
    _assert_one_line_error(cli("predict", SHIPPED_MODEL, tmp_path / "gone.1D"),
                           "gone.1D is a link to", "moved.1D, which leads to no file")
    (tmp_path / "folder.1D").mkdir()
    _assert_one_line_error(cli("predict", SHIPPED_MODEL, tmp_path / "folder.1D"),
                           "folder.1D is a folder, not a file")
