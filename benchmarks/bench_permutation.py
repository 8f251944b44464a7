"""1,000 permutations of the full nested leave-one-run-out evaluation.

Synthetic Haxby-size data (60,000 voxels × 726 volumes, 8 classes, 12 runs).
Every permutation reruns the whole procedure, inner penalty selection
included; labels are permuted by block within runs.  The anchor is the
same evaluation run one permutation at a time (measured on a few
permutations and extrapolated), i.e. what a loop around any refitting
estimator costs.

    python benchmarks/bench_permutation.py [--n-permutations 1000]

Last line: ``{"name", "n_permutations", "seconds", "p_value"}`` (plus anchor fields).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))


def main(argv=None):
    from _synthetic import haxby_size
    from decoder.evaluation.nested import SampleSet, nested_dual_ridge, permutation_p_value

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n-permutations", type=int, default=1000)
    ap.add_argument("--anchor-permutations", type=int, default=3)
    args = ap.parse_args(argv)

    X, y, run, block = haxby_size()
    units = {int(b): int(c) for b, c in zip(block, y)}
    unit_run = {int(b): int(r) for b, r in zip(block, run)}
    n_classes = int(y.max()) + 1

    t0 = time.perf_counter()
    sset = SampleSet(X=X, unit=block, run=run, group=run, name="volumes")
    res = nested_dual_ridge([sset], units, unit_run, n_classes,
                            n_permutations=args.n_permutations, random_state=0)
    seconds = time.perf_counter() - t0
    p = permutation_p_value(res["observed"], res["null"])

    # anchor: the same nested evaluation, one label vector at a time (Gram reused)
    t1 = time.perf_counter()
    for k in range(args.anchor_permutations):
        nested_dual_ridge([sset], units, unit_run, n_classes, n_permutations=0, random_state=k)
    per_perm = (time.perf_counter() - t1) / args.anchor_permutations
    anchor_s = per_perm * (1 + args.n_permutations)
    print(json.dumps({"name": "permutation-haxby-size", "n_permutations": args.n_permutations,
                      "seconds": round(seconds, 2), "p_value": p,
                      "accuracy": round(res["observed"], 4),
                      "null_mean": round(float(np.mean(res["null"])), 4),
                      "anchor": "one-at-a-time loop (extrapolated)",
                      "anchor_s": round(anchor_s, 1),
                      "ratio": round(anchor_s / seconds, 1)}))


if __name__ == "__main__":
    main()
