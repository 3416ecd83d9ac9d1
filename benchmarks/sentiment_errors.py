"""Benchmark: where the sentiment model's test errors on generated data come from.

Usage: ``python benchmarks/sentiment_errors.py --run DIR``; DIR is a run's pipeline root task directory
(``runs/default/pipeline_root/music-recommender-<time>``). Scores the raw test reviews through the exported
SavedModel, as a client would, and counts the errors, and among them the reviews whose summary names a star count
on the other side of the label ("Three Stars" on a 5-star review): text the generator wrote for another rating
(``generate._LABEL_NOISE``), which no model can get right. Prints one line.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from musicrec import schema
from musicrec.data.text import normalize_to_string
from musicrec.models.sentiment import score_texts

_NEGATIVE_STARS = ("one star", "two star", "three star")  # normalized "One Star" ... "Three Stars"
_POSITIVE_STARS = ("four star", "five star")


def main() -> None:
    """Score the test split and print the error counts."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, required=True)
    args = parser.parse_args()
    test = pq.read_table(args.run / "ingest" / "examples" / schema.TEST).to_pandas()
    scores = score_texts(args.run / "train-cnn" / "model", test[schema.REVIEW_TEXT].tolist(),
                         test[schema.SUMMARY].tolist())  # fmt: skip
    positive = (test[schema.RATING] > schema.POSITIVE_RATING_THRESHOLD).to_numpy()
    wrong = (scores >= 0.5) != positive
    summaries = np.array([normalize_to_string(text) for text in test[schema.SUMMARY]])
    negative_stars, positive_stars = np.isin(summaries, _NEGATIVE_STARS), np.isin(summaries, _POSITIVE_STARS)
    contradicting = (negative_stars & positive) | (positive_stars & ~positive)
    print(
        f"{len(test):,} test reviews, {positive.mean():.1%} positive: {int(wrong.sum())} errors; "
        f"{int(contradicting.sum())} summaries name a star count against the label, "
        f"{int((contradicting & wrong).sum())} of them errors"
    )


if __name__ == "__main__":
    main()
