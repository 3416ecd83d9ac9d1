"""The KFP components' own Python functions, called directly: each step's outputs, UI metrics, stamps, failures.

One small chain runs once for the module (ingest -> preprocess -> train_cnn -> train_autoencoder -> train_dnn
-> evaluate -> push), each component reading the artifacts (and their metadata) the previous one wrote, as a
Kubeflow run passes them, without starting ``kfp.local``.
"""

from __future__ import annotations

import inspect
import json
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
from helpers import small_cnn_settings
from kfp.dsl import HTML, Artifact, ClassificationMetrics, Dataset, Markdown, Metrics, Model

from components.evaluate import evaluate
from components.ingest import ingest
from components.preprocess import preprocess
from components.push import push
from components.train_autoencoder import train_autoencoder
from components.train_cnn import train_cnn
from components.train_dnn import train_dnn
from musicrec import features, schema
from musicrec.release.model_store import LINEAGE_FILE, current_push
from musicrec.release.push import MODEL_CARD_FILE
from musicrec.settings import (
    AutoencoderSettings,
    BlessingSettings,
    CnnSettings,
    IngestSettings,
    RatingSettings,
    Settings,
    TransformSettings,
)

TRANSFORM = TransformSettings(
    min_token_frequency=2, max_review_tokens=48, review_tail_tokens=16, max_summary_tokens=8
)
CNN = small_cnn_settings()
AUTOENCODER = AutoencoderSettings(bottleneck=4, hidden_units=(16,), batch_size=128, epochs=2, seed=3)
RATING = RatingSettings(hidden_units=(8,), batch_size=256, epochs=1, text_tokens=50, text_dims=4, ranking_users=20,
                        seed=5)  # fmt: skip
BLESSING = BlessingSettings(min_sentiment_auc=0.5, max_rating_rmse=5.0, min_ranking_ndcg=0.0, max_regression=0.01,
                            serving_tolerance=0.01)  # fmt: skip
BEAM = {"beam_runner": "DirectRunner", "beam_options": ""}
PROVENANCE = {"sha256", "bytes", "git_revision", "package_version", "image"}


def arguments(settings: Settings) -> dict[str, Any]:
    """A component's hyperparameter arguments: the settings' field names, list fields comma-separated."""
    return {name: ",".join(map(str, value)) if isinstance(value, list) else value
            for name, value in settings.to_dict().items()}  # fmt: skip


def outputs(root: Path, **kinds: type) -> dict[str, Any]:
    """Output artifacts by parameter name, each at a path under ``root`` that does not exist yet."""
    root.mkdir(parents=True, exist_ok=True)
    return {name: kind(uri=str(root / name)) for name, kind in kinds.items()}


def ingest_outputs(root: Path) -> dict[str, Any]:
    return outputs(root, examples=Dataset, quarantine=Dataset, report=Artifact, report_markdown=Markdown)


def preprocess_outputs(root: Path) -> dict[str, Any]:
    return outputs(root, transformed_examples=Dataset, transform_graph=Artifact, report=Artifact,
                   report_markdown=Markdown)  # fmt: skip


def cnn_outputs(root: Path) -> dict[str, Any]:
    return outputs(root, model=Model, metrics=Metrics, classification_metrics=ClassificationMetrics,
                   report=Artifact, token_importance=HTML)  # fmt: skip


def read_json(artifact: Any) -> dict[str, Any]:
    return json.loads(Path(artifact.path).read_text())


def failure(call: Any) -> str:
    """The one-line message a component ends with (``SystemExit``, as the task's exit)."""
    with pytest.raises(SystemExit) as raised:
        call()
    message = raised.value.code
    assert isinstance(message, str) and "\n" not in message
    return message


# --- the chain, once for the module -------------------------------------------------------------------------
@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("components")


@pytest.fixture(scope="module")
def ingested(small_dataset, root) -> dict[str, Any]:
    out = ingest_outputs(root / "ingest")
    ingest.python_func(reviews_uri=str(small_dataset.reviews_path), metadata_uri=str(small_dataset.metadata_path),
                       push_destination=str(root / "store"), **out, **arguments(IngestSettings()))  # fmt: skip
    return out


@pytest.fixture(scope="module")
def preprocessed(ingested, root) -> dict[str, Any]:
    out = preprocess_outputs(root / "preprocess")
    preprocess.python_func(examples=ingested["examples"], **out, **BEAM, **arguments(TRANSFORM))
    return out


