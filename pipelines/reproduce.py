"""Rerun a finished run from its own record and say whether its results come back.

``decoder reproduce RUN_DIR [--data DIR] [--out DIR] [-J N]`` reads the resolved
config that ``RUN_DIR/metrics.json`` recorded, checks the input files against their
recorded checksums, runs the pipeline again into a new folder (the original is only
read) and compares everything the two runs wrote: every number in ``metrics.json``
and in the tables, the maps and arrays, the inputs, the dataset commit and the library
versions.  ``reproduction.json`` in the new folder holds the comparison.

It needs nothing but the run folder, which makes it the check for a result shared
as files (a paper's supplement, a colleague's results folder); ``datalad rerun``
replays a run recorded in a DataLad dataset.
"""

from __future__ import annotations

import copy
import json
import logging
import math
from pathlib import Path

import numpy as np
import pandas as pd

from decoder import __version__
from decoder._utils import absolute_path, atomic_write_json, sha256_file
from decoder.compute import check_jobs_option
from decoder.config import config_differences, config_hash
from decoder.errors import ConfigError, DataError
from decoder.results import TIMING_FIELDS, check_writable

log = logging.getLogger(__name__)

#: Largest absolute difference between two numbers still counted as the same result.
#: Results written by the same code on the same data agree exactly; a different BLAS
#: or CPU can move the last digits of a float.
TOLERANCE = 1e-9

# where the data lay on the machine that ran it: a location, not a result
_LOCATION_KEYS = {("dataset", "root")}
_MAX_LISTED = 20


# ------------------------------------------------------------------------- the record
def read_record(run_dir) -> dict:
    """``metrics.json`` of a finished run, checked to carry a usable record of its config."""
    run_dir = Path(run_dir)
    path = run_dir / "metrics.json"
    if run_dir.exists() and not run_dir.is_dir():
        raise DataError(f"{run_dir} is a file, not a run folder",
                        "pass the folder 'decoder run' wrote")
    if not run_dir.is_dir():
        raise DataError(f"run folder not found: {run_dir}", "pass the folder 'decoder run' wrote")
    if not path.is_file():
        raise DataError(f"{run_dir}: no metrics.json, so not a finished run",
                        "pass the folder 'decoder run' wrote, after it ended")
    try:
        metrics = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: not valid JSON ({' '.join(str(exc).split())[:80]})",
                        "use the metrics.json the run wrote, unedited") from None
    prov = metrics.get("provenance") if isinstance(metrics, dict) else None
    if not isinstance(prov, dict) or not isinstance(prov.get("config"), dict):
        raise DataError(f"{path}: no provenance.config, so the run cannot be replayed",
                        "rerun it with 'decoder run' (this version records its config)")
    recorded = prov.get("config_sha256")
    if not recorded or recorded != config_hash(prov["config"]):
        what = "has no config hash" if not recorded else \
            "does not match its recorded hash"
        raise DataError(f"{path}: provenance.config {what} (the file was edited)",
                        "use the metrics.json the run wrote")
    inputs = prov.get("inputs")
    if not isinstance(inputs, list) or not all(
            isinstance(r, dict) and isinstance(r.get("path"), str)
            and isinstance(r.get("sha256"), str) for r in inputs):
        raise DataError(f"{path}: provenance.inputs is not a list of files with their "
                        "sha256 (the file was edited)", "use the metrics.json the run wrote")
    return metrics


def default_out(run_dir) -> Path:
    """``RUN_DIR-reproduced`` beside the run folder (``.`` and ``..`` resolved first)."""
    run_dir = Path(run_dir).resolve()
    return run_dir.parent / f"{run_dir.name}-reproduced"


def check_out(out, run_dir) -> None:
    """Refuse an output that is the run folder, or lies inside it, however it is spelt
    (symbolic links, ``..``): the rerun would overwrite the record it is compared with."""
    out, run = Path(out).resolve(), Path(run_dir).resolve()
    if out == run or run in out.parents:
        where = "the run folder itself" if out == run else "inside the run folder"
        raise ConfigError(f"--out {out} is {where}",
                          "write the reproduction elsewhere; the run folder is only read")


