"""The code location: this repository's own fleet of the ``VideoCuration`` component,
configured in ``location/defs.yaml`` (a dg project's defs folder)."""

import dagster as dg

from curation_assets import location
from curation_assets.defs.assets import ASSETS, optional_assets  # noqa: F401 - the template graph, for tests


def build_defs(
    resources: dict, executor: dg.ExecutorDefinition | None = None, adaptation: bool = False
) -> dg.Definitions:
    """The same graph with other resources (tests bind temporary folders and a moto S3)."""
    from curation_assets.component import VideoCuration

    return VideoCuration(adaptation=adaptation).definitions(resources, location_executor=True, executor=executor)


defs = location.component().build_defs()  # what dg.load_defs(location) builds, without the registry scan
