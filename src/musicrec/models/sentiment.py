"""train_cnn: a review sentiment CNN over an n-gram linear model, beside the linear and majority baselines.

The model reads the transformed review and summary token ids; the exported SavedModel carries the TensorFlow
port of the normalizer (:mod:`musicrec.data.text_graph`) and the tf.Transform graph, so it serves raw review
text with nothing in front of it (TF Serving, KServe's TensorFlow runtime, :func:`score_texts`).
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any, NamedTuple

import keras
import numpy as np
import tensorflow as tf
from keras import layers

from musicrec import features, metrics, schema
from musicrec.data.text import normalize_to_string
from musicrec.data.text_graph import GraphNormalizer, read_stems
from musicrec.errors import ModelLoadError
from musicrec.io.artifacts import publish, staging_directory
from musicrec.models import bundles
from musicrec.models.token_importance import token_importance, token_importance_html
from musicrec.models.training import (
    ThroughputLogger,
    balanced_class_weights,
    check_batch_split,
    columns_of,
    curves,
    distribution_strategy,
    labels_of,
    make_dataset,
    on_this_worker,
    seed_everything,
    split_files,
    steps_per_epoch,
    transformed_feature_spec,
    vocabulary,
    vocabulary_size,
    worker_outputs,
)
from musicrec.reports import SentimentReport
from musicrec.settings import CnnSettings

logger = logging.getLogger(__name__)

TEXT_INPUTS = (features.REVIEW_IDS, features.SUMMARY_IDS)
REVIEW_CODE_LAYER = "review_code"  # the pooled review representation the autoencoder compresses
SERVING_OUTPUT = "positive_probability"
RAW_TEXT_INPUTS = ("review_text", "summary_text")  # what a client sends: the review as written


# The n-gram baseline's recipe, chosen on IMDB's eval split (benchmarks/sentiment_choices.py): a linear model
# needs a larger step than the CNN and converges in a few epochs.
NGRAM_BUCKETS = 2**18
NGRAM_LEARNING_RATE = 0.03
NGRAM_EPOCHS = 12
NGRAM_PATIENCE = 2
_BIGRAM_MULTIPLIER = 1_000_003  # a prime above any vocabulary size, so (a, b) and (b, a) hash apart


@keras.saving.register_keras_serializable(package="musicrec")
class NgramLogit(layers.Layer):
    """The logit of a linear model over the unigrams (and hashed bigrams) of a token-id sequence.

    One weight per vocabulary id and, with ``bigram_buckets``, one per bigram bucket (a bigram is two adjacent
    non-padding ids). The logit is the sum of the weights present divided by the square root of their count, the
    length normalization of an L2-normalized TF-IDF vector, so short and long reviews share one scale. Padding
    counts for nothing. Weights start at zero.
    """

    def __init__(self, vocabulary_size: int, bigram_buckets: int = 0, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.vocabulary_size = vocabulary_size
        self.bigram_buckets = bigram_buckets
        self.unigram_weights = layers.Embedding(vocabulary_size + 2, 1, embeddings_initializer="zeros",
                                                name="unigram_weights")  # fmt: skip
        self.bigram_weights = (
            layers.Embedding(bigram_buckets, 1, embeddings_initializer="zeros", name="bigram_weights")
            if bigram_buckets else None
        )  # fmt: skip

    def build(self, input_shape: Any) -> None:
        """Create the weight tables (Keras calls this before loading saved weights)."""
        self.unigram_weights.build(input_shape)
        if self.bigram_weights is not None:
            self.bigram_weights.build(input_shape)

    def call(self, ids: Any) -> Any:
        """``ids`` (batch, length) int64 -> logits (batch, 1) float32."""
        ops = keras.ops
        present = ops.cast(ops.not_equal(ids, features.PADDING_ID), "float32")
        total = ops.sum(ops.squeeze(ops.cast(self.unigram_weights(ids), "float32"), -1) * present, axis=1)
        count = ops.sum(present, axis=1)
        if self.bigram_weights is not None:
            pair_present = present[:, :-1] * present[:, 1:]
            bigrams = (ids[:, :-1] * _BIGRAM_MULTIPLIER + ids[:, 1:]) % self.bigram_buckets
            weights = ops.squeeze(ops.cast(self.bigram_weights(bigrams), "float32"), -1)
            total += ops.sum(weights * pair_present, axis=1)
            count += ops.sum(pair_present, axis=1)
        return ops.expand_dims(total / ops.sqrt(ops.maximum(count, 1.0)), -1)

    def get_config(self) -> dict[str, Any]:
        """The constructor arguments, for Keras saving."""
        return {**super().get_config(), "vocabulary_size": self.vocabulary_size,
                "bigram_buckets": self.bigram_buckets}  # fmt: skip


@keras.saving.register_keras_serializable(package="musicrec")
class PaddingMasked(layers.Layer):
    """Zeroes a sequence's vectors at padding positions, so padding cannot change a model's output.

    With the embeddings and the (ReLU) convolution outputs masked, a review scores the same however much padding
    follows it, and training may cut each batch to its longest review (``make_dataset``'s ``trim_padding``).
    """

    def call(self, values: Any, ids: Any) -> Any:
        """``values`` (batch, length, width) with the ``ids`` (batch, length) they came from."""
        keep = keras.ops.cast(keras.ops.not_equal(ids, features.PADDING_ID), values.dtype)
        return values * keras.ops.expand_dims(keep, -1)


def _conv_codes(ids: Any, vocabulary_size: int, kernel_sizes: tuple[int, ...], settings: CnnSettings,
                name: str) -> list[Any]:  # fmt: skip
    """Max-over-time pooled ReLU convolutions of one text's embedded ids, one code per kernel width."""
    embedded = PaddingMasked(name=f"{name}_masked_embedding")(
        layers.Embedding(vocabulary_size + 2, settings.embedding_dim, name=f"{name}_embedding")(ids), ids
    )
    codes = []
    for k in kernel_sizes:
        convolved = layers.Conv1D(settings.filters, k, padding="same", activation="relu", name=f"{name}_conv_{k}")(
            embedded
        )
        codes.append(layers.GlobalMaxPooling1D(name=f"{name}_pool_{k}")(
            PaddingMasked(name=f"{name}_masked_conv_{k}")(convolved, ids)))  # fmt: skip
    return codes


def build_cnn(
    review_vocabulary: int, summary_vocabulary: int, settings: CnnSettings, wide: keras.Model
) -> keras.Model:
    """The sentiment model: a CNN over review and summary tokens on top of a linear n-gram model (wide and deep).

    The deep part runs parallel Conv1D branches over the review and one over the summary, each max-over-time
    pooled, then dropout and a small dense layer to a logit that starts at zero. It is added to the logit of
    ``wide`` (the trained ``ngram_linear`` baseline of :func:`build_linear`, frozen here), so training starts from
    the n-gram model and the convolutions learn what it misses. Padding is masked, so a review scores the same
    whatever its padded length; the output is float32 even under mixed precision.
    """
    review = keras.Input(shape=(None,), dtype="int64", name=features.REVIEW_IDS)
    summary = keras.Input(shape=(None,), dtype="int64", name=features.SUMMARY_IDS)
    # ids: 0 padding, 1..V vocabulary, V+1 out of vocabulary.
    branches = _conv_codes(review, review_vocabulary, settings.kernel_sizes, settings, "review")
    review_code = layers.Concatenate(name=REVIEW_CODE_LAYER)(branches) if len(branches) > 1 else branches[0]
    (summary_code,) = _conv_codes(summary, summary_vocabulary, (2,), settings, "summary")
    hidden = layers.Dropout(settings.dropout, name="dropout")(layers.Concatenate()([review_code, summary_code]))
    hidden = layers.Dense(32, activation="relu", name="hidden")(hidden)
    deep_logit = layers.Dense(1, kernel_initializer="zeros", name="deep_logit")(hidden)
    wide_logits = []
    for text, ids in (("review", review), ("summary", summary)):
        ngrams = wide.get_layer(f"{text}_ngrams")
        ngrams.trainable = False
        wide_logits.append(ngrams(ids))
    logit = layers.Add(dtype="float32", name="logit")([deep_logit, *wide_logits])
    output = layers.Activation("sigmoid", dtype="float32", name="positive")(logit)
    return keras.Model({features.REVIEW_IDS: review, features.SUMMARY_IDS: summary}, output, name="sentiment_cnn")


def build_linear(review_vocabulary: int, summary_vocabulary: int, bigram_buckets: int, name: str) -> keras.Model:
    """A linear baseline: logistic regression on the review's and the summary's unigrams (and hashed bigrams).

    ``bigram_buckets`` 0 is the bag-of-words baseline, :data:`NGRAM_BUCKETS` the n-gram one.
    """
    review = keras.Input(shape=(None,), dtype="int64", name=features.REVIEW_IDS)
    summary = keras.Input(shape=(None,), dtype="int64", name=features.SUMMARY_IDS)
    texts = (("review", review_vocabulary, review), ("summary", summary_vocabulary, summary))
    logit = layers.Add()([NgramLogit(size, bigram_buckets, name=f"{text}_ngrams")(ids) for text, size, ids in
                          texts])  # fmt: skip
    output = layers.Activation("sigmoid", dtype="float32", name="positive")(logit)
    return keras.Model({features.REVIEW_IDS: review, features.SUMMARY_IDS: summary}, output, name=name)


def classification_metrics(
    labels: np.ndarray, probabilities: np.ndarray, threshold: float = 0.5
) -> dict[str, Any]:
    """Accuracy, balanced accuracy and ROC AUC of probabilities against 0/1 labels."""
    predicted = (probabilities >= threshold).astype(int)
    return {
        "accuracy": round(metrics.accuracy(labels, predicted), 4),
        "balanced_accuracy": round(metrics.balanced_accuracy(labels, predicted), 4),
        "auc": round(metrics.roc_auc(labels, probabilities), 4),
    }


def export_serving_model(model: keras.Model, transform_graph_dir: str | Path, out_dir: Path) -> None:
    """Write a SavedModel whose ``serving_default`` takes raw review and summary text.

    The TensorFlow port of the normalizer (:mod:`musicrec.data.text_graph`) runs first, then the transform graph
    and the CNN. Two more signatures measure skew: ``token_ids`` (raw text through that normalizer and the
    transform graph) and ``token_ids_of_normalized`` (text normalized elsewhere, through the transform graph).
    Written by Keras's export archive, which TF1-style loaders (TF Serving, ``saved_model_cli run``) read too.
    """
    import tensorflow_transform as tft

    normalizer = GraphNormalizer(read_stems(transform_graph_dir))
    transform = tft.TFTransformOutput(str(transform_graph_dir)).transform_features_layer()
    archive = keras.export.ExportArchive()
    for resource in (model, normalizer, transform):
        archive.track(resource)

    def ids(review_tokens: tf.Tensor, summary_tokens: tf.Tensor) -> dict[str, tf.Tensor]:
        transformed = transform({features.REVIEW_TOKENS: review_tokens, features.SUMMARY_TOKENS: summary_tokens})
        return {name: transformed[name] for name in TEXT_INPUTS}

    def serve(review_text: tf.Tensor, summary_text: tf.Tensor) -> dict[str, tf.Tensor]:
        probability = model(ids(normalizer(review_text), normalizer(summary_text)), training=False)
        return {SERVING_OUTPUT: tf.reshape(tf.cast(probability, tf.float32), [-1])}

    raw = [tf.TensorSpec([None], tf.string, name=name) for name in RAW_TEXT_INPUTS]
    normalized = [tf.TensorSpec([None], tf.string, name=name)
                  for name in (features.REVIEW_TOKENS, features.SUMMARY_TOKENS)]  # fmt: skip
    archive.add_endpoint("serving_default", serve, input_signature=raw)

    def token_ids(review_text: tf.Tensor, summary_text: tf.Tensor) -> dict[str, tf.Tensor]:
        return ids(normalizer(review_text), normalizer(summary_text))

    archive.add_endpoint("token_ids", token_ids, raw)
    archive.add_endpoint("token_ids_of_normalized", ids, normalized)
    archive.write_out(str(out_dir), verbose=False)


SCORING_BATCH = 4_096  # texts a serving call, so scoring a whole split stays in bounded memory


def score_texts(model_dir: str | Path, reviews: list[str], summaries: list[str] | None = None) -> np.ndarray:
    """Positive-sentiment probabilities of raw review texts (and summaries), exactly as a client gets them.

    The exported model normalizes the raw text itself; it is loaded once and called on batches of
    :data:`SCORING_BATCH` texts.

    Raises:
        ModelLoadError: ``model_dir`` holds no SavedModel with a ``serving_default`` signature of raw text.
    """
    (serve,) = bundles.load_signatures(model_dir, "serving_default")
    takes = sorted(serve.structured_input_signature[1])
    if takes != sorted(RAW_TEXT_INPUTS):
        raise ModelLoadError(f"{model_dir} is not a sentiment model: its serving_default takes "
                             f"{', '.join(takes)}, not {', '.join(RAW_TEXT_INPUTS)}")  # fmt: skip
    summaries = summaries if summaries is not None else [""] * len(reviews)
    scores = [np.zeros(0, np.float32)]
    for start in range(0, len(reviews), SCORING_BATCH):
        part = slice(start, start + SCORING_BATCH)
        result = serve(review_text=tf.constant([t or "" for t in reviews[part]]),
                       summary_text=tf.constant([t or "" for t in summaries[part]]))  # fmt: skip
        scores.append(result[SERVING_OUTPUT].numpy())
    return np.concatenate(scores)


def normalizer_skew(model_dir: str | Path, reviews: list[str | None], summaries: list[str | None]) -> float:
    """Share of reviews whose token ids differ between the served model's normalizer and the Python one.

    The same transform graph turns both normalizations into ids, so a token both sides leave out of the
    vocabulary counts as the same (out-of-vocabulary) id, as it does for the model.
    """
    served, reference = bundles.load_signatures(model_dir, "token_ids", "token_ids_of_normalized")
    differ = 0
    for start in range(0, len(reviews), SCORING_BATCH):
        review = [t or "" for t in reviews[start : start + SCORING_BATCH]]
        summary = [t or "" for t in summaries[start : start + SCORING_BATCH]]
        graph = served(review_text=tf.constant(review), summary_text=tf.constant(summary))
        python = reference(review_tokens=tf.constant([normalize_to_string(t) for t in review]),
                           summary_tokens=tf.constant([normalize_to_string(t) for t in summary]))  # fmt: skip
        same = np.ones(len(review), bool)
        for name in TEXT_INPUTS:
            same &= (graph[name].numpy() == python[name].numpy()).all(axis=1)
        differ += int((~same).sum())
    return differ / max(len(reviews), 1)


class Recipe(NamedTuple):
    """How a sentiment model trains: Adam's step, the most epochs, early stopping's patience on eval AUC."""

    learning_rate: float
    epochs: int
    patience: int

    @classmethod
    def of_cnn(cls, settings: CnnSettings) -> Recipe:
        """The CNN's recipe, from its settings."""
        return cls(settings.learning_rate, settings.epochs, settings.patience)


LINEAR_RECIPE = Recipe(NGRAM_LEARNING_RATE, NGRAM_EPOCHS, NGRAM_PATIENCE)  # both linear baselines


def _fit(
    model: keras.Model, train: tf.data.Dataset, eval_: tf.data.Dataset, recipe: Recipe,
    class_weight: dict[int, float], batch_size: int, steps: int | None,
) -> tuple[keras.callbacks.History, ThroughputLogger]:  # fmt: skip
    with model.distribute_strategy.scope():  # the optimizer's and the metric's variables follow the model's
        model.compile(optimizer=keras.optimizers.Adam(recipe.learning_rate), loss="binary_crossentropy",
                      metrics=[keras.metrics.AUC(name="auc")])  # fmt: skip
    throughput = ThroughputLogger(batch_size)
    stop = keras.callbacks.EarlyStopping(monitor="val_auc", mode="max", patience=recipe.patience,
                                         restore_best_weights=True)  # fmt: skip
    history = model.fit(
        train, validation_data=eval_, epochs=recipe.epochs, steps_per_epoch=steps, class_weight=class_weight,
        callbacks=[stop, throughput], verbose=0,
    )  # fmt: skip
    return history, throughput


def train_sentiment(
    transformed_dir: str | Path,
    transform_graph_dir: str | Path,
    model_dir: str | Path,
    report_path: str | Path,
    settings: CnnSettings | None = None,
    importance_path: str | Path | None = None,
) -> SentimentReport:
    """Train the CNN and both baselines; export the CNN; return (and write) the report.

    Args:
        transformed_dir: preprocess output (train/, eval/, test/ TFRecords).
        transform_graph_dir: the tf.Transform output.
        model_dir: receives the serving SavedModel.
        report_path: JSON with eval and test metrics of the CNN and the baselines, curves, ROC, confusion matrix.
        settings: hyperparameters. Under a ``TF_CONFIG`` of several workers (a TFJob), every worker runs this on
            its share of each batch of ``batch_size`` rows, and only the chief writes the outputs.
        importance_path: an HTML page with the most significant tokens (occlusion on eval), if given.

    Raises:
        TrainingError: missing inputs, a train split with one class, or a batch that does not split evenly over
            the workers.
    """
    settings = settings or CnnSettings()
    started = time.monotonic()
    strategy = distribution_strategy()  # before any other TensorFlow op
    check_batch_split(strategy, settings.batch_size)
    seed_everything(settings.seed)
    spec = transformed_feature_spec(transform_graph_dir)
    files = {split: split_files(transformed_dir, split) for split in schema.SPLITS}
    sizes = [vocabulary_size(transform_graph_dir, name) for name in (features.REVIEW_VOCABULARY,
                                                                       features.SUMMARY_VOCABULARY)]  # fmt: skip
    train = columns_of(files[schema.TRAIN], spec, features.SENTIMENT_LABEL, features.REVIEW_LENGTH,
                       features.SUMMARY_LENGTH)  # fmt: skip
    labels = {split: labels_of(files[split], spec, features.SENTIMENT_LABEL)
              for split in (schema.EVAL, schema.TEST)}  # fmt: skip
    labels[schema.TRAIN] = train[features.SENTIMENT_LABEL]
    class_weight = balanced_class_weights(labels[schema.TRAIN])
    has_text = train[features.REVIEW_LENGTH] + train[features.SUMMARY_LENGTH] > 0
    text_share = float(np.mean(has_text)) if len(has_text) else 0.0
    if text_share == 0.0:
        # Rating-only data: nothing to learn from, so learn the train prior (balanced weights would push every
        # prediction to the minority class), and evaluate does not gate the blessing on sentiment.
        logger.warning("train_cnn: no train review has any text; the sentiment model is the train prior (%.3f "
                       "positive)", float(labels[schema.TRAIN].mean()))  # fmt: skip
        class_weight = {0: 1.0, 1: 1.0}

    steps = steps_per_epoch(len(labels[schema.TRAIN]), settings.batch_size, settings.epoch_examples)

    def data(split: str, shuffle: bool = False) -> tf.data.Dataset:
        return make_dataset(files[split], spec, TEXT_INPUTS, features.SENTIMENT_LABEL, settings.batch_size,
                            settings.seed if shuffle else None, trim_padding=True,
                            repeat=shuffle and steps is not None)  # fmt: skip

    logger.info("train_cnn: %s train rows on %s (%d replicas), class weights %s", f"{len(labels[schema.TRAIN]):,}",
                type(strategy).__name__, strategy.num_replicas_in_sync, class_weight)  # fmt: skip
    with strategy.scope():
        linear = {name: build_linear(*sizes, buckets, name)
                  for name, buckets in (("bow_linear", 0), ("ngram_linear", NGRAM_BUCKETS))}  # fmt: skip
    for name, model in linear.items():
        logger.info("train_cnn: %s baseline", name)
        _fit(model, data(schema.TRAIN, True), data(schema.EVAL), LINEAR_RECIPE, class_weight, settings.batch_size,
             steps)  # fmt: skip
    with strategy.scope():
        cnn = build_cnn(*sizes, settings, wide=linear["ngram_linear"])
    logger.info("train_cnn: the CNN over the n-gram model")
    history, throughput = _fit(cnn, data(schema.TRAIN, True), data(schema.EVAL), Recipe.of_cnn(settings),
                               class_weight, settings.batch_size, steps)  # fmt: skip

    majority = int(np.bincount(labels[schema.TRAIN].astype(int)).argmax())
    scoring = {name: on_this_worker(model) for name, model in {**linear, "cnn": cnn}.items()}
    report: dict[str, Any] = {"settings": settings.to_dict(), "train_text_share": round(text_share, 4),
                              "replicas": strategy.num_replicas_in_sync}  # fmt: skip
    for split in (schema.EVAL, schema.TEST):
        truth = labels[split]
        cnn_probabilities = scoring["cnn"].predict(data(split), verbose=0).reshape(-1)
        report[split] = classification_metrics(truth, cnn_probabilities)
        report[split]["confusion_matrix"] = metrics.confusion_matrix(truth, cnn_probabilities >= 0.5)
        fpr, tpr, thresholds = metrics.roc_curve(truth, cnn_probabilities)
        report[split]["roc"] = {"fpr": fpr.round(4).tolist(), "tpr": tpr.round(4).tolist(),
                                "thresholds": thresholds.round(4).tolist()}  # fmt: skip
        report.setdefault("baselines", {})[split] = {
            "majority": {"accuracy": round(metrics.accuracy(truth, np.full(len(truth), majority)), 4),
                         "balanced_accuracy": 0.5, "auc": 0.5},
        }  # fmt: skip
        for name in linear:
            probabilities = scoring[name].predict(data(split), verbose=0).reshape(-1)
            report["baselines"][split][name] = classification_metrics(truth, probabilities)
    report["history"] = curves(history)
    report["train_examples_per_second"] = round(float(np.mean(throughput.rates)), 1) if throughput.rates else 0.0
    sample, _ = next(iter(make_dataset(files[schema.EVAL], spec, TEXT_INPUTS, features.SENTIMENT_LABEL, 1_000)))
    vocabularies = {
        features.REVIEW_IDS: vocabulary(transform_graph_dir, features.REVIEW_VOCABULARY),
        features.SUMMARY_IDS: vocabulary(transform_graph_dir, features.SUMMARY_VOCABULARY),
    }
    report["token_importance"] = token_importance(scoring["cnn"], {k: v.numpy() for k, v in sample.items()},
                                                  vocabularies)  # fmt: skip
    report["class_weight"] = {str(label): weight for label, weight in class_weight.items()}
    report["seconds"] = round(time.monotonic() - started, 3)

    with worker_outputs(strategy) as output, staging_directory(output(model_dir)) as staging:
        export_serving_model(cnn, transform_graph_dir, staging / "model")
        bundles.save_sentiment_keras(cnn, staging / "model")
        (staging / "report.json").write_text(json.dumps(report, indent=2) + "\n")
        (staging / "importance.html").write_text(token_importance_html(report["token_importance"]))
        publish(staging / "model", output(model_dir))
        publish(staging / "report.json", output(report_path))
        if importance_path is not None:
            publish(staging / "importance.html", output(importance_path))
    logger.info("train_cnn: eval %s, test %s, baselines %s", report[schema.EVAL], report[schema.TEST],
                report["baselines"][schema.TEST])  # fmt: skip
    return report


def ui_metrics(report: SentimentReport) -> dict[str, float]:
    """The eval scores of the CNN and its baselines that the Kubeflow UI shows for train_cnn."""
    evaluation, baselines = report[schema.EVAL], report["baselines"][schema.EVAL]
    values = {}
    for name in ("accuracy", "balanced_accuracy", "auc"):
        values[f"eval_{name}"] = evaluation[name]
        for baseline in ("bow_linear", "ngram_linear"):
            values[f"eval_{baseline}_{name}"] = baselines[baseline][name]
    values["eval_majority_accuracy"] = baselines["majority"]["accuracy"]
    return values


def artifact_metadata(report: SentimentReport) -> dict[str, dict[str, Any]]:
    """What the Kubeflow UI shows beside each train_cnn artifact, keyed by output name."""
    return {
        "model": {"framework": "tensorflow", "signature": "serving_default",
                  "eval_auc": report[schema.EVAL]["auc"], **report["settings"]},
        "report": {"seconds": report["seconds"], "examples_per_second": report["train_examples_per_second"]},
    }  # fmt: skip
