"""Streaming reads and ingest from S3 (moto server) and GCS (gcp-storage-emulator) over HTTP on 127.0.0.1."""

from __future__ import annotations

import hashlib

import boto3
import pytest
from google.cloud import storage

from musicrec.data.ingest import ingest
from musicrec.errors import IngestError, StorageError
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


def test_remote_reads_stream_the_same_lines_and_hash(remote, small_dataset):
    scheme, bucket = remote
    reader = LineReader(f"{scheme}://{bucket}/raw/Digital_Music.json.gz")
    local = list(LineReader(str(small_dataset.reviews_path)))
    assert list(reader) == local
    assert reader.sha256 == hashlib.sha256(small_dataset.reviews_path.read_bytes()).hexdigest()


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
