"""Digital-Music-shaped review data in the exact Amazon Review Data (2018) layout, with planted structure.

What is planted, so that every model has something real to learn and every baseline something to lose to:

* Zipf-like user activity and item popularity; ratings skewed to 5 stars (about 2/3 of reviews).
* Latent taste: items belong to genres with a latent vector; a user's latent preference decides which
  genres they mostly review and, with user and item biases, how they rate. Ratings are predictable from
  history, not from the review itself.
* Review and summary words carry the sentiment of the rating, including negation ("not good" in a bad
  review, "not bad" in a good one), plus genre words that tie text to taste, and a little label noise.
* The 2018 quirks: ``reviewTime`` "MM D, YYYY", ``vote`` strings with thousands separators, ``style``
  {"Format:": " Audio CD"}, prices "$13.01", empty or CSS junk, rank strings, HTML-polluted titles,
  empty or missing ``reviewText``/``summary``, exact duplicate lines, reviews of items without metadata.

Memory stays bounded (users and items as arrays, reviews in chunks), and the same seed gives the same bytes.
"""

from __future__ import annotations

import gzip
import json
import logging
import os
import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from musicrec import schema
from musicrec.data.planted import (
    FIRST_DAY,
    GENRE_NAMES,
    GENRES,
    PlantedWorld,
    planted_world,
)
from musicrec.progress import Progress

logger = logging.getLogger(__name__)


_CHUNK_REVIEWS = 50_000
_DUPLICATE_FRACTION = 0.004
_ORPHAN_ITEM_FRACTION = 0.03  # reviews of asins absent from the metadata file, as in the real data
_LABEL_NOISE = 0.03  # text written as if for another rating

# --- vocabulary -----------------------------------------------------------------------------------------
POSITIVE_WORDS = (
    "great", "amazing", "beautiful", "excellent", "wonderful", "awesome", "fantastic", "brilliant",
    "catchy", "superb", "perfect", "enjoyable", "solid", "stunning", "gorgeous", "timeless", "uplifting",
)  # fmt: skip
NEGATIVE_WORDS = (
    "bad", "boring", "awful", "terrible", "disappointing", "weak", "dull", "annoying", "poor", "bland",
    "forgettable", "repetitive", "muddy", "overproduced", "horrible", "mediocre", "lifeless",
)  # fmt: skip
POSITIVE_VERBS = ("love", "enjoy", "adore", "recommend", "like")
NEGATIVE_VERBS = ("hate", "regret buying", "returned", "dislike", "gave away")
INTENSIFIERS = ("very", "really", "so", "truly", "absolutely", "extremely", "pretty", "quite")
MUSIC_NOUNS = (
    "album", "song", "track", "cd", "record", "sound", "vocals", "lyrics", "production", "melody",
    "chorus", "mix", "arrangement", "performance",
)  # fmt: skip
RELATIVES = ("wife", "husband", "son", "daughter", "mom", "dad", "brother", "sister", "friend")
TITLE_WORDS = (
    "Midnight", "River", "Echoes", "Gold", "Blue", "Fire", "Dreams", "Heart", "Road", "Summer", "Ghost",
    "City", "Light", "Stone", "Wild", "Silver", "Rain", "Souls", "Live", "Greatest", "Hits", "Sessions",
    "Volume", "Love", "Night", "Sun", "Ocean", "Velvet", "Electric", "Shadows", "Paradise", "Crossroads",
)  # fmt: skip
NAME_SYLLABLES = ("ka", "lo", "mi", "ra", "ten", "vo", "shi", "an", "el", "dor", "be", "ny", "ré", "zo", "ja")

