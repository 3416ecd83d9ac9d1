"""Streaming reads from a local path, ``s3://`` (boto3) or ``gs://`` (google-cloud-storage).

Clients are built from the standard environment: the AWS credential chain and ``AWS_ENDPOINT_URL`` /
``AWS_ENDPOINT_URL_S3`` for boto3; application default credentials and ``STORAGE_EMULATOR_HOST`` for
google-cloud-storage. Every failure surfaces as :class:`StorageError` with a one-line message that names
the URI, so a pipeline step can stop with a clear error instead of a stack of library frames.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import io
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

GZIP_MAGIC = b"\x1f\x8b"
_READ_BUFFER_BYTES = 4 * 1024 * 1024


class StorageError(RuntimeError):
    """An object or file could not be read; the message names the URI and the cause."""


@dataclass(frozen=True)
class Location:
    """A parsed storage URI: ``scheme`` is ``file``, ``s3`` or ``gs``."""

    scheme: str
    bucket: str
    key: str

    @property
    def local_path(self) -> Path:
        """The filesystem path of a ``file`` location."""
        return Path(self.key)


def parse_uri(uri: str) -> Location:
    """Split ``uri`` into scheme, bucket and key; plain paths and ``file://`` URIs are local.

    Raises:
        StorageError: for an empty URI, an unsupported scheme, or an object URI without bucket or key.
    """
    if not uri:
        raise StorageError("empty URI: expected a local path, s3://bucket/key or gs://bucket/key")
    if uri.startswith("file://"):
        return Location("file", "", uri[len("file://") :])
    scheme, sep, rest = uri.partition("://")
    if not sep:
        return Location("file", "", uri)
    if scheme not in ("s3", "gs"):
        raise StorageError(f"unsupported URI scheme {scheme!r} in {uri}: use a local path, s3:// or gs://")
    bucket, _, key = rest.partition("/")
    if not bucket or not key:
        raise StorageError(f"{uri}: expected {scheme}://bucket/key")
    return Location(scheme, bucket, key)


class _HashingReader(io.RawIOBase):
    """Counts and sha256-hashes the stored bytes as they stream past, so lineage costs no second read."""

    def __init__(self, raw: BinaryIO) -> None:
        self._raw = raw
        self.sha256 = hashlib.sha256()
        self.bytes_read = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        data = self._raw.read(len(buffer))
        n = len(data)
        buffer[:n] = data
        self.sha256.update(data)
        self.bytes_read += n
        return n

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._raw.close()
        super().close()


def _open_raw(location: Location) -> BinaryIO:
    if location.scheme == "file":
        return open(location.local_path, "rb")  # noqa: SIM115 - closed by the caller's stack
    if location.scheme == "s3":
        import boto3

        response = boto3.client("s3").get_object(Bucket=location.bucket, Key=location.key)
        return response["Body"]
    from google.cloud import storage

    blob = storage.Client().bucket(location.bucket).blob(location.key)
    return blob.open("rb", chunk_size=_READ_BUFFER_BYTES)


def _describe(error: BaseException) -> str:
    """A short cause for the common failures of the three backends."""
    if isinstance(error, FileNotFoundError):
        return "not found"
    if isinstance(error, IsADirectoryError):
        return "is a directory, expected a file"
    if isinstance(error, PermissionError):
        return "permission denied"
    if isinstance(error, gzip.BadGzipFile | zlib.error):
        return f"corrupt gzip data ({error})"
    if isinstance(error, EOFError):
        return "truncated gzip file"
    response = getattr(error, "response", None)
    if isinstance(response, dict) and "Error" in response:  # botocore ClientError
        code = response["Error"].get("Code", "")
        if code in ("NoSuchKey", "404", "NotFound"):
            return "not found"
        if code == "NoSuchBucket":
            return "bucket not found"
        if code in ("AccessDenied", "403", "Forbidden"):
            return "access denied"
        return f"S3 error {code}: {response['Error'].get('Message', '')}".strip()
    code = getattr(error, "code", None)  # google.api_core exceptions carry an HTTP status
    if code == 404:
        return "not found"
    if code == 403:
        return "access denied"
    return f"{type(error).__name__}: {error}".splitlines()[0]


@contextlib.contextmanager
def translate_errors(uri: str) -> Iterator[None]:
    """Re-raise any I/O failure inside the block as a one-line :class:`StorageError` naming ``uri``."""
    try:
        yield
    except StorageError:
        raise
    except Exception as error:  # every backend raises its own family; the message keeps the cause
        raise StorageError(f"cannot read {uri}: {_describe(error)}") from error


class LineReader:
    """Iterates the byte lines of one stored file, gunzipping it when it starts with the gzip magic.

    After iteration, ``bytes_read`` and ``sha256`` describe the stored (possibly compressed) bytes.
    """

    def __init__(self, uri: str) -> None:
        self.uri = uri
        self._location = parse_uri(uri)
        self._hashing: _HashingReader | None = None

    @property
    def bytes_read(self) -> int:
        """Stored bytes consumed so far."""
        return self._hashing.bytes_read if self._hashing else 0

    @property
    def sha256(self) -> str:
        """Hex sha256 of the stored bytes consumed so far (the whole file once iteration ends)."""
        return self._hashing.sha256.hexdigest() if self._hashing else hashlib.sha256().hexdigest()

    def __iter__(self) -> Iterator[bytes]:
        with translate_errors(self.uri), contextlib.ExitStack() as stack:
            self._hashing = stack.enter_context(_HashingReader(_open_raw(self._location)))
            buffered = stack.enter_context(io.BufferedReader(self._hashing, _READ_BUFFER_BYTES))
            stream: BinaryIO = buffered
            if buffered.peek(2)[:2] == GZIP_MAGIC:
                stream = stack.enter_context(gzip.GzipFile(fileobj=buffered, mode="rb"))
            yield from stream
            # Hash the whole object even if the decompressor stopped before trailing bytes.
            while buffered.read(_READ_BUFFER_BYTES):
                pass
