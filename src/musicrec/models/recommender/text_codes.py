"""Text codes: each review's words projected on the token directions that tell the catalogue's items apart."""

from __future__ import annotations

from typing import Any

import numpy as np

from musicrec import features
from musicrec.models.training import make_dataset

# Fixed: TEXT_SCALE brings text codes to the scale of the autoencoder codes; TEXT_CHUNK bounds memory.
# How many tokens and directions are settings (RatingSettings.text_tokens, text_dims).
TEXT_SCALE = 10.0
TEXT_CHUNK = 50_000  # reviews a step when reading text


def _token_presence(token_ids: np.ndarray, tokens: int) -> np.ndarray:
    """Which of the ``tokens`` most frequent tokens each review uses (0/1, reviews x tokens)."""
    present = np.zeros((len(token_ids), tokens), np.float32)
    rows = np.repeat(np.arange(len(token_ids)), token_ids.shape[1])
    ids = token_ids.ravel()
    known = (ids >= 1) & (ids <= tokens)  # ids run 1..V by frequency; 0 pads, V+1 is out of vocabulary
    present[rows[known], ids[known] - 1] = 1.0
    return present


def fit_text_projection(
    token_ids: np.ndarray, items: np.ndarray, n_items: int, tokens: int, dims: int
) -> tuple[np.ndarray, np.ndarray]:
    """Token directions that tell items apart, fit on train reviews: the words that follow the item (its genre).

    Each item's token rates over its train reviews become log lifts over the corpus rate; the top right singular
    vectors of that (items x tokens) matrix, items weighted by the square root of their review count (capped),
    are the directions. Sentiment words lift with every well-rated item alike, genre words with one group of
    items, so the leading directions separate genres. Returns (corpus token rate, tokens x dims projection).
    """
    counts = np.zeros((n_items, tokens), np.float32)  # 300 MB for the full catalogue at 1,000 tokens
    for start in range(0, len(token_ids), TEXT_CHUNK):
        chunk = slice(start, start + TEXT_CHUNK)
        np.add.at(counts, items[chunk], _token_presence(token_ids[chunk], tokens))
    reviews = np.bincount(items, minlength=n_items).astype(np.float64)
    corpus_rate = counts.sum(0) / max(len(items), 1)
    reviewed = reviews > 0
    lift = np.log((counts[reviewed] / reviews[reviewed, None] + 1e-3) / (corpus_rate + 1e-3))
    weighted = (lift - lift.mean(0)) * np.sqrt(np.minimum(reviews[reviewed], 50.0))[:, None]
    # The right singular vectors are the eigenvectors of the small tokens x tokens Gram matrix.
    values, vectors = np.linalg.eigh(weighted.T @ weighted)
    return corpus_rate.astype(np.float32), vectors[:, np.argsort(-values)[:dims]].astype(np.float32)


def text_codes(token_ids: np.ndarray, corpus_rate: np.ndarray, projection: np.ndarray) -> np.ndarray:
    """Each review's text on the :func:`fit_text_projection` directions (its own words only)."""
    out = np.zeros((len(token_ids), projection.shape[1]), np.float32)
    for start in range(0, len(token_ids), TEXT_CHUNK):
        present = _token_presence(token_ids[start : start + TEXT_CHUNK], projection.shape[0])
        used = np.maximum(present.sum(1, keepdims=True), 1.0)
        out[start : start + TEXT_CHUNK] = TEXT_SCALE * (present - corpus_rate) @ projection / used
    return out


def read_review_tokens(files: list[str], spec: dict[str, Any], tokens: int) -> tuple[np.ndarray, np.ndarray]:
    """Review token ids and item indices of a split, in file order (the order of ``review_table``).

    Only the ``tokens`` most frequent ids are kept (the rest read as padding, 0), in 16 bits when they fit: the
    full category's reviews took 3.2 GB as 64-bit ids.
    """
    dtype = np.uint16 if tokens < 2**16 else np.int64
    dataset = make_dataset(files, spec, (features.REVIEW_IDS, features.ITEM_INDEX), features.RATING_LABEL, 8_192)
    ids, items = [], []
    for inputs, _ in dataset:
        batch = inputs[features.REVIEW_IDS].numpy()
        ids.append(np.where(batch <= tokens, batch, 0).astype(dtype))
        items.append(inputs[features.ITEM_INDEX].numpy())
    return np.concatenate(ids), np.concatenate(items)
