"""Ingest: stream raw 2018 review and metadata files, validate, quarantine, dedupe, join, split, write Parquet.

The contract (the evaluation protocol of docs/architecture.md):

* Every line read ends up in exactly one place: kept, quarantined (with a reason), or dropped as an exact
  duplicate of a line already kept, so ``kept + quarantined + duplicates == lines_read``.
* Reviews are split chronologically by ``unixReviewTime`` (stable sort, ties keep file order): the first
  80% train, the next 10% eval, the last 10% test.
* Memory is bounded by the number of reviews times a few bytes (timestamps, duplicate keys, user ids),
  never by the text: parsed rows are spilled to Parquet in chunks, then routed to their split.
* Outputs are staged next to their destination and published only once complete.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import logging
import math
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from musicrec import schema
from musicrec.data.records import InvalidLineError, Item, parse_metadata, parse_review
from musicrec.errors import IngestError, StorageError
from musicrec.io.artifacts import directory_sha256, publish, staging_directory
from musicrec.io.storage import LineReader
from musicrec.progress import Progress
from musicrec.settings import IngestSettings

logger = logging.getLogger(__name__)

_SPILL_ROWS = 100_000
DEFAULT_SHARD_ROWS = 250_000
# Above these shares the report carries a warning (and stderr a WARNING line); the step still runs up to the
# limits of IngestSettings. Real 2018 files quarantine well under 1% of reviews and keep metadata for most.
WARN_QUARANTINE_FRACTION = 0.01
WARN_WITHOUT_METADATA_FRACTION = 0.5


@dataclass
class _Tally:
    """Counts for one input file."""

    lines_read: int = 0
    kept: int = 0
    duplicates: int = 0
    quarantine_reasons: Counter = field(default_factory=Counter)

    @property
    def quarantined(self) -> int:
        return sum(self.quarantine_reasons.values())

    @property
    def quarantined_fraction(self) -> float:
        return self.quarantined / max(self.lines_read, 1)

    def describe_quarantine(self, source: str) -> str:
        reason = self.quarantine_reasons.most_common(1)[0][0] if self.quarantine_reasons else "none"
        return (f"{self.quarantined_fraction:.1%} of {source} lines quarantined ({self.quarantined:,} of "
                f"{self.lines_read:,}; most often {reason})")  # fmt: skip

    def as_dict(self) -> dict[str, Any]:
        return {
            "lines_read": self.lines_read,
            "kept": self.kept,
            "quarantined": self.quarantined,
            "duplicates": self.duplicates,
            "quarantine_reasons": dict(sorted(self.quarantine_reasons.items())),
        }


class _Quarantine:
    """Gzipped JSON lines ``{"source", "line", "reason", "raw"}``: every invalid line, kept whole."""

    def __init__(self, path: Path) -> None:
        self._out = gzip.open(path, "wt", encoding="utf-8")

    def add(self, source: str, line_number: int, reason: str, raw: bytes) -> None:
        text = raw.decode("utf-8", errors="backslashreplace").rstrip("\r\n")
        record = {"source": source, "line": line_number, "reason": reason, "raw": text}
        self._out.write(json.dumps(record, ensure_ascii=False) + "\n")

    def close(self) -> None:
        self._out.close()


def _read_metadata(uri: str, quarantine: _Quarantine) -> tuple[dict[str, Item], _Tally, LineReader]:
    items: dict[str, Item] = {}
    tally = _Tally()
    reader = LineReader(uri)
    for number, line in enumerate(reader, start=1):
        tally.lines_read += 1
        try:
            asin, item = parse_metadata(line)
        except InvalidLineError as invalid:
            tally.quarantine_reasons[invalid.reason] += 1
            quarantine.add("metadata", number, invalid.reason, line)
            continue
        if asin in items:
            tally.duplicates += 1  # the real file repeats some products; the first record wins
            continue
        items[asin] = item
        tally.kept += 1
    logger.info("metadata: %s", tally.as_dict())
    return items, tally, reader


def _review_key(review: tuple) -> bytes:
    return hashlib.blake2b(repr(review).encode("utf-8"), digest_size=16).digest()


def _spill_reviews(
    uri: str, items: dict[str, Item], spill_dir: Path, quarantine: _Quarantine
) -> tuple[list[Path], np.ndarray, _Tally, LineReader]:
    """First pass: parse, quarantine, dedupe and join; spill rows to Parquet in file order.

    Returns the spill files, each kept row's unix time (file order), the counts, and the finished reader.
    """
    tally = _Tally()
    seen: set[bytes] = set()
    rows: list[tuple] = []
    spills: list[Path] = []
    times: list[np.ndarray] = []
    missing = Item("", "", None, None)
    progress = Progress(logger, "reviews read", interval_seconds=10)

    def flush() -> None:
        columns = zip(*rows, strict=True)
        arrays = [pa.array(column, type=f.type) for column, f in zip(columns, schema.EXAMPLES_SCHEMA, strict=True)]
        table = pa.Table.from_arrays(arrays, schema=schema.EXAMPLES_SCHEMA)
        path = spill_dir / f"spill-{len(spills):05d}.parquet"
        pq.write_table(table, path, compression="zstd")
        spills.append(path)
        times.append(table.column(schema.UNIX_TIME).to_numpy())
        rows.clear()

    reader = LineReader(uri)
    for number, line in enumerate(reader, start=1):
        tally.lines_read += 1
        progress.advance()
        try:
            review = parse_review(line)
        except InvalidLineError as invalid:
            tally.quarantine_reasons[invalid.reason] += 1
            quarantine.add("reviews", number, invalid.reason, line)
            continue
        key = _review_key(review)
        if key in seen:
            tally.duplicates += 1
            continue
        seen.add(key)
        tally.kept += 1
        item = items.get(review[1])
        joined = item or missing
        rows.append((*review, joined.title, joined.brand, joined.price, joined.sales_rank, item is not None))
        if len(rows) >= _SPILL_ROWS:
            flush()
    if rows:
        flush()
    progress.done()
    all_times = np.concatenate(times) if times else np.empty(0, dtype=np.int64)
    return spills, all_times, tally, reader


def assign_splits(unix_times: np.ndarray) -> np.ndarray:
    """Split ids (index into :data:`schema.SPLITS`) for rows in file order, by the chronological protocol.

    A stable sort keeps ties in file order, so the same input always gives the same split.
    """
    n = unix_times.size
    order = np.argsort(unix_times, kind="stable")
    n_train = math.floor(n * schema.SPLIT_FRACTIONS[schema.TRAIN])
    n_eval = math.floor(n * schema.SPLIT_FRACTIONS[schema.EVAL])
    split_ids = np.empty(n, dtype=np.int8)
    split_ids[order[:n_train]] = 0
    split_ids[order[n_train : n_train + n_eval]] = 1
    split_ids[order[n_train + n_eval :]] = 2
    return split_ids


def _day(unix_time: int) -> str:
    return str(np.datetime64(int(unix_time), "s").astype("datetime64[D]"))


class _SplitWriter:
    """Writes one split's rows into Parquet shards of at most ``shard_rows`` rows."""

    def __init__(self, directory: Path, shard_rows: int) -> None:
        directory.mkdir(parents=True)
        self._directory = directory
        self._shard_rows = shard_rows
        self._writer: pq.ParquetWriter | None = None
        self._rows_in_shard = 0
        self.shards = 0
        self.rows = 0
        self.users: set[str] = set()
        self.items: set[str] = set()
        self.first: int | None = None
        self.last: int | None = None

    def write(self, table: pa.Table) -> None:
        if table.num_rows == 0:
            return
        self.users.update(table.column(schema.REVIEWER_ID).to_pylist())
        self.items.update(table.column(schema.ASIN).to_pylist())
        times = table.column(schema.UNIX_TIME).to_numpy()
        self.first = int(times.min()) if self.first is None else min(self.first, int(times.min()))
        self.last = int(times.max()) if self.last is None else max(self.last, int(times.max()))
        start = 0
        while start < table.num_rows:
            if self._writer is None or self._rows_in_shard >= self._shard_rows:
                self._open_shard()
            take = min(self._shard_rows - self._rows_in_shard, table.num_rows - start)
            self._writer.write_table(table.slice(start, take))
            self._rows_in_shard += take
            self.rows += take
            start += take

    def _open_shard(self) -> None:
        self.close()
        path = self._directory / f"part-{self.shards:05d}.parquet"
        self._writer = pq.ParquetWriter(path, schema.EXAMPLES_SCHEMA, compression="zstd")
        self.shards += 1
        self._rows_in_shard = 0

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    def summary(self) -> dict[str, Any]:
        return {
            "rows": self.rows,
            "shards": self.shards,
            "users": len(self.users),
            "items": len(self.items),
            "first_day": _day(self.first) if self.first is not None else None,
            "last_day": _day(self.last) if self.last is not None else None,
        }


