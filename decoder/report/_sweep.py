"""``sweep.html``: one page for every variant of a ``decoder sweep``.

The sweep's own table (``sweep.tsv``: each variant's scores with their intervals and its
paired tests against the first) drawn as a forest plot and a table, with the warning on
choosing a variant by these scores, and a link to each variant's ``report.html`` in its
folder. Like ``report.html`` it has no scripts and nothing from outside the sweep's
folder: the figure is inlined.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from .._utils import atomic_write_text
from ..errors import DataError

#: the columns ``pipelines.sweep.sweep_table`` writes besides the varied keys
_SCORE_COLUMNS = ("variant", "accuracy", "accuracy_lo", "accuracy_hi", "roc_auc",
                  "roc_auc_lo", "roc_auc_hi", "diff_accuracy", "p_accuracy",
                  "p_accuracy_holm", "test", "diff_roc_auc", "p_roc_auc",
                  "p_accuracy_corrected_t", "status", "runtime_s", "folder", "note")


def load_sweep(folder) -> tuple[dict, pd.DataFrame]:
    """A sweep folder's ``sweep.json`` and ``sweep.tsv``; either missing or damaged is a
    one-line error naming it."""
    folder = Path(folder).expanduser()
    summary_file, table_file = folder / "sweep.json", folder / "sweep.tsv"
    fix = "pass a folder written by 'decoder sweep', or run the sweep again"
    if not summary_file.is_file() or not table_file.is_file():
        missing = summary_file if not summary_file.is_file() else table_file
        raise DataError(f"{folder}: no {missing.name} (not a sweep folder, or the sweep did "
                        "not finish)", fix)
    def read(path, how):
        try:
            return how(path)
        except (ValueError, OSError, UnicodeDecodeError) as exc:
            raise DataError(f"{path}: unreadable ({type(exc).__name__})", fix) from None

    summary = read(summary_file, lambda p: json.loads(p.read_text()))
    # settings as written ('null' stays 'null'); the score columns as numbers below
    table = read(table_file, lambda p: pd.read_csv(p, sep="\t", dtype=str,
                                                   keep_default_na=False))
    varied = summary.get("varied") if isinstance(summary, dict) else None
    missing_cols = [c for c in (*_SCORE_COLUMNS, *(varied or [])) if c not in table.columns]
    if not isinstance(varied, list) or missing_cols:
        what = f"column {missing_cols[0]}" if missing_cols else "the varied keys"
        raise DataError(f"{table_file if missing_cols else summary_file}: {what} missing", fix)
    listed = summary.get("variants") if isinstance(summary.get("variants"), list) else []
    expected = [str(i) for i in range(1, len(listed) + 1)]
    if table.empty or table["variant"].tolist() != expected:
        raise DataError(f"{table_file}: its rows are not the variants 1 to {len(listed)} that "
                        f"{summary_file.name} lists (cut short or edited?)", fix)
    bad = table[~table["status"].isin(["ran", "reused", "failed"])]
    if not bad.empty:
        raise DataError(f"{table_file}: variant {bad['variant'].iloc[0]} has status "
                        f"'{bad['status'].iloc[0]}' (ran, reused or failed expected)", fix)
    numeric = [c for c in _SCORE_COLUMNS if c not in ("test", "status", "folder", "note")]
    for col in numeric:
        values = pd.to_numeric(table[col].replace("", None), errors="coerce")
        if (values.isna() & (table[col] != "")).any():
            raise DataError(f"{table_file}: column {col} holds a value that is not a number",
                            fix)
        table[col] = values
    table["variant"] = table["variant"].astype(int)
    for col in ("test", "note"):
        table[col] = table[col].replace("", None)
    return summary, table


def _num(v):
    return None if v is None or pd.isna(v) else float(v)


def _settings(row, varied) -> str:
    return ", ".join(f"{k}={row[k]}" for k in varied)


def _label(row, varied) -> str:
    return f"{int(row['variant'])}  {_settings(row, varied)}"


def _interval(row, key) -> str:
    v, lo, hi = _num(row[key]), _num(row[f"{key}_lo"]), _num(row[f"{key}_hi"])
    if v is None:
        return "—"
    return f"{v:.3f}" + (f" [{lo:.3f}, {hi:.3f}]" if lo is not None and hi is not None else "")


def _has_intervals(table) -> bool:
    return bool(table[["accuracy_lo", "roc_auc_lo"]].notna().to_numpy().any())


def sweep_figure(table: pd.DataFrame, varied):
    """Each variant's accuracy and ROC AUC with their 95 % intervals (a forest plot); the
    reference's accuracy as a line. Failed variants are named, not drawn."""
    from matplotlib.figure import Figure
    rows = list(table.iterrows())
    fig = Figure(figsize=(7.5, 0.45 * len(rows) + 1.4))
    ax = fig.add_subplot()
    y = np.arange(len(rows))[::-1]
    for yi, (_, r) in zip(y, rows):
        if r["status"] == "failed":
            ax.text(0.5, yi, "failed", ha="center", va="center", fontsize=8, color="crimson",
                    transform=ax.get_yaxis_transform())   # x in axes units: any score range
            continue
        for key, dy, style in (("accuracy", 0.12, dict(marker="o", color="#4c72b0")),
                               ("roc_auc", -0.12, dict(marker="s", color="#dd8452",
                                                       mfc="white"))):
            v = _num(r[key])
            if v is None:
                continue
            lo, hi = _num(r[f"{key}_lo"]), _num(r[f"{key}_hi"])
            err = None if lo is None or hi is None else [[v - lo], [hi - v]]
            ax.errorbar([v], [yi + dy], xerr=err, capsize=3, lw=1, ls="none", **style)
    ref = table.iloc[0]
    if ref["status"] != "failed" and _num(ref["accuracy"]) is not None:
        ax.axvline(float(ref["accuracy"]), color="#4c72b0", ls=":", lw=1)
    ci = " [95 % CI]" if _has_intervals(table) else ""   # category runs have none
    ax.plot([], [], "o", color="#4c72b0", label=f"accuracy{ci}")
    ax.plot([], [], "s", color="#dd8452", mfc="white", label=f"ROC AUC{ci}")
    ax.set_yticks(y, [_label(r, varied) for _, r in rows], fontsize=8)
    # the scores' own range (not 0–1), so that intervals a few hundredths apart are seen apart
    ends = [_num(r[c]) for _, r in rows if r["status"] != "failed"
            for c in ("accuracy", "accuracy_lo", "accuracy_hi", "roc_auc", "roc_auc_lo",
                      "roc_auc_hi")]
    ends = [e for e in ends if e is not None]
    lo, hi = (min(ends), max(ends)) if ends else (0.0, 1.0)
    pad = max(0.02, 0.1 * (hi - lo))
    ax.set_xlim(max(0.0, lo - pad), min(1.02, hi + pad))
    ax.set_ylim(-0.7, len(rows) - 0.3)
    ax.set_xlabel("held-out score (dotted: the reference's accuracy)")
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))   # off the markers
    ax.set_title("Every variant of the sweep", fontsize=10)
    return fig


