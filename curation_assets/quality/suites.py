"""The expectation suites behind every gating check, one function per table contract.

Each is written as ``name(gxe, *params)`` over the ``great_expectations.expectations``
module and called as ``name(*params)``: that gives a picklable callable taking the module,
so GX is imported only where a check runs (the validation process,
``curation_assets/runtime/validation_process.py``).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence

FRAME_COLUMNS = (
    "frame_id", "video_id", "camera_id", "frame_index", "timestamp_s", "uri", "width", "height",
    "sha256", "phash", "phash_mirror", "brightness", "contrast", "sharpness", "entropy",
    "luma_p01", "luma_p99", "mode_share", "edge_density", "coarse_detail", "broad_detail", "fine_detail",
    "pixel_correlation",
)  # fmt: skip


_SUITES: dict[str, Callable] = {}


def suite(define: Callable) -> Callable:
    """``define(gxe, *params)`` becomes ``suite(*params)``: a callable of ``gxe`` that pickles
    (a partial of a module-level function), so it can go to another process."""
    _SUITES[define.__name__] = define

    @functools.wraps(define)
    def bind(*params, **named) -> Callable[[object], Sequence]:
        return functools.partial(_expectations, define.__name__, params, named)

    return bind


def _expectations(name: str, params: tuple, named: dict, gxe) -> Sequence:
    return _SUITES[name](gxe, *params, **named)


@suite
def frame_table(gxe, min_frames: int = 1):
    return [
        *(gxe.ExpectColumnToExist(column=c) for c in FRAME_COLUMNS),
        gxe.ExpectTableRowCountToBeBetween(min_value=min_frames),
        gxe.ExpectColumnValuesToBeUnique(column="frame_id"),
        *(gxe.ExpectColumnValuesToNotBeNull(column=c) for c in FRAME_COLUMNS),
        gxe.ExpectColumnValuesToMatchRegex(column="sha256", regex=r"^[0-9a-f]{64}$"),
        gxe.ExpectColumnValuesToBeBetween(column="frame_index", min_value=0),
        gxe.ExpectColumnValuesToBeBetween(column="timestamp_s", min_value=0),
        gxe.ExpectColumnValuesToBeBetween(column="width", min_value=1),
        gxe.ExpectColumnValuesToBeBetween(column="height", min_value=1),
        gxe.ExpectColumnValuesToBeBetween(column="brightness", min_value=0, max_value=1),
        gxe.ExpectColumnValuesToBeBetween(column="contrast", min_value=0, max_value=1),
        gxe.ExpectColumnValuesToBeBetween(column="sharpness", min_value=0),
        gxe.ExpectColumnValuesToBeBetween(column="entropy", min_value=0, max_value=8),
        *(
            gxe.ExpectColumnValuesToBeBetween(column=c, min_value=0, max_value=1)
            for c in ("luma_p01", "luma_p99", "mode_share", "edge_density")
        ),  # fmt: skip
        *(
            gxe.ExpectColumnValuesToBeBetween(column=c, min_value=0)
            for c in ("coarse_detail", "broad_detail", "fine_detail")
        ),
        gxe.ExpectColumnValuesToBeBetween(column="pixel_correlation", min_value=-1, max_value=1),
    ]


@suite
def vector_summary(gxe, expected_rows: int, dim: int, id_column: str = "frame_id"):
    """Over a per-vector summary: the item's id, dim, norm, finite."""
    return [
        gxe.ExpectTableRowCountToEqual(value=expected_rows),
        gxe.ExpectColumnValuesToBeUnique(column=id_column),
        gxe.ExpectColumnValuesToBeBetween(column="dim", min_value=dim, max_value=dim),
        gxe.ExpectColumnValuesToBeInSet(column="finite", value_set=[True]),
        gxe.ExpectColumnValuesToBeBetween(column="norm", min_value=0.999, max_value=1.001),
    ]


def _each_once(gxe, column: str, ids: list[str]) -> list:
    """Every one of ``ids`` in ``column`` exactly once, and nothing else."""
    return [
        gxe.ExpectTableRowCountToEqual(value=len(ids)),
        gxe.ExpectColumnValuesToBeUnique(column=column),
        gxe.ExpectColumnValuesToBeInSet(column=column, value_set=ids),
    ]


