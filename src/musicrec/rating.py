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
  reviews against seeded, sampled items the user did not review). Ranking by predicted rating surfaces niche
  items that nobody reviews; recommendations and HR@10 / NDCG@10 rank by this head (:func:`ranking_score`).

Beside it: the global mean and the damped user + item bias baselines (lambda = 10) for RMSE and MAE, and
MostPop for HR@10 / NDCG@10 on ranking every item a test user has not reviewed in train.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, NamedTuple

import keras
import numpy as np
from keras import layers, regularizers

from musicrec import features, metrics, schema
from musicrec.artifacts import publish, staging_directory
from musicrec.autoencoder import ENCODER_FILE, METADATA_INPUTS, NORMALIZATION_FILE, review_table
from musicrec.progress import Progress
from musicrec.settings import RatingSettings
from musicrec.training import (
    ThroughputLogger,
    TrainingError,
    curves,
    make_dataset,
    seed_everything,
    split_files,
    transformed_feature_spec,
)

logger = logging.getLogger(__name__)

BIAS_DAMPING = 10.0  # lambda of the damped bias baseline and of the damped history means (DESIGN.md)
ITEM_METADATA = (features.PRICE_Z, features.PRICE_MISSING, features.SALES_RANK_Z, features.SALES_RANK_MISSING)
HISTORY_INPUT = "history"
BIAS_INPUT = "bias_prediction"
RATING_OUTPUT = "rating"
INTERACTION_OUTPUT = "interaction"
MODEL_FILE = "rating_model.keras"
HISTORY_FILE = "history.npz"
RELEVANT_RATING = 4  # a test item rated at least this is a hit to recommend
TOP_K = 10
TEXT_TOKENS = 1_000  # the most frequent review tokens the text codes read (genre words are frequent)
TEXT_DIMS = 24  # text code width: enough directions for the genres of the catalogue
TEXT_SCALE = 10.0  # brings text codes to the scale of the autoencoder codes
TEXT_CHUNK = 50_000  # reviews a step when reading text, bounded memory at full scale


