"""Self-contained HTML: escaped text, tables and base64-inlined PNG images.

No JavaScript, no external stylesheet, fonts or images: a report opens
offline and can be mailed or attached to a paper as one file.
"""

from __future__ import annotations

import base64
import html
import json

import numpy as np
import pandas as pd

__all__ = ["esc", "img", "table", "key_values", "pre", "notice", "section", "markdown",
           "page"]

_CSS = """
body{font-family:-apple-system,Segoe UI,Helvetica,Arial,sans-serif;max-width:1080px;
margin:1.5em auto;padding:0 1em;color:#222;line-height:1.4}
h1{font-size:1.6em;margin-bottom:.2em}h2{font-size:1.25em;border-bottom:1px solid #ddd;
padding-bottom:.2em;margin-top:1.6em}h3{font-size:1.05em}
table{border-collapse:collapse;margin:.6em 0;font-size:.9em}
th,td{border:1px solid #ddd;padding:.25em .6em;text-align:left;vertical-align:top}
th{background:#f4f4f4}td.num{text-align:right;font-variant-numeric:tabular-nums}
img{max-width:100%;height:auto;display:block;margin:.5em 0}
pre{background:#f7f7f7;padding:.6em;overflow-x:auto;font-size:.82em}
.notice{border-left:4px solid #c0392b;background:#fdf2f0;padding:.5em .8em;margin:.8em 0}
.muted{color:#666;font-size:.85em}
"""


def esc(text) -> str:
    """HTML-escape any value's string form."""
    return html.escape("" if text is None else str(text), quote=True)


def _cell(v) -> str:
    if v is None or (isinstance(v, float) and not np.isfinite(v)):
        return '<td class="num">—</td>'
    if isinstance(v, (bool, np.bool_)):
        return f"<td>{esc(v)}</td>"
    if isinstance(v, (int, np.integer)):
        return f'<td class="num">{int(v)}</td>'
    if isinstance(v, (float, np.floating)):
        return f'<td class="num">{float(v):.3f}</td>'
    if isinstance(v, (dict, list)):
        return f"<td>{esc(json.dumps(v, default=str))}</td>"
    return f"<td>{esc(v)}</td>"


def img(png: bytes, alt: str) -> str:
    """An ``<img>`` with the PNG inlined as a base64 data URI."""
    data = base64.b64encode(png).decode("ascii")
    return f'<img alt="{esc(alt)}" src="data:image/png;base64,{data}">'


def table(df: pd.DataFrame, index: bool = False) -> str:
    """An HTML table from a DataFrame (numbers right-aligned, 3 decimals)."""
    if index:
        df = df.reset_index()
    head = "".join(f"<th>{esc(c)}</th>" for c in df.columns)
    rows = "".join("<tr>" + "".join(_cell(v) for v in row) + "</tr>"
                   for row in df.itertuples(index=False, name=None))
    return f"<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>"


def key_values(pairs: dict) -> str:
    """A two-column table of labelled values."""
    rows = "".join(f"<tr><th>{esc(k)}</th>{_cell(v)}</tr>" for k, v in pairs.items())
    return f"<table><tbody>{rows}</tbody></table>"


def pre(text: str) -> str:
    return f"<pre>{esc(text)}</pre>"


def notice(text: str) -> str:
    return f'<div class="notice">{esc(text)}</div>'


def section(title: str, *parts: str, anchor: str | None = None) -> str:
    aid = f' id="{esc(anchor)}"' if anchor else ""
    return f"<section{aid}><h2>{esc(title)}</h2>{''.join(parts)}</section>"


def markdown(text: str) -> str:
    """A small, safe subset of Markdown: headings, bullets, pipe tables, paragraphs.

    Everything is escaped; nothing in the text can inject markup.
    """
    out, para, bullets, rows = [], [], [], []

    def flush():
        if para:
            out.append(f"<p>{esc(' '.join(para))}</p>")
            para.clear()
        if bullets:
            out.append("<ul>" + "".join(f"<li>{esc(b)}</li>" for b in bullets) + "</ul>")
            bullets.clear()
        if rows:
            cells = [[c.strip() for c in r.strip().strip("|").split("|")] for r in rows
                     if not set(r.replace("|", "").strip()) <= set("-: ")]
            if cells:
                head = "".join(f"<th>{esc(c)}</th>" for c in cells[0])
                body = "".join("<tr>" + "".join(f"<td>{esc(c)}</td>" for c in r) + "</tr>"
                               for r in cells[1:])
                out.append(f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")
            rows.clear()

    for line in text.splitlines():
        s = line.strip()
        if not s:
            flush()
        elif s.startswith("#"):
            flush()
            level = min(len(s) - len(s.lstrip("#")) + 2, 5)
            out.append(f"<h{level}>{esc(s.lstrip('#').strip())}</h{level}>")
        elif s.startswith("|"):
            if para or bullets:
                flush()
            rows.append(s)
        elif s.startswith(("- ", "* ")):
            if rows or para:
                flush()
            bullets.append(s[2:])
        else:
            if rows or bullets:
                flush()
            para.append(s)
    flush()
    return "".join(out)


def page(title: str, subtitle: str, body: str) -> str:
    """A complete HTML document."""
    return ("<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
            f"<title>{esc(title)}</title><style>{_CSS}</style></head><body>"
            f"<h1>{esc(title)}</h1><p class=\"muted\">{esc(subtitle)}</p>{body}</body></html>\n")
