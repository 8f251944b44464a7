"""Searchlight decoding: which small neighbourhoods of voxels carry the categories.

For every voxel of the mask, a sphere of the voxels within ``radius`` mm is
decoded on its own with the same cross-validation folds as the whole-mask
decoder, and the sphere's held-out accuracy is written at its centre
(Kriegeskorte et al. 2006).

Why not :class:`nilearn.decoding.SearchLight`: it fits a scikit-learn estimator
per sphere and per fold (hours on a whole brain), and gives no inference.  Here
the estimator is fixed to a ridge classifier (one-vs-rest on ±1 targets with an
intercept, :class:`sklearn.linear_model.RidgeClassifier`), whose fit needs only
each sphere's Gram matrix ``X_s^T X_s``, column sums and ``X_s^T Y``.  Those are
summed per run once; a fold's training statistics are the totals minus the
held-out run's, and the spheres are solved in batches (one inverse per sphere and
fold, shared by every label set).  The
result equals nilearn's SearchLight with ``RidgeClassifier(alpha)`` on the same
folds (``benchmarks/bench_searchlight.py`` checks it), and label permutations
only add right-hand sides to the same solves, so a family-wise error corrected
p-value map (maximum statistic over spheres, Nichols & Holmes 2002) costs
little more than the map itself.
"""

from __future__ import annotations

import logging
import numbers
from dataclasses import dataclass

import numpy as np
from scipy import sparse

from ..errors import ConfigError, DataError

log = logging.getLogger(__name__)

# bytes of sphere data held at once; spheres are processed in chunks of this size
CHUNK_BYTES = 1 << 27


def mask_coordinates(mask_img) -> np.ndarray:
    """World coordinates (mm) of the mask's voxels, (n_voxels, 3), in the masker's order."""
    from nilearn.image import coord_transform
    from nilearn.masking import load_mask_img
    mask, affine = load_mask_img(mask_img)
    return np.column_stack(coord_transform(*np.nonzero(mask), affine))


def check_settings(radius=None, alpha=1.0, n_permutations=0) -> None:
    """A one-line :class:`ConfigError` for a bad searchlight setting, named as in the
    config (``searchlight.radius``, ``.alpha``, ``.n_permutations``); ``radius`` None
    means no searchlight.  The pipeline checks a config with it before any data are
    read, and each function below checks its own argument with it."""
    def real(v):
        return isinstance(v, numbers.Real) and not isinstance(v, bool) and np.isfinite(v)

    if radius is not None and not (real(radius) and radius >= 0):
        raise ConfigError(f"searchlight.radius must be a number of mm ≥ 0, or null for no "
                          f"searchlight, got {radius!r}", "write e.g. --set searchlight.radius=6")
    if not (real(alpha) and alpha > 0):
        raise ConfigError(f"searchlight.alpha must be a number above 0, got {alpha!r}",
                          "write e.g. --set searchlight.alpha=1")
    if not (isinstance(n_permutations, numbers.Integral) and not isinstance(n_permutations, bool)
            and n_permutations >= 0):
        raise ConfigError(f"searchlight.n_permutations must be a non-negative integer, got "
                          f"{n_permutations!r}", "write e.g. --set searchlight.n_permutations=100")


def sphere_neighbours(mask_img, radius: float) -> sparse.csr_matrix:
    """Boolean (n_voxels, n_voxels) matrix: row ``i`` holds the in-mask voxels within
    ``radius`` mm (world coordinates) of voxel ``i``, in the mask's voxel order (the
    column order of :class:`nilearn.maskers.NiftiMasker`).

    The same spheres as :class:`nilearn.decoding.SearchLight` with the mask as
    process mask; computed with a k-d tree instead of nilearn's per-seed list
    search, which is quadratic in the number of voxels.
    """
    from sklearn.neighbors import NearestNeighbors

    if radius is None:
        raise ConfigError("searchlight.radius is null, so there are no spheres",
                          "write e.g. --set searchlight.radius=6")
    check_settings(radius=radius)
    xyz = mask_coordinates(mask_img)
    tree = NearestNeighbors(radius=radius).fit(xyz)
    A = tree.radius_neighbors_graph(xyz, mode="connectivity").astype(bool).tocsr()
    A.sort_indices()
    return A