_POSITIVE_SENTENCES = (
    "this {noun} is {int} {pos}.",
    "i {posv} this {noun}.",
    "{int} {pos} {noun}, i {posv} it.",
    "not {neg} at all.",
    "the {gword} on this {noun} is {pos}.",
    "one of the best {gword} albums i have heard.",
    "highly recommended.",
    "you will not be disappointed.",
    "every {noun} is {pos} and never {neg}.",
    "the {noun} is {pos}, the {noun2} even more so.",
)
_NEGATIVE_SENTENCES = (
    "this {noun} is {int} {neg}.",
    "the {noun} is not {pos}.",
    "not {pos} at all.",
    "i {negv} this {noun}.",
    "i did not {posv} it.",
    "the {gword} sounds {neg}.",
    "not worth the money.",
    "don't waste your money.",
    "i wanted to like it but it is not {pos}.",
    "nothing {pos} here, just {neg} {noun2}.",
)
_NEUTRAL_SENTENCES = (
    "i bought this for my {rel}.",
    "the {gword} reminds me of their earlier work.",
    "it arrived on time.",
    "i first heard this {noun} on the radio.",
    "some songs are {pos} but others are {neg}.",
    "the {noun} is ok.",
    "i downloaded the mp3 version.",
    "this is their {ordinal} {noun} with lots of {gword}.",
    "the {rare} {noun} reminds me of {rare2}.",
    "{rare} and {rare2} play on track {track}.",
    "i saw them live in {rare} back in the day.",
    "the liner notes mention {rare}, {rare2} and the {rare3} sessions.",
)
_SUMMARIES = {
    5: ("Five Stars", "Five Stars", "Five Stars", "{Pos} {noun}", "{Int} {pos}!", "Love it", "Not {neg} at all",
        "A {pos} {gword} album"),
    4: ("Four Stars", "Four Stars", "{Pos} {noun}", "Pretty {pos}", "Not bad", "I {posv} it"),
    3: ("Three Stars", "Three Stars", "It's ok", "Some {pos} songs", "Not {pos}, not {neg}"),
    2: ("Two Stars", "Two Stars", "Not {pos}", "{Neg}", "Disappointing", "{Int} {neg}"),
    1: ("One Star", "One Star", "{Int} {neg}", "Not {pos} at all", "Don't waste your money", "{Neg} {noun}"),
}  # fmt: skip
# Share of positive / negative / neutral sentences in a review with each rating.
_SENTENCE_MIX = {5: (0.80, 0.04, 0.16), 4: (0.62, 0.12, 0.26), 3: (0.32, 0.33, 0.35), 2: (0.12, 0.64, 0.24),
                 1: (0.06, 0.76, 0.18)}  # fmt: skip
_LONG_TAIL_WORDS = 30_000  # names, places and rare words: the Zipfian tail that makes vocabularies real
_TYPO_RATE = 0.03
_ORDINALS = ("first", "second", "third", "fourth", "latest", "best")
_FORMATS = (
    (" Audio CD", 0.58),
    (" MP3 Music", 0.34),
    (" Vinyl", 0.04),
    (" Audio Cassette", 0.01),
    (None, 0.03),
)
_CSS_PRICE = ".a-box-inner{background-color:#fff}.a-box-inner{...} .a-color-price{color:#B12704}"
_IMAGE_URL = "https://images-na.ssl-images-amazon.com/images/I/{code}._SY88.jpg"


@dataclass(frozen=True)
class GeneratedFiles:
    """Where :func:`generate_dataset` wrote, and what."""

    reviews_path: Path
    metadata_path: Path
    reviews: int
    items: int


class _TextWriter:
    """Writes review and summary text whose words carry the rating's sentiment and the item's genre."""

    def __init__(self, seed: int) -> None:
        self._random = random.Random(seed)
        syllables = [s for s in NAME_SYLLABLES if s.isascii()] + ["qu", "in", "or", "st", "ph", "ell", "ux"]
        words = {
            "".join(self._random.choice(syllables) for _ in range(self._random.randint(2, 4)))
            for _ in range(2 * _LONG_TAIL_WORDS)
        }
        self._tail = sorted(words)[:_LONG_TAIL_WORDS]
        self._random.shuffle(self._tail)
        self._tail_cumweight = list(np.cumsum(1.0 / np.arange(1, len(self._tail) + 1) ** 1.05))

    def _rare(self) -> str:
        return self._random.choices(self._tail, cum_weights=self._tail_cumweight)[0]

    def _typo(self, text: str) -> str:
        """Swap two neighbouring letters of one word, as hurried reviewers do."""
        words = text.split(" ")
        i = self._random.randrange(len(words))
        word = words[i]
        if len(word) > 3:
            j = self._random.randrange(len(word) - 2)
            words[i] = word[:j] + word[j + 1] + word[j] + word[j + 2 :]
        return " ".join(words)

    def _fill(self, template: str, genre: int) -> str:
        r = self._random
        pos, neg = r.choice(POSITIVE_WORDS), r.choice(NEGATIVE_WORDS)
        intensifier = r.choice(INTENSIFIERS)
        if "{rare" in template:
            template = template.replace("{rare}", self._rare()).replace("{rare2}", self._rare())
            template = template.replace("{rare3}", self._rare()).replace("{track}", str(r.randint(1, 14)))
        return template.format(
            noun=r.choice(MUSIC_NOUNS), noun2=r.choice(MUSIC_NOUNS), pos=pos, neg=neg, int=intensifier,
            Pos=pos.capitalize(), Neg=neg.capitalize(), Int=intensifier.capitalize(),
            posv=r.choice(POSITIVE_VERBS), negv=r.choice(NEGATIVE_VERBS), rel=r.choice(RELATIVES),
            gword=r.choice(GENRES[GENRE_NAMES[genre]]), ordinal=r.choice(_ORDINALS),
        )  # fmt: skip

    def review(self, rating: int, genre: int) -> str:
        """A review of one to a dozen sentences, sentiment drawn from the rating's sentence mix."""
        r = self._random
        positive, negative, _ = _SENTENCE_MIX[rating]
        sentences = []
        for _ in range(1 + min(15, int(r.expovariate(1 / 4.0)))):
            u = r.random()
            pool = (
                _POSITIVE_SENTENCES if u < positive
                else _NEGATIVE_SENTENCES if u < positive + negative
                else _NEUTRAL_SENTENCES
            )  # fmt: skip
            sentence = self._fill(r.choice(pool), genre)
            sentences.append(sentence[0].upper() + sentence[1:])
        text = " ".join(sentences)
        u = r.random()
        if u < 0.02:
            text = text.replace(".", " &quot;!&quot;", 1) + "<br /><br />" + self._fill("the {noun} is ok.", genre)
        elif u < 0.035:
            text += r.choice((" 😀", " ❤️", " 👍", " ¡Olé!", " Très bien."))
        if r.random() < _TYPO_RATE:
            text = self._typo(text)
        return text

    def summary(self, rating: int, genre: int) -> str:
        """A short summary line; Amazon's generated "Five Stars" style is common, as in the real data."""
        return self._fill(self._random.choice(_SUMMARIES[rating]), genre)


