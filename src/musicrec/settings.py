"""Every hyperparameter and threshold of the steps: the one source of the pipeline's parameters.

Each settings class owns a parameter prefix (``cnn_``, ``ae_``...): its field ``embedding_dim`` is the pipeline
parameter ``cnn_embedding_dim`` and the component parameter ``embedding_dim``. A field carries its default, its
one-line description (the parameter's description in the compiled pipeline and the components' docstrings)
and its valid range, checked when the object is built. List fields (``hidden_units``) are tuples here and
comma-separated strings as pipeline parameters.

Light on purpose (no TensorFlow import), so compiling the pipeline stays fast. What is fixed rather than a
setting (the evaluation protocol's split, lambda of the bias baseline, HR@10 / NDCG@10, memory bounds) is
documented where it is defined and in docs/architecture.md.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field, fields
from typing import Any, ClassVar, NamedTuple, TypeVar

from musicrec.errors import SettingsError

F = TypeVar("F", bound=Callable[..., Any])
S = TypeVar("S", bound="Settings")


def setting(
    default: Any, description: str, *, minimum: float | None = None, maximum: float | None = None,
    below: float | None = None,
) -> Any:  # fmt: skip
    """A settings field: default, description, and range (``minimum``/``maximum`` inclusive, ``below`` not)."""
    return field(default=default, metadata={"description": description, "minimum": minimum, "maximum": maximum,
                                            "below": below})  # fmt: skip


class Parameter(NamedTuple):
    """One pipeline parameter derived from a settings field."""

    name: str
    default: int | float | str
    description: str


class Settings:
    """Behaviour shared by the settings dataclasses: validation, parameter names, parsing, documentation."""

    PREFIX: ClassVar[str] = ""

    def __post_init__(self) -> None:
        for spec in fields(self):  # type: ignore[arg-type]
            object.__setattr__(self, spec.name, self._checked(spec, getattr(self, spec.name)))

    def _checked(self, spec: Any, value: Any) -> Any:
        name, default, limits = self.PREFIX + spec.name, spec.default, spec.metadata
        if isinstance(default, tuple):
            try:
                items = tuple(int(part) for part in value.split(",")) if isinstance(value, str) else tuple(value)
            except (TypeError, ValueError):
                raise SettingsError(f"{name} must be comma-separated positive integers, got {value!r}") from None
            if not items or any(isinstance(i, bool) or not isinstance(i, int) or i < 1 for i in items):
                raise SettingsError(f"{name} must be comma-separated positive integers, got {value!r}")
            return items
        if isinstance(default, float) and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if isinstance(value, bool) or type(value) is not type(default):
            raise SettingsError(f"{name} must be {type(default).__name__}, got {value!r}")
        if limits["minimum"] is not None and value < limits["minimum"]:
            raise SettingsError(f"{name} must be at least {limits['minimum']}, got {value!r}")
        if limits["maximum"] is not None and value > limits["maximum"]:
            raise SettingsError(f"{name} must be at most {limits['maximum']}, got {value!r}")
        if limits["below"] is not None and value >= limits["below"]:
            raise SettingsError(f"{name} must be below {limits['below']}, got {value!r}")
        return value

    @classmethod
    def parameters(cls) -> list[Parameter]:
        """The pipeline parameters of these settings: prefixed names, defaults as passed, descriptions."""
        return [
            Parameter(cls.PREFIX + spec.name,
                      ",".join(map(str, spec.default)) if isinstance(spec.default, tuple) else spec.default,
                      spec.metadata["description"])
            for spec in fields(cls)  # type: ignore[arg-type]
        ]  # fmt: skip

    @classmethod
    def from_parameters(cls: type[S], values: Mapping[str, Any]) -> S:
        """Build from component parameters (field names); other names in ``values`` are ignored.

        Raises:
            SettingsError: a value of the wrong type or out of range (the message names the pipeline parameter).
        """
        return cls(**{spec.name: values[spec.name] for spec in fields(cls) if spec.name in values})  # type: ignore[arg-type]

    @classmethod
    def task_arguments(cls, pipeline_arguments: Mapping[str, Any]) -> dict[str, Any]:
        """The component arguments (field names) from the pipeline's arguments (prefixed names)."""
        return {spec.name: pipeline_arguments[cls.PREFIX + spec.name] for spec in fields(cls)}  # type: ignore[arg-type]

    def to_dict(self) -> dict[str, Any]:
        """The settings as JSON-ready values (tuples as lists), for reports."""
        return {key: list(value) if isinstance(value, tuple) else value for key, value in asdict(self).items()}  # type: ignore[call-overload]


