"""One fleet's copy of the graph: the same asset bodies under the fleet's own names.

The assets in ``defs/*.py`` are the template: their decorators say what each step reads,
checks and needs. A fleet (an instance of the ``VideoCuration`` component) gets its own
copy of each: asset keys under its prefix, its own partitions, jobs, sensors, pools and
resource keys, and its own default thresholds. Bodies are not touched: a copy calls the
template's function with the fleet's resources, looked up under the fleet's keys, so two
fleets in one code location never share a resource, a partition or a pool.
"""

import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import dagster as dg
import pydantic
from dagster_shared import record


@dataclass(frozen=True)
class Fleet:
    """The names of one fleet's definitions; ``prefix=""`` keeps the template's names."""

    prefix: str = ""
    group_name: str | None = None  # None: each step's own group (ingestion, curation, ...), prefixed
    pools: Mapping[str, str] = field(default_factory=dict)  # template pool -> this fleet's pool
    step_defaults: Mapping[str, Mapping] = field(default_factory=dict)  # step -> config field -> default

    def key(self, key: dg.AssetKey | str) -> dg.AssetKey:
        key = dg.AssetKey.from_coercible(key)
        return key.with_prefix(self.prefix) if self.prefix else key

    def name(self, name: str) -> str:
        """A job, sensor, partitions, op or resource name of this fleet."""
        return f"{self.prefix}__{name}" if self.prefix else name

    def group(self, group: str | None) -> str | None:
        if self.group_name:
            return self.group_name
        return f"{self.prefix}_{group}" if self.prefix and group else group

    def pool(self, pool: str | None) -> str | None:
        return None if pool is None else self.pools.get(pool, self.name(pool))


def key_of(context: dg.AssetExecutionContext, asset: str) -> dg.AssetKey:
    """This fleet's key for the template asset named ``asset`` (a multi-asset's bodies name their outputs)."""
    return next(key for key in context.assets_def.keys if key.path[-1] == asset)


_PARTITIONS: dict[str, dg.DynamicPartitionsDefinition] = {}


def partitions(fleet: Fleet, template: dg.PartitionsDefinition | None) -> dg.PartitionsDefinition | None:
    """The fleet's own dynamic partitions (one object per name, as Dagster wants)."""
    if not isinstance(template, dg.DynamicPartitionsDefinition) or not fleet.prefix:
        return template
    name = fleet.name(template.name)
    return _PARTITIONS.setdefault(name, dg.DynamicPartitionsDefinition(name=name))


def _config_class(fn: Callable, step: str, defaults: Mapping) -> type[dg.Config] | None:
    """The body's config class, with this fleet's defaults for the fields it sets."""
    annotation = inspect.signature(fn).parameters.get("config")
    config_class = annotation.annotation if annotation else None
    if config_class is None or not defaults:
        return config_class
    unknown = set(defaults) - set(config_class.model_fields)
    if unknown:
        raise ValueError(f"steps.{step}: no setting {sorted(unknown)}; known: {sorted(config_class.model_fields)}")
    config_class(**defaults)  # a wrong type fails here, naming the field
    return pydantic.create_model(
        config_class.__name__,
        __base__=config_class,
        **{name: (config_class.model_fields[name].annotation, value) for name, value in defaults.items()},
    )


def _bound(fn: Callable, fleet: Fleet, resource_keys: set[str], config_class, context_type) -> Callable:
    """``fn`` with the fleet's resources: Dagster sees (context[, config]) and the fleet's resource keys."""

    def compute(context, config=None):
        resources = {key: getattr(context.resources, fleet.name(key)) for key in resource_keys}
        return fn(context, config, **resources) if config_class else fn(context, **resources)

    params = [inspect.Parameter("context", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=context_type)]
    if config_class:
        params.append(inspect.Parameter("config", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=config_class))
    compute.__signature__ = inspect.Signature(params)
    compute.__name__ = fn.__name__
    compute.__doc__ = fn.__doc__
    return compute


def condition_for(condition, fleet: Fleet):
    """An automation condition whose asset selections (``any_deps_updated().ignore(…)``) name
    the fleet's keys: a template's ``following("raw_frames")`` must ignore this fleet's raw_frames."""
    if condition is None or not fleet.prefix:
        return condition
    changes = {}
    for name in getattr(condition, "_fields", ()):
        value = getattr(condition, name)
        if name in ("allow_selection", "ignore_selection"):
            if value is not None:
                keys = getattr(value, "selected_keys", None)
                if keys is None:
                    raise ValueError(f"{type(value).__name__}: only key selections can be given a fleet's prefix")
                changes[name] = dg.AssetSelection.assets(*(fleet.key(key) for key in keys))
        elif isinstance(value, dg.AutomationCondition):
            changes[name] = condition_for(value, fleet)
        elif isinstance(value, list | tuple) and all(isinstance(v, dg.AutomationCondition) for v in value):
            changes[name] = type(value)(condition_for(v, fleet) for v in value)
    # conditions are dagster records: their own replace, as namedtuple's _replace would be
    return record.replace(condition, **changes) if changes else condition


def asset_copy(template: dg.AssetsDefinition, fleet: Fleet) -> dg.AssetsDefinition:
    """The template asset (or multi-asset) under the fleet's names, calling the same body."""
    op = template.op
    fn = op.compute_fn.decorated_fn
    step = op.name
    config_class = _config_class(fn, step, fleet.step_defaults.get(step, {}))
    specs = [
        spec.replace_attributes(
            key=fleet.key(spec.key),
            deps=[dep._replace(asset_key=fleet.key(dep.asset_key)) for dep in spec.deps],
            group_name=fleet.group(spec.group_name),
            partitions_def=partitions(fleet, spec.partitions_def),
            automation_condition=condition_for(spec.automation_condition, fleet),
        )
        for spec in template.specs
    ]
    check_specs = [
        dg.AssetCheckSpec(
            spec.name, asset=fleet.key(spec.asset_key), description=spec.description, blocking=spec.blocking
        )
        for spec in template.check_specs
    ]
    resource_keys = set(op.required_resource_keys)
    return dg.multi_asset(
        name=fleet.name(step),
        specs=specs,
        check_specs=check_specs or None,
        required_resource_keys={fleet.name(key) for key in resource_keys},
        retry_policy=op.retry_policy,
        pool=fleet.pool(op.pool),
        op_tags=op.tags,
        can_subset=template.can_subset,
    )(_bound(fn, fleet, resource_keys, config_class, dg.AssetExecutionContext))


def op_copy(template: dg.OpDefinition, fleet: Fleet) -> dg.OpDefinition:
    fn = template.compute_fn.decorated_fn
    config_class = _config_class(fn, template.name, fleet.step_defaults.get(template.name, {}))
    resource_keys = set(template.required_resource_keys)
    return dg.op(
        name=fleet.name(template.name),
        description=template.description,
        required_resource_keys={fleet.name(key) for key in resource_keys},
        pool=fleet.pool(template.pool),
        tags=template.tags,
        out=template.outs,
    )(_bound(fn, fleet, resource_keys, config_class, dg.OpExecutionContext))
