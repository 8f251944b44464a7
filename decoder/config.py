"""Typed configuration from YAML, with ``--set key=value`` overrides.

A configuration is a nested mapping.  Each pipeline declares its defaults
(``pipelines.<task>.DEFAULTS``); a user config is merged onto them and every
key is validated once, here, so a typo fails before any computation with a
one-line error suggesting the closest known key.
"""

from __future__ import annotations

import copy
import difflib
import re
from pathlib import Path
from typing import Any, Mapping

import yaml

from .errors import ConfigError

__all__ = ["load_yaml", "parse_override", "apply_overrides", "merge_with_defaults",
           "flatten", "config_hash"]


class _DuplicateKey(Exception):
    """A key written twice in one YAML mapping (carries the key and both line numbers)."""

    def __init__(self, key, first: int, second: int):
        super().__init__(key, first, second)
        self.key, self.first, self.second = key, first, second


class _ConfigLoader(yaml.SafeLoader):
    """YAML's safe loader with three changes for configs.

    * A key written twice is an error: plain YAML keeps the last value without a
      word, so an edited copy of a line silently wins over the original.
    * Timestamps stay strings: ``name: 2024-01-01`` would otherwise become a
      ``datetime.date``, which no config key expects and which cannot be written
      to ``metrics.json`` at the end of the run.
    * A number in exponent notation without a decimal point (``1e-3``) is a number,
      as in YAML 1.2, not a string.
    """

    def construct_mapping(self, node, deep=False):
        if isinstance(node, yaml.MappingNode):
            seen = {}
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":  # '<<:' may override keys
                    continue
                key = self.construct_object(key_node, deep=True)
                line = key_node.start_mark.line + 1
                try:
                    if key in seen:
                        raise _DuplicateKey(key, seen[key], line)
                except TypeError:  # an unhashable key: SafeLoader says so itself
                    continue
                seen[key] = line
        return super().construct_mapping(node, deep=deep)


_ConfigLoader.add_constructor("tag:yaml.org,2002:timestamp",
                              yaml.SafeLoader.construct_yaml_str)
# YAML 1.1 reads 1e-3 (an exponent without a decimal point) as a string; 1.2 and every
# user mean a number
_ConfigLoader.add_implicit_resolver("tag:yaml.org,2002:float",
                                    re.compile(r"^[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9_]+)"
                                               r"[eE][-+]?[0-9]+$"),
                                    list("-+.0123456789"))


def _not_text_reason(raw: bytes, exc: UnicodeDecodeError) -> tuple[str, str]:
    """Why bytes that are not UTF-8 are not a config, and what to do (for the error line)."""
    fix = "pass a config from configs/, e.g. configs/haxby.yaml"
    if raw.startswith(b"\x1f\x8b"):
        return "gzip-compressed data, e.g. a .nii.gz image", fix
    if raw.startswith((b"\xff\xfe", b"\xfe\xff")):
        return "UTF-16 text", f"save it as UTF-8, or {fix}"
    return f"binary data or an encoding other than UTF-8 at byte {exc.start}", fix


