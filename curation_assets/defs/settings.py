"""Resource bindings from the environment, through the code location's ``defs.yaml``.

The component (``curation_assets/component.py``) holds every default; ``location/defs.yaml``
says which environment variable sets which attribute. The headless command reads
``embedder_settings`` first, to start the model process while Dagster imports.
"""

import os
from collections.abc import Mapping


def landing_and_root(env: Mapping[str, str] = os.environ) -> tuple[str, str]:
    """(landing zone, storage root) as the object store resource gets them."""
    store = resources_from_env(env)["object_store"]
    return store.landing or f"{store.root.rstrip('/')}/landing", store.root


def vector_store_path(env: Mapping[str, str] = os.environ) -> str:
    """Where the embedded vector store lives."""
    from curation_assets.location import component

    return component(env).qdrant_path()


def embedder_settings(env: Mapping[str, str] = os.environ) -> dict:
    """``EmbedderResource``'s fields."""
    from curation_assets.location import component

    return component(env).embedder_settings()


def resources_from_env(env: Mapping[str, str] = os.environ) -> dict:
    from curation_assets.location import component

    return component(env).resources(env)
