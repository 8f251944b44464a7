"""``decoder fetch NAME``: get a dataset of ``data_manifest.yaml`` as a DataLad dataset.

* ``kind: datalad`` -- ``datalad clone`` the source (``--base-url`` replaces
  it, e.g. a local mirror or a RIA store), check out the pinned version, and
  ``datalad get`` only the files the pipelines read (``--subjects`` narrows
  them).  Subdatasets on the way are installed as needed.
* ``kind: addurls`` -- plain files on a web server (ABIDE Preprocessed on
  S3): a DataLad dataset is created and filled with ``datalad addurls``
  from the phenotypic table and the manifest's path pattern, so each file is
  annexed with its checksum and its URL (``datalad get`` works after a
  ``datalad drop``).  Downloads are checked against the manifest's sha256
  list and, for ``.1D`` time series, their structure; a truncated or
  corrupted file is removed and reported by name.
* ``kind: embedded`` -- the package's own sample becomes a DataLad dataset
  (or, with ``--base-url``, is cloned from a published copy).

Fetching is idempotent and resumable: files already present are skipped, and
an interrupted fetch continues where it stopped.  The number of files and
bytes to download is printed before downloading.  ``NAME`` may also be a
DataLad dataset URL or path (everything is fetched then).
"""

from __future__ import annotations

import ipaddress
import os
import re
import shutil
import socket
import urllib.parse
from pathlib import Path

from .._utils import absolute_path, sha256_file
from ..errors import ConfigError, DataError
from . import datalad as _dl
from .manifest import embedded_path, file_patterns, get_entry, load_checksums

__all__ = ["fetch", "fetch_cli", "check_timeseries_1d", "human_size"]

LARGE = 1 << 30  # 1 GiB: above this, the size is announced prominently


def _n(count: int, noun: str) -> str:
    return f"{count} {noun}" + ("" if count == 1 else "s")


def human_size(n: int | None) -> str:
    """``1536`` -> ``'1.5 kB'`` (decimal units, like the sizes in the manifest)."""
    if n is None:
        return "unknown size"
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n} B"  # pragma: no cover


# ---------------------------------------------------------------------------
# globbing over the tracked files of a dataset (and subdatasets on the way)
# ---------------------------------------------------------------------------

def _glob_regex(pattern: str) -> re.Pattern:
    """Regex for a path glob: ``*``/``?`` stay within one folder, ``**`` spans folders."""
    parts = pattern.strip("/").split("/")
    rx = []
    for j, part in enumerate(parts):
        last = j == len(parts) - 1
        if part == "**":
            rx.append(".*" if last else "(?:[^/]+/)*")
            continue
        seg, i = "", 0
        while i < len(part):
            ch = part[i]
            if ch == "*":
                seg += "[^/]*"
            elif ch == "?":
                seg += "[^/]"
            elif ch == "[" and "]" in part[i + 1:]:
                k = part.index("]", i + 1)
                body = part[i + 1:k].replace("\\", "\\\\")
                seg += "[^" + body[1:] + "]" if body.startswith("!") else "[" + body + "]"
                i = k
            else:
                seg += re.escape(ch)
            i += 1
        rx.append(seg + ("" if last else "/"))
    return re.compile("".join(rx) + r"\Z")


def _prefix_could_match(pattern: str, path: str) -> bool:
    """Whether files below folder ``path`` could match ``pattern``."""
    pparts = pattern.strip("/").split("/")
    dparts = path.split("/")
    for k, d in enumerate(dparts):
        if k >= len(pparts):
            return False
        if pparts[k] == "**":
            return True
        if not _glob_regex(pparts[k]).match(d):
            return False
    return len(pparts) > len(dparts)


def _remainder(pattern: str, depth: int) -> str:
    parts = pattern.strip("/").split("/")
    if "**" in parts[:depth]:
        return "**"
    return "/".join(parts[depth:])


def _tracked(top: Path) -> tuple[list[str], list[str]]:
    """(files, subdataset paths) tracked in the dataset at ``top``."""
    text = _dl._git(["ls-files", "-s", "-z"], top)
    files, subs = [], []
    for entry in text.split("\0"):
        if not entry:
            continue
        meta, _, path = entry.partition("\t")
        (subs if meta.startswith("160000") else files).append(path)
    return files, subs


