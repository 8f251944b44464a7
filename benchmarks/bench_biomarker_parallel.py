"""Cross-validation folds of the default ABIDE biomarker in parallel processes, on the real data.

The leave-site-out evaluation of ``configs/abide.yaml`` (20 folds, ComBat, two-kind
ensemble, reliability weights, ridge, calibration) with ``compute.n_jobs`` processes
(ours) against the same evaluation in one process (the anchor), in the same run, on the
same covariances; the held-out probabilities must be identical.

    DECODER_SHARED_DATA=../shared/data python benchmarks/bench_biomarker_parallel.py \
        [--n-jobs 2] [--cv leave-site-out]

Last line: ``{"name", "n_jobs", "cv", "ours_s", "anchor", "anchor_s", "ratio",
"identical", "accuracy", "n_folds"}``.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))


def main(argv=None):
    from _abide import default_inputs
    from pipelines import biomarker

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=None, help="ABIDE root (default: "
                    "$DECODER_SHARED_DATA/abide_pcp)")
    ap.add_argument("--n-jobs", type=int, default=os.cpu_count() or 2)
    ap.add_argument("--cv", default="leave-site-out")
    args = ap.parse_args(argv)
    d = default_inputs(args.data)
    cfg, covs, halves, diag, sites, cov = d.cfg, d.covs, d.halves, d.diag, d.sites, d.cov
    cfg["cv"] = args.cv

    timings, probas = {}, {}
    for n_jobs in (1, args.n_jobs):
        run_cfg = copy.deepcopy(cfg)
        run_cfg["compute"].update(n_jobs=n_jobs, progress=False)
        t0 = time.perf_counter()
        probas[n_jobs], folds = biomarker.cross_validate(run_cfg, covs, diag, sites, cov,
                                                         halves=halves)
        timings[n_jobs] = time.perf_counter() - t0
    proba = np.nanmean(probas[args.n_jobs], axis=0)
    print(json.dumps({"name": "biomarker-parallel-folds", "n_jobs": args.n_jobs,
                      "cv": args.cv,
                      "ours_s": round(timings[args.n_jobs], 1),
                      "anchor": "the same folds in one process (n_jobs=1)",
                      "anchor_s": round(timings[1], 1),
                      "ratio": round(timings[1] / timings[args.n_jobs], 2),
                      "identical": bool(np.array_equal(probas[1], probas[args.n_jobs])),
                      "accuracy": round(float(np.mean((proba > 0.5)
                                                      == (diag == biomarker.POSITIVE))), 4),
                      "n_folds": len(folds)}))


if __name__ == "__main__":
    main()
