"""The train_dnn step as a KFP component; the logic lives in :mod:`musicrec.rating`."""

from kfp import dsl
from kfp.dsl import Artifact, Dataset, Input, Metrics, Model, Output

from components import GPU_IMAGE


@dsl.component(base_image=GPU_IMAGE, install_kfp_package=False)
def train_dnn(
    transformed_examples: Input[Dataset],
    transform_graph: Input[Artifact],
    cnn_model: Input[Model],
    encoder: Input[Model],
    model: Output[Model],
    metrics: Output[Metrics],
    report: Output[Artifact],
    id_embedding_dim: int,
    hidden_units: str,
    l2: float,
    dropout: float,
    learning_rate: float,
    batch_size: int,
    epochs: int,
    negatives: int,
    ranking_users: int,
    seed: int,
) -> None:
    """Train the DNN rating model on train-history features (no target leakage), beside its baselines.

    Args:
        transformed_examples: preprocess output: train/, eval/, test/ TFRecords.
        transform_graph: the tf.Transform output (feature spec, user and item vocabularies).
        cnn_model: the train_cnn model (codes and sentiment of history reviews).
        encoder: the train_autoencoder encoder (compresses history review codes).
        model: the Keras rating model with the train history arrays and vocabularies it serves with.
        metrics: eval RMSE / MAE beside global mean and damped bias; test HR@10 / NDCG@10 beside MostPop.
        report: everything as JSON (eval and test, baselines, ranking, training curve).
        id_embedding_dim: user and item embedding width.
        hidden_units: comma-separated dense widths, e.g. "64,32".
        l2: L2 penalty on embeddings and kernels.
        dropout: dropout after each dense layer.
        learning_rate: Adam learning rate.
        batch_size: examples a step.
        epochs: the most epochs (early stopping on eval RMSE, and on eval loss for the interaction head).
        ranking_users: the most test users ranked (seeded sample).
        seed: seeds weights, shuffling, dropout, negative items and the user sample.
        negatives: sampled unreviewed items per train review for the interaction head (ranking).
    """
    from musicrec.artifacts import attach_metadata
    from musicrec.progress import configure_logging
    from musicrec.rating import train_rating
    from musicrec.settings import RatingSettings
    from musicrec.training import TrainingError

    configure_logging()
    settings = RatingSettings(
        id_embedding_dim=id_embedding_dim,
        hidden_units=tuple(int(u) for u in hidden_units.split(",")),
        l2=l2,
        dropout=dropout,
        learning_rate=learning_rate,
        batch_size=batch_size,
        epochs=epochs,
        negatives=negatives,
        ranking_users=ranking_users,
        seed=seed,
    )
    try:
        result = train_rating(transformed_examples.path, transform_graph.path, cnn_model.path, encoder.path,
                              model.path, report.path, settings)  # fmt: skip
    except TrainingError as error:
        raise SystemExit(f"train_dnn failed: {error}") from None
    for name in ("rmse", "mae"):
        metrics.log_metric(f"eval_{name}", result["eval"][name])
        metrics.log_metric(f"eval_bias_{name}", result["baselines"]["eval"]["bias"][name])
        metrics.log_metric(f"eval_global_mean_{name}", result["baselines"]["eval"]["global_mean"][name])
    for name in ("hr@10", "ndcg@10"):
        metrics.log_metric(f"test_{name}", result["ranking"]["test"][name])
        metrics.log_metric(f"test_mostpop_{name}", result["ranking"]["baselines"]["mostpop"][name])
    attach_metadata(
        {"model": model, "report": report},
        {"model": {"framework": "keras", "eval_rmse": result["eval"]["rmse"], **result["settings"]},
         "report": {"seconds": result["seconds"]}},
    )  # fmt: skip