def _expand(top: Path, patterns: list[str], jobs: int = 1) -> tuple[list[str], list[str]]:
    """(matching files, patterns matching nothing), installing subdatasets as needed."""
    files, subs = _tracked(top)
    regexes = [(p, _glob_regex(p)) for p in patterns]
    found, hits = [], {p: 0 for p in patterns}
    for f in files:
        for p, rx in regexes:
            if rx.match(f):
                found.append(f)
                hits[p] += 1
                break
    for sub in subs:
        relevant = [p for p in patterns if _prefix_could_match(p, sub)]
        if not relevant:
            continue
        if not (top / sub / ".git").exists():
            dl = _dl._import_datalad()
            with _dl._quiet_datalad():
                res = dl.get(path=str(top / sub), dataset=str(top), get_data=False,
                             on_failure="ignore", result_renderer="disabled",
                             return_type="list")
            if not (top / sub / ".git").exists():
                msg = next((r.get("message") for r in res if r.get("status") == "error"), "")
                raise DataError(f"cannot install subdataset {sub} of {top}: {msg}",
                                "check the network connection and the dataset URL")
        depth = len(sub.split("/"))
        sub_found, _ = _expand(top / sub, [_remainder(p, depth) for p in relevant], jobs)
        for f in sub_found:
            found.append(f"{sub}/{f}")
            for p, rx in regexes:
                if rx.match(f"{sub}/{f}"):
                    hits[p] += 1
                    break
    return found, [p for p, n in hits.items() if n == 0]


# ---------------------------------------------------------------------------
# validation of downloaded plain files
# ---------------------------------------------------------------------------

def check_timeseries_1d(path, name: str | None = None) -> tuple[int, int]:
    """Check a PCP ``.1D`` time-series file; return ``(n_timepoints, n_regions)``.

    The file must have one header line starting with ``#``, then rows of
    tab- or space-separated numbers, every row with as many values as the
    header has labels.  A truncated download (a short last row, a missing
    header, non-numeric text such as an HTML error page) raises a one-line
    :class:`DataError` naming the file.
    """
    name = name or str(path)
    try:
        with open(path, "rb") as fh:
            raw = fh.read()
    except OSError as exc:
        raise DataError(f"cannot read {name}: {exc.strerror}", "fetch it again") from None
    if not raw.endswith(b"\n"):
        raise DataError(f"{name} is truncated (does not end with a newline)",
                        "delete it and fetch it again; the download was cut short")
    lines = raw.decode("utf-8", errors="replace").splitlines()
    if not lines or not lines[0].startswith("#"):
        raise DataError(f"{name} is not a .1D time series (no '#' header line)",
                        "delete it and fetch it again from the original source")
    n_cols = len(lines[0].split())
    rows = 0
    for i, line in enumerate(lines[1:], start=2):
        if not line.strip():
            continue
        vals = line.split()
        if len(vals) != n_cols:
            raise DataError(f"{name} line {i}: {len(vals)} values where the header has "
                            f"{n_cols} (truncated or corrupted file)",
                            "delete it and fetch it again")
        try:
            [float(v) for v in vals]
        except ValueError:
            raise DataError(f"{name} line {i}: non-numeric value (corrupted file)",
                            "delete it and fetch it again") from None
        rows += 1
    if rows == 0:
        raise DataError(f"{name} has a header but no time points (truncated file)",
                        "delete it and fetch it again")
    return rows, n_cols


def _validate(path: Path, rel: str, checksums: dict, url: str | None = None) -> None:
    """Raise DataError if ``path`` does not match its recorded size/sha256 or structure."""
    src = f" (from {url})" if url else ""
    if rel in checksums:
        size, digest = checksums[rel]
        actual = path.stat().st_size
        if actual != size:
            raise DataError(f"{rel}{src} has {actual} bytes, expected {size} "
                            "(truncated or corrupted download)",
                            "check the server, then run the same 'decoder fetch' again")
        got = sha256_file(path)
        if got != digest:
            raise DataError(f"{rel}{src} has sha256 {got[:12]}..., expected {digest[:12]}... "
                            "(corrupted download or a different release)",
                            "check the server, then run the same 'decoder fetch' again")
        return
    if rel.endswith(".1D"):
        check_timeseries_1d(path, f"{rel}{src}")