def _markdown(report: dict[str, Any]) -> str:
    reasons = report["quarantine_reasons"] or {"(none)": 0}
    lines = [
        "# Ingest report",
        "",
        f"Reviews: `{report['inputs']['reviews']['uri']}`  ",
        f"Metadata: `{report['inputs']['metadata']['uri']}`",
        "",
        "| lines read | kept | quarantined | duplicates | users | items | without metadata |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
        f"| {report['lines_read']:,} | {report['kept']:,} | {report['quarantined']:,} | {report['duplicates']:,} "
        f"| {report['users']:,} | {report['items']:,} | {report['reviews_without_metadata']:,} |",
        "",
        "## Chronological split",
        "",
        "| split | rows | users | items | first day | last day |",
        "| --- | ---: | ---: | ---: | --- | --- |",
    ]
    for name, split in report["splits"].items():
        lines.append(
            f"| {name} | {split['rows']:,} | {split['users']:,} | {split['items']:,} "
            f"| {split['first_day']} | {split['last_day']} |"
        )
    if report["warnings"]:
        lines += ["", "## Warnings", "", *(f"- **{warning}**" for warning in report["warnings"])]
    lines += ["", "## Quarantine reasons", "", "| reason | lines |", "| --- | ---: |"]
    lines += [f"| {reason} | {count:,} |" for reason, count in reasons.items()]
    lines += ["", "## Ratings", "", "| stars | reviews |", "| --- | ---: |"]
    lines += [f"| {stars} | {count:,} |" for stars, count in report["rating_histogram"].items()]
    return "\n".join(lines) + "\n"