def _embedded(recorded: str) -> bool:
    """Whether a recorded root was one of the package's embedded samples."""
    return Path(recorded).parent.name == "_sample"


def data_root(metrics, config, data) -> Path | None:
    """The data root to check and run on: ``--data``; else the recorded root if it exists
    here; else, for a run of an embedded sample, this installation's copy of it; else the
    config's own root.  A recorded root that is not on this machine is an error rather
    than a silent switch to other data."""
    if data:
        root = absolute_path(data)
        if not root.is_dir():
            raise DataError(f"--data {data} is {'a file' if root.exists() else 'not found'}, "
                            "not a folder", "pass the folder the run read its data from")
        return root
    recorded = (metrics.get("dataset") or {}).get("root")
    if recorded and Path(recorded).is_dir():
        return Path(recorded)
    if recorded and _embedded(recorded) and config["task"] == "category":
        from pipelines.category import resolve_root
        return resolve_root({**config, "dataset": {**config["dataset"], "root": None}})
    configured = (config.get("dataset") or {}).get("root")
    if configured and Path(configured).expanduser().is_dir():
        return absolute_path(configured)
    where = recorded or configured or "a folder it did not record"
    raise DataError(f"the run read its data from {where}, which is not on this machine",
                    "pass --data with the data the run used")


def check_inputs(recorded_inputs, root) -> None:
    """Refuse, before any work, input files under ``root`` that are missing or whose
    content is not what the run read (an annexed file of a DataLad dataset whose content
    is not here yet counts as present: the run gets it)."""
    changed, missing = [], []
    for rec in recorded_inputs or []:
        path = Path(rec["path"])
        path = path if path.is_absolute() else root / path
        if path.is_file():
            if sha256_file(path) != rec["sha256"]:
                changed.append(rec["path"])
        elif not path.is_symlink():
            missing.append(rec["path"])
    for found, what in ((missing, "are missing"), (changed, "differ from those the run read")):
        if found:
            raise DataError(f"{len(found)} of {len(recorded_inputs)} input files under {root} "
                            f"{what} (first: {found[0]})",
                            "point --data at the data the run used (the recorded sha256 of "
                            "each file is in provenance.inputs of its metrics.json)")


def check_recorded_files(run_dir, metrics) -> None:
    """Read every table, map and array the run folder lists, before the rerun: a damaged
    record is named now rather than after minutes of work.  Files the folder lists but
    lacks are left to the comparison (a shared folder may leave out a large model)."""
    for name in metrics.get("files") or []:
        path = Path(run_dir) / str(name)
        if not path.is_file():
            continue
        try:
            if path.name.endswith(".tsv"):
                _check_rows(path)
                _read_table(path)
            elif path.name.endswith((".nii.gz", ".nii", ".npz")):
                _load_arrays(path)
        except DataError:
            raise
        except Exception as exc:  # noqa: BLE001 (pandas, nibabel and zlib raise many types)
            raise DataError(f"{path}: the recorded file cannot be read ({type(exc).__name__}: "
                            f"{' '.join(str(exc).split())[:80]})",
                            "restore the run folder as 'decoder run' wrote it") from None


def _check_rows(path) -> None:
    """A table ``decoder run`` wrote ends with a newline and has the header's number of
    fields on every row; a cut-short or hand-edited one does not (pandas would read it,
    filling the missing fields, and the rerun would only then report it as different)."""
    import csv
    import io
    data = Path(path).read_bytes()
    if data and not data.endswith(b"\n"):
        raise DataError(f"{path} is cut short (its last row does not end with a newline)",
                        "restore the run folder as 'decoder run' wrote it")
    # rows end at newlines only (str.splitlines also splits at \x0c, \x85, U+2028, …,
    # which a region or class name may hold); blank lines at the end are not rows
    text = data.decode("utf-8-sig").rstrip("\r\n") + "\n"
    rows = csv.reader(io.StringIO(text, newline=""), delimiter="\t")
    width = None
    for line, row in enumerate(rows, start=1):
        width = len(row) if width is None else width
        if len(row) != width:
            raise DataError(f"{path} line {line}: {len(row)} fields, its header has {width} "
                            "(cut short or edited)",
                            "restore the run folder as 'decoder run' wrote it")