# ---------------------------------------------------------------------------
# dataset helpers
# ---------------------------------------------------------------------------

def _is_source(name: str) -> bool:
    return "://" in name or name.startswith(("ria+", "git@")) or Path(name).expanduser().exists()


def _clone(source: str, target: Path, echo) -> Path:
    top = _dl.dataset_root(target) if target.exists() else None
    if top is not None and Path(top).resolve() == target.resolve():
        echo(f"using the existing clone in {target}")
        return target
    if target.exists() and any(target.iterdir()):
        raise DataError(f"{target} exists, is not empty and is not a DataLad dataset",
                        "choose another folder with --to, or remove it")
    dl = _dl._import_datalad()
    echo(f"cloning {source} into {target}")
    with _dl._quiet_datalad():
        res = dl.clone(source=source, path=str(target), on_failure="ignore", result_xfm=None,
                       result_renderer="disabled", return_type="list")
    err = [r for r in res if r.get("status") in ("error", "impossible")]
    if err or not (target / ".git").exists():
        msg = err[0].get("message") if err else "no dataset created"
        if isinstance(msg, (list, tuple)):
            msg = msg[0] % tuple(msg[1:]) if len(msg) > 1 else msg[0]
        msg = _clone_reason(msg)
        raise DataError(f"cannot clone {source}: {msg}",
                        "check the URL (or --base-url) and the network connection")
    return target


def _clone_reason(msg) -> str:
    """The reason in a failed clone's message: git's first ``fatal:`` line (e.g. "Could not
    resolve host") when it has one, since DataLad puts them after the whole command
    line; else the start of the message."""
    import re
    text = " ".join(str(msg).split())
    fatal = re.findall(r"fatal: (.+?)(?= fatal: |['\"]?\]|$)", text)
    return (fatal[0].strip(" '\"") if fatal else text)[:300]


def _pin(top: Path, entry: dict, custom_source: bool, echo) -> None:
    """Check out the manifest's pinned version (tag, branch or commit)."""
    version = entry.get("commit") or entry.get("version")
    if not version:
        return
    head = _dl._git(["rev-parse", "HEAD"], top, check=False).strip()
    target = _dl._git(["rev-parse", "-q", "--verify", f"{version}^{{commit}}"], top,
                      check=False).strip()
    if not target and entry.get("commit"):
        version = entry.get("version")
        target = _dl._git(["rev-parse", "-q", "--verify", f"{version}^{{commit}}"], top,
                          check=False).strip()
    if not target:
        if custom_source:
            echo(f"note: version {version} not found in this source; using its HEAD {head[:8]}")
            return
        raise DataError(f"pinned version {version} of {entry['name']} not found in "
                        f"{entry['source']}", "update 'version' in data_manifest.yaml")
    if target != head:
        _dl._git(["checkout", "-q", target], top)
        echo(f"checked out the pinned version {version} ({target[:8]})")


def _aws_check(entry: dict) -> None:
    if "aws-credentials" not in entry.get("requires", []):
        return
    if os.environ.get("AWS_ACCESS_KEY_ID") and os.environ.get("AWS_SECRET_ACCESS_KEY"):
        return
    raise DataError(f"{entry['name']} needs AWS credentials and none are set "
                    "(AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY are empty)",
                    "accept the data use terms at https://db.humanconnectome.org, enable "
                    "Amazon S3 access there to get a key id and secret, export them as "
                    "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, and run the fetch again")


def _allow_private_host(top: Path, url: str, echo) -> None:
    """Let git-annex download from a loopback/private server, or a ``file://`` mirror,
    named explicitly by the user (git-annex refuses both by default)."""
    if urllib.parse.urlparse(url).scheme == "file":
        current = _dl._git(["config", "--get", "annex.security.allowed-url-schemes"], top,
                           check=False).split() or ["http", "https", "ftp"]
        if "file" not in current:
            _dl._git(["config", "annex.security.allowed-url-schemes",
                      " ".join(current + ["file"])], top)
        return
    host = urllib.parse.urlparse(url).hostname
    if not host:
        return
    try:
        addrs = {ai[4][0] for ai in socket.getaddrinfo(host, None)}
    except OSError:
        return
    private = sorted(a for a in addrs if not ipaddress.ip_address(a.split("%")[0]).is_global)
    if private:
        current = _dl._git(["config", "--get", "annex.security.allowed-ip-addresses"], top,
                           check=False).split()
        if "all" in current:
            return
        value = " ".join(sorted(set(current) | set(private)))
        _dl._git(["config", "annex.security.allowed-ip-addresses", value], top)


