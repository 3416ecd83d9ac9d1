"""The normalizer on tricky inputs, and its equivalence with NLTK's own negation marking."""

from __future__ import annotations

import pytest
from helpers import read_records
from nltk.sentiment.util import mark_negation
from nltk.stem.snowball import SnowballStemmer

from musicrec.data.text import NEGATION_SUFFIX, STOPWORDS, normalize, normalize_to_string, strip_html, tokenize


@pytest.mark.parametrize(
    ("text", "tokens"),
    [
        ("This is <b>NOT</b> good. Great &amp; loud!", ["not", "good_NEG", "great", "loud"]),
        ("good", ["good"]),
        ("not good", ["not", "good_NEG"]),
        ("Not bad at all!", ["not", "bad_NEG"]),
        ("I don't like it, really boring", ["don't", "like_NEG", "realli_NEG", "bore_NEG"]),
        ("He didn’t love it", ["didn't", "love_NEG"]),
        ("Never boring. Very catchy!", ["never", "bore_NEG", "veri", "catchi"]),
        ("&quot;Wow&quot;<br /><br />Loved the songs", ["wow", "love", "song"]),
        ("Très bien 😀 café", ["très", "bien", "😀", "café"]),
        ("", []),
        (None, []),
        ("   <br/>  ", []),
        ("the and of a", []),
    ],
)
def test_normalize_tricky_inputs(text, tokens):
    assert normalize(text) == tokens


def test_negation_and_intensifiers_survive_stopword_removal():
    for word in ("not", "no", "never", "very", "really", "too", "most"):
        assert word not in STOPWORDS
    assert normalize("good") != normalize("not good")


def test_strip_html():
    assert strip_html('<span class="a">Rock &amp; Roll</span>  Vol. 2') == "Rock & Roll Vol. 2"
    assert strip_html("plain   text\n") == "plain text"


def _with_nltk_mark_negation(text: str) -> list[str]:
    """The reference: NLTK's mark_negation, then the same stopword, punctuation and stemming steps."""
    stemmer = SnowballStemmer("english")
    tokens = mark_negation(tokenize(text))
    out = []
    for token in tokens:
        negated = token.endswith(NEGATION_SUFFIX)
        word = token[: -len(NEGATION_SUFFIX)] if negated else token
        if word in STOPWORDS or word in ".:;!?":
            continue
        out.append(stemmer.stem(word) + (NEGATION_SUFFIX if negated else ""))
    return out


def test_fused_negation_pass_equals_nltk_mark_negation(medium_dataset):
    records = read_records(medium_dataset.reviews_path)[:3000]
    texts = [r.get("reviewText", "") for r in records] + [r.get("summary", "") for r in records]
    texts += ["not never good. ok", "no no no!", "nothing good, nothing bad; fine", "isn't it? not really"]
    for text in texts:
        assert normalize(text) == _with_nltk_mark_negation(text), text


def test_normalize_to_string_round_trips_through_split():
    text = "Not bad at all! Really great album."
    assert normalize_to_string(text).split(" ") == normalize(text)
    assert normalize_to_string("") == ""
