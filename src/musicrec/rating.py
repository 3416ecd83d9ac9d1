"""train_dnn: a regularized DNN that predicts ratings from what is known at recommendation time.

Inputs for a (user, item) pair: the user and item id embeddings and train-history aggregates of each side
(mean autoencoder code and mean CNN sentiment of their train reviews, damped mean rating, review count) plus
the item's metadata. Never the review being predicted: eval and test pairs see train aggregates only, and a
train pair's aggregates leave its own review out. Beside it: the global mean and the damped user + item bias
baselines (lambda = 10) for RMSE and MAE, and MostPop for HR@10 / NDCG@10 on ranking every item a test user
has not reviewed in train.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import keras
import numpy as np
from keras import layers, regularizers

from musicrec import features, metrics, schema
from musicrec.artifacts import publish, staging_directory
from musicrec.autoencoder import ENCODER_FILE, METADATA_INPUTS, NORMALIZATION_FILE, review_table
from musicrec.settings import RatingSettings
from musicrec.training import ThroughputLogger, curves, seed_everything, split_files, transformed_feature_spec

logger = logging.getLogger(__name__)

BIAS_DAMPING = 10.0  # lambda of the damped bias baseline and of the damped history means (DESIGN.md)
ITEM_METADATA = (features.PRICE_Z, features.PRICE_MISSING, features.SALES_RANK_Z, features.SALES_RANK_MISSING)
HISTORY_INPUT = "history"
MODEL_FILE = "rating_model.keras"
HISTORY_FILE = "history.npz"
RELEVANT_RATING = 4  # a test item rated at least this is a hit to recommend
TOP_K = 10


@dataclass
class History:
    """Per-user and per-item sums over the train split (index = vocabulary index; the last is "unseen")."""

    global_mean: float
    user_count: np.ndarray
    user_rating_sum: np.ndarray
    user_sentiment_sum: np.ndarray
    user_code_sum: np.ndarray
    item_count: np.ndarray
    item_rating_sum: np.ndarray
    item_sentiment_sum: np.ndarray
    item_code_sum: np.ndarray
    item_metadata: np.ndarray
    user_items_indptr: np.ndarray  # CSR: items each user reviewed in train
    user_items: np.ndarray

    @classmethod
    def from_train(
        cls, users: np.ndarray, items: np.ndarray, ratings: np.ndarray, sentiment: np.ndarray, codes: np.ndarray,
        metadata: np.ndarray, n_users: int, n_items: int,
    ) -> History:  # fmt: skip
        """Aggregate train reviews; ``n_users`` / ``n_items`` count the vocabulary plus the unseen index."""

        def sums(index: np.ndarray, size: int, values: np.ndarray) -> np.ndarray:
            out = np.zeros((size, *values.shape[1:]), np.float64)
            np.add.at(out, index, values)
            return out

        metadata_by_item = np.zeros((n_items, metadata.shape[1]), np.float32)
        metadata_by_item[items] = metadata  # item metadata is the same on every review of the item
        order = np.lexsort((items, users))
        indptr = np.concatenate([[0], np.cumsum(np.bincount(users, minlength=n_users))])
        return cls(
            global_mean=float(ratings.mean()),
            user_count=np.bincount(users, minlength=n_users).astype(np.float64),
            user_rating_sum=sums(users, n_users, ratings), user_sentiment_sum=sums(users, n_users, sentiment),
            user_code_sum=sums(users, n_users, codes),
            item_count=np.bincount(items, minlength=n_items).astype(np.float64),
            item_rating_sum=sums(items, n_items, ratings), item_sentiment_sum=sums(items, n_items, sentiment),
            item_code_sum=sums(items, n_items, codes), item_metadata=metadata_by_item,
            user_items_indptr=indptr, user_items=items[order],
        )  # fmt: skip

    def save(self, path: Path) -> None:
        """Write every array to one ``.npz`` file."""
        np.savez_compressed(path, **{k: np.asarray(v) for k, v in asdict(self).items()})

    @classmethod
    def load(cls, path: Path) -> History:
        """Read what :meth:`save` wrote."""
        with np.load(path) as data:
            return cls(**{k: (float(data[k]) if k == "global_mean" else data[k]) for k in data.files})

    def train_items(self, user: int) -> np.ndarray:
        """Items the user reviewed in train (excluded from their recommendations)."""
        return self.user_items[self.user_items_indptr[user] : self.user_items_indptr[user + 1]]


def history_inputs(
    history: History, users: np.ndarray, items: np.ndarray, own: dict[str, np.ndarray] | None = None
) -> np.ndarray:
    """The history feature vector of each (user, item) pair.

    Args:
        history: train aggregates.
        users: user indices.
        items: item indices.
        own: for train pairs, the pair's own ``rating``, ``sentiment`` and ``code``, subtracted from the sums so
            a review never sees itself (leave one out). ``None`` for pairs outside train.
    """

    def side(count: np.ndarray, rating: np.ndarray, sentiment: np.ndarray, code: np.ndarray) -> list[np.ndarray]:
        if own is not None:
            count, rating = count - 1, rating - own["rating"]
            sentiment, code = sentiment - own["sentiment"], code - own["code"]
        seen = np.maximum(count, 1)[:, None]
        damped = (rating + BIAS_DAMPING * history.global_mean) / (count + BIAS_DAMPING) - history.global_mean
        return [code / seen, (sentiment / seen[:, 0])[:, None], damped[:, None], np.log1p(count)[:, None],
                (count > 0)[:, None]]  # fmt: skip

    user_side = side(history.user_count[users], history.user_rating_sum[users], history.user_sentiment_sum[users],
                     history.user_code_sum[users])  # fmt: skip
    item_side = side(history.item_count[items], history.item_rating_sum[items], history.item_sentiment_sum[items],
                     history.item_code_sum[items])  # fmt: skip
    return np.concatenate([*user_side, *item_side, history.item_metadata[items]], axis=1).astype(np.float32)


def build_rating_model(n_users: int, n_items: int, history_width: int, settings: RatingSettings) -> keras.Model:
    """The rating DNN: id embeddings (and their dot product) beside the history features.

    L2 on embeddings and kernels, batch normalization and dropout after each dense layer; a sigmoid output
    rescaled to 1..5, so predictions are always valid ratings.
    """
    l2 = regularizers.L2(settings.l2)
    user = keras.Input(shape=(), dtype="int64", name=features.USER_INDEX)
    item = keras.Input(shape=(), dtype="int64", name=features.ITEM_INDEX)
    context = keras.Input(shape=(history_width,), name=HISTORY_INPUT)
    user_vector = layers.Embedding(n_users, settings.id_embedding_dim, embeddings_regularizer=l2, name="user")(
        user
    )
    item_vector = layers.Embedding(n_items, settings.id_embedding_dim, embeddings_regularizer=l2, name="item")(
        item
    )
    match = layers.Dot(axes=1, name="match")([user_vector, item_vector])
    hidden = layers.Concatenate()([user_vector, item_vector, match, layers.BatchNormalization()(context)])
    for i, units in enumerate(settings.hidden_units):
        hidden = layers.Dense(units, activation="relu", kernel_regularizer=l2, name=f"dense_{i}")(hidden)
        hidden = layers.BatchNormalization(name=f"norm_{i}")(hidden)
        hidden = layers.Dropout(settings.dropout, name=f"dropout_{i}")(hidden)
    unit = layers.Dense(1, activation="sigmoid", dtype="float32", name="unit_rating")(hidden)
    rating = layers.Rescaling(4.0, offset=1.0, name="rating")(unit)
    return keras.Model({features.USER_INDEX: user, features.ITEM_INDEX: item, HISTORY_INPUT: context}, rating)


def damped_bias_baseline(
    users: np.ndarray, items: np.ndarray, ratings: np.ndarray, n_users: int, n_items: int
) -> tuple[float, np.ndarray, np.ndarray]:
    """Global mean, item biases, then user biases, each damped by :data:`BIAS_DAMPING` (train only)."""
    mean = float(ratings.mean())
    item_bias = np.bincount(items, ratings - mean, n_items) / (
        np.bincount(items, minlength=n_items) + BIAS_DAMPING
    )
    residual = ratings - mean - item_bias[items]
    user_bias = np.bincount(users, residual, n_users) / (np.bincount(users, minlength=n_users) + BIAS_DAMPING)
    return mean, user_bias, item_bias


def _encode(encoder_dir: Path, representation: np.ndarray) -> np.ndarray:
    encoder = keras.models.load_model(encoder_dir / ENCODER_FILE)
    normalization = json.loads((encoder_dir / NORMALIZATION_FILE).read_text())
    scaled = (representation - np.array(normalization["mean"])) / np.array(normalization["std"])
    return encoder.predict(scaled.astype(np.float32), batch_size=8_192, verbose=0)


def _item_metadata(table: dict[str, np.ndarray]) -> np.ndarray:
    positions = [METADATA_INPUTS.index(name) for name in ITEM_METADATA]
    width = table["representation"].shape[1] - len(METADATA_INPUTS)
    return table["representation"][:, [width + p for p in positions]]


def score_all_items(model: keras.Model, history: History, users: np.ndarray, n_known_items: int) -> np.ndarray:
    """Predicted ratings of each user in ``users`` for every train item, as a (users, items) array."""
    pair_users = np.repeat(users.astype(np.int64), n_known_items)
    pair_items = np.tile(np.arange(n_known_items, dtype=np.int64), len(users))
    context = history_inputs(history, pair_users, pair_items)
    inputs = {features.USER_INDEX: pair_users, features.ITEM_INDEX: pair_items, HISTORY_INPUT: context}
    return model.predict(inputs, batch_size=65_536, verbose=0).reshape(len(users), n_known_items)


def top_items(scores: np.ndarray, exclude: np.ndarray, k: int) -> np.ndarray:
    """Indices of the ``k`` highest scores, never one of ``exclude`` (ties keep the lower index first)."""
    scores = scores.astype(np.float64)
    scores[exclude] = -np.inf
    return np.argsort(-scores, kind="stable")[:k]


def _ranking(
    model: keras.Model, history: History, test: dict[str, np.ndarray], n_known_users: int, n_known_items: int,
    settings: RatingSettings,
) -> dict[str, Any]:  # fmt: skip
    relevant: dict[int, set[int]] = {}
    liked = (test["rating"] >= RELEVANT_RATING) & (test[features.USER_INDEX] < n_known_users)
    liked &= test[features.ITEM_INDEX] < n_known_items  # only catalogue items can be recommended
    for user, item in zip(test[features.USER_INDEX][liked], test[features.ITEM_INDEX][liked], strict=True):
        relevant.setdefault(int(user), set()).add(int(item))
    users = np.array(sorted(relevant), dtype=np.int64)
    rng = np.random.default_rng(settings.seed)
    if len(users) > settings.ranking_users:
        users = np.sort(rng.choice(users, settings.ranking_users, replace=False))
    popularity = history.item_count[:n_known_items]
    ours, popular = [], []
    chunk = max(1, 262_144 // max(n_known_items, 1))  # pairs scored per model call, bounded memory
    for start in range(0, len(users), chunk):
        block = users[start : start + chunk]
        for user, scores in zip(block, score_all_items(model, history, block, n_known_items), strict=True):
            seen = history.train_items(int(user))
            ours.append(top_items(scores, seen, TOP_K))
            popular.append(top_items(popularity, seen, TOP_K))
    truth = [relevant[int(u)] for u in users]
    hr, ndcg = metrics.hit_rate_and_ndcg(np.array(ours), truth, TOP_K) if len(users) else (0.0, 0.0)
    pop_hr, pop_ndcg = metrics.hit_rate_and_ndcg(np.array(popular), truth, TOP_K) if len(users) else (0.0, 0.0)
    return {
        "users": int(len(users)),
        "test": {"hr@10": round(hr, 4), "ndcg@10": round(ndcg, 4)},
        "baselines": {"mostpop": {"hr@10": round(pop_hr, 4), "ndcg@10": round(pop_ndcg, 4)}},
    }


def train_rating(
    transformed_dir: str | Path,
    transform_graph_dir: str | Path,
    cnn_model_dir: str | Path,
    encoder_dir: str | Path,
    model_dir: str | Path,
    report_path: str | Path,
    settings: RatingSettings | None = None,
) -> dict[str, Any]:
    """Train the rating DNN; evaluate rating and ranking beside baselines; export model, history and vocabularies.

    Args:
        transformed_dir: preprocess output (train/, eval/, test/ TFRecords).
        transform_graph_dir: the tf.Transform output (feature spec, user and item vocabularies).
        cnn_model_dir: train_cnn model (review codes and sentiment of history reviews).
        encoder_dir: train_autoencoder encoder (compresses history review codes).
        model_dir: receives the Keras model, the train history arrays and the id vocabularies.
        report_path: JSON with RMSE / MAE and HR@10 / NDCG@10 beside the baselines.
        settings: hyperparameters.
    """
    import tensorflow_transform as tft

    settings = settings or RatingSettings()
    started = time.monotonic()
    seed_everything(settings.seed)
    spec = transformed_feature_spec(transform_graph_dir)
    graph = tft.TFTransformOutput(str(transform_graph_dir))
    n_known_users = graph.vocabulary_size_by_name(features.USER_VOCABULARY)
    n_known_items = graph.vocabulary_size_by_name(features.ITEM_VOCABULARY)
    n_users, n_items = n_known_users + 1, n_known_items + 1  # + the out-of-vocabulary index
    cnn = keras.models.load_model(Path(cnn_model_dir) / "keras_model.keras")
    tables = {split: review_table(cnn, split_files(transformed_dir, split), spec) for split in schema.SPLITS}
    for table in tables.values():
        table["code"] = _encode(Path(encoder_dir), table["representation"])
    train = tables[schema.TRAIN]
    history = History.from_train(
        train[features.USER_INDEX], train[features.ITEM_INDEX], train["rating"], train["sentiment"], train["code"],
        _item_metadata(train), n_users, n_items,
    )  # fmt: skip

    def inputs(split: str) -> dict[str, np.ndarray]:
        table = tables[split]
        own = (
            {k: table[k] for k in ("rating", "sentiment")} | {"code": table["code"]}
            if split == schema.TRAIN
            else None
        )
        users, items = table[features.USER_INDEX], table[features.ITEM_INDEX]
        return {features.USER_INDEX: users, features.ITEM_INDEX: items,
                HISTORY_INPUT: history_inputs(history, users, items, own)}  # fmt: skip

    data = {split: inputs(split) for split in schema.SPLITS}
    model = build_rating_model(n_users, n_items, data[schema.TRAIN][HISTORY_INPUT].shape[1], settings)
    model.compile(optimizer=keras.optimizers.Adam(settings.learning_rate), loss="mse",
                  metrics=[keras.metrics.RootMeanSquaredError(name="rmse")])  # fmt: skip
    stop = keras.callbacks.EarlyStopping(monitor="val_rmse", patience=2, restore_best_weights=True)
    throughput = ThroughputLogger(settings.batch_size)
    logger.info("train_dnn: %s train pairs, %d users, %d items", f"{len(train['rating']):,}", n_users, n_items)
    fit = model.fit(
        data[schema.TRAIN], train["rating"], validation_data=(data[schema.EVAL], tables[schema.EVAL]["rating"]),
        batch_size=settings.batch_size, epochs=settings.epochs, shuffle=True, callbacks=[stop, throughput],
        verbose=0,
    )  # fmt: skip
    mean, user_bias, item_bias = damped_bias_baseline(
        train[features.USER_INDEX], train[features.ITEM_INDEX], train["rating"], n_users, n_items
    )
    report: dict[str, Any] = {"settings": {**asdict(settings), "hidden_units": list(settings.hidden_units)}}
    for split in (schema.EVAL, schema.TEST):
        truth, table = tables[split]["rating"], tables[split]
        predicted = model.predict(data[split], batch_size=16_384, verbose=0).reshape(-1)
        bias = np.clip(mean + user_bias[table[features.USER_INDEX]] + item_bias[table[features.ITEM_INDEX]], 1, 5)
        report[split] = {
            "rmse": round(metrics.rmse(truth, predicted), 4),
            "mae": round(metrics.mae(truth, predicted), 4),
        }
        report.setdefault("baselines", {})[split] = {
            "global_mean": {"rmse": round(metrics.rmse(truth, np.full(len(truth), mean)), 4),
                            "mae": round(metrics.mae(truth, np.full(len(truth), mean)), 4)},
            "bias": {"rmse": round(metrics.rmse(truth, bias), 4), "mae": round(metrics.mae(truth, bias), 4)},
        }  # fmt: skip
    report["ranking"] = _ranking(model, history, tables[schema.TEST], n_known_users, n_known_items, settings)
    report["history"] = curves(fit)
    report["seconds"] = round(time.monotonic() - started, 3)

    target = Path(model_dir)
    with staging_directory(target) as staging:
        (staging / "model").mkdir()
        model.save(staging / "model" / MODEL_FILE)
        history.save(staging / "model" / HISTORY_FILE)
        for name in (features.USER_VOCABULARY, features.ITEM_VOCABULARY):
            shutil.copy(graph.vocabulary_file_by_name(name), staging / "model" / name)
        (staging / "report.json").write_text(json.dumps(report, indent=2) + "\n")
        publish(staging / "model", target)
        publish(staging / "report.json", Path(report_path))
    test, baselines = report[schema.TEST], report["baselines"][schema.TEST]
    logger.info("train_dnn: test %s, baselines %s, ranking %s", test, baselines, report["ranking"])
    return report


def recommend(model_dir: str | Path, user_id: str, k: int = TOP_K) -> list[tuple[str, float]]:
    """The top ``k`` (asin, predicted rating) for a train user, over items they have not reviewed.

    Raises:
        KeyError: the user has no train history (cold start is not served by this model).
    """
    root = Path(model_dir)
    users = (root / features.USER_VOCABULARY).read_text().splitlines()
    items = (root / features.ITEM_VOCABULARY).read_text().splitlines()
    if user_id not in users:
        raise KeyError(f"user {user_id} has no train history in {model_dir}")
    user = users.index(user_id)
    model = keras.models.load_model(root / MODEL_FILE)
    history = History.load(root / HISTORY_FILE)
    scores = score_all_items(model, history, np.array([user]), len(items))[0]
    top = top_items(scores, history.train_items(user), k)
    return [(items[i], round(float(scores[i]), 3)) for i in top]
