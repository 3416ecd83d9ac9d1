"""The train_cnn step as a KFP component; the logic lives in :mod:`musicrec.models.sentiment`."""

from kfp import dsl
from kfp.dsl import HTML, Artifact, ClassificationMetrics, Dataset, Input, Metrics, Model, Output

from components import GPU_IMAGE
from musicrec.settings import CnnSettings, documented_with


@dsl.component(base_image=GPU_IMAGE, install_kfp_package=False)
@documented_with(CnnSettings)
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
    epoch_examples: int,
    patience: int,
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
    """
    from components.runtime import publish, step
    from musicrec.models.sentiment import artifact_metadata, train_sentiment, ui_metrics
    from musicrec.settings import CnnSettings

    with step("train_cnn"):
        result = train_sentiment(transformed_examples.path, transform_graph.path, model.path, report.path,
                                 CnnSettings.from_parameters(locals()), token_importance.path)  # fmt: skip
        outputs = {"model": model, "report": report, "token_importance": token_importance}
        publish(outputs, artifact_metadata(result), metrics, ui_metrics(result), classification_metrics,
                result["eval"])  # fmt: skip
