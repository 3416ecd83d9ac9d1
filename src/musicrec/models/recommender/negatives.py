"""Negative sampling for the interaction head: items a user never reviewed, against each of their reviews."""

from __future__ import annotations

from dataclasses import dataclass

import keras
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


@dataclass(frozen=True)
class Pairs:
    """(user, item) pairs and their labels, the model inputs not yet computed (they take 142 floats a pair).

    ``own_rows`` (with ``own``, a split's rating, sentiment and code columns) names the train review each pair's
    inputs leave out, and ``own_items`` that review's item; ``None`` for pairs outside train.
    """

    users: np.ndarray
    items: np.ndarray
    labels: np.ndarray
    own: dict[str, np.ndarray] | None = None
    own_rows: np.ndarray | None = None
    own_items: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.labels)

    def inputs(self, history: History, rows: np.ndarray | slice = slice(None)) -> dict[str, np.ndarray]:
        """The model inputs of the pairs at ``rows`` (all by default)."""
        own = None
        if self.own is not None and self.own_rows is not None and self.own_items is not None:
            own = {name: values[self.own_rows[rows]] for name, values in self.own.items()}
            own["item"] = self.own_items[rows]
        return pair_inputs(history, self.users[rows], self.items[rows], own)


class PairBatches(keras.utils.PyDataset):
    """Shuffled training batches of :class:`Pairs`, each batch's inputs computed when Keras asks for it.

    The interaction head's inputs for the full category's 6.3M train pairs took over 7 GB as arrays (train_dnn
    ran out of memory); a batch's take a few hundred KB. The order is reshuffled (seeded) at each pass.
    """

    def __init__(self, history: History, pairs: Pairs, batch_size: int, seed: int) -> None:
        super().__init__()
        self.history, self.pairs, self.batch_size = history, pairs, batch_size
        self._rng = np.random.default_rng(seed)
        self._order = self._rng.permutation(len(pairs))
        self._passes = 0

    def __len__(self) -> int:
        return -(-len(self.pairs) // self.batch_size)

    def __getitem__(self, index: int) -> tuple[dict[str, np.ndarray], np.ndarray]:
        """Batch ``index`` of the current pass; asking for batch 0 again starts a reshuffled pass."""
        if index == 0:
            if self._passes:
                self._order = self._rng.permutation(len(self.pairs))
            self._passes += 1
        rows = self._order[index * self.batch_size : (index + 1) * self.batch_size]
        return self.pairs.inputs(self.history, rows), self.pairs.labels[rows]


def implicit_pairs(
    history: History, table: dict[str, np.ndarray], n_known_items: int, per_positive: int, seed: int,
    leave_out: bool,
) -> Pairs:  # fmt: skip
    """The interaction head's pairs: each review of a catalogue item (label 1) and sampled negatives (label 0).

    Args:
        history: train aggregates.
        table: a split's reviews (user and item indices, rating, sentiment, code).
        n_known_items: catalogue size; reviews of unseen items are skipped.
        per_positive: negatives for each review.
        seed: seeds the negative sample.
        leave_out: the reviews are train reviews: their inputs, and their negatives' user side, leave them out.
    """
    keep = np.flatnonzero(table[features.ITEM_INDEX] < n_known_items)
    users, items = table[features.USER_INDEX][keep], table[features.ITEM_INDEX][keep]
    rows, negatives = sample_negatives(history, users, n_known_items, per_positive, seed)
    if not leave_out:
        # An eval review may repeat a train item: only items the user did not review in either count as negative.
        novel = negatives != items[rows]
        rows, negatives = rows[novel], negatives[novel]
    labels = np.concatenate([np.ones(len(users)), np.zeros(len(rows))]).astype(np.float32)
    all_users, all_items = np.concatenate([users, users[rows]]), np.concatenate([items, negatives])
    if not leave_out:
        return Pairs(all_users, all_items, labels)
    # A negative competes with its review for the same user history, so its user side leaves that review out.
    own = {name: table[name] for name in ("rating", "sentiment", "code")}
    own_rows = np.concatenate([keep, keep[rows]])
    return Pairs(all_users, all_items, labels, own, own_rows, np.concatenate([items, items[rows]]))
