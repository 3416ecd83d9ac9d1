"""The push step as a KFP component; the logic lives in :mod:`musicrec.push`."""

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
    import json
    from collections import namedtuple
    from pathlib import Path

    from musicrec.artifacts import attach_metadata
    from musicrec.lineage import ArtifactRef
    from musicrec.progress import configure_logging
    from musicrec.push import PushError, model_card_text, push_models

    configure_logging()
    result = json.loads(Path(evaluation.path).read_text())
    try:
        record = push_models(
            {"sentiment": cnn_model.path, "encoder": encoder.path, "recommender": rating_model.path},
            result, push_destination, ArtifactRef("evaluate", "evaluation", evaluation.uri, Path(evaluation.path)),
        )  # fmt: skip
    except PushError as error:
        raise SystemExit(f"push failed: {error}") from None
    pushed = record["models"]["recommender"]
    Path(model_card.path).write_text(model_card_text("recommender", record["version"], pushed, result))
    card_metadata = {"version": record["version"], "seconds": record["seconds"], **record["models"]}
    attach_metadata({"model_card": model_card}, {"model_card": card_metadata})
    outputs = namedtuple("PushOutputs", ["pushed_model", "version"])
    return outputs(pushed, record["version"])
