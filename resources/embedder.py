"""Image embedder: an open_clip model, batched, with loading overlapped with inference.

``pretrained`` is an open_clip tag (``laion2b_s34b_b79k``), a local checkpoint path, an
``s3://`` checkpoint URI (for air-gapped sites), or ``none``: a seeded random-init model
for tests and offline demos, reported as such in metadata. Weights that are asked for but
cannot be loaded are an error, never a silent fallback to random weights.
"""

from __future__ import annotations

import hashlib
import os
import queue
import re
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import dagster as dg
import numpy as np
from PIL import Image
from pydantic import Field

RANDOM_INIT = ("", "none", "random")


class EmbedderError(RuntimeError):
    pass


@dataclass
class Embedder:
    model_name: str
    pretrained: str
    seed: int = 0
    device: str = "auto"
    batch_size: int = 32
    _model: object = field(default=None, repr=False)
    _preprocess: Callable | None = field(default=None, repr=False)

    @property
    def random_init(self) -> bool:
        return self.pretrained.strip().lower() in RANDOM_INIT

    @property
    def weights_label(self) -> str:
        if self.random_init:
            return f"random-init-seed{self.seed}"
        if self._is_checkpoint():
            return "ckpt-" + hashlib.sha256(self.pretrained.encode()).hexdigest()[:10]
        return self.pretrained

    @property
    def vector_name(self) -> str:
        """Name of this model's vectors in the store; differs whenever the weights differ."""
        return re.sub(r"[^A-Za-z0-9_-]+", "-", f"{self.model_name}__{self.weights_label}")

    def _is_checkpoint(self) -> bool:
        p = self.pretrained
        return p.startswith("s3://") or "/" in p or p.endswith((".pt", ".pth", ".bin", ".safetensors"))

    def resolved_device(self) -> str:
        if self.device != "auto":
            return self.device
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"

    def load(self) -> None:
        if self._model is not None:
            return
        key = (self.model_name, self.pretrained, self.seed, self.resolved_device())
        if key not in _MODEL_CACHE:
            _MODEL_CACHE[key] = self._create()
        self._model, self._preprocess = _MODEL_CACHE[key]

    def _create(self):
        import open_clip
        import torch

        if self.model_name not in open_clip.list_models():
            raise EmbedderError(f"unknown open_clip model {self.model_name!r}")
        if self.random_init:
            torch.manual_seed(self.seed)
            pretrained = None
        elif self._is_checkpoint():
            pretrained = str(_local_checkpoint(self.pretrained))
        else:
            tags = open_clip.list_pretrained_tags_by_model(self.model_name)
            if self.pretrained not in tags:
                raise EmbedderError(
                    f"open_clip has no pretrained tag {self.pretrained!r} for {self.model_name} "
                    f"(known: {', '.join(tags) or 'none'})"
                )
            pretrained = self.pretrained
        try:
            model, _, preprocess = open_clip.create_model_and_transforms(
                self.model_name, pretrained=pretrained, device=self.resolved_device()
            )
        except Exception as exc:
            raise EmbedderError(
                f"could not load open_clip weights {self.model_name}/{self.pretrained}: {exc}. "
                "Offline sites: set the embedder's pretrained to a checkpoint path or s3:// URI; "
                "'none' gives a seeded random-init model (tests and demos only)."
            ) from exc
        model.eval()
        return model, preprocess

    @property
    def dim(self) -> int:
        self.load()
        return int(self._model.visual.output_dim)

    def embed(self, images: Iterable[Callable[[], Image.Image]]) -> np.ndarray:
        """Unit-norm float32 vectors, one per image, in order.

        ``images`` yields loaders; a background thread loads and preprocesses the next
        batch while the model runs on the current one.
        """
        import torch

        self.load()
        device = self.resolved_device()
        batches: queue.Queue = queue.Queue(maxsize=2)

        def produce() -> None:
            try:
                batch = []
                for load in images:
                    batch.append(self._preprocess(load()))
                    if len(batch) == self.batch_size:
                        batches.put(torch.stack(batch))
                        batch = []
                if batch:
                    batches.put(torch.stack(batch))
                batches.put(None)
            except BaseException as exc:  # surfaced in the consuming thread
                batches.put(exc)

        threading.Thread(target=produce, daemon=True).start()
        out = []
        with torch.inference_mode():
            while (item := batches.get()) is not None:
                if isinstance(item, BaseException):
                    raise item
                features = self._model.encode_image(item.to(device))
                features = torch.nn.functional.normalize(features.float(), dim=-1)
                out.append(features.cpu().numpy())
        if not out:
            return np.zeros((0, self.dim), dtype=np.float32)
        return np.concatenate(out).astype(np.float32)

    def describe(self) -> dict:
        return {
            "model": self.model_name,
            "weights": self.weights_label,
            "random_init": self.random_init,
            "device": self.resolved_device(),
            "batch_size": self.batch_size,
        }


_MODEL_CACHE: dict[tuple, tuple] = {}


def _local_checkpoint(uri: str) -> Path:
    if not uri.startswith("s3://"):
        path = Path(uri).expanduser()
        if not path.is_file():
            raise EmbedderError(f"checkpoint {uri} does not exist")
        return path
    cache = Path(os.environ.get("CURATION_CACHE", "~/.cache/curation")).expanduser() / "checkpoints"
    target = cache / hashlib.sha256(uri.encode()).hexdigest()[:16] / Path(uri).name
    if not target.is_file():
        from dagster_aws.s3 import S3Resource

        bucket, _, key = uri[len("s3://") :].partition("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_suffix(f".part{os.getpid()}")
        try:
            S3Resource(endpoint_url=os.environ.get("CURATION_S3_ENDPOINT_URL") or None).get_client().download_file(
                bucket, key, str(tmp)
            )
        except Exception as exc:
            raise EmbedderError(f"could not download checkpoint {uri}: {exc}") from exc
        os.replace(tmp, target)
    return target


class EmbedderResource(dg.ConfigurableResource):
    """open_clip image encoder. Default ViT-B-32 / laion2b_s34b_b79k."""

    model_name: str = "ViT-B-32"
    pretrained: str = Field(
        default="laion2b_s34b_b79k",
        description="open_clip tag, checkpoint path, s3:// URI, or 'none' (seeded random init).",
    )
    seed: int = 0
    device: str = Field(default="auto", description="'auto' (CUDA when present), 'cpu', 'cuda'.")
    batch_size: int = 32

    def embedder(self) -> Embedder:
        return Embedder(self.model_name, self.pretrained, self.seed, self.device, self.batch_size)
