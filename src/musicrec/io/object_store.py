"""Objects under one base URI on a local path, ``s3://`` (boto3) or ``gs://`` (google-cloud-storage).

:class:`ObjectStore` lists, creates if absent, uploads, checksums and publishes: what push writes a model
store with and what lineage verifies against. Clients come from the standard environment (see
:mod:`musicrec.io.storage`); every failure is a one-line :class:`~musicrec.errors.StorageError`.
"""

from __future__ import annotations

import abc
import contextlib
import hashlib
import os
import shutil
import uuid
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, TypeVar

from typing_extensions import override

from musicrec.errors import StorageError
from musicrec.io.clients import (
    error_status,
    gcs_client,
    gcs_request_options,
    s3_client,
    translate_errors,
    with_retries,
)
from musicrec.io.storage import READ_BUFFER_BYTES, extended_digest, parse_uri

if TYPE_CHECKING:
    from hashlib import _Hash as Digest  # the type of hashlib.sha256()

T = TypeVar("T")


WRITE_PROBE_PREFIX = ".write-probe-"  # at the base itself: a probe leaves no directory behind


class ObjectStore(abc.ABC):
    """Objects under one base URI (a local directory, ``s3://bucket/prefix`` or ``gs://bucket/prefix``).

    Keys are ``/``-separated paths relative to the base. Every call retries transient errors
    (:func:`with_retries`) and fails with a one-line :class:`StorageError` naming the URI.
    """

    def __init__(self, base_uri: str) -> None:
        self.base_uri = base_uri.rstrip("/")

    def uri(self, key: str = "") -> str:
        """The full URI of ``key``."""
        return f"{self.base_uri}/{key}" if key else self.base_uri

    def _retry(self, operation: Callable[[], T], verb: str, key: str) -> T:
        return with_retries(operation, f"{verb} {self.uri(key)}")

    @abc.abstractmethod
    def list(self, prefix: str = "") -> list[str]:
        """Every key below ``prefix`` (recursive), sorted."""

    @abc.abstractmethod
    def read(self, key: str) -> bytes:
        """The bytes of one object."""

    @abc.abstractmethod
    def write(self, key: str, data: bytes) -> None:
        """Create or replace one object with ``data`` (readers see the old or the new bytes, never a part)."""

    @abc.abstractmethod
    def create(self, key: str, data: bytes) -> bool:
        """Write ``data`` only if ``key`` does not exist yet (atomically); ``False`` if it already existed."""

    @abc.abstractmethod
    def upload(self, key: str, path: Path) -> None:
        """Copy one local file to ``key``."""

    @abc.abstractmethod
    def _extend_digest(self, digest: Digest, key: str) -> Digest:
        """A copy of ``digest`` fed the stored bytes of ``key``, streamed back from the store.

        ``digest`` itself is left as it was, so a retry after a broken read starts over cleanly.
        """

    def sha256(self, key: str) -> str:
        """Hex sha256 of the stored bytes of ``key``, streamed back from the store."""
        return self._extend_digest(hashlib.sha256(), key).hexdigest()

    @abc.abstractmethod
    def promote(self, source: str, target: str, keys: list[str]) -> None:
        """Move ``source/<key>`` to ``target/<key>`` for each key, in order; ``target`` must not exist."""

    @abc.abstractmethod
    def delete(self, prefix: str) -> None:
        """Remove every object below ``prefix``."""

    def check_writable(self) -> None:
        """Write and delete a small probe object, so a store that cannot take a push fails before any work.

        Raises:
            StorageError: ``cannot write <uri>/<probe>: <cause>`` (read-only, unreachable, no bucket, no access).
        """
        key = f"{WRITE_PROBE_PREFIX}{uuid.uuid4().hex}"
        self.write(key, b"musicrec write probe\n")
        self.delete(key)

    def exists(self, key: str) -> bool:
        """Whether ``key`` names an object."""
        return key in self.list(key)

    def tree_sha256(self, prefix: str = "") -> str:
        """Content hash of ``prefix``: of the object's bytes if it is one, else over relative paths and bytes.

        Matches :func:`musicrec.io.artifacts.directory_sha256` and :func:`file_sha256` on a local copy.
        """
        keys = self.list(prefix)
        if keys == [prefix] or (not prefix and keys == [""]):
            return self.sha256(prefix)
        if not keys:
            raise StorageError(f"cannot read {self.uri(prefix)}: not found")
        digest = hashlib.sha256()
        base = f"{prefix}/" if prefix else ""
        for key in sorted(keys, key=lambda k: k[len(base) :]):
            digest.update(key[len(base) :].encode())
            digest = self._extend_digest(digest, key)
        return digest.hexdigest()


