"""The evaluate step as a KFP component; the logic lives in :mod:`musicrec.release.evaluate`."""

from kfp import dsl
from kfp.dsl import HTML, Artifact, ClassificationMetrics, Dataset, Input, Metrics, Model, Output

from components import BASE_IMAGE
from musicrec.settings import BlessingSettings, documented_with


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
@documented_with(BlessingSettings)
def evaluate(
    examples: Input[Dataset],
    ingest_report: Input[Artifact],
    transformed_examples: Input[Dataset],
    transform_graph: Input[Artifact],
    preprocess_report: Input[Artifact],
    cnn_model: Input[Model],
    cnn_report: Input[Artifact],
    encoder: Input[Model],
    autoencoder_report: Input[Artifact],
    projection: Input[HTML],
    rating_model: Input[Model],
    rating_report: Input[Artifact],
    metrics: Output[Metrics],
    classification_metrics: Output[ClassificationMetrics],
    report: Output[HTML],
    evaluation: Output[Artifact],
    push_destination: str,
    min_sentiment_auc: float,
    max_rating_rmse: float,
    min_ranking_ndcg: float,
    max_regression: float,
    serving_tolerance: float,
    run_id: str,
) -> bool:
    """Score all models on the test split beside their baselines and decide whether the run may be pushed.

    Args:
        examples: ingest's Parquet examples (raw test text for the serving check).
        ingest_report: ingest's JSON report (raw input URIs and sha256 for lineage).
        transformed_examples: preprocess output (recorded in lineage).
        transform_graph: the tf.Transform output (recorded in lineage).
        preprocess_report: preprocess's JSON data report (vocabularies, for the run summary).
        cnn_model: the sentiment SavedModel, checked on raw test text.
        cnn_report: train_cnn's JSON report (test metrics, baselines, curves, token importance).
        encoder: the autoencoder's encoder (recorded in lineage).
        autoencoder_report: train_autoencoder's JSON report.
        projection: train_autoencoder's projection picture, shown again in the report.
        rating_model: the rating model (recorded in lineage).
        rating_report: train_dnn's JSON report (rating and ranking test metrics, baselines).
        metrics: test metrics of every model and baseline.
        classification_metrics: test confusion matrix and ROC curve of the sentiment CNN.
        report: the evaluation as an HTML page with pictures.
        evaluation: everything as JSON: the blessing, the scorecard, every step's results (the run summary)
            and the lineage chain push writes beside each model.
        push_destination: the model store push publishes to; its current version is the regression reference.
        run_id: the pipeline run's id (the DAG passes KFP's job id); the evaluation is kept under it there too.

    Returns:
        Whether the run is blessed (the task's ``Output`` parameter that gates push). The reasons, one per check,
        are in ``evaluation`` (JSON and metadata) and the HTML report.
    """
    from pathlib import Path

    from components.runtime import publish, step
    from musicrec.release.evaluate import artifact_metadata, ui_metrics
    from musicrec.release.evaluate import evaluate as run_evaluation
    from musicrec.release.lineage import ArtifactRef
    from musicrec.settings import BlessingSettings

    consumed = {
        ("ingest", "examples"): examples, ("ingest", "report"): ingest_report,
        ("preprocess", "transformed_examples"): transformed_examples,
        ("preprocess", "transform_graph"): transform_graph, ("preprocess", "report"): preprocess_report,
        ("train_cnn", "model"): cnn_model, ("train_cnn", "report"): cnn_report,
        ("train_autoencoder", "encoder"): encoder, ("train_autoencoder", "report"): autoencoder_report,
        ("train_dnn", "model"): rating_model, ("train_dnn", "report"): rating_report,
    }  # fmt: skip
    with step("evaluate"):
        result = run_evaluation(
            cnn_model.path, examples.path,
            {step_name: artifact.path for (step_name, name), artifact in consumed.items() if name == "report"},
            projection.path,
            [ArtifactRef(step_name, name, artifact.uri, Path(artifact.path), dict(artifact.metadata))
             for (step_name, name), artifact in consumed.items()],
            push_destination, evaluation.path, report.path, BlessingSettings.from_parameters(locals()), run_id,
        )  # fmt: skip
        publish({"report": report, "evaluation": evaluation}, artifact_metadata(result), metrics,
                ui_metrics(result), classification_metrics, result["sentiment_test"])  # fmt: skip
    return result["blessed"]