@pytest.fixture(scope="module")
def cnn(preprocessed, root) -> dict[str, Any]:
    out = cnn_outputs(root / "train_cnn")
    train_cnn.python_func(transformed_examples=preprocessed["transformed_examples"],
                          transform_graph=preprocessed["transform_graph"], **out, **arguments(CNN))  # fmt: skip
    return out


@pytest.fixture(scope="module")
def autoencoded(preprocessed, cnn, root) -> dict[str, Any]:
    out = outputs(root / "train_autoencoder", encoder=Model, metrics=Metrics, report=Artifact, projection=HTML)
    train_autoencoder.python_func(transformed_examples=preprocessed["transformed_examples"],
                                  transform_graph=preprocessed["transform_graph"], cnn_model=cnn["model"], **out,
                                  **arguments(AUTOENCODER))  # fmt: skip
    return out


@pytest.fixture(scope="module")
def rated(preprocessed, cnn, autoencoded, root) -> dict[str, Any]:
    out = outputs(root / "train_dnn", model=Model, metrics=Metrics, report=Artifact)
    train_dnn.python_func(transformed_examples=preprocessed["transformed_examples"],
                          transform_graph=preprocessed["transform_graph"], cnn_model=cnn["model"],
                          encoder=autoencoded["encoder"], **out, **arguments(RATING))  # fmt: skip
    return out


@pytest.fixture(scope="module")
def evaluated(ingested, preprocessed, cnn, autoencoded, rated, root) -> dict[str, Any]:
    out = outputs(root / "evaluate", metrics=Metrics, classification_metrics=ClassificationMetrics, report=HTML,
                  evaluation=Artifact)  # fmt: skip
    blessed = evaluate.python_func(
        examples=ingested["examples"], ingest_report=ingested["report"],
        transformed_examples=preprocessed["transformed_examples"], transform_graph=preprocessed["transform_graph"],
        preprocess_report=preprocessed["report"], cnn_model=cnn["model"], cnn_report=cnn["report"],
        encoder=autoencoded["encoder"], autoencoder_report=autoencoded["report"],
        projection=autoencoded["projection"], rating_model=rated["model"], rating_report=rated["report"], **out,
        push_destination=str(root / "store"), run_id="run-1", **arguments(BLESSING),
    )  # fmt: skip
    return {**out, "blessed": blessed, "push_destination": str(root / "store")}


# --- the parameters ------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("component", "settings"),
    [(preprocess, TransformSettings), (train_cnn, CnnSettings), (train_autoencoder, AutoencoderSettings),
     (train_dnn, RatingSettings), (evaluate, BlessingSettings)],
)  # fmt: skip
def test_every_setting_is_a_component_parameter_documented_once(component, settings):
    parameters = inspect.signature(component.python_func).parameters
    names = [p.name.removeprefix(settings.PREFIX) for p in settings.parameters()]
    assert set(arguments(settings())) == set(names) <= set(parameters)
    for name in names:
        assert component.python_func.__doc__.count(f"\n    {name}: ") == 1


# --- ingest --------------------------------------------------------------------------------------------------
def test_ingest_writes_splits_a_report_that_adds_up_and_stamps_its_artifacts(ingested):
    examples, report = ingested["examples"], read_json(ingested["report"])
    rows = {split: pq.read_table(Path(examples.path) / split).num_rows for split in schema.SPLITS}
    assert all(rows.values()) and sum(rows.values()) == report["kept"]
    assert report["kept"] + report["quarantined"] + report["duplicates"] == report["lines_read"] > 0
    assert Path(ingested["quarantine"].path).is_file() and Path(ingested["report_markdown"].path).read_text()
    assert PROVENANCE <= set(examples.metadata) and len(examples.metadata["sha256"]) == 64
    assert all(examples.metadata[f"{split}_rows"] == rows[split] for split in schema.SPLITS)
    files = [path for path in Path(examples.path).rglob("*") if path.is_file()]
    assert examples.metadata["bytes"] == sum(path.stat().st_size for path in files)
    assert ingested["quarantine"].metadata["lines"] == report["quarantined"]
    assert ingested["report"].metadata["lines_read"] == report["lines_read"]


