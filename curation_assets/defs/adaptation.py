"""embedder_adaptation (optional): the packaged encoder fine-tuned on the landed frames, a checkpoint in storage.

Off by default: in the graph only when ``CURATION_ADAPTATION=1`` (defs/settings.py), never
materialized by a sensor or automation, and it needs the ``ssl`` extra (``make ssl``). The
checkpoint does not replace the packaged weights: pointing the embedder at it
(``CURATION_EMBEDDER_PRETRAINED=<checkpoint>``) is a model change, whose vectors go to a
collection of their own beside the packaged model's, and whose duplicate and outlier
thresholds are reported "uncalibrated" until bench/quality.py calibrates them.
"""

import hashlib
import io
import json

import dagster as dg
import pandas as pd
from PIL import Image
from pydantic import Field

from curation_assets.core import layout
from curation_assets.core.adaptation import AdaptationError, AdaptationParams, adapt
from curation_assets.core.embedder import Embedder
from curation_assets.core.progress import Progress
from curation_assets.defs.reports import png_metadata
from resources import ObjectStoreResource
from resources.object_store import ObjectStore

ASSET = "embedder_adaptation"
DEFAULTS = AdaptationParams()


class AdaptationConfig(dg.Config):
    videos: list[str] = Field(default=[], description="Data window: these video partitions ([] = every landed one).")
    max_images: int = Field(default=DEFAULTS.max_images, description="Frames sampled from the window.")
    trainable_blocks: int = Field(default=DEFAULTS.trainable_blocks, description="Last blocks that learn.")
    input_size: int = Field(default=DEFAULTS.input_size, description="Training resolution, pixels.")
    batch_size: int = Field(default=DEFAULTS.batch_size, description="Frames per step (two views each).")
    max_steps: int = Field(default=DEFAULTS.max_steps, description="Steps at most.")
    time_budget_s: float = Field(default=DEFAULTS.time_budget_s, description="Stop after the step that passes it.")
    learning_rate: float = DEFAULTS.learning_rate
    seed: int = 0
    device: str = Field(default="auto", description="'auto' (CUDA when present), 'cpu', 'cuda'.")

    def params(self) -> AdaptationParams:
        return AdaptationParams(trainable_blocks=self.trainable_blocks, input_size=self.input_size,
                                batch_size=self.batch_size, max_steps=self.max_steps,
                                time_budget_s=self.time_budget_s, learning_rate=self.learning_rate,
                                max_images=self.max_images, seed=self.seed,
                                device=Embedder(device=self.device).resolved_device())  # fmt: skip


def loss_curve_png(losses: list[float], width: int = 480, height: int = 200) -> bytes:
    from PIL import ImageDraw

    image = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(image)
    lo, hi = min(losses), max(losses)
    span = (hi - lo) or 1.0
    points = [(20 + i * (width - 40) / max(len(losses) - 1, 1), height - 20 - (v - lo) / span * (height - 40))
              for i, v in enumerate(losses)]  # fmt: skip
    draw.line(points if len(points) > 1 else points * 2, fill=(31, 119, 180), width=2)
    draw.text((22, 4), f"NT-Xent loss per step: {losses[0]:.3f} -> {losses[-1]:.3f}", fill="black")
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def _window_frames(store: ObjectStore, videos: list[str]) -> pd.DataFrame:
    """The readable published frames of the data window (``videos``; [] = every landed one)."""
    window = set(videos)
    keep = (lambda key: layout.partition_of(key, "raw_frames") in window) if window else None
    frames = store.read_tables(layout.table_prefix("raw_frames"), keep)
    if frames is None or frames.empty:
        raise dg.Failure(f"no published raw_frames{' for ' + ', '.join(sorted(window)) if window else ''}: "
                         "materialize raw_frames first", allow_retries=False)  # fmt: skip
    return frames[~frames["corrupt"]] if "corrupt" in frames else frames


def _train(context: dg.AssetExecutionContext, store: ObjectStore, frames: pd.DataFrame, params: AdaptationParams):
    loaders = [lambda uri=uri: Image.open(io.BytesIO(store.get_bytes(store.key_for_uri(uri)))) for uri in frames["uri"]]
    progress = Progress("adaptation steps", params.max_steps, context.log.info)
    try:
        return adapt(loaders, params, progress=lambda step, loss: progress.advance())
    except AdaptationError as exc:  # bad input or settings: waiting fixes nothing
        raise dg.Failure(str(exc), allow_retries=False) from exc


def _save_checkpoint(
    store: ObjectStore, params: AdaptationParams, adapted, frames: pd.DataFrame
) -> tuple[str, str, dict]:
    """The checkpoint under models/, named by its content, beside a record of how it was made
    (data window, losses, settings); returns its version, its URI and the record."""
    version = hashlib.sha256(adapted.checkpoint).hexdigest()[:16]
    key = f"models/{ASSET}/{params.base_model}-{version}.pt"
    videos = sorted(frames["video_id"].unique())
    record = {"base_model": params.base_model, "method": params.method, "data_window": {"videos": videos,
              "frames_in_window": len(frames), "frames_sampled": adapted.images}, "losses": adapted.losses,
              "steps": adapted.steps, "seconds": round(adapted.seconds, 1), "stopped_by": adapted.stopped_by,
              "params": adapted.params}  # fmt: skip
    store.put_bytes(key.replace(".pt", ".json"), json.dumps(record, indent=1).encode())
    store.put_bytes(key, adapted.checkpoint)  # last: a checkpoint is never there without its record
    return version, store.uri(key), record


@dg.asset(deps=["raw_frames"], group_name="embedding", kinds={"torch"})
def embedder_adaptation(context: dg.AssetExecutionContext, config: AdaptationConfig, object_store: ObjectStoreResource):
    """Self-supervised fine-tuning (SimCLR, lightly) of the packaged encoder's last blocks on the landed frames."""
    store = object_store.store()
    frames = _window_frames(store, config.videos)
    params = config.params()
    adapted = _train(context, store, frames, params)
    version, checkpoint, record = _save_checkpoint(store, params, adapted, frames)
    model = Embedder(model=params.base_model, pretrained=checkpoint)
    return dg.MaterializeResult(
        metadata={
            "checkpoint": dg.MetadataValue.path(checkpoint),
            "use_it": f"CURATION_EMBEDDER_PRETRAINED={checkpoint} (model {params.base_model})",
            "vector_name": model.vector_name,
            "calibration": model.calibration.source,
            "data_window": dg.MetadataValue.json(record["data_window"]),
            "steps": adapted.steps,
            "stopped_by": adapted.stopped_by,
            "seconds": round(adapted.seconds, 1),
            "loss_first": round(adapted.losses[0], 4),
            "loss_last": round(adapted.losses[-1], 4),
            "device": params.device,
            **png_metadata(store, "loss_curve", loss_curve_png(adapted.losses), f"{ASSET}/{version}-loss.png"),
        },
        data_version=dg.DataVersion(version),
    )