def _files_summary(dlin: "_dl.DataladInputs", files: list[str]) -> tuple[list[str], int, int]:
    """(files to download, bytes to download or -1 if unknown, bytes already present)."""
    s = dlin.content_summary(files)
    todo = s["to_get"] + s["absent"]  # an absent file is named by the get that follows
    need = -1 if s["absent"] or s["bytes_to_get"] is None else s["bytes_to_get"]
    return todo, need, s["bytes_present"]


def _announce(n_todo: int, need: int, have_n: int, have: int, echo) -> None:
    size = human_size(need) if need >= 0 else "size unknown"
    msg = (f"{_n(n_todo, 'file')} to download ({size}); {have_n} already present "
           f"({human_size(have)})")
    if need >= LARGE:
        msg = f"LARGE DOWNLOAD: {msg} -- press Ctrl-C now to stop; rerun later to resume"
    echo(msg)


def _progress(echo, top: Path):
    def _cb(done, total, path):
        try:
            rel = Path(path).relative_to(top).as_posix()
        except ValueError:
            rel = str(path)
        echo(f"[{done}/{total}] {rel}")
    return _cb


# ---------------------------------------------------------------------------
# the three kinds
# ---------------------------------------------------------------------------

def _fetch_datalad(entry: dict, source: str, custom: bool, target: Path, subjects, jobs,
                   echo) -> dict:
    _aws_check(entry)
    top = _clone(source, target, echo)
    if entry.get("version") or entry.get("commit"):
        _pin(top, entry, custom, echo)
    labels = [str(s).removeprefix("sub-") for s in subjects or []]
    if entry.get("files"):
        patterns = file_patterns(entry, subjects=subjects)
    elif labels:   # a dataset given by path or URL, read as BIDS
        patterns = bids_subject_patterns(labels)
    else:
        patterns = ["**"]
    files, unmatched = _expand(top, patterns, jobs)
    if entry.get("files"):
        per_subject = [p for p in unmatched
                       if any(re.search(rf"(^|[/_-]){re.escape(lab)}([/_.]|$)", p)
                              for lab in labels)]
        if per_subject or not files:
            raise DataError(f"no file in {top} matches '{(per_subject or unmatched)[0]}'",
                            "check the --subjects labels (e.g. 1 or sub-1) against the dataset")
        for pat in unmatched:
            echo(f"note: no file matches '{pat}' in this version; skipped")
    elif labels:
        files = _only_these_subjects(files, labels)
        _check_bids_subjects(top, labels, files)
    elif not files:
        raise DataError(f"no file in {top}", "check the dataset's URL or path")
    dlin = _dl.DataladInputs(top, jobs=jobs)
    todo, need, have = _files_summary(dlin, files)
    _announce(len(todo), need, len(files) - len(todo), have, echo)
    dlin.get(todo, progress=_progress(echo, top))
    return {"files": files, "top": top}


def bids_subject_patterns(labels) -> list[str]:
    """What ``--subjects`` gets of a BIDS dataset given by path or URL: the files at its
    top (``participants.tsv``, ``dataset_description.json``, task sidecars), ``phenotype/``,
    each subject's folder, and each subject's folder of every derivative (fMRIPrep's
    ``derivatives/fmriprep/sub-*``) with that derivative's top-level files."""
    out = ["*", "phenotype/**", "derivatives/*/*"]
    for lab in labels:
        out += [f"sub-{lab}/**", f"derivatives/*/sub-{lab}/**"]
    return out