@dataclass(frozen=True)
class IngestSettings(Settings):
    """How much unusable input the ingest step tolerates before it fails instead of training on the rest."""

    PREFIX: ClassVar[str] = "ingest_"

    max_review_quarantine_fraction: float = setting(
        0.2, "ingest fails when more than this share of review lines is quarantined", minimum=0.0, maximum=1.0
    )
    max_metadata_quarantine_fraction: float = setting(
        0.2, "ingest fails when more than this share of metadata lines is quarantined", minimum=0.0, maximum=1.0
    )


@dataclass(frozen=True)
class TransformSettings(Settings):
    """Vocabulary and sequence settings of the transform graph (the preprocess step)."""

    PREFIX: ClassVar[str] = "preprocess_"

    review_vocabulary_size: int = setting(
        20_000, "the most review tokens in the vocabulary (most frequent in train)", minimum=1
    )
    summary_vocabulary_size: int = setting(5_000, "the most summary tokens in the vocabulary", minimum=1)
    min_token_frequency: int = setting(3, "tokens seen fewer times in train are out of vocabulary", minimum=1)
    # p99 of normalized review length is 58 on the generated full-scale data; real reviews run longer (IMDB's
    # train median is 95 normalized tokens, its p90 249). Head and tail 128 + 128 scored nearly as well as the
    # first 400 tokens there (benchmarks/sentiment_choices.py); training cuts each batch to its longest review,
    # so short reviews do not pay for the length.
    max_review_tokens: int = setting(256, "review token sequences are truncated or zero-padded to this length",
                                     minimum=1)  # fmt: skip
    review_tail_tokens: int = setting(128, "of max_review_tokens, how many are the last tokens of a longer review "
                                      "(the rest are its first ones)", minimum=0)  # fmt: skip
    max_summary_tokens: int = setting(20, "summary token sequences are truncated or zero-padded to this length",
                                      minimum=1)  # fmt: skip

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.review_tail_tokens > self.max_review_tokens:
            raise SettingsError(f"{self.PREFIX}review_tail_tokens must be at most {self.PREFIX}max_review_tokens "
                                f"({self.max_review_tokens}), got {self.review_tail_tokens}")  # fmt: skip


@dataclass(frozen=True)
class CnnSettings(Settings):
    """Hyperparameters of the sentiment CNN (the train_cnn step)."""

    PREFIX: ClassVar[str] = "cnn_"

    embedding_dim: int = setting(32, "token embedding width of the sentiment CNN", minimum=1)
    filters: int = setting(32, "filters of each CNN convolution branch", minimum=1)
    kernel_sizes: tuple[int, ...] = setting((2, 3, 4), "comma-separated kernel widths of the parallel review "
                                            "convolutions")  # fmt: skip
    dropout: float = setting(0.4, "dropout rate before the CNN classifier", minimum=0.0, below=1.0)
    learning_rate: float = setting(2e-3, "Adam learning rate of the CNN", minimum=0.0)
    batch_size: int = setting(256, "CNN examples a step", minimum=1)
    epochs: int = setting(3, "the most CNN epochs (early stopping on eval AUC may stop sooner)", minimum=1)
    epoch_examples: int = setting(
        400_000,
        "the most train examples the CNN and its linear baselines read an epoch; evaluation and "
        "early stopping follow, and the next epoch goes on from there (0: a whole pass over train)",
        minimum=0,
    )
    patience: int = setting(1, "CNN epochs without a better eval AUC before training stops", minimum=1)
    seed: int = setting(42, "seeds the CNN's weights, shuffling and dropout", minimum=0)


