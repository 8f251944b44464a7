"""Leave-site-out permutation test of the default ABIDE biomarker, on the real data.

Each permutation shuffles the diagnoses within sites and reruns the whole
leave-site-out evaluation of ``configs/abide.yaml`` (20 folds, ComBat,
two-kind ensemble, reliability weights, ridge, calibration).  Ours fits the
label-free steps once per fold and refits only the models per permutation
(``pipelines.biomarker.permutation_test``; the same null, checked in the
tests); the anchor refits every step for every permutation (a loop around
the estimator), measured on ``--anchor-permutations`` and extrapolated.

    DECODER_SHARED_DATA=../shared/data python benchmarks/bench_biomarker_permutation.py \
        [--n-permutations 100] [--anchor-permutations 1]

Last line: ``{"name", "n_permutations", "ours_s", "anchor", "anchor_s", "ratio",
"p_value", "accuracy", "null_mean"}``.
"""

from __future__ import annotations

import argparse
import json
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
    ap.add_argument("--n-permutations", type=int, default=100)
    ap.add_argument("--anchor-permutations", type=int, default=1)
    args = ap.parse_args(argv)
    d = default_inputs(args.data)
    cfg, covs, halves, diag, sites, cov = d.cfg, d.covs, d.halves, d.diag, d.sites, d.cov
    proba, _ = biomarker.cross_validate(cfg, covs, diag, sites, cov, halves=halves)
    observed = float(np.mean((proba[0] > 0.5) == (diag == biomarker.POSITIVE)))

    t0 = time.perf_counter()
    p, null = biomarker.permutation_test(cfg, covs, diag, sites, cov, observed,
                                         args.n_permutations, halves=halves)
    ours_s = time.perf_counter() - t0

    # anchor: every step refitted for each permuted label vector (the same permutations)
    t1 = time.perf_counter()
    for perm in biomarker.within_site_permutations(diag, sites, args.anchor_permutations,
                                                   cfg["random_state"]):
        biomarker.cross_validate(cfg, covs, diag, sites, cov, labels=perm, halves=halves)
    per_perm = (time.perf_counter() - t1) / args.anchor_permutations
    anchor_s = per_perm * args.n_permutations
    print(json.dumps({"name": "biomarker-permutation-leave-site-out",
                      "n_permutations": args.n_permutations,
                      "ours_s": round(ours_s, 1),
                      "anchor": "every step refitted per permutation (extrapolated from "
                                f"{args.anchor_permutations})",
                      "anchor_s": round(anchor_s, 1),
                      "ratio": round(anchor_s / ours_s, 1),
                      "p_value": round(p, 4), "accuracy": round(observed, 4),
                      "null_mean": round(float(np.mean(null)), 4)}))


if __name__ == "__main__":
    main()