# ------------------------------------------------------------------------- comparison
#: marks a field the recorded run does not have (see :func:`compare_metrics`)
_NEW_FIELD = object()


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _differences(a, b, path=()):
    """``(key path, recorded, reproduced, |difference| or None)`` for every leaf that
    differs by more than :data:`TOLERANCE`; also yields ``(path, None, None, d)`` with
    the difference of numbers that agree within it (for the largest difference)."""
    if path in _LOCATION_KEYS:
        return
    if isinstance(a, dict) and isinstance(b, dict):
        for k in list(a) + [k for k in b if k not in a]:
            if k in TIMING_FIELDS:
                continue
            if k not in a:   # recorded by a later version only: not a result that changed
                yield (*path, k), _NEW_FIELD, b[k], None
            elif k not in b:
                yield (*path, k), a[k], "(absent)", None
            else:
                yield from _differences(a[k], b[k], (*path, k))
    elif isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            yield path, f"{len(a)} items", f"{len(b)} items", None
            return
        for i, (x, y) in enumerate(zip(a, b)):
            yield from _differences(x, y, (*path, i))
    elif _is_number(a) and _is_number(b):
        if math.isnan(a) and math.isnan(b):
            return
        d = abs(float(a) - float(b))
        yield (path, a, b, d) if not d <= TOLERANCE else (path, None, None, d)
    elif a != b:
        yield path, a, b, None


def _key(path) -> str:
    return ".".join(str(p) for p in path) or "(whole file)"


def compare_metrics(a: dict, b: dict) -> dict:
    """Every result in two ``metrics.json`` (provenance, timing and the warnings logged
    while they ran — e.g. about a damaged cache file — left out: they are not results).

    A field the recorded run does not have (written by a later version, e.g. a new record
    of the settings) is listed in ``new_fields``, not counted as a difference: no result of
    the run changed.  A field the reproduction lacks is a difference (a result is missing).
    """
    strip = {"provenance", "warnings"}
    found = list(_differences({k: v for k, v in a.items() if k not in strip},
                              {k: v for k, v in b.items() if k not in strip}))
    new = [_key(f[0]) for f in found if f[1] is _NEW_FIELD]
    real = [f for f in found if (f[1] is not None or f[2] is not None)
            and f[1] is not _NEW_FIELD]
    numeric = [f[3] for f in found if f[3] is not None]
    return {"same": not real, "n_differences": len(real),
            "max_abs_diff": max(numeric, default=0.0),
            "differences": [{"key": _key(p), "recorded": x, "reproduced": y}
                            for p, x, y, _ in real[:_MAX_LISTED]],
            "new_fields": new}


def _read_table(path):
    return pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False)


def compare_table(a_path, b_path) -> dict:
    """Two tab-separated tables: the same rows and columns, numbers within the tolerance,
    everything else equal."""
    a, b = _read_table(a_path), _read_table(b_path)
    if list(a.columns) != list(b.columns):
        return {"same": False, "note": f"columns {list(a.columns)} vs {list(b.columns)}"}
    if len(a) != len(b):
        return {"same": False, "note": f"{len(a)} rows vs {len(b)}"}
    n_rows, max_diff = set(), 0.0
    for col in a.columns:
        x, y = a[col].to_numpy(), b[col].to_numpy()
        xf = pd.to_numeric(a[col], errors="coerce").to_numpy(float)
        yf = pd.to_numeric(b[col], errors="coerce").to_numpy(float)
        numeric = np.isfinite(xf) & np.isfinite(yf)
        d = np.where(numeric, np.abs(xf - yf), 0.0)
        if d.size:
            max_diff = max(max_diff, float(d.max()))
        differs = np.where(numeric, d > TOLERANCE, x != y)
        n_rows.update(np.flatnonzero(differs).tolist())
    first = sorted(n_rows)[:10]  # named by the table's first column (subject, sample)
    return {"same": not n_rows, "rows_differing": len(n_rows), "max_abs_diff": max_diff,
            "first_rows": [str(a.iloc[i, 0]) for i in first]}


