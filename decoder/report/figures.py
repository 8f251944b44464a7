"""Figures shared by ``report.html`` and the app.

Every function takes plain data (lists, arrays, dicts read from a run
directory or returned by the biomarker pipeline) and returns a
:class:`matplotlib.figure.Figure` built without pyplot's global state, so
the same code draws in a web server thread, in a test and in the static
report.  :func:`figure_png` turns a figure into PNG bytes.
"""

from __future__ import annotations

import functools
import io

import matplotlib

matplotlib.use("Agg", force=False)

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

__all__ = [
    "figure_png", "confusion_matrix", "per_class_scores", "fold_scores",
    "permutation_histogram", "weight_map", "connectivity_matrix", "strongest_edges",
    "connectome_glass_brain", "probability_vs_training", "per_site_table", "per_site_scores",
    "per_subgroup_table", "confound_table", "SCORE_TABLE_NOTE",
]

_DPI = 100
# Class, site and region names are data, not TeX: a "$" in one must be drawn as
# it is, not parsed as mathtext (which fails on an unbalanced "$").  Applied
# while a figure is built (text objects take the setting when created) and
# while it is drawn (tick labels are created then), without changing the
# caller's own matplotlib settings.
_PLAIN_TEXT = {"text.parse_math": False}


def _plain_text(func):
    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        with matplotlib.rc_context(_PLAIN_TEXT):
            return func(*args, **kwargs)
    return wrapper


def figure_png(fig: Figure, dpi: int = _DPI) -> bytes:
    """PNG bytes of a figure (tight bounding box)."""
    buf = io.BytesIO()
    with matplotlib.rc_context(_PLAIN_TEXT):
        fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    return buf.getvalue()


def _fmt(v, digits=3):
    return "—" if v is None or (isinstance(v, float) and not np.isfinite(v)) else (
        f"{v:.{digits}f}" if isinstance(v, float) else str(v))


# ------------------------------------------------------------------ classification
@_plain_text
def confusion_matrix(matrix, classes, normalize: bool = True) -> Figure:
    """Confusion matrix, rows = true class, columns = predicted class.

    Parameters
    ----------
    matrix : array-like (n_classes, n_classes)
        Counts, as in ``metrics.json["confusion_matrix"]``.
    classes : list of str
    normalize : bool
        Colour by the fraction of each true class (the row); cells show counts.
    """
    cm = np.asarray(matrix, dtype=float)
    if cm.ndim != 2 or cm.shape[0] != cm.shape[1] or cm.shape[0] != len(classes):
        raise ValueError(f"confusion matrix of shape {cm.shape} does not match "
                         f"{len(classes)} classes")
    rows = cm.sum(axis=1, keepdims=True)
    frac = np.divide(cm, rows, out=np.zeros_like(cm), where=rows > 0) if normalize else cm
    n = len(classes)
    size = max(3.5, 0.55 * n + 1.8)
    fig = Figure(figsize=(size + 0.8, size))
    ax = fig.add_subplot()
    im = ax.imshow(frac, cmap="Blues", vmin=0, vmax=1 if normalize else None)
    for i in range(n):
        for j in range(n):
            ax.text(j, i, f"{int(cm[i, j])}", ha="center", va="center", fontsize=8,
                    color="white" if frac[i, j] > 0.6 * (frac.max() or 1) else "black")
    ax.set_xticks(range(n), classes, rotation=45, ha="right")
    ax.set_yticks(range(n), classes)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title("Confusion matrix" + (" (colour: fraction of true class)" if normalize else ""),
                 fontsize=10)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    return fig


