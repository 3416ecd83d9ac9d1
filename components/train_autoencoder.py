"""The train_autoencoder step as a KFP component; the logic lives in :mod:`musicrec.autoencoder`."""

from kfp import dsl
from kfp.dsl import HTML, Artifact, Dataset, Input, Metrics, Model, Output

from components import GPU_IMAGE


@dsl.component(base_image=GPU_IMAGE, install_kfp_package=False)
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
        bottleneck: code size (also the PCA dimension).
        hidden_units: comma-separated encoder hidden widths, mirrored by the decoder, e.g. "64,32".
        learning_rate: SGD learning rate.
        momentum: SGD momentum.
        batch_size: examples a step.
        epochs: the most epochs (early stopping on eval reconstruction error).
        seed: seeds weights and shuffling.
    """
    from musicrec.artifacts import attach_metadata
    from musicrec.autoencoder import train_autoencoder as run_training
    from musicrec.progress import configure_logging
    from musicrec.settings import AutoencoderSettings
    from musicrec.training import TrainingError

    configure_logging()
    settings = AutoencoderSettings(
        bottleneck=bottleneck,
        hidden_units=tuple(int(u) for u in hidden_units.split(",")),
        learning_rate=learning_rate,
        momentum=momentum,
        batch_size=batch_size,
        epochs=epochs,
        seed=seed,
    )
    try:
        result = run_training(transformed_examples.path, transform_graph.path, cnn_model.path, encoder.path,
                              report.path, projection.path, settings)  # fmt: skip
    except TrainingError as error:
        raise SystemExit(f"train_autoencoder failed: {error}") from None
    metrics.log_metric("eval_reconstruction_mse", result["eval"]["reconstruction_mse"])
    metrics.log_metric("eval_pca_reconstruction_mse", result["baselines"]["eval"]["pca"]["reconstruction_mse"])
    attach_metadata(
        {"encoder": encoder, "report": report, "projection": projection},
        {"encoder": {"framework": "keras", "input_width": result["input_width"], **result["settings"]},
         "report": {"seconds": result["seconds"]}},
    )  # fmt: skip
