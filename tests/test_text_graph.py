"""The TensorFlow port of the normalizer against the Python reference: same tokens on real-shaped text."""

from __future__ import annotations

import pyarrow.parquet as pq
import pytest
import tensorflow as tf

from musicrec import schema
from musicrec.data import text
from musicrec.data.text import raw_token_stems
from musicrec.data.text_graph import STEMS_FILE, GraphNormalizer, read_stems

TRICKY = [
    "This is <b>NOT</b> good. Great &amp; loud!",
    "I don't like it, but the guitar is great!! Never again; not bad though",
    "rock'n'roll isn't dead 'quoted' words'' and under_score ok",
    "Loved it 😀😀 so much ❤ 10/10 would buy again",
    "Ça marche très bien. Not at all what I expected?! no no no",
    "",
    "   ",
    "&lt;i&gt;fine&lt;/i&gt; &quot;really&quot; ain't it",
    "Wouldn't recommend: terrible—awful…bad",
    "DON’T buy!!! NOT worth it... seriously",
]


def graph_normalize(stems: dict[str, str], texts: list[str | None]) -> list[str]:
    return [t.decode() for t in GraphNormalizer(stems)(tf.constant([t or "" for t in texts])).numpy()]


def test_the_graph_normalizer_gives_the_python_normalizers_tokens():
    assert graph_normalize(raw_token_stems(TRICKY), TRICKY) == [text.normalize_to_string(t) for t in TRICKY]


def test_a_token_never_seen_in_train_keeps_its_raw_form_and_negation_still_applies():
    assert graph_normalize({}, ["not loved"]) == ["not loved_NEG"]  # Python stems it: 'not love_NEG'
    assert graph_normalize({"loved": "love"}, ["not loved"]) == [text.normalize_to_string("not loved")]


def test_preprocess_writes_the_train_stems_from_the_python_normalizer(small_preprocessed):
    stems = read_stems(small_preprocessed["graph"])
    assert (small_preprocessed["graph"] / STEMS_FILE).is_file()
    assert all(stem == text.classify(token)[1] for token, stem in stems.items())
    assert any(stem != token for token, stem in stems.items()), "some train tokens are stemmed"


def test_the_served_models_token_ids_skew_under_half_a_percent_of_test_reviews(small_cnn, small_preprocessed):
    from musicrec.models.sentiment import normalizer_skew

    test = pq.read_table(small_preprocessed["examples"] / schema.TEST).to_pylist()
    reviews, summaries = [r[schema.REVIEW_TEXT] for r in test], [r[schema.SUMMARY] for r in test]
    skew = normalizer_skew(small_cnn[0] / "model", reviews, summaries)
    assert skew < 0.005
    # Upper-case negations are lower-cased on both sides before the negation scope is marked.
    shouted = [t.replace("not", "NOT") if t else t for t in reviews]
    assert normalizer_skew(small_cnn[0] / "model", shouted, summaries) == skew


@pytest.mark.parametrize("batch", [["one. two"], ["", "not", "no way. yes"], [""], ["", "  "]])
def test_batches_with_empty_rows_and_clauses_keep_rows_apart(batch):
    assert graph_normalize(raw_token_stems(batch), batch) == [text.normalize_to_string(t) for t in batch]
