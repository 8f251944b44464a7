"""A saved biomarker model applied to a new cohort: many subjects at once, and, when their
diagnoses are known, its accuracy on them (external validation).

``decoder predict MODEL FILE [FILE ...] --participants TABLE`` calls
:func:`predict_cohort`.  Predicting the subjects of a new site together matters for a
model with ComBat: the site then gets its own location and scale from its subjects'
features (never their labels) — the rule the model's leave-site-out evaluation used
(``harmonize.unseen_site: self``) — whereas one subject alone can get no site
adjustment.

The participants table (TSV or CSV) has one row per subject, identified by a column
``subject`` (or ``participant_id``, ``FILE_ID``).  A file belongs to the row whose
identifier is its name without extension, or the start of its name followed by ``_``
(``Caltech_0051456_rois_ho.1D`` → ``Caltech_0051456``; ``sub-01_task-rest_bold.nii.gz`` →
``sub-01``).  Optional columns, under their BIDS or ABIDE names: ``site`` (``SITE_ID``),
``age`` (``AGE_AT_SCAN``), ``sex`` (``SEX``: male/female, M/F or 1/2), ``mean_fd``
(``func_mean_fd``) and ``diagnosis`` (autism/control, or ABIDE's ``DX_GROUP``: 1 autism,
2 control).  ABIDE's phenotypic CSV can be passed as it is.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import numpy as np
import pandas as pd

from decoder._utils import atomic_write_json, atomic_write_text
from decoder.errors import DataError, missing_file
from decoder.evaluation.metrics import chance_level, cluster_bootstrap_interval
from decoder.results import check_writable
from pipelines.biomarker import (POSITIVE, SEX_CODES, SHIPPED_MODEL, _metrics_from_proba,
                                 _positive_column, calibration_table, check_not_overwriting,
                                 check_site_name, environment_notes, group_scores, input_stem,
                                 load_model, owner_id, per_site_metrics, read_subject_input,
                                 same_content, sex_label, subject_notes, training_sites)

log = logging.getLogger(__name__)

#: column of the participants table → the names it may go by (first found wins)
COLUMNS = {"subject": ("subject", "participant_id", "FILE_ID", "file_id"),
           "site": ("site", "SITE_ID", "site_id"),
           "age": ("age", "AGE_AT_SCAN"),
           "sex": ("sex", "SEX"),
           "mean_fd": ("mean_fd", "func_mean_fd"),
           "diagnosis": ("diagnosis", "DX_GROUP", "dx_group")}
_DIAGNOSIS_WORDS = {"autism": "autism", "asd": "autism", "1": "autism",
                    "control": "control", "td": "control", "tc": "control", "2": "control"}
_ABIDE_MISSING = -9999


def read_participants(path, files=None) -> pd.DataFrame:
    """The participants table, indexed by subject, with the columns named in :data:`COLUMNS`
    (``sex`` as ABIDE's code 1/2, ``diagnosis`` as autism/control; missing values NaN).

    With ``files``, of the identifier columns present the one naming most of the files is
    the subject (ABIDE's table has both ``subject``, a number, and ``FILE_ID``)."""
    path = Path(path)
    if not path.is_file():
        raise missing_file(path, "participants table",
                        "pass a TSV or CSV with one row per subject (a 'subject' column)")
    from decoder._utils import table_file_problem, table_read_problem
    problem = table_file_problem(path)  # a workbook or UTF-16 export, named as such
    if problem:
        raise DataError(f"{path}: {problem[0]}", problem[1])
    sep = _separator(path)
    try:
        # index_col=False: a spreadsheet export that ends every row with a separator must
        # not shift the columns onto the index
        raw = pd.read_csv(path, sep=sep, dtype=str, keep_default_na=True, index_col=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: {table_read_problem(exc)}",
                        "pass a TSV or CSV with a header row") from None
    out = {}
    for name, aliases in COLUMNS.items():
        found = [a for a in aliases if a in raw.columns]
        if name == "subject" and len(found) > 1 and files:
            found.sort(key=lambda a: -_n_matched(files, raw[a]))   # stable: ties keep order
        if found:
            out[name] = raw[found[0]].str.strip()
    if "subject" not in out:
        raise DataError(f"{path}: no subject column", "name the identifier column 'subject' "
                        "(or participant_id, FILE_ID)")
    table = pd.DataFrame(out)
    table = table[table["subject"].notna() & (table["subject"] != "")]
    table = table.set_index("subject")  # repeated ids are an error once a file needs them
    for name, unit, low, high in (("age", "years", 0, 120), ("mean_fd", "mm", 0, np.inf)):
        if name in table:
            number = pd.to_numeric(table[name], errors="coerce")
            values = number.where(number != _ABIDE_MISSING)
            # what --age and --mean-fd refuse is refused here too, naming the subject: read
            # as missing (or used), it would change the prediction without a word
            given = table[name].notna() & (table[name] != "") & (number != _ABIDE_MISSING)
            inside = values.between(low, high, inclusive="neither" if name == "age" else "left")
            bad = given & ~inside
            if bad.any():
                sid = bad.idxmax()
                raise DataError(f"{path}: {name} of '{sid}' is '{table[name][sid]}'",
                                f"write a number of {unit}"
                                + (" above 0 and under 120" if name == "age" else " (0 or more)")
                                + f", or leave it empty (or {_ABIDE_MISSING})")
            table[name] = values
    if "sex" in table:
        codes = []
        for value in table["sex"]:
            label = sex_label(_number(value))
            if label is None and isinstance(value, str) and value:
                raise DataError(f"{path}: sex '{value}' is not understood",
                                "write male/female, M/F or 1/2 (or leave it empty)")
            codes.append(np.nan if label is None else float(SEX_CODES[label]))
        table["sex"] = codes
    if "diagnosis" in table:
        words = []
        for value in table["diagnosis"]:
            word = None if pd.isna(value) else _DIAGNOSIS_WORDS.get(str(value).lower())
            if word is None and not pd.isna(value) and value:
                raise DataError(f"{path}: diagnosis '{value}' is not understood",
                                "write autism/control (or ABIDE's DX_GROUP: 1 autism, "
                                "2 control), or leave it empty")
            words.append(word)
        table["diagnosis"] = words
    return table


def _separator(path) -> str:
    """The table's separator: the one of tab, comma and semicolon its header holds most of
    (a tab-separated table saved as .csv, a European spreadsheet's semicolons), else the
    one its extension says."""
    default = "\t" if path.suffix.lower() in (".tsv", ".txt") else ","
    try:
        with open(path, encoding="utf-8-sig", errors="replace") as fh:
            header = fh.readline()
    except OSError:
        return default
    counts = {sep: header.count(sep) for sep in ("\t", ",", ";")}
    best = max(counts, key=counts.get)
    return best if counts[best] > counts[default] else default


def _number(value):
    """A code typed in a table ('2', '2.0') as a number; words stay words."""
    try:
        return float(value)
    except (TypeError, ValueError):
        return value


def _n_matched(files, column) -> int:
    ids = sorted(column.dropna().astype(str).str.strip(), key=len, reverse=True)
    return sum(owner_id(input_stem(f), ids) is not None for f in files)


def match_subjects(files, table, table_path="the participants table", unmatched=None) -> list:
    """The participants-table row (subject id) of each file, by name (module docstring).

    A file no row matches is an error, or, given a dict ``unmatched``, gets ``None`` and
    its error is put there (file → DataError)."""
    ids = sorted(set(map(str, table.index)), key=len, reverse=True)  # longest first
    out, seen = [], {}
    for f in files:
        stem = input_stem(f)
        sid = owner_id(stem, ids)
        if sid is None:
            hint = (" (or --skip-bad to predict the others without it)"
                    if unmatched is None and len(files) > 1 else "")
            err = DataError(f"{f}: no row of {table_path} matches this file",
                            "add a row whose subject is the start of the file name" + hint)
            if unmatched is None:
                raise err
            unmatched[f] = err
            out.append(None)
            continue
        if (table.index == sid).sum() > 1:
            raise DataError(f"{table_path}: subject '{sid}' (of {f}) has more than one row",
                            "keep one row per subject")
        if sid in seen:
            raise DataError(f"{f} and {seen[sid]} are both subject '{sid}'",
                            "give each subject one file")
        seen[sid] = f
        out.append(sid)
    return out


def predict_cohort(files, model=None, participants=None, site=None, atlas=None,
                   skip_bad=False, refused=None) -> tuple:
    """Probabilities of autism for many subjects, and scores where diagnoses are known.

    Parameters
    ----------
    files : sequence of path
        Time series (.1D/.tsv/.csv) or BOLD NIfTI (with ``atlas``), one per subject.
    model : dict, path or None
        A bundle from :func:`pipelines.biomarker.load_model`, a path, or None for the
        shipped model.
    participants : path, optional
        The participants table (module docstring).  Without it subjects are named
        after their files and have no age, sex or diagnosis.
    site : str, optional
        The site of every subject without one in the table (e.g. a whole new cohort).
    atlas : path, optional
        Labels atlas for NIfTI inputs.
    skip_bad : bool
        A file that cannot be predicted (unreadable, too short, other regions, no usable
        covariance) stops everything by default; with ``skip_bad`` it gets a row with
        its reason in ``error`` and no probability, and the others are predicted and
        scored without it.
    refused : dict, optional
        With ``skip_bad``: files already known not to be predictable (path → DataError,
        e.g. uploads refused as files), kept in the table with the participants' data
        and their reason, and not read.

    Returns
    -------
    table : DataFrame
        One row per subject: ``input``, ``site``, ``p_autism``, ``predicted`` and, where
        known, ``age``, ``sex``, ``diagnosis``; with ``skip_bad``, ``error`` (empty for a
        subject predicted).
    scores : dict or None
        With diagnoses: the model's scores on these subjects (``n``, ``accuracy`` with
        its Wilson ``accuracy_ci95``, ``balanced_accuracy``, ``roc_auc`` with DeLong's
        ``roc_auc_ci95``, ``chance``, ``per_site``, ``site_bootstrap``); subjects
        without a diagnosis are predicted but not scored.
    """
    files = [str(f) for f in files]
    if not files:
        raise DataError("no input files", "pass one time-series file per subject")
    bundle = model if isinstance(model, dict) else load_model(model)
    est = bundle["estimator"]
    for note in environment_notes(bundle):
        log.warning(note)
    refused = {str(k): v for k, v in (refused or {}).items()}
    if participants is not None:
        table = read_participants(participants, files)
        # with skip_bad, a file the table does not name is listed, and the others go on
        unmatched = {} if skip_bad else None
        ids = match_subjects(files, table, str(participants), unmatched)
        keys = [sid if sid is not None else input_stem(f) for sid, f in zip(ids, files)]
        dup = next((k for k in keys if keys.count(k) > 1), None)
        if dup is not None:
            raise DataError(f"two input files are both subject '{dup}'",
                            "give each subject one file")
        if unmatched:   # their rows name the subject by the file, with nothing known
            blank = pd.DataFrame(index=pd.Index(list(keys), name=table.index.name),
                                 columns=table.columns)
            known = [k for k, sid in zip(keys, ids) if sid is not None]
            blank.loc[known] = table.loc[known].to_numpy()
            rows = blank.infer_objects().reset_index()
        else:
            rows = table.loc[ids].reset_index()
        refused.update(unmatched or {})
    else:
        stems = [input_stem(f) for f in files]
        dup = next((s for s in stems if stems.count(s) > 1), None)
        if dup is not None:
            raise DataError(f"two input files are both named '{dup}'",
                            "give each subject one file, or pass --participants")
        rows = pd.DataFrame({"subject": stems})
    rows.insert(1, "input", files)
    if "site" not in rows:
        rows["site"] = np.nan
    if site is not None:
        rows["site"] = rows["site"].fillna(str(site))
    series, errors = _read_series(files, atlas, bundle, skip_bad, refused)
    if skip_bad:
        rows["error"] = [_one_line(errors[f]) if f in errors else "" for f in files]
        if len(errors) == len(files):
            first = next(iter(errors.values()))
            if len(files) == 1:
                raise first
            raise DataError(f"none of the {len(files)} files could be predicted; the first: "
                            f"{first.message}", first.fix)
        ok = np.array([f not in errors for f in files])
        table, rows = rows, rows[ok]   # the index keeps each subject's place
        files = [f for f in files if f not in errors]
        series = [ts for ts in series if ts is not None]
    known_site = rows["site"].notna()
    sites = np.where(known_site, rows["site"].astype(str), "__unknown__")
    covariates = None
    if getattr(est, "harmonize", "none") == "combat":
        trained = training_sites(est)
        for name in set(sites[known_site.to_numpy()]):
            check_site_name(name, trained)
        for name in ("age", "sex"):
            if name not in rows:
                rows[name] = np.nan
        # Sites ComBat adjusts: the training ones, and under the 'self' rule a new site
        # with enough subjects here (estimated from their features, as in the evaluation).
        # Both use each subject's age and sex; unadjusted subjects pass through unchanged,
        # whatever they are given, so placeholders stand in for them (as in predict_subject).
        count = pd.Series(sites).value_counts()
        new_ok = (getattr(est, "unseen_site", "self") == "self") & np.array(
            [s != "__unknown__" and s not in trained and count[s] >= 2 for s in sites])
        adjusted = np.isin(sites, list(trained)) | new_ok
        for name in ("age", "sex"):
            need = adjusted & rows[name].isna().to_numpy()
            if need.any():
                i = int(np.argmax(need))
                how = "new site" if new_ok[i] else "site"
                raise DataError(f"{files[i]}: this model harmonises {how} '{sites[i]}' with "
                                f"ComBat and needs each subject's {name}",
                                f"give {name} in the participants table (or leave the site "
                                "out: no site adjustment)")
        covariates = pd.DataFrame({"age": rows["age"].fillna(0.0).to_numpy(float),
                                   "sex": rows["sex"].fillna(1.0).to_numpy(float)})
        new = sorted(set(sites[new_ok]))
        if new:
            log.info("new site(s) %s: harmonised with their own subjects' features (no labels)",
                     ", ".join(new))
    removed = est.confound_names()
    if "mean_fd" in removed:
        fd = rows["mean_fd"] if "mean_fd" in rows else pd.Series(np.nan, index=rows.index)
        covariates = (pd.DataFrame(index=range(len(rows))) if covariates is None
                      else covariates).assign(mean_fd=fd.to_numpy(float))
    try:
        proba = est.predict_proba(series, sites=sites, covariates=covariates)
    except DataError:  # a check of one subject's series: say whose
        _name_the_subject(files, series, est)
        raise
    p = proba[:, _positive_column(est)]
    rows["p_autism"] = p
    rows["predicted"] = np.where(p > 0.5, POSITIVE, "control")
    rows["in_training"] = _in_training(rows, bundle)
    # what is unusual about each subject's series, as a single prediction would say
    rows["notes"] = ["; ".join(subject_notes(ts, bundle, f)) for f, ts in zip(files, series)]
    if skip_bad and errors:  # the skipped files back in their places, without a probability
        rows = pd.concat([rows, table[~ok]]).loc[table.index]
        log.warning("%d of %d files could not be predicted and are left out of the scores "
                    "(their reasons are in the table's 'error' column)", len(errors),
                    len(rows))
    seen = rows["in_training"] == True  # noqa: E712 (NaN: unknown)
    if seen.any():
        log.info("%d of %d subjects were training subjects of the model: predicted, but "
                 "left out of the scores unless no other subject has a diagnosis",
                 int(seen.sum()), len(rows))
    predicted = rows["p_autism"].notna()
    scores = cohort_scores(rows[~seen & predicted]) if (~seen & predicted).any() else None
    if scores is None:
        scores = cohort_scores(rows[predicted])
        if scores is not None:
            scores["includes_training_subjects"] = True
    if "error" in rows:  # last, beside the notes
        rows = rows[[c for c in rows.columns if c != "error"] + ["error"]]
    if "sex" in rows:  # ABIDE's codes as written (2, not 2.0); missing stays missing
        rows["sex"] = rows["sex"].astype("Int64")
    return rows.set_index("subject"), scores


def _read_series(files, atlas, bundle, skip_bad, refused=None):
    """Each file's time series (None for one that fails, with ``skip_bad``) and the
    failures (file → DataError); ``refused`` files fail with the reason given."""
    series, errors = [], {}
    refused = (refused or {}) if skip_bad else {}   # (keyed as ``files``: str paths)
    for f in files:
        if f in refused:
            errors[f] = refused[f]
            series.append(None)
            continue
        try:
            ts = read_subject_input(f, atlas=atlas, model=bundle)
            if skip_bad:  # what the batch prediction would refuse, known per file here
                _name_the_subject([f], [ts], bundle["estimator"])
        except DataError as err:
            if not skip_bad:
                if len(files) > 1:
                    raise DataError(err.message, f"{err.fix} (or --skip-bad to predict the "
                                    "other subjects without it)") from None
                raise
            errors[f] = err
            ts = None
        series.append(ts)
    return series, errors


def _one_line(err: DataError) -> str:
    return f"{err.message} ({err.fix})" if err.fix else err.message


def _name_the_subject(files, series, est) -> None:
    """Raise the error of the first subject whose series has no usable covariance, with
    its file name (the batch's error does not say which subject it was)."""
    from decoder.features.connectome import subject_covariances
    for f, ts in zip(files, series):
        try:
            subject_covariances([ts], shrinkage=getattr(est, "shrinkage", "ledoit-wolf"))
        except DataError as err:
            raise DataError(f"{f}: {err.message}", err.fix) from None


def _in_training(rows, bundle) -> pd.Series:
    """Whether each subject was one the model was trained on: True/False from the model's
    list of training subjects, or None (unknown) for models saved without it, where a
    subject of a training site may or may not be new (logged)."""
    trained = bundle.get("subjects")
    if trained is not None:  # matched as files are to table rows: the id, or id + '_...'
        trained = sorted(set(map(str, trained)), key=len, reverse=True)
        return pd.Series([owner_id(sid, trained) is not None or same_content(path, bundle)
                          for sid, path in zip(rows["subject"].astype(str), rows["input"])],
                         index=rows.index, dtype=object)
    sites = set(map(str, bundle.get("sites") or ()))
    if sites and rows["site"].astype(str).isin(sites).any():
        log.warning("some subjects come from the model's training sites and the model does "
                    "not list its training subjects: scores of subjects it was trained on "
                    "would be optimistic")
    return pd.Series([None] * len(rows), index=rows.index, dtype=object)


def cohort_scores(rows: pd.DataFrame) -> dict | None:
    """Scores of the subjects of ``rows`` whose diagnosis is known (None when none is)."""
    if "diagnosis" not in rows or rows["diagnosis"].isna().all():
        return None
    rows = rows[rows["diagnosis"].notna()]
    if rows["diagnosis"].nunique() < 2:  # accuracy still means something; AUC does not
        log.warning("the subjects with a diagnosis are all %s: no ROC AUC",
                    rows["diagnosis"].iloc[0])
    diag = rows["diagnosis"].to_numpy(str)
    proba = rows["p_autism"].to_numpy(float)
    sites = rows["site"].fillna("unknown").astype(str).to_numpy()
    positive = diag == POSITIVE
    # are the probabilities right at this site, not only their order? (calibration in the
    # large, the Brier score and the observed rate per bin, as the evaluation records)
    calibration = {"mean_predicted": float(proba.mean()),
                   "observed_rate": float(positive.mean()),
                   "brier": float(np.mean((proba - positive) ** 2)),
                   "bins": calibration_table(diag, proba)}
    return {**group_scores(diag, proba), "chance": chance_level(diag),
            "calibration": calibration,
            "confusion_matrix": _metrics_from_proba(diag, proba)["confusion_matrix"],
            "per_site": per_site_metrics(diag, proba, sites),
            "site_bootstrap": cluster_bootstrap_interval(positive, proba, sites)}


def cohort_cli(args, inputs) -> int:
    """``decoder predict MODEL FILE [FILE ...] [--participants TABLE] [--site S] [--out TSV]``:
    writes the table and a JSON summary beside it, prints the scores when diagnoses are
    known."""
    per_subject = [flag for flag, key in (("--age", "age"), ("--sex", "sex"),
                                          ("--mean-fd", "mean_fd"))
                   if getattr(args, key, None) is not None]
    if per_subject:
        raise DataError(f"{per_subject[0]} applies to one subject, not to a cohort",
                        "give each subject's value in a --participants table")
    out, summary_path = _cohort_outputs(getattr(args, "out", None) or "predictions.tsv")
    check_not_overwriting([out, summary_path], [*inputs, args.model,
                                                getattr(args, "participants", None),
                                                getattr(args, "atlas", None)])
    table, scores = predict_cohort(inputs, args.model, getattr(args, "participants", None),
                                   site=getattr(args, "site", None),
                                   atlas=getattr(args, "atlas", None),
                                   skip_bad=bool(getattr(args, "skip_bad", False)))
    failed = (table.loc[table["error"] != "", ["input", "error"]] if "error" in table
              else table.iloc[:0][["input"]].assign(error=""))
    from decoder import __version__
    from decoder._utils import sha256_file
    summary = {"model": str(args.model),
               "model_sha256": sha256_file(Path(args.model or SHIPPED_MODEL)),
               "decoder_version": __version__,
               "participants": getattr(args, "participants", None),
               "n_subjects": int(len(table)), "n_failed": int(len(failed)),
               "failed": [{"input": str(i), "error": str(e)}
                          for i, e in zip(failed["input"], failed["error"])],
               "n_in_training": int((table["in_training"] == True).sum()),  # noqa: E712
               "n_predicted_autism": int((table["predicted"] == POSITIVE).sum()),
               "table": str(out), "scores": scores}
    text = table.to_csv(sep="," if out.suffix.lower() == ".csv" else "\t")
    # the table first, the summary last and naming the table's content: a summary always
    # describes a complete table, and an interrupted rewrite shows as a mismatch
    summary["table_sha256"] = hashlib.sha256(text.encode("utf-8")).hexdigest()
    atomic_write_text(out, text)
    atomic_write_json(summary_path, summary)
    print(f"{len(table)} subjects: {summary['n_predicted_autism']} predicted {POSITIVE}"
          + (f", {len(failed)} not predicted (--skip-bad)" if len(failed) else ""))
    for i, e in zip(failed["input"], failed["error"]):
        print(f"not predicted: {e}" if str(i) in e else f"not predicted: {i}: {e}")
    if summary["n_in_training"]:
        print(f"{summary['n_in_training']} of them were training subjects of the model"
              + (": their scores are not external" if scores and
                 scores.get("includes_training_subjects") else ", left out of the scores"))
    if scores:
        acc, auc = scores["accuracy_ci95"], scores["roc_auc_ci95"]
        roc = scores.get("roc_auc")
        print(f"on the {scores['n']} with a diagnosis: accuracy {scores['accuracy']:.3f} "
              f"[{acc[0]:.3f}, {acc[1]:.3f}]"
              + (f", roc_auc {roc:.3f} " + (f"[{auc[0]:.3f}, {auc[1]:.3f}]" if auc
                                            else "(no interval)") if roc is not None else "")
              + f" (95% CI; chance {scores['chance']:.3f}; per site, with sites resampled and "
              "per probability bin in the JSON)")
        cal = scores["calibration"]
        print(f"calibration: mean predicted probability {cal['mean_predicted']:.3f}, observed "
              f"autism rate {cal['observed_rate']:.3f}, Brier score {cal['brier']:.3f}")
    print(f"predictions written to {out} (summary: {summary_path})")
    return 0


def _cohort_outputs(out):
    """The table and the JSON summary of ``--out``: ``x.tsv`` (or ``x.csv``, comma-separated)
    with ``x.json`` beside it; ``--out x.json`` names the summary, the table is ``x.tsv``
    (so that neither overwrites the other)."""
    out = check_writable(out, folder=False)
    if out.suffix.lower() == ".json":
        return check_writable(out.with_suffix(".tsv"), folder=False), out
    return out, check_writable(out.with_suffix(".json"), folder=False)
