"""Read region time series from text files (.1D, .tsv, .csv).

One reader for every text format a subject's time series comes in: the
AFNI-style ``.1D`` files of the ABIDE Preprocessed Connectomes Project
(tab-separated, an optional ``#``-prefixed header naming the regions), and
plain ``.tsv`` / ``.csv`` tables with or without a header row.  Every
problem (empty file, a truncated last line, non-numeric cells, a file with
no finite value) is a one-line :class:`~decoder.errors.DataError` naming the
file and the line.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pandas as pd

from ..errors import DataError, missing_file

__all__ = ["read_timeseries", "regions_with_signal", "named_regions", "check_subject_series",
           "MIN_TIMEPOINTS", "MAX_MISSING_REGIONS", "TIMESERIES_SUFFIXES"]

TIMESERIES_SUFFIXES = (".1d", ".tsv", ".csv", ".txt")


def regions_with_signal(ts) -> np.ndarray:
    """Which regions (columns) carry signal: at least two different finite values.

    A constant region, or one without a finite value, carries none; the
    connectivity step treats it as unconnected.  Shared by the ABIDE reader (which
    counts them) and the checks of a new subject's time series.
    """
    ts = np.asarray(ts, dtype=float)
    finite = np.isfinite(ts)
    return (np.where(finite, ts, -np.inf).max(axis=0)
            > np.where(finite, ts, np.inf).min(axis=0))


def named_regions(regions) -> bool:
    """Whether region names came from a header (not :func:`read_timeseries`'s stand-ins
    ``"0", "1", …`` for a file without one)."""
    return list(map(str, regions)) != [str(i) for i in range(len(regions))]


def _separator(path: Path, first_data_line: str) -> str | None:
    suffix = path.suffix.lower()
    if suffix == ".csv":
        return ","
    if "\t" in first_data_line:
        return "\t"
    if "," in first_data_line and suffix != ".1d":
        return ","
    return None  # runs of white space


def _split(line: str, sep: str | None) -> list[str]:
    return line.split(sep) if sep is not None else line.split()


def _trim(line: str, sep: str | None) -> str:
    """A line without its end-of-line blanks — but not, in a tab-separated file, its
    leading or trailing tabs: they are empty cells (missing values), not padding."""
    return line.strip(" \r\n") if sep == "\t" else line.strip()


def _is_number(token: str) -> bool:
    try:
        float(token)
    except ValueError:
        return False
    return True


#: extensions of region time-series tables; a damaged file with another extension is
#: more likely not a time series at all than a cut-short download
TABLE_SUFFIXES = (".1d", ".tsv", ".csv", ".txt")
_TABLE_FIX = ("pass a .1D/.tsv/.csv table (one row per time point), or a NIfTI image with "
              "--atlas")


def read_timeseries(path) -> tuple[np.ndarray, list[str]]:
    """Read one subject's region time series.

    Parameters
    ----------
    path : str or Path
        A ``.1D``, ``.tsv``, ``.csv`` or ``.txt`` file: one row per time point,
        one column per region.  A first line starting with ``#`` (``.1D``) or a
        non-numeric first row (``.tsv`` / ``.csv``) names the regions; a header
        of bare numbers cannot be told from data, so write such labels as
        ``#10 #11 ...`` (the ABIDE convention) or as names.

    Returns
    -------
    data : ndarray of shape (n_timepoints, n_regions), float64
        Non-finite cells (``nan``, ``inf``) are kept as NaN; the connectivity
        step treats a region without finite signal as missing.
    regions : list of str
        Region names (the header without ``#``), or ``"0", "1", ...``.

    Raises
    ------
    DataError
        If the file is missing, empty, truncated (a row with fewer or more
        values than the others), non-numeric, or holds no finite value.
    """
    path = Path(path)
    if not path.is_file():
        raise missing_file(path, "time-series file",
                        "check the path (ABIDE files live in Outputs/<pipeline>/<strategy>/"
                        "<derivative>/)")
    try:
        text = path.read_text()
    except UnicodeDecodeError:
        raise DataError(f"{path}: not a text time-series file", _TABLE_FIX) from None
    lines = text.splitlines()
    header_lines = [i for i, ln in enumerate(lines) if ln.lstrip().startswith("#")]
    # (a line of tabs alone is a time point of missing values, not a blank line)
    body = [(i, ln) for i, ln in enumerate(lines)
            if ln.strip(" \r\n") and not ln.lstrip().startswith("#")]
    if not body:
        raise DataError(f"{path}: no time points in the file",
                        "re-download or regenerate it; the file is empty")
    sep = _separator(path, body[0][1])
    regions = None
    if header_lines:
        tokens = _split(lines[header_lines[-1]].lstrip()[1:].strip(), sep)
        regions = [t.strip().lstrip("#") for t in tokens if t.strip()]
    first = [t.strip() for t in _split(_trim(body[0][1], sep), sep)]
    if not all(_is_number(t) or t.lower() in {"nan", "inf", "-inf", ""} for t in first):
        regions = [t.strip().strip('"') for t in first]
        body = body[1:]
        if not body:
            raise DataError(f"{path}: only a header row, no time points",
                            "re-download or regenerate the file")
    # Field counts per line are cheap string counts; a short last line is the
    # signature of an interrupted download or copy.
    counts = np.array([len(_split(_trim(ln, sep), sep)) for _, ln in body])
    expected = int(np.bincount(counts).argmax())
    bad = np.flatnonzero(counts != expected)
    if bad.size:
        lineno = body[bad[0]][0] + 1
        where = "last line" if bad[0] == len(body) - 1 else f"line {lineno}"
        if path.suffix.lower() not in TABLE_SUFFIXES:   # e.g. a README given by mistake
            raise DataError(f"{path}: not a time-series table ({where} has {counts[bad[0]]} "
                            f"values, expected {expected})", _TABLE_FIX)
        raise DataError(f"{path}: truncated or malformed — {where} has {counts[bad[0]]} values, "
                        f"expected {expected}",
                        "re-download the file (it was cut short) or remove it from the folder")
    if regions is not None and len(regions) != expected:
        regions = None  # a header that does not match is ignored, data rule
    try:
        data = pd.read_csv(io.StringIO("\n".join(_trim(ln, sep) for _, ln in body)),
                           sep=sep if sep is not None else r"\s+", header=None,
                           engine="c" if sep is not None else "python",
                           dtype=np.float64).to_numpy()
    except (ValueError, pd.errors.ParserError) as exc:
        if path.suffix.lower() not in TABLE_SUFFIXES:
            raise DataError(f"{path}: not a time-series table (non-numeric values)",
                            _TABLE_FIX) from None
        raise DataError(f"{path}: non-numeric values in the time series "
                        f"({' '.join(str(exc).split())[:120]})",
                        "the table must hold numbers only, one row per time point") from None
    data = np.where(np.isfinite(data), data, np.nan)
    if not np.isfinite(data).any():
        raise DataError(f"{path}: every value is NaN — no signal in this file",
                        "exclude this subject or regenerate its time series")
    if regions is None:
        regions = [str(i) for i in range(data.shape[1])]
    return data, regions


#: fewest time points a new subject's connectivity is estimated from (ABIDE's shortest
#: scans have 78; below 20 a 111-region correlation matrix is mostly noise)
MIN_TIMEPOINTS = 20
#: fraction of regions without signal above which a subject is refused (at most 7 of
#: 111, 6 %, in ABIDE's 871 training subjects)
MAX_MISSING_REGIONS = 0.10


def check_subject_series(ts, name="the time series", n_regions=None, trained_on=None,
                         max_missing=MAX_MISSING_REGIONS) -> list:
    """Refuse a time series no model should be asked about; return warnings for one that
    is usable but unusual.

    A region without signal (constant, or with no finite value) is treated as in
    training — unconnected — and noted; more than :data:`MAX_MISSING_REGIONS` of them, a
    time point with NaN/inf in a region that has signal, or fewer than
    :data:`MIN_TIMEPOINTS` time points are one-line errors naming ``name``: a probability
    computed from them would look as confident as any other.  ``trained_on`` names the
    model's atlas in the fix for a series of another size
    (:func:`pipelines.biomarker.model_atlas`); ``max_missing``: the fraction of regions
    without signal above which it is refused (a training set keeps them, as missing).
    """
    ts = np.asarray(ts, dtype=float)
    if ts.ndim != 2:
        raise DataError(f"{name}: expected a table of time points × regions, got shape "
                        f"{ts.shape}", "pass one subject's region time series")
    if n_regions is not None and ts.shape[1] != n_regions:
        n = ts.shape[1]
        raise DataError(f"{name}: {n} region{'s' if n != 1 else ''}, the model expects "
                        f"{n_regions}",
                        "extract the time series with the atlas the model was trained on"
                        + (f" ({trained_on})" if trained_on else ""))
    if ts.shape[0] < MIN_TIMEPOINTS:
        raise DataError(f"{name}: {ts.shape[0]} time points, at least {MIN_TIMEPOINTS} are "
                        "needed to estimate connectivity",
                        "use the full resting-state time series")
    finite = np.isfinite(ts)
    signal = regions_with_signal(ts)
    missing = int((~signal).sum())
    if missing > max_missing * ts.shape[1]:
        raise DataError(f"{name}: {missing} of {ts.shape[1]} regions have no signal "
                        "(constant, or no finite value)",
                        "check the extraction (atlas, mask, registration) of this scan")
    bad_rows = int((~finite[:, signal]).any(axis=1).sum())
    if bad_rows:
        raise DataError(f"{name}: {bad_rows} of {ts.shape[0]} time points hold NaN or inf "
                        "values", "remove those time points (censored frames) or "
                        "interpolate them before predicting")
    return ([f"{missing} of {ts.shape[1]} regions have no signal: treated as unconnected, "
             "as in training"] if missing else [])
