"""Bad command-line inputs and config files: one line naming the file and the fix, at once.

A config that is not text, a key written twice, a value YAML reads as a date,
a truncated predictions table, an impossible option or output path: each is
refused with a :class:`~decoder.errors.DecoderError` (exit status 2, one line),
never the catch-all line of an unexpected exception or a silently wrong result.
"""

from __future__ import annotations

import json
import re
from types import SimpleNamespace

import pytest
from test_bad_inputs import BOLD, _assert_one_line_error
from test_compare import _write_biomarker_run

from decoder.cli import main
from decoder.config import config_hash, load_yaml, parse_override
from decoder.data.samples import sample_path
from decoder.errors import ConfigError, DataError
from decoder.evaluation.compare import compare_runs
from pipelines import resolve_config

IDS = ["s1", "s2", "s3", "s4", "s5", "s6"]
DIAGNOSIS = ["autism", "control", "autism", "control", "autism", "control"]


def _fails(capsys, *argv, fragments=()):
    """Run ``decoder ARGV`` in this process; it must stop with a DecoderError's one line."""
    rc = main([str(a) for a in argv])
    err = capsys.readouterr().err
    _assert_one_line_error(SimpleNamespace(returncode=rc, stderr=err), *fragments)
    assert rc == 2, err  # 1 would be the catch-all for an unexpected exception


@pytest.fixture
def two_runs(tmp_path):
    """Two small biomarker run directories on the same subjects."""
    _write_biomarker_run(tmp_path / "a", IDS, DIAGNOSIS, [0.7, 0.2, 0.4, 0.3, 0.8, 0.1])
    _write_biomarker_run(tmp_path / "b", IDS, DIAGNOSIS, [0.6, 0.3, 0.6, 0.4, 0.9, 0.2])
    return tmp_path / "a", tmp_path / "b"


# ---------------------------------------------------------------------------
# config files and --set values
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("content, reason", [
    ("task: category\n".encode("utf-16"), "UTF-16 text"),
    (bytes(range(128, 256)) * 2, "binary data"),
    (b"task: category\n\x00\x01\x02", "control character U+0000"),
])
def test_config_that_is_not_yaml_text_is_named_with_the_reason(tmp_path, content, reason):
    cfg = tmp_path / "config.yaml"
    cfg.write_bytes(content)
    with pytest.raises(ConfigError, match=re.escape(f"{cfg}: not a YAML text file ({reason}")) \
            as err:
        load_yaml(cfg)
    assert "configs/" in str(err.value)


def test_nifti_passed_as_the_config_is_one_line_naming_it(capsys):
    nifti = sample_path() / BOLD
    _fails(capsys, "run", nifti, fragments=[str(nifti), "not a YAML text file",
                                            "gzip-compressed", "fix: pass a config from configs/"])


def test_duplicate_keys_are_refused_naming_the_key_the_lines_and_the_file(tmp_path):
    cfg = tmp_path / "dup.yaml"
    cfg.write_text("task: category\nclasses: [face, house]\nclasses: [cat, house]\n")
    with pytest.raises(ConfigError, match=re.escape(
            f"{cfg}: key 'classes' appears twice (lines 2 and 3)")):
        load_yaml(cfg)
    cfg.write_text("task: category\ndataset:\n  task: objectviewing\n  task: other\n")
    with pytest.raises(ConfigError, match="key 'task' appears twice"):
        load_yaml(cfg)


def test_a_merge_key_may_still_override_what_it_merges(tmp_path):
    cfg = tmp_path / "merge.yaml"
    cfg.write_text("base: &b {delay: 0.0, window: 1}\nother:\n  <<: *b\n  window: 3\n")
    assert load_yaml(cfg)["other"] == {"delay": 0.0, "window": 3}


def test_values_that_look_like_dates_stay_strings(tmp_path):
    assert parse_override("name=2024-01-01") == (["name"], "2024-01-01")
    assert parse_override("name=2024-01-01 10:30:00") == (["name"], "2024-01-01 10:30:00")
    cfg = tmp_path / "dated.yaml"
    cfg.write_text("task: category\nname: 2024-01-01\n")
    config = resolve_config(load_yaml(cfg))
    assert config["name"] == "2024-01-01"
    config_hash(config)  # JSON-serialisable, as metrics.json must be at the end of the run


# ---------------------------------------------------------------------------
# decoder compare
# ---------------------------------------------------------------------------

def test_truncated_predictions_table_is_refused_naming_it(two_runs, capsys):
    a, b = two_runs
    table = b / "predictions.tsv"
    table.write_bytes(table.read_bytes()[:-40])  # head -c -40: the last row cut mid-way
    with pytest.raises(DataError, match=re.escape(f"{table} is truncated")):
        compare_runs(a, b)
    _fails(capsys, "compare", a, b, fragments=[str(table), "truncated", "fix:"])


def test_row_without_a_required_value_is_refused_naming_the_line_and_column(two_runs):
    a, b = two_runs
    table = b / "predictions.tsv"
    lines = table.read_text().splitlines(keepends=True)
    lines[3] = lines[3].replace("\t0.6\t", "\t\t")  # s3's probability, newline intact
    table.write_text("".join(lines))
    with pytest.raises(DataError, match=re.escape(f"{table} line 4: no value for 'p_autism'")):
        compare_runs(a, b)


