"""Run every variant of a config and compare each with the first, on the same folds.

``decoder sweep CONFIG --vary KEY=V1,V2 [--vary KEY2=...]`` runs the Cartesian
product of the values given, each variant into its own run folder under the
sweep's folder, then tests each variant against the first (the reference: the
first value of every ``--vary``) with :func:`decoder.evaluation.compare.compare_runs`
— McNemar / DeLong / the corrected resampled t-test for biomarker runs, the
folds as units for category runs — and Holm-adjusts the accuracy p-values over
the variants.  ``sweep.tsv`` and ``sweep.json`` hold the table, ``sweep.html`` shows it
(with a link to each variant's ``report.html``).

Picking the best of several variants on the scores they were evaluated with is
optimistic (the winner's curse; Varoquaux 2018, Cawley & Talbot 2010): the sweep
says so, reports every variant, and leaves the choice to nested cross-validation
or to a choice made before seeing the scores.

With ``--resume``, a variant whose folder already holds a finished run of the same
resolved config, on the same data root and with the input files it recorded
unchanged, is reused rather than rerun, so an interrupted sweep goes on where it
stopped.  Files added to the dataset since are not looked for, and an edited
``metrics.json`` is not detected: without ``--resume`` every variant runs.  A variant
that fails is recorded with its error and the others go on; a rerun in which every
variant fails writes no table, so an earlier sweep's ``sweep.tsv`` and ``sweep.json`` stay.
"""

from __future__ import annotations

import copy
import itertools
import logging
import re
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from decoder.compute import check_jobs_option
from decoder.config import _coerce_scalar, config_differences, set_nested
from decoder.errors import ConfigError, DataError, DecoderError
from decoder.results import atomic_write_json, atomic_write_text, check_writable

log = logging.getLogger(__name__)

MAX_VARIANTS = 256


def parse_vary(items) -> list[tuple[str, list]]:
    """``["model=ridge,logistic", "connectivity.kinds=[[tangent], [tangent, correlation]]"]``
    → ``[("model", ["ridge", "logistic"]), ("connectivity.kinds", [[...], [...]])]``.

    Values are separated by commas; a value that is itself a list needs the YAML list of
    lists form.  Each key may be varied once and takes at least one value.
    """
    out, seen = [], set()
    for item in items or []:
        if "=" not in item:
            raise ConfigError(f"--vary {item!r} is not of the form key=value1,value2",
                              "write e.g. --vary harmonize.method=combat,none")
        key, _, raw = item.partition("=")
        key, raw = key.strip(), raw.strip()
        if not key or not raw:
            raise ConfigError(f"--vary {item!r} has an empty key or no values",
                              "write e.g. --vary harmonize.method=combat,none")
        if key in seen:
            raise ConfigError(f"--vary {key} is given twice",
                              f"list all its values once: --vary {key}=a,b,c")
        seen.add(key)
        if raw.startswith("["):
            values = _coerce_scalar(raw)
            if not isinstance(values, list) or not values:
                raise ConfigError(f"--vary {item!r}: not a list of values",
                                  f"write e.g. --vary '{key}=[[a], [a, b]]'")
        else:
            parts = [v.strip() for v in raw.split(",")]
            if any(not v for v in parts) and any(parts):  # 'a,,b' or 'a,': a value lost
                raise ConfigError(f"--vary {item!r} has an empty value",
                                  "separate the values by single commas, e.g. "
                                  f"--vary {key}=a,b (null for an empty setting)")
            values = [_coerce_scalar(v) for v in parts if v]
        if not values:
            raise ConfigError(f"--vary {item!r} has no values",
                              "write e.g. --vary harmonize.method=combat,none")
        if key == "compute" or key.startswith("compute."):
            raise ConfigError(f"--vary {key}: where a run computes does not change its "
                              "results", "use -J for the number of processes")
        typed = [(type(v).__name__, repr(v)) for v in values]
        dup = [v for i, v in enumerate(values) if typed[i] in typed[:i]]
        if dup:
            raise ConfigError(f"--vary {key}: the value {dup[0]!r} is given twice",
                              "give each value once")
        out.append((key, values))
    if not out:
        raise ConfigError("nothing to vary", "give at least one --vary KEY=V1,V2")
    return out


