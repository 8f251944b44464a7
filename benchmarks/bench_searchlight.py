"""Searchlight: ours vs nilearn's SearchLight with the same estimator and folds.

Both compute, for every voxel of the mask, the leave-one-run-out accuracy of a
ridge classifier (``RidgeClassifier(alpha=1)``) on the sphere of voxels within
the radius:

* ours: :func:`decoder.evaluation.searchlight.ridge_searchlight` (per-run
  sufficient statistics, all spheres solved in batches);
* anchor: ``nilearn.decoding.SearchLight(estimator=RidgeClassifier(alpha=1),
  cv=LeaveOneGroupOut(), n_jobs=1)``, the scikit-learn fit per sphere and fold.

Cases:

* ``haxby-slice``: the real Haxby slice (embedded sample, or ``--data``), all
  8 categories, volumes 5 s after onset, radius 6 mm; the whole map is computed
  by both, and ``max_abs_diff`` compares them (nilearn averages the folds'
  accuracies, so ours is compared as the same average);
* ``whole-brain-size``: synthetic data of a whole brain's size (3 mm voxels,
  about 47,000 in the mask, 864 volumes in 12 runs, 8 classes), radius 6 mm
  (33 voxels a sphere).  nilearn is timed on a random subset of spheres and
  its time scaled to all of them (``anchor_s`` says so in ``anchor``).

One JSON line per case:
``{"name", "ours_s", "anchor", "anchor_s", "ratio", "max_abs_diff", "n_spheres",
"radius_mm", "ours_peak_accuracy"}``.

    python benchmarks/bench_searchlight.py [--data DIR] [--cases haxby-slice,whole-brain-size]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
warnings.filterwarnings("ignore")

RADIUS = 6.0
ALPHA = 1.0


def _nilearn(imgs, y, runs, mask_img, process_mask_img=None):
    from nilearn.decoding import SearchLight
    from sklearn.linear_model import RidgeClassifier
    from sklearn.model_selection import LeaveOneGroupOut
    t0 = time.perf_counter()
    sl = SearchLight(mask_img, process_mask_img=process_mask_img, radius=RADIUS,
                     estimator=RidgeClassifier(alpha=ALPHA), cv=LeaveOneGroupOut(), n_jobs=1)
    sl.fit(imgs, y, groups=runs)
    return time.perf_counter() - t0, sl.scores_


def _ours(X, codes, runs, mask_img, n_classes):
    from decoder.evaluation.searchlight import (
        SearchlightPart,
        ridge_searchlight,
        sphere_neighbours,
    )
    t0 = time.perf_counter()
    A = sphere_neighbours(mask_img, RADIUS)
    res = ridge_searchlight([SearchlightPart(X, codes[:, None], runs, tuple(np.unique(runs)))],
                            A, n_classes, alpha=ALPHA)
    return time.perf_counter() - t0, res


def case_slice(data):
    from decoder.data.bids import find_mask, find_runs, load_mask
    from decoder.data.samples import sample_path
    from decoder.features.task import load_task_data, select_classes, volume_samples

    root = Path(data) if data else sample_path()
    runs = find_runs(root, "objectviewing")
    mask_path = find_mask(root, runs[0].subject, "auto")
    td = load_task_data(runs, load_mask(mask_path), mask_path)
    classes = select_classes(td.blocks, "all")
    X, y, run, _, _ = volume_samples(td, classes, 5.0)
    codes = np.array([classes.index(v) for v in y])
    ours_s, res = _ours(X, codes, run, td.mask_img, len(classes))
    anchor_s, scores = _nilearn(td.masker.inverse_transform(X), y, run, td.mask_img)
    theirs = scores[np.asarray(td.mask_img.dataobj).astype(bool)]
    diff = float(np.abs(res.fold_accuracy.mean(axis=1) - theirs).max())
    return {"name": "searchlight-haxby-slice", "ours_s": round(ours_s, 3),
            "anchor": "nilearn SearchLight(RidgeClassifier(alpha=1), LeaveOneGroupOut)",
            "anchor_s": round(anchor_s, 3), "ratio": round(anchor_s / ours_s, 1),
            "max_abs_diff": diff, "n_spheres": len(res.accuracy), "radius_mm": RADIUS,
            "ours_peak_accuracy": round(float(res.accuracy.max()), 4)}


def case_size(seed=0, n_anchor_spheres=150):
    import nibabel as nib

    rng = np.random.default_rng(seed)
    shape = (53, 63, 46)
    ijk = np.indices(shape).reshape(3, -1).T
    centre, radii = (np.array(shape) - 1) / 2, np.array([22.0, 27.0, 19.0])
    inside = (((ijk - centre) / radii) ** 2).sum(axis=1) <= 1
    mask = inside.reshape(shape).astype(np.int8)
    affine = np.diag([3.0, 3.0, 3.0, 1.0])
    mask_img = nib.Nifti1Image(mask, affine)
    n_vox = int(mask.sum())
    n_runs, n_classes, per_class = 12, 8, 9
    codes = np.tile(np.repeat(np.arange(n_classes), per_class), n_runs)
    runs = np.repeat(np.arange(n_runs), n_classes * per_class)
    X = rng.standard_normal((len(codes), n_vox)).astype(np.float32)
    # a category signal in one blob of voxels
    coords = ijk[inside]
    blob = np.flatnonzero(((coords - centre - [8, -10, 0]) ** 2).sum(axis=1) <= 16)
    X[:, blob] += 0.8 * rng.standard_normal((n_classes, len(blob)))[codes].astype(np.float32)
    ours_s, res = _ours(X, codes, runs, mask_img, n_classes)
    # nilearn on a random subset of spheres, its time scaled to all of them
    pick = rng.choice(n_vox, n_anchor_spheres, replace=False)
    data = np.zeros(shape, dtype=np.int8)
    data[tuple(coords[pick].T)] = 1
    proc_img = nib.Nifti1Image(data, affine)
    imgs = nib.Nifti1Image(_unmask(X, mask), affine)
    anchor_part_s, scores = _nilearn(imgs, codes, runs, mask_img, proc_img)
    theirs = scores[tuple(coords[pick].T)]
    diff = float(np.abs(res.fold_accuracy[pick].mean(axis=1) - theirs).max())
    anchor_s = anchor_part_s * n_vox / n_anchor_spheres
    return {"name": "searchlight-whole-brain-size", "ours_s": round(ours_s, 3),
            "anchor": f"nilearn SearchLight(RidgeClassifier(alpha=1), LeaveOneGroupOut), "
                      f"timed on {n_anchor_spheres} random spheres and scaled to all",
            "anchor_s": round(anchor_s, 1), "ratio": round(anchor_s / ours_s, 1),
            "max_abs_diff": diff, "n_spheres": n_vox, "radius_mm": RADIUS,
            "ours_peak_accuracy": round(float(res.accuracy.max()), 4)}


def _unmask(X, mask):
    out = np.zeros(mask.shape + (len(X),), dtype=np.float32)
    out[mask.astype(bool)] = X.T
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", help="a copy of the Haxby slice (default: the embedded sample)")
    ap.add_argument("--cases", default="haxby-slice,whole-brain-size")
    args = ap.parse_args(argv)
    cases = args.cases.split(",")
    results = []
    if "whole-brain-size" in cases:
        results.append(case_size())
        print(json.dumps(results[-1]), flush=True)
    if "haxby-slice" in cases:
        results.append(case_slice(args.data))
        print(json.dumps(results[-1]), flush=True)
    return results


if __name__ == "__main__":
    main()
