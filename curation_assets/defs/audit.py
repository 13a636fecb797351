"""dataset_audit: what is wrong with each labeled dataset that landed, and a cleaned copy."""

from functools import partial

import dagster as dg
import pandas as pd
from pydantic import Field

from curation_assets.core import layout
from curation_assets.core.datasets import DatasetsAudit, audit_sources
from curation_assets.core.ids import video_id_of
from curation_assets.core.label_cleaning import RULES, CleaningRule
from curation_assets.defs import checks
from curation_assets.defs.curation import _tables, following, read_groups, read_outliers
from curation_assets.defs.fleet import key_of
from curation_assets.defs.reports import picture_metadata
from curation_assets.defs.retries import TRANSIENT, transient_only
from curation_assets.defs.versions import publish_dataset_files
from curation_assets.quality import suites
from resources import ExpectationsResource, ObjectStoreResource
from resources.object_store import ObjectStore

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
    rule = config.rule()
    # the cleaned copies point at the original images in the landing zone, untouched
    audit = audit_sources(labeled, labels, groups, scored, rule, config.remove_outliers, partial(landing_uri, landing))
    validation = expectations.validate(audit.per_group, ASSET, suites.cleaned_dataset(), "group_id")
    results = [checks.from_validation(CHECK, validation)]
    report = audit.report.assign(labels=audit.report["labels"].map(list))
    write_cleaned = partial(_write_cleaned_datasets, store, audit)
    verdict = checks.publish(store, results, ASSET, table=report, first=write_cleaned)
    yield dg.MaterializeResult(
        asset_key=key_of(context, ASSET), metadata=_describe_audit(store, audit, labeled, groups, verdict)
    )
    if dg.AssetCheckKey(key_of(context, ASSET), CHECK) in context.selected_asset_check_keys:
        yield results[0]


def _write_cleaned_datasets(store: ObjectStore, audit: DatasetsAudit) -> None:
    for folder, files, manifest in audit.cleaned.values():
        publish_dataset_files(store, folder, files, manifest)


def _describe_audit(store: ObjectStore, audit: DatasetsAudit, labeled: pd.DataFrame, groups: pd.DataFrame,
                    verdict: checks.Verdict) -> dict:  # fmt: skip
    report, balance = audit.report, audit.balance
    written = {s: store.uri(layout.dataset_key(folder, "")) for s, (folder, _, _) in audit.cleaned.items()}
    return {
        "labeled_sources": len(audit.findings),
        "findings": dg.MetadataValue.json(audit.findings),
        "cleaned_datasets": dg.MetadataValue.json(written if verdict.published else "none: the check failed"),
        "label_cleaning": dg.MetadataValue.json(audit.cleaning or "no rule"),
        "class_balance": dg.MetadataValue.json(balance),
        "class_imbalance": max((b["imbalance"] or 1.0 for b in balance.values()), default=None),
        **picture_metadata(store, "disagreeing_components", _worst_components(audit.disagreeing, labeled, groups)),
        "removal_examples": dg.MetadataValue.json(
            report.loc[~report["keep"], ["source_name", "split", "reason"]].head(20).to_dict("records")
        ),
        "table": dg.MetadataValue.path(store.uri(verdict.key)),
        "published": verdict.published,
    }


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