def _p_cell(v) -> str:
    v = _num(v)
    return f'<td class="num">{"—" if v is None else f"{v:.3g}"}</td>'


def _table_html(table: pd.DataFrame, varied, folder: Path) -> str:
    from ._html import _cell, esc
    ci = " [95 % CI]" if _has_intervals(table) else ""
    heads = ["variant", *varied, "status", f"accuracy{ci}", f"ROC AUC{ci}",
             "Δ accuracy vs 1", "p (test)", "p Holm", "p corrected t", "Δ ROC AUC vs 1",
             "p DeLong", "note", "report"]
    out = []
    for _, r in table.iterrows():
        cells = [_cell(int(r["variant"]))] + [_cell(r[k]) for k in varied] + [_cell(r["status"])]
        cells += [f'<td class="num">{esc(_interval(r, k))}</td>' for k in ("accuracy",
                                                                           "roc_auc")]
        test = r["test"] if isinstance(r["test"], str) else ""
        p = _num(r["p_accuracy"])
        cells += [_cell(_num(r["diff_accuracy"])),
                  f'<td class="num">{"—" if p is None else f"{p:.3g}"}'
                  f'{f" ({esc(test)})" if test and p is not None else ""}</td>']
        cells += [_p_cell(r[k]) for k in ("p_accuracy_holm", "p_accuracy_corrected_t")]
        cells += [_cell(_num(r["diff_roc_auc"])), _p_cell(r["p_roc_auc"]),
                  _cell(r["note"] if isinstance(r["note"], str) else None)]
        name = str(r["folder"])
        report = folder / name / "report.html"
        cells.append(f'<td><a href="{esc(name)}/report.html" title="{esc(name)}">report</a>'
                     "</td>" if report.is_file() and r["status"] != "failed" else
                     f"<td>{esc(name)}</td>")
        out.append("<tr>" + "".join(cells) + "</tr>")
    head = "".join(f"<th>{esc(h)}</th>" for h in heads)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(out)}</tbody></table>"


