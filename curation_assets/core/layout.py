"""Where each thing lives under the storage root (README.md, Architecture: the storage layout)."""

from __future__ import annotations


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
