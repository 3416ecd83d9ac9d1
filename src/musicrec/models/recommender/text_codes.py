"""Text codes: each review's words projected on the token directions that tell the catalogue's items apart."""

from __future__ import annotations

import numpy as np

# Fixed: TEXT_SCALE brings text codes to the scale of the autoencoder codes; TEXT_CHUNK bounds memory.
# How many tokens and directions are settings (RatingSettings.text_tokens, text_dims).
TEXT_SCALE = 10.0
TEXT_CHUNK = 50_000  # reviews a step when reading text


def _present_tokens(token_ids: np.ndarray, tokens: int) -> tuple[np.ndarray, np.ndarray]:
    """The distinct tokens among the ``tokens`` most frequent that each review uses, as (row, column) pairs.

    Rows ascend; a column is a token id less one (ids run 1..V by frequency; 0 pads, V+1 is out of vocabulary).
    Sparse: a review uses a few dozen of the ``tokens``, so a dense reviews x tokens matrix was mostly zeros.
    """
    ids = np.sort(token_ids, axis=1)
    keep = (ids >= 1) & (ids <= tokens)
    keep[:, 1:] &= ids[:, 1:] != ids[:, :-1]  # a token repeated in a review counts once
    rows, positions = np.nonzero(keep)
    return rows, ids[rows, positions].astype(np.int64) - 1


def fit_text_projection(
    token_ids: np.ndarray, items: np.ndarray, n_items: int, tokens: int, dims: int
) -> tuple[np.ndarray, np.ndarray]:
    """Token directions that tell items apart, fit on train reviews: the words that follow the item (its genre).

    Each item's token rates over its train reviews become log lifts over the corpus rate; the top right singular
    vectors of that (items x tokens) matrix, items weighted by the square root of their review count (capped),
    are the directions. Sentiment words lift with every well-rated item alike, genre words with one group of
    items, so the leading directions separate genres. Returns (corpus token rate, tokens x dims projection).
    """
    cells = []  # item * tokens + token of each (review, distinct token) pair
    for start in range(0, len(token_ids), TEXT_CHUNK):
        rows, columns = _present_tokens(token_ids[start : start + TEXT_CHUNK], tokens)
        cells.append(items[start : start + TEXT_CHUNK][rows].astype(np.int64) * tokens + columns)
    # Reviews of each item that use each token: 270 MB for the full catalogue at 1,000 tokens.
    counts = np.bincount(np.concatenate(cells), minlength=n_items * tokens).astype(np.float32).reshape(n_items, -1)
    del cells
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
    corpus_direction = corpus_rate @ projection
    for start in range(0, len(token_ids), TEXT_CHUNK):
        chunk = token_ids[start : start + TEXT_CHUNK]
        rows, columns = _present_tokens(chunk, projection.shape[0])
        summed = np.zeros_like(out[: len(chunk)])
        if len(rows):
            reviews, first = np.unique(rows, return_index=True)
            summed[reviews] = np.add.reduceat(projection[columns], first, axis=0)
        used = np.maximum(np.bincount(rows, minlength=len(chunk)), 1)[:, None]
        out[start : start + len(chunk)] = TEXT_SCALE * (summed - corpus_direction) / used
    return out
