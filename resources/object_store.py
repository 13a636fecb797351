"""Object storage: one root URI, a local folder or ``s3://bucket/prefix``.

``ObjectStore`` is plain Python (usable outside Dagster); ``ObjectStoreResource`` binds it
into Dagster. Keys are always relative POSIX paths under the root; a key that tries to
leave the root is refused. Every write is atomic: a local temp file renamed into place,
or a single S3 PUT, so a failed step never leaves a file that looks complete.
"""

from __future__ import annotations

import errno
import io
import os
import posixpath
import stat
import tempfile
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import numpy as np
import pandas as pd
from pydantic import Field

from curation_assets.component import VideoCuration
from curation_assets.core.layout import overlap_problem


@dataclass(frozen=True)
class StoredObject:
    key: str  # relative to the store's root
    size: int
    fingerprint: str  # changes whenever the content changes (ETag, or size + mtime)
    special: str = ""  # what a local entry that is not a regular file is (only from ``list_entries``)


TEMP_PREFIX = ".tmp-"  # local writes in progress; never listed


class StorageError(RuntimeError):
    """A storage operation failed; the message names the object (never a credential).

    ``transient`` is decided where the error is raised: True only for what waiting can fix
    (unreachable, timeouts, 5xx, throttling); a missing bucket, a refused credential or a
    missing object is permanent and is not retried."""

    def __init__(self, message: str, transient: bool = False):
        super().__init__(message)
        self.transient = transient


