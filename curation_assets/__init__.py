"""Video-frame curation as Dagster assets; ``curation_assets.VideoCuration`` is the component."""

__all__ = ["VideoCuration"]


def __getattr__(name: str):
    # imported on first use: the model and validation processes import this package too
    if name == "VideoCuration":
        from curation_assets.component import VideoCuration

        return VideoCuration
    raise AttributeError(f"module 'curation_assets' has no attribute {name!r}")


def __dir__() -> list[str]:
    return [*globals(), "VideoCuration"]
