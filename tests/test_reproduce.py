"""decoder reproduce: a run folder alone is enough to rerun a result and check it came back."""

from __future__ import annotations

import json
import shutil

import pandas as pd
import pytest

from decoder._utils import sha256_file
from decoder.cli import main
from pipelines.reproduce import TOLERANCE, compare_metrics, compare_table

from test_abide_reader import make_layout
from test_biomarker_pipeline import CONFIG as ABIDE_CONFIG

HAXBY = ["configs/haxby.yaml", "--set", "classes=face,house", "--set", "delay=5.0",
         "--set", "window=1"]


def _checksums(folder):
    return {p.name: sha256_file(p) for p in sorted(folder.iterdir()) if p.is_file()}


@pytest.fixture
def haxby_run(tmp_path, monkeypatch):
    from conftest import ROOT
    monkeypatch.chdir(ROOT)
    run = tmp_path / "haxby"
    assert main(["run", *HAXBY, "--out", str(run)]) == 0
    return run


def test_a_run_folder_is_rerun_and_found_identical_without_touching_it(haxby_run, capsys):
    before = _checksums(haxby_run)
    assert main(["reproduce", str(haxby_run)]) == 0
    said = capsys.readouterr().out
    assert said.startswith("reproduced exactly: accuracy")
    out = haxby_run.parent / "haxby-reproduced"
    res = json.loads((out / "reproduction.json").read_text())
    assert res["verdict"] == "identical" and res["reproduced"]
    assert set(res["files"]) == {"confusion_matrix.tsv", "predictions.tsv", "weights.nii.gz"}
    assert all(f["same"] and f["max_abs_diff"] == 0 for f in res["files"].values())
    assert res["inputs"]["same"] and res["inputs"]["n"] >= 25  # 12 runs, their events, mask
    assert res["config_same"] and res["environment"]["same"]
    assert res["run"] == str(haxby_run.resolve()) and res["reproduction"] == str(out.resolve())
    assert _checksums(haxby_run) == before  # the run folder is only read


def test_a_changed_result_is_reported_by_key_with_exit_3(haxby_run, tmp_path, capsys):
    metrics = json.loads((haxby_run / "metrics.json").read_text())
    metrics["accuracy"] = 0.99  # results are not covered by the config hash
    (haxby_run / "metrics.json").write_text(json.dumps(metrics))
    pred = pd.read_csv(haxby_run / "predictions.tsv", sep="\t")
    pred.loc[3, "score_face"] += 0.5
    pred.to_csv(haxby_run / "predictions.tsv", sep="\t", index=False)
    out = tmp_path / "again"
    assert main(["reproduce", str(haxby_run), "--out", str(out)]) == 3
    said = capsys.readouterr().out
    assert said.startswith("NOT reproduced: accuracy 0.990 → ")
    assert "metrics.json: 1 value differs (accuracy 0.99 → " in said
    sample = pred.iloc[3, 0]
    assert f"predictions.tsv: 1 row differs (first: {sample}), largest difference 0.5" in said
    res = json.loads((out / "reproduction.json").read_text())
    assert res["verdict"] == "differs"
    assert res["metrics"]["differences"][0]["key"] == "accuracy"


def test_a_run_recorded_by_an_earlier_version_with_fewer_fields_still_reproduces(
        haxby_run, tmp_path, capsys):
    """A later version records more (here: n_classes) — no result changed, so it is said,
    not counted as a difference."""
    metrics = json.loads((haxby_run / "metrics.json").read_text())
    del metrics["n_classes"]
    (haxby_run / "metrics.json").write_text(json.dumps(metrics))
    assert main(["reproduce", str(haxby_run), "--out", str(tmp_path / "again")]) == 0
    said = capsys.readouterr().out
    assert said.startswith("reproduced exactly")
    assert "metrics.json: 1 field(s) this version records that the run did not (n_classes)" \
        in said


@pytest.fixture
def copy_run(sample_copy, tmp_path, monkeypatch):
    """A run on a copy of the embedded sample (data that a test may alter)."""
    from conftest import ROOT
    monkeypatch.chdir(ROOT)
    run = tmp_path / "run"
    assert main(["run", *HAXBY, "--data", str(sample_copy), "--out", str(run)]) == 0
    return sample_copy, run


