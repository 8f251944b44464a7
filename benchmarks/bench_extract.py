"""Labels extraction: ``extract_labels`` vs nilearn's ``NiftiLabelsMasker``.

Generates synthetic 2 mm MNI-shaped runs (91 x 109 x 91, int16, gzip level 1
as nibabel writes them) and a 200-region atlas in a temporary folder, then
times, run by run and interleaved (so a load spike on a shared machine hits
every method alike):

* ``decompress_s``: stdlib ``gzip.decompress`` of each file (read included),
  the floor any extractor reading these files with the stdlib has to pay;
* ``ours_s``: :func:`decoder.features.extract.extract_labels`;
* ``anchor_s``: ``NiftiLabelsMasker(atlas).fit()`` then ``.transform(run)``.

It then runs the same extraction on a Dask ``LocalCluster`` with 1 and 2
worker processes (each one thread) and reports the scaling, with the load
average at start and end: on a 2-core machine shared with other work, a
second worker has no free core to use.

Every line printed is JSON; the last one is the summary::

    {"name", "ours_s", "anchor", "anchor_s", "ratio", "decompress_s", ...}

with ``ratio = anchor_s / ours_s`` (times faster than the anchor; target
>= 2) and ``decompress_ratio = ours_s / decompress_s`` (target <= 1.1).

Usage::

    python benchmarks/bench_extract.py                 # 20 runs x 200 volumes
    python benchmarks/bench_extract.py --runs 4 --volumes 100 --no-dask
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import shutil
import sys
import tempfile
import time
import warnings
import zlib
from pathlib import Path

import nibabel as nib
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

SHAPE = (91, 109, 91)
AFFINE = np.array([[-2.0, 0, 0, 90], [0, 2.0, 0, -126], [0, 0, 2.0, -72], [0, 0, 0, 1]])


def emit(obj) -> None:
    print(json.dumps(obj), flush=True)


def brain_mask() -> np.ndarray:
    """An ellipsoid the size of the MNI brain (~244k of 903k voxels)."""
    grid = np.indices(SHAPE, dtype=np.float32)
    centre = np.array([45, 54, 40.0])[:, None, None, None]
    radii = np.array([36, 45, 36.0])[:, None, None, None]
    return (((grid - centre) / radii) ** 2).sum(axis=0) <= 1


def make_atlas(path: Path, n_regions: int, seed: int = 0) -> None:
    """Voronoi parcellation of the brain mask into ``n_regions`` labels."""
    from scipy.spatial import cKDTree

    rng = np.random.default_rng(seed)
    mask = brain_mask()
    coords = np.argwhere(mask)
    seeds = coords[rng.choice(len(coords), n_regions, replace=False)]
    _, nearest = cKDTree(seeds).query(coords)
    labels = np.zeros(SHAPE, dtype=np.int16)
    labels[tuple(coords.T)] = nearest + 1
    nib.save(nib.Nifti1Image(labels, AFFINE), path)


def make_run(path: Path, n_volumes: int, dtype: str, seed: int) -> None:
    """A BOLD-like run: per-voxel baseline + slow drift + noise in the brain, zero outside."""
    rng = np.random.default_rng(seed)
    mask = brain_mask()
    n_in = int(mask.sum())
    drift = np.linspace(0, 15, n_volumes).round()
    if np.dtype(dtype).kind == "i":
        # integer noise straight from the generator: 15x cheaper than normal() + cast
        inside = rng.integers(-35, 36, size=(n_in, n_volumes), dtype=np.int16)
        inside += rng.integers(500, 1100, size=(n_in, 1), dtype=np.int16)
        inside += drift.astype(np.int16)
    else:
        inside = rng.normal(0, 20, size=(n_in, n_volumes)).astype(np.float32)
        inside += rng.normal(800, 120, size=(n_in, 1)).astype(np.float32)
        inside += drift.astype(np.float32)
    data = np.zeros(SHAPE + (n_volumes,), dtype=np.dtype(dtype))
    data[mask] = inside
    img = nib.Nifti1Image(data, AFFINE)
    img.header.set_data_dtype(dtype)
    nib.save(img, path)  # nibabel's gzip level (1), like fMRIPrep outputs


def time_it(func):
    t0 = time.perf_counter()
    out = func()
    return time.perf_counter() - t0, out


def _warm_worker(run, atlas):
    """Import the package and index the atlas in a worker process."""
    from decoder.features.extract import extract_labels
    extract_labels(run, atlas)


def dask_scaling(runs, atlas, workers_list):
    """Seconds to extract every run on a LocalCluster with each worker count."""
    from distributed import LocalCluster

    from decoder.compute import get_backend
    from decoder.features.extract import extract_subjects

    subjects = {p.stem: p for p in runs}
    out = {}
    reference = None
    for n_workers in workers_list:
        with LocalCluster(n_workers=n_workers, threads_per_worker=1, processes=True,
                          host="127.0.0.1", dashboard_address=None) as cluster, \
                get_backend(cluster.scheduler_address) as backend:
            # warm every worker (imports, atlas index) outside the timing
            backend.client.run(_warm_worker, str(runs[0]), str(atlas))
            seconds, result = time_it(lambda: extract_subjects(subjects, atlas, backend=backend,
                                                               progress=False))
        if not result.ok:
            raise SystemExit(f"dask run failed: {result.summary()}")
        if reference is None:
            reference = result.results
        else:
            same = all(np.array_equal(reference[k], result.results[k]) for k in reference)
            if not same:
                raise SystemExit("dask results differ between worker counts")
        out[n_workers] = seconds
        emit({"phase": "dask", "n_workers": n_workers, "seconds": round(seconds, 3)})
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=int, default=20)
    p.add_argument("--volumes", type=int, default=200)
    p.add_argument("--regions", type=int, default=200)
    p.add_argument("--dtype", default="int16", choices=["int16", "float32"])
    p.add_argument("--workdir", help="folder for the synthetic files (default: a temp folder)")
    p.add_argument("--keep", action="store_true", help="keep the synthetic files")
    p.add_argument("--no-dask", action="store_true", help="skip the 1- vs 2-worker scaling")
    args = p.parse_args(argv)

    from joblib import Parallel, delayed
    from nilearn.maskers import NiftiLabelsMasker

    from decoder.features.extract import CODEC, extract_labels

    load_start = os.getloadavg()[0]
    work = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="bench_extract_"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        atlas = work / "atlas.nii.gz"
        runs = [work / f"run-{i:02d}_bold.nii.gz" for i in range(args.runs)]
        t_gen, _ = time_it(lambda: (make_atlas(atlas, args.regions), Parallel(n_jobs=2)(
            delayed(make_run)(r, args.volumes, args.dtype, i) for i, r in enumerate(runs)
            if not r.exists())))
        size_mb = sum(r.stat().st_size for r in runs) / 1e6
        emit({"phase": "generate", "runs": args.runs, "volumes": args.volumes,
              "shape": list(SHAPE), "dtype": args.dtype, "regions": args.regions,
              "compressed_mb": round(size_mb, 1), "seconds": round(t_gen, 1)})

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # nilearn's FutureWarnings
            masker = NiftiLabelsMasker(str(atlas)).fit()
            extract_labels(runs[0], atlas)  # index the atlas once, as the fitted masker has
            totals = {"decompress": 0.0, "zlib": 0.0, "ours": 0.0, "anchor": 0.0}
            max_rel = 0.0
            for run in runs:
                t_dec, _ = time_it(lambda: gzip.decompress(run.read_bytes()))
                t_zlib, _ = time_it(lambda: zlib.decompress(run.read_bytes(), 31))
                t_ours, ours = time_it(lambda: extract_labels(run, atlas))
                t_anchor, ref = time_it(lambda: masker.transform(str(run)))
                rel = float(np.abs(ours - ref).max() / np.abs(ref).max())
                max_rel = max(max_rel, rel)
                for k, v in zip(totals, (t_dec, t_zlib, t_ours, t_anchor)):
                    totals[k] += v
                emit({"phase": "run", "file": run.name, "decompress_s": round(t_dec, 3),
                      "zlib_decompress_s": round(t_zlib, 3), "ours_s": round(t_ours, 3),
                      "anchor_s": round(t_anchor, 3), "max_rel_diff": rel})

        scaling = {} if args.no_dask else dask_scaling(runs, atlas, [1, 2])
        summary = {
            "name": "extract_labels",
            "ours_s": round(totals["ours"], 3),
            "anchor": "nilearn.maskers.NiftiLabelsMasker",
            "anchor_s": round(totals["anchor"], 3),
            "ratio": round(totals["anchor"] / totals["ours"], 3),
            "decompress_s": round(totals["decompress"], 3),
            "decompress_ratio": round(totals["ours"] / totals["decompress"], 3),
            "zlib_decompress_s": round(totals["zlib"], 3),
            "codec": CODEC,
            "max_rel_diff": max_rel,
            "runs": args.runs, "volumes": args.volumes, "shape": list(SHAPE),
            "dtype": args.dtype, "regions": args.regions,
            "compressed_mb": round(size_mb, 1),
            "cpu_count": os.cpu_count(),
            # other processes competing for the cores make scaling unmeasurable
            "loadavg_1min_start_end": [round(load_start, 2), round(os.getloadavg()[0], 2)],
        }
        if scaling:
            summary.update({"dask_1_worker_s": round(scaling[1], 3),
                            "dask_2_workers_s": round(scaling[2], 3),
                            "dask_speedup_2_vs_1": round(scaling[1] / scaling[2], 3)})
        emit(summary)
    finally:
        if not args.keep and not args.workdir:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