def variants(vary) -> list[dict]:
    """The Cartesian product of the values: one ``{key: value}`` per variant, the first
    made of every key's first value."""
    keys = [k for k, _ in vary]
    n = 1
    for _, values in vary:
        n *= len(values)
    if n > MAX_VARIANTS:
        raise ConfigError(f"--vary gives {n} variants (more than {MAX_VARIANTS})",
                          "vary fewer keys or values at once")
    combos = itertools.product(*[v for _, v in vary])
    return [dict(zip(keys, c)) for c in combos]


def _text(value) -> str:
    if isinstance(value, list):
        return "+".join(_text(v) for v in value)
    return "null" if value is None else str(value)


def _shown(settings: dict) -> str:
    return ", ".join(f"{k}={_text(v)}" for k, v in settings.items())


def folder_name(index: int, settings: dict, width: int = 2) -> str:
    """``02_harmonize.method-none_model-logistic``: numbered, readable, safe as a name."""
    parts = [f"{k}-{_text(v)}" for k, v in settings.items()]
    name = re.sub(r"[^A-Za-z0-9._+-]+", "-", "_".join(parts))[:80].strip("-")
    return f"{index:0{width}d}_{name}"


def _root_for(config: dict, data) -> Path:
    """The data root a run of ``config`` reads (as the pipeline resolves it)."""
    if config["task"] == "category":
        from pipelines.category import resolve_root
        return resolve_root(config, data)
    from pipelines.biomarker import _data_root
    return _data_root(config, data)


def _reusable(folder: Path, config: dict, data) -> dict | None:
    """The ``metrics.json`` of ``folder`` when it holds a finished run of ``config`` on the
    same, unchanged inputs; otherwise None."""
    from pipelines.reproduce import check_inputs, read_record
    if not (folder / "metrics.json").is_file():
        return None
    try:
        metrics = read_record(folder)
        recorded = metrics["provenance"]["config"]
        if config_differences(recorded, config):
            return None
        root = _root_for(config, data)
        recorded_root = (metrics.get("dataset") or {}).get("root")
        if not recorded_root or Path(recorded_root).resolve() != Path(root).resolve():
            return None
        check_inputs(metrics["provenance"]["inputs"], Path(root))
        if not _same_environment(metrics["provenance"]):
            return None
    except (DecoderError, KeyError, TypeError, OSError):
        return None
    return metrics


def _same_environment(provenance: dict) -> bool:
    """Whether this installation (decoder's version and source, Python, and the library
    versions the run recorded) is the one that wrote a run: a result from another setup
    is rerun, not reused."""
    from decoder.results import current_environment
    from pipelines.reproduce import compare_environment
    now = current_environment(tuple(provenance.get("libraries") or ()))
    recorded = {k: provenance.get(k) for k in ("version", "python", "source", "libraries")}
    return compare_environment(recorded, now)["same"]


def holm(pvalues) -> list:
    """Holm's step-down adjustment (family-wise error) of p-values; None stays None."""
    idx = [i for i, p in enumerate(pvalues) if p is not None and not np.isnan(p)]
    order = sorted(idx, key=lambda i: pvalues[i])
    m, running = len(order), 0.0
    out = [None] * len(pvalues)
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * pvalues[i]))
        out[i] = running
    return out


def _check_schedulers_answer(resolved_configs) -> None:
    """Connect once to each Dask scheduler the variants name, before the first variant runs:
    one that does not answer stops the sweep with its one-line error, rather than failing
    every variant in turn."""
    from decoder.compute import backend_from_config
    seen = set()
    for config in resolved_configs:
        scheduler = (config.get("compute") or {}).get("scheduler")
        if isinstance(scheduler, str) and scheduler.strip() and scheduler not in seen:
            seen.add(scheduler)
            with backend_from_config(config):
                pass


