"""Benchmark: rating-head training pairs/s with the full category's id tables, dense against sparse updates.

Usage: ``python benchmarks/embedding_speed.py [--users 382893] [--items 67360] [--pairs 100000]``. Builds the
rating DNN at the full category's user and item vocabulary sizes twice, on the same random pairs: once as it was
(Keras' Adam, L2 on the whole id tables, so every step reads and writes every row) and once as it trains now
(:class:`~musicrec.models.recommender.embeddings.LazyAdam`, L2 on the rows a batch looks up). Prints pairs/s of
one epoch each after a warm-up, alternating the two twice, and the ratio of the medians.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from unittest import mock

import keras  # Keras 3 before anything imports tensorflow_transform
import numpy as np
from keras import layers

from musicrec import features
from musicrec.models.recommender import network
from musicrec.models.recommender.embeddings import LazyAdam
from musicrec.models.recommender.history import BIAS_INPUT, HISTORY_INPUT
from musicrec.settings import RatingSettings

_HISTORY_WIDTH = 142  # the rating DNN's history input at the default settings


def table_l2_embedding(
    rows: int, width: int, l2: float, name: str | None = None, initializer: str = "uniform"
) -> layers.Embedding:
    """The id embedding as it was: L2 on the whole table (dense gradients)."""
    return layers.Embedding(rows, width, embeddings_initializer=initializer,
                            embeddings_regularizer=keras.regularizers.L2(l2), name=name)  # fmt: skip


def pairs_per_second(
    sparse: bool, data: dict[str, np.ndarray], ratings: np.ndarray, args: argparse.Namespace
) -> float:
    """One epoch of the rating head over ``data``; pairs/s."""
    settings = RatingSettings()
    if sparse:
        networks = network.build_rating_model(args.users, args.items, _HISTORY_WIDTH, settings)
        optimizer: keras.optimizers.Optimizer = LazyAdam(settings.learning_rate)
    else:
        with mock.patch.object(network, "id_embedding", table_l2_embedding):
            networks = network.build_rating_model(args.users, args.items, _HISTORY_WIDTH, settings)
        optimizer = keras.optimizers.Adam(settings.learning_rate)
    networks.rating.compile(optimizer=optimizer, loss="mse")
    warm = {name: values[: settings.batch_size * 5] for name, values in data.items()}
    networks.rating.fit(warm, ratings[: len(warm[BIAS_INPUT])], batch_size=settings.batch_size, verbose=0)
    started = time.monotonic()
    networks.rating.fit(data, ratings, batch_size=settings.batch_size, epochs=1, verbose=0)
    return len(ratings) / (time.monotonic() - started)


def main() -> None:
    """Run the benchmark and print the result."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=382_893)
    parser.add_argument("--items", type=int, default=67_360)
    parser.add_argument("--pairs", type=int, default=100_000)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    data = {
        features.USER_INDEX: rng.integers(0, args.users, args.pairs),
        features.ITEM_INDEX: rng.integers(0, args.items, args.pairs),
        HISTORY_INPUT: rng.normal(size=(args.pairs, _HISTORY_WIDTH)).astype(np.float32),
        BIAS_INPUT: rng.uniform(1, 5, (args.pairs, 1)).astype(np.float32),
    }
    ratings = rng.uniform(1, 5, args.pairs).astype(np.float32)
    rates: dict[str, list[float]] = {"dense": [], "sparse": []}
    for _ in range(2):
        for kind in rates:
            rates[kind].append(pairs_per_second(kind == "sparse", data, ratings, args))
    medians = {kind: round(statistics.median(values)) for kind, values in rates.items()}
    runs = {kind: [round(rate) for rate in values] for kind, values in rates.items()}
    ratio = round(medians["sparse"] / medians["dense"], 2)
    print(json.dumps({"pairs_per_second": medians, "runs": runs, "ratio": ratio, **vars(args)}))


if __name__ == "__main__":
    main()
