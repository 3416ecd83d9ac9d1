"""Preprocess: train-only analyzers, no training/serving skew, determinism, the data report, clear errors."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from musicrec import features, schema
from musicrec.data.ingest import ingest
from musicrec.data.transform import preprocess, transform_rows
from musicrec.errors import PreprocessError
from musicrec.settings import TransformSettings

UNSEEN_TOKEN = "zyzzyvaquux"
SETTINGS = TransformSettings(
    min_token_frequency=2, max_review_tokens=40, review_tail_tokens=10, max_summary_tokens=8
)


def _unseen_rows(unix_time: int) -> pa.Table:
    """Test-only rows: a new user, a new item, a token that never occurs in train."""
    rows = [
        {schema.REVIEWER_ID: "ANEWUSER000001", schema.ASIN: "BNEWITEM01", schema.RATING: 5,
         schema.UNIX_TIME: unix_time, schema.REVIEW_TEXT: f"{UNSEEN_TOKEN} {UNSEEN_TOKEN} is great. Not bad!",
         schema.SUMMARY: UNSEEN_TOKEN.title(), schema.VERIFIED: True, schema.HELPFUL_VOTES: 3,
         schema.FORMAT: "", schema.N_IMAGES: 0, schema.TITLE: "", schema.BRAND: "", schema.PRICE: None,
         schema.SALES_RANK: None, schema.HAS_METADATA: False}
        for _ in range(3)
    ]  # fmt: skip
    return pa.Table.from_pylist(rows, schema=schema.EXAMPLES_SCHEMA)


@pytest.fixture(scope="module")
def examples_dir(small_dataset, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("ingest")
    ingest(str(small_dataset.reviews_path), str(small_dataset.metadata_path), out / "examples",
           out / "q.jsonl.gz", out / "report.json")  # fmt: skip
    last = pq.read_table(out / "examples" / schema.TEST).column(schema.UNIX_TIME).to_numpy().max()
    pq.write_table(_unseen_rows(int(last)), out / "examples" / schema.TEST / "part-99999.parquet")
    return out / "examples"


def run(examples: Path, out: Path, **options) -> dict:
    return preprocess(
        examples, out / "transformed", out / "graph", out / "report.json", out / "report.md", SETTINGS, **options
    )


@pytest.fixture(scope="module")
def preprocessed(examples_dir, tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("preprocess")
    return out, run(examples_dir, out)


def read_transformed(out: Path, split: str) -> dict[str, np.ndarray]:
    import tensorflow as tf
    import tensorflow_transform as tft

    spec = tft.TFTransformOutput(str(out / "graph")).transformed_feature_spec()
    files = sorted(str(p) for p in (out / "transformed" / split).glob("*.tfrecord.gz"))
    records = list(tf.data.TFRecordDataset(files, compression_type="GZIP").as_numpy_iterator())
    return {name: value.numpy() for name, value in tf.io.parse_example(records, spec).items()}


def rows_as_sorted_matrix(columns: dict[str, np.ndarray]) -> np.ndarray:
    """Every feature of a row side by side, rows in a canonical order (Beam may reorder rows)."""
    names = sorted(columns)
    matrix = np.hstack([np.asarray(columns[n], np.float64).reshape(len(columns[n]), -1) for n in names])
    return matrix[np.lexsort(matrix.T[::-1])]


def vocabulary(out: Path, name: str) -> list[str]:
    return (out / "graph" / "transform_fn" / "assets" / name).read_text().splitlines()


def test_outputs_layout_and_row_counts(preprocessed, examples_dir):
    out, report = preprocessed
    for split in schema.SPLITS:
        expected = pq.read_table(examples_dir / split).num_rows
        assert report["splits"][split]["rows"] == expected
        assert len(read_transformed(out, split)[features.RATING_LABEL]) == expected
    assert (out / "report.md").read_text().startswith("# Preprocess report")
    assert set(report["transformed_features"]) >= {
        features.REVIEW_IDS,
        features.USER_INDEX,
        features.SENTIMENT_LABEL,
    }


def test_vocabularies_are_fit_on_train_only(preprocessed, examples_dir):
    out, report = preprocessed
    review_vocabulary = vocabulary(out, features.REVIEW_VOCABULARY)
    assert UNSEEN_TOKEN not in review_vocabulary and UNSEEN_TOKEN not in vocabulary(
        out, features.SUMMARY_VOCABULARY
    )
    assert len(review_vocabulary) == report["vocabulary_sizes"][features.REVIEW_VOCABULARY]
    train_users = set(pq.read_table(examples_dir / schema.TRAIN).column(schema.REVIEWER_ID).to_pylist())
    assert set(vocabulary(out, features.USER_VOCABULARY)) == train_users
    test = read_transformed(out, schema.TEST)
    unseen = test[features.USER_INDEX] == len(train_users)  # the out-of-vocabulary bucket
    assert unseen.sum() >= 3
    oov_id = len(review_vocabulary) + 1
    # "zyzzyvaquux zyzzyvaquux great not bad_NEG": the unseen token is out of vocabulary, the rest is known.
    crafted = transform_rows(out / "graph", _unseen_rows(0).to_pylist())
    assert (crafted[features.REVIEW_IDS][:, :2] == oov_id).all()
    assert (crafted[features.REVIEW_IDS][:, 2:5] != oov_id).all() and (
        crafted[features.REVIEW_IDS][:, 2:5] > 0
    ).all()
    assert (crafted[features.USER_INDEX] == len(train_users)).all()
    written = (test[features.REVIEW_IDS][:, :2] == oov_id).all(axis=1) & (test[features.REVIEW_LENGTH] == 5)
    assert written.sum() >= 3
    assert report["splits"][schema.TEST][features.REVIEW_VOCABULARY]["oov_rate"] > 0


def test_serving_transform_equals_training_features(preprocessed, examples_dir):
    """Raw test rows through the saved graph at serving time give exactly what the Beam job wrote."""
    out, _ = preprocessed
    rows = pq.read_table(examples_dir / schema.TEST).to_pylist()
    served = transform_rows(out / "graph", rows)
    written = read_transformed(out, schema.TEST)
    assert set(served) == set(written)
    for name, values in served.items():
        assert values.dtype == written[name].dtype, name
    np.testing.assert_allclose(rows_as_sorted_matrix(served), rows_as_sorted_matrix(written), rtol=0, atol=1e-5)


def test_serving_without_a_rating_still_transforms(preprocessed, examples_dir):
    out, _ = preprocessed
    row = pq.read_table(examples_dir / schema.TEST).slice(0, 1).to_pylist()[0]
    del row[schema.RATING]
    served = transform_rows(out / "graph", [row])
    assert served[features.REVIEW_IDS].shape == (1, SETTINGS.max_review_tokens)


def test_a_long_review_keeps_its_first_and_last_tokens(preprocessed, examples_dir):
    """Head and tail truncation: a review over max_review_tokens keeps its first 30 and its last 10 tokens."""
    out, _ = preprocessed
    row = pq.read_table(examples_dir / schema.TEST).slice(0, 1).to_pylist()[0]
    words = [f"word{i}" for i in range(60)]  # distinct and unknown: every id is out of vocabulary
    words[:3], words[-3:] = ["great", "album", "love"], ["terrible", "boring", "awful"]
    long_row, cut_row = {**row, schema.REVIEW_TEXT: " ".join(words)}, {**row}
    cut_row[schema.REVIEW_TEXT] = " ".join(words[:30] + words[-10:])
    long_ids, cut_ids = (transform_rows(out / "graph", [r])[features.REVIEW_IDS][0] for r in (long_row, cut_row))
    np.testing.assert_array_equal(long_ids, cut_ids)
    oov = len(vocabulary(out, features.REVIEW_VOCABULARY)) + 1
    assert (long_ids[-3:] != oov).all() and (long_ids[:3] != oov).all()  # the kept ends are known words
    assert (long_ids != features.PADDING_ID).all()
    assert transform_rows(out / "graph", [long_row])[features.REVIEW_LENGTH][0] == 60


def test_padding_and_lengths(preprocessed):
    out, _ = preprocessed
    train = read_transformed(out, schema.TRAIN)
    ids, lengths = train[features.REVIEW_IDS], train[features.REVIEW_LENGTH]
    kept = np.minimum(lengths, SETTINGS.max_review_tokens)
    assert ((ids != features.PADDING_ID).sum(axis=1) == kept).all()
    assert set(np.unique(train[features.SENTIMENT_LABEL])) == {0, 1}
    assert ((train[features.SENTIMENT_LABEL] == 1) == (train[features.RATING_LABEL] > 3)).all()
    assert abs(train[features.HELPFUL_VOTES_Z].mean()) < 1e-3  # z-scored with train statistics


def test_missing_price_is_flagged_not_invented(preprocessed, examples_dir):
    out, _ = preprocessed
    prices = pq.read_table(examples_dir / schema.TEST).column(schema.PRICE).to_pylist()
    served = transform_rows(out / "graph", pq.read_table(examples_dir / schema.TEST).to_pylist())
    missing = np.array([p is None for p in prices])
    assert missing.any() and (~missing).any()
    assert (served[features.PRICE_MISSING][missing] == 1).all() and (served[features.PRICE_Z][missing] == 0).all()
    assert (served[features.PRICE_MISSING][~missing] == 0).all()


def test_data_report_top_tokens_carry_sentiment(preprocessed):
    _, report = preprocessed
    top = report["top_tokens"][features.REVIEW_VOCABULARY]
    positive = {token for token, _ in top["positive"]}
    negative = {token for token, _ in top["negative"]}
    assert positive != negative
    assert any(token.endswith("_NEG") for token in negative)


@pytest.mark.parametrize(
    "options",
    [
        {"normalizer_processes": 0},  # text normalized inside the job, as on a distributed runner
        # The mode large inputs get by default: a DirectRunner worker process per core.
        {"beam_options": "--direct_running_mode=multi_processing --direct_num_workers=2"},
    ],
    ids=["inline-normalization", "multi-process-runner"],
)
def test_beam_job_is_deterministic(preprocessed, examples_dir, tmp_path, options):
    """Another run, normalizing inside the job or with worker processes, writes the same data."""
    first_out, first = preprocessed
    second = run(examples_dir, tmp_path, **options)
    for name in features.VOCABULARIES:
        assert vocabulary(first_out, name) == vocabulary(tmp_path, name)
    assert first["splits"] == second["splits"] and first["top_tokens"] == second["top_tokens"]
    for split in schema.SPLITS:
        a, b = read_transformed(first_out, split), read_transformed(tmp_path, split)
        for name in a:
            if np.issubdtype(a[name].dtype, np.integer):
                np.testing.assert_array_equal(np.sort(a[name], axis=0), np.sort(b[name], axis=0))
        # z-score statistics are float sums whose order Beam does not fix: equal to float precision.
        np.testing.assert_allclose(rows_as_sorted_matrix(a), rows_as_sorted_matrix(b), rtol=0, atol=1e-5)


def test_missing_split_is_a_clear_error(examples_dir, tmp_path):
    partial = tmp_path / "examples"
    shutil.copytree(examples_dir, partial)
    shutil.rmtree(partial / schema.EVAL)
    with pytest.raises(PreprocessError, match=r"no Parquet shards for split\(s\) eval under"):
        run(partial, tmp_path / "out")
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_worker_counts_follow_the_cgroup_cpu_limit_not_the_node(tmp_path):
    import os

    from musicrec.data.transform import usable_cpus

    node = len(os.sched_getaffinity(0))
    assert usable_cpus(tmp_path / "none") == node  # no cgroup files: the affinity decides
    (tmp_path / "v2").mkdir()
    (tmp_path / "v2" / "cpu.max").write_text("max 100000\n")
    assert usable_cpus(tmp_path / "v2") == node  # no limit
    (tmp_path / "v2" / "cpu.max").write_text("50000 100000\n")
    assert usable_cpus(tmp_path / "v2") == 1  # half a CPU still gets one worker
    (tmp_path / "v1" / "cpu").mkdir(parents=True)
    (tmp_path / "v1" / "cpu" / "cpu.cfs_quota_us").write_text("100000\n")
    (tmp_path / "v1" / "cpu" / "cpu.cfs_period_us").write_text("100000\n")
    assert usable_cpus(tmp_path / "v1") == 1
