"""The generator: byte-determinism, the exact 2018 layout and quirks, and the planted statistics."""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from datetime import UTC, datetime

import numpy as np
import pytest
from helpers import read_lines, read_records

from musicrec.data.generate import GENRES, NEGATIVE_WORDS, POSITIVE_WORDS, generate_dataset
from musicrec.data.planted import RATING_SHARES, planted_world
from musicrec.errors import GeneratorError

REVIEW_KEY_ORDER = ["overall", "vote", "verified", "reviewTime", "reviewerID", "asin", "style", "reviewerName",
                    "reviewText", "summary", "unixReviewTime", "image"]  # fmt: skip
META_KEY_ORDER = ["category", "tech1", "description", "fit", "title", "also_buy", "tech2", "brand", "feature",
                  "rank", "also_view", "main_cat", "similar_item", "date", "price", "asin", "imageURL",
                  "imageURLHighRes"]  # fmt: skip


def test_same_seed_same_bytes_and_other_seed_other_bytes(tmp_path):
    first = generate_dataset(tmp_path / "a", 1_500, seed=3)
    second = generate_dataset(tmp_path / "b", 1_500, seed=3)
    third = generate_dataset(tmp_path / "c", 1_500, seed=4)
    assert first.reviews_path.read_bytes() == second.reviews_path.read_bytes()
    assert first.metadata_path.read_bytes() == second.metadata_path.read_bytes()
    assert first.reviews_path.read_bytes() != third.reviews_path.read_bytes()


def test_file_names_line_count_and_no_partial_files(small_dataset):
    assert small_dataset.reviews_path.name == "Digital_Music.json.gz"
    assert small_dataset.metadata_path.name == "meta_Digital_Music.json.gz"
    assert len(read_lines(small_dataset.reviews_path)) == 3_000
    assert not list(small_dataset.reviews_path.parent.glob("*.partial"))


def test_review_lines_follow_the_2018_layout(small_dataset):
    records = read_records(small_dataset.reviews_path)
    for record in records:
        keys = list(record)
        assert keys == [k for k in REVIEW_KEY_ORDER if k in record], keys
        assert {"overall", "verified", "reviewTime", "reviewerID", "asin", "unixReviewTime"} <= set(keys)
        assert isinstance(record["overall"], float) and record["overall"] in (1.0, 2.0, 3.0, 4.0, 5.0)
        assert re.fullmatch(r"A[0-9A-Z]{13}", record["reviewerID"])
        assert re.fullmatch(r"B[0-9A-Z]{9}|\d{10}", record["asin"])
        day = datetime.fromtimestamp(record["unixReviewTime"], tz=UTC)
        assert record["reviewTime"] == f"{day.month:02d} {day.day}, {day.year}"
        assert record["unixReviewTime"] % 86_400 == 0
        if "style" in record:
            assert list(record["style"]) == ["Format:"] and record["style"]["Format:"].startswith(" ")
        if "vote" in record:
            assert re.fullmatch(r"\d{1,3}(,\d{3})*", record["vote"])


def test_review_quirks_all_appear(medium_dataset):
    lines = read_lines(medium_dataset.reviews_path)
    records = read_records(medium_dataset.reviews_path)
    assert sum("reviewText" not in r for r in records) > 0
    assert sum(r.get("reviewText") == "" for r in records) > 0
    assert sum("summary" not in r for r in records) > 0
    assert any("," in r.get("vote", "") for r in records), "some vote strings need a thousands separator"
    assert any("image" in r for r in records)
    assert any("&quot;" in r.get("reviewText", "") or "<br />" in r.get("reviewText", "") for r in records)
    assert any(not r.get("reviewText", "").isascii() for r in records)
    duplicates = sum(count - 1 for count in Counter(lines).values())
    assert 0.002 * len(lines) < duplicates < 0.01 * len(lines)


def test_metadata_layout_and_quirks(medium_dataset):
    records = read_records(medium_dataset.metadata_path)
    assert medium_dataset.items == len({r["asin"] for r in records})
    for record in records:
        assert list(record) == [k for k in META_KEY_ORDER if k in record]
    prices = [r.get("price") for r in records]
    assert any(p and re.fullmatch(r"\$\d+\.\d\d", p) for p in prices)
    assert None in prices and "" in prices and any(p and p.startswith(".a-box") for p in prices)
    ranks = [r.get("rank") for r in records]
    assert any(isinstance(x, str) and re.fullmatch(r"[\d,]+ in CDs & Vinyl \(", x) for x in ranks)
    assert any(x == [] for x in ranks)
    assert any("<span" in r["title"] for r in records) and any("&amp;" in r["title"] for r in records)
    assert len(records) > len({r["asin"] for r in records}), "the real metadata repeats some products"


