"""What a run would do, without doing it (``decoder run --dry-run``).

A run can take minutes and, on a DataLad dataset, download gigabytes.  :func:`plan`
resolves the config and finds every input file exactly as the run would (the same
functions of the pipelines), checks the choices that the file names and tables already
decide (subjects, classes, sites, folds), and says what getting the inputs would take —
without reading an image's data or a time series, getting any content or writing
anything. The only files read are the small tables that choose the inputs (the ABIDE
phenotypic table, a participants table, events files, JSON sidecars) and the headers of
the images that are here (their number of volumes, against the events' onsets).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from decoder.config import config_hash
from decoder.data.datalad import DataladInputs
from decoder.errors import DataError
from decoder.results import check_writable

from . import check_config

__all__ = ["format_plan", "plan"]


def _inputs(root, paths) -> dict:
    """Content summary of ``paths`` plus the dataset they come from."""
    dl = DataladInputs(root)
    summary = dl.content_summary(paths)
    dataset = None
    if dl.is_datalad:
        prov = dl.provenance([])
        dataset = {"dataset_id": prov["dataset_id"], "commit": prov["commit"]}
    return {**summary, "dataset": dataset}


def _category_design(config, root, runs) -> dict:
    from decoder.data.bids import read_events, read_tr
    from decoder.features.task import select_classes
    trs, run_tr = [], {}
    for r in runs:
        if np.isfinite(r.tr):
            trs.append(r.tr)
        else:  # read as the run would, where the sidecars (or the image) are here
            try:
                trs.append(read_tr(r.bold, root))
            except DataError:
                if r.bold.exists():
                    raise
                continue
        run_tr[r.events] = trs[-1]
    from pipelines.category import check_high_pass
    check_high_pass(config, trs)
    events = [r.events for r in runs if r.events is not None]
    design = {"subjects": sorted({r.subject for r in runs}), "n_runs": len(runs),
              "tr_s": sorted(set(trs)) or None, "classes": None, "events_to_get": 0}
    here = [e for e in events if e.exists()]  # (an annexed file not got: a dangling link)
    design["events_to_get"] = len(events) - len(here)
    if here:
        # an event past the end of its run stops the run: checked here where the image's
        # header is (its number of volumes; the image's data are never read)
        volumes = {r.events: _n_volumes(r.bold) for r in runs if r.events in here}
        table = pd.concat([read_events(e, volumes.get(e), run_tr.get(e)) for e in here],
                          ignore_index=True)
        classes = select_classes(table, config["classes"])
        counts = table[table["trial_type"].isin(classes)]["trial_type"].value_counts()
        design["classes"] = {c: int(counts.get(c, 0)) for c in classes}
    if config["cv"] == "leave-one-subject-out":
        design["n_folds"] = len(design["subjects"])
        if design["n_folds"] < 2:
            raise DataError("leave-one-subject-out needs at least 2 subjects, found 1",
                            "use cv: leave-one-run-out, or add subjects")
    else:
        design["n_folds"] = len({r.key for r in runs})
    design["fold_unit"] = "subject" if config["cv"] == "leave-one-subject-out" else "run"
    design["settings"] = {k: config[k] for k in ("samples", "model", "cv", "n_permutations")}
    radius = (config.get("searchlight") or {}).get("radius")
    design["settings"]["searchlight"] = f"{radius:g} mm" if radius else "off"
    return design


def _n_volumes(bold) -> int | None:
    """The number of volumes in a 4-D image's header; None when the image is not here
    (an annexed file not got) or its header cannot be read (the run names that)."""
    import nibabel as nib
    try:
        shape = nib.load(str(bold)).shape
    except Exception:  # noqa: BLE001 - a missing or damaged image is the run's to name
        return None
    return int(shape[3]) if len(shape) == 4 else None


def _plan_category(config, data):
    from pipelines.category import find_inputs
    root, runs, _, needed = find_inputs(config, data, fetch=False)
    return root, needed, _category_design(config, root, runs)


def _biomarker_design(config, diagnosis, sites) -> dict:
    from pipelines.biomarker import check_folds, check_two_classes
    diagnosis, sites = np.asarray(diagnosis, dtype=object), np.asarray(sites, dtype=object)
    check_two_classes(diagnosis)
    scheme, splitter, uses_groups = check_folds(config, diagnosis, sites)
    per_site = pd.Series(sites).value_counts()
    n_folds = splitter.get_n_splits(diagnosis, diagnosis, sites if uses_groups else None)
    return {"n_subjects": int(len(diagnosis)),
            "diagnosis": {str(k): int(v) for k, v in
                          pd.Series(diagnosis).value_counts().sort_index().items()},
            "n_sites": int(len(per_site)),
            "smallest_site": [str(per_site.index[-1]), int(per_site.iloc[-1])],
            "single_subject_sites": sorted(str(s) for s in per_site.index[per_site == 1]),
            "n_folds": int(n_folds), "fold_unit": "site" if scheme == "leave-site-out"
            else "fold",
            "settings": {"cv": scheme, "model": config["model"],
                         "kinds": list(config["connectivity"]["kinds"]),
                         "harmonize": config["harmonize"]["method"],
                         "n_permutations": config["n_permutations"]}}


def _plan_biomarker(config, data):
    from pipelines.biomarker import POSITIVE, _data_root, fmriprep_diagnosis, fmriprep_inputs
    ds = config["dataset"]
    root = _data_root(config, data)
    if ds["kind"] == "abide":
        from decoder.data.abide import PHENOTYPIC_FILE, abide_folder, select_abide
        table = root / PHENOTYPIC_FILE
        folder = abide_folder(root, ds["pipeline"], ds["strategy"], ds["derivative"])
        if table.is_symlink() and not table.exists():  # the subjects are chosen from it
            suffix = f"_{ds['derivative']}.1D"
            return root, [table, *sorted(p for p in folder.iterdir()
                                         if p.name.endswith(suffix))], None
        sel = select_abide(root, ds["pipeline"], ds["strategy"], ds["derivative"],
                           sites=ds["sites"], max_subjects=ds["max_subjects"],
                           exclude=ds["exclude"])
        diagnosis = np.where(pd.to_numeric(sel.rows["DX_GROUP"]) == 1, POSITIVE, "control")
        return root, [table, *sel.files], _biomarker_design(config, diagnosis,
                                                             sel.rows["SITE_ID"].astype(str))
    table = root / ds["participants"]
    if table.is_symlink() and not table.exists():
        return root, [table], None
    _, rows, _, read = fmriprep_inputs(config, root, fetch=False)
    rows = pd.DataFrame(rows)
    diagnosis = fmriprep_diagnosis(rows, ds)
    design = _biomarker_design(config, diagnosis, rows[ds["site_column"]].astype(str))
    from decoder.models.model_card import label_codes
    design["class_codes"] = label_codes(ds)   # another label than autism: what codes mean
    return root, [p for p in read if p.is_relative_to(root)], design


def plan(raw: dict, data=None, out=None) -> dict:
    """What ``decoder run`` would do with this config, data and output folder.

    Parameters
    ----------
    raw : dict
        The config as read (``--set`` applied); it is resolved and checked as for a run.
    data : path, optional
        ``--data``.
    out : path, optional
        The output folder.

    Returns
    -------
    dict
        ``task``, ``config_sha256`` (as a run records it), ``data_root``, ``inputs``
        (:meth:`DataladInputs.content_summary` plus ``dataset``: id and commit of a
        DataLad dataset, or None), ``design`` (subjects or runs, classes, folds and the
        main settings; None when the table that chooses the subjects is not here yet),
        ``output`` (``path``, ``holds_run``) and ``scheduler`` (or None).  Problems that
        would stop the run before its inputs are read raise the same one-line errors.
    """
    config = check_config(raw)
    task = config["task"]
    out_info = None
    if out is not None:
        out = check_writable(out)
        out_info = {"path": str(out), "holds_run": (Path(out) / "metrics.json").is_file()}
    if task == "category":
        root, needed, design = _plan_category(config, data)
    else:
        root, needed, design = _plan_biomarker(config, data)
    inputs = _inputs(root, needed)
    if inputs["absent"]:
        raise DataError(f"input file not found: {Path(root) / inputs['absent'][0]}"
                        + (f" ({len(inputs['absent']) - 1} more)" if len(inputs['absent']) > 1
                           else ""), "check --data and the dataset's layout")
    return {"task": task, "config_sha256": config_hash(config), "data_root": str(root),
            "inputs": inputs, "design": design, "output": out_info,
            "scheduler": (config.get("compute") or {}).get("scheduler") or None}


def _size(n) -> str:
    from decoder.data.fetch import human_size
    return "size unknown" if n is None else human_size(n)


def format_plan(p: dict) -> list[str]:
    """The plan as the lines ``decoder run --dry-run`` prints."""
    inp, d = p["inputs"], p["design"]
    lines = [f"task: {p['task']} (config sha256 {p['config_sha256'][:12]})",
             f"data: {p['data_root']}"]
    if inp["dataset"]:
        lines[-1] += (f" (DataLad dataset {inp['dataset']['dataset_id']}, commit "
                      f"{(inp['dataset']['commit'] or '?')[:8]})")
    line = f"inputs: {inp['n_files']} files, {inp['present']} here ({_size(inp['bytes_present'])})"
    if inp["to_get"]:
        line += f", {len(inp['to_get'])} to get ({_size(inp['bytes_to_get'])})"
    lines.append(line)
    if d is None:
        lines.append("subjects: chosen from the table above, which is not here yet; a run "
                     "gets it first")
    elif p["task"] == "category":
        tr = ", ".join(f"{t:g}" for t in d["tr_s"]) + " s" if d["tr_s"] else "in sidecars to get"
        lines.append(f"runs: {d['n_runs']} of {len(d['subjects'])} subject(s) "
                     f"({', '.join('sub-' + s for s in d['subjects'][:6])}"
                     f"{', …' if len(d['subjects']) > 6 else ''}); TR {tr}")
        if d["classes"] is not None:
            lines.append(f"classes: {len(d['classes'])} (" + ", ".join(
                f"{c} {n}" for c, n in d["classes"].items()) + " events)"
                + (f"; {d['events_to_get']} events files not here yet"
                   if d["events_to_get"] else ""))
        else:
            lines.append("classes: in events files not here yet")
    else:
        lines.append(f"subjects: {d['n_subjects']} (" + ", ".join(
            f"{n} {k}" for k, n in d["diagnosis"].items()) + f") from {d['n_sites']} "
            f"site{'s' if d['n_sites'] != 1 else ''} "
            f"(smallest: {d['smallest_site'][0]}, {d['smallest_site'][1]})")
        if d.get("class_codes"):
            lines.append(f"note: the classes are codes: {d['class_codes']}")
        if d["single_subject_sites"]:
            lines.append("note: sites with a single subject (no per-site AUC; ComBat leaves "
                         "them unadjusted): " + ", ".join(d["single_subject_sites"]))
    if d is not None:
        settings = ", ".join(f"{k} {v if not isinstance(v, list) else '+'.join(v)}"
                             for k, v in d["settings"].items())
        lines.append(f"evaluation: {d['n_folds']} folds (one {d['fold_unit']} held out each)"
                     if d["fold_unit"] in ("run", "subject", "site")
                     else f"evaluation: {d['n_folds']} folds")
        lines[-1] += f"; {settings}"
    if p.get("scheduler"):
        lines.append(f"compute: Dask scheduler {p['scheduler']} (not contacted in a dry run)")
    if p["output"]:
        o = p["output"]
        lines.append(f"output: {o['path']}" + (" (holds a run, which this run would replace)"
                                              if o["holds_run"] else ""))
    lines.append("dry run: nothing was got, run or written")
    return lines
