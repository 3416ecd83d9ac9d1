"""train_dnn: a regularized DNN that predicts ratings, and what a user will review, from train history.

Inputs for a (user, item) pair: the user and item id embeddings, train-history aggregates of each side (mean
review code, mean CNN sentiment, damped mean rating, review count), the item's metadata, how the two histories
match (product and cosine of the mean codes), the user's taste for the item (their train reviews' codes,
weighted by how far above its item's bias each was rated, against the item's code), and the damped user + item
bias prediction. A review's code is its autoencoder code (sentiment) beside its text code (the words that
follow the item, such as its genre).
Never the review being predicted: eval and test pairs see train aggregates only, and a train pair's aggregates
(and biases) leave its own review out.

Two heads share those inputs:

* ``rating``: the damped bias prediction plus a learned correction (MSE), clipped to 1..5.
* ``interaction``: the probability that the user reviews the item at all (binary cross-entropy on train
  reviews against seeded, sampled items the user did not review): one of the re-ranker's scores.

Recommendations and HR@10 / NDCG@10 come from :mod:`~musicrec.models.recommender.rerank`: a two-tower model
(:mod:`~musicrec.models.recommender.retrieval`) retrieves candidates by dot product, and a blend of its score,
EASE^R's and the interaction head's re-ranks them.

Beside it: the global mean, the damped user + item bias (lambda = 10) and biased MF baselines for RMSE and MAE,
and MostPop, item-kNN and EASE^R for HR@10 / NDCG@10 on ranking every item a test user has not reviewed in train.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

import keras
import numpy as np

from musicrec import features, metrics, schema
from musicrec.io.artifacts import publish, staging_directory
from musicrec.models import bundles
from musicrec.models.autoencoder import METADATA_INPUTS, review_table
from musicrec.models.recommender.classic import biased_mf
from musicrec.models.recommender.embeddings import LazyAdam
from musicrec.models.recommender.history import BIAS_INPUT, HISTORY_INPUT, History, pair_inputs
from musicrec.models.recommender.negatives import PairBatches, Pairs, implicit_pairs
from musicrec.models.recommender.network import build_rating_model
from musicrec.models.recommender.ranking import evaluate_ranking
from musicrec.models.recommender.rerank import Ranker
from musicrec.models.recommender.retrieval import fit_two_tower
from musicrec.models.recommender.serving import export_serving_model
from musicrec.models.recommender.text_codes import fit_text_projection, text_codes
from musicrec.models.training import (
    ThroughputLogger,
    curves,
    seed_everything,
    split_files,
    steps_per_epoch,
    transformed_feature_spec,
)
from musicrec.reports import RatingReport
from musicrec.settings import RatingSettings

logger = logging.getLogger(__name__)


ITEM_METADATA = (features.PRICE_Z, features.PRICE_MISSING, features.SALES_RANK_Z, features.SALES_RANK_MISSING)


def _item_metadata(table: dict[str, np.ndarray]) -> np.ndarray:
    positions = [METADATA_INPUTS.index(name) for name in ITEM_METADATA]
    width = table["representation"].shape[1] - len(METADATA_INPUTS)
    return table["representation"][:, [width + p for p in positions]]


def _by_user_history(
    returning: np.ndarray, truth: np.ndarray, predicted: np.ndarray, bias: np.ndarray
) -> dict[str, dict[str, float]]:
    """RMSE of the model and the bias baseline for users with train reviews and for users new in the split.

    New users have no history of their own: any gain there comes from the item side alone.
    """
    segments = {}
    for name, rows in (("returning_users", returning), ("new_users", ~returning)):
        if rows.any():
            segments[name] = {
                "rows": int(rows.sum()),
                "rmse": round(metrics.rmse(truth[rows], predicted[rows]), 4),
                "bias_rmse": round(metrics.rmse(truth[rows], bias[rows]), 4),
            }
    return segments


def _errors(truth: np.ndarray, predicted: np.ndarray) -> dict[str, float]:
    return {"rmse": round(metrics.rmse(truth, predicted), 4), "mae": round(metrics.mae(truth, predicted), 4)}


def train_history(train: dict[str, np.ndarray], n_users: int, n_items: int) -> History:
    """The train split's aggregates (see :class:`History`) from its :func:`review_codes` table."""
    return History.from_train(
        train[features.USER_INDEX], train[features.ITEM_INDEX], train["rating"], train["sentiment"], train["code"],
        _item_metadata(train), n_users, n_items,
    )  # fmt: skip


