"""The preprocess step's data report: per-split token statistics gathered in Beam, vocabularies, OOV rates."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from musicrec import features

_LENGTH_HISTOGRAM_BINS = 1_024  # token counts above this land in the last bin (percentiles stay exact below)


def _matrix(batch: pa.RecordBatch, name: str) -> np.ndarray:
    column = batch.column(name)
    return pc.list_flatten(column).to_numpy(zero_copy_only=False).reshape(batch.num_rows, -1)


def _vector(batch: pa.RecordBatch, name: str) -> np.ndarray:
    return _matrix(batch, name)[:, 0]


def _padded_add(total: np.ndarray, counts: np.ndarray) -> np.ndarray:
    if counts.size > total.size:
        total, counts = counts, total
    total = total.copy()
    total[: counts.size] += counts
    return total


class SplitStatistics(beam.CombineFn):
    """Combines transformed record batches into rows, token-id counts by sentiment, and length histograms."""

    def create_accumulator(self) -> dict[str, Any]:
        """An empty accumulator."""
        return {"rows": 0}

    def add_input(self, accumulator: dict[str, Any], element: Any) -> dict[str, Any]:
        """Add one transformed batch."""
        batch = element[0] if isinstance(element, tuple) else element  # (record batch, passthrough features)
        labels = _vector(batch, features.SENTIMENT_LABEL)
        update: dict[str, Any] = {"rows": batch.num_rows}
        for feature, length in (
            (features.REVIEW_IDS, features.REVIEW_LENGTH),
            (features.SUMMARY_IDS, features.SUMMARY_LENGTH),
        ):
            ids = _matrix(batch, feature)
            for label in (0, 1):
                update[f"{feature}/{label}"] = np.bincount(ids[labels == label].ravel())
            lengths = np.minimum(_vector(batch, length), _LENGTH_HISTOGRAM_BINS - 1)
            update[f"{length}/histogram"] = np.bincount(lengths, minlength=_LENGTH_HISTOGRAM_BINS)
        return self.merge_accumulators([accumulator, update])

    def merge_accumulators(self, accumulators: Any) -> dict[str, Any]:
        """Sum counts; arrays of different lengths are zero-padded."""
        merged: dict[str, Any] = {"rows": 0}
        for accumulator in accumulators:
            for key, value in accumulator.items():
                if key == "rows":
                    merged[key] += value
                else:
                    merged[key] = _padded_add(merged.get(key, np.zeros(0, np.int64)), value)
        return merged

    def extract_output(self, accumulator: dict[str, Any]) -> str:
        """One JSON line, so any runner can write it as text."""
        return json.dumps({k: v if k == "rows" else v.tolist() for k, v in accumulator.items()})


def _percentiles(histogram: list[int], quantiles: Sequence[int] = (50, 90, 95, 99)) -> dict[str, int]:
    cumulative = np.cumsum(histogram)
    total = cumulative[-1] if len(cumulative) else 0
    if not total:
        return {f"p{q}": 0 for q in quantiles}
    return {f"p{q}": int(np.searchsorted(cumulative, total * q / 100.0)) for q in quantiles}


def split_report(stats: dict[str, Any], sizes: dict[str, int]) -> dict[str, Any]:
    """One split's report from its :class:`SplitStatistics`: rows, token length percentiles, OOV rates."""
    report: dict[str, Any] = {"rows": stats.get("rows", 0)}
    for feature, length, vocabulary in (
        (features.REVIEW_IDS, features.REVIEW_LENGTH, features.REVIEW_VOCABULARY),
        (features.SUMMARY_IDS, features.SUMMARY_LENGTH, features.SUMMARY_VOCABULARY),
    ):
        counts = _padded_add(
            np.array(stats.get(f"{feature}/0", []), np.int64), np.array(stats.get(f"{feature}/1", []))
        )
        oov_id = sizes[vocabulary] + 1
        tokens = int(counts[1:].sum()) if counts.size > 1 else 0
        oov = int(counts[oov_id]) if counts.size > oov_id else 0
        report[vocabulary] = {
            "tokens_kept": tokens,
            "oov_rate": round(oov / tokens, 4) if tokens else 0.0,
            "length_percentiles": _percentiles(stats.get(f"{length}/histogram", [])),
        }
    return report


def top_tokens(stats: dict[str, Any], feature: str, vocabulary: list[str], k: int = 15) -> dict[str, list]:
    """The ``k`` most frequent tokens of a token-id feature in a split, with their counts."""
    top: dict[str, list] = {}
    for label, name in ((1, "positive"), (0, "negative")):
        counts = np.array(stats.get(f"{feature}/{label}", []), np.int64)
        known = counts[1 : len(vocabulary) + 1]  # drop padding and out-of-vocabulary ids
        order = np.argsort(-known, kind="stable")[:k]
        top[name] = [[vocabulary[i], int(known[i])] for i in order if known[i] > 0]
    return top


# --- the step -------------------------------------------------------------------------------------------
def markdown_report(report: dict[str, Any]) -> str:
    """The data report rendered as Markdown for the Kubeflow UI."""
    lines = ["# Preprocess report", "", "## Vocabularies (fit on train only)", "", "| vocabulary | size |",
             "| --- | ---: |"]  # fmt: skip
    lines += [f"| {name} | {size:,} |" for name, size in report["vocabulary_sizes"].items()]
    lines += ["", "## Per split", "",
              "| split | rows | review OOV | summary OOV | review tokens p50 / p90 / p99 |",
              "| --- | ---: | ---: | ---: | --- |"]  # fmt: skip
    for split, info in report["splits"].items():
        pct = info[features.REVIEW_VOCABULARY]["length_percentiles"]
        lines.append(
            f"| {split} | {info['rows']:,} | {info[features.REVIEW_VOCABULARY]['oov_rate']:.2%} "
            f"| {info[features.SUMMARY_VOCABULARY]['oov_rate']:.2%} | {pct['p50']} / {pct['p90']} / {pct['p99']} |"
        )
    for vocabulary, classes in report["top_tokens"].items():
        lines += ["", f"## Most frequent {vocabulary} in train, by sentiment", "", "| positive | negative |",
                  "| --- | --- |"]  # fmt: skip
        for pos, neg in zip(classes["positive"], classes["negative"], strict=False):
            lines.append(f"| `{pos[0]}` ({pos[1]:,}) | `{neg[0]}` ({neg[1]:,}) |")
    return "\n".join(lines) + "\n"
