"""Text cleaning and the review normalizer: one definition, used by ingest, preprocessing, training and serving.

The normalizer uses only data-free NLTK parts (a regular-expression tokenizer, ``mark_negation``, the Snowball
stemmer) and the project's own stopword list, so it never needs downloaded NLTK corpora.
"""

from __future__ import annotations

import html
import re
from collections.abc import Iterable
from functools import lru_cache

from nltk.sentiment.util import NEGATION_RE
from nltk.stem.snowball import SnowballStemmer
from nltk.tokenize import RegexpTokenizer

from musicrec import schema

_TAG = re.compile(r"<[^>]*>")
_SPACE = re.compile(r"\s+")

NEGATION_SUFFIX = "_NEG"
# Words (letters and digits of any script, with an inner apostrophe as in "don't"), emoji, and the clause
# punctuation that ends a negation scope. Everything else (quotes, dashes, symbols) separates tokens.
_TOKEN_PATTERN = r"[^\W_]+(?:['’][^\W_]+)*|[\U0001F300-\U0001FAFF\u2600-\u27BF]|[.:;!?]"
_CLAUSE_PUNCTUATION = frozenset(".:;!?")

# English function words that carry no sentiment. Deliberately absent: negations (not, no, never, nor, and
# every n't form) and intensifiers or comparatives (very, really, so, too, most, more, less, only, just,
# quite, extremely, absolutely), because they flip or scale the sentiment of what follows.
STOPWORDS = frozenset(
    """a an the and or but if then than as of at by for with about against between into through during before
    after above below to from up down in out on off over under again further once here there when where why how
    all any both each few other some such own same i me my myself we our ours ourselves you your yours yourself
    yourselves he him his himself she her hers herself it its itself they them their theirs themselves what which
    who whom this that these those am is are was were be been being have has had having do does did doing would
    should could ought i'm you're he's she's it's we're they're i've you've we've they've i'd you'd he'd she'd
    we'd they'd i'll you'll he'll she'll we'll they'll let's that's who's what's here's there's when's where's
    why's how's s t d ll m o re ve y""".split()
)

_tokenizer = RegexpTokenizer(_TOKEN_PATTERN)
_UNTIMED_TOKEN = re.compile(_TOKEN_PATTERN)
_stemmer = SnowballStemmer("english")


def strip_html(text: str) -> str:
    """Unescape HTML entities, drop tags and collapse white space: ``'<b>A &amp; B</b>'`` -> ``'A & B'``."""
    if "<" not in text and "&" not in text:
        return _SPACE.sub(" ", text).strip()
    return _SPACE.sub(" ", _TAG.sub(" ", html.unescape(text))).strip()


# The kinds of token the normalizer tells apart: punctuation ends a negation scope, a negation opens one,
# stopwords are dropped, words are kept (stemmed).
PUNCTUATION, NEGATION, STOPWORD, WORD = range(4)


@lru_cache(maxsize=500_000)
def classify(token: str) -> tuple[int, str]:
    """A token's kind and its Snowball stem; cached, since review vocabularies are Zipfian."""
    if token in _CLAUSE_PUNCTUATION:
        return PUNCTUATION, token
    if NEGATION_RE.search(token):
        return NEGATION, _stemmer.stem(token)
    if token in STOPWORDS:
        return STOPWORD, token
    return WORD, _stemmer.stem(token)


def tokenize(text: str | None) -> list[str]:
    """HTML-clean, lower-case and tokenize: the words, emoji and clause punctuation of ``text``.

    Reads at most :data:`~musicrec.schema.MAX_TEXT_CHARS` characters (the served graph cuts at the same place),
    and never raises: NLTK bounds its regular expressions by wall-clock time, which a loaded machine can exceed,
    so a timed-out text is tokenized again by the standard library with the same (linear-time) pattern.
    """
    if not text:
        return []
    cleaned = strip_html(text[: schema.MAX_TEXT_CHARS]).lower().replace("’", "'")
    try:
        return _tokenizer.tokenize(cleaned)
    except TimeoutError:
        return _UNTIMED_TOKEN.findall(cleaned)


def normalize(text: str | None) -> list[str]:
    """Turn raw review or summary text into model tokens.

    Steps: HTML unescape and tag removal, lower-casing, tokenization, negation scope marking exactly as
    ``nltk.sentiment.util.mark_negation`` does it (words after a negation up to the next clause punctuation get
    ``_NEG``), removal of sentiment-neutral stopwords and of punctuation, Snowball stemming. The negation pass is
    fused with the others (one loop, one cache look-up a token) because it runs over every review.
    ``None`` or empty text gives no tokens.

    >>> normalize("This is <b>NOT</b> good. Great &amp; loud!")
    ['not', 'good_NEG', 'great', 'loud']
    """
    out: list[str] = []
    in_scope = False
    for token in tokenize(text):
        kind, stem = classify(token)
        if kind == PUNCTUATION:
            in_scope = False
            continue
        if kind == NEGATION and not in_scope:
            in_scope = True
            out.append(stem)
            continue
        if kind == STOPWORD:
            continue
        out.append(stem + NEGATION_SUFFIX if in_scope else stem)
    return out


def normalize_to_string(text: str | None) -> str:
    """:func:`normalize` joined by single spaces: the form stored in examples and split again in TensorFlow."""
    return " ".join(normalize(text))


def normalize_columns(columns: tuple[list[str | None], list[str | None]]) -> tuple[list[str], list[str]]:
    """:func:`normalize_to_string` over a batch of review texts and summaries (one picklable call for a pool)."""
    reviews, summaries = columns
    return [normalize_to_string(t) for t in reviews], [normalize_to_string(t) for t in summaries]


def raw_token_stems(texts: Iterable[str | None]) -> dict[str, str]:
    """Each distinct raw token of ``texts`` that :func:`normalize` keeps as a word, with its stem.

    The table the TensorFlow port of the normalizer (:mod:`musicrec.data.text_graph`) stems through.
    """
    tokens: set[str] = set()
    for value in texts:
        tokens.update(tokenize(value))
    return {token: stem for token in tokens for kind, stem in [classify(token)] if kind in (NEGATION, WORD)}
