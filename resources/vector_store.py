"""Vector store: Qdrant's engine embedded in process (qdrant-edge) or a Qdrant server.

Both implement ``VectorStore``, so assets never know which one they talk to. The embedded
store is the default (0.5 s for 20k upserts here, against 31 s for qdrant-client's pure
Python local mode); it allows one process at a time, so the assets that open it share
the Dagster pool ``qdrant``. A process that runs several steps (the headless command, a
batch run) holds it open across them (``VectorStoreResource.held``) and lets go between two
steps when another process waits for it. A server (``QDRANT_URL``) removes that limit.

One collection per embedding model, holding one named vector (the model's name): Qdrant
cannot add a named vector to an existing collection, so a model change creates a new
collection beside the old one instead of rewriting it.
"""

from __future__ import annotations

import errno
import math
import os
import shutil
import threading
import time
import uuid
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import get_args

import dagster as dg
import numpy as np
from pydantic import Field

from curation_assets.component import VectorStoreSettings, VideoCuration
from curation_assets.core.ids import point_id_for

# category: boxes only; group_id, group_role, is_outlier: curation's results (defs/curation.py writes them)
PAYLOAD_INDEXES = ("video_id", "camera_id", "category", "group_id", "group_role")
FLAG_INDEXES = ("is_outlier",)  # booleans: what search's exclusions filter on
# none: float32 in RAM; int8: int8 codes in RAM (1/4), originals on disk for rescoring; binary: one bit
# a dimension in RAM (1/32), originals on disk, rescored (Qdrant's advice for >= 1 024-d); recall: bench/RESULTS.md
QUANTIZATIONS = get_args(VectorStoreSettings.model_fields["quantization"].annotation)  # the component's values
# Search effort (bench/search.py, 1 M clustered vectors x 1280, int8): Qdrant's defaults
# (ef 100, oversampling 1-2) found 0.84 of the exact top 10; these find 0.98 at p95 12.7 ms
HNSW_EF = 256  # candidates the graph search keeps
OVERSAMPLING = 8.0  # int8 candidates fetched per result, then rescored on the full-precision vectors
# The embedded engine maps its files into memory: a write into a mapped page the full disk cannot
# back kills the process with SIGBUS (no error, no summary). Below this much free space it refuses.
MIN_FREE_BYTES = 64 * 1024**2


# how long a step waits for the embedded store's lock held by another process (the component's setting)
LOCK_TIMEOUT_S = VectorStoreSettings.model_fields["lock_timeout_s"].default
CODES_IN_RAM = VectorStoreSettings.model_fields["codes_in_ram"].default  # quantized codes: RAM or mapped file
# A process waiting for the embedded store's lock leaves a file named so in the store's folder, refreshed
# every half second: a process that holds the store across its steps (VectorStoreResource.held) gives it
# up between two steps when it sees one younger than KNOCK_FRESH_S (older ones are a dead waiter's)
KNOCK_PREFIX = ".waiting-"
KNOCK_FRESH_S = 5.0
KNOCK_DEAD_S = 60.0  # untouched this long, a knock is a dead waiter's: the next process to load the store removes it


class VectorStoreError(RuntimeError):
    """A vector store operation failed. ``transient`` is decided where it is raised: True only
    for what waiting can fix (unreachable, timeouts, 5xx, throttling, the embedded store's lock
    held by another process); a bad setting, a refused key, a missing collection or point is
    permanent and is not retried."""

    def __init__(self, message: str, transient: bool = False):
        super().__init__(message)
        self.transient = transient


def classify_qdrant_error(exc: Exception) -> tuple[bool, str]:
    """(transient, hint naming the setting that fixes it) for an exception of qdrant-client."""
    from qdrant_client.http.exceptions import ResponseHandlingException, UnexpectedResponse

    if isinstance(exc, UnexpectedResponse):
        status = exc.status_code or 0
        if status >= 500 or status in (408, 429):
            return True, "the server is briefly unavailable"
        if status in (401, 403):
            return False, "the server refused the key: check QDRANT_API_KEY (and QDRANT_URL)"
        return False, ""  # 404 and validation errors: waiting will not change the answer
    if isinstance(exc, ResponseHandlingException | ConnectionError | TimeoutError):
        return True, "unreachable: check QDRANT_URL if this persists"  # refused, timed out, reset
    try:
        import grpc

        if isinstance(exc, grpc.RpcError) and hasattr(exc, "code"):
            code = exc.code()
            if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED,
                        grpc.StatusCode.RESOURCE_EXHAUSTED):  # fmt: skip
                return True, "unreachable: check QDRANT_URL if this persists"
            if code in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED):
                return False, "the server refused the key: check QDRANT_API_KEY (and QDRANT_URL)"
    except ImportError:
        pass
    return False, ""