@_plain_text
def per_class_scores(per_class: dict) -> Figure:
    """Precision, recall and F1 per class (``metrics.json["per_class"]``)."""
    classes = list(per_class)
    keys = ("precision", "recall", "f1")
    x = np.arange(len(classes))
    fig = Figure(figsize=(max(4.5, 0.7 * len(classes) + 2), 3.2))
    ax = fig.add_subplot()
    width = 0.26
    for k, (key, hatch) in enumerate(zip(keys, ("", "//", ".."))):  # not colour alone
        vals = [per_class[c].get(key) or 0.0 for c in classes]
        ax.bar(x + (k - 1) * width, vals, width, label=key, hatch=hatch, edgecolor="white")
    ax.set_xticks(x, classes, rotation=30, ha="right")
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("score")
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8)  # off the bars
    ax.set_title("Per-class scores", fontsize=10)
    return fig


@_plain_text
def fold_scores(scores, groups=None, chance=None) -> Figure:
    """Accuracy of each cross-validation fold, with the chance level."""
    scores = np.asarray(scores, dtype=float)
    labels = list(groups) if groups is not None and len(groups) == len(scores) else \
        [str(i + 1) for i in range(len(scores))]
    fig = Figure(figsize=(max(4.5, 0.35 * len(scores) + 2), 3.0))
    ax = fig.add_subplot()
    ax.bar(range(len(scores)), scores, color="#4c72b0")
    if chance is not None:
        ax.axhline(chance, color="crimson", ls="--", lw=1, label=f"chance {chance:.3f}")
        ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))  # off the bars
    if len(scores):
        ax.axhline(float(np.nanmean(scores)), color="black", lw=1, alpha=0.6)
    ax.set_xticks(range(len(scores)), labels, rotation=60, ha="right", fontsize=7)
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("accuracy")
    # the mean of the folds weighs each fold once, the pooled accuracy each sample once
    ax.set_title(f"Held-out accuracy per fold (line: mean of the folds, {np.nanmean(scores):.3f})"
                 if len(scores) else "Held-out accuracy per fold", fontsize=10)
    return fig


