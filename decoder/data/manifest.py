"""``data_manifest.yaml``: the datasets ``decoder fetch`` knows, checked against a schema.

Each entry names where a dataset comes from (``source``), the version it is
pinned to, its licence and citation, its size, and for each pipeline the
files it reads (globs relative to the dataset root, where ``{subject}`` is
replaced by subject labels).  A broken manifest fails on load with one line
naming the manifest, the entry and the key.

The manifest is looked up, in order, at the path given (``--manifest``),
``$DECODER_MANIFEST``, ``./data_manifest.yaml`` and the copy at the root of
the source tree.
"""

from __future__ import annotations

import difflib
import os
import re
from pathlib import Path

import yaml

from ..errors import ConfigError, DataError

__all__ = ["KINDS", "find_manifest", "load_manifest", "validate_manifest", "get_entry",
           "file_patterns", "load_checksums", "embedded_path", "SOURCE_TREE"]

KINDS = ("datalad", "addurls", "embedded")
SOURCE_TREE = Path(__file__).resolve().parents[2]
PACKAGE_DIR = Path(__file__).resolve().parents[1]

_COMMON = {"title": str, "kind": str, "source": str, "version": str, "license": str,
           "citation": str, "size": str, "files": dict}
_OPTIONAL = {"commit": str, "subjects": list, "requires": list, "table": dict,
             "params": dict, "path_pattern": str, "checksums": str}
_BY_KIND = {"addurls": ("table", "path_pattern")}
_TABLE_KEYS = {"path": str, "id_column": str, "subject_column": str, "missing": str}
_REQUIRES = ("aws-credentials",)


def find_manifest(path=None) -> Path:
    """The manifest file to use (see the module docstring for the search order)."""
    candidates = []
    if path:
        p = Path(path).expanduser()
        if not p.is_file():
            raise ConfigError(f"manifest not found: {p}",
                              "pass the path of a data_manifest.yaml with --manifest")
        return p
    env = os.environ.get("DECODER_MANIFEST")
    if env:
        candidates.append(Path(env).expanduser())
    candidates += [Path.cwd() / "data_manifest.yaml", SOURCE_TREE / "data_manifest.yaml"]
    for c in candidates:
        if c.is_file():
            return c
    raise ConfigError("no data_manifest.yaml found (looked in $DECODER_MANIFEST, the current "
                      "folder and the source tree)",
                      "pass one with --manifest PATH")


def _fail(where: str, msg: str, fix: str):
    raise ConfigError(f"{where}: {msg}", fix)


def validate_manifest(data, path="data_manifest.yaml") -> dict:
    """Check a parsed manifest against the schema; return its ``datasets`` mapping.

    Raises
    ------
    ConfigError
        On the first problem, naming the manifest, the dataset and the key.
    """
    where = str(path)
    if not isinstance(data, dict):
        _fail(where, "top level must be a mapping", "start the file with 'datasets:'")
    unknown = set(data) - {"manifest_version", "datasets"}
    if unknown:
        _fail(where, f"unknown top-level key '{sorted(unknown)[0]}'",
              "only 'manifest_version' and 'datasets' are allowed")
    if data.get("manifest_version", 1) != 1:
        _fail(where, f"manifest_version {data.get('manifest_version')!r} is not supported",
              "write 'manifest_version: 1'")
    datasets = data.get("datasets")
    if not isinstance(datasets, dict) or not datasets:
        _fail(where, "'datasets' must be a non-empty mapping of names to entries",
              "add e.g. 'datasets: {ds000105: {...}}'")
    for name, entry in datasets.items():
        w = f"{where}: dataset '{name}'"
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", str(name)):
            _fail(w, "invalid name", "use letters, digits, '-', '_' or '.'")
        if not isinstance(entry, dict):
            _fail(w, "must be a mapping of keys", "write 'key: value' lines under the name")
        for key, typ in _COMMON.items():
            if key not in entry or entry[key] in (None, "", {}, []):
                _fail(w, f"missing key '{key}'",
                      f"every dataset needs: {', '.join(_COMMON)}")
            if key == "version" and isinstance(entry[key], (int, float)):
                entry[key] = str(entry[key])
            if not isinstance(entry[key], typ):
                _fail(w, f"'{key}' must be a {typ.__name__}, got {type(entry[key]).__name__}",
                      f"fix the value of '{key}'")
        for key in entry:
            if key not in _COMMON and key not in _OPTIONAL:
                close = difflib.get_close_matches(key, list(_COMMON) + list(_OPTIONAL), n=1)
                _fail(w, f"unknown key '{key}'",
                      f"did you mean '{close[0]}'?" if close else
                      f"allowed keys: {', '.join(list(_COMMON) + list(_OPTIONAL))}")
            if key in _OPTIONAL and not isinstance(entry[key], _OPTIONAL[key]):
                _fail(w, f"'{key}' must be a {_OPTIONAL[key].__name__}",
                      f"fix the value of '{key}'")
        if entry["kind"] not in KINDS:
            _fail(w, f"kind '{entry['kind']}' is not one of {', '.join(KINDS)}",
                  "set 'kind' to datalad, addurls or embedded")
        for key in _BY_KIND.get(entry["kind"], ()):
            if key not in entry:
                _fail(w, f"missing key '{key}' (required for kind {entry['kind']})",
                      f"add '{key}'")
        if "commit" in entry and not re.fullmatch(r"[0-9a-f]{7,40}", entry["commit"]):
            _fail(w, f"commit {entry['commit']!r} is not a git commit id",
                  "write the 40-character hexadecimal commit")
        for req in entry.get("requires", []):
            if req not in _REQUIRES:
                _fail(w, f"unknown requirement '{req}'", f"use one of: {', '.join(_REQUIRES)}")
        if "table" in entry:
            table = entry["table"]
            for key in ("path", "id_column"):
                if not isinstance(table.get(key), str):
                    _fail(w, f"table.{key} is missing", f"add 'table: {{{key}: ...}}'")
            for key in table:
                if key not in _TABLE_KEYS:
                    _fail(w, f"unknown key 'table.{key}'",
                          f"allowed: {', '.join(_TABLE_KEYS)}")
        for pipeline, globs in entry["files"].items():
            if (not isinstance(globs, list) or not globs
                    or not all(isinstance(g, str) and g for g in globs)):
                _fail(w, f"files.{pipeline} must be a non-empty list of glob patterns",
                      f"write 'files: {{{pipeline}: [\"sub-{{subject}}/func/*_bold.nii.gz\"]}}'")
            for g in globs:
                if g.startswith("/") or ".." in Path(g).parts:
                    _fail(w, f"files.{pipeline}: '{g}' must be relative to the dataset root",
                          "remove the leading '/' or '..'")
                try:
                    g.format(subject="x")
                except (KeyError, IndexError, ValueError):
                    _fail(w, f"files.{pipeline}: '{g}' has a placeholder other than "
                          "{subject}", "use only {subject} in file patterns")
        if "path_pattern" in entry:
            fields = {**entry.get("params", {}), entry["table"]["id_column"]: "x"}
            try:
                entry["path_pattern"].format(**fields)
            except KeyError as exc:
                _fail(w, f"path_pattern uses {{{exc.args[0]}}}, which is neither in 'params' "
                      "nor the table's id_column", "add it to 'params'")
    return datasets