@dataclass(frozen=True)
class AutoencoderSettings(Settings):
    """Hyperparameters of the stacked autoencoder (the train_autoencoder step)."""

    PREFIX: ClassVar[str] = "ae_"

    bottleneck: int = setting(8, "autoencoder code size (and the PCA baseline's dimension)", minimum=1)
    hidden_units: tuple[int, ...] = setting((64, 32), "comma-separated autoencoder encoder widths, mirrored by "
                                            "the decoder")  # fmt: skip
    # On IMDB's review codes (test MSE, PCA 0.3965): 20 epochs at 0.02 gave 0.4024, 30 at 0.1 gave 0.366, 60 at
    # 0.1 gave 0.357 (benchmarks/autoencoder_choices.py); 30 at 0.1 is the default for its time.
    learning_rate: float = setting(0.1, "autoencoder SGD learning rate", minimum=0.0)
    momentum: float = setting(0.9, "autoencoder SGD momentum", minimum=0.0, below=1.0)
    batch_size: int = setting(256, "autoencoder examples a step", minimum=1)
    epochs: int = setting(30, "the most autoencoder epochs (early stopping on eval reconstruction error)",
                          minimum=1)  # fmt: skip
    epoch_examples: int = setting(
        400_000,
        "the most train examples the autoencoder reads an epoch; evaluation and early stopping "
        "follow, and the next epoch goes on from there (0: a whole pass over train)",
        minimum=0,
    )
    patience: int = setting(2, "autoencoder epochs without a lower eval reconstruction error before training "
                            "stops", minimum=1)  # fmt: skip
    seed: int = setting(42, "seeds the autoencoder's weights and shuffling", minimum=0)


@dataclass(frozen=True)
class RatingSettings(Settings):
    """Hyperparameters of the two-head DNN recommender (the train_dnn step)."""

    PREFIX: ClassVar[str] = "dnn_"

    id_embedding_dim: int = setting(8, "user and item embedding width of the rating DNN", minimum=1)
    hidden_units: tuple[int, ...] = setting((64, 32), "comma-separated dense widths of the rating DNN")
    l2: float = setting(1e-4, "L2 penalty on the rating DNN's embeddings and kernels", minimum=0.0)
    dropout: float = setting(0.3, "dropout after each rating DNN dense layer", minimum=0.0, below=1.0)
    learning_rate: float = setting(2e-3, "Adam learning rate of the rating DNN", minimum=0.0)
    batch_size: int = setting(512, "rating DNN examples a step", minimum=1)
    epochs: int = setting(8, "the most epochs of each DNN head (early stopping on eval)", minimum=1)
    epoch_examples: int = setting(
        400_000,
        "the most train examples each DNN head, the two-tower model and biased MF read an epoch; "
        "evaluation and early stopping follow, and the next epoch goes on from there (0: a whole pass over train)",
        minimum=0,
    )
    patience: int = setting(2, "DNN epochs without a better eval loss before a head stops training", minimum=1)
    negatives: int = setting(4, "unreviewed items sampled against each train review for the DNN's ranking "
                             "(interaction) head", minimum=1)  # fmt: skip
    text_tokens: int = setting(1_000, "the most frequent review tokens the DNN's text codes read (genre words "
                               "are frequent)", minimum=1)  # fmt: skip
    text_dims: int = setting(24, "width of the DNN's text codes: directions that tell the catalogue's items "
                             "apart", minimum=1)  # fmt: skip
    retrieval_dim: int = setting(32, "width of the two-tower retrieval model's user and item vectors", minimum=1)
    retrieval_batch_size: int = setting(1_024, "train reviews a step of the two-tower model (each row's negatives "
                                        "are the batch's other items)", minimum=2)  # fmt: skip
    retrieval_l2: float = setting(0.03, "L2 penalty on the two-tower model's embeddings and kernels (with the "
                                  "DNN's 1e-4 it overfits within an epoch or two)", minimum=0.0)  # fmt: skip
    retrieval_learning_rate: float = setting(5e-4, "Adam learning rate of the two-tower model", minimum=0.0)
    retrieval_epochs: int = setting(20, "the most epochs of the two-tower model (early stopping on eval)",
                                    minimum=1)  # fmt: skip
    retrieval_candidates: int = setting(200, "items the two-tower model retrieves per user for the re-ranker",
                                        minimum=1)  # fmt: skip
    ranking_users: int = setting(5_000, "the most test users ranked for HR@10 / NDCG@10 (a seeded sample)",
                                 minimum=1)  # fmt: skip
    seed: int = setting(42, "seeds the DNN's weights, shuffling, dropout, negative items and ranked users",
                        minimum=0)  # fmt: skip