def render_sweep_report(folder) -> str:
    """The sweep folder's page as one HTML string."""
    from . import _html, figures
    folder = Path(folder).expanduser()
    summary, table = load_sweep(folder)
    varied = summary["varied"]
    status = table["status"].value_counts().to_dict()
    alt = "; ".join(f"variant {int(r['variant'])}: " + (
        "failed" if r["status"] == "failed" else
        f"accuracy {_interval(r, 'accuracy')}, ROC AUC {_interval(r, 'roc_auc')}")
        for _, r in table.iterrows())
    body = [_html.section("Summary", _html.key_values({
        "varied": ", ".join(varied),
        "variants": int(len(table)),
        "ran": int(status.get("ran", 0)), "reused": int(status.get("reused", 0)),
        "failed": int(status.get("failed", 0)),
        "reference": f"variant 1 ({_settings(table.iloc[0], varied)})"}),
        _html.notice(str(summary.get("note") or "")), anchor="summary")]
    body.append(_html.section("Scores", _html.img(figures.figure_png(
        sweep_figure(table, varied)), alt), anchor="scores"))
    body.append(_html.section(
        "Variants against the reference", _table_html(table, varied, folder),
        "<p>Each variant is compared with variant 1 on the same samples (as "
        "<code>decoder compare</code> does): the accuracy p-value by the test named beside "
        "it, Holm-adjusted over the variants; for runs on the same folds the corrected "
        "resampled t-test, which includes training-set variability and is the one to "
        "trust for a claim that one variant is better; ROC AUC by DeLong's test "
        "(unadjusted). McNemar's and DeLong's tests treat the fitted models as "
        "fixed.</p>", anchor="variants"))
    failed = table[table["status"] == "failed"]
    if not failed.empty:
        body.append(_html.section("Failed variants", *(
            _html.notice(f"variant {int(r['variant'])} ({_settings(r, varied)}): "
                         f"{r['note']}") for _, r in failed.iterrows()), anchor="failed"))
    created = ""
    first = folder / str(table.iloc[0]["folder"]) / "metrics.json"
    try:
        created = json.loads(first.read_text())["provenance"]["created"]
    except (OSError, ValueError, KeyError, TypeError):
        pass
    return _html.page("Sweep report", f"{folder.name} · {len(table)} variants"
                      + (f" · {created}" if created else ""), "".join(body))


def write_sweep_report(folder) -> Path:
    """Write ``FOLDER/sweep.html`` (atomically) and return its path."""
    folder = Path(folder).expanduser()
    html = render_sweep_report(folder)
    path = folder / "sweep.html"
    atomic_write_text(path, html)
    return path


def is_sweep_folder(path) -> bool:
    """Whether ``path`` is a folder written by ``decoder sweep`` (and not a run)."""
    path = Path(path).expanduser()
    return (path.is_dir() and (path / "sweep.json").is_file()
            and not (path / "metrics.json").is_file())