@_plain_text
def permutation_histogram(null, observed: float, p_value=None) -> Figure:
    """Histogram of the permutation null with the observed score."""
    null = np.asarray(null, dtype=float).ravel()
    fig = Figure(figsize=(5, 3.0))
    ax = fig.add_subplot()
    ax.hist(null, bins=min(40, max(5, len(null) // 5)), color="#999999", edgecolor="white",
            label=f"permuted labels (n={len(null)})")
    ax.axvline(observed, color="crimson", lw=2, label=f"observed {observed:.3f}")
    ax.set_xlabel("accuracy")
    ax.set_ylabel("permutations")
    title = "Permutation test"
    if p_value is not None:
        floor = 1.0 / (len(null) + 1)   # (1 + #null ≥ observed) / (1 + n): its smallest value
        title += (f": p = {p_value:.2g}, the smallest {len(null)} permutations can give"
                  if len(null) and np.isclose(p_value, floor) else f": p = {p_value:.3g}")
    ax.set_title(title, fontsize=10)
    ax.yaxis.get_major_locator().set_params(integer=True)   # counts are whole numbers
    ax.legend(fontsize=8)
    return fig


# ------------------------------------------------------------------ weight maps
def _is_thin(shape) -> bool:
    return min(shape[:3]) <= 2


@_plain_text
def searchlight_map(acc_img, p_img=None, chance=None, fwe_level: float = 0.05) -> Figure:
    """Searchlight accuracy at each sphere's centre; with permutations, the spheres
    whose family-wise error corrected p-value is at most ``fwe_level`` are outlined.

    A thin volume is drawn as a 2D image, a whole-brain volume on axial slices
    (nilearn), thresholded at chance.
    """
    data = np.asarray(acc_img.dataobj, dtype=float)
    inside = data != 0
    lo = float(chance) if chance is not None else float(np.nanmin(data[inside]))
    hi = max(float(np.nanmax(data)), lo + 1e-6)
    if _is_thin(data.shape):
        axis = int(np.argmin(data.shape[:3]))
        mid = data.shape[axis] // 2
        plane = np.take(data, mid, axis=axis)
        fig = Figure(figsize=(5.4, 4.2), layout="constrained")
        ax = fig.subplots()
        ax.axis("off")
        im = ax.imshow(np.rot90(np.where(plane == 0, np.nan, plane)), cmap="hot",
                       vmin=lo, vmax=hi, interpolation="nearest")
        fig.colorbar(im, ax=ax, fraction=0.04, pad=0.02, label="held-out accuracy")
        title = "Searchlight accuracy"
        if p_img is not None:
            p = np.take(np.asarray(p_img.dataobj, dtype=float), mid, axis=axis)
            sig = (p > 0) & (p <= fwe_level) & (plane != 0)
            if sig.any():
                ax.contour(np.rot90(sig.astype(float)), levels=[0.5], colors="cyan",
                           linewidths=1.0)
            title += f" (cyan: p_FWE ≤ {fwe_level:g})"
        ax.set_title(title, fontsize=9)
        return fig
    import nibabel as nib
    from nilearn import plotting
    fig = Figure(figsize=(9, 2.4))
    ax = fig.add_subplot(1, 1, 1)
    ax.axis("off")
    display = plotting.plot_stat_map(
        nib.Nifti1Image(data, acc_img.affine), display_mode="z", cut_coords=6, axes=ax,
        figure=fig, threshold=lo, vmax=hi, cmap="hot", bg_img=None, draw_cross=False,
        annotate=False, title="Searchlight accuracy (above chance)")
    if p_img is not None:
        p = np.asarray(p_img.dataobj, dtype=float)
        sig = ((p > 0) & (p <= fwe_level) & inside).astype(float)
        if sig.any():
            display.add_contours(nib.Nifti1Image(sig, acc_img.affine), levels=[0.5],
                                 colors="cyan", linewidths=1.0)
    return fig


_OPPOSITE = {"L": "R", "R": "L", "P": "A", "A": "P", "I": "S", "S": "I"}
_PLANE_NAMES = {"L": "x", "R": "x", "P": "y", "A": "y", "I": "z", "S": "z"}


def _plane_orientation(affine, axis: int, index: int):
    """Where a voxel plane lies and how it is drawn once ``np.rot90``-ed.

    Returns ``("z = 12.5 mm", (left, right, bottom, top))``: the world coordinate
    of the plane and the anatomical letter at each edge of the drawn image
    (columns run along the first remaining voxel axis, rows upwards along the
    second), from nibabel's axis codes of the affine.
    """
    from nibabel.orientations import aff2axcodes
    codes = aff2axcodes(affine)           # the world direction each voxel axis points to
    centre = np.zeros(3)
    centre[axis] = index
    world = np.asarray(affine, dtype=float) @ np.append(centre, 1.0)
    mm = float(world["xyz".index(_PLANE_NAMES[codes[axis]])])
    ends = []
    for voxel_axis in [a for a in range(3) if a != axis]:
        ends += [_OPPOSITE[codes[voxel_axis]], codes[voxel_axis]]
    return f"{_PLANE_NAMES[codes[axis]]} = {mm:g} mm", tuple(ends)


@_plain_text
def weight_map(img, classes=None, max_classes: int = 8) -> Figure:
    """Decoder weights, one panel per class.

    A thin volume (e.g. a single slice, as in the embedded Haxby sample) is
    drawn as a 2D image per class; a whole-brain volume is drawn with nilearn
    on axial slices.

    Parameters
    ----------
    img : nibabel image (3D or 4D, last axis = class)
    classes : list of str, optional
        Panel titles, in the order of the 4th axis.  A single map with two
        classes is the one weight vector of a binary model, titled
        "classes[1] (+) vs classes[0] (−)".
    max_classes : int
        At most this many panels.
    """
    data = np.asarray(img.dataobj, dtype=float)
    if data.ndim == 3:
        data = data[..., None]
    if data.ndim != 4:
        raise ValueError(f"weight image must be 3D or 4D, got {data.ndim}D")
    n = min(data.shape[3], max_classes)
    classes = [str(c) for c in (classes or [])]
    if data.shape[3] == 1 and len(classes) == 2:
        # a two-class linear model has a single weight vector, towards classes[1]
        names = [f"{classes[1]} (+) vs {classes[0]} (−)"]
    else:
        names = classes[:n] + [f"map {i}" for i in range(len(classes), n)]
    if _is_thin(data.shape):
        axis = int(np.argmin(data.shape[:3]))
        index = data.shape[axis] // 2
        where, ends = _plane_orientation(img.affine, axis, index)
        planes = [np.take(data[..., k], index, axis=axis) for k in range(n)]
        lim = max(float(np.nanmax(np.abs(np.stack(planes)))) if planes else 0.0, 1e-12)
        ncols = min(4, n)
        nrows = int(np.ceil(n / ncols))
        fig = Figure(figsize=(2.6 * ncols + 0.8, 2.4 * nrows + 0.4))
        axes = fig.subplots(nrows, ncols, squeeze=False)
        im = None
        for k, ax in enumerate(axes.ravel()):
            ax.axis("off")
            if k >= n:
                continue
            plane = np.where(planes[k] == 0, np.nan, planes[k])
            im = ax.imshow(np.rot90(plane), cmap="RdBu_r", vmin=-lim, vmax=lim,
                           interpolation="nearest")
            ax.set_title(names[k], fontsize=9, pad=9)
            for (x, y), letter in zip(((0, .5), (1, .5), (.5, 0), (.5, 1)), ends):
                ax.text(x, y, letter, transform=ax.transAxes, fontsize=7, ha="center",
                        va="center", color="0.3")
        if im is not None:
            fig.colorbar(im, ax=axes.ravel().tolist(), fraction=0.025, pad=0.02,
                         label="weight (a.u.)")
        per_class = "one map per class; " if data.shape[3] > 1 else ""
        fig.suptitle(f"Decoder weights ({per_class}{where})", fontsize=10)
        return fig
    import nibabel as nib
    from nilearn import plotting
    fig = Figure(figsize=(9, 1.9 * n))
    lim = float(np.nanmax(np.abs(data[..., :n]))) or 1e-12
    for k in range(n):
        sub = nib.Nifti1Image(data[..., k], img.affine)
        ax = fig.add_subplot(n, 1, k + 1)
        ax.axis("off")
        plotting.plot_stat_map(sub, display_mode="z", cut_coords=5, axes=ax, figure=fig,
                               title=names[k], colorbar=k == 0, vmax=lim,
                               draw_cross=False, annotate=True, bg_img=None)
    return fig


# ------------------------------------------------------------------ connectomes
@_plain_text
def connectivity_matrix(matrix, labels=None, title: str = "Connectivity matrix") -> Figure:
    """A subject's connectivity matrix (diagonal blanked)."""
    m = np.array(matrix, dtype=float)
    if m.ndim != 2 or m.shape[0] != m.shape[1]:
        raise ValueError(f"connectivity matrix must be square, got shape {m.shape}")
    np.fill_diagonal(m, np.nan)
    lim = float(np.nanmax(np.abs(m))) if np.isfinite(m).any() else 1.0
    fig = Figure(figsize=(5.2, 4.6))
    ax = fig.add_subplot()
    im = ax.imshow(m, cmap="RdBu_r", vmin=-lim, vmax=lim, interpolation="nearest")
    n = m.shape[0]
    if labels is not None and n <= 40:
        ax.set_xticks(range(n), labels, rotation=90, fontsize=6)
        ax.set_yticks(range(n), labels, fontsize=6)
    else:
        ax.set_xlabel(f"{n} regions")
        ax.set_ylabel(f"{n} regions")
    ax.set_title(title, fontsize=10)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    return fig


def edge_pattern_matrix(edges: pd.DataFrame):
    """The region × region matrix of ``edges.tsv`` patterns, and its region labels.

    Regions keep the atlas order of the connectivity matrices: the table holds
    the upper triangle, so the region at position i is ``region_b`` of exactly
    i edges (the table itself is sorted by pattern strength).
    """
    a_col, b_col = edges["region_a"].astype(str), edges["region_b"].astype(str)
    position = b_col.value_counts().reindex(pd.unique(pd.concat([a_col, b_col])), fill_value=0)
    regions = list(position.sort_values(kind="stable").index)
    index = {r: i for i, r in enumerate(regions)}
    m = np.zeros((len(regions), len(regions)))
    a, b = a_col.map(index).to_numpy(), b_col.map(index).to_numpy()
    m[a, b] = m[b, a] = edges["pattern"].to_numpy(float)
    return m, regions


def edge_pattern_table(edges: pd.DataFrame, k: int = 15) -> pd.DataFrame:
    """The ``k`` strongest patterns of ``edges.tsv``, as the report shows them."""
    top = edges.head(k)
    a, b = ("name_a", "name_b") if "name_a" in top else ("region_a", "region_b")
    return pd.DataFrame({"region a": top[a].astype(str), "region b": top[b].astype(str),
                         "pattern r": top["pattern"], "sd over folds": top["pattern_sd"],
                         "same sign in folds": top["sign_consistency"],
                         "stronger towards": top["higher_in"]})


def strongest_edges(matrix, labels=None, k: int = 20, names=None) -> pd.DataFrame:
    """The ``k`` off-diagonal edges of largest absolute value.

    Parameters
    ----------
    matrix : ndarray (R, R)
    labels : sequence of str, optional
        Region labels (default: their index).
    k : int
    names : sequence of str, optional
        Anatomical region names, added as ``name_a`` / ``name_b``.

    Returns
    -------
    DataFrame with columns ``region_a``, ``region_b`` (``name_a``,
    ``name_b``), ``value`` (sorted by decreasing absolute value).
    """
    m = np.asarray(matrix, dtype=float)
    n = m.shape[0]
    labels = [str(x) for x in labels] if labels is not None else [str(i) for i in range(n)]
    iu = np.triu_indices(n, k=1)
    vals = m[iu]
    finite = np.isfinite(vals)
    order = np.argsort(-np.abs(np.where(finite, vals, 0)), kind="stable")[:k]
    order = [o for o in order if finite[o]]
    table = {"region_a": [labels[iu[0][o]] for o in order],
             "region_b": [labels[iu[1][o]] for o in order]}
    if names is not None:
        table["name_a"] = [str(names[iu[0][o]]) for o in order]
        table["name_b"] = [str(names[iu[1][o]]) for o in order]
    return pd.DataFrame({**table, "value": [float(vals[o]) for o in order]})


@_plain_text
def connectome_glass_brain(matrix, coords, k: int = 20,
                           title: str = "Strongest connections") -> Figure:
    """The ``k`` strongest edges on a glass brain (nilearn ``plot_connectome``).

    Parameters
    ----------
    matrix : ndarray (R, R)
    coords : ndarray (R, 3)
        MNI coordinates of the regions (e.g. atlas centroids); regions whose
        coordinates are NaN (unknown) are left out.
    k : int
        Number of edges drawn.
    """
    from nilearn import plotting
    m = np.array(matrix, dtype=float)
    coords = np.asarray(coords, dtype=float)
    if coords.shape != (m.shape[0], 3):
        raise ValueError(f"{m.shape[0]} regions but coordinates of shape {coords.shape}")
    known = np.isfinite(coords).all(axis=1)
    m, coords = m[np.ix_(known, known)], coords[known]
    np.fill_diagonal(m, 0.0)
    m = np.nan_to_num(m)
    iu = np.triu_indices(m.shape[0], k=1)
    vals = np.sort(np.abs(m[iu]))[::-1]
    thr = vals[min(k, len(vals)) - 1] if len(vals) else 0.0
    keep = np.abs(m) >= thr
    m = np.where(keep, m, 0.0)
    fig = Figure(figsize=(8, 3.2))
    # negative edges dashed as well as blue: the sign must not rest on colour alone
    vmax = float(np.abs(m).max()) or 1.0
    scale = {"edge_cmap": "RdBu_r", "edge_vmin": -vmax, "edge_vmax": vmax}
    dashed = {"linestyle": (0, (3, 2))}
    pos, neg = np.where(m > 0, m, 0.0), np.where(m < 0, m, 0.0)
    first, style = (pos, None) if pos.any() else (neg, dashed)
    display = plotting.plot_connectome(first, coords, figure=fig, title=title, node_size=8,
                                       colorbar=bool(m.any()), display_mode="ortho",
                                       edge_kwargs=style, **scale)
    if pos.any() and neg.any():
        display.add_graph(neg, coords, node_size=8, edge_kwargs=dashed, **scale)
    return fig


# ------------------------------------------------------------------ biomarker
@_plain_text
def probability_vs_training(probability=None, calibration=None,
                            training_probabilities=None, training_labels=None,
                            positive: str = "autism") -> Figure:
    """Where a subject's predicted probability lies among the training subjects.

    ``probability`` is None draws the training distribution alone.  Uses
    the training subjects' held-out probabilities when given (one
    histogram per diagnosis); otherwise the model's calibration table
    (``[{low, high, n, observed_rate}]``): bars show how many held-out
    subjects fell in each probability bin, the line their observed rate of
    the positive class.
    """
    # one legend below the axes names every mark (the subject's line, the cut-off, the
    # bars and the observed rate): a label drawn over the bars collided with them
    fig = Figure(figsize=(7.0, 3.4), layout="constrained")
    ax = fig.add_subplot()
    other = ax
    if training_probabilities is not None and len(training_probabilities):
        tp = np.asarray(training_probabilities, dtype=float)
        bins = np.linspace(0, 1, 21)
        if training_labels is not None:
            tl = np.asarray(training_labels).astype(str)
            for lab in sorted(set(tl)):
                ax.hist(tp[tl == lab], bins=bins, alpha=0.55, label=f"{lab} (n={(tl == lab).sum()})")
        else:
            ax.hist(tp, bins=bins, color="#999999", label=f"training (n={len(tp)})")
        ax.set_ylabel("training subjects")
    elif calibration:
        lows = np.array([b["low"] for b in calibration], dtype=float)
        highs = np.array([b["high"] for b in calibration], dtype=float)
        ns = np.array([b["n"] for b in calibration], dtype=float)
        ax.bar(lows, ns, width=highs - lows, align="edge", color="#cccccc", edgecolor="white",
               label="held-out subjects per bin")
        ax.set_ylabel("held-out training subjects")
        other = ax.twinx()
        rates = [b.get("observed_rate") for b in calibration]
        mids = (lows + highs) / 2
        other.plot([m for m, r in zip(mids, rates) if r is not None],
                   [r for r in rates if r is not None], "o-", color="#4c72b0",
                   label=f"observed {positive} rate")
        other.set_ylim(0, 1.05)
        other.set_ylabel(f"observed {positive} rate")
    else:
        ax.set_yticks([])
    if probability is not None:
        p = float(probability)
        ax.axvline(p, color="crimson", lw=2, label=f"this subject (p = {p:.2f})")
    ax.axvline(0.5, color="black", lw=0.8, ls=":", label="cut-off 0.5")
    ax.set_xlim(0, 1)
    ax.set_xlabel(f"predicted probability of {positive}")
    ax.set_title("This subject against the training distribution" if probability is not None
                 else "Held-out predicted probabilities", fontsize=11)
    handles, labels = ax.get_legend_handles_labels()
    if other is not ax:
        more = other.get_legend_handles_labels()
        handles, labels = handles + more[0], labels + more[1]
    fig.legend(handles, labels, loc="outside lower center", ncol=min(len(handles), 4),
               fontsize=9, frameon=False)
    return fig


_SCORE_COLUMNS = ["n", "autism", "accuracy", "accuracy 95% CI", "balanced accuracy",
                  "ROC AUC", "ROC AUC 95% CI"]


def _score_row(m: dict) -> dict:
    """One group's held-out scores (``per_site`` / ``per_subgroup`` entry) as a table row:
    numbers stay numbers (a group of one class has no ROC AUC: NaN, said in the tables'
    caption, :data:`SCORE_TABLE_NOTE`), intervals are text ("—" where there is none)."""
    return {"n": m.get("n"), "autism": m.get("n_autism"), "accuracy": _round(m.get("accuracy")),
            "accuracy 95% CI": _ci_text(m), "balanced accuracy": _round(m.get("balanced_accuracy")),
            "ROC AUC": _round(m.get("roc_auc")),
            "ROC AUC 95% CI": _ci_text(m, "roc_auc")}


#: what a blank in a per-site or per-subgroup table means
SCORE_TABLE_NOTE = ("A group with one diagnosis only has no ROC AUC (—), and a "
                    "group too small for an interval has none (—).")


def _round(v, digits: int = 3):
    return float("nan") if v is None else round(float(v), digits)


def _ci_text(m: dict, key: str = "accuracy") -> str:
    ci = m.get(f"{key}_ci95")
    return f"{ci[0]:.2f}–{ci[1]:.2f}" if ci else "—"


def per_site_table(per_site: dict) -> pd.DataFrame:
    """``metrics.json["per_site"]`` as a table, one row per site."""
    rows = [{"site": site, **_score_row(m)} for site, m in sorted((per_site or {}).items())]
    return pd.DataFrame(rows, columns=["site", *_SCORE_COLUMNS])


def per_subgroup_table(per_subgroup: dict) -> pd.DataFrame:
    """``metrics.json["per_subgroup"]`` as a table: one row per sex and per age band."""
    rows = [{"by": name, "group": label, **_score_row(m)}
            for name, groups in (per_subgroup or {}).items()
            for label, m in (groups or {}).items()]
    return pd.DataFrame(rows, columns=["by", "group", *_SCORE_COLUMNS])


def confound_table(confounds: dict) -> pd.DataFrame:
    """``metrics.json["confounds"]`` as a table, one row per nuisance variable."""
    rows = []
    for name, c in (confounds or {}).items():
        row = {"variable": name, "n": c.get("n"), "AUC alone": c.get("auc_alone")}
        for cls, r in sorted((c.get("spearman_within_class") or {}).items()):
            row[f"rho, {cls} group"] = None if r is None else r.get("rho")
        for k, v in (c.get("accuracy_by_tertile") or {}).items():
            row[f"accuracy, {k} third"] = v
        rows.append(row)
    return pd.DataFrame(rows)


@_plain_text
def per_site_scores(per_site: dict, chance=None) -> Figure:
    """Held-out accuracy and ROC AUC per site (bars; n under each site)."""
    df = per_site_table(per_site)
    x = np.arange(len(df))
    fig = Figure(figsize=(max(4.5, 0.45 * len(df) + 2), 3.2))
    ax = fig.add_subplot()
    acc = df["accuracy"].astype(float).fillna(0).to_numpy()
    auc = pd.to_numeric(df["ROC AUC"], errors="coerce").to_numpy(float)
    ax.bar(x - 0.2, acc, 0.4, label="accuracy")
    ax.bar(x + 0.2, np.nan_to_num(auc), 0.4, label="ROC AUC (blank: one class)")
    if chance is not None:
        ax.axhline(chance, color="crimson", ls="--", lw=1, label=f"chance {chance:.2f}")
    ax.set_xticks(x, [f"{s}\nn={n}" for s, n in zip(df["site"], df["n"])], fontsize=7,
                  rotation=45, ha="right")
    ax.set_ylim(0, 1.05)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    ax.set_title("Held-out scores per site", fontsize=10)
    return fig
