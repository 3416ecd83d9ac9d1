"""push: TF Serving layout on a local dir, S3 (moto server) and GCS (emulator); atomic, never overwriting."""

from __future__ import annotations

import json
import threading

import numpy as np
import pytest
import tensorflow as tf

from musicrec.errors import PushError, StorageError
from musicrec.io import clients, object_store, storage
from musicrec.io.object_store import LocalStore, open_store
from musicrec.models.bundles import EXTRA_DIRECTORY
from musicrec.models.sentiment import score_texts
from musicrec.release.lineage import load, verify
from musicrec.release.model_store import LINEAGE_FILE, current_push, latest_version
from musicrec.release.push import MODEL_CARD_FILE, push_models


def assert_layout(store: object_store.ObjectStore, version: int) -> None:
    for name in ("sentiment", "encoder", "recommender"):
        keys = set(store.list(f"{name}/{version}"))
        assert {f"{name}/{version}/saved_model.pb", f"{name}/{version}/{LINEAGE_FILE}",
                f"{name}/{version}/{MODEL_CARD_FILE}"} <= keys  # fmt: skip
        assert any(k.startswith(f"{name}/{version}/variables/") for k in keys)
    assert not store.list(".staging")


def test_push_to_a_local_directory_serves_and_versions_increase(small_models, small_evaluation, tmp_path):
    base = tmp_path / "store"
    first = push_models(small_models, small_evaluation, str(base))
    second = push_models(small_models, small_evaluation, str(base))
    assert (first["version"], second["version"]) == (1, 2)
    store = LocalStore(str(base))
    assert_layout(store, 1)
    assert_layout(store, 2)
    assert current_push(str(base))["version"] == 2
    assert latest_version(open_store(str(base / "recommender"))) == 2
    # The pushed sentiment SavedModel serves raw text exactly like the trained one.
    text = ["an absolutely wonderful album, i love it", "boring and dull, not good"]
    pushed = score_texts(base / "sentiment" / "2", text)
    assert np.allclose(pushed, score_texts(small_models["sentiment"], text), atol=1e-6)
    # Keras models are exported as SavedModels TF Serving loads; their companions sit in assets.extra/.
    encoder = tf.saved_model.load(str(base / "encoder" / "1"))
    codes = encoder.signatures["serving_default"](representation=tf.zeros([3, 6]))
    assert next(iter(codes.values())).shape == (3, 2)
    assert (base / "recommender" / "1" / EXTRA_DIRECTORY / "users").read_text() == "A1\nA2\n"
    card = (base / "recommender" / "1" / MODEL_CARD_FILE).read_text()
    assert "# recommender, version 1" in card and "pass: test" in card
    lineage = json.loads((base / "sentiment" / "1" / LINEAGE_FILE).read_text())
    assert lineage["model"]["version"] == 1 and lineage["model"]["trained_by"] == "train_cnn"


def test_an_existing_version_is_never_overwritten(small_models, small_evaluation, tmp_path):
    base = tmp_path / "store"
    squatter = base / "recommender" / "1" / "saved_model.pb"
    squatter.parent.mkdir(parents=True)
    squatter.write_bytes(b"someone else's model")
    record = push_models(small_models, small_evaluation, str(base))
    assert record["version"] == 2
    assert squatter.read_bytes() == b"someone else's model"


def test_an_unblessed_run_is_refused(small_models, small_evaluation, tmp_path):
    with pytest.raises(PushError, match="did not bless"):
        push_models(small_models, {**small_evaluation, "blessed": False}, str(tmp_path / "store"))
    assert not (tmp_path / "store").exists()


def fail_on_call(monkeypatch, cls, method: str, call: int) -> None:
    """Make ``cls.method`` raise a permanent StorageError on its ``call``-th use (an injected fault)."""
    original, calls = getattr(cls, method), []

    def failing(self, *args, **kwargs):
        calls.append(args)
        if len(calls) == call:
            raise StorageError(f"cannot {method}: injected failure")
        return original(self, *args, **kwargs)

    monkeypatch.setattr(cls, method, failing)


@pytest.mark.parametrize(("method", "call"), [("upload", 5), ("promote", 2)])
def test_a_failure_mid_push_leaves_no_visible_version_and_a_rerun_succeeds(
    small_models, small_evaluation, tmp_path, monkeypatch, method, call
):
    base = tmp_path / "store"
    with monkeypatch.context() as patch:
        fail_on_call(patch, LocalStore, method, call)
        with pytest.raises(PushError, match="injected failure"):
            push_models(small_models, small_evaluation, str(base))
    store = LocalStore(str(base))
    assert current_push(str(base)) is None
    assert not [k for k in store.list() if not k.startswith(".versions/")]  # no model files, no staging left
    record = push_models(small_models, small_evaluation, str(base))
    assert record["version"] == 2  # the failed push's claim is never reused
    assert_layout(store, 2)