def test_inputs_that_changed_since_the_run_are_refused_before_any_work(copy_run, tmp_path,
                                                                        capsys):
    sample_copy, run = copy_run
    events = sorted(sample_copy.rglob("*run-03_events.tsv"))[0]
    events.write_text(events.read_text().replace("face", "house", 1))
    out = tmp_path / "again"
    assert main(["reproduce", str(run), "--out", str(out)]) == 2  # the recorded root
    err = capsys.readouterr().err
    assert "1 of " in err and "run-03_events.tsv" in err and "--data" in err
    assert not out.exists()


def test_a_record_that_cannot_be_replayed_is_one_line(haxby_run, tmp_path, capsys):
    assert main(["reproduce", str(tmp_path / "nowhere")]) == 2
    assert "run folder not found" in capsys.readouterr().err
    assert main(["reproduce", str(haxby_run), "-J", "0"]) == 2
    assert "use e.g. -J 2" in capsys.readouterr().err
    metrics = json.loads((haxby_run / "metrics.json").read_text())
    metrics["provenance"]["config"]["window"] = 3  # an edited record
    (haxby_run / "metrics.json").write_text(json.dumps(metrics))
    assert main(["reproduce", str(haxby_run)]) == 2
    assert "does not match its recorded hash" in capsys.readouterr().err
    metrics["provenance"]["config_sha256"] = None  # a hash taken out is an edit too
    (haxby_run / "metrics.json").write_text(json.dumps(metrics))
    assert main(["reproduce", str(haxby_run)]) == 2
    assert "has no config hash" in capsys.readouterr().err
    from decoder.config import config_hash
    metrics["provenance"]["config"]["no_such_key"] = 1  # a key this version does not know
    metrics["provenance"]["config_sha256"] = config_hash(metrics["provenance"]["config"])
    (haxby_run / "metrics.json").write_text(json.dumps(metrics))
    assert main(["reproduce", str(haxby_run)]) == 2
    err = capsys.readouterr().err
    assert "does not fit decoder" in err and "no_such_key" in err
    assert "restore the metrics.json the run wrote" in err  # same version: not 'install it'
    del metrics["provenance"]["config"]["no_such_key"]
    metrics["provenance"]["config_sha256"] = config_hash(metrics["provenance"]["config"])
    metrics["provenance"]["inputs"] = "edited"
    (haxby_run / "metrics.json").write_text(json.dumps(metrics))
    assert main(["reproduce", str(haxby_run)]) == 2
    assert "provenance.inputs is not a list" in capsys.readouterr().err
    (haxby_run / "metrics.json").write_text("{not json")
    assert main(["reproduce", str(haxby_run)]) == 2
    assert "not valid JSON" in capsys.readouterr().err


def test_a_biomarker_run_reproduces_with_any_number_of_processes(tmp_path, capsys):
    root = make_layout(tmp_path / "abide", n_sites=4, per_site=8, signal=0.9)
    run = tmp_path / "run"
    assert main(["run", str(ABIDE_CONFIG), "--data", str(root), "--out", str(run)]) == 0
    out = tmp_path / "again"
    assert main(["reproduce", str(run), "--out", str(out), "-J", "2"]) == 0
    res = json.loads((out / "reproduction.json").read_text())
    assert res["verdict"] == "identical"
    assert {"predictions.tsv", "edges.tsv"} <= set(res["files"])
    # the phenotypic table the labels came from is among the inputs checked
    assert res["inputs"]["same"] and res["inputs"]["n"] == 4 * 8 + 1
    assert json.loads((out / "metrics.json").read_text())["provenance"]["config"][
        "compute"]["n_jobs"] == 2


def test_numbers_count_as_the_same_within_the_tolerance_only(tmp_path):
    a = {"accuracy": 0.7, "per_site": {"X": [1, 2.0]}, "runtime_s": 1.0,
         "dataset": {"root": "/here"}}
    b = {"accuracy": 0.7 + TOLERANCE / 10, "per_site": {"X": [1, 2.0]}, "runtime_s": 9.0,
         "dataset": {"root": "/elsewhere"}}
    res = compare_metrics(a, b)
    assert res["same"] and 0 < res["max_abs_diff"] <= TOLERANCE
    assert compare_metrics(a, {**b, "warnings": ["a cache file was damaged"]})["same"]
    # a field only the reproduction has (a later version's record) is listed, not a change
    res = compare_metrics(a, {**b, "dataset": {"root": "/x", "label_column": "dx"}})
    assert res["same"] and res["new_fields"] == ["dataset.label_column"]
    b["per_site"]["X"][1] = 2.001
    del b["accuracy"]                       # a result the reproduction lost
    res = compare_metrics(a, b)
    assert not res["same"] and res["n_differences"] == 2
    assert [d["key"] for d in res["differences"]] == ["accuracy", "per_site.X.1"]
    assert res["differences"][0]["reproduced"] == "(absent)"
    pd.DataFrame({"s": ["a", "b"], "p": [0.5, 0.25]}).to_csv(tmp_path / "a.tsv", sep="\t")
    pd.DataFrame({"s": ["a", "c"], "p": [0.5, 0.25 + 1e-12]}).to_csv(tmp_path / "b.tsv", sep="\t")
    res = compare_table(tmp_path / "a.tsv", tmp_path / "b.tsv")
    assert res["rows_differing"] == 1 and 0 < res["max_abs_diff"] < TOLERANCE
    shutil.copy(tmp_path / "a.tsv", tmp_path / "c.tsv")
    assert compare_table(tmp_path / "a.tsv", tmp_path / "c.tsv")["same"]