def _only_these_subjects(files, labels) -> list:
    """Of the files the patterns matched, leave out git's and DataLad's own (``.gitattributes``,
    ``.datalad/``) and another subject's files at a derivative's top (fMRIPrep's
    ``sub-02.html``)."""
    wanted = {f"sub-{lab}" for lab in labels}
    out = []
    for f in files:
        parts = f.split("/")
        if any(p.startswith(".") for p in parts):
            continue
        name = parts[-1]
        if (len(parts) == 3 and parts[0] == "derivatives" and name.startswith("sub-")
                and re.split(r"[_.]", name)[0] not in wanted):
            continue
        out.append(f)
    return out


def _check_bids_subjects(top: Path, labels, files) -> None:
    """Each ``--subjects`` label must name a ``sub-<label>`` folder holding files."""
    have = {f.split("/")[0] for f in files} | {
        f.split("/")[2] for f in files if f.startswith("derivatives/") and f.count("/") >= 3}
    missing = [lab for lab in labels if f"sub-{lab}" not in have]
    if missing:
        files_all, subs = _tracked(top)
        known = sorted({p.split("/")[0] for p in files_all + subs
                        if p.split("/")[0].startswith("sub-")})
        shown = ", ".join(known[:8]) + (f", … ({len(known)} in all)" if len(known) > 8 else "")
        raise DataError(f"no sub-{missing[0]} folder in {top}",
                        f"use --subjects with the dataset's labels: {shown}" if known else
                        "this dataset has no sub-* folders: leave --subjects out")


def _fetch_embedded(entry: dict, target: Path, echo) -> dict:
    src = embedded_path(entry)
    top = _dl.dataset_root(target) if target.exists() else None
    if top is not None and Path(top).resolve() == target.resolve():
        echo(f"using the existing dataset in {target}")
    else:
        if target.exists() and any(target.iterdir()):
            raise DataError(f"{target} exists, is not empty and is not a DataLad dataset",
                            "choose another folder with --to, or remove it")
        dl = _dl._import_datalad()
        with _dl._quiet_datalad():
            # text files in git, images annexed (as in OpenNeuro datasets)
            dl.create(path=str(target), cfg_proc="text2git", result_renderer="disabled")
            shutil.copytree(src, target, dirs_exist_ok=True)
            dl.save(dataset=str(target), message=f"Import {entry['name']}: {entry['title']}"
                    f"\n\nLicence: {entry['license']}\nCitation: {entry['citation']}",
                    result_renderer="disabled")
        echo(f"created a DataLad dataset from the embedded {entry['name']} in {target}")
    files, _ = _expand(target, file_patterns(entry))
    return {"files": files, "top": target}


def _read_table(path: Path, name: str):
    import pandas as pd
    try:
        return pd.read_csv(path, dtype=str, keep_default_na=False)
    except Exception as exc:  # pandas raises many kinds
        raise DataError(f"cannot read the table {name}: {' '.join(str(exc).split())[:200]}",
                        "delete it and fetch again") from None


def _select_rows(table, entry: dict, subjects, checksums: dict, path_of) -> list[dict]:
    spec = entry["table"]
    idc, subc = spec["id_column"], spec.get("subject_column")
    missing = spec.get("missing")
    if idc not in table.columns:
        raise DataError(f"table {spec['path']} has no column '{idc}'",
                        "check 'table.id_column' in data_manifest.yaml")
    rows = table.to_dict("records")
    if not subjects:
        rows = [r for r in rows if r[idc] and r[idc] != missing]
        listed = [r for r in rows if path_of(r) in checksums]
        return listed or rows
    by_id = {r[idc]: r for r in rows}
    by_sub = {}
    if subc and subc in table.columns:
        for r in rows:
            by_sub.setdefault(r[subc].lstrip("0"), r)
    out = []
    for s in subjects:
        s = str(s)
        r = by_id.get(s) or by_sub.get(s.removeprefix("sub-").lstrip("0"))
        if r is None:
            raise DataError(f"subject '{s}' is not in {spec['path']} (neither a {idc} nor a "
                            f"{subc or 'subject id'})", f"use e.g. {rows[1][subc or idc]} or "
                            f"{rows[1][idc]}")
        if not r[idc] or r[idc] == missing:
            raise DataError(f"subject '{s}' has no preprocessed file in {entry['name']} "
                            f"({idc} is '{r[idc]}')", "choose another subject")
        if r not in out:
            out.append(r)
    return out


