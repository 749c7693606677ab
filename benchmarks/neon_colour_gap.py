"""How far SOAP_061's crowns lie from anything the NEON training orthophoto labels: crown colour.

    python benchmarks/neon_colour_gap.py [--source DIR]

Reads the DeepForest source files (``raydet.data.neon_trees.find_sources``: ``--source``, else
``../shared/data/neon_trees``, else the wheel), and for every labelled crown takes the mean HSV
saturation of its box (0-255, PIL's HSV).  Prints one JSON line: per image and class the count and
the 10th / 50th / 90th saturation percentiles; how many SOAP_061 crowns are greyer than every YELL
crown; how many YELL crowns are as grey as 90% of SOAP_061's dead ones.  The YELL orthophoto's
crowns (train and val regions alike) are all the training data can show.  Dead snags are grey; the
YELL crowns are nearly all living conifers, so a detector trained on YELL has no example of most of
SOAP_061's crowns.
"""
from __future__ import annotations

import argparse
import json
import tempfile

import numpy as np
from PIL import Image

from raydet.data.neon_trees import SOAP, YELL, find_sources
from raydet.data.problems import ProblemReport
from raydet.data.voc import read_voc


def crown_saturations(folder, name: str) -> dict[str, np.ndarray]:
    """``{class name: [N] mean HSV saturation of each labelled box}`` of ``name``.xml / .png."""
    result = read_voc(str(folder / f"{name}.xml"), str(folder), ProblemReport())
    (record,) = result.records
    hsv = np.asarray(Image.open(folder / f"{name}.png").convert("RGB").convert("HSV"), dtype=np.float64)
    saturation = {cls: [] for cls in result.classes}
    for (x1, y1, x2, y2), label in zip(record["boxes"].round().astype(int), record["labels"]):
        saturation[result.classes[label]].append(hsv[y1:y2, x1:x2, 1].mean())
    return {cls: np.asarray(values) for cls, values in saturation.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--source", help="folder with the DeepForest files (default: find them)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as download_to:
        folder = find_sources(args.source, download_to)
        by_image = {"YELL": crown_saturations(folder, YELL), "SOAP_061": crown_saturations(folder, SOAP)}
    record: dict = {"benchmark": "neon_colour_gap", "saturation": {}}
    for image, classes in by_image.items():
        for cls, values in classes.items():
            record["saturation"][f"{image}/{cls}"] = {
                "crowns": len(values), "p10_p50_p90": [round(float(v), 1) for v in np.percentile(values, [10, 50, 90])]}
    greyest_yell = float(np.concatenate(list(by_image["YELL"].values())).min())
    soap = by_image["SOAP_061"]
    record["greyest_yell_crown"] = round(greyest_yell, 1)
    record["soap_061_greyer_than_every_yell_crown"] = {cls: f"{int((v < greyest_yell).sum())} of {len(v)}"
                                                       for cls, v in soap.items()}
    dead_p90 = float(np.percentile(soap["Dead"], 90))
    yell = np.concatenate(list(by_image["YELL"].values()))
    record["yell_crowns_as_grey_as_most_soap_061_dead"] = f"{int((yell <= dead_p90).sum())} of {len(yell)}"
    print(json.dumps(record))


if __name__ == "__main__":
    main()
