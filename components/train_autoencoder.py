"""The train_autoencoder step as a KFP component; the logic lives in :mod:`musicrec.models.autoencoder`."""

from kfp import dsl
from kfp.dsl import HTML, Artifact, Dataset, Input, Metrics, Model, Output

from components import GPU_IMAGE
from musicrec.settings import AutoencoderSettings, documented_with


@dsl.component(base_image=GPU_IMAGE, install_kfp_package=False)
@documented_with(AutoencoderSettings)
def train_autoencoder(
    transformed_examples: Input[Dataset],
    transform_graph: Input[Artifact],
    cnn_model: Input[Model],
    encoder: Output[Model],
    metrics: Output[Metrics],
    report: Output[Artifact],
    projection: Output[HTML],
    bottleneck: int,
    hidden_units: str,
    learning_rate: float,
    momentum: float,
    batch_size: int,
    epochs: int,
    epoch_examples: int,
    patience: int,
    seed: int,
) -> None:
    """Train a stacked autoencoder with SGD on the CNN review code plus item metadata, beside PCA.

    Args:
        transformed_examples: preprocess output: train/, eval/, test/ TFRecords.
        transform_graph: the tf.Transform output (feature spec).
        cnn_model: the train_cnn model; its review code is the text representation.
        encoder: the encoder half (Keras) with the input normalization fit on train.
        metrics: eval reconstruction error of the autoencoder and of PCA at the same dimension.
        report: everything as JSON (eval and test errors, training curve).
        projection: 2-D projection of test codes coloured by rating, for the Kubeflow UI.
    """
    from components.runtime import publish, step
    from musicrec.models.autoencoder import artifact_metadata, train_autoencoder, ui_metrics
    from musicrec.settings import AutoencoderSettings

    with step("train_autoencoder"):
        settings = AutoencoderSettings.from_parameters(locals())
        result = train_autoencoder(transformed_examples.path, transform_graph.path, cnn_model.path, encoder.path,
                                   report.path, projection.path, settings)  # fmt: skip
        publish({"encoder": encoder, "report": report, "projection": projection}, artifact_metadata(result),
                metrics, ui_metrics(result))  # fmt: skip