def _review_time(days: np.ndarray) -> list[str]:
    """Format day numbers since the epoch as the 2018 ``reviewTime``: zero-padded month, bare day."""
    out = []
    for iso in days.astype("datetime64[D]").astype(str):
        year, month, day = iso.split("-")
        out.append(f"{month} {int(day)}, {year}")
    return out


def _review_lines(world: PlantedWorld, n: int, rng: np.random.Generator, text: _TextWriter) -> list[str]:
    """``n`` unique review lines as JSON, in the 2018 key order."""
    users, items = world.sample_pairs(n, rng)
    scores = world.raw_scores(users, items, rng)
    ratings = 1 + np.searchsorted(world.rating_cuts, scores)
    text_ratings = np.where(rng.random(n) < _LABEL_NOISE, rng.integers(1, 6, n), ratings)
    career = rng.exponential(900.0, n).astype(np.int64)
    day_offsets = world.user_start[users] + career
    late = day_offsets > world.span_days
    day_offsets[late] = rng.integers(world.user_start[users[late]], world.span_days + 1)
    days = (FIRST_DAY + day_offsets).astype("datetime64[D]")
    unix = days.astype("datetime64[s]").astype(np.int64)
    review_times = _review_time(days)
    orphan = rng.random(n) < _ORPHAN_ITEM_FRACTION
    orphan_pick = rng.integers(0, len(world.orphan_ids), n)
    format_draw = rng.choice(len(_FORMATS), size=n, p=[p for _, p in _FORMATS])
    votes = np.where(rng.random(n) < 0.16, 2 + np.floor(rng.pareto(1.1, n) * 3), 0).astype(np.int64)
    year_share = (day_offsets / world.span_days) ** 0.5
    verified = rng.random(n) < 0.35 + 0.6 * year_share
    text_draw = rng.random(n)
    images = rng.random(n) < 0.004

    lines = []
    for k in range(n):
        user, item, rating = int(users[k]), int(items[k]), int(ratings[k])
        genre = int(world.item_genre[item])
        record: dict[str, object] = {"overall": float(rating)}
        if votes[k]:
            record["vote"] = f"{int(votes[k]):,}"
        record["verified"] = bool(verified[k])
        record["reviewTime"] = review_times[k]
        record["reviewerID"] = world.user_ids[user]
        record["asin"] = world.orphan_ids[orphan_pick[k]] if orphan[k] else world.item_ids[item]
        format_name = _FORMATS[format_draw[k]][0]
        if format_name is not None:
            record["style"] = {"Format:": format_name}
        if world.user_names[user] is not None:
            record["reviewerName"] = world.user_names[user]
        if text_draw[k] >= 0.003:  # a few reviews have no text at all, a few an empty one
            record["reviewText"] = "" if text_draw[k] < 0.005 else text.review(int(text_ratings[k]), genre)
        if 0.002 <= text_draw[k] < 0.994:  # a few summaries are missing
            record["summary"] = text.summary(int(text_ratings[k]), genre)
        record["unixReviewTime"] = int(unix[k])
        if images[k]:
            record["image"] = [_IMAGE_URL.format(code=world.item_ids[item] + str(k % 7))]
        lines.append(json.dumps(record))
    return lines


def _title(world: PlantedWorld, item: int, rng: random.Random) -> str:
    words = rng.sample(TITLE_WORDS, k=rng.randint(1, 4))
    title = " ".join(words)
    u = rng.random()
    if u < 0.04:
        return f'<span class="a-size-medium a-color-secondary a-text-normal">{title}</span>'
    if u < 0.07:
        return title.replace(" ", " &amp; ", 1)
    if u < 0.09:
        return f"{title} [Explicit]"
    return title


