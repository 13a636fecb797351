"""dataset_audit: what is wrong with each labeled dataset that landed, and a cleaned copy."""

import json

import dagster as dg
import pandas as pd
from pydantic import Field

from curation_assets.core import layout
from curation_assets.core.datasets import SourceAudit, audit_source
from curation_assets.core.ids import video_id_of
from curation_assets.core.label_cleaning import RULES, CleaningRule
from curation_assets.core.labels import coco_dataset
from curation_assets.defs import checks
from curation_assets.defs.curation import _tables, following, read_groups, read_outliers
from curation_assets.defs.fleet import key_of
from curation_assets.defs.reports import picture_metadata
from curation_assets.defs.retries import TRANSIENT, transient_only
from curation_assets.defs.versions import content_sha256, publish_dataset_files
from curation_assets.quality import suites
from resources import ExpectationsResource, ObjectStoreResource

ASSET = "dataset_audit"


DEFAULT_RULE = CleaningRule()


class AuditConfig(dg.Config):
    """Label cleaning by component (core/label_cleaning.py): thresholds default to CleaningRule's."""

    remove_outliers: bool = Field(default=False, description="Also drop outliers from the cleaned copy.")
    label_rule: str = Field(default=DEFAULT_RULE.name, description=f"One of {', '.join(RULES)}, or 'none'.")
    max_variance: float = Field(default=DEFAULT_RULE.max_variance, description="component_pruning threshold.")
    min_share: float = Field(default=DEFAULT_RULE.min_share, description="label_pruning: minority share dropped.")
    min_agreement: float = Field(default=DEFAULT_RULE.min_agreement, description="image_pruning threshold.")
    min_members: int = Field(default=DEFAULT_RULE.min_members, description="Smallest component a rule acts on.")

    def rule(self) -> CleaningRule | None:
        if self.label_rule == "none":
            return None
        try:
            return CleaningRule(self.label_rule, self.max_variance, self.min_share, self.min_agreement,
                                self.min_members)  # fmt: skip
        except ValueError as exc:
            raise dg.Failure(str(exc), allow_retries=False) from exc


def findings(report: pd.DataFrame) -> dict[str, int]:
    reason = report["reason"]
    return {
        "frames": len(report),
        "corrupt": int(reason.str.startswith("corrupt").sum()),
        "outliers": int((report["outlier_reasons"] != "").sum()),
        "duplicates_within_split": int(reason.str.startswith("duplicate inside").sum()),
        "cross_split_leaks": int(reason.str.startswith("leak").sum()),
        "label_conflicts": int(reason.str.startswith("labels disagree").sum()),
        "kept": int(report["keep"].sum()),
    }


CHECK = "dataset_audit_cleaned_is_leak_free"


