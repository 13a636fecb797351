"""labeled_set: labels brought back from the labeling tool, validated, split and versioned."""

import json

import dagster as dg
import pandas as pd
from pydantic import Field

from curation_assets.core import labels, layout
from curation_assets.defs import checks
from curation_assets.defs.curation import read_groups
from curation_assets.defs.retries import TRANSIENT, transient_only
from curation_assets.defs.versions import publish_labeled_version
from curation_assets.quality import suites
from resources import ExpectationsResource, ObjectStoreResource
from resources.object_store import ObjectStore

ASSET = "labeled_set"


class LabeledSetConfig(dg.Config):
    annotations_prefix: str = Field(
        default=layout.ANNOTATIONS_PREFIX,
        description="Where the labeling tool's results are dropped: COCO (*.json) or "
        "SageMaker Ground Truth output manifests (*.manifest, *.jsonl).",
    )
    train_fraction: float = dict(labels.SPLITS)["train"]
    val_fraction: float = dict(labels.SPLITS)["val"]
    test_fraction: float = dict(labels.SPLITS)["test"]
    split_by_video: bool = Field(default=False, description="Also keep every video in one split.")
    max_rejected_fraction: float = Field(
        default=0.5, description="Fail the import (publish nothing) when more annotations than this are rejected."
    )

    def fractions(self) -> tuple[tuple[str, float], ...]:
        return (("train", self.train_fraction), ("val", self.val_fraction), ("test", self.test_fraction))


def round_categories(store: ObjectStore, rounds: list[str]) -> list[str]:
    names: list[str] = []
    for round_id in rounds:
        for cat in json.loads(store.get_bytes(layout.export_key(round_id, "coco_images.json")))["categories"]:
            if cat["name"] not in names:
                names.append(cat["name"])
    return names


def import_all(store: ObjectStore, prefix: str, selected: pd.DataFrame, categories: list[str]):
    results = []
    for obj in store.list(prefix):
        text = store.get_bytes(obj.key).decode("utf-8", "replace")
        if obj.key.endswith(".json"):
            results.append(labels.import_coco(text, obj.key, selected, categories))
        elif obj.key.endswith((".manifest", ".jsonl")):
            results.append(labels.import_sagemaker(text, obj.key, selected, categories))
    return results


def previous_splits(store: ObjectStore) -> dict[str, str]:
    key = layout.table_key(ASSET, "frames")
    return dict(store.read_table(key)[["frame_id", "split"]].itertuples(index=False)) if store.exists(key) else {}


def _selected_rounds(store: ObjectStore) -> tuple[pd.DataFrame, list[str], list[str]]:
    """Every round's batch, the rounds, and the categories their exports offered the labelers."""
    selected = store.read_tables(layout.table_prefix("selected_batch"))
    if selected is None:
        raise dg.Failure("no selected batch yet: materialize a selected_batch round first", allow_retries=False)
    rounds = sorted(selected["round"].unique())
    return selected, rounds, round_categories(store, rounds)


def _records_or_none(table: pd.DataFrame, rows: int) -> dg.MetadataValue | str:
    return dg.MetadataValue.json(table.head(rows).to_dict("records")) if len(table) else "none"


def _label_checks(
    expectations: ExpectationsResource, found: labels.LabeledSet, categories: list[str], max_rejected_fraction: float
) -> list[dg.AssetCheckResult]:
    accepted, rejected = found.accepted, found.rejected
    frame_ids = list(found.frames["frame_id"])
    return [
        checks.from_validation(
            "labeled_set_annotations_valid",
            expectations.validate(accepted, "annotations", suites.annotations(frame_ids, categories)),
            accepted=len(accepted),
            rejected=len(rejected),
            rejected_examples=list(rejected["reason"][:10]) or "none",
        ),
        checks.from_validation(
            "labeled_set_groups_in_one_split",
            expectations.validate(found.splits_per_group, "splits", suites.splits_by_group(), "group_id"),
        ),
        checks.from_assertion(
            "labeled_set_rejections_under_limit",
            found.rejected_fraction <= max_rejected_fraction,
            rejected_fraction=round(found.rejected_fraction, 3),
            limit=max_rejected_fraction,
        ),
        checks.from_assertion(
            "labeled_set_labels_consistent",
            found.conflicts.empty and found.disagreeing_groups.empty,
            severity=dg.AssetCheckSeverity.WARN,
            same_object_conflicts=len(found.conflicts),
            conflict_examples=_records_or_none(found.conflicts, 10),
            disagreeing_groups=len(found.disagreeing_groups),
            group_class_counts=_records_or_none(found.disagreeing_groups, 10),
            rare_label_frames=_records_or_none(found.rare_labels, 20),
        ),
    ]