def test_ratings_are_skewed_to_five_stars(medium_dataset):
    ratings = Counter(int(r["overall"]) for r in read_records(medium_dataset.reviews_path))
    shares = np.array([ratings[s] for s in range(1, 6)]) / sum(ratings.values())
    assert shares[4] == max(shares)
    np.testing.assert_allclose(shares, RATING_SHARES, atol=0.04)


@pytest.mark.parametrize(("key", "least_singletons"), [("reviewerID", 0.3), ("asin", 0.05)])
def test_activity_and_popularity_are_heavy_tailed(medium_dataset, key, least_singletons):
    records = read_records(medium_dataset.reviews_path)
    counts = np.sort(np.array(list(Counter(r[key] for r in records).values())))[::-1]
    top_tenth = counts[: max(1, counts.size // 10)].sum() / counts.sum()
    assert top_tenth > 0.35
    assert (counts == 1).sum() > least_singletons * counts.size


def _plain_share(words: tuple[str, ...], text: str) -> float:
    """Share of tokens that are one of ``words`` and not directly negated ("not good" does not count)."""
    tokens = re.findall(r"[a-z']+", text.lower())
    hits = sum(t in words and (i == 0 or tokens[i - 1] not in ("not", "never")) for i, t in enumerate(tokens))
    return hits / max(1, len(tokens))


def test_text_carries_sentiment_with_negations(medium_dataset):
    records = [r for r in read_records(medium_dataset.reviews_path) if r.get("reviewText")]
    positive = [r["reviewText"] for r in records if r["overall"] == 5]
    negative = [r["reviewText"] for r in records if r["overall"] <= 2]
    for words, own, other in ((POSITIVE_WORDS, positive, negative), (NEGATIVE_WORDS, negative, positive)):
        assert np.mean([_plain_share(words, t) for t in own]) > 2 * np.mean(
            [_plain_share(words, t) for t in other]
        )
    # Negation flips polarity: "not great" is typical of bad reviews, "not bad" of good ones.
    negated_positive = re.compile(r"\bnot (" + "|".join(POSITIVE_WORDS) + r")\b")
    negated_negative = re.compile(r"\bnot (" + "|".join(NEGATIVE_WORDS) + r")\b")
    assert np.mean([bool(negated_positive.search(t.lower())) for t in negative]) > 0.2
    assert np.mean([bool(negated_negative.search(t.lower())) for t in positive]) > 0.1
    assert np.mean([bool(negated_positive.search(t.lower())) for t in positive]) < 0.1


def test_ratings_carry_planted_user_structure(medium_dataset):
    """A user's ratings of one half of their items predict the other half: there is taste to learn."""
    by_user = defaultdict(list)
    for record in read_records(medium_dataset.reviews_path):
        by_user[record["reviewerID"]].append(record["overall"])
    halves = [(np.mean(r[::2]), np.mean(r[1::2])) for r in by_user.values() if len(r) >= 6]
    assert len(halves) > 100
    first, second = np.array(halves).T
    assert np.corrcoef(first, second)[0, 1] > 0.2


def test_text_carries_genre_words_of_the_item(medium_dataset):
    genre_words = {word for words in GENRES.values() for word in words}
    records = read_records(medium_dataset.reviews_path)
    with_genre_word = [any(w in r.get("reviewText", "").lower().split() for w in genre_words) for r in records]
    assert np.mean(with_genre_word) > 0.2


@pytest.mark.parametrize(("reviews", "items"), [(10, None), (1_000, 5)])
def test_too_small_requests_are_refused(tmp_path, reviews, items):
    with pytest.raises(GeneratorError):
        generate_dataset(tmp_path, reviews, items)


def test_the_planted_world_knows_each_pair_s_expected_stars():
    """``expected_stars`` (the oracle of benchmarks/rating_headroom.py) is calibrated to the stars drawn."""
    world, rng = planted_world(20_000, seed=5)
    users, items = world.sample_pairs(200_000, rng)
    stars = 1 + np.searchsorted(world.rating_cuts, world.raw_scores(users, items, rng))
    expected = world.expected_stars(users, items)
    assert 1.0 <= expected.min() and expected.max() <= 5.0
    for low, high in ((1.0, 2.5), (2.5, 4.0), (4.0, 4.6), (4.6, 5.0)):
        rows = (expected >= low) & (expected < high)
        assert rows.sum() > 1_000 and abs(stars[rows].mean() - expected[rows].mean()) < 0.03
    # Knowing the truth beats any constant by far: the room a rating model could learn into.
    assert np.sqrt(np.mean((stars - expected) ** 2)) < 0.75 * stars.std()