@dataclass
class History:
    """Per-user and per-item train aggregates (index = vocabulary index; the last is "unseen").

    ``user_bias`` / ``item_bias`` are the damped bias baseline's terms (:func:`damped_bias_baseline`).
    """

    global_mean: float
    user_count: np.ndarray
    user_rating_sum: np.ndarray
    user_sentiment_sum: np.ndarray
    user_code_sum: np.ndarray
    user_taste_sum: np.ndarray  # the user's review codes, each times its rating over its item's bias (_user_taste)
    user_bias: np.ndarray
    item_count: np.ndarray
    item_rating_sum: np.ndarray
    item_sentiment_sum: np.ndarray
    item_code_sum: np.ndarray
    item_bias: np.ndarray
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
        mean, user_bias, item_bias = damped_bias_baseline(users, items, ratings, n_users, n_items)
        return cls(
            global_mean=mean,
            user_count=np.bincount(users, minlength=n_users).astype(np.float64),
            user_rating_sum=sums(users, n_users, ratings), user_sentiment_sum=sums(users, n_users, sentiment),
            user_code_sum=sums(users, n_users, codes),
            user_taste_sum=sums(users, n_users, (ratings - mean - item_bias[items])[:, None] * codes),
            user_bias=user_bias,
            item_count=np.bincount(items, minlength=n_items).astype(np.float64),
            item_rating_sum=sums(items, n_items, ratings), item_sentiment_sum=sums(items, n_items, sentiment),
            item_code_sum=sums(items, n_items, codes), item_bias=item_bias, item_metadata=metadata_by_item,
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

    def reviewed(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        """Whether each (user, item) pair is a train review."""
        # user_items is sorted by user, then item, so the pairs' keys are sorted: one binary search finds each.
        owners = np.repeat(np.arange(len(self.user_items_indptr) - 1), np.diff(self.user_items_indptr))
        width = len(self.item_count)
        keys = owners * width + self.user_items
        wanted = np.asarray(users, np.int64) * width + np.asarray(items, np.int64)
        position = np.minimum(np.searchsorted(keys, wanted), max(len(keys) - 1, 0))
        return keys[position] == wanted if len(keys) else np.zeros(len(wanted), bool)


def _own_item(items: np.ndarray, own: dict[str, np.ndarray] | None) -> np.ndarray:
    """Rows whose item is the own review's item (its item side leaves the review out too)."""
    if own is None:
        return np.zeros(len(items), bool)
    return own.get("item", items) == items


def _user_taste(
    history: History, users: np.ndarray, items: np.ndarray, own: dict[str, np.ndarray] | None
) -> np.ndarray:
    """Each user's taste: the mean code of their train reviews, weighted by each review's rating over its item's.

    Its dot product with an item's mean code sums the user's residuals over reviews whose text resembles the
    item's (the same genre words): what they thought of items like this one, beyond their items' biases.
    Leaves ``own`` out: the review's weighted code leaves the sum.
    """
    taste, count = history.user_taste_sum[users], history.user_count[users]
    if own is not None:
        own_item = own.get("item", items)
        residual = own["rating"] - history.global_mean - history.item_bias[own_item]
        taste, count = taste - residual[:, None] * own["code"], count - 1
    return (taste / np.maximum(count, 1)[:, None]).astype(np.float32)


def _side(
    history: History, count: np.ndarray, rating: np.ndarray, sentiment: np.ndarray, code: np.ndarray,
    own: dict[str, np.ndarray] | None, leave_out: np.ndarray,
) -> np.ndarray:  # fmt: skip
    """One side's history features: mean code, mean sentiment, damped mean rating, log count, has-history."""
    if own is not None:
        out = leave_out.astype(np.float64)
        count, rating = count - out, rating - out * own["rating"]
        sentiment, code = sentiment - out * own["sentiment"], code - out[:, None] * own["code"]
    seen = np.maximum(count, 1)[:, None]
    damped = (rating + BIAS_DAMPING * history.global_mean) / (count + BIAS_DAMPING) - history.global_mean
    return np.concatenate([code / seen, (sentiment / seen[:, 0])[:, None], damped[:, None],
                           np.log1p(count)[:, None], (count > 0)[:, None]], axis=1).astype(np.float32)  # fmt: skip


def user_sides(
    history: History, users: np.ndarray, items: np.ndarray, own: dict[str, np.ndarray] | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """The user half of each pair's features: (history side, taste); ``items`` only places ``own`` reviews."""
    user_side = _side(history, history.user_count[users], history.user_rating_sum[users],
                      history.user_sentiment_sum[users], history.user_code_sum[users], own,
                      np.ones(len(users), bool))  # fmt: skip
    return user_side, _user_taste(history, users, items, own)


def item_sides(history: History, items: np.ndarray, own: dict[str, np.ndarray] | None = None) -> np.ndarray:
    """The item half of each pair's features: history side and metadata."""
    item_side = _side(history, history.item_count[items], history.item_rating_sum[items],
                      history.item_sentiment_sum[items], history.item_code_sum[items], own,
                      _own_item(items, own))  # fmt: skip
    return np.concatenate([item_side, history.item_metadata[items]], axis=1)


def combine_sides(user_side: np.ndarray, taste: np.ndarray, item_side: np.ndarray) -> np.ndarray:
    """Each pair's history feature vector from its two halves, row by row, with how the two match."""
    code_width = taste.shape[1]
    # How well the user's history matches the item's: the genre words of their reviews land in the codes.
    user_code, item_code = user_side[:, :code_width], item_side[:, :code_width]
    norms = np.linalg.norm(user_code, axis=1) * np.linalg.norm(item_code, axis=1)
    cosine = np.einsum("ij,ij->i", user_code, item_code) / np.maximum(norms, 1e-9)
    weighted = taste * item_code
    return np.concatenate([user_side, item_side, user_code * item_code, cosine[:, None], weighted,
                           weighted.sum(axis=1, keepdims=True)], axis=1).astype(np.float32)  # fmt: skip


def history_inputs(
    history: History, users: np.ndarray, items: np.ndarray, own: dict[str, np.ndarray] | None = None
) -> np.ndarray:
    """The history feature vector of each (user, item) pair.

    Args:
        history: train aggregates.
        users: user indices.
        items: item indices.
        own: for pairs built from a train review, that review's ``rating``, ``sentiment`` and ``code``,
            subtracted from the sums so a review never sees itself (leave one out); with ``item``, the review's
            item when it differs from ``items`` (a sampled negative item, whose side keeps all its reviews).
            ``None`` for pairs outside train.
    """
    return combine_sides(*user_sides(history, users, items, own), item_sides(history, items, own))


def bias_inputs(
    history: History, users: np.ndarray, items: np.ndarray, own: dict[str, np.ndarray] | None = None
) -> np.ndarray:
    """The damped user + item bias prediction of each pair (unclipped), leaving ``own`` reviews out.

    Outside train it is exactly the baseline's prediction. For a train review, the item bias drops the review
    from its damped sum, and the user bias drops the review's residual over its item's bias (the other items'
    biases never include it), as if the baseline had been fit without it. ``own`` as in :func:`history_inputs`.
    """
    user_bias, item_bias = history.user_bias[users], history.item_bias[items]
    if own is not None:
        own_item = own.get("item", items)
        user_count, item_count = history.user_count[users], history.item_count[own_item]
        deviation = own["rating"] - history.global_mean
        loo_item_bias = (history.item_bias[own_item] * (item_count + BIAS_DAMPING) - deviation) / (
            item_count - 1 + BIAS_DAMPING
        )
        user_bias = (user_bias * (user_count + BIAS_DAMPING) - (deviation - history.item_bias[own_item])) / (
            user_count - 1 + BIAS_DAMPING
        )
        item_bias = np.where(own_item == items, loo_item_bias, item_bias)
    return (history.global_mean + user_bias + item_bias).astype(np.float32)


def pair_inputs(
    history: History, users: np.ndarray, items: np.ndarray, own: dict[str, np.ndarray] | None = None
) -> dict[str, np.ndarray]:
    """Every model input of each (user, item) pair; ``own`` as in :func:`history_inputs`."""
    return {
        features.USER_INDEX: users.astype(np.int64), features.ITEM_INDEX: items.astype(np.int64),
        HISTORY_INPUT: history_inputs(history, users, items, own),
        BIAS_INPUT: bias_inputs(history, users, items, own),
    }  # fmt: skip


class RatingNetworks(NamedTuple):
    """The exported two-head model and the one-head views that train it (they share its layers)."""

    model: keras.Model
    rating: keras.Model
    interaction: keras.Model


def build_rating_model(n_users: int, n_items: int, history_width: int, settings: RatingSettings) -> RatingNetworks:
    """The two-head DNN: id embeddings (and their dot product) beside the history features and bias prediction.

    The rating head adds a learned correction to the bias prediction (starting at zero, so training starts
    from the baseline) and clips to 1..5; the interaction head is a sigmoid. L2 on embeddings and kernels,
    batch normalization and dropout after each dense layer; the heads share no weights.
    """
    l2 = regularizers.L2(settings.l2)
    inputs = {
        features.USER_INDEX: keras.Input(shape=(), dtype="int64", name=features.USER_INDEX),
        features.ITEM_INDEX: keras.Input(shape=(), dtype="int64", name=features.ITEM_INDEX),
        HISTORY_INPUT: keras.Input(shape=(history_width,), name=HISTORY_INPUT),
        BIAS_INPUT: keras.Input(shape=(1,), name=BIAS_INPUT),
    }
    context = layers.Concatenate(name="context")([inputs[HISTORY_INPUT], inputs[BIAS_INPUT]])

    def tower(name: str) -> Any:
        sides = (("user", n_users, features.USER_INDEX), ("item", n_items, features.ITEM_INDEX))
        embed = {
            side: layers.Embedding(size, settings.id_embedding_dim, embeddings_regularizer=l2,
                                   name=f"{name}_{side}")(inputs[index])
            for side, size, index in sides
        }  # fmt: skip
        match = layers.Dot(axes=1, name=f"{name}_match")([embed["user"], embed["item"]])
        normalized = layers.BatchNormalization(name=f"{name}_context_norm")(context)
        hidden = layers.Concatenate(name=f"{name}_features")([embed["user"], embed["item"], match, normalized])
        for i, units in enumerate(settings.hidden_units):
            hidden = layers.Dense(units, activation="relu", kernel_regularizer=l2, name=f"{name}_dense_{i}")(
                hidden
            )
            hidden = layers.BatchNormalization(name=f"{name}_norm_{i}")(hidden)
            hidden = layers.Dropout(settings.dropout, name=f"{name}_dropout_{i}")(hidden)
        return hidden

    correction = layers.Dense(1, kernel_initializer="zeros", name="correction")(tower("rating"))
    raw = layers.Add(name="raw_rating")([inputs[BIAS_INPUT], correction])
    # clip(raw, 1, 5) as layers: shift to 0..4, ReLU capped at 4, shift back.
    unit = layers.ReLU(max_value=4.0, name="clip")(layers.Rescaling(1.0, offset=-1.0, name="shift")(raw))
    rating = layers.Rescaling(1.0, offset=1.0, dtype="float32", name=RATING_OUTPUT)(unit)
    interaction = layers.Dense(1, activation="sigmoid", dtype="float32", name=INTERACTION_OUTPUT)(
        tower(INTERACTION_OUTPUT)
    )
    return RatingNetworks(
        keras.Model(inputs, {RATING_OUTPUT: rating, INTERACTION_OUTPUT: interaction}, name="recommender"),
        keras.Model(inputs, rating, name="rating_head"),
        keras.Model(inputs, interaction, name="interaction_head"),
    )


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


def sample_negatives(
    history: History, users: np.ndarray, n_known_items: int, per_positive: int, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """``per_positive`` catalogue items for each entry of ``users`` that the user never reviewed in train.

    Uniform over the catalogue, so the interaction head learns popularity from the data. Seeded: the same
    arguments give the same items. Returns (row of ``users`` each negative belongs to, negative item).
    """
    rng = np.random.default_rng(seed)
    rows = np.repeat(np.arange(len(users)), per_positive)
    candidates = rng.integers(0, n_known_items, len(rows))
    clash = history.reviewed(users[rows], candidates)
    # Redraw the clashes; a user who reviewed (almost) the whole catalogue keeps only what was found.
    for _ in range(50):
        if not clash.any():
            break
        candidates[clash] = rng.integers(0, n_known_items, int(clash.sum()))
        clash[clash] = history.reviewed(users[rows[clash]], candidates[clash])
    return rows[~clash], candidates[~clash]


def implicit_pairs(
    history: History, table: dict[str, np.ndarray], n_known_items: int, per_positive: int, seed: int,
    leave_out: bool,
) -> tuple[dict[str, np.ndarray], np.ndarray]:  # fmt: skip
    """Inputs and 0/1 labels for the interaction head: each review of a catalogue item and sampled negatives.

    Args:
        history: train aggregates.
        table: a split's reviews (user and item indices, rating, sentiment, code).
        n_known_items: catalogue size; reviews of unseen items are skipped.
        per_positive: negatives for each review.
        seed: seeds the negative sample.
        leave_out: the reviews are train reviews: their inputs, and their negatives' user side, leave them out.
    """
    keep = table[features.ITEM_INDEX] < n_known_items
    users, items = table[features.USER_INDEX][keep], table[features.ITEM_INDEX][keep]
    own = {"rating": table["rating"][keep], "sentiment": table["sentiment"][keep], "code": table["code"][keep]}
    rows, negatives = sample_negatives(history, users, n_known_items, per_positive, seed)
    if not leave_out:
        own = None
        # An eval review may repeat a train item: only items the user did not review in either count as negative.
        novel = negatives != items[rows]
        rows, negatives = rows[novel], negatives[novel]
    positive = pair_inputs(history, users, items, own)
    # A negative competes with its review for the same user history, so its user side leaves that review out.
    negative_own = None if own is None else {**{k: v[rows] for k, v in own.items()}, "item": items[rows]}
    negative = pair_inputs(history, users[rows], negatives, negative_own)
    inputs = {name: np.concatenate([positive[name], negative[name]]) for name in positive}
    return inputs, np.concatenate([np.ones(len(users)), np.zeros(len(rows))]).astype(np.float32)


def _encode(encoder_dir: Path, representation: np.ndarray) -> np.ndarray:
    encoder = keras.models.load_model(encoder_dir / ENCODER_FILE)
    normalization = json.loads((encoder_dir / NORMALIZATION_FILE).read_text())
    scaled = (representation - np.array(normalization["mean"])) / np.array(normalization["std"])
    return encoder.predict(scaled.astype(np.float32), batch_size=8_192, verbose=0)


def _item_metadata(table: dict[str, np.ndarray]) -> np.ndarray:
    positions = [METADATA_INPUTS.index(name) for name in ITEM_METADATA]
    width = table["representation"].shape[1] - len(METADATA_INPUTS)
    return table["representation"][:, [width + p for p in positions]]


def _token_presence(token_ids: np.ndarray) -> np.ndarray:
    """Which of the :data:`TEXT_TOKENS` most frequent tokens each review uses (0/1, reviews x tokens)."""
    present = np.zeros((len(token_ids), TEXT_TOKENS), np.float32)
    rows = np.repeat(np.arange(len(token_ids)), token_ids.shape[1])
    ids = token_ids.ravel()
    known = (ids >= 1) & (ids <= TEXT_TOKENS)  # ids run 1..V by frequency; 0 pads, V+1 is out of vocabulary
    present[rows[known], ids[known] - 1] = 1.0
    return present


def fit_text_projection(token_ids: np.ndarray, items: np.ndarray, n_items: int) -> tuple[np.ndarray, np.ndarray]:
    """Token directions that tell items apart, fit on train reviews: the words that follow the item (its genre).

    Each item's token rates over its train reviews become log lifts over the corpus rate; the top right singular
    vectors of that (items x tokens) matrix, items weighted by the square root of their review count (capped),
    are the directions. Sentiment words lift with every well-rated item alike, genre words with one group of
    items, so the leading directions separate genres. Returns (corpus token rate, tokens x dims projection).
    """
    counts = np.zeros((n_items, TEXT_TOKENS), np.float32)  # 300 MB for the full catalogue
    for start in range(0, len(token_ids), TEXT_CHUNK):
        chunk = slice(start, start + TEXT_CHUNK)
        np.add.at(counts, items[chunk], _token_presence(token_ids[chunk]))
    reviews = np.bincount(items, minlength=n_items).astype(np.float64)
    corpus_rate = counts.sum(0) / max(len(items), 1)
    reviewed = reviews > 0
    lift = np.log((counts[reviewed] / reviews[reviewed, None] + 1e-3) / (corpus_rate + 1e-3))
    weighted = (lift - lift.mean(0)) * np.sqrt(np.minimum(reviews[reviewed], 50.0))[:, None]
    # The right singular vectors are the eigenvectors of the small tokens x tokens Gram matrix.
    values, vectors = np.linalg.eigh(weighted.T @ weighted)
    return corpus_rate.astype(np.float32), vectors[:, np.argsort(-values)[:TEXT_DIMS]].astype(np.float32)


def text_codes(token_ids: np.ndarray, corpus_rate: np.ndarray, projection: np.ndarray) -> np.ndarray:
    """Each review's text on the :func:`fit_text_projection` directions (its own words only)."""
    out = np.zeros((len(token_ids), projection.shape[1]), np.float32)
    for start in range(0, len(token_ids), TEXT_CHUNK):
        present = _token_presence(token_ids[start : start + TEXT_CHUNK])
        used = np.maximum(present.sum(1, keepdims=True), 1.0)
        out[start : start + TEXT_CHUNK] = TEXT_SCALE * (present - corpus_rate) @ projection / used
    return out


def _review_tokens(files: list[str], spec: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    """Review token ids and item indices of a split, in file order (the order of ``review_table``)."""
    dataset = make_dataset(files, spec, (features.REVIEW_IDS, features.ITEM_INDEX), features.RATING_LABEL, 8_192)
    ids, items = [], []
    for inputs, _ in dataset:
        ids.append(inputs[features.REVIEW_IDS].numpy())
        items.append(inputs[features.ITEM_INDEX].numpy())
    return np.concatenate(ids), np.concatenate(items)


def ranking_score(predicted: dict[str, np.ndarray]) -> np.ndarray:
    """What recommendations rank by: the interaction head's probability that the user reviews the item.

    Not the predicted rating: ranking by it surfaces niche items nobody reviews (NDCG@10 of 0 on the sample),
    while 86% of reviews are relevant (rated 4 or 5), so whether a user reviews an item decides the hits.
    """
    return np.asarray(predicted[INTERACTION_OUTPUT], np.float64).reshape(-1)


def all_items_inputs(history: History, users: np.ndarray, n_known_items: int) -> dict[str, np.ndarray]:
    """:func:`pair_inputs` of each user in ``users`` with every train item, user by user (outside train).

    Each half is built once and repeated: a pair's features outside train depend on its user and its item
    alone, so this equals ``pair_inputs`` on the same pairs (tested) at a fraction of its cost.
    """
    users = np.asarray(users, np.int64)
    items = np.arange(n_known_items, dtype=np.int64)
    user_side, taste = user_sides(history, users, np.zeros(len(users), np.int64))
    item_side = item_sides(history, items)
    pair_users, pair_items = np.repeat(users, n_known_items), np.tile(items, len(users))
    return {
        features.USER_INDEX: pair_users, features.ITEM_INDEX: pair_items,
        HISTORY_INPUT: combine_sides(np.repeat(user_side, n_known_items, axis=0),
                                     np.repeat(taste, n_known_items, axis=0), np.tile(item_side, (len(users), 1))),
        BIAS_INPUT: bias_inputs(history, pair_users, pair_items),
    }  # fmt: skip


def score_all_items(
    model: keras.Model, history: History, users: np.ndarray, n_known_items: int
) -> tuple[np.ndarray, np.ndarray]:
    """Ranking scores and predicted ratings of each user in ``users`` for every train item, each (users, items)."""
    predicted = model.predict(all_items_inputs(history, users, n_known_items), batch_size=65_536, verbose=0)
    shape = (len(users), n_known_items)
    return ranking_score(predicted).reshape(shape), predicted[RATING_OUTPUT].reshape(shape)


SERVING_INPUTS = ("user_id", "item_id")  # the raw reviewerID and asin a client sends


def export_serving_model(
    model: keras.Model, history: History, users: list[str], items: list[str], out_dir: Path
) -> None:
    """Write a SavedModel whose ``serving_default`` takes raw ``user_id`` / ``item_id`` strings.

    It looks the ids up in the train vocabularies (unseen ids get the out-of-vocabulary index), gathers each
    side's train-history features, builds the pair features exactly as :func:`pair_inputs` does outside train,
    and returns both heads: ``rating`` and ``interaction`` (the ranking score). So TF Serving / KServe serve
    the recommender with no Python beside it.
    """
    import tensorflow as tf

    n_users, n_items = len(history.user_count), len(history.item_count)
    # Outside train, each half of a pair's features depends on its side alone: precompute both halves.
    code_width = history.user_code_sum.shape[1]
    user_block, user_taste = user_sides(history, np.arange(n_users), np.zeros(n_users, np.int64))
    item_block = item_sides(history, np.arange(n_items))

    class RecommenderServer(tf.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model
            self.user_block = tf.Variable(user_block, trainable=False)
            self.item_block = tf.Variable(item_block, trainable=False)
            self.user_taste = tf.Variable(user_taste, trainable=False)
            self.user_bias = tf.Variable(history.user_bias.astype(np.float32), trainable=False)
            self.item_bias = tf.Variable(history.item_bias.astype(np.float32), trainable=False)
            self.global_mean = tf.constant(history.global_mean, tf.float32)
            self.user_table = tf.lookup.StaticHashTable(
                tf.lookup.KeyValueTensorInitializer(users, tf.range(len(users), dtype=tf.int64)), n_users - 1
            )
            self.item_table = tf.lookup.StaticHashTable(
                tf.lookup.KeyValueTensorInitializer(items, tf.range(len(items), dtype=tf.int64)), n_items - 1
            )

        @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name=name) for name in SERVING_INPUTS])
        def serve(self, user_id: tf.Tensor, item_id: tf.Tensor) -> dict[str, tf.Tensor]:
            user, item = self.user_table.lookup(user_id), self.item_table.lookup(item_id)
            user_side, item_side = tf.gather(self.user_block, user), tf.gather(self.item_block, item)
            user_code, item_code = user_side[:, :code_width], item_side[:, :code_width]
            norms = tf.norm(user_code, axis=1) * tf.norm(item_code, axis=1)
            cosine = tf.reduce_sum(user_code * item_code, axis=1) / tf.maximum(norms, 1e-9)
            taste = tf.gather(self.user_taste, user) * item_code
            pair = tf.concat([user_side, item_side, user_code * item_code, cosine[:, None], taste,
                              tf.reduce_sum(taste, axis=1, keepdims=True)], axis=1)  # fmt: skip
            bias = self.global_mean + tf.gather(self.user_bias, user) + tf.gather(self.item_bias, item)
            predicted = self.model({features.USER_INDEX: user, features.ITEM_INDEX: item, HISTORY_INPUT: pair,
                                    BIAS_INPUT: bias[:, None]}, training=False)  # fmt: skip
            return {name: tf.reshape(tf.cast(predicted[name], tf.float32), [-1])
                    for name in (RATING_OUTPUT, INTERACTION_OUTPUT)}  # fmt: skip

    server = RecommenderServer()
    tf.saved_model.save(server, str(out_dir), signatures={"serving_default": server.serve.get_concrete_function()})


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
    chunk = max(1, 524_288 // max(n_known_items, 1))  # pairs scored per model call, bounded memory
    progress = Progress(logger, "test users ranked over the catalogue", total=len(users), interval_seconds=30)
    for start in range(0, len(users), chunk):
        block = users[start : start + chunk]
        block_scores, _ = score_all_items(model, history, block, n_known_items)
        for user, scores in zip(block, block_scores, strict=True):
            seen = history.train_items(int(user))
            ours.append(top_items(scores, seen, TOP_K))
            popular.append(top_items(popularity, seen, TOP_K))
        progress.advance(len(block))
    progress.done()
    truth = [relevant[int(u)] for u in users]
    hr, ndcg = metrics.hit_rate_and_ndcg(np.array(ours), truth, TOP_K) if len(users) else (0.0, 0.0)
    pop_hr, pop_ndcg = metrics.hit_rate_and_ndcg(np.array(popular), truth, TOP_K) if len(users) else (0.0, 0.0)
    return {
        "users": int(len(users)),
        "test": {"hr@10": round(hr, 4), "ndcg@10": round(ndcg, 4)},
        "baselines": {"mostpop": {"hr@10": round(pop_hr, 4), "ndcg@10": round(pop_ndcg, 4)}},
    }


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


def fit_and_evaluate(
    tables: dict[str, dict[str, np.ndarray]], n_known_users: int, n_known_items: int, settings: RatingSettings
) -> tuple[keras.Model, History, dict[str, Any]]:
    """Fit both heads on the train split (early stopping on eval); report rating and ranking beside baselines.

    Args:
        tables: per split, each review's user and item index, rating, CNN sentiment, autoencoder code and
            ``representation`` (CNN code + metadata, for the item metadata).
        n_known_users: user vocabulary size (index ``n_known_users`` is an unseen user).
        n_known_items: item vocabulary size.
        settings: hyperparameters.

    Returns:
        The two-head model, the train history it serves with, and the report (without ``seconds``).
    """
    seed_everything(settings.seed)
    n_users, n_items = n_known_users + 1, n_known_items + 1  # + the out-of-vocabulary index
    train = tables[schema.TRAIN]
    history = History.from_train(
        train[features.USER_INDEX], train[features.ITEM_INDEX], train["rating"], train["sentiment"], train["code"],
        _item_metadata(train), n_users, n_items,
    )  # fmt: skip
    own = {k: train[k] for k in ("rating", "sentiment", "code")}
    data = {split: pair_inputs(history, tables[split][features.USER_INDEX], tables[split][features.ITEM_INDEX],
                               own if split == schema.TRAIN else None) for split in schema.SPLITS}  # fmt: skip
    networks = build_rating_model(n_users, n_items, data[schema.TRAIN][HISTORY_INPUT].shape[1], settings)
    logger.info("train_dnn: %s train pairs, %d users, %d items", f"{len(train['rating']):,}", n_users, n_items)

    networks.rating.compile(optimizer=keras.optimizers.Adam(settings.learning_rate), loss="mse",
                            metrics=[keras.metrics.RootMeanSquaredError(name="rmse")])  # fmt: skip
    fit = networks.rating.fit(
        data[schema.TRAIN], train["rating"], validation_data=(data[schema.EVAL], tables[schema.EVAL]["rating"]),
        batch_size=settings.batch_size, epochs=settings.epochs, shuffle=True, verbose=0,
        callbacks=[keras.callbacks.EarlyStopping(monitor="val_rmse", patience=2, restore_best_weights=True),
                   ThroughputLogger(settings.batch_size)],
    )  # fmt: skip
    implicit_train = implicit_pairs(history, train, n_known_items, settings.negatives, settings.seed, True)
    implicit_eval = implicit_pairs(history, tables[schema.EVAL], n_known_items, settings.negatives,
                                   settings.seed + 1, False)  # fmt: skip
    networks.interaction.compile(optimizer=keras.optimizers.Adam(settings.learning_rate),
                                 loss="binary_crossentropy", metrics=[keras.metrics.AUC(name="auc")])  # fmt: skip
    implicit_fit = networks.interaction.fit(
        *implicit_train, validation_data=implicit_eval, batch_size=settings.batch_size, epochs=settings.epochs,
        shuffle=True, verbose=0,
        callbacks=[keras.callbacks.EarlyStopping(monitor="val_loss", patience=2, restore_best_weights=True),
                   ThroughputLogger(settings.batch_size)],
    )  # fmt: skip

    report: dict[str, Any] = {"settings": {**asdict(settings), "hidden_units": list(settings.hidden_units)}}
    for split in (schema.EVAL, schema.TEST):
        truth = tables[split]["rating"]
        predicted = networks.rating.predict(data[split], batch_size=16_384, verbose=0).reshape(-1)
        bias = np.clip(data[split][BIAS_INPUT], 1, 5)  # exactly the damped bias baseline outside train
        report[split] = {
            "rmse": round(metrics.rmse(truth, predicted), 4),
            "mae": round(metrics.mae(truth, predicted), 4),
        }
        mean = np.full(len(truth), history.global_mean)
        report.setdefault("baselines", {})[split] = {
            "global_mean": {"rmse": round(metrics.rmse(truth, mean), 4),
                            "mae": round(metrics.mae(truth, mean), 4)},
            "bias": {"rmse": round(metrics.rmse(truth, bias), 4), "mae": round(metrics.mae(truth, bias), 4)},
        }  # fmt: skip
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
    report["ranking"] = _ranking(
        networks.model, history, tables[schema.TEST], n_known_users, n_known_items, settings
    )
    report["history"] = curves(fit) | {f"interaction_{k}": v for k, v in curves(implicit_fit).items()}
    return networks.model, history, report


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
        model_dir: receives the serving SavedModel (raw user and item ids in, rating and ranking score out),
            and the Keras model, train history arrays and id vocabularies that ``recommend`` reads.
        report_path: JSON with RMSE / MAE and HR@10 / NDCG@10 beside the baselines.
        settings: hyperparameters.
    """
    import tensorflow_transform as tft

    settings = settings or RatingSettings()
    started = time.monotonic()
    spec = transformed_feature_spec(transform_graph_dir)
    graph = tft.TFTransformOutput(str(transform_graph_dir))
    n_known_users = graph.vocabulary_size_by_name(features.USER_VOCABULARY)
    n_known_items = graph.vocabulary_size_by_name(features.ITEM_VOCABULARY)
    cnn = keras.models.load_model(Path(cnn_model_dir) / "keras_model.keras")
    tables = {split: review_table(cnn, split_files(transformed_dir, split), spec) for split in schema.SPLITS}
    logger.info("train_dnn: CNN codes and sentiment of %s reviews (%.0f s)",
                f"{sum(len(t['rating']) for t in tables.values()):,}", time.monotonic() - started)  # fmt: skip
    tokens = {split: _review_tokens(split_files(transformed_dir, split), spec) for split in schema.SPLITS}
    train_ids, train_items = tokens[schema.TRAIN]
    corpus_rate, projection = fit_text_projection(train_ids, train_items, n_known_items + 1)
    for split, table in tables.items():
        if not np.array_equal(tokens[split][1], table[features.ITEM_INDEX]):
            raise TrainingError(f"review order differs between two reads of split {split!r}")
        # The autoencoder code carries sentiment; the text code carries the words that follow the item.
        sentiment_code = _encode(Path(encoder_dir), table["representation"])
        text_code = text_codes(tokens[split][0], corpus_rate, projection)
        table["code"] = np.concatenate([sentiment_code, text_code], axis=1)
    logger.info("train_dnn: autoencoder and text codes done (%.0f s)", time.monotonic() - started)
    model, history, report = fit_and_evaluate(tables, n_known_users, n_known_items, settings)
    report["seconds"] = round(time.monotonic() - started, 3)

    target = Path(model_dir)
    with staging_directory(target) as staging:
        (staging / "model").mkdir()
        vocabularies = [
            graph.vocabulary_by_name(name) for name in (features.USER_VOCABULARY, features.ITEM_VOCABULARY)
        ]
        export_serving_model(
            model, history, *[[v.decode() for v in vocab] for vocab in vocabularies], staging / "model"
        )
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

    Ranked by :func:`ranking_score`, as the report's HR@10 / NDCG@10 are. ``model_dir`` is train_dnn's model
    directory or a pushed ``recommender`` version (push copies it as it is).

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
    scores, ratings = score_all_items(model, history, np.array([user]), len(items))
    top = top_items(scores[0], history.train_items(user), k)
    return [(items[i], round(float(ratings[0, i]), 3)) for i in top]