def load_manifest(path=None) -> dict:
    """Load and validate a manifest; returns ``{name: entry}``.

    Each entry gains ``_manifest`` (the manifest path) and ``name``.
    """
    mpath = find_manifest(path)
    try:
        data = yaml.safe_load(mpath.read_text())
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f" (line {mark.line + 1})" if mark is not None else ""
        raise ConfigError(f"{mpath}: not valid YAML{line}",
                          "check indentation and 'key: value' syntax") from None
    datasets = validate_manifest(data, mpath)
    for name, entry in datasets.items():
        entry["name"] = name
        entry["_manifest"] = str(mpath)
    return datasets


def get_entry(name: str, manifest=None) -> dict:
    """One dataset entry by name, with a suggestion for a misspelt name."""
    datasets = load_manifest(manifest)
    if name not in datasets:
        close = difflib.get_close_matches(name, list(datasets), n=1)
        hint = f"did you mean '{close[0]}'?" if close else f"known: {', '.join(datasets)}"
        mpath = next(iter(datasets.values()))["_manifest"]
        raise ConfigError(f"unknown dataset '{name}' (not in {mpath})",
                          hint + " (or give a DataLad dataset URL or path)")
    return datasets[name]


def file_patterns(entry: dict, pipelines=None, subjects=None) -> list[str]:
    """Glob patterns of the files to fetch, ``{subject}`` expanded.

    Parameters
    ----------
    entry : dict
        A manifest entry.
    pipelines : list of str, optional
        Restrict to these pipelines' files (default: all of the entry's).
    subjects : list of str, optional
        Subject labels (``1`` or ``sub-1``); ``None`` means all (``*``).
    """
    files = entry["files"]
    names = list(files) if not pipelines else list(pipelines)
    for n in names:
        if n not in files:
            raise ConfigError(f"dataset '{entry.get('name')}' declares no files for pipeline "
                              f"'{n}'", f"use one of: {', '.join(files)}")
    labels = [str(s).removeprefix("sub-") for s in subjects] if subjects else ["*"]
    out: list[str] = []
    for n in names:
        for g in files[n]:
            for lab in (labels if "{subject}" in g else [None]):
                pat = g.format(subject=lab) if lab is not None else g
                if pat not in out:
                    out.append(pat)
    return out


def load_checksums(entry: dict) -> dict:
    """``{path: (bytes, sha256)}`` from the entry's ``checksums`` file (empty if none)."""
    rel = entry.get("checksums")
    if not rel:
        return {}
    base = Path(entry.get("_manifest", SOURCE_TREE / "data_manifest.yaml")).parent
    path = base / rel
    if not path.is_file():
        raise ConfigError(f"checksum list {path} named by dataset '{entry.get('name')}' "
                          "is missing", "restore it or remove 'checksums' from the manifest")
    out = {}
    lines = path.read_text().splitlines()
    if not lines or lines[0].split("\t") != ["path", "bytes", "sha256"]:
        raise DataError(f"{path}: first line must be the header 'path<TAB>bytes<TAB>sha256'",
                        "regenerate the checksum list")
    for i, line in enumerate(lines[1:], start=2):
        if not line.strip():
            continue
        parts = line.split("\t")
        if len(parts) != 3 or not parts[1].isdigit() or not re.fullmatch(r"[0-9a-f]{64}",
                                                                         parts[2]):
            raise DataError(f"{path} line {i}: expected 'path<TAB>bytes<TAB>sha256'",
                            "regenerate the checksum list")
        out[parts[0]] = (int(parts[1]), parts[2])
    return out


def embedded_path(entry: dict) -> Path:
    """Folder of an ``embedded`` dataset (``source`` relative to the source tree/package)."""
    src = Path(entry["source"])
    for base in (SOURCE_TREE, PACKAGE_DIR.parent):
        if (base / src).is_dir():
            return base / src
    if src.parts[:1] == ("decoder",) and (PACKAGE_DIR / Path(*src.parts[1:])).is_dir():
        return PACKAGE_DIR / Path(*src.parts[1:])
    raise DataError(f"embedded dataset folder {src} not found in the installed package",
                    "reinstall the package (pip install -e .)")
