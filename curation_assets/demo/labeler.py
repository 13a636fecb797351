"""The demo's labeling team: boxes every object in an exported round, from ground truth.

Like real labelers it makes a few mistakes on purpose, so the import shows what it
catches: on a few frames the same object is boxed twice with two different classes (a
label conflict), one box falls outside its image and one uses a class nobody asked for.
"""

from __future__ import annotations

import json

from curation_assets.core import layout
from curation_assets.core.ids import video_id_for
from curation_assets.demo.scenes import DEMO_SCENES, Scene, objects_at
from resources.object_store import ObjectStore


def annotate_round(
    store: ObjectStore, round_id: str, scenes: tuple[Scene, ...] = DEMO_SCENES, mistakes: bool = True
) -> dict:
    """Write ``annotations/{round}.json`` for the round's exported images; returns the COCO doc."""
    tasks = json.loads(store.get_bytes(layout.export_key(round_id, "coco_images.json")))
    frames = store.read_tables(layout.table_prefix("raw_frames")).set_index("frame_id")
    scene_of = {video_id_for(s.name): s for s in scenes}
    cat_id = {c["name"]: c["id"] for c in tasks["categories"]}
    annotations = []

    def add(image_id: int, category_id: int, bbox) -> None:
        annotations.append(
            {
                "id": len(annotations) + 1,
                "image_id": image_id,
                "category_id": category_id,
                "bbox": list(bbox),
                "iscrowd": 0,
            }
        )

    conflicts = 0
    for image in tasks["images"]:
        frame = frames.loc[image["frame_id"]]
        scene = scene_of.get(frame["video_id"])
        if scene is None:
            continue
        for category, box in objects_at(scene, float(frame["timestamp_s"])):
            add(image["id"], cat_id[category], box)
            if mistakes and conflicts < 2:  # a second labeler disagrees on the class
                other = next(c for c in cat_id if c != category)
                add(image["id"], cat_id[other], box)
                conflicts += 1
    if mistakes and tasks["images"]:
        first = tasks["images"][0]
        add(first["id"], 1, [first["width"] - 5, 10, 40, 40])  # runs off the right edge
        add(first["id"], 99, [10, 10, 20, 20])  # a class that was never asked for
    doc = {"images": tasks["images"], "categories": tasks["categories"], "annotations": annotations}
    store.put_bytes(f"{layout.ANNOTATIONS_PREFIX}/{round_id}.json", json.dumps(doc, indent=1).encode())
    return doc
