"""benchmarks/ratios.py: its ranking reference agrees with ours (ties included); the rows it preprocesses."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).parents[1] / "benchmarks"))

import ratios  # noqa: E402

from musicrec import schema  # noqa: E402
from musicrec.models.recommender import retrieval  # noqa: E402


def test_chunked_top_equals_brute_force_in_order_ties_included(monkeypatch):
    rng = np.random.default_rng(1)
    # Small integer vectors: many equal scores, so the tie rule (lower item index first) decides the order.
    users = rng.integers(-2, 3, size=(37, 4)).astype(np.float32)
    items = rng.integers(-2, 3, size=(300, 4)).astype(np.float32)
    monkeypatch.setattr(retrieval, "SCORE_BLOCK", 5 * len(items))  # chunks of 5 users, the last one short
    ours = ratios.chunked_top(users, items, 10)
    assert ours.shape == (37, 10)
    np.testing.assert_array_equal(ours, ratios.brute_force_top(users, items, 10))


def test_take_rows_keeps_the_first_rows_of_each_split_in_proportion(tmp_path):
    sizes = {schema.TRAIN: 80, schema.EVAL: 10, schema.TEST: 10}
    for split, rows in sizes.items():
        (tmp_path / "in" / split).mkdir(parents=True)
        for part, start in enumerate(range(0, rows, 30)):  # several shards, read in order
            ids = [f"{split}-{i}" for i in range(start, min(start + 30, rows))]
            path = tmp_path / "in" / split / f"part-{part:05d}.parquet"
            pq.write_table(pa.table({schema.REVIEWER_ID: ids}), path)
    taken = ratios.take_rows(tmp_path / "in", tmp_path / "out", 50)
    assert taken == {schema.TRAIN: 40, schema.EVAL: 5, schema.TEST: 5}
    for split, rows in taken.items():
        ids = pq.read_table(tmp_path / "out" / split).column(schema.REVIEWER_ID).to_pylist()
        assert ids == [f"{split}-{i}" for i in range(rows)]


def test_markdown_states_each_ratio_as_ours_speed_over_the_reference():
    ranking = {"users": 5, "items": 7, "k": 10, "unit": "seconds"}
    cnn = {"steps": 3, "batch_size": 256, "unit": "examples/s"}
    results = {
        "ranking": {**ranking, "ours": 2.0, "reference": 8.0, "ratio": 4.0},
        "cnn": {**cnn, "ours": 900.0, "reference": 1000.0, "ratio": 0.9},
    }
    table = ratios.markdown(results, 2).splitlines()
    assert "speed ratio (ours / reference)" in table[0]
    assert table[2].endswith("| 2.0 s | 8.0 s | **4.00** |")
    assert table[3].endswith("| 900 examples/s | 1,000 examples/s | **0.90** |")
