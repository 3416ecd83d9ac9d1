"""Benchmark: rank a full-scale catalogue for the evaluation's 5,000 users through the recommender's ranking code.

Usage: ``python benchmarks/ranking_speed.py [--items 70000] [--users 5000] [--reviews 600000]``. Builds a train
history of random reviews at full scale (codes as wide as train_dnn's: autoencoder bottleneck + text dims),
random tower vectors of the trained shape, an untrained two-head DNN of the trained shape and EASE^R on the
4,096 most reviewed items, then times what HR@10 / NDCG@10 run per user: two-tower retrieval of
``retrieval_candidates`` items (one matrix product and top-k, in chunks), EASE^R and the DNN on those
candidates, the blend and the top 10 (``Ranker.retrieve`` then ``Ranker.top``), and the retrieval stage alone
(``retrieve``). The weights are random: the time does not depend on them. Prints one JSON object with the
seconds of each part.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

from musicrec.models.recommender.classic import Catalogue, ease
from musicrec.models.recommender.history import History, history_inputs
from musicrec.models.recommender.network import build_rating_model
from musicrec.models.recommender.ranking import TOP_K
from musicrec.models.recommender.rerank import Ranker
from musicrec.models.recommender.retrieval import retrieve
from musicrec.settings import AutoencoderSettings, RatingSettings


def main() -> None:
    """Build the full-scale ranker, rank the users, print the seconds."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=70_000, help="catalogue size")
    parser.add_argument("--users", type=int, default=5_000, help="users ranked (each with train history)")
    parser.add_argument("--reviews", type=int, default=600_000, help="random train reviews behind the history")
    args = parser.parse_args()
    settings = RatingSettings()
    rng = np.random.default_rng(0)
    n_users = 4 * args.users + 1  # + the out-of-vocabulary index
    # Zipf-like item popularity, as in real catalogues: EASE^R's 4,096 items carry most reviews.
    weights = 1.0 / np.arange(1, args.items + 1) ** 0.8
    users = rng.integers(0, n_users - 1, args.reviews)
    items = rng.choice(args.items, args.reviews, p=weights / weights.sum())
    code_width = AutoencoderSettings().bottleneck + settings.text_dims
    started = time.monotonic()
    history = History.from_train(users, items, rng.integers(1, 6, args.reviews).astype(np.float64),
                                 rng.random(args.reviews), rng.normal(size=(args.reviews, code_width)),
                                 rng.normal(size=(args.reviews, 4)), n_users, args.items + 1)  # fmt: skip
    popularity = history.item_count[: args.items].astype(np.float64)
    catalogue = Catalogue.of(history, args.items)
    scorer = ease(catalogue, catalogue.co_reviews(), popularity, 500.0)
    width = history_inputs(history, np.zeros(1, np.int64), np.zeros(1, np.int64)).shape[1]
    model = build_rating_model(n_users, args.items + 1, width, settings).model
    ranker = Ranker(history, rng.normal(size=(n_users, settings.retrieval_dim)).astype(np.float32),
                    rng.normal(size=(args.items, settings.retrieval_dim)).astype(np.float32), scorer, model,
                    settings.retrieval_candidates, (0.5, 0.25, 0.25))  # fmt: skip
    built = time.monotonic() - started
    ranked_users = np.sort(rng.choice(np.flatnonzero(history.user_count[:-1]), args.users, replace=False))
    started = time.monotonic()
    retrieve(history, ranker.user_vectors, ranker.item_vectors, ranker.popularity, ranked_users, ranker.candidates)
    matrix_product_and_top_k = time.monotonic() - started
    started = time.monotonic()
    found = ranker.retrieve(ranked_users)
    retrieved = time.monotonic() - started
    top, _, _ = ranker.top(found, TOP_K)
    total = time.monotonic() - started
    assert top.shape == (args.users, TOP_K) and (top >= 0).all()
    print(json.dumps({"items": args.items, "users": args.users, "candidates": ranker.candidates,
                      "classic_items": int(len(catalogue.items)), "setup_seconds": round(built, 1),
                      "two_tower_top_candidates_seconds": round(matrix_product_and_top_k, 1),
                      "retrieve_and_score_candidates_seconds": round(retrieved, 1),
                      "ranking_seconds": round(total, 1)}))  # fmt: skip


if __name__ == "__main__":
    main()