def _unstage(top: Path, rel: str) -> None:
    """Remove a file added (not yet committed) by addurls, with its annexed content."""
    key = _dl._keys_from_blobs(top, {rel: _index_entry(top, rel)}).get(rel) \
        if _index_entry(top, rel) else None
    _dl._git(["rm", "-q", "--cached", "-f", "--", rel], top, check=False)
    p = top / rel
    if p.is_symlink() or p.exists():
        p.unlink()
    if key:
        _dl._git(["annex", "dropkey", "--force", key], top, check=False)


def _index_entry(top: Path, rel: str):
    text = _dl._git(["ls-files", "-s", "--", rel], top, check=False).strip()
    if not text:
        return None
    meta, _, _ = text.partition("\t")
    mode, sha, _stage = meta.split()
    return (mode, sha)


def _annex_tmp(top: Path) -> Path:
    return Path(_dl._git(["rev-parse", "--absolute-git-dir"], top).strip()) / "annex" / "tmp"


def _addurls(top: Path, rows: list[dict], checksums: dict, jobs: int, message: str,
             echo) -> None:
    """``datalad addurls`` the rows, keep only validated files, commit them."""
    if not rows:
        return
    dl = _dl._import_datalad()
    tmp = _annex_tmp(top)
    before = set(tmp.iterdir()) if tmp.is_dir() else set()
    urls = {r["path"]: r["url"] for r in rows}
    errors, added = [], []
    with _dl._quiet_datalad():
        for res in dl.addurls(urlfile=rows, urlformat="{url}", filenameformat="{path}",
                              dataset=str(top), save=False, jobs=jobs, exclude_autometa="*",
                              on_failure="ignore", result_renderer="disabled",
                              return_type="generator"):
            if res.get("action") not in ("addurl", "addurls"):
                continue
            rel = _rel(top, res.get("path"))
            if res.get("status") == "ok":
                added.append(rel)
                echo(f"[{len(added)}/{len(rows)}] {rel}")
            elif res.get("status") in ("error", "impossible"):
                errors.append((rel, res))
    bad = []
    for rel in added:
        try:
            _validate(top / rel, rel, checksums, urls.get(rel))
        except DataError as exc:
            bad.append(exc)
            _unstage(top, rel)
    good = [rel for rel in added if (top / rel).exists()]
    if good:
        with _dl._quiet_datalad():
            dl.save(dataset=str(top), path=[str(top / g) for g in good], message=message,
                    result_renderer="disabled", on_failure="ignore")
    if tmp.is_dir():  # partial downloads of failed files
        for stale in set(tmp.iterdir()) - before:
            if stale.is_file():
                stale.unlink()
    if bad:
        raise bad[0]
    if errors:
        rel, res = errors[0]
        msg = res.get("error_message") or res.get("message") or ""
        text = msg if isinstance(msg, str) else " ".join(map(str, msg))
        m = re.search(r"error-messages': \['([^']*)'", text)
        reason = m.group(1) if m else _dl._short_reason(text)
        more = f" (and {len(errors) - 1} more files)" if len(errors) > 1 else ""
        raise DataError(f"cannot fetch {rel or '?'}{more} from "
                        f"{urls.get(rel, 'its URL')}: {reason}",
                        "check the server or --base-url and the network connection, then "
                        "run the same 'decoder fetch' again (fetched files are kept)")


def _rel(top: Path, path) -> str:
    if not path:
        return ""
    try:
        return Path(os.path.abspath(path)).relative_to(os.path.abspath(top)).as_posix()
    except ValueError:
        return str(path)