def fit_and_evaluate(
    tables: dict[str, dict[str, np.ndarray]], n_known_users: int, n_known_items: int, settings: RatingSettings
) -> tuple[Ranker, dict[str, Any]]:
    """Fit both heads and the two towers on train (early stopping on eval); report rating and ranking, baselines.

    Args:
        tables: per split, each review's user and item index, rating, CNN sentiment, autoencoder code and
            ``representation`` (CNN code + metadata, for the item metadata).
        n_known_users: user vocabulary size (index ``n_known_users`` is an unseen user).
        n_known_items: item vocabulary size.
        settings: hyperparameters.

    Returns:
        The ranker (the two-head model, the train history it serves with, tower vectors, EASE^R and the blend)
        and the report (without ``seconds``).
    """
    seed_everything(settings.seed)
    n_users, n_items = n_known_users + 1, n_known_items + 1  # + the out-of-vocabulary index
    train = tables[schema.TRAIN]
    history = train_history(train, n_users, n_items)
    # Train pairs stream their inputs batch by batch (PairBatches); eval and test are small enough to hold.
    data = {split: pair_inputs(history, tables[split][features.USER_INDEX], tables[split][features.ITEM_INDEX])
            for split in (schema.EVAL, schema.TEST)}  # fmt: skip
    own = {k: train[k] for k in ("rating", "sentiment", "code")}
    rows = np.arange(len(train["rating"]))
    rated = Pairs(train[features.USER_INDEX], train[features.ITEM_INDEX], train["rating"].astype(np.float32), own,
                  rows, train[features.ITEM_INDEX])  # fmt: skip
    networks = build_rating_model(n_users, n_items, data[schema.EVAL][HISTORY_INPUT].shape[1], settings)
    logger.info("train_dnn: %s train pairs, %d users, %d items", f"{len(train['rating']):,}", n_users, n_items)

    def fit_head(model: keras.Model, loss: str, pairs: Pairs, valid: tuple[dict[str, np.ndarray], np.ndarray],
                 metric: keras.metrics.Metric, monitor: str) -> keras.callbacks.History:  # fmt: skip
        model.compile(optimizer=LazyAdam(settings.learning_rate), loss=loss, metrics=[metric])
        return model.fit(
            PairBatches(history, pairs, settings.batch_size, settings.seed), validation_data=valid,
            validation_batch_size=16_384, epochs=settings.epochs, verbose=0,
            steps_per_epoch=steps_per_epoch(len(pairs), settings.batch_size, settings.epoch_examples),
            callbacks=[keras.callbacks.EarlyStopping(monitor=monitor, patience=settings.patience,
                                                     restore_best_weights=True),
                       ThroughputLogger(settings.batch_size)],
        )  # fmt: skip

    fit = fit_head(networks.rating, "mse", rated, (data[schema.EVAL], tables[schema.EVAL]["rating"]),
                   keras.metrics.RootMeanSquaredError(name="rmse"), "val_rmse")  # fmt: skip
    implicit_train = implicit_pairs(history, train, n_known_items, settings.negatives, settings.seed, True)
    implicit_eval = implicit_pairs(history, tables[schema.EVAL], n_known_items, settings.negatives,
                                   settings.seed + 1, False)  # fmt: skip
    logger.info("train_dnn: interaction pairs, %s train and %s eval", f"{len(implicit_train):,}",
                f"{len(implicit_eval):,}")  # fmt: skip
    implicit_fit = fit_head(networks.interaction, "binary_crossentropy", implicit_train,
                            (implicit_eval.inputs(history), implicit_eval.labels), keras.metrics.AUC(name="auc"),
                            "val_loss")  # fmt: skip

    def triples(split: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        table = tables[split]
        return table[features.USER_INDEX], table[features.ITEM_INDEX], table["rating"]

    mf, mf_settings = biased_mf(triples(schema.TRAIN), triples(schema.EVAL), n_users, n_items, settings.seed,
                                settings.epoch_examples)  # fmt: skip
    report: dict[str, Any] = {"settings": settings.to_dict(), "baseline_settings": {"mf": mf_settings}}
    for split in (schema.EVAL, schema.TEST):
        truth = tables[split]["rating"]
        predicted = networks.rating.predict(data[split], batch_size=16_384, verbose=0).reshape(-1)
        bias = np.clip(data[split][BIAS_INPUT], 1, 5)  # exactly the damped bias baseline outside train
        report[split] = _errors(truth, predicted)
        report.setdefault("baselines", {})[split] = {
            "global_mean": _errors(truth, np.full(len(truth), history.global_mean)),
            "bias": _errors(truth, bias),
            "mf": _errors(truth, mf(*triples(split)[:2])),
        }
        if split == schema.TEST:
            report["test_by_user"] = _by_user_history(tables[split][features.USER_INDEX] < n_known_users,
                                                      truth, predicted, bias)  # fmt: skip
            edges = np.arange(-4.25, 4.5, 0.5)  # half-star bins centred on whole-star errors
            report["test_error_histogram"] = {"edges": edges.tolist(), "counts": {
                name: np.histogram(values - truth, edges)[0].tolist()
                for name, values in (("DNN", predicted), ("damped bias", bias))
            }}  # fmt: skip
    logger.info("train_dnn: test RMSE %s, damped bias %s, by user history %s", report[schema.TEST]["rmse"],
                report["baselines"][schema.TEST]["bias"]["rmse"], report["test_by_user"])  # fmt: skip
    *vectors, tower_fit = fit_two_tower(history, n_known_items, triples(schema.TRAIN)[:2],
                                        triples(schema.EVAL)[:2], settings)  # fmt: skip
    report["ranking"], ranker = evaluate_ranking(networks.model, history, tuple(vectors), tables, n_known_users,
                                                 n_known_items, settings)  # fmt: skip
    report["history"] = curves(fit) | {f"interaction_{k}": v for k, v in curves(implicit_fit).items()} | {
        f"two_tower_{k}": v for k, v in tower_fit.items()}  # fmt: skip
    return ranker, report


def review_codes(
    transformed_dir: str | Path, transform_graph_dir: str | Path, cnn_model_dir: str | Path,
    encoder_dir: str | Path, n_known_items: int, settings: RatingSettings,
) -> dict[str, dict[str, np.ndarray]]:  # fmt: skip
    """Per split, each review's ids, rating, CNN sentiment and representation, and ``code``: what training reads.

    A review's code is its autoencoder code (sentiment) beside its text code (the words that follow the item),
    one pass over each split's TFRecords.
    """
    started = time.monotonic()
    spec = transformed_feature_spec(transform_graph_dir)
    cnn = bundles.load_sentiment_keras(cnn_model_dir)
    tables = {split: review_table(cnn, split_files(transformed_dir, split), spec, text_tokens=settings.text_tokens)
              for split in schema.SPLITS}  # fmt: skip
    logger.info("train_dnn: CNN codes, sentiment and tokens of %s reviews (%.0f s)",
                f"{sum(len(t['rating']) for t in tables.values()):,}", time.monotonic() - started)  # fmt: skip
    train = tables[schema.TRAIN]
    corpus_rate, projection = fit_text_projection(train["review_tokens"], train[features.ITEM_INDEX],
                                                  n_known_items + 1, settings.text_tokens,
                                                  settings.text_dims)  # fmt: skip
    encoder = bundles.load_encoder(encoder_dir)
    for table in tables.values():
        sentiment_code = encoder.encode(table["representation"])
        text_code = text_codes(table.pop("review_tokens"), corpus_rate, projection)
        table["code"] = np.concatenate([sentiment_code, text_code], axis=1)
    logger.info("train_dnn: autoencoder and text codes done (%.0f s)", time.monotonic() - started)
    return tables


def train_rating(
    transformed_dir: str | Path,
    transform_graph_dir: str | Path,
    cnn_model_dir: str | Path,
    encoder_dir: str | Path,
    model_dir: str | Path,
    report_path: str | Path,
    settings: RatingSettings | None = None,
) -> RatingReport:
    """Train the rating DNN; evaluate rating and ranking beside baselines; export model, history and vocabularies.

    Args:
        transformed_dir: preprocess output (train/, eval/, test/ TFRecords).
        transform_graph_dir: the tf.Transform output (feature spec, user and item vocabularies).
        cnn_model_dir: train_cnn model (review codes and sentiment of history reviews).
        encoder_dir: train_autoencoder encoder (compresses history review codes).
        model_dir: receives the serving SavedModel (raw user and item ids in, rating and ranking score out),
            and the Keras model, train history arrays and id vocabularies that ``recommend`` reads.
        report_path: JSON with RMSE / MAE and HR@10 / NDCG@10 beside the baselines.
        settings: hyperparameters.
    """
    import tensorflow_transform as tft

    settings = settings or RatingSettings()
    started = time.monotonic()
    graph = tft.TFTransformOutput(str(transform_graph_dir))
    n_known_users = graph.vocabulary_size_by_name(features.USER_VOCABULARY)
    n_known_items = graph.vocabulary_size_by_name(features.ITEM_VOCABULARY)
    tables = review_codes(transformed_dir, transform_graph_dir, cnn_model_dir, encoder_dir, n_known_items,
                          settings)  # fmt: skip
    ranker, report = fit_and_evaluate(tables, n_known_users, n_known_items, settings)
    report["seconds"] = round(time.monotonic() - started, 3)

    target = Path(model_dir)
    with staging_directory(target) as staging:
        (staging / "model").mkdir()
        users, items = (
            [value.decode() for value in graph.vocabulary_by_name(name)]
            for name in (features.USER_VOCABULARY, features.ITEM_VOCABULARY)
        )
        export_serving_model(ranker, users, items, staging / "model")
        logger.info("train_dnn: serving SavedModel written (%.0f s)", time.monotonic() - started)
        bundles.save_recommender(staging / "model", ranker.model, ranker.history.to_arrays(), users, items,
                                 ranker.to_arrays())  # fmt: skip
        (staging / "report.json").write_text(json.dumps(report, indent=2) + "\n")
        publish(staging / "model", target)
        publish(staging / "report.json", Path(report_path))
    test, baselines = report[schema.TEST], report["baselines"][schema.TEST]
    logger.info("train_dnn: test %s, baselines %s, ranking %s", test, baselines, report["ranking"])
    return report


def ui_metrics(report: RatingReport) -> dict[str, float]:
    """Eval RMSE / MAE and test HR@10 / NDCG@10, each beside every baseline, for the Kubeflow UI."""
    values = {}
    for name in ("rmse", "mae"):
        values[f"eval_{name}"] = report[schema.EVAL][name]
        for baseline, scores in report["baselines"][schema.EVAL].items():
            values[f"eval_{baseline}_{name}"] = scores[name]
    for name in ("hr@10", "ndcg@10"):
        values[f"test_{name}"] = report["ranking"]["test"][name]
        for baseline, scores in report["ranking"]["baselines"].items():
            values[f"test_{baseline}_{name}"] = scores[name]
    return values


def artifact_metadata(report: RatingReport) -> dict[str, dict[str, Any]]:
    """What the Kubeflow UI shows beside each train_dnn artifact, keyed by output name."""
    return {"model": {"framework": "keras", "eval_rmse": report[schema.EVAL]["rmse"], **report["settings"]},
            "report": {"seconds": report["seconds"]}}  # fmt: skip
