"""Benchmark: how much RMSE headroom over the damped bias baseline the generated data leaves any rating model.

Usage: ``python benchmarks/rating_headroom.py [--reviews N] [--seed S] [--examples DIR]``. Generates N
reviews (the default sample: 40,000, seed 2018) and ingests them with the project's chronological split, or
reads the split ingest already wrote for that data (``--examples``, e.g. a run's ``ingest/examples``). Then it
rebuilds the generator's planted world (its true users, items, genres and rating cuts) and scores the test
split with:

* the damped user + item bias baseline (lambda 10, train only), as train_dnn reports it;
* the *omniscient* predictor, E[stars | true user and item parameters]: a bound no model can reach, since
  most test users have no train review to learn their parameters from;
* a *genre-residual oracle*: the baseline plus each user's damped mean residual over train reviews of the
  item's true genre (genres are not in the data; the damping is the best of a grid chosen on the test split
  itself, so it is optimistic).

Prints one JSON object: test rows, the share by returning users, and each RMSE overall, for returning users
and for new users, with the gain over the baseline.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

from musicrec.data.generate import generate_dataset
from musicrec.data.ingest import ingest
from musicrec.data.planted import planted_world
from musicrec.metrics import rmse
from musicrec.models.recommender.history import BIAS_DAMPING, damped_bias_baseline

_GENRE_DAMPINGS = (0.5, 1.0, 2.0, 3.0, 5.0, 10.0)


def _indices(ids: pd.Series, vocabulary: dict[str, int]) -> np.ndarray:
    return ids.map(vocabulary).to_numpy(dtype=np.int64)


def _genre_residual_oracle(
    train: pd.DataFrame, test: pd.DataFrame, baseline: np.ndarray, train_baseline: np.ndarray, damping: float
) -> np.ndarray:
    """The baseline plus each user's residual over their train reviews in the test item's genre, damped."""
    residual = pd.Series(train["rating"].to_numpy() - train_baseline)
    keys = pd.MultiIndex.from_arrays([train["reviewer_id"], train["genre"]])
    sums = residual.groupby(keys).agg(["sum", "count"])
    wanted = pd.MultiIndex.from_arrays([test["reviewer_id"], test["genre"]])
    total = sums["sum"].reindex(wanted).fillna(0.0).to_numpy()
    count = sums["count"].reindex(wanted).fillna(0.0).to_numpy()
    return np.clip(baseline + total / (count + damping), 1.0, 5.0)


def measure(n_reviews: int, seed: int, examples: Path) -> dict[str, object]:
    """Score the test split of generated data with the baseline and the two oracles.

    Args:
        n_reviews: the ``--reviews`` the data was generated with.
        seed: its ``--seed``.
        examples: ingest's ``examples`` directory for that data.
    """
    world, _ = planted_world(n_reviews, seed=seed)
    users = {user: k for k, user in enumerate(world.user_ids)}
    items = {item: k for k, item in enumerate(world.item_ids)}
    train = pd.read_parquet(examples / "train")
    test = pd.read_parquet(examples / "test")
    # Reviews of asins outside the catalogue (orphans) have no planted item; the baseline scores them alike.
    train = train[train["asin"].isin(items)].reset_index(drop=True)
    test = test[test["asin"].isin(items)].reset_index(drop=True)
    if test.empty or not (train["reviewer_id"].isin(users).all() and test["reviewer_id"].isin(users).all()):
        raise SystemExit(
            f"{examples} was not ingested from data generated with --reviews {n_reviews} --seed {seed}"
        )
    for frame in (train, test):
        frame["user"], frame["item"] = _indices(frame["reviewer_id"], users), _indices(frame["asin"], items)
        frame["genre"] = world.item_genre[frame["item"].to_numpy()]

    n_users, n_items = len(world.user_ids), len(world.item_ids)
    mean, user_bias, item_bias = damped_bias_baseline(
        train["user"].to_numpy(), train["item"].to_numpy(), train["rating"].to_numpy(np.float64), n_users, n_items
    )

    def baseline(frame: pd.DataFrame) -> np.ndarray:
        return np.clip(mean + user_bias[frame["user"]] + item_bias[frame["item"]], 1.0, 5.0)

    truth = test["rating"].to_numpy(np.float64)
    returning = test["reviewer_id"].isin(set(train["reviewer_id"])).to_numpy()
    oracles = [
        (_genre_residual_oracle(train, test, baseline(test), baseline(train), d), d) for d in _GENRE_DAMPINGS
    ]
    genre_oracle, damping = min(oracles, key=lambda pair: rmse(truth, pair[0]))
    predictions = {
        "bias_baseline": baseline(test),
        "genre_residual_oracle": genre_oracle,
        "omniscient": world.expected_stars(test["user"].to_numpy(), test["item"].to_numpy()),
    }
    base = rmse(truth, predictions["bias_baseline"])
    scores = {
        name: {
            "rmse": round(rmse(truth, p), 4),
            "returning_users": round(rmse(truth[returning], p[returning]), 4),
            "new_users": round(rmse(truth[~returning], p[~returning]), 4),
            "gain_over_bias": f"{1 - rmse(truth, p) / base:.2%}",
        }
        for name, p in predictions.items()
    }
    return {
        "reviews": n_reviews, "seed": seed, "test_rows": len(test), "bias_damping": BIAS_DAMPING,
        "returning_user_share": round(float(returning.mean()), 3), "genre_oracle_damping": damping, **scores,
    }  # fmt: skip


def main() -> None:
    """Run the benchmark and print its JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reviews", type=int, default=40_000)
    parser.add_argument("--seed", type=int, default=2018)
    parser.add_argument("--examples", type=Path, help="ingest's examples of that data (default: generate, ingest)")
    args = parser.parse_args()
    if args.examples:
        print(json.dumps(measure(args.reviews, args.seed, args.examples), indent=1))
        return
    with tempfile.TemporaryDirectory() as work:
        files = generate_dataset(Path(work) / "data", args.reviews, seed=args.seed)
        examples = Path(work) / "examples"
        ingest(str(files.reviews_path), str(files.metadata_path), examples, f"{work}/q.json.gz", f"{work}/r.json")
        print(json.dumps(measure(args.reviews, args.seed, examples), indent=1))


if __name__ == "__main__":
    main()
