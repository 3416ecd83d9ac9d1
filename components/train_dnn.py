"""The train_dnn step as a KFP component; the logic lives in :mod:`musicrec.models.recommender.train`."""

from kfp import dsl
from kfp.dsl import Artifact, Dataset, Input, Metrics, Model, Output

from components import GPU_IMAGE
from musicrec.settings import RatingSettings, documented_with


@dsl.component(base_image=GPU_IMAGE, install_kfp_package=False)
@documented_with(RatingSettings)
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
    epoch_examples: int,
    patience: int,
    negatives: int,
    text_tokens: int,
    text_dims: int,
    retrieval_dim: int,
    retrieval_batch_size: int,
    retrieval_l2: float,
    retrieval_learning_rate: float,
    retrieval_epochs: int,
    retrieval_candidates: int,
    ranking_users: int,
    seed: int,
) -> None:
    """Train the two-head DNN recommender on train-history features (no target leakage), beside its baselines.

    Args:
        transformed_examples: preprocess output: train/, eval/, test/ TFRecords.
        transform_graph: the tf.Transform output (feature spec, user and item vocabularies).
        cnn_model: the train_cnn model (codes and sentiment of history reviews).
        encoder: the train_autoencoder encoder (compresses history review codes).
        model: the recommender bundle: serving SavedModel, Keras model, train history and id vocabularies.
        metrics: eval RMSE / MAE beside global mean and damped bias; test HR@10 / NDCG@10 beside MostPop.
        report: everything as JSON (eval and test, baselines, ranking, training curves).
    """
    from components.runtime import publish, step
    from musicrec.models.recommender.train import artifact_metadata, train_rating, ui_metrics
    from musicrec.settings import RatingSettings

    with step("train_dnn"):
        result = train_rating(transformed_examples.path, transform_graph.path, cnn_model.path, encoder.path,
                              model.path, report.path, RatingSettings.from_parameters(locals()))  # fmt: skip
        publish({"model": model, "report": report}, artifact_metadata(result), metrics, ui_metrics(result))