def _padded(neighbours: sparse.csr_matrix, n_voxels: int) -> np.ndarray:
    """(n_spheres, max size) voxel indices; short spheres are padded with ``n_voxels``,
    the index of an all-zero column, whose weight the ridge sets to exactly 0."""
    sizes = np.diff(neighbours.indptr)
    idx = np.full((len(sizes), int(sizes.max())), n_voxels, dtype=np.intp)
    for i in range(len(sizes)):
        s = neighbours.indices[neighbours.indptr[i]:neighbours.indptr[i + 1]]
        idx[i, :len(s)] = s
    return idx


@dataclass
class SearchlightPart:
    """Samples of some outer folds, all built the same way.

    Attributes
    ----------
    X : ndarray (n_samples, n_voxels)
    codes : ndarray of int (n_samples, n_label_sets)
        Class codes; column 0 the true labels, the others permuted.
    groups : ndarray (n_samples,)
        Outer cross-validation group (run or subject) of each sample.
    test_groups : sequence
        The groups held out (one fold each) with these samples.
    units : ndarray of int (n_samples,) or None
        When given, held-out samples of a unit (block) are scored together by
        their mean decision values, as the whole-mask decoder does.
    """

    X: np.ndarray
    codes: np.ndarray
    groups: np.ndarray
    test_groups: tuple
    units: np.ndarray | None = None


@dataclass
class SearchlightResult:
    """Held-out accuracy of every sphere.

    Attributes
    ----------
    accuracy : ndarray (n_spheres,)
        Pooled over all held-out samples (or units) of all folds.
    fold_accuracy : ndarray (n_spheres, n_folds)
        Per fold, in the order of ``fold_groups``.
    fold_groups : list
    null_max : ndarray (n_permutations,) or None
        Largest accuracy over spheres under each label permutation.
    null_mean : ndarray (n_spheres,) or None
        Each sphere's mean accuracy under permutation (its empirical chance level).
    sizes : ndarray (n_spheres,)
        Voxels per sphere.
    """

    accuracy: np.ndarray
    fold_accuracy: np.ndarray
    fold_groups: list
    null_max: np.ndarray | None
    null_mean: np.ndarray | None
    sizes: np.ndarray

    def p_fwe(self) -> np.ndarray | None:
        """Family-wise error corrected p-value of each sphere: the share of
        permutations whose best sphere reaches its accuracy (with the observed
        labelling counted among them)."""
        if self.null_max is None:
            return None
        exceed = (self.null_max[None, :] >= self.accuracy[:, None] - 1e-12).sum(axis=1)
        return (1.0 + exceed) / (1.0 + len(self.null_max))


def _one_hot(codes, n_classes):
    """±1 targets (n, n_classes · n_label_sets), as RidgeClassifier's label binariser."""
    n, L = codes.shape
    Y = -np.ones((n, n_classes, L))
    Y[np.arange(n)[:, None], codes, np.arange(L)[None, :]] = 1.0
    return Y.reshape(n, n_classes * L)


