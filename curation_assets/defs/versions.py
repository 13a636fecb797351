"""Datasets under ``datasets/<folder>/``: the one way they are written.

Files first, ``manifest.json`` last, so a folder without a manifest is incomplete and never
read; a complete folder is never rewritten (identical content finds its existing folder).
The labeled sets (``vNNNN``), the audit's cleaned copies and merged datasets all use it.
"""

import hashlib
import json

from curation_assets.core import layout
from resources.object_store import ObjectStore


def content_sha256(files: dict[str, bytes]) -> str:
    return hashlib.sha256(b"".join(files[name] for name in sorted(files))).hexdigest()


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