@dataclass(frozen=True)
class BlessingSettings(Settings):
    """When the evaluate step blesses a run for push.

    A run is blessed only if every model beats its trivial baseline, meets these thresholds on the test split,
    serves what was measured, and is no worse than the currently pushed run beyond ``max_regression``.
    """

    PREFIX: ClassVar[str] = "blessing_"

    min_sentiment_auc: float = setting(0.85, "blessing needs at least this sentiment test ROC AUC",
                                       minimum=0.0, maximum=1.0)  # fmt: skip
    max_rating_rmse: float = setting(1.1, "blessing needs at most this rating test RMSE (stars)", minimum=0.0)
    min_ranking_ndcg: float = setting(0.01, "blessing needs at least this test NDCG@10", minimum=0.0, maximum=1.0)
    max_regression: float = setting(0.01, "how much worse than the pushed version each gated metric may be",
                                    minimum=0.0)  # fmt: skip
    serving_tolerance: float = setting(0.002, "the largest AUC gap between the served SavedModel on raw test "
                                       "text and the training step's measurement", minimum=0.0)  # fmt: skip


# The settings classes behind the pipeline's parameters, in the order the parameters appear.
PIPELINE_SETTINGS: tuple[type[Settings], ...] = (
    IngestSettings, TransformSettings, CnnSettings, AutoencoderSettings, RatingSettings, BlessingSettings,
)  # fmt: skip


def documented_with(*classes: type[Settings], prefixed: bool = False) -> Callable[[F], F]:
    """Add one ``name: description`` entry per settings field to the decorated function's ``Args:`` section.

    So a component's or the pipeline's docstring (which KFP turns into parameter descriptions) never restates
    a setting. Entries go at the end of ``Args:``; with ``prefixed`` they use the pipeline parameter names.
    """

    def decorate(function: F) -> F:
        doc = inspect.cleandoc(function.__doc__ or "")
        entries = [
            f"    {name if prefixed else name.removeprefix(cls.PREFIX)}: {description}."
            for cls in classes
            for name, _, description in cls.parameters()
        ]
        match = re.search(r"^Args:\n(?:(?:    .*)?\n)*?(?=\S|\Z)", doc + "\n", flags=re.MULTILINE)
        if match is None:
            raise ValueError(f"{function.__name__}: its docstring has no Args: section to extend")
        body = match.group(0).rstrip("\n")
        function.__doc__ = doc.replace(body, "\n".join([body, *entries]), 1)
        return function

    return decorate


def parameter_descriptions() -> dict[str, str]:
    """Every settings-derived pipeline parameter and its description."""
    return {p.name: p.description for cls in PIPELINE_SETTINGS for p in cls.parameters()}


def check_pipeline_arguments(arguments: Mapping[str, Any]) -> None:
    """Build every settings class from pipeline arguments (prefixed names), so a bad value fails before a run.

    Raises:
        SettingsError: the first value out of range or of the wrong type, named as the pipeline parameter.
    """
    for cls in PIPELINE_SETTINGS:
        cls.from_parameters({name.removeprefix(cls.PREFIX): value for name, value in arguments.items()
                             if name.startswith(cls.PREFIX)})  # fmt: skip