def _load_arrays(path) -> dict:
    path = Path(path)
    if path.name.endswith(".npz"):
        with np.load(path) as z:
            return {k: np.asarray(z[k]) for k in z.files}
    import nibabel as nib
    img = nib.load(str(path))
    return {"data": np.asarray(img.dataobj), "affine": img.affine}


def compare_arrays(a_path, b_path) -> dict:
    """Two images (``.nii.gz``) or array archives (``.npz``): the same shapes and values."""
    a, b = _load_arrays(a_path), _load_arrays(b_path)
    if set(a) != set(b) or any(a[k].shape != b[k].shape for k in a):
        return {"same": False, "note": "other arrays or shapes"}
    max_diff = 0.0
    for k in a:
        if a[k].size:
            x, y = a[k].astype(float), b[k].astype(float)
            both = np.isfinite(x) & np.isfinite(y)
            if not np.array_equal(np.isfinite(x), np.isfinite(y)):
                return {"same": False, "note": f"{k}: missing values in other places"}
            max_diff = max(max_diff, float(np.abs(x[both] - y[both]).max(initial=0.0)))
    return {"same": max_diff <= TOLERANCE, "max_abs_diff": max_diff}


def compare_inputs(a: list, b: list) -> dict:
    """The input files of two runs, by path and sha256."""
    ra = {r["path"]: r.get("sha256") for r in a or []}
    rb = {r["path"]: r.get("sha256") for r in b or []}
    changed = sorted(p for p in ra if p in rb and ra[p] != rb[p])
    missing = sorted(set(ra) - set(rb))
    extra = sorted(set(rb) - set(ra))
    return {"n": len(ra), "same": not (changed or missing or extra),
            "changed": changed[:_MAX_LISTED], "missing": missing[:_MAX_LISTED],
            "extra": extra[:_MAX_LISTED], "n_changed": len(changed),
            "n_missing": len(missing), "n_extra": len(extra)}


def compare_environment(a: dict, b: dict) -> dict:
    """Package, Python and library versions (and the torch device) of two runs."""
    def env(p):
        out = {"decoder": p.get("version"), "python": p.get("python"),
               "decoder source": (p.get("source") or {}).get("sha256"),
               **(p.get("libraries") or {})}
        if p.get("accelerator"):
            out["accelerator"] = p["accelerator"]
        return out
    ea, eb = env(a), env(b)
    # what the recorded run did not record (an older version's run) is not a difference
    diff = {k: [ea.get(k), eb.get(k)] for k in sorted(set(ea) | set(eb))
            if ea.get(k) is not None and ea.get(k) != eb.get(k)}
    # both in full, so that the comparison says what each ran with, not only where they part
    return {"same": not diff, "differences": diff, "recorded": ea, "reproduced": eb}


