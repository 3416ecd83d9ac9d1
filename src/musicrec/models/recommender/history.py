"""Leave-one-out train-history features of (user, item) pairs: the recommender's inputs besides the ids.

Each side (user, item) contributes its train aggregates: mean review code, mean CNN sentiment, damped mean
rating, review count; the pair adds how the two histories match and the user's taste for the item, and the
damped user + item bias prediction. A train pair's features leave its own review out (``own``), so no review
ever sees itself; eval and test pairs see train aggregates only.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from musicrec import features

# Fixed by the evaluation protocol: lambda of the damped bias baseline (docs/architecture.md), and of the
# damped history means, which must stay the baseline's terms for the rating head to start from it.
BIAS_DAMPING = 10.0
HISTORY_INPUT = "history"
BIAS_INPUT = "bias_prediction"


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

    def to_arrays(self) -> dict[str, np.ndarray]:
        """Every field as an array (what a recommender bundle stores)."""
        return {k: np.asarray(v) for k, v in asdict(self).items()}

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray]) -> History:
        """Read what :meth:`to_arrays` gave."""
        return cls(**{k: (float(v) if k == "global_mean" else v) for k, v in arrays.items()})

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
