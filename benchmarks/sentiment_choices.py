"""Benchmark: how long reviews are cut, and which sentiment model, measured on a real review corpus.

Usage: ``python benchmarks/sentiment_choices.py --examples DIR [--out FILE]``; DIR is an ingest output
(``train/``, ``eval/``, ``test/`` Parquet), e.g. of the IMDB reviews that ``benchmarks/real_data.py reviews``
converts. Text goes through the project's normalizer, token ids through a vocabulary fit on train as the
transform graph fits it (top 20,000 tokens seen at least 3 times), held in memory so each variant trains in
seconds. Prints one Markdown row per variant (eval and test accuracy and AUC, seconds) and writes them as JSON:

- the ``ngram_linear`` baseline on the first 100, 200 or 400 tokens, or the first and last 128;
- the CNN alone (over a frozen all-zero n-gram part) on the first 100 tokens or the first and last 128;
- the CNN over the trained n-gram model (the shipped form) on the first and last 128.
"""

from __future__ import annotations

import argparse
import collections
import json
import time
from multiprocessing import Pool
from pathlib import Path

import keras  # Keras 3 before anything imports tensorflow_transform
import numpy as np
import pyarrow.parquet as pq

from musicrec import features, schema
from musicrec.data.text import normalize_to_string
from musicrec.models.sentiment import (
    LINEAR_RECIPE,
    NGRAM_BUCKETS,
    Recipe,
    build_cnn,
    build_linear,
    classification_metrics,
)
from musicrec.settings import CnnSettings, TransformSettings

_CUTS = {"first 100": (100, 0), "first 200": (200, 0), "first 400": (400, 0), "first 128 + last 128": (256, 128)}
_VARIANTS = (
    ("ngram_linear", "first 100"), ("ngram_linear", "first 200"), ("ngram_linear", "first 400"),
    ("ngram_linear", "first 128 + last 128"), ("CNN alone", "first 100"), ("CNN alone", "first 128 + last 128"),
    ("CNN over n-grams", "first 128 + last 128"),
)  # fmt: skip


def _normalized(examples: Path) -> dict[str, dict[str, list]]:
    splits = {}
    with Pool(2) as pool:
        for split in schema.SPLITS:
            table = pq.read_table(examples / split, columns=[schema.REVIEW_TEXT, schema.SUMMARY, schema.RATING])
            positive = table.column(schema.RATING).to_numpy() > schema.POSITIVE_RATING_THRESHOLD
            splits[split] = {
                "review": pool.map(normalize_to_string, table.column(schema.REVIEW_TEXT).to_pylist(), 500),
                "summary": pool.map(normalize_to_string, table.column(schema.SUMMARY).to_pylist(), 500),
                "label": positive.astype(np.float32),
            }  # fmt: skip
    return splits


def _vocabulary(texts: list[str], size: int, min_count: int) -> dict[str, int]:
    counts = collections.Counter(token for text in texts for token in text.split())
    return {token: i + 1 for i, (token, n) in enumerate(counts.most_common(size)) if n >= min_count}


def _ids(texts: list[str], vocabulary: dict[str, int], length: int, tail: int) -> np.ndarray:
    out = np.zeros((len(texts), length), np.int64)
    for row, text in enumerate(texts):
        tokens = text.split()
        if len(tokens) > length:
            tokens = tokens[: length - tail] + (tokens[-tail:] if tail else [])
        out[row, : len(tokens)] = [vocabulary.get(t, len(vocabulary) + 1) for t in tokens]
    return out


def _fit(model: keras.Model, data: dict, recipe: Recipe, batch_size: int) -> None:
    model.compile(keras.optimizers.Adam(recipe.learning_rate), "binary_crossentropy",
                  metrics=[keras.metrics.AUC(name="auc")])  # fmt: skip
    stop = keras.callbacks.EarlyStopping(monitor="val_auc", mode="max", patience=recipe.patience,
                                         restore_best_weights=True)  # fmt: skip
    model.fit(*data[schema.TRAIN], validation_data=data[schema.EVAL], epochs=recipe.epochs, batch_size=batch_size,
              callbacks=[stop], verbose=0)  # fmt: skip


def main() -> None:
    """Run every variant and print the README rows."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=Path, required=True)
    parser.add_argument("--out", type=Path, default=Path(".tmp/sentiment_choices.json"))
    args = parser.parse_args()
    text, transform, cnn_settings = _normalized(args.examples), TransformSettings(), CnnSettings()
    review_vocabulary = _vocabulary(text[schema.TRAIN]["review"], transform.review_vocabulary_size,
                                    transform.min_token_frequency)  # fmt: skip
    summary_vocabulary = _vocabulary(text[schema.TRAIN]["summary"], transform.summary_vocabulary_size,
                                     transform.min_token_frequency)  # fmt: skip
    sizes = (len(review_vocabulary), len(summary_vocabulary))
    results = []
    print("| model | review tokens kept | eval accuracy | eval AUC | test accuracy | test AUC | seconds |")
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: |")
    for model_name, cut in _VARIANTS:
        keras.utils.set_random_seed(cnn_settings.seed)
        length, tail = _CUTS[cut]
        data = {split: ({features.REVIEW_IDS: _ids(part["review"], review_vocabulary, length, tail),
                         features.SUMMARY_IDS: _ids(part["summary"], summary_vocabulary,
                                                    transform.max_summary_tokens, 0)}, part["label"])
                for split, part in text.items()}  # fmt: skip
        started = time.monotonic()
        model = ngrams = build_linear(*sizes, NGRAM_BUCKETS, "ngram_linear")
        if model_name != "CNN alone":
            _fit(ngrams, data, LINEAR_RECIPE, cnn_settings.batch_size)
        if model_name != "ngram_linear":
            model = build_cnn(*sizes, cnn_settings, ngrams)
            _fit(model, data, Recipe.of_cnn(cnn_settings), cnn_settings.batch_size)
        row = {"model": model_name, "cut": cut, "seconds": round(time.monotonic() - started, 1)}
        for split in (schema.EVAL, schema.TEST):
            inputs, labels = data[split]
            scores = model.predict(inputs, batch_size=4_096, verbose=0).reshape(-1)
            row[split] = classification_metrics(labels, scores)
        results.append(row)
        cells = [f"{row[split][name]:.4f}" for split in (schema.EVAL, schema.TEST) for name in ("accuracy", "auc")]
        print(f"| {model_name} | {cut} | {' | '.join(cells)} | {row['seconds']:.0f} |", flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