@suite
def object_outliers(gxe, object_ids: list[str]):
    return [
        *_each_once(gxe, "object_id", object_ids),
        gxe.ExpectColumnValuesToBeInSet(column="object_group", value_set=object_ids),
        gxe.ExpectColumnValuesToNotBeNull(column="reason"),
    ]


@suite
def duplicate_groups(gxe, embedded_frame_ids: list[str]):
    return [
        *_each_once(gxe, "frame_id", embedded_frame_ids),
        gxe.ExpectColumnValuesToNotBeNull(column="group_id"),
        gxe.ExpectColumnValuesToBeInSet(
            column="reason", value_set=["unique", "representative", "exact", "temporal", "near"]
        ),
    ]


@suite
def one_representative_per_group(gxe):
    """Over a per-group summary: group_id, representatives."""
    return [gxe.ExpectColumnValuesToBeBetween(column="representatives", min_value=1, max_value=1)]


@suite
def outlier_scores(gxe, frame_ids: list[str]):
    return [
        *_each_once(gxe, "frame_id", frame_ids),
        gxe.ExpectColumnValuesToNotBeNull(column="score"),
        gxe.ExpectColumnValuesToNotBeNull(column="is_outlier"),
    ]


@suite
def flagged_fraction(gxe, ceiling: float):
    return [gxe.ExpectColumnMeanToBeBetween(column="is_outlier", min_value=0, max_value=ceiling)]


@suite
def selected_batch(gxe, expected_rows: int, excluded_frame_ids: list[str]):
    return [
        gxe.ExpectTableRowCountToEqual(value=expected_rows),
        gxe.ExpectColumnValuesToBeUnique(column="frame_id"),
        gxe.ExpectColumnValuesToBeUnique(column="group_id"),
        gxe.ExpectColumnValuesToBeInSet(column="is_outlier", value_set=[False]),
        gxe.ExpectColumnValuesToNotBeInSet(column="frame_id", value_set=excluded_frame_ids or ["-"]),
    ]


@suite
def annotations(gxe, selected_frame_ids: list[str], categories: list[str]):
    return [
        gxe.ExpectColumnValuesToBeInSet(column="frame_id", value_set=selected_frame_ids),
        gxe.ExpectColumnValuesToBeInSet(column="category", value_set=categories),
        gxe.ExpectColumnValuesToBeInSet(column="inside_image", value_set=[True]),
        gxe.ExpectColumnValuesToBeBetween(column="w", min_value=0, strict_min=True),
        gxe.ExpectColumnValuesToBeBetween(column="h", min_value=0, strict_min=True),
    ]


@suite
def splits_by_group(gxe):
    """Over a per-group summary: group_id, splits (distinct split count)."""
    return [gxe.ExpectColumnValuesToBeBetween(column="splits", min_value=1, max_value=1)]


@suite
def cleaned_dataset(gxe):
    """Over the cleaned copies: one row per (source, group) with frames, splits and corrupt."""
    return [
        gxe.ExpectColumnValuesToBeBetween(column="frames", min_value=1, max_value=1),
        gxe.ExpectColumnValuesToBeBetween(column="splits", min_value=1, max_value=1),
        gxe.ExpectColumnValuesToBeInSet(column="corrupt", value_set=[False]),
    ]


@suite
def map_points(gxe, placed: int):
    """Over the map table: each placed frame once, with finite coordinates."""
    return [
        gxe.ExpectTableRowCountToEqual(value=placed),
        gxe.ExpectColumnValuesToBeUnique(column="frame_id"),
        *(gxe.ExpectColumnValuesToNotBeNull(column=c) for c in ("x", "y")),
        *(gxe.ExpectColumnValuesToBeBetween(column=c, min_value=-1e6, max_value=1e6) for c in ("x", "y")),
    ]


@suite
def merged_images(gxe, expected_out: int):
    """Over the merged images: every image in is out or dropped, and none is there twice."""
    return [
        gxe.ExpectTableRowCountToEqual(value=expected_out),
        gxe.ExpectColumnValuesToBeUnique(column="frame_id"),
        gxe.ExpectColumnValuesToBeUnique(column="group_id"),
    ]
