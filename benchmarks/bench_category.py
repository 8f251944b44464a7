"""Category decoding: our default decoder vs nilearn's Decoder(estimator="svc").

Both are evaluated on the same leave-one-run-out folds:

* ours: the default nested dual ridge (penalty chosen inside each training
  fold; on the Haxby slice also the labelling delay and temporal window);
* anchor: for each held-out run, nilearn ``Decoder(estimator="svc")`` (ANOVA
  screening 20 %, its own C grid, C chosen on one held-out training run) is
  fitted on the training runs and predicts the held-out run.

Cases: ``haxby-slice`` (the real Haxby slice: embedded sample, or
``--data``) and ``haxby-size`` (synthetic, 60,000 voxels × 726 volumes,
8 classes, 12 runs).  One JSON line per case:
``{"name", "ours_s", "anchor", "anchor_s", "ratio", "ours_accuracy", "anchor_accuracy"}``.

    python benchmarks/bench_category.py [--data DIR] [--cases haxby-slice,haxby-size]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
warnings.filterwarnings("ignore")


def anchor_eval(X, y, run, mask_img, masker):
    """nilearn Decoder(estimator='svc') on the same leave-one-run-out folds."""
    from nilearn.decoding import Decoder
    imgs = masker.inverse_transform(X)
    correct = 0
    t0 = time.perf_counter()
    for r in np.unique(run):
        tr = np.flatnonzero(run != r)
        te = np.flatnonzero(run == r)
        train_runs = run[tr]
        inner_val = np.flatnonzero(train_runs == np.unique(train_runs)[-1])
        inner_fit = np.flatnonzero(train_runs != np.unique(train_runs)[-1])
        dec = Decoder(estimator="svc", mask=mask_img, standardize="zscore_sample",
                      screening_percentile=20, cv=[(inner_fit, inner_val)], n_jobs=1)
        from nilearn.image import index_img
        dec.fit(index_img(imgs, tr), y[tr])
        correct += int((dec.predict(index_img(imgs, te)) == y[te]).sum())
    return time.perf_counter() - t0, correct / len(y)


def case_slice(data):
    from decoder.data.bids import find_mask, find_runs, load_mask
    from decoder.data.samples import sample_path
    from decoder.features.task import load_task_data, select_classes, volume_samples
    from pipelines import resolve_config
    from pipelines.category import build_sample_sets
    from decoder.evaluation.nested import nested_dual_ridge

    root = Path(data) if data else sample_path()
    config = resolve_config({"task": "category"})
    runs = find_runs(root, "objectviewing")
    mask_path = find_mask(root, runs[0].subject, "auto")
    td = load_task_data(runs, load_mask(mask_path), mask_path)
    classes = select_classes(td.blocks, "all")
    t0 = time.perf_counter()
    sets, unit_codes, unit_run = build_sample_sets(td, config, classes, [r.key for r in runs])
    res = nested_dual_ridge(sets, unit_codes, unit_run, len(classes))
    ours_s = time.perf_counter() - t0
    ours_acc = res["observed"]
    # the anchor gets the volumes at the delay that is best on this slice (0 s),
    # i.e. the most favourable fixed choice
    X, y, run, _, _ = volume_samples(td, classes, 0.0)
    anchor_s, anchor_acc = anchor_eval(X, y, run, td.mask_img, td.masker)
    return ours_s, ours_acc, anchor_s, anchor_acc


def case_size(seed=0):
    import nibabel as nib
    from nilearn.maskers import NiftiMasker
    from _synthetic import haxby_size
    from decoder.evaluation.nested import SampleSet, nested_dual_ridge

    X, y, run, block = haxby_size(seed=seed)
    shape = (40, 40, 38)  # 60,800 voxels; the first 60,000 are in the mask
    mask = np.zeros(int(np.prod(shape)), dtype=np.uint8)
    mask[: X.shape[1]] = 1
    mask_img = nib.Nifti1Image(mask.reshape(shape), np.diag([3.0, 3.0, 3.0, 1.0]))
    masker = NiftiMasker(mask_img=mask_img).fit()
    t0 = time.perf_counter()
    units = {int(b): int(c) for b, c in zip(block, y)}
    unit_run = {int(b): int(r) for b, r in zip(block, run)}
    sset = SampleSet(X=X, unit=block, run=run, group=run, name="volumes")
    res = nested_dual_ridge([sset], units, unit_run, int(y.max()) + 1)
    ours_s = time.perf_counter() - t0
    anchor_s, anchor_acc = anchor_eval(X, y, run, mask_img, masker)
    return ours_s, res["observed"], anchor_s, anchor_acc


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", help="Haxby slice BIDS folder (default: embedded sample)")
    ap.add_argument("--cases", default="haxby-slice,haxby-size")
    args = ap.parse_args(argv)
    for name in args.cases.split(","):
        if name == "haxby-slice":
            ours_s, ours_acc, anchor_s, anchor_acc = case_slice(args.data)
        elif name == "haxby-size":
            ours_s, ours_acc, anchor_s, anchor_acc = case_size()
        else:
            raise SystemExit(f"unknown case {name}")
        print(json.dumps({"name": name, "ours_s": round(ours_s, 3),
                          "anchor": "nilearn.decoding.Decoder(estimator='svc')",
                          "anchor_s": round(anchor_s, 3), "ratio": round(anchor_s / ours_s, 2),
                          "ours_accuracy": round(ours_acc, 4),
                          "anchor_accuracy": round(anchor_acc, 4)}), flush=True)


if __name__ == "__main__":
    main()
