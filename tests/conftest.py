"""Shared fixtures: generated data sets and real object-store servers on 127.0.0.1 (no mocks)."""

from __future__ import annotations

import logging
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from musicrec.data.generate import GeneratedFiles, generate_dataset


@pytest.fixture(autouse=True)
def _fresh_cli_logging():
    """The CLI binds its log handler to the stderr of the moment; let each test's captured stderr get its own."""
    yield
    logging.getLogger("musicrec").handlers.clear()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="session")
def small_dataset(tmp_path_factory: pytest.TempPathFactory) -> GeneratedFiles:
    """3,000 reviews: enough for every quirk to appear, fast enough for unit tests."""
    return generate_dataset(tmp_path_factory.mktemp("small"), 3_000, seed=7)


@pytest.fixture(scope="session")
def medium_dataset(tmp_path_factory: pytest.TempPathFactory) -> GeneratedFiles:
    """20,000 reviews: enough users with several reviews to see the planted statistics."""
    return generate_dataset(tmp_path_factory.mktemp("medium"), 20_000, seed=11)


@pytest.fixture(scope="session")
def moto_endpoint() -> Iterator[str]:
    """A real S3 API (moto server) over HTTP on 127.0.0.1."""
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop()


@pytest.fixture
def s3_env(moto_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """Point boto3 (and any subprocess) at the moto server through the standard variables."""
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_endpoint)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    return moto_endpoint


@pytest.fixture(scope="session")
def gcs_endpoint() -> Iterator[str]:
    """A real GCS JSON API (gcp-storage-emulator) over HTTP on 127.0.0.1."""
    from gcp_storage_emulator.server import create_server

    port = free_port()
    server = create_server("127.0.0.1", port, in_memory=True)
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop()


@pytest.fixture
def gcs_env(gcs_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """Point google-cloud-storage (and any subprocess) at the emulator through STORAGE_EMULATOR_HOST."""
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", gcs_endpoint)
    monkeypatch.setenv("GOOGLE_CLOUD_PROJECT", "musicrec-test")
    return gcs_endpoint


@pytest.fixture(scope="session")
def small_preprocessed(small_dataset: GeneratedFiles, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The small data set through ingest and preprocess: what every training step reads."""
    from musicrec.data.ingest import ingest
    from musicrec.data.transform import preprocess
    from musicrec.settings import TransformSettings

    out = tmp_path_factory.mktemp("small_preprocessed")
    ingest(str(small_dataset.reviews_path), str(small_dataset.metadata_path), out / "examples",
           out / "quarantine.jsonl.gz", out / "report.json")  # fmt: skip
    settings = TransformSettings(
        min_token_frequency=2, max_review_tokens=48, review_tail_tokens=16, max_summary_tokens=8
    )
    preprocess(out / "examples", out / "transformed", out / "graph", out / "preprocess.json", settings=settings)
    return {"examples": out / "examples", "transformed": out / "transformed", "graph": out / "graph"}


@pytest.fixture(scope="session")
def small_cnn(small_preprocessed: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    """The sentiment CNN trained on the small data set: its output directory and report."""
    from helpers import small_cnn_settings

    from musicrec.models.sentiment import train_sentiment

    out = tmp_path_factory.mktemp("cnn")
    report = train_sentiment(small_preprocessed["transformed"], small_preprocessed["graph"], out / "model",
                             out / "report.json", small_cnn_settings())  # fmt: skip
    return out, report


@pytest.fixture(scope="session")
def small_recommender(
    small_preprocessed: dict[str, Path], small_cnn: tuple[Path, dict], tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, dict]:
    """train_dnn on the small data set (over a small autoencoder): its output directory and report."""
    from helpers import small_rating_settings

    from musicrec.models.autoencoder import train_autoencoder
    from musicrec.models.recommender.train import train_rating
    from musicrec.settings import AutoencoderSettings

    out = tmp_path_factory.mktemp("dnn")
    cnn_dir, _ = small_cnn
    graph, transformed = small_preprocessed["graph"], small_preprocessed["transformed"]
    train_autoencoder(transformed, graph, cnn_dir / "model", out / "encoder", out / "ae.json", out / "ae.html",
                      AutoencoderSettings(bottleneck=4, epochs=3, seed=5))  # fmt: skip
    models = (cnn_dir / "model", out / "encoder")
    report = train_rating(transformed, graph, *models, out / "model", out / "report.json", small_rating_settings())
    return out, report


@pytest.fixture(scope="session")
def small_models(small_cnn: tuple[Path, dict], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The trained small sentiment model beside a small encoder and rating-shaped Keras model."""
    cnn_dir, _ = small_cnn
    root = tmp_path_factory.mktemp("models")
    import keras

    from musicrec.models.autoencoder import build_autoencoder
    from musicrec.models.bundles import ENCODER_FILE
    from musicrec.settings import AutoencoderSettings

    _, encoder = build_autoencoder(6, AutoencoderSettings(bottleneck=2, hidden_units=(4,)))
    (root / "encoder").mkdir()
    encoder.save(root / "encoder" / ENCODER_FILE)
    (root / "encoder" / "normalization.json").write_text('{"mean": [0], "std": [1]}')
    user = keras.Input(shape=(), dtype="int64", name="user_index")
    rating = keras.layers.Dense(1)(keras.layers.Embedding(5, 3)(user))
    (root / "recommender").mkdir()
    keras.Model({"user_index": user}, rating).save(root / "recommender" / "rating_model.keras")
    (root / "recommender" / "users").write_text("A1\nA2\n")
    return {"sentiment": cnn_dir / "model", "encoder": root / "encoder", "recommender": root / "recommender"}


@pytest.fixture(scope="session")
def small_evaluation(
    small_models: dict[str, Path], small_dataset: GeneratedFiles, small_preprocessed: dict[str, Path]
) -> dict:
    """A blessed evaluation whose lineage names real artifacts and the real raw input files."""
    from musicrec.io.storage import file_sha256
    from musicrec.release.lineage import ArtifactRef, build_chain, record_evaluation

    inputs = {
        role: {"uri": str(path), "sha256": file_sha256(path), "bytes": path.stat().st_size}
        for role, path in (("reviews", small_dataset.reviews_path), ("metadata", small_dataset.metadata_path))
    }
    refs = [
        ArtifactRef(step, name, str(path), path)
        for step, name, path in (("ingest", "examples", small_preprocessed["examples"]),
                                 ("preprocess", "transform_graph", small_preprocessed["graph"]),
                                 ("train_cnn", "model", small_models["sentiment"]))
    ]  # fmt: skip
    lineage = build_chain(refs, inputs)
    record_evaluation(lineage, True, ["pass: test"], {"sentiment_auc": 0.9})
    return {
        "blessed": True, "reasons": ["pass: test"], "gated_metrics": {"sentiment_auc": 0.9},
        "scorecard": {"sentiment": {"test": {"auc": 0.9}, "baselines": {"majority": {"auc": 0.5}}}},
        "lineage": lineage,
    }  # fmt: skip