class LocalStore(ObjectStore):
    """A directory; publishing a version is one ``rename``, so it appears whole or not at all."""

    def __init__(self, base_uri: str) -> None:
        super().__init__(base_uri)
        self.root = parse_uri(base_uri).local_path if base_uri.startswith("file://") else Path(base_uri)

    def _path(self, key: str) -> Path:
        return self.root / key if key else self.root

    @override
    def list(self, prefix: str = "") -> list[str]:
        path = self._path(prefix)
        if path.is_file():
            return [prefix]
        if not path.is_dir():
            return []
        return sorted(p.relative_to(self.root).as_posix() for p in path.rglob("*") if p.is_file())

    @override
    def read(self, key: str) -> bytes:
        with translate_errors(self.uri(key)):
            return self._path(key).read_bytes()

    def _temporary(self, key: str, data: bytes) -> Path:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
        temporary.write_bytes(data)
        return temporary

    @override
    def write(self, key: str, data: bytes) -> None:
        with translate_errors(self.uri(key), "write"):
            os.replace(self._temporary(key, data), self._path(key))

    @override
    def create(self, key: str, data: bytes) -> bool:
        with translate_errors(self.uri(key), "write"):
            temporary = self._temporary(key, data)
            try:
                os.link(temporary, self._path(key))  # fails if the key exists: an atomic create-if-absent
            except FileExistsError:
                return False
            finally:
                temporary.unlink()
            return True

    @override
    def upload(self, key: str, path: Path) -> None:
        with translate_errors(self.uri(key), "write"):
            target = self._path(key)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, target)

    @override
    def _extend_digest(self, digest: Digest, key: str) -> Digest:
        with translate_errors(self.uri(key)), open(self._path(key), "rb") as stream:
            return extended_digest(digest, stream)

    @override
    def promote(self, source: str, target: str, keys: list[str]) -> None:
        with translate_errors(self.uri(target), "publish"):
            destination = self._path(target)
            if destination.exists():
                raise StorageError(f"cannot publish {self.uri(target)}: it already exists")
            destination.parent.mkdir(parents=True, exist_ok=True)
            os.rename(self._path(source), destination)

    @override
    def delete(self, prefix: str) -> None:
        path = self._path(prefix)
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        elif path.exists():
            path.unlink()


class _BucketStore(ObjectStore):
    """A prefix in an object-store bucket: keys are joined to ``prefix`` with ``/``."""

    prefix: str

    @staticmethod
    def _split(base_uri: str) -> tuple[str, str]:
        bucket, _, prefix = base_uri.partition("://")[2].partition("/")
        if not bucket:
            raise StorageError(f"{base_uri}: expected a bucket, as in s3://bucket/prefix or gs://bucket/prefix")
        return bucket, prefix.strip("/")

    def _key(self, key: str) -> str:
        return "/".join(part for part in (self.prefix, key) if part)

    @abc.abstractmethod
    def _open(self, key: str) -> BinaryIO:
        """A readable stream of the object's bytes."""

    @abc.abstractmethod
    def _put_if_absent(self, key: str, data: bytes) -> None:
        """Write one object with a precondition that it does not exist (HTTP 412 if it does)."""

    @override
    def create(self, key: str, data: bytes) -> bool:
        def run() -> bool:
            try:
                self._put_if_absent(key, data)
            except Exception as error:
                if error_status(error) == 412:  # PreconditionFailed: someone else holds the key
                    return False
                raise
            return True

        return self._retry(run, "create", key)

    @abc.abstractmethod
    def _copy(self, source: str, target: str) -> None:
        """A server-side copy of one object."""

    @override
    def _extend_digest(self, digest: Digest, key: str) -> Digest:
        def run() -> Digest:
            with contextlib.closing(self._open(key)) as stream:
                return extended_digest(digest, stream)

        return self._retry(run, "read", key)

    @override
    def promote(self, source: str, target: str, keys: list[str]) -> None:
        if self.list(target):
            raise StorageError(f"cannot publish {self.uri(target)}: it already exists")
        for (
            key
        ) in keys:  # object stores have no rename: copy server-side in the caller's order, then drop the source
            self._retry(lambda k=key: self._copy(f"{source}/{k}", f"{target}/{k}"), "publish", f"{target}/{key}")
        self.delete(source)

    def _relative_keys(self, full_keys: Iterable[str], prefix: str) -> list[str]:
        """Keys relative to the base of the objects at or below ``prefix``.

        A raw listing by prefix also returns siblings that merely start with the same characters; they are dropped.
        """
        full = self._key(prefix)
        kept = [k for k in full_keys if not full or k == full or k.startswith(full + "/")]
        return sorted("" if k == self.prefix else k[len(self.prefix) + 1 :] if self.prefix else k for k in kept)


