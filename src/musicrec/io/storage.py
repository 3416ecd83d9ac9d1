"""Reading from a local path, ``s3://`` (boto3) or ``gs://`` (google-cloud-storage): URIs, streams, hashes.

Streaming line reads for ingest (:class:`LineReader`) and content hashes, over the clients of
:mod:`musicrec.io.clients` (bounded timeouts, logged retries, one-line errors). Clients are built from the
standard environment: the AWS credential chain and ``AWS_ENDPOINT_URL`` / ``AWS_ENDPOINT_URL_S3`` for boto3;
application default credentials and ``STORAGE_EMULATOR_HOST`` for google-cloud-storage.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import io
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

from musicrec.errors import StorageError
from musicrec.io.clients import gcs_client, gcs_request_options, s3_client, translate_errors

if TYPE_CHECKING:
    from hashlib import _Hash as Digest  # the type of hashlib.sha256()


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
        return s3_client().get_object(Bucket=location.bucket, Key=location.key)["Body"]
    client = gcs_client()
    blob = client.bucket(location.bucket).blob(location.key)
    options = gcs_request_options(f"read gs://{location.bucket}/{location.key}", client)
    return blob.open("rb", chunk_size=READ_BUFFER_BYTES, **options)


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
