"""Configs: YAML + --set overrides, validated once with helpful one-line errors."""

import pytest

from decoder.config import (apply_overrides, load_config, load_yaml, merge_with_defaults,
                            parse_override)
from decoder.errors import ConfigError
from pipelines import resolve_config


def test_set_parses_lists_numbers_and_nested_keys():
    assert parse_override("classes=face,house") == (["classes"], ["face", "house"])
    assert parse_override("n_permutations=100") == (["n_permutations"], 100)
    assert parse_override("blocks.aggregate=average") == (["blocks", "aggregate"], "average")
    cfg = apply_overrides({"task": "category"}, ["dataset.task=x", "delay=2.5"])
    assert cfg["dataset"]["task"] == "x" and cfg["delay"] == 2.5


def test_typo_in_config_key_is_rejected_with_a_suggestion():
    with pytest.raises(ConfigError, match="unknown config key 'clases'.*did you mean 'classes'"):
        resolve_config({"task": "category", "clases": ["face"]})


def test_typo_in_nested_key_names_the_full_path():
    with pytest.raises(ConfigError, match="dataset.tsk"):
        resolve_config({"task": "category", "dataset": {"tsk": "x"}})


def test_values_are_coerced_to_the_default_type_or_rejected():
    cfg = merge_with_defaults({"n": 3.0, "flag": "false"}, {"n": 1, "flag": True})
    assert cfg == {"n": 3, "flag": False}
    with pytest.raises(ConfigError, match="must be an integer"):
        merge_with_defaults({"n": "many"}, {"n": 1})


def test_required_keys_exist_in_the_category_schema():
    cfg = resolve_config({"task": "category"})
    for key in ("classes", "samples", "n_permutations", "cv", "model", "delay"):
        assert key in cfg


def test_unknown_task_is_a_config_error():
    with pytest.raises(ConfigError, match="unknown task"):
        resolve_config({"task": "astrology"})


def test_exponent_notation_is_a_number_in_set_values_and_config_files(tmp_path):
    assert parse_override("searchlight.alpha=1e-3") == (["searchlight", "alpha"], 0.001)
    assert parse_override("dataset.tr=2.5e0")[1] == 2.5
    assert parse_override("name=1e")[1] == "1e"          # not a number: stays text
    cfg = tmp_path / "c.yaml"
    cfg.write_text("task: category\nsearchlight: {radius: 6, alpha: 5E-1}\nname: 2024-01-01\n")
    raw = load_yaml(cfg)
    assert raw["searchlight"]["alpha"] == 0.5 and raw["name"] == "2024-01-01"


def test_sub_keys_under_a_plain_value_are_one_line():
    with pytest.raises(ConfigError, match=r"config key 'model' takes a value, not sub-keys \(x\)"):
        resolve_config(apply_overrides({"task": "category"}, ["model.x=1"]))


@pytest.mark.parametrize("text, named", [("", "no 'task' key (the file is empty)"),
                                         ("# only a comment\n", "no 'task' key (the file is empty)"),
                                         ("name: x\n", "no 'task' key — fix:")])
def test_a_config_without_a_task_is_named_with_its_file(tmp_path, text, named):
    path = tmp_path / "mine.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert str(err.value).startswith(f"{path}: ") and named in str(err.value)


def test_decoder_report_takes_the_path_of_metrics_json_itself(tmp_path, capsys):
    from decoder.cli import main
    out = tmp_path / "run"
    assert main(["run", "configs/haxby.yaml", "--out", str(out), "--set", "delay=0",
                 "--set", "window=3", "--set", "classes=face,house"]) == 0
    (out / "report.html").unlink()
    assert main(["report", str(out / "metrics.json")]) == 0
    assert (out / "report.html").is_file()


def test_a_config_path_that_is_a_folder_or_absent_says_which(tmp_path):
    with pytest.raises(ConfigError, match=r"is a folder, not a file"):
        load_config(tmp_path)
    with pytest.raises(ConfigError, match=r"config file not found: .*nothere\.yaml"):
        load_config(tmp_path / "nothere.yaml")
