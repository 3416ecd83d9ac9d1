"""train_cnn: a text CNN for review sentiment, beside the majority-class and bag-of-words linear baselines.

The model reads the transformed review and summary token ids; the exported SavedModel carries the TensorFlow
port of the normalizer (:mod:`musicrec.data.text_graph`) and the tf.Transform graph, so it serves raw review
text with nothing in front of it (TF Serving, KServe's TensorFlow runtime, :func:`score_texts`).
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

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
from musicrec.models.training import (
    ThroughputLogger,
    balanced_class_weights,
    columns_of,
    curves,
    distribution_strategy,
    labels_of,
    make_dataset,
    seed_everything,
    split_files,
    transformed_feature_spec,
    vocabulary,
    vocabulary_size,
)
from musicrec.plots import figure_html, new_figure
from musicrec.reports import SentimentReport
from musicrec.settings import CnnSettings

logger = logging.getLogger(__name__)

TEXT_INPUTS = (features.REVIEW_IDS, features.SUMMARY_IDS)
REVIEW_CODE_LAYER = "review_code"  # the pooled review representation the autoencoder compresses
SERVING_OUTPUT = "positive_probability"
RAW_TEXT_INPUTS = ("review_text", "summary_text")  # what a client sends: the review as written


def build_cnn(review_vocabulary: int, summary_vocabulary: int, settings: CnnSettings) -> keras.Model:
    """The sentiment CNN: parallel Conv1D branches over review tokens and one over the summary.

    Each branch is max-over-time pooled; dropout and a small dense layer lead to a sigmoid output (float32
    even under mixed precision).
    """
    review = keras.Input(shape=(None,), dtype="int64", name=features.REVIEW_IDS)
    summary = keras.Input(shape=(None,), dtype="int64", name=features.SUMMARY_IDS)
    # ids: 0 padding, 1..V vocabulary, V+1 out of vocabulary.
    review_embedded = layers.Embedding(review_vocabulary + 2, settings.embedding_dim, name="review_embedding")(
        review
    )
    branches = [
        layers.GlobalMaxPooling1D(name=f"review_pool_{k}")(
            layers.Conv1D(settings.filters, k, padding="same", activation="relu", name=f"review_conv_{k}")(
                review_embedded
            )
        )
        for k in settings.kernel_sizes
    ]
    review_code = layers.Concatenate(name=REVIEW_CODE_LAYER)(branches) if len(branches) > 1 else branches[0]
    summary_embedded = layers.Embedding(summary_vocabulary + 2, settings.embedding_dim, name="summary_embedding")(
        summary
    )
    summary_code = layers.GlobalMaxPooling1D(name="summary_pool")(
        layers.Conv1D(settings.filters, 2, padding="same", activation="relu", name="summary_conv")(
            summary_embedded
        )
    )
    hidden = layers.Dropout(settings.dropout, name="dropout")(layers.Concatenate()([review_code, summary_code]))
    hidden = layers.Dense(32, activation="relu", name="hidden")(hidden)
    output = layers.Dense(1, activation="sigmoid", dtype="float32", name="positive")(hidden)
    return keras.Model({features.REVIEW_IDS: review, features.SUMMARY_IDS: summary}, output, name="sentiment_cnn")


def build_bag_of_words(review_vocabulary: int, summary_vocabulary: int) -> keras.Model:
    """The linear baseline: logistic regression on token counts of review and summary (same tokens as the CNN)."""
    review = keras.Input(shape=(None,), dtype="int64", name=features.REVIEW_IDS)
    summary = keras.Input(shape=(None,), dtype="int64", name=features.SUMMARY_IDS)
    counts = layers.Concatenate()(
        [
            layers.CategoryEncoding(review_vocabulary + 2, output_mode="count")(review),
            layers.CategoryEncoding(summary_vocabulary + 2, output_mode="count")(summary),
        ]
    )
    output = layers.Dense(1, activation="sigmoid", dtype="float32", name="positive")(counts)
    return keras.Model({features.REVIEW_IDS: review, features.SUMMARY_IDS: summary}, output, name="bag_of_words")


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


def token_importance(
    model: keras.Model, inputs: dict[str, np.ndarray], vocabularies: dict[str, list[str]], k: int = 15,
    min_count: int = 5,
) -> dict[str, dict[str, list]]:  # fmt: skip
    """The most significant tokens by occlusion, measured on held-out reviews.

    Each token occurrence is replaced by padding in turn; its importance is the drop in the predicted positive
    probability, averaged over a token's occurrences (at least ``min_count``). Positive means the token pushed
    towards a positive review, negative towards a negative one.

    Args:
        model: the sentiment CNN.
        inputs: a sample of transformed eval rows (review and summary ids).
        vocabularies: the review and summary vocabularies by feature name (id i is entry i-1).
        k: tokens listed each way.
        min_count: the fewest occurrences for a token to be listed.
    """
    base = model.predict(inputs, batch_size=4_096, verbose=0).reshape(-1)
    result = {}
    for feature, tokens in vocabularies.items():
        ids = inputs[feature]
        totals = np.zeros(len(tokens) + 2)
        counts = np.zeros(len(tokens) + 2)
        for position in range(ids.shape[1]):
            rows = np.flatnonzero(ids[:, position] != features.PADDING_ID)
            if rows.size == 0:
                continue
            occluded = {name: values[rows].copy() for name, values in inputs.items()}
            occluded[feature][:, position] = features.PADDING_ID
            drop = base[rows] - model.predict(occluded, batch_size=4_096, verbose=0).reshape(-1)
            np.add.at(totals, ids[rows, position], drop)
            np.add.at(counts, ids[rows, position], 1)
        names = ["<pad>", *tokens, "<oov>"]
        mean = np.where(counts >= min_count, totals / np.maximum(counts, 1), 0.0)
        order = np.argsort(-mean, kind="stable")
        result[feature] = {
            "positive": [[names[i], round(float(mean[i]), 4)] for i in order[:k] if mean[i] > 0],
            "negative": [[names[i], round(float(mean[i]), 4)] for i in order[::-1][:k] if mean[i] < 0],
        }
    return result


def token_importance_html(importance: dict[str, dict[str, list]]) -> str:
    """Bar charts of the most significant review and summary tokens (occlusion on eval), as a page."""
    return figure_html(token_importance_figure(importance), "Most significant tokens (occlusion on eval reviews)")


def token_importance_figure(importance: dict[str, dict[str, list]]) -> Any:
    """Bar charts of the most significant review and summary tokens (a matplotlib figure)."""
    figure, axes = new_figure(columns=len(importance), height=6.0)
    for axis, (feature, sides) in zip(np.atleast_1d(axes), importance.items(), strict=True):
        entries = sides["negative"][::-1] + sides["positive"][::-1]
        axis.barh([token for token, _ in entries], [score for _, score in entries],
                  color=["#c0392b" if score < 0 else "#2e86c1" for _, score in entries])  # fmt: skip
        axis.set(title=feature.replace("_", " "), xlabel="drop in P(positive) when the token is removed")
    return figure


def _predict(model: keras.Model, dataset: tf.data.Dataset) -> np.ndarray:
    return model.predict(dataset, verbose=0).reshape(-1)


def _fit(
    model: keras.Model,
    train: tf.data.Dataset,
    eval_: tf.data.Dataset,
    settings: CnnSettings,
    class_weight: dict[int, float],
    epochs: int,
) -> tuple[keras.callbacks.History, ThroughputLogger]:
    model.compile(
        optimizer=keras.optimizers.Adam(settings.learning_rate),
        loss="binary_crossentropy",
        metrics=[keras.metrics.AUC(name="auc")],
    )
    throughput = ThroughputLogger(settings.batch_size)
    stop = keras.callbacks.EarlyStopping(monitor="val_auc", mode="max", patience=settings.patience,
                                         restore_best_weights=True)  # fmt: skip
    history = model.fit(
        train, validation_data=eval_, epochs=epochs, class_weight=class_weight, callbacks=[stop, throughput],
        verbose=0,
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
        settings: hyperparameters.
        importance_path: an HTML page with the most significant tokens (occlusion on eval), if given.

    Raises:
        TrainingError: missing inputs or a train split with one class.
    """
    settings = settings or CnnSettings()
    started = time.monotonic()
    seed_everything(settings.seed)
    spec = transformed_feature_spec(transform_graph_dir)
    files = {split: split_files(transformed_dir, split) for split in schema.SPLITS}
    sizes = [
        vocabulary_size(transform_graph_dir, name)
        for name in (features.REVIEW_VOCABULARY, features.SUMMARY_VOCABULARY)
    ]
    train = columns_of(files[schema.TRAIN], spec, features.SENTIMENT_LABEL, features.REVIEW_LENGTH,
                       features.SUMMARY_LENGTH)  # fmt: skip
    labels = {
        split: labels_of(files[split], spec, features.SENTIMENT_LABEL) for split in (schema.EVAL, schema.TEST)
    }
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

    def data(split: str, shuffle: bool = False) -> tf.data.Dataset:
        seed = settings.seed if shuffle else None
        return make_dataset(files[split], spec, TEXT_INPUTS, features.SENTIMENT_LABEL, settings.batch_size, seed)

    strategy = distribution_strategy()
    with strategy.scope():
        cnn = build_cnn(*sizes, settings)
        bag = build_bag_of_words(*sizes)
    logger.info("train_cnn: %s train rows on %s, class weights %s", f"{len(labels[schema.TRAIN]):,}",
                type(strategy).__name__, class_weight)  # fmt: skip
    history, throughput = _fit(cnn, data(schema.TRAIN, True), data(schema.EVAL), settings, class_weight,
                               settings.epochs)  # fmt: skip
    logger.info("bag-of-words baseline")
    _fit(bag, data(schema.TRAIN, True), data(schema.EVAL), settings, class_weight, settings.epochs)

    majority = int(np.bincount(labels[schema.TRAIN].astype(int)).argmax())
    report: dict[str, Any] = {"settings": settings.to_dict(), "train_text_share": round(text_share, 4)}
    for split in (schema.EVAL, schema.TEST):
        truth = labels[split]
        cnn_probabilities = _predict(cnn, data(split))
        bag_probabilities = _predict(bag, data(split))
        report[split] = classification_metrics(truth, cnn_probabilities)
        report[split]["confusion_matrix"] = metrics.confusion_matrix(truth, cnn_probabilities >= 0.5)
        fpr, tpr, thresholds = metrics.roc_curve(truth, cnn_probabilities)
        report[split]["roc"] = {"fpr": fpr.round(4).tolist(), "tpr": tpr.round(4).tolist(),
                                "thresholds": thresholds.round(4).tolist()}  # fmt: skip
        report.setdefault("baselines", {})[split] = {
            "majority": {"accuracy": round(metrics.accuracy(truth, np.full(len(truth), majority)), 4),
                         "balanced_accuracy": 0.5, "auc": 0.5},
            "bow_linear": classification_metrics(truth, bag_probabilities),
        }  # fmt: skip
    report["history"] = curves(history)
    report["train_examples_per_second"] = round(float(np.mean(throughput.rates)), 1) if throughput.rates else 0.0
    sample, _ = next(iter(make_dataset(files[schema.EVAL], spec, TEXT_INPUTS, features.SENTIMENT_LABEL, 1_000)))
    vocabularies = {
        features.REVIEW_IDS: vocabulary(transform_graph_dir, features.REVIEW_VOCABULARY),
        features.SUMMARY_IDS: vocabulary(transform_graph_dir, features.SUMMARY_VOCABULARY),
    }
    report["token_importance"] = token_importance(cnn, {k: v.numpy() for k, v in sample.items()}, vocabularies)
    report["class_weight"] = {str(label): weight for label, weight in class_weight.items()}
    report["seconds"] = round(time.monotonic() - started, 3)

    target = Path(model_dir)
    with staging_directory(target) as staging:
        export_serving_model(cnn, transform_graph_dir, staging / "model")
        bundles.save_sentiment_keras(cnn, staging / "model")
        (staging / "report.json").write_text(json.dumps(report, indent=2) + "\n")
        (staging / "importance.html").write_text(token_importance_html(report["token_importance"]))
        publish(staging / "model", target)
        publish(staging / "report.json", Path(report_path))
        if importance_path is not None:
            publish(staging / "importance.html", Path(importance_path))
    logger.info("train_cnn: eval %s, test %s, baselines %s", report[schema.EVAL], report[schema.TEST],
                report["baselines"][schema.TEST])  # fmt: skip
    return report


def ui_metrics(report: SentimentReport) -> dict[str, float]:
    """The eval scores of the CNN and its baselines that the Kubeflow UI shows for train_cnn."""
    evaluation, baselines = report[schema.EVAL], report["baselines"][schema.EVAL]
    values = {}
    for name in ("accuracy", "balanced_accuracy", "auc"):
        values[f"eval_{name}"] = evaluation[name]
        values[f"eval_bow_linear_{name}"] = baselines["bow_linear"][name]
    values["eval_majority_accuracy"] = baselines["majority"]["accuracy"]
    return values


def artifact_metadata(report: SentimentReport) -> dict[str, dict[str, Any]]:
    """What the Kubeflow UI shows beside each train_cnn artifact, keyed by output name."""
    return {
        "model": {"framework": "tensorflow", "signature": "serving_default",
                  "eval_auc": report[schema.EVAL]["auc"], **report["settings"]},
        "report": {"seconds": report["seconds"], "examples_per_second": report["train_examples_per_second"]},
    }  # fmt: skip