@dataclass(frozen=True)
class Where:
    """Which stored points a query may return: every condition given must hold (an empty
    ``Where`` admits all). Frames are named by frame id; the stores turn them into point ids."""

    cameras: Sequence[str] = ()
    videos: Sequence[str] = ()
    exclude_videos: Sequence[str] = ()
    time_from_s: float | None = None  # the frame's timestamp in its video, inclusive
    time_to_s: float | None = None
    only_frames: Sequence[str] | None = None  # e.g. the frames of one split; empty admits none
    exclude_frames: Sequence[str] = ()  # e.g. outliers, duplicates of a kept frame (or box ids, for boxes)
    categories: Sequence[str] = ()  # boxes of these classes (the objects' collection)
    groups: Sequence[str] = ()  # frames of these duplicate groups (by group id)
    group_roles: Sequence[str] = ()  # "representative" / "member": frames curation has grouped
    exclude_group_roles: Sequence[str] = ()  # "member": leave out frames that duplicate their group's representative
    exclude_outliers: bool = False  # leave out frames curation flagged (payload is_outlier)

    def clauses(self) -> tuple[list[tuple], list[tuple]]:
        """(must, must not), each clause ("any", payload key, values), ("is", payload key, value),
        ("range", payload key, (min, max)) or ("ids", point ids): what both stores translate into
        their filter types."""
        listed = (("camera_id", self.cameras), ("video_id", self.videos), ("category", self.categories),
                  ("group_id", self.groups), ("group_role", self.group_roles))  # fmt: skip
        must: list[tuple] = [("any", key, list(values)) for key, values in listed if values]
        if self.time_from_s is not None or self.time_to_s is not None:
            must.append(("range", "timestamp_s", (self.time_from_s, self.time_to_s)))
        if self.only_frames is not None:
            must.append(("ids", [point_id_for(f) for f in self.only_frames]))
        must_not: list[tuple] = [("any", "video_id", list(self.exclude_videos))] if self.exclude_videos else []
        if self.exclude_frames:
            must_not.append(("ids", [point_id_for(f) for f in self.exclude_frames]))
        if self.exclude_group_roles:
            must_not.append(("any", "group_role", list(self.exclude_group_roles)))
        if self.exclude_outliers:
            must_not.append(("is", "is_outlier", True))
        return must, must_not


def _checked(quantization: str) -> str:
    if quantization not in QUANTIZATIONS:
        raise VectorStoreError(
            f"unknown quantization {quantization!r}: "
            f"set CURATION_QDRANT_QUANTIZATION to one of {', '.join(QUANTIZATIONS)}"
        )
    return quantization


def _same(stored, given) -> bool:
    """A stored payload value equals the one to write, as far as the store keeps it: the embedded engine
    gives a float back a unit in the last place off (two float32 values differ by far more)."""
    if isinstance(stored, float) and isinstance(given, float):
        return math.isclose(stored, given, rel_tol=1e-12)
    if isinstance(given, bool) or isinstance(stored, bool):  # True == 1, but a filter on a bool needs a bool
        return type(stored) is type(given) and stored == given
    return stored == given


def _stack(vectors: list) -> np.ndarray:
    return np.asarray(vectors, dtype=np.float32).reshape(len(vectors), -1)