def compare_runs_exactly(recorded_dir, reproduced_dir, recorded=None) -> dict:
    """Everything two run folders hold, compared: see the module docstring.
    ``recorded``: the recorded run's metrics, when :func:`read_record` has read them."""
    recorded_dir, reproduced_dir = Path(recorded_dir), Path(reproduced_dir)
    ma = recorded if recorded is not None else read_record(recorded_dir)
    mb = json.loads((reproduced_dir / "metrics.json").read_text())
    pa, pb = ma["provenance"], mb["provenance"]
    files, not_compared = {}, []
    names = sorted(set(ma.get("files") or []) | set(mb.get("files") or []))
    for name in names:
        fa, fb = recorded_dir / name, reproduced_dir / name
        if not fa.is_file():  # a shared folder may leave out e.g. a large model
            not_compared.append(name)
        elif not fb.is_file():
            files[name] = {"same": False, "note": "the reproduction did not write it"}
        elif name.endswith(".tsv"):
            files[name] = compare_table(fa, fb)
        elif name.endswith((".nii.gz", ".nii", ".npz")):
            files[name] = compare_arrays(fa, fb)
        else:  # binary files (a saved model) differ in their bytes; their numbers are
            continue  # compared through the tables and metrics they wrote
    da, db = pa.get("dataset") or {}, pb.get("dataset") or {}
    dataset = {"same": (da.get("dataset_id"), da.get("commit")) ==
               (db.get("dataset_id"), db.get("commit")),
               "recorded": {k: da.get(k) for k in ("dataset_id", "commit")},
               "reproduced": {k: db.get(k) for k in ("dataset_id", "commit")}}
    metrics = compare_metrics(ma, mb)
    inputs = compare_inputs(pa.get("inputs"), pb.get("inputs"))
    # where it ran (processes, a Dask cluster) does not change results
    config_diff = config_differences(pa["config"], pb["config"])
    # the same results from other inputs are not a reproduction
    same = metrics["same"] and inputs["same"] and all(f["same"] for f in files.values())
    max_diff = max([metrics["max_abs_diff"]] + [f.get("max_abs_diff", 0.0)
                                                for f in files.values()])
    verdict = ("identical" if same and max_diff == 0 else "within-tolerance" if same
               else "differs")
    return {
        "run": str(recorded_dir.resolve()), "reproduction": str(reproduced_dir.resolve()),
        "verdict": verdict, "reproduced": same, "tolerance": TOLERANCE,
        "max_abs_diff": max_diff, "not_compared": not_compared,
        "scores": {k: [ma.get(k), mb.get(k)] for k in ("accuracy", "roc_auc")
                   if ma.get(k) is not None or mb.get(k) is not None},
        "metrics": metrics, "files": files, "inputs": inputs, "config_same": not config_diff,
        "config_differences": config_diff,
        "dataset": dataset,
        "environment": compare_environment(pa, pb),
    }


# ------------------------------------------------------------------------- rerun
def reproduce(run_dir, data=None, out=None, n_jobs=None) -> dict:
    """Rerun ``run_dir`` from its recorded config into ``out`` and compare the two.

    Parameters
    ----------
    run_dir : path
        A folder written by ``decoder run`` (only read).
    data : path, optional
        The data root; default: :func:`data_root` (the recorded root if it exists on
        this machine, or this installation's copy of an embedded sample; otherwise an
        error asks for it).
    out : path, optional
        Folder for the rerun and ``reproduction.json`` (default ``RUN_DIR-reproduced``).
    n_jobs : int, optional
        ``compute.n_jobs`` for the rerun (results do not depend on it).

    Returns
    -------
    dict
        The comparison written to ``reproduction.json`` (``verdict``: ``identical``,
        ``within-tolerance`` or ``differs``).
    """
    from pipelines import check_config, run_config
    run_dir = Path(run_dir)
    metrics = read_record(run_dir)
    out = Path(out) if out is not None else default_out(run_dir)
    check_out(out, run_dir)
    config = copy.deepcopy(metrics["provenance"]["config"])
    if n_jobs is not None:
        check_jobs_option(n_jobs)
        if not isinstance(config.get("compute"), dict):
            raise ConfigError("this run's config has no compute settings, so -J does not apply",
                              "leave -J out")
        config["compute"]["n_jobs"] = n_jobs
    notes = []
    scheduler = (config.get("compute") or {}).get("scheduler")
    if scheduler:  # the recorded cluster is the author's; results do not depend on it
        config["compute"]["scheduler"] = None
        notes.append(f"the recorded Dask scheduler ({scheduler}) is not used: the rerun "
                     "computes locally")
    try:
        check_config(config)
    except ConfigError as err:  # a key this version no longer knows, or a changed choice
        from decoder.results import source_identity
        recorded = metrics["provenance"].get("version")
        source = metrics["provenance"].get("source") or {}
        same_code = (source.get("sha256") == source_identity()["sha256"] if source
                     else recorded == __version__)
        commit = source.get("git_commit")
        fix = ("this code wrote no such config: restore the metrics.json the run wrote"
               if same_code else
               f"rerun it with the code that wrote it (git checkout {commit[:12]})" if commit
               else f"install decoder {recorded} to reproduce it")
        raise ConfigError(f"the run's recorded config does not fit decoder {__version__} "
                          f"(it was written by {recorded}): {err.message}", fix) from None
    root = data_root(metrics, config, data)
    check_inputs(metrics["provenance"]["inputs"], root)
    check_recorded_files(run_dir, metrics)
    check_writable(out)  # all before the run, which can take a while
    # an earlier comparison must not outlive the results it described
    (out / "reproduction.json").unlink(missing_ok=True)
    log.info("rerunning %s on %s into %s", run_dir, root, out)
    run_config(config, data=str(root), out=out, config_path=run_dir / "metrics.json")
    result = compare_runs_exactly(run_dir, out, recorded=metrics)
    result["data"] = str(root)
    result["notes"] = notes
    atomic_write_json(out / "reproduction.json", result)
    return result