def _fetch_addurls(entry: dict, base: str, target: Path, subjects, jobs, echo) -> dict:
    base = base if base.endswith("/") else base + "/"
    parsed = urllib.parse.urlparse(base)
    if parsed.scheme == "file":   # a folder typed as it is ('mir ror'): encoded as a URL
        base = "file://" + urllib.parse.quote(urllib.parse.unquote(parsed.path))
    top = _dl.dataset_root(target) if target.exists() else None
    if top is None or Path(top).resolve() != target.resolve():
        if target.exists() and any(target.iterdir()):
            raise DataError(f"{target} exists, is not empty and is not a DataLad dataset",
                            "choose another folder with --to, or remove it")
        dl = _dl._import_datalad()
        with _dl._quiet_datalad():
            dl.create(path=str(target), result_renderer="disabled",
                      description=f"{entry['name']} built with decoder fetch")
        echo(f"created a DataLad dataset for {entry['name']} in {target}")
    else:
        echo(f"using the existing dataset in {target}")
    top = target
    _allow_private_host(top, base, echo)
    checksums = load_checksums(entry)
    dlin = _dl.DataladInputs(top, jobs=jobs)
    table_rel = entry["table"]["path"]

    def _url(rel):
        return base + urllib.parse.quote(rel)

    def _bring(rels, what):
        """Present files: validate; tracked without content: get; untracked: addurls."""
        tracked = set(_tracked(top)[0])
        new = [r for r in rels if r not in tracked]
        gettable = [r for r in rels if r in tracked and not _dl._has_content(top / r)]
        sizes = [checksums.get(r, (None,))[0] for r in new]
        need = sum(s for s in sizes if s) if all(sizes) else -1
        for r in gettable:
            need = need + (_dl.annex_key_size(dlin._keys([r]).get(r)) or 0) if need >= 0 else -1
        _announce(len(new) + len(gettable), need, len(rels) - len(new) - len(gettable),
                  sum((top / r).stat().st_size for r in rels
                      if r in tracked and _dl._has_content(top / r)), echo)
        if gettable:
            dlin.get(gettable, progress=_progress(echo, top))
        _addurls(top, [{"url": _url(r), "path": r} for r in new], checksums, jobs,
                 f"Add {len(new)} {what} of {entry['name']} from {base}", echo)
        for r in rels:
            if r not in new:
                _validate(top / r, r, checksums)

    echo(f"{entry['name']}: phenotypic table")
    _bring([table_rel], "table")
    table = _read_table(top / table_rel, table_rel)
    params = entry.get("params", {})

    def path_of(row):
        return entry["path_pattern"].format(**{**row, **params})

    rows = _select_rows(table, entry, subjects, checksums, path_of)
    rels = [path_of(r) for r in rows]
    echo(f"{entry['name']}: {len(rels)} subjects")
    _bring(rels, "files")
    return {"files": [table_rel, *rels], "top": top}


# ---------------------------------------------------------------------------
# entry points
# ---------------------------------------------------------------------------

def fetch(name: str, subjects=None, to=None, jobs: int = 1, base_url: str | None = None,
          manifest=None, echo=print) -> dict:
    """Fetch a dataset of the manifest (or a DataLad dataset URL/path) as a DataLad dataset.

    Parameters
    ----------
    name : str
        A dataset name of ``data_manifest.yaml`` (``ds000105``, ``abide-pcp``,
        ``haxby-sample``, ...) or the URL/path of a DataLad dataset.
    subjects : list of str, optional
        Only these subjects (labels such as ``1``/``sub-1``; for ABIDE a
        ``SUB_ID`` such as ``50003`` or a ``FILE_ID`` such as ``Pitt_0050003``).
        A label the dataset does not have is an error.
    to : path, optional
        Target folder (default ``data/<name>``); a file, or a place that cannot be
        written, is refused before anything is fetched.
    jobs : int
        Parallel downloads (at least 1).
    base_url : str, optional
        Replaces the manifest's source: another clone URL for DataLad
        datasets (a mirror, ``ria+file://...#<id>``), another bucket prefix
        for ``addurls`` datasets.
    manifest : path, optional
        The manifest to use instead of the default one.
    echo : callable
        Receives progress lines.

    Returns
    -------
    dict
        ``path``, ``files`` (fetched, relative), ``dataset_id``, ``commit``, ``bytes``.
    """
    jobs = _check_jobs(jobs)
    if name in _manifest_names(manifest) or not _is_source(name):
        entry = get_entry(name, manifest)
    else:
        entry = {"name": Path(name.rstrip("/")).name.split("#")[-1] or "dataset",
                 "kind": "datalad", "source": name, "files": {}}
    target = Path(to) if to else Path("data") / entry["name"]
    from ..results import check_writable
    target = check_writable(absolute_path(target), option="--to")
    kind = entry["kind"]
    if kind == "embedded" and not base_url and subjects:
        _check_embedded_subjects(entry, subjects)
    if kind == "addurls":
        out = _fetch_addurls(entry, base_url or entry["source"], target, subjects, jobs, echo)
    elif kind == "embedded" and not base_url:
        out = _fetch_embedded(entry, target, echo)
    else:
        source = base_url or entry["source"]
        if entry.get("files") == {}:   # given by path or URL: --subjects reads it as BIDS
            out = _fetch_datalad(entry, source, True, target, subjects, jobs, echo)
        else:
            custom = bool(base_url)
            out = _fetch_datalad(entry, source, custom, target, subjects, jobs, echo)
    top = out["top"]
    prov = _dl.DataladInputs(top).provenance([top / f for f in out["files"]])
    total = sum((top / f).stat().st_size for f in out["files"] if (top / f).exists())
    return {"path": top, "files": out["files"], "dataset_id": prov["dataset_id"],
            "commit": prov["commit"], "bytes": total}