def test_ingest_of_a_missing_input_fails_in_one_line_and_leaves_nothing(small_dataset, tmp_path):
    out = ingest_outputs(tmp_path / "out")
    missing = tmp_path / "no-such-reviews.json.gz"
    metadata = str(small_dataset.metadata_path)
    settings = {"push_destination": str(tmp_path / "store"), **arguments(IngestSettings())}
    message = failure(
        lambda: ingest.python_func(reviews_uri=str(missing), metadata_uri=metadata, **out, **settings)
    )
    assert message.startswith("ingest failed: ") and str(missing) in message
    assert not any((tmp_path / "out").iterdir())  # no examples, no staging directory, no report
    assert all(not artifact.metadata for artifact in out.values())


def test_ingest_checks_the_push_destination_before_reading_anything(small_dataset, tmp_path):
    """A push destination that cannot be written fails the first step, not the last, and says "cannot write"."""
    out = ingest_outputs(tmp_path / "out")
    (tmp_path / "afile").write_text("")
    store = tmp_path / "afile" / "model_store"
    inputs = {
        "reviews_uri": str(small_dataset.reviews_path),
        "metadata_uri": str(small_dataset.metadata_path),
        "push_destination": str(store),
        **arguments(IngestSettings()),
    }
    message = failure(lambda: ingest.python_func(**inputs, **out))
    assert message.startswith(f"ingest failed: push destination {store} is not writable: cannot write {store}/")
    assert message.endswith(": a file is in the way of a directory")
    assert not any((tmp_path / "out").iterdir())


# --- preprocess ----------------------------------------------------------------------------------------------
def test_preprocess_writes_transformed_splits_and_a_graph_stamped_with_vocabulary_sizes(ingested, preprocessed):
    transformed, graph = preprocessed["transformed_examples"], preprocessed["transform_graph"]
    report = read_json(preprocessed["report"])
    for split in schema.SPLITS:
        assert list((Path(transformed.path) / split).iterdir())
        assert transformed.metadata[f"{split}_rows"] == ingested["examples"].metadata[f"{split}_rows"]
    assert (Path(graph.path) / "transform_fn").is_dir()
    for name in features.VOCABULARIES:
        assert graph.metadata[f"vocabulary_size_{name}"] == report["vocabulary_sizes"][name] > 0
    assert graph.metadata["max_review_tokens"] == 48 and graph.metadata["min_token_frequency"] == 2
    assert PROVENANCE <= set(graph.metadata) and PROVENANCE <= set(transformed.metadata)
    assert graph.metadata["sha256"] != transformed.metadata["sha256"]


def test_preprocess_with_a_bad_setting_fails_in_one_line_and_writes_nothing(ingested, tmp_path):
    out = preprocess_outputs(tmp_path / "out")
    settings = {**arguments(TRANSFORM), "max_review_tokens": 0}
    message = failure(lambda: preprocess.python_func(examples=ingested["examples"], **out, **BEAM, **settings))
    assert message == "preprocess failed: preprocess_max_review_tokens must be at least 1, got 0"
    assert not any((tmp_path / "out").iterdir())


def test_preprocess_of_examples_without_shards_fails_in_one_line(tmp_path):
    (tmp_path / "examples").mkdir()
    out = preprocess_outputs(tmp_path / "out")
    examples = Dataset(uri=str(tmp_path / "examples"))
    message = failure(lambda: preprocess.python_func(examples=examples, **out, **BEAM, **arguments(TRANSFORM)))
    assert message.startswith("preprocess failed: no Parquet shards for split(s) train, eval, test under ")
    assert not any((tmp_path / "out").iterdir())