def reproduce_cli(args) -> int:
    """``decoder reproduce``: print the verdict; exit 0 when reproduced, 3 when not."""
    res = reproduce(args.run_dir, data=args.data, out=args.out, n_jobs=args.jobs)
    scores = ", ".join(f"{k} {a:.3f} → {b:.3f}" if a != b else f"{k} {a:.3f}"
                       for k, (a, b) in res["scores"].items()
                       if _is_number(a) and _is_number(b))
    m, inputs = res["metrics"], res["inputs"]
    if res["verdict"] == "identical":
        head = "reproduced exactly"
    elif res["verdict"] == "within-tolerance":
        head = f"reproduced within {TOLERANCE:g} (largest difference {res['max_abs_diff']:.2g})"
    else:
        head = "NOT reproduced"
    print(f"{head}: {scores}" if scores else head)
    if not m["same"]:
        shown = "; ".join(f"{d['key']} {d['recorded']} → {d['reproduced']}"
                          for d in m["differences"][:3])
        n = m["n_differences"]
        print(f"metrics.json: {n} {'value differs' if n == 1 else 'values differ'} ({shown})")
    if m.get("new_fields"):
        print(f"metrics.json: {len(m['new_fields'])} field(s) this version records that the run "
              f"did not ({', '.join(m['new_fields'][:3])}{', …' if len(m['new_fields']) > 3 else ''}"
              "): not compared")
    for name, f in res["files"].items():
        if not f["same"]:
            rows = f.get("rows_differing")
            named = ", ".join(f.get("first_rows") or [])
            detail = f.get("note") or (
                (f"{rows} {'row differs' if rows == 1 else 'rows differ'} (first: {named}), "
                 if rows is not None else "") +
                f"largest difference {f.get('max_abs_diff', 0):.3g}")
            print(f"{name}: {detail}")
    for name in res.get("not_compared", []):
        print(f"{name}: not in the recorded run folder, not compared")
    print(f"data: {res['data']}")
    print(f"inputs: {inputs['n']} files, " + ("the same content" if inputs["same"] else
          f"{inputs['n_changed']} changed, {inputs['n_missing']} not read, "
          f"{inputs['n_extra']} new"))
    if not res["dataset"]["same"]:
        print(f"dataset commit: {res['dataset']['recorded']['commit']} → "
              f"{res['dataset']['reproduced']['commit']}")
    env = res["environment"]
    if not env["same"]:
        print("environment differs: " + ", ".join(
            f"{k} {str(a)[:12]} → {str(b)[:12]}" if k == "decoder source" else f"{k} {a} → {b}"
            for k, (a, b) in env["differences"].items()))
    for note in res.get("notes", []):
        print(f"note: {note}")
    print(f"comparison written to {Path(res['reproduction']) / 'reproduction.json'}")
    return 0 if res["reproduced"] else 3