def _artist(index: int, rng: random.Random) -> str:
    name = "".join(rng.choice(NAME_SYLLABLES) for _ in range(rng.randint(2, 3))).capitalize()
    return name if index % 3 else f"The {name}s"


def _metadata_lines(world: PlantedWorld, seed: int) -> list[str]:
    """One metadata line per item in the 2018 key order, with a few exact duplicate lines."""
    r = random.Random(seed)
    n_items = len(world.item_ids)
    artists = [_artist(i, r) for i in range(max(1, n_items // 4))]
    popularity_rank = np.empty(n_items, dtype=np.int64)
    popularity_rank[np.argsort(-world.item_weight)] = np.arange(n_items)
    lines = []
    for item in range(n_items):
        genre = int(world.item_genre[item])
        record: dict[str, object] = {
            "category": ["CDs & Vinyl", GENRE_NAMES[genre]] if r.random() < 0.4 else [],
            "tech1": "",
            "description": [f"{GENRE_NAMES[genre]} album, {r.randint(8, 16)} tracks."] if r.random() < 0.3 else [],
            "fit": "",
            "title": _title(world, item, r),
            "also_buy": [world.item_ids[int(j)] for j in r.sample(list(world.genre_items[genre][:50]),
                                                                   k=min(3, len(world.genre_items[genre])))],
            "tech2": "",
            "brand": artists[r.randrange(len(artists))],
            "feature": [],
        }  # fmt: skip
        u = r.random()
        if u < 0.9:
            rank = int(popularity_rank[item] * 40 + r.randint(1, 40) + 1000)
            record["rank"] = f"{rank:,} in CDs & Vinyl ("
        elif u < 0.95:
            record["rank"] = []
        record["also_view"] = []
        record["main_cat"] = "Digital Music" if r.random() < 0.8 else "Music"
        record["similar_item"] = ""
        record["date"] = ""
        u = r.random()
        if u < 0.72:
            record["price"] = f"${min(199.99, r.lognormvariate(2.4, 0.45)):.2f}"
        elif u < 0.77:
            record["price"] = ""
        elif u < 0.8:
            record["price"] = _CSS_PRICE
        record["asin"] = world.item_ids[item]
        record["imageURL"] = []
        record["imageURLHighRes"] = []
        lines.append(json.dumps(record))
        if r.random() < 0.005:
            lines.append(lines[-1])
    return lines


def _write_gzip_lines(path: Path, chunks) -> None:  # noqa: ANN001 - an iterable of line lists
    """Write lines to ``path`` atomically as gzip with a fixed header, so bytes depend on content only."""
    partial = path.with_name(path.name + ".partial")
    with open(partial, "wb") as raw, gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) as out:
        for lines in chunks:
            out.write(("\n".join(lines) + "\n").encode("utf-8"))
    os.replace(partial, path)


def generate_dataset(
    out_dir: str | Path, n_reviews: int, n_items: int | None = None, seed: int = 0
) -> GeneratedFiles:
    """Write ``Digital_Music.json.gz`` and ``meta_Digital_Music.json.gz`` into ``out_dir``.

    Args:
        out_dir: destination directory (created if missing).
        n_reviews: review lines to write, duplicates included (the real category has 1,584,082).
        n_items: items in the metadata file; by default the real ratio of items to reviews (74,347 at full scale).
        seed: the same seed gives byte-identical files.

    Returns:
        The paths and counts written.

    Raises:
        GeneratorError: for fewer than 100 reviews or 20 items.
    """
    world, rng = planted_world(n_reviews, n_items, seed)
    n_items = len(world.item_ids)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    text = _TextWriter(int(rng.integers(1 << 62)))
    progress = Progress(logger, "reviews generated", total=n_reviews)

    def review_chunks():  # noqa: ANN202
        remaining = n_reviews
        while remaining:
            n_lines = min(_CHUNK_REVIEWS, remaining)
            n_duplicates = int(n_lines * _DUPLICATE_FRACTION)
            lines = _review_lines(world, n_lines - n_duplicates, rng, text)
            for source in rng.integers(0, len(lines), n_duplicates):
                lines.insert(int(rng.integers(source, len(lines) + 1)), lines[int(source)])
            remaining -= n_lines
            progress.advance(n_lines)
            yield lines

    reviews_path = out / schema.REVIEWS_FILENAME
    metadata_path = out / schema.METADATA_FILENAME
    _write_gzip_lines(reviews_path, review_chunks())
    progress.done()
    _write_gzip_lines(metadata_path, [_metadata_lines(world, int(rng.integers(1 << 62)))])
    logger.info("wrote %s and %s", reviews_path, metadata_path)
    return GeneratedFiles(reviews_path, metadata_path, n_reviews, n_items)
