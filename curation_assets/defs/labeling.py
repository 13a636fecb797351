"""labeled_set: labels brought back from the labeling tool, validated, split and versioned."""

import json
import re
from datetime import UTC, datetime

import dagster as dg
import pandas as pd
from pydantic import Field

from curation_assets.core import labels, layout
from curation_assets.defs import checks
from curation_assets.defs.retries import TRANSIENT, transient_only
from curation_assets.defs.versions import content_sha256, publish_dataset_files
from curation_assets.quality import suites
from resources import ExpectationsResource, ObjectStoreResource
from resources.object_store import ObjectStore

ASSET = "labeled_set"
VERSION = re.compile(r"^v\d{4}$")


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
    accepted = pd.concat([i.accepted for i in imports], ignore_index=True)
    rejected = pd.concat([i.rejected for i in imports], ignore_index=True)
    labeled = sorted({f for i in imports for f in i.labeled_frames})

    groups = store.read_table(layout.table_key("duplicate_groups")).set_index("frame_id")["group_id"]
    frames = selected[selected["frame_id"].isin(labeled)].drop_duplicates("frame_id").reset_index(drop=True)
    frames["group_id"] = frames["frame_id"].map(groups).fillna(frames["group_id"])
    fractions = (("train", config.train_fraction), ("val", config.val_fraction), ("test", config.test_fraction))
    frames["split"] = labels.assign_splits(
        frames, accepted, fractions, config.split_by_video, previous_splits(store)
    ).to_numpy()
    accepted = accepted.join(frames.set_index("frame_id")[["width", "height"]], on="frame_id")
    accepted["inside_image"] = (
        (accepted["x"] >= 0) & (accepted["y"] >= 0)
        & (accepted["x"] + accepted["w"] <= accepted["width"] + 0.5)
        & (accepted["y"] + accepted["h"] <= accepted["height"] + 0.5)
    )  # fmt: skip
    conflicts = labels.label_conflicts(accepted)
    disagreeing, rare = labels.group_label_report(accepted, groups)
    split_counts = frames.groupby("group_id")["split"].nunique().rename("splits").reset_index()
    per_class = accepted["category"].value_counts()
    rejected_fraction = len(rejected) / max(len(rejected) + len(accepted), 1)
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
            expectations.validate(split_counts, "splits", suites.splits_by_group(), "group_id"),
        ),
        checks.from_assertion(
            "labeled_set_rejections_under_limit",
            rejected_fraction <= config.max_rejected_fraction,
            rejected_fraction=round(rejected_fraction, 3),
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
    passed = not checks.blocking_failures(results)
    if passed:  # the dataset version first: published annotations always have their dataset
        version, existed = publish_dataset(store, frames, accepted, categories, rounds)
    checks.publish(store, results, ASSET, "annotations", accepted)
    if not passed:  # the previous labeled set and versions stay as they were
        return dg.MaterializeResult(metadata={**metadata, "published": False}, check_results=results)
    store.write_table(layout.table_key(ASSET, "rejected"), rejected)
    store.write_table(layout.table_key(ASSET, "frames"), frames)
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


def dataset_versions(store: ObjectStore) -> list[str]:
    """Complete versions only: a version's manifest is written last."""
    keys = (obj.key.split("/") for obj in store.list("datasets"))
    return sorted({k[1] for k in keys if len(k) == 3 and k[2] == "manifest.json" and VERSION.match(k[1])})


def publish_dataset(store, frames, annotations, categories, rounds) -> tuple[str, bool]:
    """Write ``datasets/vNNNN/``; identical content reuses its version, none is ever rewritten."""
    files = {
        f"{split}.json": json.dumps(
            labels.coco_dataset(frames[frames["split"] == split], annotations, categories), indent=1, sort_keys=True
        ).encode()
        for split, _ in labels.SPLITS
    }
    content_hash = content_sha256(files)
    versions = dataset_versions(store)
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
