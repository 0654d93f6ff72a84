"""``python -m bestie show PATH --image ID -o out.png``: draw a per-image artifact.

The artifact type is recognised from the file: a pseudo-label JSON (``pseudo/train.json``)
is drawn as image | WSSS map + cues | accepted instances + centres.
"""

from __future__ import annotations

import argparse
import os

import numpy as np

from bestie.artifacts import annotations_by_image, read_cues, read_json, read_records
from bestie.data.io import read_image, read_label_map
from bestie.report.draw import draw_points, overlay_instances, overlay_label_map, save_panels


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("path", help="the artifact to draw")
    parser.add_argument("--image", required=True, help="image id or name")
    parser.add_argument("-o", "--output", required=True, help="output PNG")


def find_record(records, image: str):
    for record in records:
        if str(record.id) == image or record.name == image:
            return record
    raise ValueError(f"image {image!r} is not in the records")


def show_pseudo_labels(data: dict, image: str, output: str) -> None:
    info = data["info"]
    records, categories = read_records(info["records"])
    record = find_record(records, image)
    picture = read_image(record.file)
    semantic = read_label_map(os.path.join(info["wsss"], f"{record.name}.png"))
    cues = read_cues(info["cues"]).get(record.id, np.zeros((0, 4), np.float32))
    entries = [a for a in data["annotations"] if a["image_id"] == record.id]
    instances = annotations_by_image(entries, [record])[record.id]
    instances.centers = np.asarray([a["center"] for a in entries], np.int64).reshape(-1, 2)
    labels = ", ".join(categories[c] for c in record.classes) or "no label"
    panels = [
        picture,
        draw_points(overlay_label_map(picture, semantic), cues, colour=(255, 0, 0)),
        overlay_instances(picture, instances),
    ]
    titles = [f"{record.name} ({labels})", f"WSSS + {len(cues)} cues", f"{len(entries)} accepted"]
    save_panels(output, panels, titles)


def run(args: argparse.Namespace) -> None:
    data = read_json(args.path)
    if isinstance(data, dict) and data.get("info", {}).get("format") == "bestie.pseudo/1":
        show_pseudo_labels(data, args.image, args.output)
        return
    raise ValueError(f"{args.path}: no drawing for this kind of artifact")