def test_a_run_recorded_on_a_dask_cluster_is_rerun_locally(haxby_run, tmp_path, capsys):
    metrics = json.loads((haxby_run / "metrics.json").read_text())
    from decoder.config import config_hash
    config = metrics["provenance"]["config"]
    config["compute"]["scheduler"] = "tcp://192.0.2.1:8786"  # the author's cluster
    metrics["provenance"]["config_sha256"] = config_hash(config)
    (haxby_run / "metrics.json").write_text(json.dumps(metrics))
    assert main(["reproduce", str(haxby_run), "--out", str(tmp_path / "again")]) == 0
    said = capsys.readouterr().out
    assert "note: the recorded Dask scheduler (tcp://192.0.2.1:8786) is not used" in said
    res = json.loads((tmp_path / "again" / "reproduction.json").read_text())
    assert res["verdict"] == "identical" and res["config_same"]


def test_the_run_folder_is_never_the_output_however_it_is_spelt(haxby_run, tmp_path,
                                                                monkeypatch, capsys):
    before = _checksums(haxby_run)
    link = tmp_path / "link"
    link.symlink_to(haxby_run)
    (tmp_path / "sub").mkdir()
    for out in (haxby_run, link, tmp_path / "sub" / ".." / "haxby", haxby_run / "inner"):
        assert main(["reproduce", str(haxby_run), "--out", str(out)]) == 2
        err = capsys.readouterr().err
        assert "the run folder itself" in err or "inside the run folder" in err
    assert main(["reproduce", str(link), "--out", str(haxby_run)]) == 2
    capsys.readouterr()
    assert _checksums(haxby_run) == before and not (haxby_run / "inner").exists()
    # '.' as the run folder: the default output is beside it, not inside
    from pipelines.reproduce import default_out
    monkeypatch.chdir(haxby_run)
    assert default_out(".") == tmp_path / "haxby-reproduced"