# S3 error codes that a later attempt can get past (all 5xx are too)
S3_TRANSIENT_CODES = frozenset(
    {"Throttling", "ThrottlingException", "SlowDown", "RequestTimeout", "RequestLimitExceeded",
     "TooManyRequestsException", "InternalError", "ServiceUnavailable", "OperationAborted"}
)  # fmt: skip
# what fixes a permanent one: the setting (env var) to look at
S3_CREDENTIALS_CODES = frozenset(
    {"AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "ExpiredToken", "InvalidToken", "AllAccessDisabled"}
)
S3_BUCKET_HINT = "check the bucket in CURATION_STORAGE_URI (or CURATION_LANDING_URI)"
S3_CREDENTIALS_HINT = (
    "the credentials cannot read it: check AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY (or AWS_PROFILE) "
    "and the bucket's policy"
)


def classify_s3_error(exc: Exception) -> tuple[bool, str]:
    """(transient, hint naming the setting that fixes it) for a botocore exception."""
    from botocore import exceptions as bx

    if isinstance(exc, bx.ClientError):
        code = str(exc.response.get("Error", {}).get("Code", ""))
        status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
        if status >= 500 or status == 429 or code in S3_TRANSIENT_CODES:
            return True, "the service is briefly unavailable"
        if code in S3_CREDENTIALS_CODES or status in (401, 403):
            return False, S3_CREDENTIALS_HINT
        if code == "NoSuchBucket":
            return False, f"the bucket does not exist: {S3_BUCKET_HINT}"
        return False, ""  # e.g. NoSuchKey: the object is not there, waiting will not bring it
    if isinstance(exc, bx.SSLError):
        return False, "TLS failed: check CURATION_S3_ENDPOINT_URL"
    if isinstance(exc, bx.ConnectionError | bx.HTTPClientError):  # refused, timed out, closed mid-way
        return True, "unreachable: check CURATION_S3_ENDPOINT_URL if this persists"
    if isinstance(exc, bx.NoCredentialsError | bx.PartialCredentialsError):
        return False, "no credentials: set AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY (or AWS_PROFILE)"
    return False, ""  # parameter validation and the like: a bug or a bad setting, not a fault


class NotARegularFile(ValueError):
    """A local entry that is not read: a symbolic link (never followed, so nothing outside the
    root is read through one), a named pipe (reading it would wait forever), a device or a
    socket. Bad input, never retried; the message names the entry and what it is."""


def clean_key(key: str) -> str:
    """Normalise a relative key and refuse anything that escapes the root."""
    norm = posixpath.normpath(key.replace("\\", "/")).lstrip("/")
    if norm in ("", ".") or norm == ".." or norm.startswith("../"):
        raise ValueError(f"{key!r}: key is outside the storage root")
    return norm


class ObjectStore(ABC):
    """Read and write bytes and tables under one root."""

    root: str

    @abstractmethod
    def put_bytes(self, key: str, data: bytes) -> str:
        """Write ``data`` atomically; returns the object's URI."""

    @abstractmethod
    def get_bytes(self, key: str) -> bytes: ...

    @abstractmethod
    def exists(self, key: str) -> bool: ...

    @abstractmethod
    def list(self, prefix: str = "", page_size: int = 1000) -> Iterator[StoredObject]:
        """All objects under ``prefix``, sorted by key, fetched a page at a time."""

    def list_entries(self, prefix: str = "", page_size: int = 1000) -> Iterator[StoredObject]:
        """``list``, and the entries it leaves out because they are not regular files (links,
        pipes, devices, sockets: ``special`` says which), in one pass. An object store has none."""
        return self.list(prefix, page_size)

    @abstractmethod
    def delete(self, key: str) -> None: ...

    @abstractmethod
    def uri(self, key: str) -> str: ...

    def prune(self, prefix: str, keep: set[str]) -> int:
        """Delete every object under ``prefix`` whose key is not in ``keep`` (left by a killed or
        differently configured run); returns how many went."""
        stale = [obj.key for obj in self.list(prefix) if obj.key not in keep]
        for key in stale:
            self.delete(key)
        return len(stale)

    @abstractmethod
    @contextmanager
    def local_path(self, key: str) -> Iterator[Path]:
        """A local file holding the object (a temp download for remote stores)."""

    def key_for_uri(self, uri: str) -> str:
        """Inverse of ``uri``: the key of a URI under this root."""
        base = self.uri("x")[:-1]
        if not uri.startswith(base):
            raise ValueError(f"{uri}: not under {self.root}")
        return clean_key(uri[len(base) :])

    def write_table(self, key: str, df: pd.DataFrame) -> str:
        buf = io.BytesIO()
        df.to_parquet(buf, index=False, use_dictionary=_dictionary_columns(df))
        return self.put_bytes(key, buf.getvalue())

    def read_table(self, key: str) -> pd.DataFrame:
        """A Parquet table, or CSV when the key ends in ``.csv`` (tables users bring, e.g. predictions)."""
        data = io.BytesIO(self.get_bytes(key))
        return pd.read_csv(data) if key.endswith(".csv") else pd.read_parquet(data)

    def read_tables(self, prefix: str, keep: Callable[[str], bool] | None = None) -> pd.DataFrame | None:
        """Concatenate every Parquet table under ``prefix`` whose key ``keep`` accepts (default
        all); ``None`` when there is none."""
        frames = [
            self.read_table(obj.key)
            for obj in self.list(prefix)
            if obj.key.endswith(".parquet") and (keep is None or keep(obj.key))
        ]
        frames = [f for f in frames if len(f)]
        return pd.concat(frames, ignore_index=True) if frames else None


def _dictionary_columns(df: pd.DataFrame) -> list[str]:
    """Columns worth Parquet's dictionary encoding: all but floats and vectors, whose values
    rarely repeat (trying it on 1 065 frame vectors took half the table's write time)."""
    return [str(c) for c in df.columns if df[c].dtype.kind != "f" and not _holds_arrays(df[c])]


def _holds_arrays(column: pd.Series) -> bool:
    return column.dtype == object and len(column) > 0 and isinstance(column.iloc[0], np.ndarray | list)


class LocalObjectStore(ObjectStore):
    """Files under a folder. With ``follow_links=False`` (the landing zone: what users drop
    there is untrusted) only regular files are listed and read: a symbolic link is never
    followed, and links, pipes, devices and sockets are reported by ``list_entries``."""

    def __init__(self, root: str | Path, follow_links: bool = True):
        self.root = str(Path(root).expanduser().resolve())
        self.follow_links = follow_links

    def _path(self, key: str) -> Path:
        return Path(self.root) / clean_key(key)

    def put_bytes(self, key: str, data: bytes) -> str:
        path = self._path(key)
        tmp = None
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            # No object suffix on the temp name: a write cut short never looks like a frame or a table.
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=TEMP_PREFIX, suffix=".part")
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            os.replace(tmp, path)
        except OSError as exc:
            if tmp:
                Path(tmp).unlink(missing_ok=True)
            if exc.errno in (errno.ENOSPC, errno.EDQUOT):  # the write's own error names no file
                raise OSError(exc.errno, f"{exc.strerror} writing {path} (storage root {self.root})") from exc
            raise
        except BaseException:
            if tmp:
                Path(tmp).unlink(missing_ok=True)
            raise
        return str(path)

    def _regular(self, key: str) -> Path:
        """The file of ``key``, refused (NotARegularFile) when it is not a regular file under the
        root: the last component is opened without following a link, and a link on the way
        (a folder swapped for one) is caught by resolving the path."""
        path = self._path(key)
        if self.follow_links:
            return path
        if not path.is_symlink() and path.resolve().is_relative_to(self.root):
            what = _special(path.lstat()) if path.exists() else None
            if what is None:
                return path
        else:
            what = _link(path)
        raise NotARegularFile(f"{path}: {what}")

    def get_bytes(self, key: str) -> bytes:
        if self.follow_links:
            return self._path(key).read_bytes()
        path = self._regular(key)
        # O_NONBLOCK: a pipe swapped in after the check above cannot make the open wait forever
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        with os.fdopen(fd, "rb") as f:
            if (what := _special(os.fstat(fd))) is not None:
                raise NotARegularFile(f"{path}: {what}")
            return f.read()

    def exists(self, key: str) -> bool:
        path = self._path(key)
        return path.is_file() and (self.follow_links or not path.is_symlink())

    def _entries(self, prefix: str) -> list[tuple[str, os.DirEntry]]:
        """(key, entry) of everything under ``prefix`` but folders, sorted by key; a link to a
        folder is an entry, never entered."""
        start = os.path.join(self.root, clean_key(prefix)) if prefix.strip("/") else self.root
        if os.path.islink(start) or not os.path.isdir(start):
            return []
        found, folders, skip = [], [start], len(self.root) + 1
        while folders:
            with os.scandir(folders.pop()) as listing:
                for entry in listing:
                    if entry.is_dir(follow_symlinks=False):
                        folders.append(entry.path)
                    elif not entry.name.startswith(TEMP_PREFIX):  # a write in progress
                        found.append((entry.path[skip:].replace(os.sep, "/"), entry))
        return sorted(found, key=lambda item: item[0])

    def list(self, prefix: str = "", page_size: int = 1000) -> Iterator[StoredObject]:
        return (obj for obj in self.list_entries(prefix, page_size) if not obj.special)

    def list_entries(self, prefix: str = "", page_size: int = 1000) -> Iterator[StoredObject]:
        for key, entry in self._entries(prefix):
            st = entry.stat(follow_symlinks=False)
            if self.follow_links and stat.S_ISLNK(st.st_mode) and entry.is_file():
                st = entry.stat()  # the storage root's own files may be links (e.g. to a larger disk)
            if stat.S_ISREG(st.st_mode):
                yield StoredObject(key, st.st_size, f"{st.st_size}-{st.st_mtime_ns}")
            elif not self.follow_links:
                what = _link(Path(entry.path)) if stat.S_ISLNK(st.st_mode) else _special(st)
                yield StoredObject(key, 0, f"special:{what}", special=what)

    def delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)

    def prune(self, prefix: str, keep: set[str]) -> int:
        folder = Path(self.root) / clean_key(prefix)
        for abandoned in folder.glob(f"{TEMP_PREFIX}*") if folder.is_dir() else ():
            abandoned.unlink(missing_ok=True)  # a write whose process was killed before the rename
        return super().prune(prefix, keep)

    def uri(self, key: str) -> str:
        return str(self._path(key))

    @contextmanager
    def local_path(self, key: str) -> Iterator[Path]:
        yield self._regular(key)


