"""Datasets under ``datasets/<folder>/``: the one way they are written.

Files first, ``manifest.json`` last, so a folder without a manifest is incomplete and never
read; a complete folder is never rewritten (identical content finds its existing folder).
The labeled sets (``vNNNN``), the audit's cleaned copies and merged datasets all use it.
"""

import hashlib
import json
import re
from datetime import UTC, datetime

import pandas as pd

from curation_assets.core import labels, layout
from curation_assets.core.datasets import content_sha256
from resources.object_store import ObjectStore

LABELED_VERSION = re.compile(r"^v\d{4}$")  # the labeled sets: v0001, v0002, ...


def is_complete(store: ObjectStore, folder: str) -> bool:
    return store.exists(layout.dataset_key(folder, "manifest.json"))


def publish_dataset_files(store: ObjectStore, folder: str, files: dict[str, bytes], manifest: dict) -> bool:
    """Write ``files`` and then the manifest (with the files' hashes) unless the folder is
    already complete; returns whether it was."""
    if is_complete(store, folder):
        return True
    for name, data in files.items():
        store.put_bytes(layout.dataset_key(folder, name), data)
    manifest = {**manifest, "files": {name: hashlib.sha256(data).hexdigest() for name, data in files.items()}}
    store.put_bytes(layout.dataset_key(folder, "manifest.json"), json.dumps(manifest, indent=1).encode())
    return False


def labeled_versions(store: ObjectStore) -> list[str]:
    """The labeled sets' complete versions, oldest first."""
    keys = (obj.key.split("/") for obj in store.list("datasets"))
    return sorted({k[1] for k in keys if len(k) == 3 and k[2] == "manifest.json" and LABELED_VERSION.match(k[1])})


def publish_labeled_version(
    store: ObjectStore, frames: pd.DataFrame, annotations: pd.DataFrame, categories: list[str], rounds: list[str]
) -> tuple[str, bool]:
    """COCO files per split in ``datasets/vNNNN/``: (version, whether identical content already had it)."""
    files = {
        f"{split}.json": json.dumps(
            labels.coco_dataset(frames[frames["split"] == split], annotations, categories), indent=1, sort_keys=True
        ).encode()
        for split, _ in labels.SPLITS
    }
    content_hash = content_sha256(files)
    versions = labeled_versions(store)
    for version in versions:
        if json.loads(store.get_bytes(layout.dataset_key(version, "manifest.json")))["content_sha256"] == content_hash:
            return version, True
    version = f"v{len(versions) + 1:04d}"
    in_split = {split: frames.loc[frames["split"] == split, "frame_id"] for split, _ in labels.SPLITS}
    manifest = {
        "version": version,
        "created_at": datetime.now(UTC).isoformat(),
        "rounds": rounds,
        "content_sha256": content_hash,
        "counts": {
            split: {"images": len(ids), "annotations": int(annotations["frame_id"].isin(ids).sum())}
            for split, ids in in_split.items()
        },
    }
    publish_dataset_files(store, version, files, manifest)
    return version, False