class S3Store(_BucketStore):
    """An S3 prefix through boto3 (``AWS_ENDPOINT_URL`` and the credential chain apply)."""

    def __init__(self, base_uri: str) -> None:
        super().__init__(base_uri)
        self.bucket, self.prefix = self._split(base_uri)
        self.client = s3_client()

    @override
    def list(self, prefix: str = "") -> list[str]:
        def run() -> list[str]:
            pages = self.client.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=self._key(prefix)
            )
            return self._relative_keys((o["Key"] for page in pages for o in page.get("Contents", [])), prefix)

        return self._retry(run, "list", prefix)

    @override
    def read(self, key: str) -> bytes:
        return self._retry(lambda: self.client.get_object(Bucket=self.bucket, Key=self._key(key))["Body"].read(),
                           "read", key)  # fmt: skip

    @override
    def write(self, key: str, data: bytes) -> None:
        self._retry(
            lambda: self.client.put_object(Bucket=self.bucket, Key=self._key(key), Body=data), "write", key
        )

    def _put_if_absent(self, key: str, data: bytes) -> None:
        self.client.put_object(Bucket=self.bucket, Key=self._key(key), Body=data, IfNoneMatch="*")

    @override
    def upload(self, key: str, path: Path) -> None:
        self._retry(lambda: self.client.upload_file(str(path), self.bucket, self._key(key)), "upload", key)

    def _open(self, key: str) -> BinaryIO:
        return self.client.get_object(Bucket=self.bucket, Key=self._key(key))["Body"]

    def _copy(self, source: str, target: str) -> None:
        self.client.copy({"Bucket": self.bucket, "Key": self._key(source)}, self.bucket, self._key(target))

    @override
    def delete(self, prefix: str) -> None:
        keys = self.list(prefix)
        for start in range(0, len(keys), 1000):
            batch = [{"Key": self._key(k)} for k in keys[start : start + 1000]]
            self._retry(lambda b=batch: self.client.delete_objects(Bucket=self.bucket, Delete={"Objects": b}),
                        "delete", prefix)  # fmt: skip


class GcsStore(_BucketStore):
    """A GCS prefix through google-cloud-storage (``STORAGE_EMULATOR_HOST`` and ADC apply)."""

    def __init__(self, base_uri: str) -> None:
        super().__init__(base_uri)
        bucket, self.prefix = self._split(base_uri)
        self.bucket = gcs_client().bucket(bucket)

    def _blob(self, key: str) -> Any:
        return self.bucket.blob(self._key(key))

    def _bounded(self, verb: str, key: str) -> dict[str, Any]:
        """Timeouts and a bounded, logged retry policy for one call (see :func:`gcs_request_options`)."""
        return gcs_request_options(f"{verb} {self.uri(key)}", self.bucket.client)

    @override
    def list(self, prefix: str = "") -> list[str]:
        def run() -> list[str]:
            bounded = self._bounded("list", prefix)
            blobs = self.bucket.client.list_blobs(self.bucket, prefix=self._key(prefix), **bounded)
            return self._relative_keys((blob.name for blob in blobs), prefix)

        return self._retry(run, "list", prefix)

    @override
    def read(self, key: str) -> bytes:
        return self._retry(lambda: self._blob(key).download_as_bytes(**self._bounded("read", key)), "read", key)

    @override
    def write(self, key: str, data: bytes) -> None:
        self._retry(lambda: self._blob(key).upload_from_string(data, **self._bounded("write", key)), "write", key)

    def _put_if_absent(self, key: str, data: bytes) -> None:
        self._blob(key).upload_from_string(data, if_generation_match=0, **self._bounded("create", key))

    @override
    def upload(self, key: str, path: Path) -> None:
        self._retry(lambda: self._blob(key).upload_from_filename(str(path), **self._bounded("upload", key)),
                    "upload", key)  # fmt: skip

    def _open(self, key: str) -> BinaryIO:
        return self._blob(key).open("rb", chunk_size=READ_BUFFER_BYTES, **self._bounded("read", key))

    def _copy(self, source: str, target: str) -> None:
        self.bucket.copy_blob(
            self._blob(source), self.bucket, self._key(target), **self._bounded("publish", target)
        )

    @override
    def delete(self, prefix: str) -> None:
        for key in self.list(prefix):
            self._retry(lambda k=key: self._blob(k).delete(**self._bounded("delete", k)), "delete", key)


def open_store(base_uri: str) -> ObjectStore:
    """The store behind ``base_uri``: a local directory, ``s3://bucket[/prefix]`` or ``gs://bucket[/prefix]``.

    Raises:
        StorageError: an empty URI or an unsupported scheme.
    """
    if not base_uri:
        raise StorageError("empty URI: expected a local directory, s3://bucket/prefix or gs://bucket/prefix")
    scheme = base_uri.partition("://")[0] if "://" in base_uri else "file"
    stores: dict[str, type[ObjectStore]] = {"file": LocalStore, "s3": S3Store, "gs": GcsStore}
    if scheme not in stores:
        raise StorageError(f"unsupported URI scheme {scheme!r} in {base_uri}: use a local path, s3:// or gs://")
    return stores[scheme](base_uri)