# --- train_cnn -----------------------------------------------------------------------------------------------
def test_train_cnn_exports_the_model_and_shows_its_scores_beside_the_baselines(cnn):
    report = read_json(cnn["report"])
    assert (Path(cnn["model"].path) / "saved_model.pb").is_file()
    values = cnn["metrics"].metadata
    assert {
        "eval_auc",
        "eval_bow_linear_auc",
        "eval_ngram_linear_auc",
        "eval_majority_accuracy",
        "eval_balanced_accuracy",
    } <= set(values)
    assert values["eval_auc"] == report["eval"]["auc"] == cnn["model"].metadata["eval_auc"]
    assert values["eval_majority_accuracy"] == report["baselines"]["eval"]["majority"]["accuracy"]
    assert set(report["test"]) >= {"accuracy", "balanced_accuracy", "auc"} and 0 <= report["test"]["auc"] <= 1
    matrix = cnn["classification_metrics"].metadata["confusionMatrix"]
    assert [c["displayName"] for c in matrix["annotationSpecs"]] == ["negative", "positive"]
    assert [row["row"] for row in matrix["rows"]] == report["eval"]["confusion_matrix"]
    roc = cnn["classification_metrics"].metadata["confidenceMetrics"]
    assert [point["falsePositiveRate"] for point in roc] == report["eval"]["roc"]["fpr"]
    assert cnn["model"].metadata["filters"] == CNN.filters and PROVENANCE <= set(cnn["model"].metadata)
    assert Path(cnn["token_importance"].path).read_text().lstrip().startswith("<")


def test_train_cnn_with_malformed_kernel_sizes_fails_in_one_line(preprocessed, tmp_path):
    out = cnn_outputs(tmp_path / "out")
    settings = {**arguments(CNN), "kernel_sizes": "2,x"}
    message = failure(lambda: train_cnn.python_func(transformed_examples=preprocessed["transformed_examples"],
                                                    transform_graph=preprocessed["transform_graph"], **out,
                                                    **settings))  # fmt: skip
    assert message == "train_cnn failed: cnn_kernel_sizes must be comma-separated positive integers, got '2,x'"
    assert not any((tmp_path / "out").iterdir()) and not out["metrics"].metadata


# --- train_autoencoder ---------------------------------------------------------------------------------------
def test_train_autoencoder_exports_the_encoder_and_shows_pca_beside_it(autoencoded):
    report = read_json(autoencoded["report"])
    encoder = Path(autoencoded["encoder"].path)
    assert (encoder / "encoder.keras").is_file() and (encoder / "normalization.json").is_file()
    values = autoencoded["metrics"].metadata
    assert values["eval_reconstruction_mse"] == report["eval"]["reconstruction_mse"] > 0
    assert values["eval_pca_reconstruction_mse"] == report["baselines"]["eval"]["pca"]["reconstruction_mse"] > 0
    assert autoencoded["encoder"].metadata["bottleneck"] == AUTOENCODER.bottleneck
    assert autoencoded["encoder"].metadata["input_width"] > AUTOENCODER.bottleneck
    assert PROVENANCE <= set(autoencoded["encoder"].metadata)
    assert Path(autoencoded["projection"].path).read_text()


# --- train_dnn -----------------------------------------------------------------------------------------------
def test_train_dnn_exports_the_bundle_and_shows_rating_and_ranking_beside_baselines(rated):
    report = read_json(rated["report"])
    bundle = Path(rated["model"].path)
    for name in ("saved_model.pb", "rating_model.keras", "history.npz", "ranker.npz", "users", "items"):
        assert (bundle / name).is_file(), name
    values = rated["metrics"].metadata
    assert values["eval_rmse"] == report["eval"]["rmse"] == rated["model"].metadata["eval_rmse"]
    assert 0 < values["eval_rmse"] < 4 and 0 < values["eval_global_mean_rmse"] < 4
    assert values["test_ndcg@10"] == report["ranking"]["test"]["ndcg@10"]
    assert {"test_hr@10", "test_mostpop_ndcg@10", "eval_bias_mae"} <= set(values)
    assert 0 < report["ranking"]["users"] <= RATING.ranking_users
    assert rated["model"].metadata["hidden_units"] == [8] and PROVENANCE <= set(rated["model"].metadata)