@pytest.mark.parametrize("n", ["-5", "0"])
def test_compare_refuses_a_non_positive_number_of_permutations(two_runs, capsys, n):
    _fails(capsys, "compare", *two_runs, "--n-permutations", n,
           fragments=[f"--n-permutations {n}", "fix:"])


def test_compare_refuses_a_negative_random_state(two_runs, capsys):
    _fails(capsys, "compare", *two_runs, "--random-state", "-1",
           fragments=["--random-state -1", "fix:"])


def test_compare_output_that_cannot_be_written_fails_before_the_runs_are_read(tmp_path):
    nowhere = tmp_path / "no-such-run"  # read first, it would be the error
    with pytest.raises(DataError, match=re.escape(f"output file {tmp_path} is a folder")):
        compare_runs(nowhere, nowhere, out=tmp_path)
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    with pytest.raises(DataError, match=re.escape(f"cannot write the output file {blocker}")):
        compare_runs(nowhere, nowhere, out=blocker / "cmp.json")


def test_compare_writes_its_output_file(two_runs, tmp_path):
    res = compare_runs(*two_runs, out=tmp_path / "cmp.json")
    assert json.loads((tmp_path / "cmp.json").read_text())["n_paired"] == res["n_paired"] == 6


# ---------------------------------------------------------------------------
# decoder fetch: refused before anything is created or downloaded
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("jobs", ["0", "-3"])
def test_fetch_refuses_a_non_positive_number_of_jobs(tmp_path, capsys, jobs):
    _fails(capsys, "fetch", "haxby-sample", "--to", tmp_path / "d", "-J", jobs,
           fragments=[f"-J/--jobs {jobs}", "fix:"])
    assert not (tmp_path / "d").exists()


def test_fetch_of_an_unknown_subject_names_it_and_those_available(tmp_path, capsys):
    _fails(capsys, "fetch", "haxby-sample", "--to", tmp_path / "d", "--subjects", "99",
           fragments=["subject '99'", "haxby-sample", "one of: 1"])
    assert not (tmp_path / "d").exists()


def test_fetch_to_an_existing_file_is_refused_naming_it(tmp_path, capsys):
    target = tmp_path / "data.txt"
    target.write_text("mine")
    _fails(capsys, "fetch", "haxby-sample", "--to", target,
           fragments=[f"output folder {target} exists and is not a folder", "fix:", "(--to)"])
    _fails(capsys, "fetch", "haxby-sample", "--to", target / "inside",
           fragments=[f"cannot write the output folder {target / 'inside'}", "is a file", "(--to)"])
    assert target.read_text() == "mine"


def test_classes_written_as_one_comma_separated_string_are_a_list():
    import pandas as pd
    from decoder.features.task import select_classes
    blocks = pd.DataFrame({"trial_type": ["face", "house", "cat"]})
    assert select_classes(blocks, "face, house") == ["face", "house"]
    assert select_classes(blocks, ["face", "house"]) == ["face", "house"]


@pytest.mark.parametrize("argv, fragments", [
    (["run", "configs/haxby.yaml", "--outdir", "X"],
     ["decoder run does not take --outdir X", "did you mean --out?",
      "'decoder run --help' lists its options"]),
    (["run", "configs/haxby.yaml", "--date=../data"], ["did you mean --data?"]),
    (["rnu", "configs/haxby.yaml"], ["'rnu' is not a command", "did you mean 'decoder run'?"]),
    (["--data=../data", "run", "configs/haxby.yaml"],
     ["--data=../data: options of decoder run go after the command"]),
    (["--out", "res", "run", "configs/haxby.yaml"],   # not "'res' is not a command"
     ["--out res: options of decoder run go after the command",
      "write decoder run … --out res"]),
    (["--bogus", "res", "run", "configs/haxby.yaml"], ["'res' is not a command"]),
    (["run", "configs/haxby.yaml", "-j", "2"], ["did you mean -J?"]),
    (["predict", "model.skops", "sub.1D", "--age", "twelve"],
     ["argument --age: invalid float value: 'twelve'", "give --age a number"]),
    (["predict"], ["required: model, input", "'decoder predict --help'"]),
    ([], ["no command given", "run, report, predict"]),
])
def test_command_line_mistakes_are_one_line_with_the_fix_not_a_usage_block(capsys, argv,
                                                                            fragments):
    with pytest.raises(SystemExit) as stop:
        main(argv)
    err = capsys.readouterr().err
    _assert_one_line_error(SimpleNamespace(returncode=stop.value.code, stderr=err), *fragments)
    assert stop.value.code == 2 and "usage:" not in err


def test_help_shows_examples_and_exits_cleanly(capsys):
    with pytest.raises(SystemExit) as stop:
        main(["--help"])
    out = capsys.readouterr().out
    assert stop.value.code == 0 and "examples:" in out
    assert "decoder run configs/haxby.yaml" in out and "'decoder COMMAND --help'" in out
