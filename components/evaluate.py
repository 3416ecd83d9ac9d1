"""The evaluate step as a KFP component; the logic lives in :mod:`musicrec.evaluate`."""

from kfp import dsl
from kfp.dsl import HTML, Artifact, ClassificationMetrics, Dataset, Input, Metrics, Model, Output

from components import BASE_IMAGE


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def evaluate(
    examples: Input[Dataset],
    ingest_report: Input[Artifact],
    transformed_examples: Input[Dataset],
    transform_graph: Input[Artifact],
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
) -> bool:
    """Score all models on the test split beside their baselines and decide whether the run may be pushed.

    Args:
        examples: ingest's Parquet examples (raw test text for the serving check).
        ingest_report: ingest's JSON report (raw input URIs and sha256 for lineage).
        transformed_examples: preprocess output (recorded in lineage).
        transform_graph: the tf.Transform output (recorded in lineage).
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
        evaluation: everything as JSON, including the lineage chain push writes beside each model.
        push_destination: the model store push publishes to; its current version is the regression reference.
        min_sentiment_auc: the lowest sentiment test AUC that may be pushed.
        max_rating_rmse: the highest rating test RMSE that may be pushed.
        min_ranking_ndcg: the lowest test NDCG@10 that may be pushed.
        max_regression: how much worse than the pushed version a gated metric may be.
        serving_tolerance: the largest AUC gap between the served SavedModel and the training measurement.

    Returns:
        Whether the run is blessed (the task's ``Output`` parameter that gates push). The reasons, one per check,
        are in ``evaluation`` (JSON and metadata) and the HTML report.
    """
    from pathlib import Path

    from musicrec.artifacts import attach_metadata
    from musicrec.evaluate import EvaluationError
    from musicrec.evaluate import evaluate as run_evaluation
    from musicrec.lineage import ArtifactRef
    from musicrec.progress import configure_logging
    from musicrec.settings import BlessingSettings
    from musicrec.storage import StorageError

    configure_logging()
    consumed = {
        ("ingest", "examples"): examples, ("ingest", "report"): ingest_report,
        ("preprocess", "transformed_examples"): transformed_examples,
        ("preprocess", "transform_graph"): transform_graph,
        ("train_cnn", "model"): cnn_model, ("train_cnn", "report"): cnn_report,
        ("train_autoencoder", "encoder"): encoder, ("train_autoencoder", "report"): autoencoder_report,
        ("train_dnn", "model"): rating_model, ("train_dnn", "report"): rating_report,
    }  # fmt: skip
    refs = [ArtifactRef(step, name, artifact.uri, Path(artifact.path), dict(artifact.metadata))
            for (step, name), artifact in consumed.items()]  # fmt: skip
    settings = BlessingSettings(
        min_sentiment_auc=min_sentiment_auc,
        max_rating_rmse=max_rating_rmse,
        min_ranking_ndcg=min_ranking_ndcg,
        max_regression=max_regression,
        serving_tolerance=serving_tolerance,
    )
    reports = {"ingest": ingest_report.path, "train_cnn": cnn_report.path,
               "train_autoencoder": autoencoder_report.path, "train_dnn": rating_report.path}  # fmt: skip
    try:
        result = run_evaluation(cnn_model.path, examples.path, reports, projection.path, refs, push_destination,
                                evaluation.path, report.path, settings)  # fmt: skip
    except (EvaluationError, StorageError) as error:
        raise SystemExit(f"evaluate failed: {error}") from None
    card = result["scorecard"]
    for task, section in card.items():
        for name, value in section["test"].items():
            metrics.log_metric(f"{task}_{name}", value)
        for baseline, values in section["baselines"].items():
            for name, value in values.items():
                metrics.log_metric(f"{task}_{baseline}_{name}", value)
    test = result["sentiment_test"]
    classification_metrics.log_confusion_matrix(["negative", "positive"], test["confusion_matrix"])
    classification_metrics.log_roc_curve(test["roc"]["fpr"], test["roc"]["tpr"], test["roc"]["thresholds"])
    attach_metadata({"report": report, "evaluation": evaluation},
                    {"evaluation": {"blessed": result["blessed"], "reasons": result["reasons"],
                                    **result["gated_metrics"]}})  # fmt: skip
    return result["blessed"]
