"""labeled_set: labels brought back from the labeling tool, validated, split and versioned."""

import json

import dagster as dg
import pandas as pd
from pydantic import Field

from curation_assets.core import labels, layout
from curation_assets.defs import checks
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
    selected = store.read_tables(layout.table_prefix("selected_batch"))
    if selected is None:
        raise dg.Failure("no selected batch yet: materialize a selected_batch round first", allow_retries=False)
    rounds = sorted(selected["round"].unique())
    categories = round_categories(store, rounds)
    imports = import_all(store, config.annotations_prefix, selected, categories)
    if not imports:
        raise dg.Failure(f"no annotation files under {store.uri(config.annotations_prefix)}", allow_retries=False)
    groups = store.read_table(layout.table_key("duplicate_groups")).set_index("frame_id")["group_id"]
    fractions = (("train", config.train_fraction), ("val", config.val_fraction), ("test", config.test_fraction))
    found = labels.assemble_labeled_set(
        selected, imports, groups, fractions, config.split_by_video, previous_splits(store)
    )
    frames, accepted, rejected = found.frames, found.accepted, found.rejected
    conflicts, disagreeing, rare = found.conflicts, found.disagreeing_groups, found.rare_labels
    per_class = accepted["category"].value_counts()
    results = [
        checks.from_validation(
            "labeled_set_annotations_valid",
            expectations.validate(accepted, "annotations", suites.annotations(list(frames["frame_id"]), categories)),
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
            found.rejected_fraction <= config.max_rejected_fraction,
            rejected_fraction=round(found.rejected_fraction, 3),
            limit=config.max_rejected_fraction,
        ),
        checks.from_assertion(
            "labeled_set_labels_consistent",
            conflicts.empty and disagreeing.empty,
            severity=dg.AssetCheckSeverity.WARN,
            same_object_conflicts=len(conflicts),
            conflict_examples=dg.MetadataValue.json(conflicts.head(10).to_dict("records"))
            if len(conflicts)
            else "none",
            disagreeing_groups=len(disagreeing),
            group_class_counts=dg.MetadataValue.json(disagreeing.head(10).to_dict("records"))
            if len(disagreeing)
            else "none",
            rare_label_frames=dg.MetadataValue.json(rare.head(20).to_dict("records")) if len(rare) else "none",
        ),
    ]
    metadata = {
        "rounds": dg.MetadataValue.json(rounds),
        "labeled_frames": len(frames),
        "annotations_accepted": len(accepted),
        "annotations_rejected": len(rejected),
        "rejected": dg.MetadataValue.json(rejected.head(20).to_dict("records")),
        "label_conflicts": len(conflicts),
        "disagreeing_groups": len(disagreeing),
        "per_class": dg.MetadataValue.json(per_class.to_dict()),
        "class_imbalance": round(float(per_class.max() / per_class.min()), 2) if len(per_class) else None,
        "per_split": dg.MetadataValue.json(frames["split"].value_counts().to_dict()),
    }
    verdict = checks.publish(
        store,
        results,
        ASSET,
        "annotations",
        accepted,
        more_tables={"rejected": rejected, "frames": frames},
        # the dataset version first: published annotations always have their dataset
        first=lambda: publish_labeled_version(store, frames, accepted, categories, rounds),
    )
    if not verdict.published:  # the previous labeled set and versions stay as they were
        return dg.MaterializeResult(metadata={**metadata, "published": False}, check_results=results)
    version, existed = verdict.written
    return dg.MaterializeResult(
        metadata={
            **metadata,
            "dataset_version": version,
            "dataset_unchanged": existed,
            "dataset": dg.MetadataValue.path(store.uri(layout.dataset_key(version, ""))),
            "published": True,
        },
        check_results=results,
    )
