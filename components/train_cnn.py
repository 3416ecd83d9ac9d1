"""The train_cnn step as a KFP component; the logic lives in :mod:`musicrec.sentiment`."""

from kfp import dsl
from kfp.dsl import HTML, Artifact, ClassificationMetrics, Dataset, Input, Metrics, Model, Output

from components import GPU_IMAGE


@dsl.component(base_image=GPU_IMAGE, install_kfp_package=False)
def train_cnn(
    transformed_examples: Input[Dataset],
    transform_graph: Input[Artifact],
    model: Output[Model],
    metrics: Output[Metrics],
    classification_metrics: Output[ClassificationMetrics],
    report: Output[Artifact],
    token_importance: Output[HTML],
    embedding_dim: int,
    filters: int,
    kernel_sizes: str,
    dropout: float,
    learning_rate: float,
    batch_size: int,
    epochs: int,
    seed: int,
) -> None:
    """Train the text CNN for review sentiment beside majority and bag-of-words baselines; export it.

    Args:
        transformed_examples: preprocess output: train/, eval/, test/ TFRecords.
        transform_graph: the tf.Transform output, embedded in the exported model.
        model: a SavedModel serving normalized review and summary text (positive probability).
        metrics: eval accuracy, balanced accuracy and AUC of the CNN and the baselines.
        classification_metrics: eval confusion matrix and ROC curve for the Kubeflow UI.
        report: everything as JSON (eval and test metrics, baselines, training curves, token importance).
        token_importance: the most significant review and summary tokens (occlusion on eval), for the UI.
        embedding_dim: token embedding width.
        filters: filters of each convolution branch.
        kernel_sizes: comma-separated widths of the parallel review convolutions, e.g. "2,3,4".
        dropout: dropout rate before the classifier.
        learning_rate: Adam learning rate.
        batch_size: examples a step.
        epochs: the most epochs (early stopping on eval AUC).
        seed: seeds weights, shuffling and dropout.
    """
    from musicrec.artifacts import attach_metadata
    from musicrec.progress import configure_logging
    from musicrec.sentiment import train_sentiment
    from musicrec.settings import CnnSettings
    from musicrec.training import TrainingError

    configure_logging()
    settings = CnnSettings(
        embedding_dim=embedding_dim,
        filters=filters,
        kernel_sizes=tuple(int(k) for k in kernel_sizes.split(",")),
        dropout=dropout,
        learning_rate=learning_rate,
        batch_size=batch_size,
        epochs=epochs,
        seed=seed,
    )
    try:
        result = train_sentiment(
            transformed_examples.path, transform_graph.path, model.path, report.path, settings,
            importance_path=token_importance.path,
        )  # fmt: skip
    except TrainingError as error:
        raise SystemExit(f"train_cnn failed: {error}") from None
    evaluation = result["eval"]
    for name in ("accuracy", "balanced_accuracy", "auc"):
        metrics.log_metric(f"eval_{name}", evaluation[name])
        metrics.log_metric(f"eval_bow_linear_{name}", result["baselines"]["eval"]["bow_linear"][name])
    metrics.log_metric("eval_majority_accuracy", result["baselines"]["eval"]["majority"]["accuracy"])
    classification_metrics.log_confusion_matrix(["negative", "positive"], evaluation["confusion_matrix"])
    roc = evaluation["roc"]
    classification_metrics.log_roc_curve(roc["fpr"], roc["tpr"], roc["thresholds"])
    attach_metadata(
        {"model": model, "report": report, "token_importance": token_importance},
        {"model": {"framework": "tensorflow", "signature": "serving_default", "eval_auc": evaluation["auc"],
                   **result["settings"]},
         "report": {"seconds": result["seconds"], "examples_per_second": result["train_examples_per_second"]}},
    )  # fmt: skip
