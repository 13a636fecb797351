"""MkDocs hook: the reference pages are generated from the code at build time, so they cannot drift.

- ``reference/config.md``: every Dagster config class of the assets and jobs (``dg.Config`` subclasses in
  ``curation_assets.defs``), each field with its type, default and description as the class declares them;
- ``reference/cli.md``: the headless command's ``--help``, as argparse prints it;
- ``benchmarks.md``: ``bench/RESULTS.md``, where every dated figure lives.
"""

import importlib
import inspect
import pkgutil
import subprocess
import sys
from pathlib import Path

from mkdocs.structure.files import File

ROOT = Path(__file__).resolve().parent.parent


def _type_name(annotation) -> str:
    name = getattr(annotation, "__name__", None)
    text = name if name and not getattr(annotation, "__args__", None) else str(annotation)
    return text.replace("typing.", "").replace("NoneType", "None")


def _cell(value) -> str:
    return str(value).replace("|", "\\|").replace("\n", " ")


def config_reference() -> str:
    sys.path.insert(0, str(ROOT))
    import dagster as dg

    import curation_assets.defs as defs_package

    lines = [
        "# Asset configuration",
        "",
        "Per-run settings of each asset and job: Dagster config, set in the Launchpad or in `run_config` "
        "(`ops: <asset>: config: {…}`). Generated from the classes that own them.",
        "",
    ]
    for info in sorted(pkgutil.iter_modules(defs_package.__path__), key=lambda m: m.name):
        module = importlib.import_module(f"curation_assets.defs.{info.name}")
        for name, cls in inspect.getmembers(module, inspect.isclass):
            if not issubclass(cls, dg.Config) or cls.__module__ != module.__name__:
                continue
            lines += [f"## `{name}`", "", f"`curation_assets/defs/{info.name}.py`", ""]
            if cls.__doc__:
                lines += [inspect.cleandoc(cls.__doc__), ""]
            lines += ["| field | type | default | description |", "|---|---|---|---|"]
            for field_name, field in cls.model_fields.items():
                default = "required" if field.is_required() else repr(field.get_default(call_default_factory=True))
                lines.append(
                    f"| `{field_name}` | `{_cell(_type_name(field.annotation))}` | `{_cell(default)}` "
                    f"| {_cell(field.description or '')} |"
                )
            lines.append("")
    return "\n".join(lines)


def assets_reference() -> str:
    sys.path.insert(0, str(ROOT))
    from curation_assets.definitions import defs

    graph = defs.resolve_asset_graph()
    lines = [
        "# Assets and checks",
        "",
        "Every asset of the code location with what it reads (its declared lineage), its partitions and the checks "
        "that gate it. **Blocking** checks run inside the step on the table about to be published: when one fails, "
        "nothing is published and nothing downstream runs. Generated from the definitions.",
        "",
    ]
    for key in sorted(graph.get_all_asset_keys(), key=lambda k: k.to_user_string()):
        node = graph.get(key)
        lines += [f"## `{key.to_user_string()}`", ""]
        if node.description:
            lines += [_cell(inspect.cleandoc(node.description)), ""]
        parents = ", ".join(f"`{p.to_user_string()}`" for p in sorted(node.parent_keys, key=str)) or "none"
        partitions = type(node.partitions_def).__name__ if node.partitions_def else "not partitioned"
        lines += [f"- group: `{node.group_name}`; partitions: {partitions}", f"- reads: {parents}", ""]
        specs = [graph.get_check_spec(check_key) for check_key in node.check_keys]
        if specs:
            lines += ["| check | gates publishing | what it asserts |", "|---|---|---|"]
            for spec in sorted(specs, key=lambda s: s.name):
                gates = "yes" if spec.blocking else "no (warns)"
                lines.append(f"| `{spec.name}` | {gates} | {_cell(spec.description or '')} |")
            lines.append("")
    return "\n".join(lines)


def _env_by_attribute(attributes: dict, path: str = "") -> dict[str, list[str]]:
    """Which environment variables feed which attribute in this repository's own defs.yaml."""
    import re

    found = {}
    for name, value in attributes.items():
        dotted = f"{path}{name}"
        if isinstance(value, dict):
            found.update(_env_by_attribute(value, dotted + "."))
        else:
            found[dotted] = re.findall(r"env\.([A-Z0-9_]+)", str(value))
    return found


def component_reference() -> str:
    sys.path.insert(0, str(ROOT))
    import pydantic
    import yaml

    from curation_assets.component import VideoCuration
    from curation_assets.location import DEFS_YAML

    env = _env_by_attribute(yaml.safe_load(DEFS_YAML.read_text())["attributes"])
    lines = [
        "# Component attributes",
        "",
        "Every attribute of `curation_assets.VideoCuration` (the `attributes:` of a `defs.yaml`), with its default "
        "and description as the component's model declares them; this model is the one home of every setting. "
        "The last column names the environment variable that sets it in this repository's own code location "
        "(`curation_assets/location/defs.yaml`). Generated from the code.",
        "",
        "| attribute | type | default | environment variable here | description |",
        "|---|---|---|---|---|",
    ]

    def rows(model, path=""):
        for name, field in model.model_fields.items():
            annotation = field.annotation
            if isinstance(annotation, type) and issubclass(annotation, pydantic.BaseModel):
                rows(annotation, f"{path}{name}.")
                continue
            default = "required" if field.is_required() else repr(field.get_default(call_default_factory=True))
            variables = ", ".join(f"`{v}`" for v in env.get(f"{path}{name}", []))
            lines.append(
                f"| `{path}{name}` | `{_cell(_type_name(annotation))}` | `{_cell(default)}` | {variables} "
                f"| {_cell(field.description or '')} |"
            )

    rows(VideoCuration)
    return "\n".join(lines) + "\n"


def cli_reference() -> str:
    parts = ["# Command line", "", "`python -m curation_assets`, generated from its `--help`.", ""]
    for args in ([], ["run"], ["search"]):
        shown = " ".join(["python -m curation_assets", *args, "--help"])
        text = subprocess.run(
            [sys.executable, "-m", "curation_assets", *args, "--help"],
            cwd=ROOT, capture_output=True, text=True, check=True,
        ).stdout  # fmt: skip
        parts += [f"## `{shown}`", "", "```text", text.rstrip(), "```", ""]
    return "\n".join(parts)


def benchmarks() -> str:
    return (ROOT / "bench" / "RESULTS.md").read_text()


GENERATED = {
    "reference/assets.md": assets_reference,
    "reference/component.md": component_reference,
    "reference/config.md": config_reference,
    "reference/cli.md": cli_reference,
    "benchmarks.md": benchmarks,
}


def on_files(files, config):
    for path, make in GENERATED.items():
        files.append(File.generated(config, path, content=make()))
    return files
