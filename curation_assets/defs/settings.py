"""Resource bindings from the environment, through the code location's ``defs.yaml``.

The component (``curation_assets/component.py``) holds every default; ``location/defs.yaml``
says which environment variable sets which attribute. The headless command reads
``embedder_settings`` first, to start the model process while Dagster imports.
"""

import os
from collections.abc import Mapping


def embedder_settings(env: Mapping[str, str] = os.environ) -> dict:
    """``EmbedderResource``'s fields."""
    from curation_assets.location import component

    return component(env).embedder_settings()


def resources_from_env(env: Mapping[str, str] = os.environ) -> dict:
    from curation_assets.location import component

    return component(env).resources(env)
