"""train_autoencoder: a stacked autoencoder, trained with SGD, that compresses what is known about a review.

Its input ("representation") is the sentiment CNN's review code (the pooled convolution features, frozen)
next to the review's item metadata features; the bottleneck code is what the rating model aggregates over a
user's and an item's history. The baseline is PCA with the same number of dimensions, fit on train.
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

from musicrec import features, schema
from musicrec.errors import TrainingError
from musicrec.io.artifacts import publish, staging_directory
from musicrec.models import bundles
from musicrec.models.sentiment import REVIEW_CODE_LAYER, TEXT_INPUTS
from musicrec.models.training import (
    ThroughputLogger,
    curves,
    make_dataset,
    seed_everything,
    split_files,
    steps_per_epoch,
    transformed_feature_spec,
)
from musicrec.plots import figure_html, new_figure
from musicrec.reports import AutoencoderReport
from musicrec.settings import AutoencoderSettings

logger = logging.getLogger(__name__)

METADATA_INPUTS = (
    features.PRICE_Z, features.PRICE_MISSING, features.SALES_RANK_Z, features.SALES_RANK_MISSING,
    features.HELPFUL_VOTES_Z, features.VERIFIED_FLAG,
)  # fmt: skip
_PROJECTION_POINTS = 5_000


def review_table(
    cnn: keras.Model, files: list[str], spec: dict[str, Any], batch_size: int = 2_048, text_tokens: int = 0
) -> dict[str, Any]:
    """Everything the autoencoder and the rating model need of each review in ``files``, in one pass.

    Returns NumPy arrays: ``representation`` (CNN review code + item metadata), ``sentiment`` (the CNN's
    positive probability), ``rating``, ``has_text`` (any review or summary token), and the user and item indices;
    with ``text_tokens``, also ``review_tokens``: the review's token ids among the ``text_tokens`` most frequent
    (the rest read as padding, 0), 16-bit when they fit (the full category's reviews took 3.2 GB as 64-bit ids).
    """
    outputs = [cnn.get_layer(REVIEW_CODE_LAYER).output, cnn.output]
    code_model = keras.Model(cnn.inputs, outputs)
    # One traced graph for every batch (its length varies with trimming): 1.7x the rows/s of eager calls.
    encode = tf.function(lambda inputs: code_model(inputs, training=False), reduce_retracing=True)
    ids = (features.USER_INDEX, features.ITEM_INDEX)
    dataset = make_dataset(files, spec, (*TEXT_INPUTS, *METADATA_INPUTS, *ids), features.RATING_LABEL, batch_size,
                           trim_padding=True)  # fmt: skip
    columns: dict[str, list] = {"representation": [], "sentiment": [], "rating": [], "has_text": [],
                                **{name: [] for name in ids}}  # fmt: skip
    if text_tokens:
        columns["review_tokens"] = []
        width, dtype = spec[features.REVIEW_IDS].shape[0], np.uint16 if text_tokens < 2**16 else np.int64
    for inputs, rating in dataset:
        if text_tokens:  # the batch's sequences are trimmed: pad them back to one width
            ids_read = inputs[features.REVIEW_IDS].numpy()
            kept = np.zeros((len(ids_read), width), dtype)
            kept[:, : ids_read.shape[1]] = np.where(ids_read <= text_tokens, ids_read, 0)
            columns["review_tokens"].append(kept)
        columns["has_text"].append(np.any([(inputs[name].numpy() != features.PADDING_ID).any(axis=1)
                                           for name in TEXT_INPUTS], axis=0))  # fmt: skip
        codes, positive = encode({name: inputs[name] for name in TEXT_INPUTS})
        metadata = tf.stack([tf.cast(inputs[name], tf.float32) for name in METADATA_INPUTS], axis=1)
        columns["representation"].append(np.concatenate([np.asarray(codes, np.float32), metadata.numpy()], axis=1))
        columns["sentiment"].append(np.asarray(positive, np.float32).reshape(-1))
        columns["rating"].append(rating.numpy())
        for name in ids:
            columns[name].append(inputs[name].numpy())
    return {name: np.concatenate(values) for name, values in columns.items()}


def build_autoencoder(input_dim: int, settings: AutoencoderSettings) -> tuple[keras.Model, keras.Model]:
    """A stacked autoencoder (hidden layers mirrored around a linear bottleneck) and its encoder half."""
    inputs = keras.Input(shape=(input_dim,), name="representation")
    hidden = inputs
    for i, units in enumerate(settings.hidden_units):
        hidden = layers.Dense(units, activation="relu", name=f"encode_{i}")(hidden)
    code = layers.Dense(settings.bottleneck, name="bottleneck")(hidden)
    decoded = code
    for i, units in enumerate(reversed(settings.hidden_units)):
        decoded = layers.Dense(units, activation="relu", name=f"decode_{i}")(decoded)
    output = layers.Dense(input_dim, dtype="float32", name="reconstruction")(decoded)
    return keras.Model(inputs, output, name="autoencoder"), keras.Model(inputs, code, name="encoder")


def pca_reconstruction_mse(
    train: np.ndarray, others: dict[str, np.ndarray], dimensions: int, measured: np.ndarray | None = None
) -> dict[str, float]:
    """Mean squared reconstruction error of PCA with ``dimensions`` components fit on (centred) ``train``.

    ``measured`` (a boolean mask of columns) limits the error to those columns, as the autoencoder's is.
    """
    mean = train.mean(axis=0)
    # The principal axes are the eigenvectors of the small (columns x columns) scatter matrix: an SVD of the
    # tall train matrix itself took 70 s at the full category.
    centred_train = (train - mean).astype(np.float64)
    values, vectors = np.linalg.eigh(centred_train.T @ centred_train)
    basis = vectors[:, np.argsort(-values)[:dimensions]].T
    measured = np.ones(train.shape[1], bool) if measured is None else measured
    errors = {}
    for split, data in others.items():
        centred = data - mean
        errors[split] = mse_over(centred - centred @ basis.T @ basis, measured)
    return errors


def mse_over(residual: np.ndarray, columns: np.ndarray) -> float:
    """Mean squared ``residual`` over the ``columns`` (a boolean mask) only; 0.0 when none is selected."""
    return float(np.mean(residual[:, columns] ** 2)) if columns.any() else 0.0


def _degenerate_input_note(text_share: float, varying_inputs: int) -> str:
    """What a reader must know when the inputs cannot carry a result ('' when they can)."""
    if varying_inputs == 0:
        return ("no input varies in train (no review text, no varying metadata): there is nothing to compress, "
                "and both reconstruction errors are 0 by construction, not a result")  # fmt: skip
    if text_share == 0.0:
        return "no review or summary text in train: the review codes are constant; only metadata is compressed"
    return ""


def projection_html(codes: np.ndarray, ratings: np.ndarray, seed: int) -> str:
    """An HTML page with the 2-D PCA projection of bottleneck codes, one colour per star rating."""
    rng = np.random.default_rng(seed)
    pick = rng.choice(len(codes), size=min(_PROJECTION_POINTS, len(codes)), replace=False)
    sample, stars = codes[pick], ratings[pick]
    centred = sample - sample.mean(axis=0)
    _, _, components = np.linalg.svd(centred, full_matrices=False)
    points = centred @ components[:2].T
    figure, axis = new_figure()
    for rating in range(1, 6):
        mask = stars == rating
        axis.scatter(points[mask, 0], points[mask, 1], s=5, alpha=0.5, label=f"{rating} stars")
    axis.set(title="Autoencoder codes of test reviews (PCA to 2-D)", xlabel="component 1", ylabel="component 2")
    axis.legend(markerscale=3)
    return figure_html(figure, "Autoencoder projection")


def train_autoencoder(
    transformed_dir: str | Path,
    transform_graph_dir: str | Path,
    cnn_model_dir: str | Path,
    encoder_dir: str | Path,
    report_path: str | Path,
    projection_path: str | Path,
    settings: AutoencoderSettings | None = None,
) -> AutoencoderReport:
    """Train the stacked autoencoder with SGD beside PCA; export the encoder; return (and write) the report.

    Args:
        transformed_dir: preprocess output (train/, eval/, test/ TFRecords).
        transform_graph_dir: the tf.Transform output (for the feature spec).
        cnn_model_dir: the train_cnn model bundle (its Keras CNN gives the review code).
        encoder_dir: receives the encoder bundle (the Keras encoder and the input normalization).
        report_path: JSON with reconstruction errors of the autoencoder and PCA on eval and test.
        projection_path: an HTML page with the 2-D projection picture coloured by rating.
        settings: hyperparameters.
    """
    settings = settings or AutoencoderSettings()
    started = time.monotonic()
    seed_everything(settings.seed)
    spec = transformed_feature_spec(transform_graph_dir)
    cnn = bundles.load_sentiment_keras(cnn_model_dir)
    data = {split: review_table(cnn, split_files(transformed_dir, split), spec) for split in schema.SPLITS}
    train_x = data[schema.TRAIN]["representation"]
    spread = train_x.std(axis=0)
    mean, std = train_x.mean(axis=0), spread + 1e-6  # train statistics only
    scaled = {split: bundles.standardize(table["representation"], mean, std) for split, table in data.items()}
    # A column constant in train (every review code without text, metadata nobody has) is reconstructed
    # perfectly by any model: the errors are measured on the columns that vary, so it cannot pass for a result.
    varying = spread > 1e-6
    text_share = float(np.mean(data[schema.TRAIN]["has_text"])) if len(train_x) else 0.0
    note = _degenerate_input_note(text_share, int(varying.sum()))
    if note:
        logger.warning("train_autoencoder: %s", note)
    autoencoder, encoder = build_autoencoder(train_x.shape[1], settings)
    autoencoder.compile(
        optimizer=keras.optimizers.SGD(settings.learning_rate, momentum=settings.momentum), loss="mse"
    )
    throughput = ThroughputLogger(settings.batch_size)
    stop = keras.callbacks.EarlyStopping(monitor="val_loss", patience=settings.patience, restore_best_weights=True)
    logger.info("train_autoencoder: %s train representations of width %d", f"{len(train_x):,}", train_x.shape[1])
    history = autoencoder.fit(
        scaled[schema.TRAIN], scaled[schema.TRAIN], validation_data=(scaled[schema.EVAL], scaled[schema.EVAL]),
        batch_size=settings.batch_size, epochs=settings.epochs, shuffle=True,
        callbacks=[keras.callbacks.TerminateOnNaN(), stop, throughput],
        steps_per_epoch=steps_per_epoch(len(train_x), settings.batch_size, settings.epoch_examples), verbose=0,
    )  # fmt: skip
    if not np.isfinite(history.history["loss"]).all():
        raise TrainingError(f"autoencoder training diverged (loss {history.history['loss'][-1]}) at learning rate "
                            f"{settings.learning_rate}: lower ae_learning_rate")  # fmt: skip
    pca = pca_reconstruction_mse(
        scaled[schema.TRAIN], {s: scaled[s] for s in (schema.EVAL, schema.TEST)}, settings.bottleneck, varying
    )
    report: dict[str, Any] = {"settings": settings.to_dict()}
    for split in (schema.EVAL, schema.TEST):
        reconstruction = autoencoder.predict(scaled[split], batch_size=4_096, verbose=0)
        report[split] = {"reconstruction_mse": round(mse_over(reconstruction - scaled[split], varying), 5)}
    report["baselines"] = {split: {"pca": {"reconstruction_mse": round(pca[split], 5)}} for split in pca}
    report["input_width"] = int(train_x.shape[1])
    report["varying_inputs"] = int(varying.sum())
    report["train_text_share"] = round(text_share, 4)
    if note:
        report["note"] = note
    report["history"] = curves(history)
    report["seconds"] = round(time.monotonic() - started, 3)
    test_codes = encoder.predict(scaled[schema.TEST], batch_size=4_096, verbose=0)

    target = Path(encoder_dir)
    with staging_directory(target) as staging:
        (staging / "encoder").mkdir()
        bundles.save_encoder(staging / "encoder", encoder, mean, std, METADATA_INPUTS)
        (staging / "report.json").write_text(json.dumps(report, indent=2) + "\n")
        (staging / "projection.html").write_text(
            projection_html(test_codes, data[schema.TEST]["rating"], settings.seed)
        )
        publish(staging / "encoder", target)
        publish(staging / "report.json", Path(report_path))
        publish(staging / "projection.html", Path(projection_path))
    logger.info("train_autoencoder: test %s, PCA %s", report[schema.TEST], report["baselines"][schema.TEST])
    return report


def ui_metrics(report: AutoencoderReport) -> dict[str, float]:
    """The eval reconstruction errors of the autoencoder and PCA that the Kubeflow UI shows."""
    return {
        "eval_reconstruction_mse": report[schema.EVAL]["reconstruction_mse"],
        "eval_pca_reconstruction_mse": report["baselines"][schema.EVAL]["pca"]["reconstruction_mse"],
    }


def artifact_metadata(report: AutoencoderReport) -> dict[str, dict[str, Any]]:
    """What the Kubeflow UI shows beside each train_autoencoder artifact, keyed by output name."""
    return {"encoder": {"framework": "keras", "input_width": report["input_width"], **report["settings"]},
            "report": {"seconds": report["seconds"]}}  # fmt: skip
