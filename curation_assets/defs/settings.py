"""Resource bindings: the one place where configuration comes from the environment.

Dagster and the resources load inside ``resources_from_env``: the headless command reads
``embedder_settings`` first, to start the model process while Dagster imports.
"""

import hashlib
import os
from collections.abc import Mapping
from pathlib import Path

from curation_assets import validation_process
from curation_assets.core.embedder import DEFAULT_BATCH_SIZE
from curation_assets.core.models import DEFAULT_MODEL


def _absolute(location: str) -> str:
    """Local folders are pinned at load time, so every run process agrees on them."""
    return location if "://" in location else str(Path(location).expanduser().resolve())


def _embedded_store_for(root: str) -> str:
    """The embedded vector store belongs to its storage root: two roots never share one."""
    if "://" not in root:
        return str(Path(root) / "qdrant")
    return str(Path(".curation") / f"qdrant-{hashlib.sha256(root.encode()).hexdigest()[:12]}")


def landing_and_root(env: Mapping[str, str] = os.environ) -> tuple[str, str]:
    """(landing zone, storage root) as the object store resource gets them."""
    root = _absolute(env.get("CURATION_STORAGE_URI", ".curation"))
    landing = env.get("CURATION_LANDING_URI", "")
    return (_absolute(landing) if landing else f"{root.rstrip('/')}/landing"), root


def vector_store_path(env: Mapping[str, str] = os.environ) -> str:
    """Where the embedded vector store lives."""
    return _absolute(
        env.get("CURATION_QDRANT_PATH") or _embedded_store_for(env.get("CURATION_STORAGE_URI", ".curation"))
    )


def embedder_settings(env: Mapping[str, str] = os.environ) -> dict:
    """``EmbedderResource``'s fields."""
    return {
        "model": env.get("CURATION_EMBEDDER_MODEL") or DEFAULT_MODEL,
        "pretrained": env.get("CURATION_EMBEDDER_PRETRAINED", ""),
        "seed": int(env.get("CURATION_EMBEDDER_SEED", "0")),
        "device": env.get("CURATION_EMBEDDER_DEVICE", "auto"),
        "batch_size": int(env.get("CURATION_EMBEDDER_BATCH_SIZE", DEFAULT_BATCH_SIZE)),
        "precision": env.get("CURATION_EMBEDDER_PRECISION", "auto"),
        "channels_last": env.get("CURATION_EMBEDDER_CHANNELS_LAST", "1") not in ("0", "false"),
        "runtime": env.get("CURATION_EMBEDDER_RUNTIME", "auto"),
        "process": env.get("CURATION_EMBEDDER_PROCESS", "separate"),
        "cache_dir": env.get("CURATION_CACHE") or "~/.cache/curation",
        "s3_endpoint_url": env.get("CURATION_S3_ENDPOINT_URL") or None,
    }


def adaptation_enabled(env: Mapping[str, str] = os.environ) -> bool:
    """The optional embedder_adaptation asset joins the graph (it needs the ssl extra: make ssl)."""
    return env.get("CURATION_ADAPTATION", "0") not in ("0", "", "false")


SOURCES_PER_RUN = 8


def sources_per_run(env: Mapping[str, str] = os.environ) -> int:
    """How many new landing sources the sensor puts in one batch run (CURATION_SOURCES_PER_RUN):
    they share its run worker, model process and validation process; 1: a run each."""
    return max(1, int(env.get("CURATION_SOURCES_PER_RUN", SOURCES_PER_RUN)))


def resources_from_env(env: Mapping[str, str] = os.environ) -> dict:
    import dagster as dg

    from resources import EmbedderResource, ExpectationsResource, ObjectStoreResource, VectorStoreResource

    root = env.get("CURATION_STORAGE_URI", ".curation")
    landing = env.get("CURATION_LANDING_URI", "")
    return {
        "object_store": ObjectStoreResource(
            root=_absolute(root),
            landing=_absolute(landing) if landing else "",
            endpoint_url=env.get("CURATION_S3_ENDPOINT_URL") or None,
            region_name=env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION") or None,
        ),
        "vector_store": VectorStoreResource(
            path=vector_store_path(env),
            url=env.get("QDRANT_URL") or None,
            quantization=env.get("CURATION_QDRANT_QUANTIZATION") or "none",
            # an EnvVar is resolved at run time and never shown in the UI
            api_key=dg.EnvVar("QDRANT_API_KEY") if env.get("QDRANT_API_KEY") else None,
        ),
        "embedder": EmbedderResource(**embedder_settings(env)),
        "expectations": ExpectationsResource(process=validation_process.configured(env)),
    }