def ingest(
    reviews_uri: str,
    metadata_uri: str,
    examples_dir: str | Path,
    quarantine_path: str | Path,
    report_path: str | Path,
    markdown_path: str | Path | None = None,
    shard_rows: int = DEFAULT_SHARD_ROWS,
    settings: IngestSettings | None = None,
) -> dict[str, Any]:
    """Run the ingest step and return its report (also written as JSON to ``report_path``).

    Args:
        reviews_uri: ``Digital_Music.json(.gz)`` as a local path, ``s3://`` or ``gs://`` URI.
        metadata_uri: ``meta_Digital_Music.json(.gz)``, same schemes.
        examples_dir: receives ``train/``, ``eval/`` and ``test/`` Parquet shards with
            :data:`schema.EXAMPLES_SCHEMA`.
        quarantine_path: gzipped JSON lines of every invalid line with its reason.
        report_path: the JSON report.
        markdown_path: the same report as Markdown for the Kubeflow UI, if given.
        shard_rows: the most rows in one Parquet shard.
        settings: how much of each input may be quarantined (default :class:`IngestSettings`).

    Raises:
        IngestError: an input is missing or unreadable, no review survives validation, or more of an input is
            quarantined than ``settings`` allows.
    """
    settings = settings or IngestSettings()
    started = time.monotonic()
    targets = [Path(examples_dir), Path(quarantine_path), Path(report_path)]
    if markdown_path is not None:
        targets.append(Path(markdown_path))
    with staging_directory(targets[0]) as staging:
        quarantine = _Quarantine(staging / "quarantine.jsonl.gz")
        try:
            items, metadata_tally, metadata_reader = _read_metadata(metadata_uri, quarantine)
            spill_dir = staging / "spill"
            spill_dir.mkdir()
            spills, times, tally, reviews_reader = _spill_reviews(reviews_uri, items, spill_dir, quarantine)
        except StorageError as error:
            raise IngestError(str(error)) from error
        finally:
            quarantine.close()
        if tally.kept == 0:
            if tally.lines_read == 0:
                raise IngestError(f"no valid reviews in {reviews_uri}: the file has no lines")
            top_reason = tally.quarantine_reasons.most_common(1)[0][0]
            raise IngestError(
                f"no valid reviews in {reviews_uri}: all {tally.lines_read:,} lines were quarantined "
                f"(most often: {top_reason}) or duplicates"
            )
        for source, source_tally, limit in (
            ("review", tally, settings.max_review_quarantine_fraction),
            ("metadata", metadata_tally, settings.max_metadata_quarantine_fraction),
        ):
            if source_tally.quarantined_fraction > limit:
                parameter = f"{IngestSettings.PREFIX}max_{source}_quarantine_fraction"
                raise IngestError(f"{source_tally.describe_quarantine(source)}: above {parameter}={limit}")
        split_ids = assign_splits(times)
        examples = staging / "examples"
        examples.mkdir()
        writers = [_SplitWriter(examples / name, shard_rows) for name in schema.SPLITS]
        ratings: Counter = Counter()
        without_metadata = 0
        test_rows_with_train_history = 0
        offset = 0
        for spill in spills:
            table = pq.read_table(spill)
            ids = split_ids[offset : offset + table.num_rows]
            offset += table.num_rows
            ratings.update(table.column(schema.RATING).to_numpy().tolist())
            without_metadata += table.num_rows - int(table.column(schema.HAS_METADATA).to_numpy().sum())
            for split_index, writer in enumerate(writers):
                writer.write(table.filter(pa.array(ids == split_index)))
            spill.unlink()
        for writer in writers:
            writer.close()
        train_users = writers[0].users
        test_users = pq.read_table(examples / schema.TEST, columns=[schema.REVIEWER_ID]).column(0).to_pylist()
        test_rows_with_train_history = sum(user in train_users for user in test_users)

        warnings = [tally_.describe_quarantine(source) for source, tally_ in
                    (("review", tally), ("metadata", metadata_tally))
                    if tally_.quarantined_fraction > WARN_QUARANTINE_FRACTION]  # fmt: skip
        if without_metadata > WARN_WITHOUT_METADATA_FRACTION * tally.kept:
            warnings.append(f"{without_metadata / tally.kept:.1%} of kept reviews have no metadata")
        for warning in warnings:
            logger.warning("ingest: %s", warning)
        all_users = set().union(*(w.users for w in writers))
        all_items = set().union(*(w.items for w in writers))
        seconds = time.monotonic() - started
        report: dict[str, Any] = {
            "inputs": {
                "reviews": {
                    "uri": reviews_uri,
                    "bytes": reviews_reader.bytes_read,
                    "sha256": reviews_reader.sha256,
                },
                "metadata": {
                    "uri": metadata_uri,
                    "bytes": metadata_reader.bytes_read,
                    "sha256": metadata_reader.sha256,
                },
            },
            **tally.as_dict(),
            "users": len(all_users),
            "items": len(all_items),
            "reviews_without_metadata": without_metadata,
            "rating_histogram": {str(stars): ratings.get(stars, 0) for stars in range(1, 6)},
            "date_range": {"first_day": _day(times.min()), "last_day": _day(times.max())},
            "splits": {name: writer.summary() for name, writer in zip(schema.SPLITS, writers, strict=True)},
            "test_rows_with_train_history": test_rows_with_train_history,
            "metadata": metadata_tally.as_dict(),
            "warnings": warnings,
            "examples_sha256": directory_sha256(examples),
            "seconds": round(seconds, 3),
            "reviews_per_second": round(tally.lines_read / max(seconds, 1e-9), 1),
        }
        if tally.kept + tally.quarantined + tally.duplicates != tally.lines_read:
            raise IngestError(f"internal error: counts of {reviews_uri} do not add up: {tally.as_dict()}")
        (staging / "report.json").write_text(json.dumps(report, indent=2) + "\n")
        staged = [examples, staging / "quarantine.jsonl.gz", staging / "report.json"]
        if markdown_path is not None:
            (staging / "report.md").write_text(_markdown(report))
            staged.append(staging / "report.md")
        for source, target in zip(staged, targets, strict=True):
            publish(source, target)
    logger.info(
        "ingest: %s lines read, %s kept, %s quarantined, %s duplicates; train/eval/test = %s in %.1fs",
        f"{report['lines_read']:,}", f"{report['kept']:,}", f"{report['quarantined']:,}",
        f"{report['duplicates']:,}", "/".join(f"{report['splits'][s]['rows']:,}" for s in schema.SPLITS), seconds,
    )  # fmt: skip
    return report


def artifact_metadata(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """What the Kubeflow UI shows beside each ingest artifact, keyed by output name."""
    return {
        "examples": {
            "format": "parquet",
            "columns": schema.EXAMPLES_SCHEMA.names,
            **{f"{name}_rows": split["rows"] for name, split in report["splits"].items()},
            "sha256": report["examples_sha256"],
        },
        "quarantine": {"lines": report["quarantined"], "reasons": report["quarantine_reasons"]},
        "report": {
            key: report[key]
            for key in ("lines_read", "kept", "quarantined", "duplicates", "users", "items", "seconds")
        },
    }