class VectorStore(ABC):
    @abstractmethod
    def ensure_collection(self, collection: str, vector_name: str, dim: int) -> None: ...

    @abstractmethod
    def upsert(
        self,
        collection: str,
        vector_name: str,
        ids: Sequence[str],
        vectors: np.ndarray,
        payloads: Sequence[dict],
    ) -> None: ...

    @abstractmethod
    def delete_video(self, collection: str, video_id: str, keep_ids: Sequence[str] = ()) -> None:
        """Delete the video's points except ``keep_ids``."""

    @abstractmethod
    def count(self, collection: str, video_id: str | None = None) -> int: ...

    @abstractmethod
    def count_where(self, collection: str, where: Where) -> int:
        """How many points ``where`` admits (exactly)."""

    # Points whose payload this process wrote or cleared. The embedded engine moves a point whose payload
    # is written out of its indexed segment, so its next optimisation re-indexes it (bench/RESULTS.md,
    # issue 28): curation writes only what changed, and this says how much that was.
    payload_writes = 0

    def set_payloads(self, collection: str, payloads: dict[str, dict]) -> None:
        """Merge each frame's fields (frame id -> fields) into its point's payload; other keys stay."""
        if payloads:
            self._set_payloads(collection, payloads)
            VectorStore.payload_writes += len(payloads)

    def delete_payload_keys(self, collection: str, keys: Sequence[str], where: Where) -> int:
        """Remove ``keys`` from the payload of every point ``where`` admits; returns how many (none
        admitted: nothing is written)."""
        admitted = self.count_where(collection, where)
        if admitted:
            self._delete_payload_keys(collection, keys, where)
            VectorStore.payload_writes += admitted
        return admitted

    def set_changed_payloads(self, collection: str, payloads: dict[str, dict], drop: Sequence[str] = ()) -> int:
        """``set_payloads`` for the frames whose stored payload differs in a field given, and removal of
        the ``drop`` keys a frame holds but is not given: a point whose payload would not change is not
        written (a rebuild that changes little leaves the index as it is). Returns the writes (setting a
        point's fields and removing its keys are one each)."""
        changed: dict[str, dict] = {}
        stale: dict[tuple[str, ...], list[str]] = {}  # keys to remove -> frames
        frames = list(payloads)
        for start in range(0, len(frames), 1024):
            stored = self.payloads(collection, frames[start : start + 1024])
            for frame in frames[start : start + 1024]:
                have, want = stored.get(frame, {}), payloads[frame]
                if any(not _same(have.get(key), value) for key, value in want.items()):
                    changed[frame] = want
                extra = tuple(key for key in drop if key in have and key not in want)
                if extra:
                    stale.setdefault(extra, []).append(frame)
        self.set_payloads(collection, changed)
        cleared = sum(self.delete_payload_keys(collection, keys, Where(only_frames=f)) for keys, f in stale.items())
        return len(changed) + cleared

    def payloads(self, collection: str, frame_ids: Sequence[str]) -> dict[str, dict]:
        """The stored payload of each of ``frame_ids`` that has a point (frame id -> payload)."""
        frame_of = {point_id_for(f): f for f in frame_ids}
        return {frame_of[p]: payload for p, payload in self._payloads(collection, list(frame_of)).items()}

    @abstractmethod
    def _set_payloads(self, collection: str, payloads: dict[str, dict]) -> None: ...

    @abstractmethod
    def _delete_payload_keys(self, collection: str, keys: Sequence[str], where: Where) -> None: ...

    @abstractmethod
    def _payloads(self, collection: str, point_ids: list[str]) -> dict[str, dict]:
        """Point id -> payload of the stored points among ``point_ids``."""

    @abstractmethod
    def ensure_payload_indexes(self, collection: str) -> None:
        """The keyword indexes of ``PAYLOAD_INDEXES`` (a collection made before one was added lacks it)."""

    @abstractmethod
    def nearest(
        self, collection: str, vector_name: str, vector: np.ndarray, limit: int, where: Where | None = None
    ) -> list[tuple[str, float, dict]]:
        """(point id, cosine similarity, payload) of the ``limit`` nearest points ``where`` admits."""

    def nearest_many(
        self, collection: str, vector_name: str, vectors: np.ndarray, limit: int, where: Where | None = None
    ) -> list[list[tuple[str, float, dict]]]:
        """``nearest`` for each row of ``vectors``."""
        return [self.nearest(collection, vector_name, v, limit, where) for v in vectors]

    @abstractmethod
    def collections(self) -> list[str]:
        """Names of the collections that exist."""

    def _filter(self, where: Where | None):
        """``where`` in the store's own filter type (None admits all)."""
        must, must_not = where.clauses() if where else ([], [])
        if not must and not must_not:
            return None
        return self._make_filter([self._condition(c) for c in must] or None,
                                 [self._condition(c) for c in must_not] or None)  # fmt: skip

    @abstractmethod
    def _condition(self, clause: tuple):
        """One clause of ``Where.clauses`` as the store's condition."""

    @abstractmethod
    def _make_filter(self, must: list | None, must_not: list | None): ...

    def _video_filter(self, video_id: str, keep_ids: Sequence[str] = ()):
        """The video's points but ``keep_ids`` (point ids), in the store's own filter type."""
        must_not = [self._condition(("ids", list(keep_ids)))] if keep_ids else None
        return self._make_filter([self._condition(("any", "video_id", [video_id]))], must_not)

    def retrieve(self, collection: str, vector_name: str, ids: Sequence[str]) -> tuple[np.ndarray, list[dict]]:
        """Vectors and payloads of the points ``ids`` (all must exist), in that order."""
        records = self._records(collection, ids)
        missing = [i for i in ids if i not in records]
        if missing:
            raise VectorStoreError(f"{len(missing)} points missing from {collection}, e.g. {missing[0]}")
        return _stack([records[i][0][vector_name] for i in ids]), [records[i][1] for i in ids]

    @abstractmethod
    def _records(self, collection: str, ids: Sequence[str]) -> dict[str, tuple[dict, dict]]:
        """The stored points among ``ids``: point id -> (named vectors, payload)."""

    def close(self) -> None:  # noqa: B027 - optional hook
        pass

    def build_index(self, collection: str) -> None:  # noqa: B027 - optional hook
        """Index what was written since the last call, so queries stop scanning every point
        (a Qdrant server does this by itself, in the background)."""

    def replace_video(
        self,
        collection: str,
        vector_name: str,
        video_id: str,
        ids: Sequence[str],
        vectors: np.ndarray,
        payloads: Sequence[dict],
        batch_size: int = 256,
    ) -> None:
        """Make the video's points exactly ``ids``: idempotent, stale points removed."""
        self.delete_video(collection, video_id, keep_ids=ids)
        for start in range(0, len(ids), batch_size):
            end = start + batch_size
            self.upsert(collection, vector_name, ids[start:end], vectors[start:end], payloads[start:end])


