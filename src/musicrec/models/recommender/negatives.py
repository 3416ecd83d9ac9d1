"""Negative sampling for the interaction head: items a user never reviewed, against each of their reviews."""

from __future__ import annotations

import numpy as np

from musicrec import features
from musicrec.models.recommender.history import History, pair_inputs


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