def _check_jobs(jobs) -> int:
    """``-J``/``--jobs`` as a positive integer (``None`` means 1), refused otherwise."""
    if jobs is None:
        return 1
    if isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1:
        raise ConfigError(f"-J/--jobs {jobs}: must be a positive number of parallel downloads",
                          "use e.g. -J 4, or leave it out for one download at a time")
    return jobs


def _check_embedded_subjects(entry: dict, subjects) -> None:
    """The embedded sample holds a fixed set of subjects: an unknown label is an error
    (naming those there are), not a silent fetch of the whole sample."""
    have = sorted(p.name.removeprefix("sub-") for p in embedded_path(entry).glob("sub-*")
                  if p.is_dir())
    unknown = [str(s) for s in subjects if str(s).removeprefix("sub-") not in have]
    if unknown:
        raise ConfigError(f"subject '{unknown[0]}' is not in {entry['name']}",
                          f"use --subjects with one of: {', '.join(have)} (or leave it out)")


def _manifest_names(manifest) -> set:
    try:
        from .manifest import load_manifest
        return set(load_manifest(manifest))
    except ConfigError:
        return set()


def dataset_list(manifest=None) -> list[dict]:
    """One row per dataset of the manifest: name, title, version, licence, size, citation."""
    from .manifest import load_manifest
    fields = ("title", "version", "license", "size", "citation")  # folded YAML on one line
    return [{"name": name, **{k: " ".join(str(entry.get(k, "")).split()) for k in fields}}
            for name, entry in load_manifest(manifest).items()]


def fetch_cli(args) -> int:
    """``decoder fetch`` (arguments parsed in :mod:`decoder.cli`)."""
    if args.list:
        for row in dataset_list(args.manifest):
            print(f"{row['name']}  {row['title']}\n    version {row['version']}; "
                  f"licence: {row['license']}\n    size: {row['size']}\n"
                  f"    cite: {row['citation']}")
        return 0
    if args.subjects == []:   # "--subjects" with no ID would otherwise fetch everyone
        raise ConfigError("--subjects is given without any subject ID",
                          "list them, e.g. --subjects 1 2, or leave --subjects out for all")
    if not args.name:
        if args.subjects:   # nargs="*" took the name that followed the IDs
            raise ConfigError(f"no dataset named ('{args.subjects[-1]}' after --subjects was "
                              "read as a subject ID)", "put the dataset name before --subjects, "
                              f"e.g. 'decoder fetch {args.subjects[-1]} --subjects "
                              f"{' '.join(args.subjects[:-1]) or 'ID'}'")
        raise ConfigError("no dataset named",
                          "give one, e.g. 'decoder fetch abide-pcp'; 'decoder fetch --list' "
                          "lists them")
    info = fetch(args.name, subjects=args.subjects, to=args.to, jobs=args.jobs,
                 base_url=args.base_url, manifest=args.manifest)
    commit = (info["commit"] or "")[:8]
    print(f"{_n(len(info['files']), 'file')} ({human_size(info['bytes'])}) ready in {info['path']} "
          f"(DataLad dataset {info['dataset_id']}, commit {commit})")
    return 0
