"""The ABIDE PCP reader and the .1D/.tsv/.csv time-series reader."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from decoder.data.abide import (DERIVATIVES, HO_CORTICAL, HO_SUBCORTICAL, PIPELINES,
                                STRATEGIES, load_abide, region_coordinates, region_names)
from decoder.data.timeseries_io import read_timeseries
from decoder.errors import ConfigError, DataError



def make_layout(root, n_sites=3, per_site=8, n_regions=6, n_time=60, signal=0.8, seed=0,
                pipeline="cpac", strategy="filt_noglobal", derivative="rois_ho",
                mean_fd=True):
    """A small ABIDE-PCP-shaped folder whose autism subjects couple regions 0 and 1.

    With ``mean_fd``, the table has ``func_mean_fd`` (autism subjects move
    more; the second subject's value is ABIDE's missing code -9999)."""
    rng = np.random.default_rng(seed)
    root = Path(root)
    folder = root / "Outputs" / pipeline / strategy / derivative
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for s in range(n_sites):
        site = f"SITE{s}"
        for k in range(per_site):
            fid = f"{site}_{s * 100 + k:07d}"
            dx = 1 if k % 2 == 0 else 2
            ts = rng.normal(size=(n_time + 5 * s, n_regions))
            shared = rng.normal(size=n_time + 5 * s)
            coupling = signal if dx == 1 else -signal
            ts[:, 0] += shared
            ts[:, 1] += coupling * shared
            ts += s * 2.0  # site offset
            header = "\t".join(f"#{10 + r}" for r in range(n_regions))
            body = "\n".join("\t".join(f"{v:.6f}" for v in row) for row in ts)
            (folder / f"{fid}_{derivative}.1D").write_text(header + "\n" + body + "\n")
            rows.append({"SUB_ID": s * 100 + k, "SITE_ID": site, "FILE_ID": fid, "DX_GROUP": dx,
                         "AGE_AT_SCAN": 10 + k + s, "SEX": 1 + (k % 3 == 0)})
            if mean_fd:
                rows[-1]["func_mean_fd"] = (-9999 if (s, k) == (0, 1)
                                            else 0.05 + 0.01 * k + 0.05 * (dx == 1))
    rows.append({"SUB_ID": 9, "SITE_ID": "X", "FILE_ID": "no_filename", "DX_GROUP": 1,
                 "AGE_AT_SCAN": 20, "SEX": 1})
    pd.DataFrame(rows).to_csv(root / "Phenotypic_V1_0b_preprocessed1.csv")
    return root


def test_reads_every_subject_with_labels_sites_and_covariates(tmp_path):
    root = make_layout(tmp_path)
    d = load_abide(root)
    assert len(d) == 24
    assert set(d.diagnosis) == {"autism", "control"}
    assert sorted(set(d.sites)) == ["SITE0", "SITE1", "SITE2"]
    assert d.regions[:2] == ["10", "11"]
    # different lengths per site are kept as they are
    assert {len(t) for t in d.time_series} == {60, 65, 70}
    assert list(d.covariates.columns) == ["age", "sex"]
    assert (d.missing_regions == 0).all()


def test_mean_framewise_displacement_is_read_as_a_confound_with_missing_codes_as_nan(tmp_path):
    d = load_abide(make_layout(tmp_path))
    fd = d.confounds["mean_fd"]
    assert list(d.confounds.columns) == ["mean_fd"]
    assert fd.isna().sum() == 1 and np.isnan(fd.loc["SITE0_0000001"])
    assert fd.loc["SITE1_0000100"] == pytest.approx(0.10)  # k = 0 is autism: 0.05 + 0.05
    sub = d.subset([2, 1])
    assert np.isnan(sub.mean_fd[1]) and sub.mean_fd[0] == pytest.approx(fd.iloc[2])
    # a table without the column gives no confounds, not an error
    assert load_abide(make_layout(tmp_path / "no_fd", mean_fd=False)).confounds.empty


def test_site_filter_and_max_subjects(tmp_path):
    root = make_layout(tmp_path)
    d = load_abide(root, sites=["SITE1"], max_subjects=3)
    assert len(d) == 3 and set(d.sites) == {"SITE1"}
    with pytest.raises(ConfigError, match="SITE9"):
        load_abide(root, sites=["SITE9"])


@pytest.mark.parametrize("key,value", [("pipeline", "fsl"), ("strategy", "filt"),
                                       ("derivative", "rois_xyz")])
def test_unknown_pipeline_strategy_derivative_is_a_config_error(tmp_path, key, value):
    root = make_layout(tmp_path)
    with pytest.raises(ConfigError, match=value):
        load_abide(root, **{key: value})


def test_every_pcp_combination_maps_to_its_folder(tmp_path):
    assert len(PIPELINES) * len(STRATEGIES) * len(DERIVATIVES) == 4 * 4 * 7
    root = make_layout(tmp_path, pipeline="dparsf", strategy="nofilt_global",
                       derivative="rois_cc200", n_sites=2, per_site=2)
    d = load_abide(root, "dparsf", "nofilt_global", "rois_cc200")
    assert len(d) == 4
    with pytest.raises(DataError, match="present here: dparsf/nofilt_global/rois_cc200"):
        load_abide(root, "cpac", "nofilt_global", "rois_cc200")


def test_file_missing_from_phenotypic_table_is_named(tmp_path):
    root = make_layout(tmp_path)
    folder = root / "Outputs/cpac/filt_noglobal/rois_ho"
    (folder / "GHOST_0000001_rois_ho.1D").write_text("#1\t#2\n1\t2\n3\t4\n")
    with pytest.raises(DataError, match="GHOST_0000001.*not in Phenotypic"):
        load_abide(root)


def test_all_zero_region_is_kept_and_counted(tmp_path):
    root = make_layout(tmp_path)
    f = sorted((root / "Outputs/cpac/filt_noglobal/rois_ho").iterdir())[0]
    data, regions = read_timeseries(f)
    data[:, 3] = 0.0
    f.write_text("\t".join("#" + r for r in regions) + "\n" +
                 "\n".join("\t".join(f"{v:.4f}" for v in row) for row in data) + "\n")
    d = load_abide(root)
    assert d.missing_regions[0] == 1 and d.missing_regions[1:].sum() == 0
    assert any("no signal" in n for n in d.notes)


def test_truncated_1d_is_a_one_line_error(tmp_path):
    f = tmp_path / "s_rois_ho.1D"
    f.write_text("#1\t#2\t#3\n1\t2\t3\n4\t5\t6\n7\t8")
    with pytest.raises(DataError, match="truncated.*last line has 2 values, expected 3") as exc:
        read_timeseries(f)
    assert "\n" not in str(exc.value)


def test_all_nan_file_is_a_one_line_error(tmp_path):
    f = tmp_path / "s_rois_ho.1D"
    f.write_text("#1\t#2\nnan\tnan\nnan\tnan\n")
    with pytest.raises(DataError, match="every value is NaN"):
        read_timeseries(f)


def test_tsv_and_csv_with_headers(tmp_path):
    data = np.arange(12, dtype=float).reshape(4, 3)
    pd.DataFrame(data, columns=["a", "b", "c"]).to_csv(tmp_path / "x.tsv", sep="\t", index=False)
    pd.DataFrame(data).to_csv(tmp_path / "x.csv", index=False, header=False)
    t, names = read_timeseries(tmp_path / "x.tsv")
    assert names == ["a", "b", "c"] and np.array_equal(t, data)
    t, names = read_timeseries(tmp_path / "x.csv")
    assert names == ["0", "1", "2"] and np.array_equal(t, data)


def test_non_numeric_cells_are_an_error(tmp_path):
    f = tmp_path / "x.tsv"
    f.write_text("a\tb\n1\t2\n3\tfoo\n")
    with pytest.raises(DataError, match="non-numeric"):
        read_timeseries(f)


@pytest.fixture
def abide_root(shared):
    """The real ABIDE PCP folder under DECODER_SHARED_DATA (the test skips without it)."""
    root = shared / "abide_pcp"
    if not root.is_dir():
        pytest.skip(f"{root} absent")
    return root


@pytest.mark.shared
def test_real_abide_subset_reads_with_irregular_files(abide_root):
    d = load_abide(abide_root, sites=["CMU", "CALTECH"])
    assert len(d) == 26
    assert all(t.shape[1] == 111 for t in d.time_series)
    assert d.regions[0] == "10"
    assert set(d.diagnosis) == {"autism", "control"}
    assert np.all(np.isfinite(d.age))


def test_harvard_oxford_codes_get_names():
    names = region_names(["#10", "58", "101", "102", "4802", "3455"], "rois_ho")
    assert names == ["Left Thalamus", "Right Accumbens", "Right Frontal Pole", "Left Frontal Pole",
                     "Left Occipital Pole", "region 3455"]
    assert region_names(["1", "2"], "rois_cc200") is None


@pytest.mark.shared
def test_real_data_agree_with_the_hemisphere_of_the_region_names(abide_root):
    # within-hemisphere coupling is stronger: a "Right" cortical region, relative to its
    # "Left" twin, must go more with the right than with the left subcortical regions
    d = load_abide(abide_root)
    names = region_names(d.regions, "rois_ho")
    with np.errstate(invalid="ignore", divide="ignore"):  # regions without signal: no coupling
        mean = np.mean([np.nan_to_num(np.corrcoef(t, rowvar=False)) for t in d.time_series],
                       axis=0)
    sub = {side: [d.regions.index(c) for c, n in HO_SUBCORTICAL.items() if n.startswith(side)]
           for side in ("Left", "Right")}
    left, right = sub["Left"], sub["Right"]
    assert len(left) == len(right) == 7
    agree = 0
    for label in HO_CORTICAL:
        r, l_ = names.index(f"Right {label}"), names.index(f"Left {label}")
        lateral = mean[r, right].mean() - mean[r, left].mean()
        lateral_twin = mean[l_, right].mean() - mean[l_, left].mean()
        agree += lateral > lateral_twin
    assert agree >= 40


def test_region_coordinates_lie_on_the_side_their_names_say():
    codes = list(HO_SUBCORTICAL) + [f"#{100 * k + h}" for k in range(1, 49) for h in (1, 2)]
    xyz = region_coordinates(codes, "rois_ho")
    assert xyz.shape == (110, 3) and np.isfinite(xyz).all()
    names = region_names(codes, "rois_ho")
    x = xyz[:, 0]
    assert all(xi < 0 for xi, n in zip(x, names) if n.startswith("Left"))
    assert all(xi > 0 for xi, n in zip(x, names) if n.startswith("Right"))
    assert (np.abs(xyz) < 120).all()                      # inside an MNI brain box
    unknown = region_coordinates(codes + ["3455"], "rois_ho")       # as in the PCP files
    assert np.isnan(unknown[-1]).all() and np.isfinite(unknown[:-1]).all()
    assert region_coordinates(codes, "rois_cc200") is None
    # mostly other codes: not this atlas, no coordinates at all
    assert region_coordinates(["10", "11", "9001", "9002"], "rois_ho") is None


def test_coupling_falls_with_the_distance_between_region_coordinates():
    # nearby regions are more coupled; coordinates attached to the wrong regions would
    # show no such trend (permuted coordinates: |rho| < 0.1 on these subjects)
    from scipy.stats import spearmanr

    from decoder.report.app_helpers import example_subjects
    mats, regions = [], None
    for path in example_subjects()["path"]:
        ts, regions = read_timeseries(path)
        with np.errstate(invalid="ignore", divide="ignore"):
            mats.append(np.nan_to_num(np.corrcoef(ts, rowvar=False)))
    xyz = region_coordinates(regions, "rois_ho")
    iu = np.triu_indices(len(xyz), k=1)
    dist = np.linalg.norm(xyz[:, None] - xyz[None], axis=-1)[iu]
    known = np.isfinite(dist)
    rho = spearmanr(dist[known], np.mean(mats, axis=0)[iu][known])[0]
    assert rho < -0.2


def test_empty_cells_of_a_tab_separated_file_are_missing_values_not_padding(tmp_path):
    f = tmp_path / "s.tsv"
    f.write_text("a\tb\tc\n\t1.0\t\n\t\t\n\t3.0\t4.0\n")  # first and last cells empty
    data, regions = read_timeseries(f)
    assert regions == ["a", "b", "c"] and data.shape == (3, 3)
    assert np.isnan(data[:, 0]).all() and np.isnan(data[1]).all()
    assert data[2, 1:].tolist() == [3.0, 4.0]


# ------------------------------------------------------------ phenotypic table mistakes
def _edit_table(root, edit):
    path = root / "Phenotypic_V1_0b_preprocessed1.csv"
    table = pd.read_csv(path, index_col=0)
    table = edit(table)
    table.to_csv(path)
    return path


def test_sex_written_as_letters_reads_as_abides_codes(tmp_path):
    root = make_layout(tmp_path)
    codes = load_abide(root).sex
    _edit_table(root, lambda t: t.assign(SEX=t["SEX"].map({1: "M", 2: "F"})))
    assert np.array_equal(load_abide(root).sex, codes)


@pytest.mark.parametrize("case, named", [
    ("sex", "SEX of 'SITE0_0000002' is 'X'"),
    ("site", "SITE_ID of 'SITE0_0000002' is empty"),
    ("clash", "FILE_ID 'SITE0_0000002' has rows that disagree"),
])
def test_a_phenotypic_mistake_names_the_subject(tmp_path, case, named):
    root = make_layout(tmp_path)

    def edit(t):
        row = t.index[t["FILE_ID"] == "SITE0_0000002"][0]
        if case == "sex":
            t["SEX"] = t["SEX"].astype(object)
            t.loc[row, "SEX"] = "X"
        elif case == "site":
            t.loc[row, "SITE_ID"] = None
        else:
            twin = t.loc[[row]].assign(DX_GROUP=3 - t.loc[row, "DX_GROUP"])
            t = pd.concat([t, twin], ignore_index=True)
        return t
    _edit_table(root, edit)
    with pytest.raises(DataError, match=named):
        load_abide(root)


def test_an_age_that_is_not_a_number_is_imputed_and_said(tmp_path, caplog):
    root = make_layout(tmp_path)

    def edit(t):
        t["AGE_AT_SCAN"] = t["AGE_AT_SCAN"].astype(object)
        t.loc[t["FILE_ID"] == "SITE1_0000103", "AGE_AT_SCAN"] = "twelve"
        return t
    _edit_table(root, edit)
    with caplog.at_level("WARNING", logger="decoder.data.abide"):
        d = load_abide(root)
    assert "e.g. SITE1_0000103" in caplog.text and "median" in caplog.text
    assert any("SITE1_0000103" in n for n in d.notes)


@pytest.mark.parametrize("content, named", [
    ("#10\t#11\n1\t2\n3\t4\n", "2 time points, at least 20 are needed"),
    ("#10\t#11\n" + "1\t2\n" * 20, "fewer than 2 regions with signal"),
    # a series a prediction refuses is none to train on either
    ("#10\t#11\n" + "".join(f"{i}\t{i % 3}\n" for i in range(30)) + "inf\t1\n",
     "1 of 31 time points hold NaN or inf values"),
])
def test_a_subject_file_without_usable_signal_is_named(tmp_path, content, named):
    root = make_layout(tmp_path, n_regions=2)
    bad = root / "Outputs" / "cpac" / "filt_noglobal" / "rois_ho" / "SITE1_0000102_rois_ho.1D"
    bad.write_text(content)
    with pytest.raises(DataError, match=named) as err:
        load_abide(root)
    assert str(bad) in str(err.value)


def test_an_empty_phenotypic_table_is_named(tmp_path):
    root = make_layout(tmp_path)
    (root / "Phenotypic_V1_0b_preprocessed1.csv").write_text("")
    with pytest.raises(DataError, match="Phenotypic_V1_0b_preprocessed1.csv: the file is empty"):
        load_abide(root)


def test_files_listing_the_regions_in_another_order_are_named(tmp_path):
    root = make_layout(tmp_path)
    odd = root / "Outputs" / "cpac" / "filt_noglobal" / "rois_ho" / "SITE2_0000203_rois_ho.1D"
    lines = odd.read_text().splitlines()
    head = lines[0].split("\t")
    lines[0] = "\t".join([head[1], head[0], *head[2:]])
    odd.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match="column 1 is region #11, but in .* it is #10") as err:
        load_abide(root)
    assert str(odd) in str(err.value)
