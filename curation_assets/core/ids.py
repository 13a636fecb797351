"""Stable identifiers: partition keys from landing objects, frame ids, vector point ids."""

from __future__ import annotations

import hashlib
import re
import uuid

# Fixed namespace so point ids are the same on every machine and every re-run.
POINT_NAMESPACE = uuid.UUID("6f1c3c7e-4a59-4d0e-9a57-0c6f8f3b1d2a")

_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]+")
MAX_KEY_LENGTH = 120


def video_id_for(landing_key: str) -> str:
    """Partition key for a landing object: readable, filesystem- and URL-safe, stable.

    ``cam-a/shelf 01.mp4`` -> ``cam-a__shelf-01.mp4-<hash>``. Whenever the readable form
    loses information (unsafe characters, ``..``, length) a short hash of the original key
    is appended, so two different keys never share a partition.
    """
    parts = [p for p in landing_key.replace("\\", "/").split("/") if p not in ("", ".")]
    if not parts:
        raise ValueError(f"{landing_key!r}: empty landing key")
    readable = "__".join(parts)
    safe = _UNSAFE.sub("-", readable).strip("-.") or "object"
    if safe != readable or len(safe) > MAX_KEY_LENGTH:
        digest = hashlib.sha256(landing_key.encode()).hexdigest()[:8]
        safe = f"{safe[: MAX_KEY_LENGTH - 9].rstrip('-.')}-{digest}"
    return safe


def source_id_for(source_key: str) -> str:
    """Partition key of a source: a landing object, or an image folder (key ending in "/")."""
    return video_id_for(source_key) if source_key.strip("/") else "landing-root"


def camera_id_for(landing_key: str, default: str = "default") -> str:
    """Camera id from the landing path: the first folder (``cam-a/x.mp4``, ``cam-a/`` -> ``cam-a``)."""
    parts = [p for p in landing_key.split("/") if p]
    has_folder = len(parts) > 1 or (parts and landing_key.endswith("/"))
    return _UNSAFE.sub("-", parts[0]) if has_folder else default


def frame_id_for(video_id: str, frame_index: int) -> str:
    return f"{video_id}/{frame_index:06d}"


def video_id_of(frame_id: str) -> str:
    """The source (partition) a frame id belongs to: ``frame_id_for``'s inverse."""
    return frame_id.rsplit("/", 1)[0]


def point_id_for(frame_id: str) -> str:
    """Qdrant point id: uuid5 of the frame id, so re-ingesting a video overwrites its points."""
    return str(uuid.uuid5(POINT_NAMESPACE, frame_id))


def object_id_for(frame_id: str, index: int, origin: str = "labels") -> str:
    """A box's id: its frame, where it came from (labels or predictions), its place in the frame."""
    return f"{frame_id}/{origin}-{index:03d}"
