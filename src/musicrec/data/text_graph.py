"""The review normalizer as TensorFlow ops, so a SavedModel takes raw text and no Python runs beside it.

A port of :func:`musicrec.data.text.normalize`, which stays the reference that preprocessing uses: HTML
entities and tags, lower-casing, the tokenizer's pattern in RE2, negation scope marking as ``mark_negation``
does it, the stopword list, and Snowball stems through a lookup table of every raw token seen in train (a token
never seen in train keeps its raw form, and is almost always out of vocabulary either way). The skew between
the two is measured on every run (evaluate's serving check) and tested.
"""

from __future__ import annotations

import logging
import multiprocessing
from collections.abc import Iterator
from pathlib import Path

import pyarrow.parquet as pq
import tensorflow as tf

from musicrec import schema
from musicrec.data import text

logger = logging.getLogger(__name__)

# Where preprocess writes the raw-token -> stem table, inside the transform graph directory.
STEMS_FILE = Path("text_normalizer") / "stems.tsv"
# What the reference tokenizer's [^\W_] matches: NLTK compiles it with the `regex` engine, whose \w is letters,
# marks, decimal and letter numbers, connector punctuation and the joiners; "_" is excluded.
_WORD = (
    r"\pL\pM\p{Nd}\p{Nl}\x{200C}\x{200D}\x{203F}\x{2040}\x{2054}\x{FE33}\x{FE34}\x{FE4D}-\x{FE4F}"
    r"\x{FF3F}"
)
_EMOJI = r"\x{1F300}-\x{1FAFF}\x{2600}-\x{27BF}"
_PUNCTUATION = r".:;!?"
_INNER_APOSTROPHE = "\x02"
# Python's NEGATION_RE (nltk.sentiment.util) is searched; as a full match it reads "one of the words, or n't".
_NEGATION = (
    r"(?:never|no|nothing|nowhere|noone|none|not|havent|hasnt|hadnt|cant|couldnt|shouldnt|wont|wouldnt|dont"
    r"|doesnt|didnt|isnt|arent|aint)|.*n't.*"
)
_ENTITIES = (("&lt;", "<"), ("&gt;", ">"), ("&quot;", '"'), ("&#39;", "'"), ("&#x27;", "'"), ("&apos;", "'"),
             ("&nbsp;", " "), ("&amp;", "&"))  # fmt: skip


def _train_texts(examples_dir: Path, chunk_rows: int = 50_000) -> Iterator[list[str | None]]:
    """The train split's review texts and summaries, a chunk at a time."""
    for path in sorted((Path(examples_dir) / schema.TRAIN).glob("*.parquet")):
        table = pq.read_table(path, columns=[schema.REVIEW_TEXT, schema.SUMMARY])
        for start in range(0, table.num_rows, chunk_rows):
            piece = table.slice(start, chunk_rows)
            yield piece[schema.REVIEW_TEXT].to_pylist() + piece[schema.SUMMARY].to_pylist()


def write_stems(examples_dir: Path, transform_graph_dir: Path, processes: int = 1) -> int:
    """Write the raw-token -> stem table of the train split's reviews and summaries; returns its size.

    Tokenizing the whole train split is a pass of its own (about a minute at the full category on one core),
    so ``processes`` > 1 spreads it over a process pool.
    """
    stems: dict[str, str] = {}
    chunks = _train_texts(examples_dir)
    if processes > 1:
        with multiprocessing.get_context("spawn").Pool(processes) as pool:
            for part in pool.imap_unordered(text.raw_token_stems, chunks):
                stems.update(part)
    else:
        for chunk in chunks:
            stems.update(text.raw_token_stems(chunk))
    target = Path(transform_graph_dir) / STEMS_FILE
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text("".join(f"{token}\t{stem}\n" for token, stem in sorted(stems.items())))
    logger.info("preprocess: %s raw train tokens and their stems for the serving normalizer", f"{len(stems):,}")
    return len(stems)


def read_stems(transform_graph_dir: str | Path) -> dict[str, str]:
    """What :func:`write_stems` wrote."""
    lines = (Path(transform_graph_dir) / STEMS_FILE).read_text().splitlines()
    return dict(line.split("\t", 1) for line in lines)


