"""`decoder sweep`: every variant run, compared with the first, resumable, failures kept."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from decoder.errors import ConfigError, DataError
from decoder.evaluation.compare import compare_runs
from pipelines.sweep import folder_name, holm, parse_vary, sweep, variants

ROOT = Path(__file__).resolve().parents[1]
FAST = {"task": "category", "delay": 0.0, "window": 3, "classes": ["face", "house", "cat"]}


def test_vary_values_are_parsed_like_set_values():
    vary = parse_vary(["model=dual-ridge,lda", "window=1,3",
                       "connectivity.kinds=[[tangent], [tangent, correlation]]"])
    assert vary == [("model", ["dual-ridge", "lda"]), ("window", [1, 3]),
                    ("connectivity.kinds", [["tangent"], ["tangent", "correlation"]])]
    combos = variants(vary)
    assert len(combos) == 8
    assert combos[0] == {"model": "dual-ridge", "window": 1, "connectivity.kinds": ["tangent"]}
    assert folder_name(2, {"model": "lda", "connectivity.kinds": ["tangent", "correlation"]}) \
        == "02_model-lda_connectivity.kinds-tangent+correlation"


@pytest.mark.parametrize("items, message", [
    (["model"], "not of the form"),
    (["model="], "no values"),
    (["model=lda", "model=svc"], "given twice"),
    (["model=lda,lda"], "given twice"),
    (["window=[1, 2"], "not a list"),
    (["model=,"], "no values"),
    (["delay=0,,2.5"], "has an empty value"),
    (["delay=0,"], "has an empty value"),
    (["compute.n_jobs=1,2"], "use -J"),
    ([], "nothing to vary"),
])
def test_bad_vary_is_one_line(items, message):
    with pytest.raises(ConfigError, match=message):
        parse_vary(items)


def test_values_of_different_types_are_different_values():
    assert parse_vary(["x=1,true,null,~x"]) == [("x", [1, True, None, "~x"])]
    with pytest.raises(ConfigError, match="given twice"):
        parse_vary(["x=null,~"])


def test_too_many_variants_are_refused():
    with pytest.raises(ConfigError, match="more than 256"):
        variants(parse_vary([f"k{i}=a,b,c" for i in range(6)]))


def test_holm_matches_the_step_down_rule():
    assert holm([0.01, 0.04, None, 0.03]) == pytest.approx([0.03, 0.06, None, 0.06])
    assert holm([float("nan"), 0.01, 0.02]) == [None, 0.02, 0.02]
    assert holm([0.5, 0.9]) == [1.0, 1.0]
    assert holm([None]) == [None]


def test_every_variant_runs_and_is_compared_with_the_first(tmp_path):
    out = tmp_path / "sweep"
    res = sweep(FAST, parse_vary(["model=dual-ridge,lda", "window=3,1"]), out=out)
    table = pd.read_csv(out / "sweep.tsv", sep="\t")
    assert list(table["variant"]) == [1, 2, 3, 4]
    assert list(table["model"]) == ["dual-ridge", "dual-ridge", "lda", "lda"]
    assert list(table["window"]) == [3, 1, 3, 1]
    assert (table["status"] == "ran").all()
    for _, row in table.iterrows():
        m = json.loads((out / row["folder"] / "metrics.json").read_text())
        assert m["model"] == row["model"]
        assert m["provenance"]["config"]["window"] == row["window"]
        assert m["accuracy"] == pytest.approx(row["accuracy"])
    # the tests are decoder compare's, against variant 1
    direct = compare_runs(out / table["folder"][0], out / table["folder"][2])
    assert table["p_accuracy"][2] == pytest.approx(direct["accuracy"]["p"])
    assert table["diff_accuracy"][2] == pytest.approx(direct["accuracy"]["diff"])
    # the same folds: the corrected resampled t-test (training variability) is there too
    assert direct["corrected_t"]["available"]
    assert table["p_accuracy_corrected_t"][2] == pytest.approx(
        direct["corrected_t"]["accuracy"]["p"])
    assert pd.isna(table["p_accuracy"][0])
    assert list(table["p_accuracy_holm"][1:]) == pytest.approx(holm(list(table["p_accuracy"][1:])))
    saved = json.loads((out / "sweep.json").read_text())
    assert saved["n_variants"] == 4 and "optimistic" in saved["note"]
    assert saved["variants"][1]["settings"] == {"model": "dual-ridge", "window": 1}
    assert res["varied"] == ["model", "window"]


def _stamps(out):
    return {p.parent.name: p.stat().st_mtime_ns for p in out.glob("*/metrics.json")}


def test_a_finished_sweep_resumes_and_reruns_only_what_changed(sample_copy, tmp_path):
    out = tmp_path / "sweep"
    vary = parse_vary(["model=dual-ridge,lda"])
    sweep(FAST, vary, data=sample_copy, out=out)
    first = _stamps(out)
    assert len(first) == 2
    again = sweep(FAST, vary, data=sample_copy, out=out, resume=True)
    assert [v["status"] for v in again["variants"]] == ["reused", "reused"]
    assert _stamps(out) == first                       # nothing was rewritten
    assert again["variants"][1]["comparison"]["accuracy"]["p"] is not None
    # without --resume every variant runs
    assert [v["status"] for v in sweep(FAST, vary, data=sample_copy, out=out)["variants"]] \
        == ["ran", "ran"]
    # the embedded sample is other data than this copy, whatever the config says
    other_data = sweep(FAST, vary, out=out, resume=True)
    assert [v["status"] for v in other_data["variants"]] == ["ran", "ran"]
    assert sweep(FAST, vary, out=out, resume=True)["variants"][0]["status"] == "reused"
    sweep(FAST, vary, data=sample_copy, out=out)
    # an input file changed since: its runs are not reused
    events = next(sample_copy.glob("sub-1/func/*run-01_events.tsv"))
    events.write_text(events.read_text() + "\n")
    changed = sweep(FAST, vary, data=sample_copy, out=out, resume=True)
    assert [v["status"] for v in changed["variants"]] == ["ran", "ran"]
    # another setting for every variant: not the same runs
    other = sweep({**FAST, "window": 1}, vary, data=sample_copy, out=out, resume=True)
    assert [v["status"] for v in other["variants"]] == ["ran", "ran"]


def test_a_run_from_another_setup_is_rerun_not_reused(sample_copy, tmp_path):
    from pipelines.sweep import _reusable
    out = tmp_path / "sweep"
    vary = parse_vary(["model=dual-ridge,lda"])
    sweep(FAST, vary, data=sample_copy, out=out)
    folder = next(out.glob("01_*"))
    from pipelines import check_config
    config = check_config({**FAST, "model": "dual-ridge"})
    assert _reusable(folder, config, sample_copy) is not None
    metrics = json.loads((folder / "metrics.json").read_text())
    metrics["provenance"]["libraries"]["scikit-learn"] = "1.3.0"
    (folder / "metrics.json").write_text(json.dumps(metrics))
    assert _reusable(folder, config, sample_copy) is None


def test_a_failing_variant_is_recorded_and_the_others_finish(tmp_path):
    out = tmp_path / "sweep"
    res = sweep(FAST, parse_vary(["classes=[[face, house], [face, nosuch]]", "model=dual-ridge,lda"]),
                out=out)
    status = [v["status"] for v in res["variants"]]
    assert status == ["ran", "ran", "failed", "failed"]
    assert "nosuch" in res["variants"][2]["error"] and "fix:" in res["variants"][2]["error"]
    assert res["variants"][2]["comparison_note"] == "not compared: a run failed"
    assert res["variants"][1]["comparison"]["accuracy"]["p"] is not None


def test_an_unexpected_failure_ends_its_variant_only(tmp_path, monkeypatch):
    import pipelines
    real = pipelines.run_config

    def flaky(cfg, **kw):
        if cfg.get("model") == "lda":
            raise ValueError("something unforeseen")
        return real(cfg, **kw)

    monkeypatch.setattr(pipelines, "run_config", flaky)
    res = sweep(FAST, parse_vary(["model=dual-ridge,lda,ridge"]), out=tmp_path / "sweep")
    assert [v["status"] for v in res["variants"]] == ["ran", "failed", "ran"]
    assert res["variants"][1]["error"].startswith("ValueError: something unforeseen — fix:")
    assert (tmp_path / "sweep" / "sweep.tsv").is_file()


def test_places_the_sweep_cannot_write_are_refused_before_anything_runs(tmp_path):
    out = tmp_path / "sweep"
    out.mkdir()
    (out / "02_model-lda").write_text("not a folder")
    with pytest.raises(DataError, match="02_model-lda is a file"):
        sweep(FAST, parse_vary(["model=dual-ridge,lda"]), out=out)
    assert not (out / "01_model-dual-ridge").exists()
    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.json").write_text("{}")
    with pytest.raises(ConfigError, match="inside a run folder"):
        sweep(FAST, parse_vary(["model=dual-ridge,lda"]), out=run / "sweep")


def test_a_bad_variant_is_named_before_anything_runs(tmp_path):
    out = tmp_path / "sweep"
    with pytest.raises(ConfigError, match="variant model=nosuch: unknown model"):
        sweep(FAST, parse_vary(["model=dual-ridge,nosuch"]), out=out)
    assert not out.exists()


def test_a_scheduler_that_does_not_answer_stops_the_sweep_before_any_variant(tmp_path,
                                                                             monkeypatch):
    import decoder.compute as compute
    calls = []

    def unreachable(self, scheduler, timeout=30):
        calls.append(scheduler)
        raise ConfigError(f"cannot reach the Dask scheduler at {scheduler}", "start it")

    monkeypatch.setattr(compute.DaskBackend, "__init__", unreachable)
    out = tmp_path / "sweep"
    cfg = {**FAST, "compute": {"scheduler": "tcp://nowhere:8786"}}
    with pytest.raises(ConfigError, match="cannot reach the Dask scheduler"):
        sweep(cfg, parse_vary(["model=dual-ridge,lda"]), out=out)
    assert calls == ["tcp://nowhere:8786"]          # asked once, not once per variant
    assert not any(out.glob("0*"))
    with pytest.raises(ConfigError, match="variant model=lda: compute.scheduler 'nowhere'"):
        sweep({**FAST, "compute": {"scheduler": "nowhere"}},
              parse_vary(["model=lda,dual-ridge"]), out=out)


def test_variants_that_cannot_be_paired_say_why(tmp_path):
    res = sweep(FAST, parse_vary(["samples=volumes,blocks"]), out=tmp_path / "sweep")
    assert res["variants"][1]["comparison"] is None
    assert res["variants"][1]["comparison_note"] == \
        "not compared with variant 1: they decoded different samples or folds (samples " \
        "volumes → blocks)"


def test_cli_prints_the_table_fails_when_a_variant_failed_and_resumes(tmp_path):
    out = tmp_path / "sweep"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    args = [sys.executable, "-m", "decoder.cli", "sweep", "configs/haxby.yaml", "--out", str(out),
            "--set", "delay=0", "--set", "window=3",
            "--vary", "classes=[[face, house], [face, nosuch]]", "--vary", "model=dual-ridge,lda"]
    for attempt in range(2):
        proc = subprocess.run(args + ["--resume"] * attempt, capture_output=True, text=True,
                              cwd=ROOT, env=env, check=False)
        assert proc.returncode == 1, proc.stderr
        lines = proc.stdout.splitlines()
        assert lines[0].startswith(" 1  classes=face+house, model=dual-ridge: accuracy")
        assert "(reference)" in lines[0]
        assert lines[1].startswith(" 2  classes=face+house, model=lda: accuracy")
        assert "vs 1:" in lines[1] and "(Holm" in lines[1] and "corrected t p=" in lines[1]
        assert lines[2].startswith(" 3  classes=face+nosuch, model=dual-ridge: failed — ")
        assert "nosuch" in lines[2] and "fix:" in lines[2]
        assert "optimistic" in lines[4] and lines[5] == f"sweep written to {out}/sweep.tsv"
        assert lines[6] == f"page of every variant: {out}/sweep.html"
        assert ("[reused]" in lines[0]) == (attempt == 1)
    proc = subprocess.run(args + ["--set", "model=svc"], capture_output=True, text=True,
                          cwd=ROOT, env=env, check=False)
    assert proc.returncode == 2
    assert proc.stderr.strip() == ("decoder: error: model is given both with --set and with "
                                   "--vary — fix: give its values with --vary only")


def test_a_dry_run_plans_every_variant_and_writes_nothing(sample_copy, tmp_path, capsys):
    from decoder.cli import main
    out = tmp_path / "sweep"
    vary = parse_vary(["classes=[[face, house], [face, nosuch]]", "model=dual-ridge,lda"])
    res = sweep(FAST, vary, data=sample_copy, out=out, dry_run=True)
    assert [v["status"] for v in res["variants"]] == ["would run", "would run",
                                                      "would fail", "would fail"]
    assert "nosuch" in res["variants"][2]["error"] and not out.exists()
    assert res["variants"][0]["plan"]["design"]["classes"] == {"face": 144, "house": 144}
    # after a real sweep, --resume --dry-run says which variants would be reused
    sweep(FAST, parse_vary(["model=dual-ridge,lda"]), data=sample_copy, out=out)
    stamps = _stamps(out)
    again = sweep(FAST, parse_vary(["model=dual-ridge,lda,svc"]), data=sample_copy, out=out,
                  resume=True, dry_run=True)
    assert [v["status"] for v in again["variants"]] == ["would be reused", "would be reused",
                                                        "would run"]
    assert _stamps(out) == stamps
    out2 = tmp_path / "sweep2"
    rc = main(["sweep", "configs/haxby.yaml", "--data", str(sample_copy), "--out", str(out2),
               "--set", "classes=face,house", "--vary", "model=dual-ridge,lda", "--dry-run"])
    lines = capsys.readouterr().out.splitlines()
    assert rc == 0 and lines[0] == " 1  model=dual-ridge: would run"
    assert lines[1].startswith("      inputs: 26 files, 26 here")
    assert "      evaluation: 12 folds (one run held out each); samples volumes, model lda, " \
        "cv leave-one-run-out, n_permutations 0, searchlight off" in lines
    assert f"      output: {out2}/02_model-lda" in lines
    assert lines[-1] == "dry run: nothing was got, run or written" and not out2.exists()


def test_a_biomarker_sweep_without_a_data_root_stops_before_any_run(tmp_path):
    with pytest.raises(ConfigError, match="variant model=ridge: no data root"):
        sweep({"task": "biomarker"}, parse_vary(["model=ridge,logistic"]), out=tmp_path / "s")
    assert not (tmp_path / "s").exists()


def test_failed_variants_are_also_said_on_stderr(tmp_path, capsys):
    from decoder.cli import main
    rc = main(["sweep", "configs/haxby.yaml", "--out", str(tmp_path / "s"),
               "--set", "delay=0", "--set", "window=3",
               "--vary", "classes=[[face, house], [face, nosuch]]"])
    err = capsys.readouterr().err.strip()
    assert rc == 1 and err == (f"decoder: error: 1 of 2 variants failed (listed above, and in "
                               f"{tmp_path / 's'}/sweep.tsv)")


def test_a_rerun_in_which_every_variant_fails_keeps_the_earlier_table(tmp_path, capsys):
    from decoder.cli import main
    out = tmp_path / "s"
    common = ["sweep", "configs/haxby.yaml", "--out", str(out), "--set", "delay=0",
              "--set", "window=3", "--vary", "model=dual-ridge,lda"]
    assert main(common) == 0
    table, summary = (out / "sweep.tsv").read_text(), (out / "sweep.json").read_text()
    capsys.readouterr()
    # the same sweep again, with a class the data do not have: every variant fails
    assert main(common + ["--set", "classes=face,nosuch"]) == 1
    err = capsys.readouterr().err.strip()
    assert err == (f"decoder: error: all 2 variants failed (listed above); the earlier "
                   f"{out}/sweep.tsv is kept")
    assert (out / "sweep.tsv").read_text() == table
    assert (out / "sweep.json").read_text() == summary
    assert json.loads((out / "01_model-dual-ridge" / "metrics.json").read_text())["accuracy"]



# ---------------------------------------------------------------------------
# sweep.html: every variant on one page
# ---------------------------------------------------------------------------

def test_the_sweep_page_shows_every_variant_its_tests_and_links_to_its_report(tmp_path):
    import re
    out = tmp_path / "sweep"
    sweep(FAST, parse_vary(["classes=[[face, house], [face, nosuch]]", "model=dual-ridge,lda"]),
          out=out)
    table = pd.read_csv(out / "sweep.tsv", sep="\t")
    page = (out / "sweep.html").read_text()
    # the figure's alt text carries each variant's scores, read from the table
    alt = re.search(r'<img alt="([^"]*)"', page).group(1)
    for _, row in table.iterrows():
        said = (f"variant {row['variant']}: failed" if row["status"] == "failed" else
                f"variant {row['variant']}: accuracy {row['accuracy']:.3f}")
        assert said in alt
    # a finished variant links to its own report, which exists; a failed one shows its error
    links = re.findall(r'<a href="([^"]+)" title="[^"]+">report</a>', page)
    assert links == [f"{f}/report.html" for f in table["folder"][:2]]
    assert all((out / link).is_file() for link in links)
    assert "Failed variants" in page and "nosuch" in page
    # the tests against variant 1 and the warning on choosing by these scores
    p = table["p_accuracy"][1]
    assert f"{p:.3g} ({table['test'][1]})" in page
    assert "optimistic estimate" in page
    # nothing from outside the sweep's folder: no script, the image inlined
    assert "<script" not in page and not re.search(r'src="(?!data:)', page)
    assert not [link for link in links if link.startswith(("/", "http", ".."))]


def test_decoder_report_rewrites_a_sweep_page_and_names_a_damaged_table(tmp_path, capsys):
    from decoder.cli import main
    out = tmp_path / "sweep"
    sweep(FAST, parse_vary(["model=dual-ridge,lda"]), out=out)
    first = (out / "sweep.html").read_text()
    (out / "sweep.html").unlink()
    assert main(["report", str(out)]) == 0
    assert capsys.readouterr().out.strip() == f"sweep page written to {out / 'sweep.html'}"
    assert (out / "sweep.html").read_text() == first
    # a table cut short is named, in one line, and the page already there is kept
    (out / "sweep.tsv").write_text("variant\tmodel\n1\tdual-ridge\n")
    assert main(["report", str(out)]) != 0
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"decoder: error: {out / 'sweep.tsv'}: column accuracy missing")
    assert "\n" not in err and (out / "sweep.html").read_text() == first


def test_a_page_that_cannot_be_drawn_leaves_the_sweep_complete(tmp_path, monkeypatch, caplog):
    import decoder.report._sweep as page

    def broken(*args, **kwargs):
        raise RuntimeError("no figure")

    monkeypatch.setattr(page, "sweep_figure", broken)
    out = tmp_path / "sweep"
    res = sweep(FAST, parse_vary(["model=dual-ridge,lda"]), out=out)
    assert [v["status"] for v in res["variants"]] == ["ran", "ran"]
    assert (out / "sweep.tsv").is_file() and not (out / "sweep.html").exists()
    assert "sweep.html not written" in caplog.text and "decoder report" in caplog.text


def test_the_sweep_page_draws_failed_variants_and_keeps_settings_as_written(tmp_path):
    import base64
    import io
    import re

    from PIL import Image
    out = tmp_path / "sweep"
    sweep(FAST, parse_vary(["dataset.mask=auto,null",
                            "classes=[[face, house], [face, nosuch]]"]), out=out)
    page = (out / "sweep.html").read_text()
    png = base64.b64decode(re.search(r'src="data:image/png;base64,([^"]+)"', page).group(1))
    width, _ = Image.open(io.BytesIO(png)).size
    assert width < 1400                   # "failed" is drawn inside the plot, not far off it
    assert "<td>null</td>" in page and "variant 4 (dataset.mask=null, " in page
    assert "dataset.mask=nan" not in page and "<td>—</td><td>face" not in page
    # category runs have no intervals: none are promised
    assert "95 % CI" not in page


def test_a_damaged_sweep_table_is_a_one_line_error(tmp_path, capsys):
    from decoder.cli import main
    out = tmp_path / "sweep"
    sweep(FAST, parse_vary(["model=dual-ridge,lda"]), out=out)
    good = (out / "sweep.tsv").read_text()
    assert main(["report", str(out / "sweep.json")]) == 0      # its sweep.json names it too
    capsys.readouterr()
    damaged = {"header only": good.splitlines()[0] + "\n",
               "cut mid-row": good[: good.index("\n", good.index("\n") + 1) + 40],
               "edited variant": good.replace("\n1\t", "\none\t", 1)}
    for what, text in damaged.items():
        (out / "sweep.tsv").write_text(text)
        assert main(["report", str(out)]) != 0, what
        err = capsys.readouterr().err.strip()
        assert err.startswith(f"decoder: error: {out / 'sweep.tsv'}: "), (what, err)
        assert "\n" not in err and "report it" not in err, (what, err)


def test_the_sweep_page_reads_every_column_the_sweep_table_writes():
    from decoder.report._sweep import _SCORE_COLUMNS
    from pipelines.sweep import sweep_table
    row = {"variant": 1, "settings": {"model": "lda"}, "metrics": {"accuracy": 0.7},
           "status": "ran", "folder": "/x/01_model-lda"}
    table = sweep_table([row], ["model"])
    assert list(table.columns) == ["variant", "model", *_SCORE_COLUMNS[1:]]