def sweep(raw: dict, vary, data=None, out=None, n_jobs=None, resume=False,
          config_path=None, dry_run=False) -> dict:
    """Run every variant of ``raw`` and compare each with the first.

    Parameters
    ----------
    raw : dict
        The config as read (``--set`` applied).
    vary : list of (key, values)
        From :func:`parse_vary`.
    data : path, optional
        Data root for every variant.
    out : path
        The sweep's folder: one run folder per variant, ``sweep.tsv``, ``sweep.json``.
    n_jobs : int, optional
        ``compute.n_jobs`` of every variant.
    resume : bool
        Reuse variants whose folder already holds a finished run of the same config
        on the same, unchanged inputs (see the module docstring for what is not
        checked).
    dry_run : bool
        Plan every variant (:func:`pipelines.plan.plan`) instead of running it: nothing
        is run, got or written.

    Returns
    -------
    dict
        ``variants`` (settings, folder, status, scores, comparison with the first),
        ``varied`` keys, ``note``.  With ``dry_run``: ``variants`` (settings, folder,
        ``plan`` or ``error``, and ``status``: ``would run``, ``would be reused`` or
        ``would fail``) and ``dry_run``.
    """
    from decoder.evaluation.compare import compare_runs
    from pipelines import check_config, run_config

    out = Path(out)
    settings = variants(vary)
    configs = []
    for s in settings:  # every variant's config is checked before anything runs
        cfg = copy.deepcopy(raw)
        for k, v in s.items():
            set_nested(cfg, k.split("."), copy.deepcopy(v))
        if n_jobs is not None:
            set_nested(cfg, ["compute", "n_jobs"], n_jobs)
        try:
            resolved = check_config(cfg)
            _root_for(resolved, data)  # e.g. no --data for a biomarker run
        except ConfigError as err:
            raise ConfigError(f"variant {_shown(s)}: {err.message}", err.fix) from None
        configs.append((cfg, resolved))
    if len({_config_key(r) for _, r in configs}) < len(configs):
        raise ConfigError("two variants resolve to the same config (a value equal to the "
                          "default written two ways?)", "give each --vary value once")
    for where in [out, *out.parents]:
        if (where / "metrics.json").is_file():
            raise ConfigError(f"--out {out} is {'' if where == out else 'inside '}a run folder "
                              f"({where})", "give the sweep a folder of its own")
    check_writable(out)
    width = max(2, len(str(len(settings))))
    folders = [out / folder_name(i, s, width) for i, s in enumerate(settings, start=1)]
    for folder in folders:
        if folder.exists() and not folder.is_dir():
            raise DataError(f"{folder} is a file, where the sweep writes a run folder",
                            "move it away, or give the sweep another --out")
    if dry_run:
        return _dry_run(settings, configs, folders, data, resume)
    _check_schedulers_answer([resolved for _, resolved in configs])
    rows = []
    for i, (s, (cfg, resolved), folder) in enumerate(zip(settings, configs, folders), start=1):
        row = {"variant": i, "settings": s, "folder": str(folder), "status": None,
               "error": None, "metrics": None}
        shown = _shown(s)
        row["metrics"] = _reusable(folder, resolved, data) if resume else None
        if row["metrics"] is not None:
            row["status"] = "reused"
            log.info("variant %d (%s): reusing %s", i, shown, folder)
        else:
            log.info("variant %d of %d (%s): running into %s", i, len(settings), shown, folder)
            try:
                row["metrics"] = run_config(cfg, data=data, out=folder, config_path=config_path)
                row["status"] = "ran"
            except DecoderError as err:
                row["status"], row["error"] = "failed", str(err)
                log.info("variant %d (%s) failed: %s", i, shown, err)
            except Exception as err:  # noqa: BLE001 - an unexpected failure ends this variant only
                msg = " ".join(str(err).split()) or type(err).__name__
                row["status"] = "failed"
                row["error"] = (f"{type(err).__name__}: {msg} — fix: rerun this variant with "
                                f"'decoder run --debug' for the traceback and report it")
                log.info("variant %d (%s) failed: %s", i, shown, row["error"])
        rows.append(row)
    ref = rows[0]
    for row in rows[1:]:
        row["comparison"] = None
        if ref["status"] == "failed" or row["status"] == "failed":
            row["comparison_note"] = "not compared: a run failed"
            continue
        try:
            row["comparison"] = compare_runs(ref["folder"], row["folder"])
        except DecoderError as err:
            why = err.message.replace(f"{ref['folder']} and {row['folder']}", "they")
            row["comparison_note"] = f"not compared with variant 1: {why}"
    p = [((r.get("comparison") or {}).get("accuracy") or {}).get("p") for r in rows[1:]]
    for row, adj in zip(rows[1:], holm(p)):
        row["p_holm"] = adj
    table = sweep_table(rows, [k for k, _ in vary])
    result = {"varied": [k for k, _ in vary], "n_variants": len(rows),
              "reference": 1,
              "note": selection_note(sum(r["status"] != "failed" for r in rows)),
              "variants": [{k: v for k, v in r.items() if k != "metrics"} |
                           {"folder": Path(r["folder"]).name,
                            "scores": _scores(r["metrics"])} for r in rows],
              "table": "sweep.tsv"}
    result["table_frame"] = table
    if all(r["status"] == "failed" for r in rows) and (out / "sweep.tsv").is_file():
        # a rerun that produced nothing keeps the earlier sweep's table (and its run folders)
        result["kept_earlier"] = True
        return result
    atomic_write_text(out / "sweep.tsv", table.to_csv(sep="\t", index=False))
    atomic_write_json(out / "sweep.json", {k: v for k, v in result.items()
                                           if k != "table_frame"})
    _write_page(out)
    return result