class GraphNormalizer(tf.Module):
    """Raw text in, the normalized text :func:`musicrec.data.text.normalize_to_string` gives out, in TensorFlow.

    Args:
        stems: raw token -> stem, from :func:`read_stems` (a SavedModel embeds it).
    """

    def __init__(self, stems: dict[str, str]) -> None:
        super().__init__()
        keys = list(stems) or [""]
        self.stems = tf.lookup.StaticHashTable(
            tf.lookup.KeyValueTensorInitializer(keys, [stems.get(k, k) for k in keys]), default_value=""
        )
        stopwords = sorted(text.STOPWORDS)
        self.stopwords = tf.lookup.StaticHashTable(
            tf.lookup.KeyValueTensorInitializer(stopwords, tf.ones(len(stopwords), tf.int64)), default_value=0
        )

    def tokens(self, raw: tf.Tensor) -> tf.RaggedTensor:
        """What :func:`musicrec.data.text.tokenize` gives, for a batch of strings: words, emoji, punctuation."""
        value = tf.strings.substr(raw, 0, schema.MAX_TEXT_CHARS, unit="UTF8_CHAR")
        for entity, character in _ENTITIES:
            value = tf.strings.regex_replace(value, entity, character)
        value = tf.strings.regex_replace(value, "<[^>]*>", " ")
        value = tf.strings.lower(value, encoding="utf-8")
        value = tf.strings.regex_replace(value, "’", "'")
        # An apostrophe belongs to a token only between two word characters ("don't"); mark those, a few passes
        # for chains ("rock'n'roll"), then every character that is no part of a token separates tokens.
        for _ in range(3):
            value = tf.strings.regex_replace(value, f"([{_WORD}])'([{_WORD}])", f"\\1{_INNER_APOSTROPHE}\\2")
        value = tf.strings.regex_replace(value, f"[^{_WORD}{_INNER_APOSTROPHE}{_EMOJI}{_PUNCTUATION}]+", " ")
        value = tf.strings.regex_replace(value, f"([{_EMOJI}{_PUNCTUATION}])", " \\1 ")
        value = tf.strings.regex_replace(value, _INNER_APOSTROPHE, "'")
        return tf.strings.split(tf.strings.strip(value))

    def __call__(self, raw: tf.Tensor) -> tf.Tensor:
        """Normalized text of a batch of raw strings, tokens joined by single spaces."""
        tokens = self.tokens(raw)
        flat, row_splits = tokens.flat_values, tokens.row_splits
        is_punctuation = tf.strings.regex_full_match(flat, f"[{_PUNCTUATION}]")
        is_negation = tf.strings.regex_full_match(flat, _NEGATION) & ~is_punctuation
        is_stopword = tf.equal(self.stopwords.lookup(flat), 1) & ~is_negation & ~is_punctuation
        # Negation scope: a clause is a run of tokens up to a punctuation mark; inside it, every token after the
        # clause's first negation is in scope (the first one itself is not).
        position = tf.range(tf.size(flat, out_type=tf.int64))
        row_start = tf.equal(position, tf.gather(row_splits, tokens.value_rowids()))
        after_punctuation = tf.concat([[False], is_punctuation[:-1]], axis=0)
        clause = tf.cumsum(tf.cast(row_start | after_punctuation, tf.int64)) - 1
        # There are at most as many clauses as tokens; the unused segments are never gathered.
        clause_start = tf.math.unsorted_segment_min(position, clause, tf.size(flat, out_type=tf.int64))
        negations_before = tf.cumsum(tf.cast(is_negation, tf.int64), exclusive=True)
        in_scope = (negations_before - tf.gather(negations_before, tf.gather(clause_start, clause))) > 0
        stem = self.stems.lookup(flat)
        stem = tf.where(tf.equal(stem, ""), flat, stem)
        word = tf.where(in_scope, stem + text.NEGATION_SUFFIX, stem)
        keep = ~is_punctuation & ~is_stopword
        kept = tf.ragged.boolean_mask(tf.RaggedTensor.from_row_splits(word, row_splits),
                                      tf.RaggedTensor.from_row_splits(keep, row_splits))  # fmt: skip
        return tf.strings.reduce_join(kept, axis=-1, separator=" ")
