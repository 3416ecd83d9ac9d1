"""Reading from a local path, ``s3://`` (boto3) or ``gs://`` (google-cloud-storage): URIs, streams, retries.

Streaming line reads for ingest (:class:`LineReader`), content hashes, and the error translation and retry
policy that :mod:`musicrec.io.object_store` (list, conditional create, upload, checksum, publish) builds on.

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
import logging
import random
import time
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO, TypeVar

from musicrec.errors import StorageError

if TYPE_CHECKING:
    from hashlib import _Hash as Digest  # the type of hashlib.sha256()

logger = logging.getLogger(__name__)
T = TypeVar("T")

GZIP_MAGIC = b"\x1f\x8b"
READ_BUFFER_BYTES = 4 * 1024 * 1024


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
    return blob.open("rb", chunk_size=READ_BUFFER_BYTES)


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
            buffered = stack.enter_context(io.BufferedReader(self._hashing, READ_BUFFER_BYTES))
            stream: BinaryIO = buffered
            if buffered.peek(2)[:2] == GZIP_MAGIC:
                stream = stack.enter_context(gzip.GzipFile(fileobj=buffered, mode="rb"))
            yield from stream
            # Hash the whole object even if the decompressor stopped before trailing bytes.
            while buffered.read(READ_BUFFER_BYTES):
                pass


# --- writable stores (push, lineage) ---------------------------------------------------------------------
_TRANSIENT_STATUS = frozenset({408, 409, 429, 500, 502, 503, 504})
_TRANSIENT_S3_CODES = frozenset(
    {"SlowDown", "RequestTimeout", "InternalError", "ServiceUnavailable", "Throttling", "ThrottlingException",
     "RequestTimeTooSkewed", "ConditionalRequestConflict"}
)  # fmt: skip
_TRANSIENT_NAMES = frozenset(
    {"EndpointConnectionError", "ConnectionClosedError", "ReadTimeoutError", "ConnectTimeoutError",
     "ConnectionError", "Timeout", "ReadTimeout", "ConnectTimeout", "ChunkedEncodingError"}
)  # fmt: skip
RETRY_ATTEMPTS = 5
RETRY_BASE_SECONDS = 0.2


def error_status(error: BaseException) -> int | None:
    """The HTTP status of a botocore or google.api_core error, when it carries one."""
    response = getattr(error, "response", None)
    if isinstance(response, dict):
        status = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        return int(status) if status else None
    code = getattr(error, "code", None)
    return code if isinstance(code, int) else None


def is_transient(error: BaseException) -> bool:
    """Whether retrying may help: dropped connections, timeouts, throttling and 5xx answers."""
    if isinstance(error, ConnectionError | TimeoutError) or type(error).__name__ in _TRANSIENT_NAMES:
        return True
    response = getattr(error, "response", None)
    if isinstance(response, dict) and response.get("Error", {}).get("Code") in _TRANSIENT_S3_CODES:
        return True
    return error_status(error) in _TRANSIENT_STATUS


def with_retries(operation: Callable[[], T], what: str, attempts: int = RETRY_ATTEMPTS) -> T:
    """Run ``operation``, retrying transient failures with exponential backoff and jitter.

    Raises:
        StorageError: at once for a permanent failure (permission, missing bucket...), or after ``attempts``
            transient ones; the message names ``what`` and the cause.
    """
    for attempt in range(1, attempts + 1):
        try:
            return operation()
        except StorageError:
            raise
        except Exception as error:  # each backend raises its own family
            if not is_transient(error):
                raise StorageError(f"cannot {what}: {_describe(error)}") from error
            if attempt == attempts:
                raise StorageError(
                    f"cannot {what}: {_describe(error)} (gave up after {attempts} attempts)"
                ) from error
            delay = RETRY_BASE_SECONDS * 2 ** (attempt - 1) * (1 + random.random())
            logger.warning("%s failed (%s); retry %d of %d in %.1f s", what, _describe(error), attempt,
                           attempts - 1, delay)  # fmt: skip
            time.sleep(delay)
    raise AssertionError("unreachable")


def extended_digest(digest: Digest, stream: BinaryIO) -> Digest:
    """A copy of ``digest`` fed everything left in a binary stream, read in blocks (``digest`` is untouched)."""
    digest = digest.copy()
    for block in iter(lambda: stream.read(READ_BUFFER_BYTES), b""):
        digest.update(block)
    return digest


def stream_sha256(stream: BinaryIO) -> str:
    """Hex sha256 of everything left in a binary stream, read in blocks."""
    return extended_digest(hashlib.sha256(), stream).hexdigest()


def file_sha256(path: Path) -> str:
    """Hex sha256 of one local file."""
    with open(path, "rb") as handle:
        return stream_sha256(handle)