class EdgeVectorStore(VectorStore):
    """Qdrant's own engine in process (``qdrant-edge-py``); one shard folder per collection."""

    loads = 0  # shards this process has loaded (or created): what holding the store across steps saves

    def __init__(
        self,
        path: str | Path,
        lock_timeout_s: float = LOCK_TIMEOUT_S,
        quantization: str = "none",
        hnsw_ef: int | None = HNSW_EF,
        oversampling: float = OVERSAMPLING,
        codes_in_ram: bool = CODES_IN_RAM,
    ):
        import qdrant_edge

        self._qe = qdrant_edge
        self.path = Path(path).expanduser().resolve()
        self.lock_timeout_s = lock_timeout_s
        self.quantization = _checked(quantization)
        self.codes_in_ram = codes_in_ram  # like quantization, how a new collection is made
        self.hnsw_ef, self.oversampling = hnsw_ef, oversampling  # search effort: candidates visited, rescored
        self._shards: dict[str, object] = {}

    def _room_to_write(self, need: int = 0) -> None:
        """Refuse a write the disk cannot hold (OSError ENOSPC, naming the store and the space)."""
        usage = shutil.disk_usage(self.path if self.path.exists() else self.path.parent)
        if usage.free < MIN_FREE_BYTES + need:
            raise OSError(errno.ENOSPC, f"No space left on device: {usage.free / 1024**2:.1f} MB free for the "
                          f"embedded vector store at {self.path}, which needs {(MIN_FREE_BYTES + need) / 1024**2:.0f} "
                          "MB to write safely")  # fmt: skip

    def _shard(self, collection: str, vector_name: str | None = None, dim: int | None = None):
        if collection in self._shards:
            return self._shards[collection]
        if dim is not None:
            self._room_to_write()
        qe = self._qe
        folder = self.path / collection
        deadline = time.monotonic() + self.lock_timeout_s
        knock = self.path / f"{KNOCK_PREFIX}{os.getpid()}-{uuid.uuid4().hex[:8]}"
        try:
            while True:
                try:
                    if (folder / "edge_config.json").exists():
                        shard = qe.EdgeShard.load(str(folder))
                    elif dim is None:
                        raise VectorStoreError(f"collection {collection!r} does not exist in {self.path}")
                    else:
                        shard = qe.EdgeShard.create(str(folder), self._config(vector_name, dim))
                        self._index_payload(shard)
                    break
                except VectorStoreError:
                    raise
                except Exception as exc:  # the engine reports a held lock as a WAL error
                    if "WouldBlock" not in str(exc):
                        raise VectorStoreError(f"embedded Qdrant store {folder}: {exc}") from exc
                    if time.monotonic() > deadline:  # another step may finish with it: worth a retry
                        raise VectorStoreError(
                            f"embedded Qdrant store {folder} is open in another process "
                            f"(waited {self.lock_timeout_s:.0f} s). Serialise the steps that use it "
                            "(Dagster pool 'qdrant') or point QDRANT_URL at a Qdrant server.",
                            transient=True,
                        ) from exc
                    knock.touch()  # a holder between two of its steps lets go (VectorStoreResource.held)
                    time.sleep(0.5)
        finally:
            knock.unlink(missing_ok=True)
        sweep_dead_knocks(self.path)
        EdgeVectorStore.loads += 1
        self._shards[collection] = shard
        return shard

    def _config(self, vector_name: str, dim: int):
        qe = self._qe
        if self.quantization == "none":
            return qe.EdgeConfig(vectors={vector_name: qe.EdgeVectorParams(size=dim, distance=qe.Distance.Cosine)})
        codes = (
            qe.ScalarQuantizationConfig(qe.ScalarType.Int8, quantile=0.99, always_ram=self.codes_in_ram)
            if self.quantization == "int8"
            else qe.BinaryQuantizationConfig(always_ram=self.codes_in_ram)
        )
        return qe.EdgeConfig(
            vectors={vector_name: qe.EdgeVectorParams(size=dim, distance=qe.Distance.Cosine, on_disk=True)},
            quantization_config=codes,
        )

    def ensure_collection(self, collection: str, vector_name: str, dim: int) -> None:
        self._shard(collection, vector_name, dim)

    def upsert(
        self, collection: str, vector_name: str, ids: Sequence[str], vectors: np.ndarray, payloads: Sequence[dict]
    ) -> None:
        qe = self._qe
        points = [
            qe.Point(pid, {vector_name: vec.tolist()}, payload)
            for pid, vec, payload in zip(ids, np.asarray(vectors, dtype=np.float32), payloads)
        ]
        self._room_to_write(2 * np.asarray(vectors, dtype=np.float32).nbytes)  # written twice: WAL and segment
        self._shard(collection).update(qe.UpdateOperation.upsert_points(points))

    def delete_video(self, collection: str, video_id: str, keep_ids: Sequence[str] = ()) -> None:
        qe = self._qe
        self._shard(collection).update(
            qe.UpdateOperation.delete_points_by_filter(self._video_filter(video_id, keep_ids))
        )

    def count(self, collection: str, video_id: str | None = None) -> int:
        qe = self._qe
        flt = self._video_filter(video_id) if video_id is not None else None
        return self._shard(collection).count(qe.CountRequest(exact=True, filter=flt))

    def count_where(self, collection: str, where: Where) -> int:
        return self._shard(collection).count(self._qe.CountRequest(exact=True, filter=self._filter(where)))

    def _set_payloads(self, collection: str, payloads: dict[str, dict]) -> None:
        qe, shard = self._qe, self._shard(collection)
        for frame_id, fields in payloads.items():  # one operation a point: the engine has no batch of payloads
            shard.update(qe.UpdateOperation.set_payload([point_id_for(frame_id)], fields))

    def _delete_payload_keys(self, collection: str, keys: Sequence[str], where: Where) -> None:
        self._shard(collection).update(
            self._qe.UpdateOperation.delete_payload_by_filter(self._filter(where), list(keys))
        )

    def _payloads(self, collection: str, point_ids: list[str]) -> dict[str, dict]:
        return {str(r.id): dict(r.payload or {}) for r in self._shard(collection).retrieve(point_ids, True, False)}

    def ensure_payload_indexes(self, collection: str) -> None:
        self._index_payload(self._shard(collection))

    def _index_payload(self, shard) -> None:
        qe = self._qe
        for field in PAYLOAD_INDEXES:  # idempotent
            shard.update(qe.UpdateOperation.create_field_index(field, qe.PayloadSchemaType.Keyword))
        for field in FLAG_INDEXES:
            shard.update(qe.UpdateOperation.create_field_index(field, qe.PayloadSchemaType.Bool))

    def _condition(self, clause: tuple):
        qe, (kind, *args) = self._qe, clause
        if kind == "ids":
            return qe.HasIdCondition(set(args[0]))
        key, value = args
        if kind == "any":
            return qe.FieldCondition(key=key, match=qe.MatchAny(value))
        if kind == "is":  # qdrant-edge 0.9 reads a Python bool as the integer 1 (no stored bool matches it);
            value = np.bool_(value) if isinstance(value, bool) else value  # numpy's bool it reads as a bool
            return qe.FieldCondition(key=key, match=qe.MatchValue(value))
        return qe.FieldCondition(key=key, range=qe.RangeFloat(gte=value[0], lte=value[1]))

    def _make_filter(self, must, must_not):
        return self._qe.Filter(must=must, must_not=must_not)

    def _query(self, vector_name, vector, limit, flt):
        qe = self._qe
        return qe.QueryRequest(
            limit=limit,
            query=qe.Query.Nearest(np.asarray(vector, dtype=np.float32).tolist(), using=vector_name),
            with_payload=True,
            filter=flt,
            params=qe.SearchParams(
                hnsw_ef=self.hnsw_ef,
                quantization=qe.QuantizationSearchParams(rescore=True, oversampling=self.oversampling),
            ),
        )

    def nearest(
        self, collection: str, vector_name: str, vector: np.ndarray, limit: int, where: Where | None = None
    ) -> list[tuple[str, float, dict]]:
        return self.nearest_many(collection, vector_name, np.asarray(vector)[None], limit, where)[0]

    def nearest_many(
        self, collection: str, vector_name: str, vectors: np.ndarray, limit: int, where: Where | None = None
    ) -> list[list[tuple[str, float, dict]]]:
        flt = self._filter(where)  # built once: a split or an exclusion list can name many frames
        requests = [self._query(vector_name, v, limit, flt) for v in vectors]
        results = []
        for start in range(0, len(requests), 256):  # one planned pass over the segments per batch
            batch = self._shard(collection).query_batch(self._qe.QueryBatchRequest(requests[start : start + 256]))
            results += [[(str(h.id), float(h.score), dict(h.payload or {})) for h in hits] for hits in batch]
        return results

    def _records(self, collection: str, ids: Sequence[str]) -> dict[str, tuple[dict, dict]]:
        return {
            str(r.id): (r.vector, dict(r.payload or {}))
            for r in self._shard(collection).retrieve(list(ids), True, True)
        }

    def collections(self) -> list[str]:
        if not self.path.is_dir():
            return []
        return sorted(p.name for p in self.path.iterdir() if (p / "edge_config.json").exists())

    def build_index(self, collection: str) -> None:
        self._shard(collection).optimize()  # HNSW over segments past the engine's threshold; cheap when little changed

    def flush(self) -> None:
        """What was written is on disk (a step's writes, as closing makes them)."""
        for shard in self._shards.values():
            shard.flush()

    def close(self) -> None:
        self.flush()
        for shard in self._shards.values():
            shard.close()
        self._shards.clear()