def _write_page(out: Path) -> None:
    """``sweep.html`` beside the table; a figure that cannot be drawn leaves the sweep's
    results complete (and no stale page), as for a run's ``report.html``."""
    from decoder.report._sweep import write_sweep_report
    try:
        write_sweep_report(out)
    except Exception as err:  # noqa: BLE001 - any rendering failure, reported below
        (out / "sweep.html").unlink(missing_ok=True)
        msg = " ".join(str(err).split()) or type(err).__name__
        log.warning("sweep.html not written for %s (%s: %s); the sweep's results are complete "
                    "— fix: run 'decoder report %s' after the cause is mended",
                    out, type(err).__name__, msg, out)


def _dry_run(settings, configs, folders, data, resume) -> dict:
    """Each variant's plan, or the one-line error that would stop it."""
    from pipelines.plan import plan
    rows = []
    for i, (s, (cfg, resolved), folder) in enumerate(zip(settings, configs, folders), start=1):
        row = {"variant": i, "settings": s, "folder": str(folder), "plan": None,
               "error": None}
        if resume and _reusable(folder, resolved, data) is not None:
            row["status"] = "would be reused"
        else:
            try:
                row["plan"] = plan(cfg, data=data, out=folder)
                row["status"] = "would run"
            except DecoderError as err:
                row["status"], row["error"] = "would fail", str(err)
        rows.append(row)
    return {"dry_run": True, "varied": list(settings[0]), "n_variants": len(rows),
            "variants": rows}


def _print_dry_run(res) -> int:
    from pipelines.plan import format_plan
    for row in res["variants"]:
        shown = _shown(row["settings"])
        if row["status"] == "would fail":
            print(f"{row['variant']:>2}  {shown}: would fail — {row['error']}")
            continue
        if row["status"] == "would be reused":
            print(f"{row['variant']:>2}  {shown}: would be reused ({row['folder']})")
            continue
        lines = format_plan(row["plan"])
        # the lines that differ between variants: what is read and how it is evaluated
        kept = [ln for ln in lines if ln.startswith(("inputs:", "subjects:", "runs:",
                                                     "classes:", "evaluation:", "output:"))]
        print(f"{row['variant']:>2}  {shown}: would run")
        for ln in kept:
            print(f"      {ln}")
    print("dry run: nothing was got, run or written")
    return 1 if any(r["status"] == "would fail" for r in res["variants"]) else 0


def _config_key(resolved: dict) -> str:
    from decoder.config import config_hash
    cfg = copy.deepcopy(resolved)
    cfg.pop("compute", None)
    return config_hash(cfg)


def selection_note(n: int) -> str:
    if n < 2:
        return f"{'one variant' if n == 1 else 'no variant'} finished: there was nothing to " \
               "choose between"
    return (f"the best of {n} variants, picked on these scores, is an optimistic estimate "
            f"of its accuracy (the same folds chose it): report every variant, or choose "
            f"inside nested cross-validation or before seeing the scores")


def _scores(metrics) -> dict | None:
    if not metrics:
        return None
    keys = ("accuracy", "accuracy_ci95", "balanced_accuracy", "roc_auc", "roc_auc_ci95",
            "chance", "n_samples", "runtime_s")
    return {k: metrics.get(k) for k in keys}


