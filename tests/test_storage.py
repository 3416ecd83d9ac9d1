"""Streaming reads and ingest from S3 (moto server) and GCS (gcp-storage-emulator) over HTTP on 127.0.0.1."""

from __future__ import annotations

import hashlib
import logging
import re
import socket
import time

import boto3
import pytest
from conftest import free_port
from google.cloud import storage

from musicrec.data.ingest import ingest
from musicrec.errors import IngestError, StorageError
from musicrec.io import clients
from musicrec.io.object_store import open_store
from musicrec.io.storage import LineReader, parse_uri


def upload_s3(bucket: str, files: dict[str, bytes]) -> None:
    client = boto3.client("s3")
    client.create_bucket(Bucket=bucket)
    for key, data in files.items():
        client.put_object(Bucket=bucket, Key=key, Body=data)


def upload_gcs(bucket: str, files: dict[str, bytes]) -> None:
    client = storage.Client()
    target = client.create_bucket(bucket)
    for key, data in files.items():
        target.blob(key).upload_from_string(data, content_type="application/octet-stream")


UPLOADERS = {"s3": ("s3_env", upload_s3), "gs": ("gcs_env", upload_gcs)}


@pytest.fixture(params=["s3", "gs"])
def remote(request, small_dataset):
    """Upload the small data set to a fresh bucket of each backend; yields (scheme, bucket)."""
    env_fixture, upload = UPLOADERS[request.param]
    request.getfixturevalue(env_fixture)
    bucket = f"musicrec-{request.node.name.split('[')[0][-20:].replace('_', '-')}-{request.param}"
    upload(bucket, {
        "raw/Digital_Music.json.gz": small_dataset.reviews_path.read_bytes(),
        "raw/meta_Digital_Music.json.gz": small_dataset.metadata_path.read_bytes(),
    })  # fmt: skip
    return request.param, bucket


def test_parse_uri():
    assert parse_uri("s3://b/k/x.gz") == parse_uri("s3://b/k/x.gz")
    assert (parse_uri("gs://b/k").scheme, parse_uri("gs://b/k").bucket, parse_uri("gs://b/k").key) == (
        "gs",
        "b",
        "k",
    )
    assert parse_uri("/data/x.json").scheme == "file" and parse_uri("file:///data/x").key == "/data/x"
    for bad in ("", "ftp://host/x", "s3://bucket-only", "gs:///key"):
        with pytest.raises(StorageError):
            parse_uri(bad)


def test_remote_reads_stream_the_same_lines_and_hash(remote, small_dataset, storage_warnings):
    scheme, bucket = remote
    reader = LineReader(f"{scheme}://{bucket}/raw/Digital_Music.json.gz")
    local = list(LineReader(str(small_dataset.reviews_path)))
    assert list(reader) == local
    assert reader.sha256 == hashlib.sha256(small_dataset.reviews_path.read_bytes()).hexdigest()
    assert storage_warnings() == []  # a healthy endpoint needs no retry


def test_ingest_from_remote_matches_local(remote, small_dataset, tmp_path):
    scheme, bucket = remote
    base = f"{scheme}://{bucket}/raw"
    report = ingest(f"{base}/Digital_Music.json.gz", f"{base}/meta_Digital_Music.json.gz", tmp_path / "r" / "ex",
                    tmp_path / "r" / "q.gz", tmp_path / "r" / "report.json")  # fmt: skip
    local = ingest(str(small_dataset.reviews_path), str(small_dataset.metadata_path), tmp_path / "l" / "ex",
                   tmp_path / "l" / "q.gz", tmp_path / "l" / "report.json")  # fmt: skip
    assert report["examples_sha256"] == local["examples_sha256"]
    assert report["inputs"]["reviews"]["sha256"] == local["inputs"]["reviews"]["sha256"]
    assert report["kept"] == local["kept"] > 0


def test_missing_remote_object_is_a_one_line_error(remote, small_dataset, tmp_path):
    scheme, bucket = remote
    uri = f"{scheme}://{bucket}/raw/absent.json.gz"
    with pytest.raises(IngestError, match=rf"^cannot read {uri}: not found$"):
        ingest(
            uri,
            str(small_dataset.metadata_path),
            tmp_path / "ex",
            tmp_path / "q.gz",
            tmp_path / "report.json",
        )
    assert not tmp_path.joinpath("ex").exists() and not tmp_path.joinpath("report.json").exists()


@pytest.mark.parametrize("scheme", ["s3", "gs"])
def test_missing_bucket_is_a_one_line_error(scheme, request):
    request.getfixturevalue(UPLOADERS[scheme][0])
    uri = f"{scheme}://no-such-bucket-musicrec/x.json"
    with pytest.raises(StorageError, match=rf"^cannot read {uri}: (bucket )?not found$"):
        list(LineReader(uri))


# --- unreachable endpoints: bounded timeouts, bounded and logged retries --------------------------------------
@pytest.fixture
def storage_warnings(caplog, monkeypatch):
    """The WARNING lines of musicrec.io.storage so far (even after the CLI stopped musicrec's propagation)."""
    monkeypatch.setattr(logging.getLogger("musicrec"), "propagate", True)
    caplog.set_level(logging.WARNING, logger=clients.__name__)
    return lambda: [r.getMessage() for r in caplog.records
                    if r.name == clients.__name__ and r.levelno == logging.WARNING]  # fmt: skip


@pytest.fixture
def refusing_endpoint() -> str:
    """A closed port: every connection is refused at once."""
    return f"http://127.0.0.1:{free_port()}"


