"""Where each thing lives under the storage root (README.md, Architecture: the storage layout)."""

from __future__ import annotations

from pathlib import Path


def frame_prefix(video_id: str) -> str:
    return f"frames/{video_id}/"


def frame_key(video_id: str, frame_index: int) -> str:
    return f"{frame_prefix(video_id)}{frame_index:06d}.jpg"


def table_key(asset: str, partition: str = "all") -> str:
    return f"tables/{asset}/{partition}.parquet"


def table_prefix(asset: str) -> str:
    return f"tables/{asset}"


def partition_of(table: str, asset: str) -> str:
    """Inverse of ``table_key``: the partition a table key belongs to."""
    return table[len(table_prefix(asset)) + 1 : -len(".parquet")]


def state_key(asset: str) -> str:
    """What a global asset was last built from (its inputs' fingerprints and settings)."""
    return f"tables/{asset}/_state.json"


def rejected_table_key(asset: str, partition: str = "all") -> str:
    """Tables that failed a blocking check: kept for inspection, never read downstream."""
    return f"tables/_rejected/{asset}/{partition}.parquet"


def export_key(round_id: str, name: str) -> str:
    return f"exports/{round_id}/{name}"


def dataset_key(version: str, name: str) -> str:
    return f"datasets/{version}/{name}"


def report_key(name: str) -> str:
    return f"reports/{name}"


ANNOTATIONS_PREFIX = "annotations"


LANDING_PREFIX = "landing"  # the default landing zone: <root>/landing


def _location(uri: str) -> str:
    """A comparable form of a folder or ``s3://`` location, ending in "/"."""
    if uri.startswith("s3://"):
        return uri.rstrip("/") + "/"
    return str(Path(uri.removeprefix("file://")).expanduser().resolve()).rstrip("/") + "/"


def overlap_problem(root: str, landing: str, **written: str) -> str | None:
    """Why the landing zone cannot be ``landing`` with this storage root (None when it can).

    What the store writes must never lie in the landing zone, or its own frames come back as
    new image folders on every run, without end; the landing zone may lie inside the root only
    under the root's own ``landing/``. ``written`` names other places a run writes (the
    embedded vector store, the Dagster instance), which must not lie in the landing zone either.
    """
    land, base = _location(landing), _location(root)
    if land == base:
        return f"the landing zone {landing} is the storage root itself: give them separate folders"
    if base.startswith(land):
        return f"the storage root {root} lies inside the landing zone {landing}: its frames would be ingested again"
    if land.startswith(base) and not land.startswith(base + LANDING_PREFIX + "/"):
        return (f"the landing zone {landing} lies inside the storage root {root} outside its landing/ folder: "
                "the store's own files would be read as sources")  # fmt: skip
    for setting, location in written.items():
        if location and _location(location).startswith(land):
            return f"{setting} {location} lies inside the landing zone {landing}: its files would be read as sources"
    return None
