"""The push step as a KFP component; the logic lives in :mod:`musicrec.release.push`."""

from typing import NamedTuple

from kfp import dsl
from kfp.dsl import Artifact, Input, Markdown, Model, Output

from components import BASE_IMAGE


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def push(
    cnn_model: Input[Model],
    encoder: Input[Model],
    rating_model: Input[Model],
    evaluation: Input[Artifact],
    model_card: Output[Markdown],
    push_destination: str,
) -> NamedTuple("PushOutputs", [("pushed_model", str), ("version", int)]):
    """Publish a blessed run's three models as one new version in the TF Serving layout, with lineage.

    Args:
        cnn_model: the sentiment SavedModel (pushed as ``sentiment``).
        encoder: the autoencoder's encoder (pushed as ``encoder``).
        rating_model: the rating model (pushed as ``recommender``).
        evaluation: evaluate's JSON (blessing, scorecard, lineage chain).
        model_card: the recommender's model card (Markdown, shown in the Kubeflow UI).
        push_destination: the model store: a path in the container, s3://bucket/prefix or gs://bucket/prefix.

    Returns:
        The URI of the pushed recommender version and the version number (shared by the three models).
    """
    from collections import namedtuple
    from pathlib import Path

    from components.runtime import publish, step
    from musicrec.release.lineage import ArtifactRef
    from musicrec.release.push import artifact_metadata, push_evaluated_models

    with step("push"):
        evaluated = ArtifactRef("evaluate", "evaluation", evaluation.uri, Path(evaluation.path),
                                dict(evaluation.metadata))  # fmt: skip
        record = push_evaluated_models(
            {"sentiment": cnn_model.path, "encoder": encoder.path, "recommender": rating_model.path},
            evaluated, push_destination, model_card.path,
        )  # fmt: skip
        publish({"model_card": model_card}, artifact_metadata(record))
    outputs = namedtuple("PushOutputs", ["pushed_model", "version"])
    return outputs(record["models"]["recommender"], record["version"])
