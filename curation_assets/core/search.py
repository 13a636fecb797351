"""Similarity search over stored frames: what a query may return, and its hits as a table.

The query vector comes from the embedder (an image, a stored frame's own vector, or a text
for CLIP models); the search itself is the vector store's, with payload filters. This
module holds the parts that need neither: which frames a query leaves out, and the hits.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import pandas as pd

HIT_COLUMNS = ["rank", "score", "frame_id", "video_id", "camera_id", "frame_index", "timestamp_s", "uri"]
BOX_HIT_COLUMNS = ["rank", "score", "object_id", "category", "frame_id", "video_id", "camera_id", "origin"]
ORIGINAL_COLUMNS = ["source_name", "landing_uri"]  # the user's own file, beside the stored copy's uri


class SearchError(ValueError):
    """A query that cannot be answered as asked (the message says what to change)."""


class RootMismatch(SearchError):
    """The vector store's frames are stored under another storage root than the one given."""


def stored_root(uri: str) -> str:
    """The storage root a stored frame's URI lives under (``<root>/frames/<source>/<index>.jpg``)."""
    return uri.rsplit("/frames/", 1)[0] if "/frames/" in uri else uri


def with_originals(hits: pd.DataFrame, frames: pd.DataFrame, landing_uri: Callable[[str], str]) -> pd.DataFrame:
    """Each hit with the user's own file: its name in the landing zone (an image of a folder
    or dataset, an archive's member) and, for a landing key, its URI there; "" for video
    frames, whose file is the video."""
    names = frames.drop_duplicates("frame_id").set_index("frame_id")["source_name"] if len(frames) else {}
    source = hits["frame_id"].map(names).fillna("").astype(str) if len(hits) else pd.Series([], dtype=str)
    return hits.assign(source_name=source, landing_uri=[landing_uri(name) if name else "" for name in source])


@dataclass(frozen=True)
class Query:
    """Exactly one of ``image`` (a file path or s3:// URI), ``frame`` (a stored frame id),
    ``box`` (a stored box's object id) or ``text``."""

    image: str | None = None
    frame: str | None = None
    text: str | None = None
    box: str | None = None

    def __post_init__(self):
        given = [name for name in ("image", "frame", "text", "box") if getattr(self, name)]
        if len(given) != 1:
            raise SearchError(
                f"give exactly one of an image, a frame id, a box id or a text to search by (got {len(given)})"
            )

    def describe(self) -> str:
        if self.image:
            return f"image {self.image}"
        return f"frame {self.frame}" if self.frame else f"box {self.box}" if self.box else f"text {self.text!r}"


def curation_needed(curated: dict[str, bool], exclude_outliers: bool, exclude_duplicates: bool) -> None:
    """Exclusions filter on the curation payload (flag, group role) the store keeps for every
    curated frame; before curation has run there is nothing to exclude by, which is said, not
    silently ignored. ``curated``: asset name -> whether it has been materialized."""
    if exclude_outliers and not curated["outliers"]:
        raise SearchError("excluding outliers needs the outlier flags: materialize outliers first")
    if exclude_duplicates and not curated["duplicate_groups"]:
        raise SearchError("excluding duplicates needs the duplicate groups: materialize duplicate_groups first")


def boxes_left_out(object_outliers: pd.DataFrame | None, exclude_outliers: bool, exclude_duplicates: bool) -> list[str]:
    """Box ids a query over boxes should not return: flagged boxes, and boxes that duplicate a
    kept crop (object_outliers holds both)."""
    if not (exclude_outliers or exclude_duplicates):
        return []
    if object_outliers is None:
        raise SearchError("excluding boxes needs the object_outliers table: run the curate_objects job first")
    out = object_outliers["is_outlier"] & exclude_outliers
    out |= ~object_outliers["is_representative"] & exclude_duplicates
    return sorted(object_outliers.loc[out, "object_id"])


def frames_of_split(frames: pd.DataFrame, split: str) -> list[str]:
    """Frame ids of one split (a labeled dataset's own split: train, val, test)."""
    known = sorted(s for s in frames["split"].dropna().unique() if s)
    if split not in known:
        raise SearchError(f"no frames in split {split!r}; the stored frames have {known or 'no splits'}")
    return list(frames.loc[frames["split"] == split, "frame_id"])


def hits_table(hits: list[tuple[str, float, dict]], columns: list[str] = HIT_COLUMNS) -> pd.DataFrame:
    """The store's (point id, score, payload) hits, best first, as rows with their rank."""
    rows = [{"rank": i + 1, "score": round(score, 4), **payload} for i, (_, score, payload) in enumerate(hits)]
    return pd.DataFrame(rows, columns=columns)  # payload keys beyond ``columns`` are left out