def _knock_ages(path: Path) -> dict[str, float]:
    """The knocks in the store's folder at ``path`` (``KNOCK_PREFIX``), each with seconds since its last touch."""
    now = time.time()
    try:
        with os.scandir(path) as entries:
            return {e.path: now - e.stat().st_mtime for e in entries if e.name.startswith(KNOCK_PREFIX)}
    except OSError:  # the folder or a knock just went away
        return {}


def knocked(path: Path) -> bool:
    """Whether a process is waiting for the embedded store at ``path``."""
    return any(age < KNOCK_FRESH_S for age in _knock_ages(path).values())


def sweep_dead_knocks(path: Path) -> None:
    """Remove the knocks of waiters that died waiting (a live one refreshes its own every half
    second, a waiter that got the store removes it): what KNOCK_DEAD_S leaves untouched is gone."""
    for knock, age in _knock_ages(path).items():
        if age > KNOCK_DEAD_S:
            Path(knock).unlink(missing_ok=True)


class _Held:
    """The embedded store one process keeps open across its steps (``VectorStoreResource.held``),
    lent to each step in turn and given up between two of them to a process that knocks."""

    def __init__(self, path: Path, make):
        self.path, self.make = path, make
        self.store: EdgeVectorStore | None = None
        self.busy = threading.RLock()  # held while a step uses the store
        self.done = threading.Event()
        self.watcher = threading.Thread(target=self._watch, name=f"vector store held at {path}", daemon=True)
        self.watcher.start()

    @contextmanager
    def lend(self) -> Iterator[EdgeVectorStore]:
        with self.busy:
            if self.store is None:  # first use, or given up to a waiting process since
                self.store = self.make()
            try:
                yield self.store
            finally:
                self.store.flush()
                if knocked(self.path):
                    self._give_up()

    def _give_up(self) -> None:
        if self.store is not None:
            self.store.close()
            self.store = None

    def _watch(self) -> None:
        while not self.done.wait(0.5):
            if self.store is not None and knocked(self.path) and self.busy.acquire(blocking=False):
                try:  # between two steps: the waiting process loads it now, this one again when it next needs it
                    self._give_up()
                finally:
                    self.busy.release()

    def close(self) -> None:
        self.done.set()
        self.watcher.join()
        with self.busy:
            self._give_up()