def sweep_table(rows, keys) -> pd.DataFrame:
    """One row per variant: its settings, scores with intervals, and the paired test
    against the first."""
    records = []
    for r in rows:
        m = r["metrics"] or {}
        comp = r.get("comparison") or {}
        acc = comp.get("accuracy") or {}
        auc = comp.get("roc_auc") or {}
        ct = comp.get("corrected_t") or {}
        ct_acc = (ct.get("accuracy") or {}) if ct.get("available") else {}
        rec = {"variant": r["variant"]}
        rec.update({k: _text(r["settings"][k]) for k in keys})
        ci = m.get("accuracy_ci95") or [None, None]
        aci = m.get("roc_auc_ci95") or [None, None]
        rec.update({
            "accuracy": m.get("accuracy"), "accuracy_lo": ci[0], "accuracy_hi": ci[1],
            "roc_auc": m.get("roc_auc"), "roc_auc_lo": aci[0], "roc_auc_hi": aci[1],
            "diff_accuracy": acc.get("diff"), "p_accuracy": acc.get("p"),
            "p_accuracy_holm": r.get("p_holm"), "test": acc.get("method"),
            "diff_roc_auc": auc.get("diff"), "p_roc_auc": auc.get("p"),
            "p_accuracy_corrected_t": ct_acc.get("p"),
            "status": r["status"], "runtime_s": m.get("runtime_s"),
            "folder": Path(r["folder"]).name,
            "note": r.get("error") or r.get("comparison_note"),
        })
        records.append(rec)
    return pd.DataFrame.from_records(records)


def sweep_cli(args) -> int:
    """``decoder sweep``: run the variants, print the table; exit 1 when one failed."""
    from decoder.config import apply_overrides, load_config
    vary = parse_vary(args.vary)
    both = sorted({item.partition("=")[0].strip() for item in args.set} & {k for k, _ in vary})
    if both:
        raise ConfigError(f"{both[0]} is given both with --set and with --vary",
                          "give its values with --vary only")
    raw = apply_overrides(load_config(args.config), args.set)
    out = Path(args.out) if args.out else Path("results") / f"{Path(args.config).stem}-sweep"
    if args.jobs is not None:
        check_jobs_option(args.jobs)
    res = sweep(raw, vary, data=args.data, out=out, n_jobs=args.jobs, resume=args.resume,
                config_path=args.config, dry_run=getattr(args, "dry_run", False))
    if res.get("dry_run"):
        return _print_dry_run(res)
    table = res["table_frame"]
    keys = res["varied"]

    def ci(lo, hi):
        return f" [{lo:.3f}, {hi:.3f}]" if lo is not None and not pd.isna(lo) else ""

    for _, r in table.iterrows():
        shown = ", ".join(f"{k}={r[k]}" for k in keys)
        if r["status"] == "failed":
            print(f"{r['variant']:>2}  {shown}: failed — {r['note']}")
            continue
        line = f"{r['variant']:>2}  {shown}: accuracy {r['accuracy']:.3f}" + \
            ci(r["accuracy_lo"], r["accuracy_hi"])
        if r["roc_auc"] is not None and not pd.isna(r["roc_auc"]):
            line += f", roc_auc {r['roc_auc']:.3f}" + ci(r["roc_auc_lo"], r["roc_auc_hi"])
        if r["variant"] == 1:
            line += "  (reference)"
        elif r["p_accuracy"] is not None and not pd.isna(r["p_accuracy"]):
            line += (f"  vs 1: {r['diff_accuracy']:+.3f}, p={r['p_accuracy']:.3g} "
                     f"(Holm {r['p_accuracy_holm']:.3g})")
            if r["p_accuracy_corrected_t"] is not None and not pd.isna(
                    r["p_accuracy_corrected_t"]):
                line += f", corrected t p={r['p_accuracy_corrected_t']:.3g}"
            if r["p_roc_auc"] is not None and not pd.isna(r["p_roc_auc"]):
                line += f"; roc_auc {r['diff_roc_auc']:+.3f}, p={r['p_roc_auc']:.3g} (DeLong)"
        elif r["note"]:
            line += f"  ({r['note']})"
        if r["status"] == "reused":
            line += "  [reused]"
        print(line)
    print(f"note: {res['note']}")
    failed = int((table["status"] == "failed").sum())
    if res.get("kept_earlier"):
        print(f"decoder: error: all {len(table)} variants failed (listed above); the earlier "
              f"{out}/sweep.tsv is kept", file=sys.stderr)
        return 1
    print(f"sweep written to {out}/sweep.tsv")
    if (out / "sweep.html").is_file():
        print(f"page of every variant: {out}/sweep.html")
    if failed:  # the reasons are in the table above; the exit status alone is easy to miss
        print(f"decoder: error: {failed} of {len(table)} variants failed (listed above, and in "
              f"{out}/sweep.tsv)", file=sys.stderr)
    return 1 if failed else 0


__all__ = ["folder_name", "holm", "parse_vary", "sweep", "sweep_cli", "variants"]