def test_transient_errors_are_retried_and_permission_errors_are_not(monkeypatch):
    from botocore.exceptions import ClientError

    monkeypatch.setattr(clients, "RETRY_BASE_SECONDS", 0.001)
    attempts = []

    def flaky():
        attempts.append(1)
        if len(attempts) < 3:
            raise ConnectionResetError("connection reset by peer")
        return "done"

    assert clients.with_retries(flaky, "upload s3://b/k") == "done" and len(attempts) == 3
    denied = ClientError({"Error": {"Code": "AccessDenied", "Message": "no"},
                          "ResponseMetadata": {"HTTPStatusCode": 403}}, "PutObject")  # fmt: skip
    calls = []

    def forbidden():
        calls.append(1)
        raise denied

    with pytest.raises(StorageError, match=r"^cannot upload s3://b/k: access denied$"):
        clients.with_retries(forbidden, "upload s3://b/k")
    assert len(calls) == 1
    with pytest.raises(StorageError, match="gave up after 5 attempts"):
        clients.with_retries(lambda: (_ for _ in ()).throw(TimeoutError("slow")), "read s3://b/k")


def concurrent_pushes(models, evaluation, base: str, n: int) -> list[int]:
    versions, errors = [], []

    def one() -> None:
        try:
            versions.append(push_models(models, evaluation, base)["version"])
        except Exception as error:  # surfaced by the assertion below
            errors.append(error)

    threads = [threading.Thread(target=one) for _ in range(n)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    return sorted(versions)


def test_concurrent_local_pushes_get_distinct_versions(small_models, small_evaluation, tmp_path):
    assert concurrent_pushes(small_models, small_evaluation, str(tmp_path / "store"), 3) == [1, 2, 3]


def test_push_to_s3_through_moto(small_models, small_evaluation, s3_env):
    import boto3

    boto3.client("s3").create_bucket(Bucket="models")
    base = "s3://models/musicrec"
    # Someone else claimed version 1 (the conditional write must make this push take 2).
    assert open_store(base).create(".versions/1.json", b'{"state": "claimed"}')
    assert not open_store(base).create(".versions/1.json", b"{}")
    assert concurrent_pushes(small_models, small_evaluation, base, 2) == [2, 3]
    store = open_store(base)
    assert_layout(store, 2)
    assert_layout(store, 3)
    assert current_push(base)["version"] == 3
    loaded = load(f"{base}/sentiment")  # a model URI resolves to its newest version
    assert loaded.lineage["model"]["version"] == 3 and loaded.location == f"{base}/sentiment/3"
    assert all(check.status == "ok" for check in verify(loaded))


def test_push_to_gcs_through_the_emulator(small_models, small_evaluation, gcs_env, tmp_path):
    from google.cloud import storage as gcs

    gcs.Client().create_bucket("models")
    base = "gs://models/musicrec"
    assert push_models(small_models, small_evaluation, base)["version"] == 1
    assert push_models(small_models, small_evaluation, base)["version"] == 2
    store = open_store(base)
    assert_layout(store, 2)
    assert store.tree_sha256("sentiment/2/variables") == LocalStore(str(small_models["sentiment"])).tree_sha256(
        "variables"
    )
    assert all(check.status == "ok" for check in verify(load(f"{base}/recommender/2")))


def test_a_tree_hash_streams_objects_and_restarts_a_read_that_breaks(s3_env, tmp_path, monkeypatch):
    """Hashing a pushed tree never holds an object whole, and a read cut off mid-object is redone, not mixed in."""
    import boto3

    from musicrec.io.artifacts import directory_sha256

    boto3.client("s3").create_bucket(Bucket="hashes")
    store = open_store("s3://hashes/tree")
    rng = np.random.default_rng(0)
    files = {"shards/part-0.bin": rng.bytes(2 * storage.READ_BUFFER_BYTES + 5), "report.json": b"{}"}
    for key, data in files.items():
        (tmp_path / key).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / key).write_bytes(data)
        store.write(key, data)

    monkeypatch.setattr(clients, "RETRY_BASE_SECONDS", 0.001)
    monkeypatch.setattr(type(store), "read", lambda *_: pytest.fail("the tree hash read an object whole"))
    opened = []
    real_open = type(store)._open

    class BreaksAfterOneBlock:
        def __init__(self, stream):
            self.stream, self.blocks = stream, 0

        def read(self, size: int = -1) -> bytes:
            self.blocks += 1
            if self.blocks == 2:
                raise ConnectionResetError("connection reset by peer")
            return self.stream.read(size)

        def close(self) -> None:
            self.stream.close()

    def open_breaking_the_first_read(self, key):
        opened.append(key)
        stream = real_open(self, key)
        return (
            BreaksAfterOneBlock(stream)
            if opened.count("shards/part-0.bin") == 1 and key.startswith("shards")
            else stream
        )

    monkeypatch.setattr(type(store), "_open", open_breaking_the_first_read)
    assert store.tree_sha256() == directory_sha256(tmp_path)
    assert opened == ["report.json", "shards/part-0.bin", "shards/part-0.bin"]  # the broken read was redone
