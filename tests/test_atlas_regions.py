"""Atlas regions are named and placed: lookup tables beside an atlas, sphere tables,
nilearn's atlases, region centres, and what a run, its report and its model make of them."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest

nib = pytest.importorskip("nibabel")

from decoder.features.timeseries import (atlas_coordinates, load_atlas,  # noqa: E402
                                         read_lookup_table)

from test_biomarker_fmriprep import AFFINE, _atlas, _run, make_fmriprep  # noqa: E402
from test_biomarker_pipeline import CONFIG  # noqa: E402

NAMES = ["Left thalamus", "Right thalamus", "Left V1", "Right V1"]


def _names_with_table(folder, table_name, text):
    """The region names load_atlas reads for the four-region atlas with ``text`` beside it."""
    _atlas(folder / "atlas.nii.gz")
    (folder / table_name).write_text(text)
    return load_atlas(folder / "atlas.nii.gz")["names"]


def _dseg_tsv(path, names=NAMES, values=(1, 2, 3, 4)):
    path.write_text("index\tname\tcolor\n" + "".join(
        f"{v}\t{n}\t#ffffff\n" for v, n in zip(values, names)))


def test_a_bids_lookup_table_beside_a_labels_atlas_names_its_regions(tmp_path):
    _atlas(tmp_path / "tpl_atlas-x_dseg.nii.gz")
    _dseg_tsv(tmp_path / "tpl_atlas-x_dseg.tsv", values=(3, 1, 4, 2),
              names=["Left V1", "Left thalamus", "Right V1", "Right thalamus"])
    atlas = load_atlas(tmp_path / "tpl_atlas-x_dseg.nii.gz")
    assert atlas["labels"] == ["1", "2", "3", "4"]        # the regions stay label values
    assert atlas["names"] == NAMES                          # matched by value, not by row


def test_an_fsl_or_freesurfer_lookup_without_header_names_regions(tmp_path):
    _atlas(tmp_path / "atlas.nii.gz")
    (tmp_path / "atlas.txt").write_text("# value name r g b a\n0 Unknown 0 0 0 0\n"
                                        "1 Left-Thalamus 0 118 14 0\n2 Right-Thalamus 0 118 14 0\n"
                                        "3 Left-V1 1 1 1 0\n4 Right-V1 1 1 1 0\n")
    assert load_atlas(tmp_path / "atlas.nii.gz")["names"] == [
        "Left-Thalamus", "Right-Thalamus", "Left-V1", "Right-V1"]
    assert read_lookup_table(tmp_path / "atlas.txt")["0"] == "Unknown"


def test_a_lookup_that_misses_regions_says_which_and_keeps_their_values(tmp_path, caplog):
    _atlas(tmp_path / "atlas.nii.gz")
    (tmp_path / "atlas.csv").write_text("label,region\n1,Left thalamus\n2,Right thalamus\n")
    with caplog.at_level(logging.WARNING):
        names = load_atlas(tmp_path / "atlas.nii.gz")["names"]
    assert names == ["Left thalamus", "Right thalamus", "3", "4"]
    assert "atlas.csv does not name 2 of the 4 regions of atlas.nii.gz (labels 3, 4)" \
        in caplog.text


def test_a_lookup_of_another_atlas_is_ignored_with_a_warning(tmp_path, caplog):
    _atlas(tmp_path / "atlas.nii.gz")
    _dseg_tsv(tmp_path / "atlas.tsv", values=(11, 12, 13, 14))
    with caplog.at_level(logging.WARNING):
        assert load_atlas(tmp_path / "atlas.nii.gz")["names"] == ["1", "2", "3", "4"]
    assert "atlas.tsv names none of the 4 regions" in caplog.text
    (tmp_path / "atlas.tsv").unlink()
    (tmp_path / "other.tsv").write_text("index\tname\n1\tx\n")     # another stem: not read
    assert load_atlas(tmp_path / "atlas.nii.gz")["names"] == ["1", "2", "3", "4"]


def test_maps_are_named_row_by_row_from_a_zero_or_one_based_table(tmp_path):
    maps = np.random.default_rng(0).random((6, 6, 4, 3)).astype(np.float32)
    nib.save(nib.Nifti1Image(maps, AFFINE), tmp_path / "maps.nii.gz")
    (tmp_path / "maps.tsv").write_text("index\tname\n1\tDMN\n2\tSalience\n3\tVisual\n")
    assert load_atlas(tmp_path / "maps.nii.gz")["names"] == ["DMN", "Salience", "Visual"]
    (tmp_path / "maps.tsv").write_text("index\tname\n0\tDMN\n1\tSalience\n2\tVisual\n")
    assert load_atlas(tmp_path / "maps.nii.gz")["names"] == ["DMN", "Salience", "Visual"]


def test_sphere_tables_give_their_names_or_their_coordinates(tmp_path):
    (tmp_path / "rois.csv").write_text("x,y,z,name\n0,-52,26,PCC\n0,54,-4,mPFC\n40,10,0,Ins\n"
                                       "-40,10,0,Ins\n")
    atlas = load_atlas(tmp_path / "rois.csv")
    # a repeated name is told apart by the sphere's position
    assert atlas["names"] == ["PCC", "mPFC", "Ins (40, 10, 0)", "Ins (-40, 10, 0)"]
    assert atlas_coordinates(atlas).tolist() == [[0, -52, 26], [0, 54, -4], [40, 10, 0],
                                                 [-40, 10, 0]]
    (tmp_path / "xyz.tsv").write_text("x\ty\tz\n0\t-52\t26\n0\t54\t-4\n")
    assert load_atlas(tmp_path / "xyz.tsv")["names"] == ["(0, -52, 26)", "(0, 54, -4)"]


def test_nilearns_bundled_sphere_atlases_are_named():
    dosenbach = load_atlas("dosenbach")
    assert len(dosenbach["names"]) == len(dosenbach["labels"]) == 160
    assert any(n.startswith("inf cerebellum") for n in dosenbach["names"])
    seitzman = load_atlas("seitzman")
    assert len(set(seitzman["names"])) == len(seitzman["labels"]) == 300
    power = load_atlas("power")
    assert power["names"][0] == "(-25, -98, -12)"


def test_a_fetched_atlas_is_named_from_its_lookup_table_or_labels_without_background():
    from types import SimpleNamespace

    import pandas as pd

    from decoder.features.timeseries import _names_from_fetched
    lut = pd.DataFrame({"index": [0, 1, 2, 7], "name": ["Background", "A", "B", "C"]})
    assert _names_from_fetched(SimpleNamespace(lut=lut, labels=None), "labels",
                               ["1", "2", "7"]) == ["A", "B", "C"]
    listed = SimpleNamespace(labels=["Background", "A", "B", "C"])
    assert _names_from_fetched(listed, "labels", ["1", "2", "3"]) == ["A", "B", "C"]
    assert _names_from_fetched(SimpleNamespace(labels=["A", "B"]), "maps", ["0", "1"]) == \
        ["A", "B"]
    # a list that does not fit the regions names nothing rather than the wrong ones
    assert _names_from_fetched(listed, "labels", ["1", "2"]) == ["1", "2"]


def test_labels_are_placed_at_the_centre_of_their_largest_part_as_nilearn_does(tmp_path):
    from nilearn.plotting import find_parcellation_cut_coords
    shape = (30, 36, 30)
    affine = np.array([[-4, 0, 0, 60], [0, 4, 0, -72], [0, 0, 4, -50], [0, 0, 0, 1.0]])
    lab = np.zeros(shape, np.int16)
    lab[5:25, 5:10, 5:10] = 1                              # both hemispheres: its left part
    lab[2:6, 20:25, 20:25] = 2
    lab[10:12, 28:30, 2:4] = 2                             # a small second part, not counted
    lab[18:28, 12:20, 12:18] = 3
    lab[3:8, 3:8, 20:28] = 5
    img = nib.Nifti1Image(lab, affine)
    ours = atlas_coordinates({"type": "labels", "img": img, "labels": ["1", "2", "3", "5"]})
    theirs, values = find_parcellation_cut_coords(img, return_label_names=True)
    assert [int(v) for v in values] == [1, 2, 3, 5]
    assert np.allclose(ours, theirs)
    assert ours[0][0] < 0                                   # left of the midline
    # an atlas without background keeps its first region (nilearn's drops it)
    _atlas(tmp_path / "full.nii.gz")
    full = atlas_coordinates(load_atlas(tmp_path / "full.nii.gz"))
    assert full.tolist() == [[3, 3, 4.5], [12, 3, 4.5], [3, 12, 4.5], [12, 12, 4.5]]


def test_a_run_names_and_places_the_regions_in_its_tables_report_and_model(tmp_path):
    root = make_fmriprep(tmp_path / "ds", n_per_site=6)
    _dseg_tsv(root / "atlas.tsv")
    assert _run(root, tmp_path / "out") == 0
    out = tmp_path / "out"
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["dataset"]["region_names"] == NAMES
    assert metrics["dataset"]["region_coordinates"] == [[3, 3, 4.5], [12, 3, 4.5],
                                                        [3, 12, 4.5], [12, 12, 4.5]]
    # the lookup table is one of the run's recorded inputs
    assert "atlas.tsv" in {r["path"] for r in metrics["provenance"]["inputs"]}
    import pandas as pd
    edges = pd.read_csv(out / "edges.tsv", sep="\t")
    top = edges.iloc[0]
    assert {top["name_a"], top["name_b"]} == {"Left thalamus", "Right thalamus"}
    assert {str(top["region_a"]), str(top["region_b"])} == {"1", "2"}
    html = (out / "report.html").read_text()
    assert "edge patterns on a glass brain" in html and "Left thalamus" in html
    # the model carries them: the app draws and names its connections
    from decoder.report.app_helpers import model_connections
    from pipelines.biomarker import load_model
    bundle = load_model(out / "model.skops")
    assert bundle["dataset"]["region_names"] == NAMES
    card = json.loads((out / "model_card.json").read_text())
    shown = model_connections(bundle, card)
    assert shown["glass"] is not None
    assert set(shown["table"].iloc[0][["region a", "region b"]]) == {"Left thalamus",
                                                                     "Right thalamus"}


def test_without_a_lookup_a_run_keeps_label_values_and_still_draws_the_glass_brain(tmp_path):
    root = make_fmriprep(tmp_path / "ds", n_per_site=6)
    assert _run(root, tmp_path / "out") == 0
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert metrics["dataset"]["region_names"] == ["1", "2", "3", "4"]
    assert len(metrics["dataset"]["region_coordinates"]) == 4
    html = (tmp_path / "out" / "report.html").read_text()
    assert "edge patterns on a glass brain" in html


def test_a_lookup_table_named_otherwise_is_given_with_dataset_atlas_labels(tmp_path, capsys):
    """Schaefer's parcellations ship ``…_order.txt`` beside ``…_order_FSLMNI152_2mm.nii.gz``:
    not the same stem, so the table is named in the config."""
    root = make_fmriprep(tmp_path / "ds", n_per_site=6)
    table = tmp_path / "Schaefer_order.txt"
    table.write_text("1 7Networks_LH_Vis_1 120 18 134 0\n2 7Networks_RH_Vis_1 120 18 134 0\n"
                     "3 7Networks_LH_Default_1 205 62 78 0\n4 7Networks_RH_Default_1 205 62 78 0\n")
    assert _run(root, tmp_path / "out", "--set", f"dataset.atlas_labels={table}") == 0
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert metrics["dataset"]["region_names"][0] == "7Networks_LH_Vis_1"
    assert metrics["dataset"]["atlas_labels"] == str(table)
    # a table that is not there stops a dry run, in one line
    from decoder.cli import main
    assert main(["run", str(CONFIG), "--data", str(root), "--dry-run",
                 "--set", "dataset.kind=fmriprep", "--set", f"dataset.atlas={root / 'atlas.nii.gz'}",
                 "--set", f"dataset.atlas_labels={tmp_path / 'nosuch.txt'}"]) == 2
    err = capsys.readouterr().err
    assert "dataset.atlas_labels: lookup table not found" in err and "\n" not in err.strip()


@pytest.mark.parametrize("text", [
    "Left thalamus\nRight thalamus\nLeft V1\nRight V1\n",                 # one name per line
    "Background\nLeft thalamus\nRight thalamus\nLeft V1\nRight V1\n",     # with the background
    "name\nLeft thalamus\nRight thalamus\nLeft V1\nRight V1\n",          # a name column alone
    "1 Left thalamus\n2 Right thalamus\n3 Left V1 255 0 0\n4 Right V1 0 0 255 0\n",  # spaces
])
def test_names_alone_follow_the_regions_order_and_names_may_hold_spaces(tmp_path, text):
    assert _names_with_table(tmp_path, "atlas.txt", text) == NAMES


def test_a_list_of_names_of_another_length_names_nothing(tmp_path, caplog):
    with caplog.at_level(logging.WARNING):
        assert _names_with_table(tmp_path, "atlas.txt", "A\nB\nC\n") == ["1", "2", "3", "4"]
    assert "atlas.txt lists 3 names for the 4 regions" in caplog.text


@pytest.mark.parametrize("text", [
    "index\tname\n1\tLeft thalamus\t\n2\tRight thalamus\t\n3\tLeft V1\t\n4\tRight V1\t\n",
    "index\tname\n1\tLeft thalamus\t#ff0000\n2\tRight thalamus\t#00ff00\n3\tLeft V1\t#0000ff\n"
    "4\tRight V1\t#ffffff\n",                                    # more fields than the header
    "0\tBackground\n1\tLeft thalamus\t1\t2\t3\n2\tRight thalamus\t1\t2\t3\n"
    "3\tLeft V1\t1\t2\t3\n4\tRight V1\t1\t2\t3\n",                # a short first row
    "index;name\n1;Left thalamus\n2;Right thalamus\n3;Left V1\n4;Right V1\n",   # semicolons
])
def test_ragged_and_semicolon_tables_are_read_row_by_row(tmp_path, text):
    assert _names_with_table(tmp_path, "atlas.tsv", text) == NAMES


def test_an_fsleyes_lut_with_colours_before_the_name_is_read(tmp_path):
    """FSLeyes (and Schaefer's ``…_order.lut``) write ``value R G B name``, colours in 0–1."""
    _atlas(tmp_path / "atlas.nii.gz")
    (tmp_path / "atlas.lut").write_text(
        "1 0.470588 0.070588 0.525490 7Networks_LH_Vis_1\n2 0.5 0.1 0.5 7Networks_RH_Vis_1\n"
        "3 1 0 0 Left V1\n4 0 0 1 Right V1\n")
    assert load_atlas(tmp_path / "atlas.nii.gz")["names"] == [
        "7Networks_LH_Vis_1", "7Networks_RH_Vis_1", "Left V1", "Right V1"]


def test_templateflows_table_without_the_resolution_is_found(tmp_path):
    atlas = tmp_path / "tpl-MNI152NLin2009cAsym_res-02_atlas-X_desc-4_dseg.nii.gz"
    _atlas(atlas)
    _dseg_tsv(tmp_path / "tpl-MNI152NLin2009cAsym_atlas-X_desc-4_dseg.tsv")
    assert load_atlas(atlas)["names"] == NAMES


def test_a_latin1_table_is_read_and_a_coordinates_table_is_not_its_own_lookup(tmp_path):
    from decoder.features.timeseries import lookup_table_path
    _atlas(tmp_path / "atlas.nii.gz")
    (tmp_path / "atlas.txt").write_bytes("1 Thalamus gauche\n2 Thalamus droit\n3 Aire 17 "
                                         "gauche\n4 Aire 17 droite é\n".encode("latin-1"))
    assert load_atlas(tmp_path / "atlas.nii.gz")["names"][3] == "Aire 17 droite é"
    (tmp_path / "rois.csv").write_text("x,y,z\n0,0,0\n")
    assert lookup_table_path(tmp_path / "rois.csv") is None     # recorded once, not twice


def test_a_coordinates_table_is_named_by_its_text_column(tmp_path):
    (tmp_path / "rois.csv").write_text("label,x,y,z,name\n1,0,-52,26,PCC\n2,0,54,-4,mPFC\n")
    assert load_atlas(tmp_path / "rois.csv")["names"] == ["PCC", "mPFC"]


def test_a_bilateral_label_is_placed_by_world_x_whatever_the_axis_order(tmp_path):
    """An atlas whose first voxel axis is not left–right (axes permuted)."""
    from nilearn.plotting import find_parcellation_cut_coords
    lab = np.zeros((20, 30, 24), np.int16)          # axes: y, x, z
    lab[4:10, 3:27, 5:10] = 1                        # crosses x = 0 along the second axis
    lab[12:16, 18:24, 12:18] = 2
    affine = np.array([[0, 4.0, 0, -60], [4.0, 0, 0, -40], [0, 0, 4.0, -48], [0, 0, 0, 1]])
    img = nib.Nifti1Image(lab, affine)
    ours = atlas_coordinates({"type": "labels", "img": img, "labels": ["1", "2"]})
    theirs = find_parcellation_cut_coords(img)
    assert ours[0][0] < 0                            # the left part, as nilearn places it
    assert np.allclose(ours, theirs)
