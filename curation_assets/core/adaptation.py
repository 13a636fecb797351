"""Self-supervised adaptation of the packaged encoder to a customer's cameras (optional: ``lightly``).

ImageNet weights know photographs, not this shelf at dusk through this lens. SimCLR
(``lightly``'s NT-Xent loss, projection head and augmentations; MIT licence) fine-tunes the
packaged EfficientNet-Lite0 on the landed frames themselves, no labels: two augmented views of
a frame are pulled together, views of other frames pushed apart. Sized to a CPU: only the last
``trainable_blocks`` blocks and the head convolution learn (the frozen stem runs without
gradients), at ``input_size`` pixels, until ``max_steps`` or ``time_budget_s``, whichever comes
first. Batch norms keep their ImageNet statistics (a batch of 32 is too small to re-estimate
them), so the checkpoint loads into the same network as the packaged weights.

The result is the packaged network's whole state under its own names: ``Embedder(model=
"efficientnet-lite0", pretrained=<checkpoint>)`` loads it strictly, names its vectors apart
from the packaged weights' (a new collection beside the old, never over it) and runs with the
uncalibrated thresholds until bench/quality.py calibrates it. No Dagster here.
"""

from __future__ import annotations

import io
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field

import numpy as np
from PIL import Image

from curation_assets.core.models import DEFAULT_MODEL, PACKAGED

METHODS = ("simclr",)


class AdaptationError(RuntimeError):
    """Adaptation cannot run as configured (missing extra, no frames): not transient."""


@dataclass(frozen=True)
class AdaptationParams:
    method: str = "simclr"
    base_model: str = DEFAULT_MODEL  # a packaged model: its weights are the starting point
    trainable_blocks: int = 2  # the last blocks that learn, with the head convolution
    input_size: int = 128  # training resolution (embedding still runs at the model's own size)
    batch_size: int = 32  # frames per step (two views each)
    max_steps: int = 200
    time_budget_s: float = 600.0  # stops after the step that passes it
    learning_rate: float = 1e-4
    temperature: float = 0.2  # NT-Xent
    projection_dim: int = 128
    min_scale: float = 0.3  # smallest random crop: frames' objects are small, 0.08 would crop them away
    max_images: int = 2000  # frames sampled from the window (decoded once, kept small in memory)
    seed: int = 0
    device: str = "cpu"


@dataclass
class Adapted:
    checkpoint: bytes  # torch.save of the network's state (the packaged weights' names)
    losses: list[float]
    steps: int
    seconds: float
    images: int
    stopped_by: str  # "max_steps" or "time_budget_s"
    params: dict = field(default_factory=dict)


def require_lightly():
    """The ``lightly`` modules adaptation uses, or an error saying how to install them."""
    try:
        from lightly.loss import NTXentLoss
        from lightly.models.modules import SimCLRProjectionHead
        from lightly.transforms import SimCLRTransform
    except ImportError as exc:
        raise AdaptationError(
            "embedder adaptation needs lightly: make ssl "
            "(pip install --no-deps lightly==1.6.0 lightning-utilities==0.15.3)"
        ) from exc
    return NTXentLoss, SimCLRProjectionHead, SimCLRTransform


def _base_network(model: str):
    import torch

    from curation_assets.core.efficientnet_lite import EfficientNetLite
    from curation_assets.core.embedder import _load_strict, _packaged_weights

    if model not in PACKAGED:
        raise AdaptationError(f"adaptation starts from a packaged model ({', '.join(PACKAGED)}), not {model!r}")
    path = _packaged_weights(PACKAGED[model])
    state = torch.load(path, map_location="cpu", weights_only=True)
    network = EfficientNetLite.from_state(state)
    _load_strict(network, state, path)
    return network


def _trainable(network, blocks: int) -> list:
    """Freeze all but the last ``blocks`` blocks and the head convolution; returns what learns."""
    for p in network.parameters():
        p.requires_grad_(False)
    learn = [*network._blocks[len(network._blocks) - blocks :], network._conv_head, network._bn1]
    params = [p for module in learn for p in module.parameters()]
    for p in params:
        p.requires_grad_(True)
    return params


def _features(network, x, frozen_blocks: int):
    """Pooled features; the frozen stem and blocks run without building a graph."""
    import torch
    import torch.nn.functional as F

    from curation_assets.core.efficientnet_lite import _same_pad

    with torch.no_grad():
        x = F.relu6(network._bn0(network._conv_stem(_same_pad(x, 3, 2))))
        for block in network._blocks[:frozen_blocks]:
            x = block(x)
    for block in network._blocks[frozen_blocks:]:
        x = block(x)
    x = F.relu6(network._bn1(network._conv_head(x)))
    return x.mean(dim=(2, 3))


def adapt(
    images: Sequence[Callable[[], Image.Image]],
    params: AdaptationParams = AdaptationParams(),
    progress: Callable[[int, float], None] | None = None,
) -> Adapted:
    """Fine-tune the base model on ``images`` (loaders of frames) with SimCLR; ``progress(step,
    loss)`` is called after each step."""
    if params.method not in METHODS:
        raise AdaptationError(f"unknown adaptation method {params.method!r}; use one of {', '.join(METHODS)}")
    if not images:
        raise AdaptationError("no frames to adapt on: the data window holds no frames")
    NTXentLoss, SimCLRProjectionHead, SimCLRTransform = require_lightly()
    import torch

    torch.manual_seed(params.seed)
    rng = np.random.default_rng(params.seed)
    started = time.perf_counter()
    sample = rng.permutation(len(images))[: params.max_images]
    side = 2 * params.input_size  # decoded once, kept at twice the training size: crops stay sharp
    frames = []
    for i in sample:
        image = images[int(i)]().convert("RGB")
        image.thumbnail((side, side))
        frames.append(image)
    network = _base_network(params.base_model)
    blocks = max(1, min(params.trainable_blocks, len(network._blocks)))
    learn = _trainable(network, blocks)
    network.eval()  # batch norms keep their statistics (see the module's docstring)
    head = SimCLRProjectionHead(network.num_features, 512, params.projection_dim)
    device = torch.device(params.device)
    network.to(device)
    head.to(device)
    criterion = NTXentLoss(temperature=params.temperature)
    optimizer = torch.optim.AdamW([*learn, *head.parameters()], lr=params.learning_rate, weight_decay=1e-4)
    transform = SimCLRTransform(input_size=params.input_size, min_scale=params.min_scale,
                                normalize={"mean": [0.5] * 3, "std": [0.5] * 3})  # fmt: skip  # the model's [-1, 1]
    frozen = len(network._blocks) - blocks
    losses, stopped_by = [], "max_steps"
    for step in range(1, params.max_steps + 1):
        batch = rng.choice(len(frames), size=min(params.batch_size, len(frames)), replace=False)
        views = [transform(frames[int(i)]) for i in batch]
        a = torch.stack([v[0] for v in views]).to(device)
        b = torch.stack([v[1] for v in views]).to(device)
        loss = criterion(head(_features(network, a, frozen)), head(_features(network, b, frozen)))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
        if progress:
            progress(step, losses[-1])
        if time.perf_counter() - started > params.time_budget_s:
            stopped_by = "time_budget_s"
            break
    buffer = io.BytesIO()
    torch.save({k: v.detach().cpu() for k, v in network.state_dict().items()}, buffer)
    return Adapted(buffer.getvalue(), losses, len(losses), time.perf_counter() - started, len(frames), stopped_by,
                   asdict(params))  # fmt: skip