def load_yaml(path) -> dict:
    """Read a YAML mapping, turning parse errors into a one-line :class:`ConfigError`.

    Duplicate keys are refused and timestamps are kept as strings (see
    :class:`_ConfigLoader`); a file that is not UTF-8 text (a NIfTI image, a
    UTF-16 export) is named as such rather than failing to decode.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config {path} is a folder, not a file" if path.is_dir()
                          else f"config file not found: {path}",
                          "pass the path of a YAML config, e.g. configs/haxby.yaml")
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read the config {path} ({exc.strerror or exc})",
                          "check the file's permissions") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        reason, fix = _not_text_reason(raw, exc)
        raise ConfigError(f"{path}: not a YAML text file ({reason})", fix) from None
    try:
        data = yaml.load(text, Loader=_ConfigLoader) or {}
    except _DuplicateKey as dup:
        raise ConfigError(f"{path}: key '{dup.key}' appears twice (lines {dup.first} and "
                          f"{dup.second})", "keep one of them") from None
    except yaml.reader.ReaderError as exc:  # e.g. NUL bytes: binary data that decodes
        code = ord(exc.character) if isinstance(exc.character, str) else exc.character
        raise ConfigError(f"{path}: not a YAML text file (control character U+{code:04X} "
                          f"at character {exc.position})",
                          "pass a config from configs/, e.g. configs/haxby.yaml") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark is not None else ""
        raise ConfigError(f"{path}: not valid YAML{where}",
                          "check indentation and 'key: value' syntax") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: top level must be a mapping of keys to values",
                          "write the config as 'key: value' lines")
    return data


def load_config(path) -> dict:
    """A run's config file (:func:`load_yaml`), which must name its ``task``: a file
    without one is named here, with its path (later only the key would be)."""
    data = load_yaml(path)
    if "task" not in data:
        raise ConfigError(f"{path}: no 'task' key" + ("" if data else " (the file is empty)"),
                          "add e.g. 'task: category' or 'task: biomarker', or start from a "
                          "config in configs/")
    return data


def _coerce_scalar(text: str):
    """Parse the value of ``--set key=value`` like a config file's value (numbers, bools,
    null, lists; dates stay strings)."""
    try:
        return yaml.load(text, Loader=_ConfigLoader)
    except _DuplicateKey as dup:
        raise ConfigError(f"--set value {text!r}: key '{dup.key}' appears twice",
                          "keep one of them") from None
    except yaml.YAMLError:
        return text


def parse_override(item: str) -> tuple[list[str], Any]:
    """Split ``'a.b=value'`` into ``(['a', 'b'], parsed_value)``.

    A comma-separated value without brackets becomes a list of strings, so
    ``classes=face,house`` gives ``['face', 'house']``.
    """
    if "=" not in item:
        raise ConfigError(f"--set {item!r} is not of the form key=value",
                          "write e.g. --set classes=face,house")
    key, _, raw = item.partition("=")
    key = key.strip()
    if not key:
        raise ConfigError(f"--set {item!r} has an empty key", "write e.g. --set n_permutations=100")
    raw = raw.strip()
    if "," in raw and not raw.startswith(("[", "{", '"', "'")):
        value = [_coerce_scalar(v.strip()) for v in raw.split(",") if v.strip()]
    else:
        value = _coerce_scalar(raw)
    return key.split("."), value


def set_nested(config: dict, keys, value) -> None:
    """Set ``config[k1][k2]...[kn] = value`` in place, making the sections on the way."""
    node = config
    for k in keys[:-1]:
        if not isinstance(node.get(k), dict):
            node[k] = {}
        node = node[k]
    node[keys[-1]] = value


def apply_overrides(config: dict, overrides) -> dict:
    """Return a copy of ``config`` with ``--set`` overrides applied (keys checked later)."""
    config = copy.deepcopy(config)
    for item in overrides or []:
        set_nested(config, *parse_override(item))
    return config


def _unknown_key(key: str, known, where: str):
    close = difflib.get_close_matches(key, list(known), n=1, cutoff=0.6)
    hint = f"did you mean '{close[0]}'?" if close else f"known keys: {', '.join(sorted(known))}"
    raise ConfigError(f"unknown config key '{where}{key}'", hint)


def _coerce_like(value, default, name: str):
    """Coerce ``value`` to the type of ``default`` where that is unambiguous."""
    if default is None or value is None:
        return value
    if isinstance(default, bool):
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in {"true", "false", "yes", "no", "1", "0"}:
            return value.lower() in {"true", "yes", "1"}
        raise ConfigError(f"config key '{name}' must be true or false, got {value!r}",
                          f"write --set {name}=true or {name}=false")
    if isinstance(default, int) and not isinstance(default, bool):
        if isinstance(value, bool):
            raise ConfigError(f"config key '{name}' must be an integer, got {value!r}",
                              f"write e.g. --set {name}={default}")
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise ConfigError(f"config key '{name}' must be an integer, got {value!r}",
                          f"write e.g. --set {name}={default}")
    if isinstance(default, float):
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):  # e.g. 'auto' is validated by the pipeline
            return value
        raise ConfigError(f"config key '{name}' must be a number, got {value!r}",
                          f"write e.g. --set {name}={default}")
    return value


def _text_value(value) -> str:
    if isinstance(value, (list, tuple)):
        return ",".join(map(str, value))
    return str(value).lower() if isinstance(value, bool) else str(value)


def merge_with_defaults(user: Mapping, defaults: Mapping, _prefix: str = "") -> dict:
    """Merge ``user`` onto ``defaults``, rejecting unknown keys.

    Nested mappings in ``defaults`` are merged recursively; a default whose
    value is a mapping marked with the key ``"*"`` accepts any sub-keys.
    """
    out = copy.deepcopy(dict(defaults))
    out.pop("*", None)
    for key, value in (user or {}).items():
        if key not in defaults:
            if "*" in defaults:
                out[key] = value
                continue
            _unknown_key(key, [k for k in defaults if k != "*"], _prefix)
        default = defaults[key]
        name = f"{_prefix}{key}"
        if isinstance(default, Mapping):
            if value is None:
                continue
            if not isinstance(value, Mapping):
                raise ConfigError(f"config key '{name}' must be a mapping of sub-keys",
                                  f"write '{name}.<key>: value'; known sub-keys: "
                                  f"{', '.join(k for k in default if k != '*')}")
            out[key] = merge_with_defaults(value, default, _prefix=f"{name}.")
        elif isinstance(value, Mapping) and default is not None:
            raise ConfigError(f"config key '{name}' takes a value, not sub-keys "
                              f"({', '.join(map(str, value))})",
                              f"write e.g. --set {name}={_text_value(default)}")
        else:
            out[key] = _coerce_like(value, default, name)
    return out


def flatten(config: Mapping, prefix: str = "") -> dict:
    """Flatten a nested config to ``{'a.b': value}``."""
    flat = {}
    for k, v in config.items():
        if isinstance(v, Mapping):
            flat.update(flatten(v, f"{prefix}{k}."))
        else:
            flat[f"{prefix}{k}"] = v
    return flat


#: the most permutations a run accepts: p-values down to 1e-5, in hours rather than years
MAX_PERMUTATIONS = 100_000


def check_run_numbers(config: Mapping) -> None:
    """``random_state`` and ``n_permutations``, checked alike for every pipeline.

    A seed must be a whole number from 0 to 2**32 - 1 (what numpy and scikit-learn
    accept); a permutation count a whole number from 0 to :data:`MAX_PERMUTATIONS`.
    """
    from .errors import ConfigError
    seed = config.get("random_state")
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2 ** 32:
        raise ConfigError(f"random_state must be a whole number from 0 to 4294967295, got "
                          f"{seed!r}", "write e.g. --set random_state=0")
    n = config.get("n_permutations")
    if isinstance(n, bool) or not isinstance(n, int) or not 0 <= n <= MAX_PERMUTATIONS:
        raise ConfigError(f"n_permutations must be a whole number from 0 to "
                          f"{MAX_PERMUTATIONS:,}, got {n!r}",
                          "write e.g. --set n_permutations=1000 (the smallest p-value is "
                          "1/(n + 1))")


def config_hash(config: Mapping) -> str:
    """Content hash of a resolved config (sorted-key JSON, SHA-256)."""
    from ._utils import stable_hash
    return stable_hash(config)


def config_differences(a: Mapping, b: Mapping, skip=("compute",)) -> list[dict]:
    """The settings two resolved configs differ in: ``[{"key": "harmonize.method", "a":
    "combat", "b": "none"}, ...]`` (dotted keys, lists compared whole; ``skip``: sections
    that do not change results, such as where it ran)."""
    out = []

    def walk(x, y, prefix):
        for k in list(x) + [k for k in y if k not in x]:
            if not prefix and k in skip:
                continue
            key = f"{prefix}{k}"
            vx, vy = x.get(k, "(absent)"), y.get(k, "(absent)")
            if isinstance(vx, Mapping) and isinstance(vy, Mapping):
                walk(vx, vy, f"{key}.")
            elif vx != vy:
                out.append({"key": key, "a": vx, "b": vy})

    walk(a or {}, b or {}, "")
    return out


def differences_text(diffs, limit: int = 6, value=str) -> str:
    """:func:`config_differences` as a sentence: ``harmonize.method combat → none; …``,
    at most ``limit`` of them and then how many more; ``value`` writes each setting."""
    text = "; ".join(f"{d['key']} {value(d['a'])} → {value(d['b'])}" for d in diffs[:limit])
    return text + (f"; and {len(diffs) - limit} more" if len(diffs) > limit else "")