# --- evaluate and push ---------------------------------------------------------------------------------------
def test_evaluate_blesses_a_run_that_meets_relaxed_thresholds_and_records_every_step(
    ingested, preprocessed, cnn, autoencoded, rated, evaluated
):
    upstream = {"ingest": ingested, "preprocess": preprocessed, "train_cnn": cnn, "train_autoencoder": autoencoded,
                "train_dnn": rated}  # fmt: skip
    evaluation = read_json(evaluated["evaluation"])
    assert evaluated["blessed"] is True is evaluation["blessed"], evaluation["reasons"]
    assert evaluation["id"] and all(reason.startswith("pass: ") for reason in evaluation["reasons"])
    assert set(evaluation["results"]) == {"ingest", "preprocess", "sentiment", "autoencoder", "rating", "ranking"}
    assert evaluation["compared_with"] is None  # nothing pushed at the destination yet
    # The evaluation is kept in the store under the run's id too, where `musicrec submit --summary-out` reads it.
    kept = json.loads((Path(evaluated["push_destination"]) / ".runs" / "run-1" / "evaluation.json").read_text())
    assert kept["id"] == evaluation["id"] and kept["blessed"] is True
    assert evaluation["settings"] == BLESSING.to_dict()
    values = evaluated["metrics"].metadata
    assert values["sentiment_auc"] == evaluation["scorecard"]["sentiment"]["test"]["auc"]
    assert values["rating_rmse"] == evaluation["scorecard"]["rating"]["test"]["rmse"]
    matrix = evaluated["classification_metrics"].metadata["confusionMatrix"]
    assert [row["row"] for row in matrix["rows"]] == evaluation["sentiment_test"]["confusion_matrix"]
    stamp = evaluated["evaluation"].metadata
    assert stamp["blessed"] is True and stamp["reasons"] == evaluation["reasons"] and PROVENANCE <= set(stamp)
    assert Path(evaluated["report"].path).read_text().startswith("<html>")

    # The lineage names every consumed artifact with the sha256 and provenance its producing component stamped.
    consumed = ("examples", "report", "transformed_examples", "transform_graph", "model", "encoder")
    stamped = {(step, name): artifact.metadata for step, artifacts in upstream.items()
               for name, artifact in artifacts.items() if name in consumed}  # fmt: skip
    recorded = {(step, artifact["name"]): artifact for step, section in evaluation["lineage"]["steps"].items()
                for artifact in section["artifacts"]}  # fmt: skip
    assert set(recorded) == set(stamped)
    for key, metadata in stamped.items():
        assert recorded[key]["sha256"] == metadata["sha256"], key
        assert recorded[key]["metadata"]["git_revision"] == metadata["git_revision"], key
    assert evaluation["lineage"]["steps"]["ingest"]["inputs"] == read_json(ingested["report"])["inputs"]


def test_push_publishes_a_blessed_run_as_version_one_with_lineage(cnn, autoencoded, rated, evaluated, tmp_path):
    destination = evaluated["push_destination"]
    model_card = Markdown(uri=str(tmp_path / "model_card"))
    pushed_model, version = push.python_func(cnn_model=cnn["model"], encoder=autoencoded["encoder"],
                                             rating_model=rated["model"], evaluation=evaluated["evaluation"],
                                             model_card=model_card, push_destination=destination)  # fmt: skip
    assert version == 1 and pushed_model == f"{destination}/recommender/1"
    for name in ("sentiment", "encoder", "recommender"):
        directory = Path(destination) / name / "1"
        assert (directory / "saved_model.pb").is_file() and (directory / MODEL_CARD_FILE).is_file()
        lineage = json.loads((directory / LINEAGE_FILE).read_text())
        assert lineage["model"]["name"] == name and lineage["model"]["version"] == 1
        # push adds the evaluation it read to the chain evaluate built
        assert [a["uri"] for a in lineage["steps"]["evaluate"]["artifacts"]] == [evaluated["evaluation"].uri]
        assert lineage["steps"]["train_dnn"]["artifacts"][0]["sha256"] == rated["model"].metadata["sha256"]
    assert current_push(destination)["evaluation_id"] == read_json(evaluated["evaluation"])["id"]
    assert Path(model_card.path).read_text().startswith("# recommender, version 1")
    assert model_card.metadata["version"] == 1 and model_card.metadata["recommender"] == pushed_model


def test_push_refuses_an_unblessed_evaluation_in_one_line(cnn, autoencoded, rated, evaluated, tmp_path):
    evaluation = tmp_path / "evaluation.json"
    evaluation.write_text(json.dumps({**read_json(evaluated["evaluation"]), "blessed": False}))
    model_card = Markdown(uri=str(tmp_path / "model_card"))
    message = failure(lambda: push.python_func(
        cnn_model=cnn["model"], encoder=autoencoded["encoder"], rating_model=rated["model"],
        evaluation=Artifact(uri=str(evaluation)), model_card=model_card, push_destination=str(tmp_path / "store"),
    ))  # fmt: skip
    assert message == "push failed: refusing to push: the evaluation did not bless this run"
    assert not (tmp_path / "store").exists() and not Path(model_card.path).exists()