def _special(st: os.stat_result) -> str | None:
    """What a non-regular entry is, None for a regular file."""
    mode = st.st_mode
    for test, what in ((stat.S_ISFIFO, "a named pipe (FIFO)"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"),
                       (stat.S_ISDIR, "a folder"), (stat.S_ISLNK, "a symbolic link")):  # fmt: skip
        if test(mode):
            return f"{what}: not read"
    return None


def _link(path: Path) -> str:
    """A symbolic link (or a path through one), described with its target."""
    if not path.is_symlink():
        return "a path through a symbolic link: links are not followed"
    target = os.readlink(path)
    kind = "a folder" if path.is_dir() else "a file" if path.is_file() else "nothing readable"
    return f"a symbolic link to {kind} ({target}): links are not followed"


class S3ObjectStore(ObjectStore):
    """Objects under ``s3://bucket/prefix``; ``client`` is a boto3 S3 client."""

    def __init__(self, root: str, client):
        if not root.startswith("s3://"):
            raise ValueError(f"{root}: not an s3:// URI")
        bucket, _, prefix = root[len("s3://") :].partition("/")
        self.root = root.rstrip("/")
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.client = client

    def _key(self, key: str) -> str:
        """Full key for a write: normalised, never outside the prefix."""
        key = clean_key(key)
        return f"{self.prefix}/{key}" if self.prefix else key

    def _listed_key(self, key: str) -> str:
        """Full key for a read of a listed object, kept verbatim: S3 keys are opaque, and one
        named ``a/../b.mp4`` is that object, not ``b.mp4``."""
        return f"{self.prefix}/{key}" if self.prefix else key

    @contextmanager
    def _errors(self, operation: str, full_key: str) -> Iterator[None]:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            yield
        except (BotoCoreError, ClientError) as exc:
            transient, hint = classify_s3_error(exc)
            message = f"s3://{self.bucket}/{full_key}: {operation} failed: {exc}" + (f" ({hint})" if hint else "")
            raise StorageError(message, transient=transient) from exc

    def put_bytes(self, key: str, data: bytes) -> str:
        full = self._key(key)
        with self._errors("put", full):
            self.client.put_object(Bucket=self.bucket, Key=full, Body=data)
        return self.uri(key)

    def get_bytes(self, key: str) -> bytes:
        full = self._listed_key(key)
        with self._errors("get", full):
            return self.client.get_object(Bucket=self.bucket, Key=full)["Body"].read()

    def exists(self, key: str) -> bool:
        from botocore.exceptions import ClientError

        full = self._listed_key(key)
        with self._errors("head", full):
            try:
                self.client.head_object(Bucket=self.bucket, Key=full)
                return True
            except ClientError as exc:
                if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                    return False
                raise

    def list(self, prefix: str = "", page_size: int = 1000) -> Iterator[StoredObject]:
        # Folder semantics, like the local store: "tables/x" lists "tables/x/...".
        folder = "/".join(p for p in (self.prefix, clean_key(prefix) if prefix.strip("/") else "") if p)
        full = f"{folder}/" if folder else ""
        paginator = self.client.get_paginator("list_objects_v2")
        strip = len(self.prefix) + 1 if self.prefix else 0
        pages = paginator.paginate(Bucket=self.bucket, Prefix=full, PaginationConfig={"PageSize": page_size})
        with self._errors("list", full):
            for page in pages:
                for obj in page.get("Contents", []):
                    yield StoredObject(key=obj["Key"][strip:], size=obj["Size"], fingerprint=obj["ETag"].strip('"'))

    def delete(self, key: str) -> None:
        full = self._key(key)
        with self._errors("delete", full):
            self.client.delete_object(Bucket=self.bucket, Key=full)

    def uri(self, key: str) -> str:
        return f"s3://{self.bucket}/{self._key(key)}"

    @contextmanager
    def local_path(self, key: str) -> Iterator[Path]:
        suffix = Path(key).suffix
        with tempfile.TemporaryDirectory(prefix="curation-") as tmp:
            path = Path(tmp) / f"object{suffix}"
            full = self._listed_key(key)
            with self._errors("download", full):
                self.client.download_file(self.bucket, full, str(path))
            yield path


def open_store(
    uri: str, endpoint_url: str | None = None, region_name: str | None = None, follow_links: bool = True
) -> ObjectStore:
    """A store for a local folder or an ``s3://`` URI (credentials from the environment)."""
    if uri.startswith("s3://"):
        from dagster_aws.s3 import S3Resource

        client = S3Resource(endpoint_url=endpoint_url, region_name=region_name).get_client()
        return S3ObjectStore(uri, client)
    if "://" in uri and not uri.startswith("file://"):
        raise ValueError(f"{uri}: unsupported storage URI (use a folder or s3://bucket/prefix)")
    return LocalObjectStore(uri.removeprefix("file://"), follow_links)


class ObjectStoreResource(dg.ConfigurableResource):
    """Where frames, tables, exports and datasets live, and where videos land."""

    root: str = Field(
        default=VideoCuration.model_fields["storage_root"].default, description="Folder or s3://bucket/prefix."
    )
    landing: str = Field(
        default="",
        description="Landing zone (folder or s3:// URI); empty means '<root>/landing'.",
    )
    endpoint_url: str | None = Field(default=None, description="S3-compatible endpoint (MinIO, moto); None for AWS.")
    region_name: str | None = None

    def store(self) -> ObjectStore:
        return open_store(self.root, self.endpoint_url, self.region_name)

    def read(self, uri: str) -> bytes:
        """One object named by its own URI (a file path or s3://bucket/key), with this
        resource's endpoint and credentials: e.g. a query image outside the storage root."""
        parent, _, name = uri.rstrip("/").rpartition("/")
        return open_store(parent or ".", self.endpoint_url, self.region_name).get_bytes(name)

    def landing_store(self) -> ObjectStore:
        uri = self.landing or f"{self.root.rstrip('/')}/landing"
        if problem := overlap_problem(self.root, uri):
            raise ValueError(problem)
        return open_store(uri, self.endpoint_url, self.region_name, follow_links=False)
