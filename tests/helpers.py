"""Small helpers shared by test modules."""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Any


def read_lines(path: Path) -> list[bytes]:
    """The lines of a gzipped file, without their newlines."""
    with gzip.open(path, "rb") as handle:
        return handle.read().splitlines()


def read_records(path: Path) -> list[dict[str, Any]]:
    """The JSON objects of a gzipped JSON-lines file."""
    return [json.loads(line) for line in read_lines(path)]


def small_cnn_settings():  # noqa: ANN201 - a CnnSettings
    """CNN settings small enough for tests on the small data set."""
    from musicrec.settings import CnnSettings

    return CnnSettings(embedding_dim=16, filters=16, batch_size=128, epochs=2, seed=7)


def small_rating_settings():  # noqa: ANN201 - a RatingSettings
    """Rating settings small enough for tests on the small data set."""
    from musicrec.settings import RatingSettings

    return RatingSettings(epochs=3, batch_size=128, ranking_users=200, seed=5)
