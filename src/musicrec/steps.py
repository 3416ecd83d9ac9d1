"""The step registry: the seven steps of the DAG, what each reads from and what it writes.

One definition of the DAG's shape. ``pipelines.music_recommender`` wires exactly these edges (a test compares
the compiled YAML with this registry), lineage records them, and the run summary reads each step's results
under these names.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Step:
    """One pipeline step.

    Args:
        name: the component's name, and the step's name in lineage and reports (``train_cnn``).
        upstream: the steps whose output artifacts it consumes.
        outputs: its output artifacts by name.
        pushed_as: for a training step, the name its model is pushed under (``<store>/<pushed_as>/<version>``).
        model_output: which output is that model.
    """

    name: str
    upstream: tuple[str, ...]
    outputs: tuple[str, ...]
    pushed_as: str | None = None
    model_output: str | None = None

    @property
    def task(self) -> str:
        """The task's name in a compiled pipeline and in a local run directory (``train-cnn``)."""
        return self.name.replace("_", "-")


INGEST = Step("ingest", (), ("examples", "quarantine", "report", "report_markdown"))
PREPROCESS = Step(
    "preprocess", ("ingest",), ("transformed_examples", "transform_graph", "report", "report_markdown")
)
TRAIN_CNN = Step(
    "train_cnn", ("preprocess",), ("model", "metrics", "classification_metrics", "report", "token_importance"),
    pushed_as="sentiment", model_output="model",
)  # fmt: skip
TRAIN_AUTOENCODER = Step(
    "train_autoencoder", ("preprocess", "train_cnn"), ("encoder", "metrics", "report", "projection"),
    pushed_as="encoder", model_output="encoder",
)  # fmt: skip
TRAIN_DNN = Step(
    "train_dnn", ("preprocess", "train_cnn", "train_autoencoder"), ("model", "metrics", "report"),
    pushed_as="recommender", model_output="model",
)  # fmt: skip
EVALUATE = Step(
    "evaluate", ("ingest", "preprocess", "train_cnn", "train_autoencoder", "train_dnn"),
    ("metrics", "classification_metrics", "report", "evaluation"),
)  # fmt: skip
PUSH = Step("push", ("train_cnn", "train_autoencoder", "train_dnn", "evaluate"), ("model_card",))

STEPS: tuple[Step, ...] = (INGEST, PREPROCESS, TRAIN_CNN, TRAIN_AUTOENCODER, TRAIN_DNN, EVALUATE, PUSH)
BY_NAME: dict[str, Step] = {step.name: step for step in STEPS}
TRAINING_STEPS: tuple[Step, ...] = (TRAIN_CNN, TRAIN_AUTOENCODER, TRAIN_DNN)
# Each pushed model and the step that trains it, in push order.
PUSHED_MODELS: dict[str, Step] = {step.pushed_as: step for step in TRAINING_STEPS if step.pushed_as}
