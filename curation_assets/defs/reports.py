"""Pictures for the UI: a full-size PNG under reports/ and a small inline preview."""

import base64
from collections.abc import Sequence

import dagster as dg
import numpy as np
import pandas as pd

from curation_assets.core import layout
from curation_assets.core.contact_sheet import PER_ROW, THUMB, contact_sheet, embedding_map, thumbnail_png
from curation_assets.core.frames import decode_image
from curation_assets.core.maps import pca_plane
from resources.object_store import ObjectStore


def frame_rows(store: ObjectStore, rows: Sequence[tuple[str, Sequence[str]]]):
    """(label, frame URIs) -> (label, images), loading only the pictures a row shows."""
    return [
        (label, [decode_image(store.get_bytes(store.key_for_uri(u)), THUMB) for u in uris[:PER_ROW]])
        for label, uris in rows
    ]


def picture_metadata(
    store: ObjectStore, name: str, rows: Sequence[tuple[str, Sequence[str]]], file_name: str | None = None
) -> dict:
    return png_metadata(store, name, contact_sheet(frame_rows(store, rows)), file_name)


def embedding_map_metadata(store: ObjectStore, vectors, cameras, selected, labeled, file_name: str) -> dict:
    """A 2-D PCA map of the embeddings coloured by camera, with the batch and labeled frames marked."""
    png = embedding_map(pca_plane(vectors), list(cameras), np.asarray(selected), np.asarray(labeled))
    return png_metadata(store, "embedding_map", png, file_name)


def png_metadata(store: ObjectStore, name: str, png: bytes, file_name: str | None = None) -> dict:
    key = layout.report_key(file_name or f"{name}.png")
    store.put_bytes(key, png)
    preview = base64.b64encode(thumbnail_png(png)).decode()
    return {
        f"{name}_preview": dg.MetadataValue.md(f"![{name}](data:image/png;base64,{preview})"),
        f"{name}_report": dg.MetadataValue.path(store.uri(key)),
    }


def largest_groups(frames: pd.DataFrame, groups: pd.DataFrame, n: int = 6) -> list[tuple[str, list[str]]]:
    """The ``n`` largest duplicate groups: representative first, then members by similarity."""
    table = groups.merge(frames[["frame_id", "uri"]], on="frame_id")
    top = table.drop_duplicates("group_id").nlargest(n, "group_size")["group_id"]
    rows = []
    for group_id in top:
        members = table[table["group_id"] == group_id].sort_values(
            ["is_representative", "similarity"], ascending=[False, False]
        )
        reasons = members["reason"].value_counts().drop(["representative"], errors="ignore").to_dict()
        label = f"{len(members)} frames, rep {group_id} " + " ".join(f"{k}:{v}" for k, v in reasons.items())
        rows.append((label, list(members["uri"])))
    return rows


def outliers_by_reason(
    frames: pd.DataFrame, scored: pd.DataFrame, reasons: Sequence[str]
) -> list[tuple[str, list[str]]]:
    table = scored.merge(frames[["frame_id", "uri"]], on="frame_id")
    rows = []
    for reason in reasons:
        flagged = table[table[reason]].sort_values("score", ascending=False)
        if len(flagged):
            rows.append((f"{reason}: {len(flagged)} frames", list(flagged["uri"])))
    return rows