def _describe_labeled_set(store: ObjectStore, rounds: list[str], found: labels.LabeledSet, verdict: checks.Verdict):
    per_class = found.accepted["category"].value_counts()
    metadata = {
        "rounds": dg.MetadataValue.json(rounds),
        "labeled_frames": len(found.frames),
        "annotations_accepted": len(found.accepted),
        "annotations_rejected": len(found.rejected),
        "rejected": dg.MetadataValue.json(found.rejected.head(20).to_dict("records")),
        "label_conflicts": len(found.conflicts),
        "disagreeing_groups": len(found.disagreeing_groups),
        "per_class": dg.MetadataValue.json(per_class.to_dict()),
        "class_imbalance": round(float(per_class.max() / per_class.min()), 2) if len(per_class) else None,
        "per_split": dg.MetadataValue.json(found.frames["split"].value_counts().to_dict()),
    }
    if not verdict.published:  # the previous labeled set and versions stay as they were
        return {**metadata, "published": False}
    version, existed = verdict.written
    return {
        **metadata,
        "dataset_version": version,
        "dataset_unchanged": existed,
        "dataset": dg.MetadataValue.path(store.uri(layout.dataset_key(version, ""))),
        "published": True,
    }


@dg.asset(
    retry_policy=TRANSIENT,
    deps=["selected_batch", "duplicate_groups"],
    group_name="labeling",
    kinds={"coco", "parquet"},
    check_specs=[
        checks.blocking(
            "labeled_set_annotations_valid",
            ASSET,
            "annotations reference selected frames; boxes inside images; categories known (GX)",
        ),
        checks.blocking("labeled_set_groups_in_one_split", ASSET, "no duplicate group crosses train/val/test (GX)"),
        checks.blocking(
            "labeled_set_rejections_under_limit", ASSET, "rejected annotations under the configured fraction"
        ),
        checks.warning(
            "labeled_set_labels_consistent",
            ASSET,
            "no object boxed twice with different classes; no duplicate group whose frames disagree",
        ),
    ],
)
@transient_only
def labeled_set(
    context: dg.AssetExecutionContext,
    config: LabeledSetConfig,
    object_store: ObjectStoreResource,
    expectations: ExpectationsResource,
):
    """Import the labelers' files, validate them, split by duplicate group, version the dataset.

    A failing import publishes nothing: the previous labeled set and versions stay as they were.
    """
    store = object_store.store()
    selected, rounds, categories = _selected_rounds(store)
    imports = import_all(store, config.annotations_prefix, selected, categories)
    if not imports:
        raise dg.Failure(f"no annotation files under {store.uri(config.annotations_prefix)}", allow_retries=False)
    groups = read_groups(store).set_index("frame_id")["group_id"]
    found = labels.assemble_labeled_set(
        selected, imports, groups, config.fractions(), config.split_by_video, previous_splits(store)
    )
    results = _label_checks(expectations, found, categories, config.max_rejected_fraction)
    verdict = checks.publish(
        store,
        results,
        ASSET,
        "annotations",
        found.accepted,
        more_tables={"rejected": found.rejected, "frames": found.frames},
        # the dataset version first: published annotations always have their dataset
        first=lambda: publish_labeled_version(store, found.frames, found.accepted, categories, rounds),
    )
    return dg.MaterializeResult(metadata=_describe_labeled_set(store, rounds, found, verdict), check_results=results)
