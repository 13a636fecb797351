"""This repository's code location, as a dg project's defs folder: ``defs.yaml`` configures
one ``VideoCuration`` from the environment."""

import os
from collections.abc import Mapping
from pathlib import Path

DEFS_YAML = Path(__file__).with_name("defs.yaml")


class _Environment:
    """``{{ env.X }}`` over a given mapping (the headless command and tests pass their own)."""

    def __init__(self, env: Mapping[str, str]):
        self._env = env

    def __getattr__(self, key: str) -> str | None:
        if key.startswith("jinja"):
            raise AttributeError(key)
        return self._env.get(key)

    def __call__(self, key: str, default: str | None = None) -> str | None:
        return self._env.get(key, default)


def component(env: Mapping[str, str] = os.environ):
    """The location's component, its ``defs.yaml`` read with ``env`` as the environment.

    The same resolution as ``dg`` (``dg check defs``, ``dg dev`` load this folder through
    ``dg.load_defs``), without scanning every installed package's registry of components:
    that scan imports them all (1.35 s of dagster_aws here) in every run and step process.
    """
    import importlib

    import yaml

    document = yaml.safe_load(DEFS_YAML.read_text())
    module, _, name = document["type"].rpartition(".")
    component_type = getattr(importlib.import_module(module), name)
    return component_type.resolve_from_yaml(yaml.safe_dump(document["attributes"]), scope={"env": _Environment(env)})