_HELD: dict[Path, _Held] = {}  # resolved store folder -> the store this process holds across its steps


class QdrantClientVectorStore(VectorStore):
    """A Qdrant server through qdrant-client (also runs on qdrant-client's in-memory mode)."""

    def __init__(self, client, describe: str, quantization: str = "none", codes_in_ram: bool = CODES_IN_RAM):
        from qdrant_client import models

        self.client = client
        self.models = models
        self.describe = describe
        self.quantization = _checked(quantization)
        self.codes_in_ram = codes_in_ram

    def _call(self, what: str, fn, *args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except Exception as exc:
            transient, hint = classify_qdrant_error(exc)
            message = f"Qdrant at {self.describe}: {what} failed: {exc}" + (f" ({hint})" if hint else "")
            raise VectorStoreError(message, transient=transient) from exc

    def ensure_collection(self, collection: str, vector_name: str, dim: int) -> None:
        m = self.models
        if self._call("collection_exists", self.client.collection_exists, collection):
            return
        quantized = self.quantization != "none"
        codes = {
            "none": None,
            "int8": m.ScalarQuantization(
                scalar=m.ScalarQuantizationConfig(type=m.ScalarType.INT8, quantile=0.99, always_ram=self.codes_in_ram)
            ),
            "binary": m.BinaryQuantization(binary=m.BinaryQuantizationConfig(always_ram=self.codes_in_ram)),
        }[self.quantization]
        self._call(
            "create_collection",
            self.client.create_collection,
            collection,
            vectors_config={
                vector_name: m.VectorParams(size=dim, distance=m.Distance.COSINE, on_disk=quantized or None)
            },
            quantization_config=codes,
        )
        self.ensure_payload_indexes(collection)

    def upsert(
        self, collection: str, vector_name: str, ids: Sequence[str], vectors: np.ndarray, payloads: Sequence[dict]
    ) -> None:
        m = self.models
        points = [
            m.PointStruct(id=pid, vector={vector_name: vec.tolist()}, payload=payload)
            for pid, vec, payload in zip(ids, np.asarray(vectors, dtype=np.float32), payloads)
        ]
        self._call("upsert", self.client.upsert, collection, points=points, wait=True)

    def delete_video(self, collection: str, video_id: str, keep_ids: Sequence[str] = ()) -> None:
        m = self.models
        self._call(
            "delete",
            self.client.delete,
            collection,
            points_selector=m.FilterSelector(filter=self._video_filter(video_id, keep_ids)),
            wait=True,
        )

    def count(self, collection: str, video_id: str | None = None) -> int:
        flt = self._video_filter(video_id) if video_id is not None else None
        return self._call("count", self.client.count, collection, count_filter=flt, exact=True).count

    def count_where(self, collection: str, where: Where) -> int:
        flt = self._filter(where)
        return self._call("count", self.client.count, collection, count_filter=flt, exact=True).count

    def _set_payloads(self, collection: str, payloads: dict[str, dict]) -> None:
        m = self.models
        operations = [
            m.SetPayloadOperation(set_payload=m.SetPayload(payload=fields, points=[point_id_for(frame_id)]))
            for frame_id, fields in payloads.items()
        ]
        for start in range(0, len(operations), 1000):
            self._call("set_payload", self.client.batch_update_points, collection, operations[start : start + 1000])

    def _delete_payload_keys(self, collection: str, keys: Sequence[str], where: Where) -> None:
        selector = self.models.FilterSelector(filter=self._filter(where))
        self._call(
            "delete_payload", self.client.delete_payload, collection, keys=list(keys), points=selector, wait=True
        )

    def ensure_payload_indexes(self, collection: str) -> None:
        kinds = self.models.PayloadSchemaType
        for field, kind in [(f, kinds.KEYWORD) for f in PAYLOAD_INDEXES] + [(f, kinds.BOOL) for f in FLAG_INDEXES]:
            self._call("create_payload_index", self.client.create_payload_index, collection, field_name=field,
                       field_schema=kind)  # fmt: skip

    def _condition(self, clause: tuple):
        m, (kind, *args) = self.models, clause
        if kind == "ids":
            return m.HasIdCondition(has_id=args[0])
        key, value = args
        if kind == "any":
            return m.FieldCondition(key=key, match=m.MatchAny(any=value))
        if kind == "is":
            return m.FieldCondition(key=key, match=m.MatchValue(value=value))
        return m.FieldCondition(key=key, range=m.Range(gte=value[0], lte=value[1]))

    def _make_filter(self, must, must_not):
        return self.models.Filter(must=must, must_not=must_not)

    def nearest(
        self, collection: str, vector_name: str, vector: np.ndarray, limit: int, where: Where | None = None
    ) -> list[tuple[str, float, dict]]:
        flt = self._filter(where)
        res = self._call(
            "query_points",
            self.client.query_points,
            collection,
            query=np.asarray(vector, dtype=np.float32).tolist(),
            using=vector_name,
            limit=limit,
            with_payload=True,
            query_filter=flt,
            search_params=self.models.SearchParams(
                hnsw_ef=HNSW_EF,
                quantization=self.models.QuantizationSearchParams(rescore=True, oversampling=OVERSAMPLING),
            ),
        )
        return [(str(p.id), float(p.score), dict(p.payload or {})) for p in res.points]

    def collections(self) -> list[str]:
        return sorted(c.name for c in self._call("get_collections", self.client.get_collections).collections)

    def _payloads(self, collection: str, point_ids: list[str]) -> dict[str, dict]:
        found = self._call("retrieve", self.client.retrieve, collection, point_ids, with_payload=True,
                           with_vectors=False)  # fmt: skip
        return {str(r.id): dict(r.payload or {}) for r in found}

    def _records(self, collection: str, ids: Sequence[str]) -> dict[str, tuple[dict, dict]]:
        found = self._call(
            "retrieve", self.client.retrieve, collection, list(ids), with_payload=True, with_vectors=True
        )
        return {str(r.id): (r.vector, dict(r.payload or {})) for r in found}

    def close(self) -> None:
        self.client.close()


class VectorStoreResource(dg.ConfigurableResource):
    """Embedded Qdrant by default; a Qdrant server when ``url`` is set."""

    path: str = Field(
        default=str(Path(VideoCuration.model_fields["storage_root"].default) / "qdrant"),
        description="Folder of the embedded store.",
    )
    url: str | None = Field(default=None, description="Qdrant server URL; overrides path.")
    api_key: str | None = Field(default=None, description="Qdrant server API key.")
    collection_prefix: str = "frames"
    lock_timeout_s: float = LOCK_TIMEOUT_S
    quantization: str = Field(
        default="none",
        description="'int8' / 'binary': new collections keep int8 codes (a quarter of the memory) or one bit a "
        "dimension (a 32nd) in RAM and the full-precision vectors on disk, used to rescore the top hits; for "
        "millions of vectors.",
    )
    codes_in_ram: bool = Field(
        default=CODES_IN_RAM,
        description="With a quantization: new collections keep the codes in RAM (true) or in a memory-mapped file "
        "read through the page cache (false: no copy in the process's own memory).",
    )

    def collection_for(self, vector_name: str, items: str = "frames") -> str:
        """Frames' vectors, or (``items="objects"``) the crops of their boxes, each in their own collection."""
        return (
            f"{self.collection_prefix}__{vector_name}"
            if items == "frames"
            else f"{self.collection_prefix}-{items}__{vector_name}"
        )

    def describe(self) -> str:
        """Where vectors live, safe to show (never the API key)."""
        return self.url or f"embedded:{Path(self.path).expanduser().resolve()}"

    def check(self) -> None:
        """Fail now, not after minutes of embedding, on what no retry can fix: a bad setting, a
        server that refuses the key (one cheap request; the embedded store is not locked)."""
        with self.open() as store:
            store.collections()

    def _edge(self) -> EdgeVectorStore:
        return EdgeVectorStore(self.path, self.lock_timeout_s, self.quantization, codes_in_ram=self.codes_in_ram)

    @contextmanager
    def held(self) -> Iterator[None]:
        """Keep the embedded store open from here to the block's end for every step this process
        runs inside it: ``open`` lends the one store, loaded once, instead of loading the shard
        per step (seconds at a million points: bench/RESULTS.md, issue 28). Each step's writes are
        still flushed when it ends, and the block's end closes the store (its lock released).

        The lock is not hogged: a process that waits for it (another run's step) knocks
        (``KNOCK_PREFIX``), and this one gives the store up as soon as its current step is done
        with it, loading it again at its next step that needs it. A Qdrant server needs none of
        this (no lock, nothing loaded per step): the block changes nothing there."""
        key = Path(self.path).expanduser().resolve()
        if self.url or key in _HELD:  # a server, or an outer block holds it already
            yield
            return
        _HELD[key] = holder = _Held(key, self._edge)
        try:
            yield
        finally:
            del _HELD[key]
            holder.close()

    @contextmanager
    def open(self) -> Iterator[VectorStore]:
        """Open the store for the duration of a step and always release it (and its lock); inside
        ``held``, lend the store held open across steps."""
        if self.url:
            from qdrant_client import QdrantClient

            store: VectorStore = QdrantClientVectorStore(
                QdrantClient(url=self.url, api_key=self.api_key or None), self.url, self.quantization, self.codes_in_ram
            )
        elif (holder := _HELD.get(Path(self.path).expanduser().resolve())) is not None:
            with holder.lend() as lent:
                yield lent
            return
        else:
            store = self._edge()
        try:
            yield store
        finally:
            store.close()
