"""Hyperparameters of the steps, as frozen dataclasses: the defaults of the pipeline parameters live here.

Light on purpose (no TensorFlow import), so the pipeline module can read defaults at compile time.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class TransformSettings:
    """Vocabulary and sequence settings of the transform graph (pipeline parameters).

    Args:
        review_vocabulary_size: at most this many review tokens, the most frequent in train.
        summary_vocabulary_size: the same for summaries.
        min_token_frequency: a token seen fewer times in train is out of vocabulary.
        max_review_tokens: review sequences are truncated or zero-padded to this length.
        max_summary_tokens: the same for summaries.
    """

    review_vocabulary_size: int = 20_000
    summary_vocabulary_size: int = 5_000
    min_token_frequency: int = 3
    max_review_tokens: int = 100  # p99 of normalized review length is 58 on the generated full-scale data
    max_summary_tokens: int = 20

    def validate(self) -> None:
        """Raise ``ValueError`` naming the first setting out of range."""
        for name, value in asdict(self).items():
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")


@dataclass(frozen=True)
class CnnSettings:
    """Hyperparameters of the sentiment CNN (pipeline parameters).

    Args:
        embedding_dim: token embedding width.
        filters: filters of each convolution branch.
        kernel_sizes: widths of the parallel review convolutions (comma-separated in the pipeline).
        dropout: dropout before the classifier.
        learning_rate: Adam learning rate.
        batch_size: examples a step.
        epochs: the most epochs; early stopping on eval AUC may stop sooner.
        seed: seeds weights, shuffling and dropout.
    """

    embedding_dim: int = 32
    filters: int = 32
    kernel_sizes: tuple[int, ...] = (2, 3, 4)
    dropout: float = 0.4
    learning_rate: float = 2e-3
    batch_size: int = 256
    epochs: int = 3
    seed: int = 42


@dataclass(frozen=True)
class AutoencoderSettings:
    """Hyperparameters of the stacked autoencoder (pipeline parameters).

    Args:
        bottleneck: size of the compressed code (and of the PCA baseline).
        hidden_units: widths of the encoder's hidden layers; the decoder mirrors them.
        learning_rate: SGD learning rate.
        momentum: SGD momentum.
        batch_size: examples a step.
        epochs: the most epochs; early stopping on eval reconstruction error may stop sooner.
        seed: seeds weights and shuffling.
    """

    bottleneck: int = 8
    hidden_units: tuple[int, ...] = (64, 32)
    learning_rate: float = 0.02
    momentum: float = 0.9
    batch_size: int = 256
    epochs: int = 20
    seed: int = 42


@dataclass(frozen=True)
class RatingSettings:
    """Hyperparameters of the DNN rating model (pipeline parameters).

    Args:
        id_embedding_dim: width of the user and item id embeddings.
        hidden_units: widths of the dense layers.
        l2: L2 penalty on embeddings and dense kernels.
        dropout: dropout after each dense layer.
        learning_rate: Adam learning rate.
        batch_size: examples a step.
        epochs: the most epochs; early stopping on eval RMSE may stop sooner.
        negatives: items sampled (seeded, never one the user reviewed) against each train review for the
            interaction head, which learns whether a user reviews an item.
        ranking_users: the most test users ranked for HR@10 / NDCG@10 (a seeded sample).
        seed: seeds weights, shuffling, dropout, negative items and the user sample.
    """

    id_embedding_dim: int = 8
    hidden_units: tuple[int, ...] = (64, 32)
    l2: float = 1e-4
    dropout: float = 0.3
    learning_rate: float = 2e-3
    batch_size: int = 512
    epochs: int = 8
    negatives: int = 4
    ranking_users: int = 5_000
    seed: int = 42


@dataclass(frozen=True)
class BlessingSettings:
    """When the evaluate step blesses a run for push (pipeline parameters).

    A run is blessed only if every model beats its trivial baseline, meets these thresholds on the test split,
    serves what was measured, and is no worse than the currently pushed run beyond ``max_regression``.

    Args:
        min_sentiment_auc: the lowest sentiment test ROC AUC.
        max_rating_rmse: the highest rating test RMSE (stars).
        min_ranking_ndcg: the lowest test NDCG@10.
        max_regression: how much worse than the pushed run any of those three metrics may be.
        serving_tolerance: the largest AUC difference between the exported SavedModel on raw test text and
            the training step's measurement (more means training/serving skew).
    """

    min_sentiment_auc: float = 0.85
    max_rating_rmse: float = 1.1
    min_ranking_ndcg: float = 0.01
    max_regression: float = 0.01
    serving_tolerance: float = 0.002