@pytest.fixture
def silent_endpoint():
    """A port that accepts TCP connections (into the listen backlog) but never answers a request."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)
        yield f"http://127.0.0.1:{listener.getsockname()[1]}"


@pytest.fixture
def unanswered_endpoint():
    """A port whose TCP handshake never completes, like an unroutable address: its full accept queue drops SYNs."""
    with socket.socket() as listener, socket.socket() as filler:
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        filler.connect(listener.getsockname())  # never accepted: the queue stays full
        yield f"http://127.0.0.1:{listener.getsockname()[1]}"


def point_at(scheme: str, endpoint: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Aim the scheme's client at ``endpoint`` through the standard variables, as s3_env and gcs_env do."""
    if scheme == "s3":
        monkeypatch.delenv("AWS_ENDPOINT_URL_S3", raising=False)
        monkeypatch.setenv("AWS_ENDPOINT_URL", endpoint)
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
        monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    else:
        monkeypatch.setenv("STORAGE_EMULATOR_HOST", endpoint)
        monkeypatch.setenv("GOOGLE_CLOUD_PROJECT", "musicrec-test")


def retry_lines(scheme: str, uri: str, cause: str) -> list[str]:
    what = "GetObject" if scheme == "s3" else "read"  # S3 retries are logged by API operation
    attempts = clients.CLIENT_ATTEMPTS
    return [f"{what} {uri}: attempt {n} of {attempts} failed ({cause}); retrying" for n in range(1, attempts)]


def test_the_timeouts_fit_in_the_promised_bound():
    s = clients
    backoff = sum(
        min(s.GCS_BACKOFF_SECONDS * 2**i, 2 * s.GCS_BACKOFF_SECONDS) for i in range(s.CLIENT_ATTEMPTS - 1)
    )
    slowest_attempt = max(s.CONNECT_TIMEOUT_SECONDS, s.READ_TIMEOUT_SECONDS)
    assert s.CLIENT_ATTEMPTS * slowest_attempt + backoff < s.FAIL_WITHIN_SECONDS


@pytest.mark.parametrize("scheme", ["s3", "gs"])
@pytest.mark.parametrize("kind", ["refusing", "silent", "unanswered"])
def test_an_unreachable_endpoint_fails_within_seconds_and_logs_each_retry(
    scheme, kind, request, monkeypatch, storage_warnings
):
    endpoint = request.getfixturevalue(f"{kind}_endpoint")
    point_at(scheme, endpoint, monkeypatch)
    s = clients
    cause, timeout = {
        "refusing": ("connection refused", 0.0),
        "silent": (f"no answer within {s.READ_TIMEOUT_SECONDS:g} s", s.READ_TIMEOUT_SECONDS),
        "unanswered": (f"no connection within {s.CONNECT_TIMEOUT_SECONDS:g} s", s.CONNECT_TIMEOUT_SECONDS),
    }[kind]
    uri = f"{scheme}://musicrec-unreachable/raw/Digital_Music.json.gz"
    message = (rf"^cannot read {re.escape(uri)}: endpoint {re.escape(endpoint)} unreachable "
               rf"after {s.CLIENT_ATTEMPTS} attempts in [0-9.]+ s \({cause}\)$")  # fmt: skip
    started = time.monotonic()
    with pytest.raises(StorageError, match=message):
        list(LineReader(uri))
    elapsed = time.monotonic() - started
    assert elapsed < 20  # a regression bound (the default promise is 15 s), not a benchmark
    assert elapsed >= 0.95 * s.CLIENT_ATTEMPTS * timeout  # every attempt waited its full timeout
    assert storage_warnings() == retry_lines(scheme, uri, cause)


@pytest.mark.parametrize("scheme", ["s3", "gs"])
def test_the_object_store_does_not_retry_what_the_client_already_retried(
    scheme, refusing_endpoint, monkeypatch, storage_warnings
):
    point_at(scheme, refusing_endpoint, monkeypatch)
    store = open_store(f"{scheme}://musicrec-unreachable/models")
    uri = store.uri("sentiment/1/saved_model.pb")
    started = time.monotonic()
    attempts = clients.CLIENT_ATTEMPTS
    with pytest.raises(
        StorageError, match=rf"^cannot read {re.escape(uri)}: endpoint \S+ unreachable after {attempts} "
    ):
        store.read("sentiment/1/saved_model.pb")
    assert time.monotonic() - started < 20
    assert storage_warnings() == retry_lines(scheme, uri, "connection refused")  # no second round on top


def test_gcs_retries_are_counted_per_request_and_a_retried_request_succeeds(monkeypatch, storage_warnings):
    import requests

    monkeypatch.setattr(clients, "GCS_BACKOFF_SECONDS", 0.001)
    client = type("Client", (), {"api_endpoint": "http://127.0.0.1:1"})()
    retry = clients.gcs_request_options("read gs://b/k", client)["retry"]
    calls = []

    def flaky_chunk() -> str:  # what the library wraps for each request: fails twice, then answers
        calls.append(1)
        if len(calls) % clients.CLIENT_ATTEMPTS:
            raise requests.ConnectionError("connection reset by peer")
        return "chunk"

    wrapped = retry(flaky_chunk)
    assert [wrapped(), wrapped()] == ["chunk", "chunk"]  # a stream's second chunk gets its own attempts
    assert storage_warnings() == 2 * retry_lines("gs", "gs://b/k", "connection failed")