@dg.multi_asset(
    specs=[
        dg.AssetSpec(
            ASSET,
            deps=["outliers", "duplicate_groups", "raw_frames", "source_labels"],
            group_name="curation",
            kinds={"coco", "parquet"},
            automation_condition=following("duplicate_groups", "raw_frames", "source_labels"),
            description="Audit every labeled dataset source and write a cleaned, leak-free copy of it.",
        )
    ],
    check_specs=[
        checks.blocking(
            CHECK, ASSET, "in each cleaned dataset: no duplicate group twice, none across splits, no corrupt image (GX)"
        )
    ],
    # the check may go unevaluated: with no labeled dataset there is nothing to audit, and the UI
    # says the check was skipped rather than that it passed
    can_subset=True,
    retry_policy=TRANSIENT,
)
@transient_only
def dataset_audit(
    context: dg.AssetExecutionContext,
    config: AuditConfig,
    object_store: ObjectStoreResource,
    expectations: ExpectationsResource,
):
    """Audit every labeled dataset source (any format) and write a cleaned, leak-free copy of it.

    The copy lives under ``datasets/<source>-cleaned-<hash>/`` (one COCO file per split,
    ``removals.json`` with every removed image and why); source images are never touched.
    Nothing is written when the blocking check fails (the report goes to ``tables/_rejected/``).
    """
    store, landing = object_store.store(), object_store.landing_store()
    labels = store.read_tables(layout.table_prefix("source_labels"))  # few: labeled datasets only
    labeled_sources = set() if labels is None else set(labels["frame_id"].map(video_id_of))
    # only the labeled sources' frames: a fleet's footage has no labels to audit
    frames = _tables(store, "raw_frames", labeled_sources) if labeled_sources else None
    if labels is None or frames is None:
        context.log.info("nothing to audit: no labeled dataset has landed")
        yield dg.MaterializeResult(
            asset_key=key_of(context, ASSET),
            metadata={"labeled_sources": 0, "audit": "nothing to audit: no labeled dataset"},
        )
        return
    groups = read_groups(store)
    scored = read_outliers(store)
    labeled = frames[frames["video_id"].isin(set(labels["frame_id"].map(video_id_of)))]
    sources = sorted(labeled["video_id"].unique())

    reports, summary, cleaned, cleaning, worst, balance = [], {}, {}, {}, [], {}
    rule = config.rule()
    for source_id in sources:
        source_frames = labeled[labeled["video_id"] == source_id]
        source_labels = labels[labels["frame_id"].isin(source_frames["frame_id"])]
        result = audit_source(source_frames, source_labels, groups, scored, rule, config.remove_outliers)
        reports.append(result.report.assign(source=source_id))
        summary[source_id], balance[source_id] = findings(result.report), result.balance
        if result.cleaning is not None:
            changes = result.cleaning.removals["change"].value_counts()
            cleaning[source_id] = {"rule": rule.name, "labels_removed": int(changes.get("removed", 0)),
                                   "labels_added": int(changes.get("added", 0)),
                                   "images_removed": len(result.cleaning.dropped_images)}  # fmt: skip
            worst += [(source_id, r) for r in result.cleaning.disagreement.head(6).itertuples() if r.variance > 0]
        # the cleaned copy points at the original images in the landing zone, untouched
        originals = source_frames.assign(uri=[landing_uri(landing, name) for name in source_frames["source_name"]])
        cleaned[source_id] = _cleaned_files(source_id, originals, result, rule)

    everything = pd.concat(reports, ignore_index=True)
    kept = everything[everything["keep"]].merge(labeled[["frame_id", "corrupt"]], on="frame_id")
    per_group = kept.groupby(["source", "group_id"], as_index=False).agg(
        frames=("frame_id", "size"), splits=("split", "nunique"), corrupt=("corrupt", "any")
    )
    validation = expectations.validate(per_group, ASSET, suites.cleaned_dataset(), "group_id")
    results = [checks.from_validation(CHECK, validation)]

    def write_cleaned_datasets():
        for folder, files, manifest in cleaned.values():
            publish_dataset_files(store, folder, files, manifest)

    report = everything.assign(labels=everything["labels"].map(list))
    verdict = checks.publish(store, results, ASSET, table=report, first=write_cleaned_datasets)
    written = {s: store.uri(layout.dataset_key(folder, "")) for s, (folder, _, _) in cleaned.items()}
    yield dg.MaterializeResult(
        asset_key=key_of(context, ASSET),
        metadata={
            "labeled_sources": len(sources),
            "findings": dg.MetadataValue.json(summary),
            "cleaned_datasets": dg.MetadataValue.json(written if verdict.published else "none: the check failed"),
            "label_cleaning": dg.MetadataValue.json(cleaning or "no rule"),
            "class_balance": dg.MetadataValue.json(balance),
            "class_imbalance": max((b["imbalance"] or 1.0 for b in balance.values()), default=None),
            **picture_metadata(store, "disagreeing_components", _worst_components(worst, labeled, groups)),
            "removal_examples": dg.MetadataValue.json(
                everything.loc[~everything["keep"], ["source_name", "split", "reason"]].head(20).to_dict("records")
            ),
            "table": dg.MetadataValue.path(store.uri(verdict.key)),
            "published": verdict.published,
        },
    )
    if dg.AssetCheckKey(key_of(context, ASSET), CHECK) in context.selected_asset_check_keys:
        yield results[0]


def landing_uri(landing, name: str) -> str:
    """Where an image of the dataset lives; "" for a name that is no landing key (a missing or
    hostile ``file_name`` such as ``../../etc/passwd``: that image is already left out)."""
    try:
        return landing.uri(name)
    except ValueError:
        return ""


def _worst_components(worst: list, frames: pd.DataFrame, groups: pd.DataFrame) -> list[tuple[str, list[str]]]:
    """Contact-sheet rows of the components whose members' labels disagree most."""
    uri = frames.set_index("frame_id")["uri"]
    members = groups.groupby("group_id")["frame_id"].apply(list)
    rows = []
    for source_id, r in sorted(worst, key=lambda w: -w[1].variance)[:6]:
        label = f"{source_id} {r.group_id}: {r.members} images, label variance {r.variance}"
        rows.append((label, [uri[f] for f in members.get(r.group_id, []) if f in uri.index]))
    return rows


def _cleaned_files(
    source_id: str, frames: pd.DataFrame, result: SourceAudit, rule: CleaningRule | None
) -> tuple[str, dict[str, bytes], dict]:
    """The cleaned copy of one source: (folder, files, manifest), written only once the check passed."""
    report, labels, cleaned = result.report, result.labels, result.cleaning
    keep = set(report.loc[report["keep"], "frame_id"])
    kept_frames = frames[frames["frame_id"].isin(keep)]
    categories = sorted(labels["category"].unique())
    files = {}
    for split in sorted(kept_frames["split"].unique()):
        split_frames = kept_frames[kept_frames["split"] == split]
        files[f"{split or 'all'}.json"] = json.dumps(
            coco_dataset(split_frames, labels[labels["frame_id"].isin(split_frames["frame_id"])], categories),
            indent=1,
            sort_keys=True,
        ).encode()
    removals = report.loc[~report["keep"], ["frame_id", "source_name", "split", "reason", "related"]]
    files["removals.json"] = json.dumps(removals.to_dict("records"), indent=1).encode()
    if cleaned is not None:  # what the label-cleaning rule dropped, and with which thresholds
        record = {"rule": rule.__dict__, "removals": cleaned.removals.to_dict("records")}
        files["label_cleaning.json"] = json.dumps(record, indent=1).encode()
    folder = f"{source_id}-cleaned-{content_sha256(files)[:10]}"
    return folder, files, {"source": source_id, "findings": findings(report)}
