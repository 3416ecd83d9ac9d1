"""Benchmark: the two-tower model's batch size and learning rate, its eval and test NDCG@10 and seconds.

Usage: ``python benchmarks/retrieval_choices.py --run DIR [--points 1024:5e-4,4096:1e-3]``; DIR is a run's
pipeline root task directory. Builds the review codes and train history exactly as train_dnn does, then fits
the two-tower model at each (batch size, learning rate) with the other settings at their defaults (early stopping
on the eval in-batch softmax) and ranks the catalogue by its score alone for the same seeded eval and test users
as train_dnn's report. Prints one Markdown row per point.
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from pathlib import Path

import keras  # noqa: F401  (Keras 3 before anything imports tensorflow_transform)
import numpy as np
import tensorflow_transform as tft

from musicrec import features, schema
from musicrec.models.recommender.ranking import hit_rate_and_ndcg, relevant_items, sampled_users
from musicrec.models.recommender.retrieval import fit_two_tower
from musicrec.models.recommender.train import review_codes, train_history
from musicrec.settings import RatingSettings


def main() -> None:
    """Fit the two-tower model at each point and print the README rows."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, required=True)
    parser.add_argument("--points", default="1024:5e-4,2048:1e-3,4096:1e-3",
                        help="comma-separated batch_size:learning_rate pairs")  # fmt: skip
    args = parser.parse_args()
    defaults = RatingSettings()
    graph_dir = args.run / "preprocess" / "transform_graph"
    graph = tft.TFTransformOutput(str(graph_dir))
    n_users, n_items = (graph.vocabulary_size_by_name(name)
                        for name in (features.USER_VOCABULARY, features.ITEM_VOCABULARY))  # fmt: skip
    tables = review_codes(args.run / "preprocess" / "transformed_examples", graph_dir,
                          args.run / "train-cnn" / "model", args.run / "train-autoencoder" / "encoder", n_items,
                          defaults)  # fmt: skip
    history = train_history(tables[schema.TRAIN], n_users + 1, n_items + 1)
    ranked = {}
    for split, seed in ((schema.EVAL, defaults.seed + 1), (schema.TEST, defaults.seed)):  # as train_dnn samples
        relevant = relevant_items(tables[split], n_users, n_items)
        ranked[split] = (sampled_users(relevant, defaults.ranking_users, seed), relevant)

    def pairs(split: str) -> tuple:
        return tables[split][features.USER_INDEX], tables[split][features.ITEM_INDEX]

    print("| batch | learning rate | epochs | eval NDCG@10 | test NDCG@10 | seconds |")
    print("| ---: | ---: | ---: | ---: | ---: | ---: |")
    for point in args.points.split(","):
        batch, rate = point.split(":")
        settings = dataclasses.replace(defaults, retrieval_batch_size=int(batch),
                                       retrieval_learning_rate=float(rate))  # fmt: skip
        started = time.monotonic()
        users, items, fit = fit_two_tower(history, n_items, pairs(schema.TRAIN), pairs(schema.EVAL), settings)
        seconds = time.monotonic() - started

        def score(block: np.ndarray, users: np.ndarray = users, items: np.ndarray = items) -> np.ndarray:
            return users[block] @ items.T

        ndcg = {split: hit_rate_and_ndcg(score, history, who, relevant, n_items)["ndcg@10"]
                for split, (who, relevant) in ranked.items()}  # fmt: skip
        print(f"| {batch} | {rate} | {len(fit['loss'])} | {ndcg[schema.EVAL]:.4f} | {ndcg[schema.TEST]:.4f} | "
              f"{seconds:.0f} |", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