def test_a_damaged_or_incomplete_record_is_named_before_any_work(haxby_run, tmp_path, capsys):
    out = tmp_path / "again"
    table = haxby_run / "predictions.tsv"
    whole = table.read_bytes()
    table.write_bytes(whole[:500])                      # cut mid-row
    assert main(["reproduce", str(haxby_run), "--out", str(out)]) == 2
    assert "predictions.tsv is cut short" in capsys.readouterr().err and not out.exists()
    rows = whole.decode().splitlines()
    table.write_text("\n".join(rows[:3] + [rows[3].rsplit("\t", 1)[0]] + rows[4:]) + "\n")
    assert main(["reproduce", str(haxby_run), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "predictions.tsv line 4: " in err and "(cut short or edited)" in err
    assert not out.exists()
    table.write_text("")
    assert main(["reproduce", str(haxby_run), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "predictions.tsv: the recorded file cannot be read" in err and not out.exists()
    (haxby_run / "predictions.tsv").unlink()  # left out of a shared folder: not compared
    assert main(["reproduce", str(haxby_run), "--out", str(out)]) == 0
    said = capsys.readouterr().out
    assert "predictions.tsv: not in the recorded run folder, not compared" in said


def test_data_that_are_gone_or_incomplete_are_refused_not_replaced(copy_run, tmp_path, capsys):
    sample_copy, run = copy_run
    bold = sorted(sample_copy.rglob("*run-12_bold.nii.gz"))[0]
    moved = tmp_path / bold.name
    bold.rename(moved)
    assert main(["reproduce", str(run), "--out", str(tmp_path / "a")]) == 2
    assert "1 of 26 input files" in capsys.readouterr().err  # not a smaller run
    moved.rename(bold)
    sample_copy.rename(tmp_path / "elsewhere")  # never silently the embedded sample instead
    assert main(["reproduce", str(run), "--out", str(tmp_path / "a")]) == 2
    err = capsys.readouterr().err
    assert "which is not on this machine" in err and "--data" in err
    assert main(["reproduce", str(run), "--out", str(tmp_path / "a"),
                 "--data", str(tmp_path / "elsewhere")]) == 0
    assert f"data: {tmp_path / 'elsewhere'}" in capsys.readouterr().out
    # --data that is not a folder says so, not that every input is missing
    (tmp_path / "notes.txt").write_text("not data")
    for wrong, word in ((tmp_path / "nowhere", "not found"), (tmp_path / "notes.txt", "a file")):
        assert main(["reproduce", str(run), "--out", str(tmp_path / "b"),
                     "--data", str(wrong)]) == 2
        err = capsys.readouterr().err.strip()
        assert f"--data {wrong} is {word}, not a folder" in err and "\n" not in err


def test_a_run_records_the_code_and_libraries_that_made_it(haxby_run, tmp_path, capsys):
    from pipelines.reproduce import compare_environment
    prov = json.loads((haxby_run / "metrics.json").read_text())["provenance"]
    assert len(prov["source"]["sha256"]) == 64
    assert {"numpy", "scikit-learn", "nilearn", "scipy", "pandas", "nibabel"} <= set(
        prov["libraries"])
    # other code is an environment difference; what an older run did not record is not
    other = {**prov, "source": {"sha256": "0" * 64, "git_commit": None}}
    assert compare_environment(other, prov)["differences"] == {
        "decoder source": ["0" * 64, prov["source"]["sha256"]]}
    older = {k: v for k, v in prov.items() if k != "source"}
    older["libraries"] = {k: prov["libraries"][k] for k in ("numpy", "scikit-learn", "nilearn")}
    assert compare_environment(older, prov)["same"]
    # both environments are given in full, not only where they part
    both = compare_environment(other, prov)
    assert both["recorded"]["decoder source"] == "0" * 64
    assert both["reproduced"]["scikit-learn"] == prov["libraries"]["scikit-learn"]


def test_an_interrupted_rerun_leaves_no_comparison_of_other_results(haxby_run, tmp_path,
                                                                     monkeypatch):
    out = tmp_path / "again"
    assert main(["reproduce", str(haxby_run), "--out", str(out)]) == 0
    assert (out / "reproduction.json").is_file()
    import pipelines

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt
    monkeypatch.setattr(pipelines, "run_config", interrupted)
    assert main(["reproduce", str(haxby_run), "--out", str(out)]) == 130
    assert not (out / "reproduction.json").exists()


def test_a_run_of_the_embedded_sample_made_by_another_installation_is_reproduced(
        haxby_run, tmp_path, capsys):
    metrics = json.loads((haxby_run / "metrics.json").read_text())
    # where the other installation kept its copy of the sample (not a result: not hashed)
    metrics["dataset"]["root"] = "/elsewhere/decoder/data/_sample/haxby2001_sub1_slice"
    (haxby_run / "metrics.json").write_text(json.dumps(metrics))
    assert main(["reproduce", str(haxby_run), "--out", str(tmp_path / "again")]) == 0
    said = capsys.readouterr().out
    from decoder.data.samples import sample_path
    assert said.startswith("reproduced exactly") and f"data: {sample_path()}" in said


@pytest.mark.parametrize("text, fault", [
    ("a\tb\nx\u2028y\t1\n", None),          # a name with a line separator pandas writes as is
    ("a\tb\n1\t2\n\n", None),               # a blank line at the end
    ("a\tb\r\n1\t2\r\n", None),
    ('a\tb\n"x\ty"\t2\n', None),            # a quoted field holding a tab
    ("a\tb\n1\n", "line 2: 1 fields, its header has 2"),
    ("a\tb\n1\t2", "cut short"),
])
def test_a_run_table_is_refused_only_when_a_row_is_cut(tmp_path, text, fault):
    from decoder.errors import DataError
    from pipelines.reproduce import _check_rows
    table = tmp_path / "t.tsv"
    table.write_text(text, newline="")
    if fault is None:
        _check_rows(table)
    else:
        with pytest.raises(DataError, match=fault):
            _check_rows(table)