def ridge_searchlight(parts: list[SearchlightPart], neighbours: sparse.csr_matrix,
                      n_classes: int, alpha: float = 1.0,
                      chunk_bytes: int = CHUNK_BYTES) -> SearchlightResult:
    """Cross-validated ridge-classifier accuracy of every sphere.

    Parameters
    ----------
    parts : list of SearchlightPart
        Each holds the samples for some held-out groups; every group is held out
        once over all parts.
    neighbours : sparse (n_spheres, n_voxels)
        From :func:`sphere_neighbours`.
    n_classes : int
    alpha : float
        Ridge penalty (fixed; the features are the run-standardised voxels).
    chunk_bytes : int
        About how much memory the spheres and label sets in work at once take;
        results do not depend on it.

    Returns
    -------
    SearchlightResult
    """
    check_settings(alpha=alpha)
    alpha = float(alpha)
    if not parts:
        raise DataError("searchlight: no folds to evaluate", "check the cross-validation groups")
    n_voxels = parts[0].X.shape[1]
    neighbours = sparse.csr_matrix(neighbours)
    if neighbours.shape[1] != n_voxels:
        raise DataError(f"searchlight spheres are over {neighbours.shape[1]} voxels but the "
                        f"samples have {n_voxels}", "build the spheres from the samples' mask")
    idx = _padded(neighbours, n_voxels)
    n_spheres, p = idx.shape
    L = parts[0].codes.shape[1]
    fold_groups = [g for part in parts for g in part.test_groups]
    correct = np.zeros((n_spheres, len(fold_groups)))
    totals = np.zeros(len(fold_groups))
    null_max = np.full(L - 1, -np.inf) if L > 1 else None
    null_mean = np.zeros(n_spheres) if L > 1 else None

    prepared = []
    for part in parts:
        X = np.asarray(part.X, dtype=np.float64)
        Xp = np.hstack([X, np.zeros((len(X), 1))])
        groups = np.asarray(part.groups)
        ids = list(dict.fromkeys(groups.tolist()))
        rows = {g: np.flatnonzero(groups == g) for g in ids}
        missing = [g for g in part.test_groups if g not in rows]
        if missing:
            raise DataError(f"searchlight: held-out group {missing[0]!r} has no samples",
                            "check the cross-validation groups")
        prepared.append((part, Xp, np.asarray(part.codes), rows))

    # Memory is bounded whatever the radius and the number of permutations: spheres
    # are taken in chunks (their samples, each group's Gram matrix and each fold's
    # inverse), and label sets in blocks (targets, X^T Y per group, decisions).
    n_max = max(len(pp[1]) for pp in prepared)
    n_groups = max(len(pp[3]) for pp in prepared)
    n_folds = max(len(pp[0].test_groups) for pp in prepared)
    # Wide label blocks first (one matrix product serves many label sets, which is
    # where permutations are cheap), then as many spheres as the rest allows.
    label_free = 8 * (n_max * p + (n_groups + 1) * (p * p + p) + n_folds * p * p + L)
    per_label = 8 * n_classes * ((n_groups + 3) * p + 2 * n_max)
    half = chunk_bytes // 2
    block = int(max(1, min(L, half // (per_label + 8 * n_classes * n_max))))
    step = int(max(1, min(n_spheres, half // label_free, half // (block * per_label))))
    eye = np.eye(p)
    for start in range(0, n_spheres, step):
        sl = slice(start, min(n_spheres, start + step))
        hits_all = np.zeros((sl.stop - sl.start, L))      # summed over folds
        fold = 0
        for part, Xp, codes, rows in prepared:
            Xc = np.ascontiguousarray(Xp[:, idx[sl]].transpose(1, 0, 2))   # (c, n, p)
            Xt = {g: Xc[:, r, :].transpose(0, 2, 1) for g, r in rows.items()}
            gram = {g: (Xt[g] @ Xc[:, r, :], Xc[:, r, :].sum(axis=1), len(r))
                    for g, r in rows.items()}
            S, m, n = (sum(v[k] for v in gram.values()) for k in range(3))
            solvers = {}
            for g in part.test_groups:                     # label-free: once per fold
                Sg, mg, ng = gram[g]
                mu = (m - mg) / (n - ng)                                     # (c, p)
                G = S - Sg - (n - ng) * mu[:, :, None] * mu[:, None, :] + alpha * eye
                solvers[g] = (n - ng, mu, np.linalg.inv(G))
            for lo in range(0, L, block):
                cols = slice(lo, min(L, lo + block))
                lb = cols.stop - cols.start
                Y = _one_hot(codes[:, cols], n_classes)                      # (n, k·lb)
                xy = {g: (Xt[g] @ Y[r], Y[r].sum(axis=0)) for g, r in rows.items()}
                XY, ys = (sum(v[k] for v in xy.values()) for k in range(2))
                for f, g in enumerate(part.test_groups):
                    n_tr, mu, Ginv = solvers[g]
                    ybar = (ys - xy[g][1]) / n_tr                            # (k·lb,)
                    B = XY - xy[g][0] - n_tr * mu[:, :, None] * ybar[None, None, :]
                    W = Ginv @ B                                             # (c, p, k·lb)
                    b = ybar[None, :] - np.einsum("cp,cpk->ck", mu, W)
                    D = Xc[:, rows[g], :] @ W + b[:, None, :]                # (c, n_te, k·lb)
                    D = D.reshape(D.shape[0], D.shape[1], n_classes, lb)
                    labels = codes[rows[g], cols]                            # (n_te, lb)
                    if part.units is not None:
                        units = np.asarray(part.units)[rows[g]]
                        uid, first, inv = np.unique(units, return_index=True,
                                                    return_inverse=True)
                        agg = np.zeros((D.shape[0], len(uid), n_classes, lb))
                        np.add.at(agg, (slice(None), inv), D)
                        D, labels = agg, labels[first]
                    hits = (D.argmax(axis=2) == labels[None, :, :]).sum(axis=1)  # (c, lb)
                    hits_all[:, cols] += hits
                    if lo == 0:
                        correct[sl, fold + f] = hits[:, 0]
                        totals[fold + f] = len(labels)
            fold += len(part.test_groups)
        if null_max is not None:          # the chunk's spheres are complete: reduce
            null_acc = hits_all[:, 1:] / totals.sum()
            null_max = np.maximum(null_max, null_acc.max(axis=0))
            null_mean[sl] = null_acc.mean(axis=1)
    accuracy = correct.sum(axis=1) / totals.sum()
    return SearchlightResult(accuracy=accuracy, fold_accuracy=correct / totals,
                             fold_groups=fold_groups, null_max=null_max, null_mean=null_mean,
                             sizes=np.diff(neighbours.indptr))


def nested_searchlight(candidates, chosen, tested_groups, unit_codes: dict, unit_run: dict,
                       n_classes: int, neighbours, alpha: float = 1.0,
                       score_unit: bool = False, n_permutations: int = 0,
                       random_state=0) -> SearchlightResult:
    """Searchlight on the folds of a nested whole-mask evaluation.

    Each held-out group is decoded from the samples the whole-mask decoder chose
    for that fold (labelling delay and window, chosen on the training runs only),
    so the searchlight sees no choice made with the test data.

    Parameters
    ----------
    candidates : list of :class:`~decoder.evaluation.nested.SampleSet`
    chosen : list of str
        Candidate name per fold (``chosen`` of :func:`~decoder.evaluation.nested.nested_dual_ridge`).
    tested_groups : list
        Held-out group per fold, in the same order.
    unit_codes, unit_run : dict
        Class code and run of every unit; permutations exchange units' labels
        within runs, as the whole-mask permutation test does.
    n_classes : int
    neighbours : sparse matrix from :func:`sphere_neighbours`
    alpha : float
    score_unit : bool
        Score blocks by their samples' mean decision values.
    n_permutations : int
        Label permutations for the FWE-corrected p-values (0: none).
    random_state : int
    """
    from .nested import permuted_unit_codes
    check_settings(n_permutations=n_permutations)
    if len(chosen) != len(tested_groups):
        raise ValueError("one chosen candidate per tested group is needed")
    rng = np.random.default_rng(random_state)
    units, codes_all = permuted_unit_codes(unit_codes, unit_run, n_permutations, rng)
    upos = {u: i for i, u in enumerate(units)}
    by_name = {c.name: c for c in candidates}
    groups_of = {}
    for name, g in zip(chosen, tested_groups):
        groups_of.setdefault(name, []).append(g)
    parts = []
    for name, groups in groups_of.items():
        c = by_name[name]
        codes = codes_all[[upos[u] for u in c.unit]]
        parts.append(SearchlightPart(X=c.X, codes=codes, groups=c.group,
                                     test_groups=tuple(groups),
                                     units=c.unit if score_unit else None))
    res = ridge_searchlight(parts, neighbours, n_classes, alpha)
    # folds back in the evaluation's order
    order = [res.fold_groups.index(g) for g in tested_groups]
    res.fold_accuracy = res.fold_accuracy[:, order]
    res.fold_groups = list(tested_groups)
    return res


def searchlight_summary(res: SearchlightResult, mask_img, radius, alpha, chance,
                        fwe_level: float = 0.05) -> dict:
    """What ``metrics.json`` records of a searchlight: settings, sphere sizes, the peak
    and, with permutations, how many spheres survive family-wise error correction."""
    xyz = mask_coordinates(mask_img)
    peak = int(np.argmax(res.accuracy))
    p = res.p_fwe()
    n_perm = 0 if res.null_max is None else len(res.null_max)
    return {
        "radius_mm": float(radius),
        "alpha": float(alpha),
        "estimator": "ridge classifier (one-vs-rest, fixed alpha) per sphere, on the "
                     "samples chosen for each fold",
        "n_spheres": len(res.accuracy),
        "voxels_per_sphere": {"min": int(res.sizes.min()),
                              "median": float(np.median(res.sizes)),
                              "max": int(res.sizes.max())},
        "chance": chance,
        "peak_accuracy": float(res.accuracy[peak]),
        "peak_xyz_mm": [round(float(v), 2) for v in xyz[peak]],
        "mean_accuracy": float(res.accuracy.mean()),
        "n_permutations": n_perm,
        "fwe_level": fwe_level if p is not None else None,
        "n_significant_fwe": int((p <= fwe_level).sum()) if p is not None else None,
        "null_max_95": float(np.quantile(res.null_max, 0.95)) if p is not None else None,
        "peak_p_fwe": float(p[peak]) if p is not None else None,
        "accuracy_map": "searchlight_accuracy.nii.gz",
        "p_fwe_map": "searchlight_p_fwe.nii.gz" if p is not None else None,
    }
