"""Ingest: validation and quarantine, dedupe, join, the chronological split, atomic outputs, clear errors."""

from __future__ import annotations

import codecs
import gzip
import json
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from helpers import read_lines, read_records
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from musicrec import schema
from musicrec.data.ingest import InvalidLineError, assign_splits, ingest, parse_metadata, parse_review
from musicrec.data.text import normalize
from musicrec.errors import IngestError
from musicrec.io.storage import GZIP_MAGIC
from musicrec.settings import IngestSettings

VALID = {
    "overall": 4.0, "vote": "1,234", "verified": True, "reviewTime": "12 22, 2013", "reviewerID": "A1ZCPG3D3HGRSS",
    "asin": "B000002UEQ", "style": {"Format:": " Audio CD"}, "reviewerName": "Jo", "reviewText": "Not good.",
    "summary": "Meh", "unixReviewTime": 1387670400,
}  # fmt: skip


def line(**changes) -> bytes:
    record = {**VALID, **changes}
    return json.dumps({k: v for k, v in record.items() if v is not ...}).encode()


def run_ingest(reviews: Path, metadata: Path, out: Path) -> dict:
    return ingest(str(reviews), str(metadata), out / "examples", out / "quarantine.jsonl.gz", out / "report.json",
                  out / "report.md")  # fmt: skip


def split_tables(out: Path) -> dict[str, object]:
    return {name: pq.read_table(out / "examples" / name) for name in schema.SPLITS}


# --- line parsing ---------------------------------------------------------------------------------------
def test_parse_review_reads_the_2018_quirks():
    parsed = parse_review(line())
    assert parsed == (
        "A1ZCPG3D3HGRSS",
        "B000002UEQ",
        4,
        1387670400,
        "Not good.",
        "Meh",
        True,
        1234,
        "Audio CD",
        0,
    )


def test_missing_optional_fields_are_valid():
    parsed = parse_review(line(reviewText=..., summary=..., vote=..., style=..., verified=...))
    assert parsed[4:9] == ("", "", False, 0, "")


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"{not json", "bad_json"),
        (b'["a", "list"]', "not_an_object"),
        (b"   ", "empty_line"),
        (b'{"overall": 5.0, "asin": "\xff\xfe"}', "bad_encoding"),
        (line(asin=...), "missing_asin"),
        (line(overall=None), "missing_overall"),
        (line(reviewerID=""), "missing_reviewerID"),
        (line(unixReviewTime=...), "missing_unixReviewTime"),
        (line(overall=7.0), "rating_out_of_range"),
        (line(overall=0), "rating_out_of_range"),
        (line(overall=4.5), "rating_out_of_range"),
        (line(overall="5.0"), "wrong_type_overall"),
        (line(overall=True), "wrong_type_overall"),
        (line(reviewerID=123), "wrong_type_reviewerID"),
        (line(unixReviewTime="yesterday"), "wrong_type_unixReviewTime"),
        (line(unixReviewTime=-5), "time_out_of_range"),
        (line(vote="many"), "wrong_type_vote"),
        (line(reviewText=["a"]), "wrong_type_reviewText"),
        (line(style="CD"), "wrong_type_style"),
        (line(verified="yes"), "wrong_type_verified"),
        (line(reviewText="x" * (schema.MAX_TEXT_CHARS + 1)), "field_too_long"),
        (line(summary="x" * (schema.MAX_TEXT_CHARS + 1)), "field_too_long"),
        (line(reviewerID="A" * (schema.MAX_TEXT_CHARS + 1)), "field_too_long"),
    ],
)
def test_invalid_review_lines_are_rejected_with_a_reason(raw, reason):
    with pytest.raises(InvalidLineError) as invalid:
        parse_review(raw)
    assert invalid.value.reason == reason


def test_parse_metadata_cleans_title_price_and_rank():
    raw = json.dumps({"title": '<span class="x">Rock &amp; Roll</span>', "brand": "The Kalos", "price": "$13.01",
                      "rank": "58,009 in CDs & Vinyl (", "asin": "B1"})  # fmt: skip
    asin, item = parse_metadata(raw.encode())
    assert (asin, item.title, item.brand, item.price, item.sales_rank) == (
        "B1",
        "Rock & Roll",
        "The Kalos",
        13.01,
        58009,
    )
    _, junk = parse_metadata(json.dumps({"asin": "B2", "price": ".a-box-inner{x}", "rank": []}).encode())
    assert junk.price is None and junk.sales_rank is None and junk.title == ""


# --- the whole step -------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def clean_run(small_dataset, tmp_path_factory):
    out = tmp_path_factory.mktemp("clean")
    return out, run_ingest(small_dataset.reviews_path, small_dataset.metadata_path, out)


def test_clean_data_every_line_accounted_for(clean_run, small_dataset):
    out, report = clean_run
    lines = read_lines(small_dataset.reviews_path)
    expected_duplicates = sum(count - 1 for count in Counter(lines).values())
    assert report["lines_read"] == len(lines) == 3_000
    assert report["quarantined"] == 0 and report["quarantine_reasons"] == {}
    assert report["duplicates"] == expected_duplicates > 0
    assert report["kept"] == len(set(lines))
    assert json.loads((out / "report.json").read_text()) == report
    assert "| train |" in (out / "report.md").read_text()
    tables = split_tables(out)
    assert sum(t.num_rows for t in tables.values()) == report["kept"]
    assert all(t.schema.equals(schema.EXAMPLES_SCHEMA, check_metadata=False) for t in tables.values())


def test_split_is_chronological_disjoint_and_80_10_10(clean_run):
    out, report = clean_run
    tables = split_tables(out)
    kept = report["kept"]
    assert tables["train"].num_rows == int(kept * 0.8)
    assert tables["eval"].num_rows == int(kept * 0.1)
    times = {name: t.column(schema.UNIX_TIME).to_numpy() for name, t in tables.items()}
    assert times["train"].max() <= times["eval"].min()
    assert times["eval"].max() <= times["test"].min()
    rows = {name: {tuple(r.values()) for r in t.to_pylist()} for name, t in tables.items()}
    assert not (rows["train"] & rows["eval"]) and not (rows["eval"] & rows["test"])
    assert not (rows["train"] & rows["test"])


def test_assign_splits_keeps_ties_in_file_order():
    split = assign_splits(np.array([5, 1, 5, 5, 5, 5, 5, 5, 5, 5]))
    # Sorted stably: index 1 first, then 0, 2, 3, ...; the last tenth of the order is index 9.
    assert split.tolist() == [0, 0, 0, 0, 0, 0, 0, 0, 1, 2]


def test_metadata_is_joined_and_orphans_kept(clean_run):
    out, report = clean_run
    table = pq.read_table(out / "examples")
    has_metadata = table.column(schema.HAS_METADATA).to_numpy()
    assert 0 < report["reviews_without_metadata"] == int((~has_metadata).sum())
    titles = table.column(schema.TITLE).to_pylist()
    assert all(t for t, h in zip(titles, has_metadata, strict=True) if h)
    assert not any("<span" in t or "&amp;" in t for t in titles)
    prices = table.column(schema.PRICE).to_pylist()
    assert any(p is None for p in prices) and any(p is not None and p > 0 for p in prices)


def test_injected_bad_lines_are_quarantined_with_exact_counts(small_dataset, clean_run, tmp_path):
    _, clean = clean_run
    good = read_lines(small_dataset.reviews_path)
    bad = {
        b"{not json": "bad_json",
        b'{"overall": 5.0, "asin"': "bad_json",
        b'["a list"]': "not_an_object",
        line(asin=...): "missing_asin",
        line(overall=...): "missing_overall",
        line(overall=7.0): "rating_out_of_range",
        line(overall=0.0, asin="B9"): "rating_out_of_range",
        line(overall="5.0"): "wrong_type_overall",
        line(unixReviewTime="yesterday"): "wrong_type_unixReviewTime",
        b'{"overall": 5.0, "reviewText": "caf\xe9"}': "bad_encoding",
    }
    mixed = list(good)
    for i, raw in enumerate(bad):
        mixed.insert(100 * i + 7, raw)
    mixed += good[:3]  # three more exact duplicates
    reviews = tmp_path / "reviews.json"
    reviews.write_bytes(b"\n".join(mixed) + b"\n")
    report = run_ingest(reviews, small_dataset.metadata_path, tmp_path / "out")
    assert report["quarantine_reasons"] == {
        "bad_encoding": 1, "bad_json": 2, "missing_asin": 1, "missing_overall": 1, "not_an_object": 1,
        "rating_out_of_range": 2, "wrong_type_overall": 1, "wrong_type_unixReviewTime": 1,
    }  # fmt: skip
    assert report["quarantined"] == len(bad)
    assert report["duplicates"] == clean["duplicates"] + 3
    assert report["kept"] == clean["kept"]
    assert report["kept"] + report["quarantined"] + report["duplicates"] == report["lines_read"] == len(mixed)
    quarantined = read_records(tmp_path / "out" / "quarantine.jsonl.gz")
    assert Counter(q["reason"] for q in quarantined) == Counter(bad.values())
    assert {q["raw"] for q in quarantined if q["reason"] != "bad_encoding"} == {
        raw.decode() for raw, reason in bad.items() if reason != "bad_encoding"
    }
    assert all(mixed[q["line"] - 1].decode("utf-8", "backslashreplace") == q["raw"] for q in quarantined)


def test_gzip_and_plain_inputs_give_identical_examples(small_dataset, clean_run, tmp_path):
    out, clean = clean_run
    plain = tmp_path / "Digital_Music.json"
    plain.write_bytes(gzip.decompress(small_dataset.reviews_path.read_bytes()))
    report = run_ingest(plain, small_dataset.metadata_path, tmp_path / "out")
    assert report["examples_sha256"] == clean["examples_sha256"]
    assert report["inputs"]["reviews"]["bytes"] == plain.stat().st_size
    assert {k: v for k, v in report.items() if k not in ("inputs", "seconds", "reviews_per_second")} == {
        k: v for k, v in clean.items() if k not in ("inputs", "seconds", "reviews_per_second")
    }


def test_input_hash_is_the_sha256_of_the_stored_bytes(clean_run, small_dataset):
    import hashlib

    _, report = clean_run
    assert (
        report["inputs"]["reviews"]["sha256"]
        == hashlib.sha256(small_dataset.reviews_path.read_bytes()).hexdigest()
    )


def _outputs(out: Path) -> list[Path]:
    return sorted(out.iterdir()) if out.exists() else []


def test_missing_input_is_a_clear_error_and_leaves_nothing(small_dataset, tmp_path):
    missing = tmp_path / "nowhere" / "Digital_Music.json.gz"
    with pytest.raises(IngestError, match=rf"cannot read {missing}: not found$"):
        run_ingest(missing, small_dataset.metadata_path, tmp_path / "out")
    assert _outputs(tmp_path / "out") == []


def test_no_valid_rows_is_a_clear_error_and_leaves_nothing(small_dataset, tmp_path):
    reviews = tmp_path / "bad.json"
    reviews.write_bytes(b"{oops\n" + line(overall=9.0) + b"\n")
    with pytest.raises(IngestError, match=r"no valid reviews in .*bad.json: all 2 lines were quarantined"):
        run_ingest(reviews, small_dataset.metadata_path, tmp_path / "out")
    assert _outputs(tmp_path / "out") == []
    empty = tmp_path / "empty.json"
    empty.write_bytes(b"")
    with pytest.raises(IngestError, match="the file has no lines"):
        run_ingest(empty, small_dataset.metadata_path, tmp_path / "out")


def test_truncated_gzip_is_a_clear_error(small_dataset, tmp_path):
    truncated = tmp_path / "Digital_Music.json.gz"
    data = small_dataset.reviews_path.read_bytes()
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(IngestError, match=r"cannot read .*: truncated gzip file"):
        run_ingest(truncated, small_dataset.metadata_path, tmp_path / "out")
    assert _outputs(tmp_path / "out") == []


def test_a_failed_rerun_keeps_the_previous_outputs(small_dataset, tmp_path):
    out = tmp_path / "out"
    first = run_ingest(small_dataset.reviews_path, small_dataset.metadata_path, out)
    with pytest.raises(IngestError):
        run_ingest(tmp_path / "missing.json", small_dataset.metadata_path, out)
    assert json.loads((out / "report.json").read_text()) == first
    assert sorted(p.name for p in out.iterdir()) == [
        "examples",
        "quarantine.jsonl.gz",
        "report.json",
        "report.md",
    ]


def test_shards_roll_over_at_the_row_limit(small_dataset, tmp_path):
    report = ingest(str(small_dataset.reviews_path), str(small_dataset.metadata_path), tmp_path / "examples",
                    tmp_path / "q.jsonl.gz", tmp_path / "report.json", shard_rows=1_000)  # fmt: skip
    assert report["splits"]["train"]["shards"] == -(-report["splits"]["train"]["rows"] // 1_000)
    assert (
        len(list((tmp_path / "examples" / "train").glob("part-*.parquet"))) == report["splits"]["train"]["shards"]
    )


def test_a_utf8_bom_is_accepted_at_the_start_of_a_line():
    assert parse_review(codecs.BOM_UTF8 + line()) == parse_review(line())
    assert parse_metadata(codecs.BOM_UTF8 + b'{"asin": "B1", "title": "T"}')[0] == "B1"


def test_a_bom_file_and_a_50_mb_review_end_in_the_report_not_a_crash(small_dataset, clean_run, tmp_path):
    """The first line behind a BOM is kept; a 50 MB review is quarantined as field_too_long, whole."""
    _, clean = clean_run
    good = read_lines(small_dataset.reviews_path)
    huge = line(reviewText="la " * 17_000_000, asin="BHUGE")
    reviews = tmp_path / "reviews.json"
    reviews.write_bytes(codecs.BOM_UTF8 + b"\n".join([*good[:1], huge, *good[1:]]) + b"\n")
    report = run_ingest(reviews, small_dataset.metadata_path, tmp_path / "out")
    assert report["kept"] == clean["kept"] and report["quarantine_reasons"] == {"field_too_long": 1}
    (quarantined,) = read_records(tmp_path / "out" / "quarantine.jsonl.gz")
    assert quarantined["line"] == 2 and len(quarantined["raw"]) == len(huge)


def test_garbage_metadata_is_flagged_and_fails_above_the_limit(small_dataset, tmp_path):
    metadata = tmp_path / "meta.json"
    metadata.write_bytes(b"\n".join(b"<html>%d</html>" % i for i in range(50)) + b"\n")
    message = r"100.0% of metadata lines quarantined \(50 of 50; most often bad_json\): "
    with pytest.raises(IngestError, match=message + r"above ingest_max_metadata_quarantine_fraction=0.2"):
        run_ingest(small_dataset.reviews_path, metadata, tmp_path / "failed")
    assert not (tmp_path / "failed").exists() or not list((tmp_path / "failed").iterdir())
    lenient = IngestSettings(max_metadata_quarantine_fraction=1.0)
    out = tmp_path / "out"
    report = ingest(str(small_dataset.reviews_path), str(metadata), out / "examples", out / "q.jsonl.gz",
                    out / "report.json", out / "report.md", settings=lenient)  # fmt: skip
    assert report["warnings"] == ["100.0% of metadata lines quarantined (50 of 50; most often bad_json)",
                                  "100.0% of kept reviews have no metadata"]  # fmt: skip
    assert "## Warnings" in (tmp_path / "out" / "report.md").read_text()


def test_the_review_quarantine_limit_fails_the_step(small_dataset, tmp_path):
    good = read_lines(small_dataset.reviews_path)[:100]
    reviews = tmp_path / "reviews.json"
    reviews.write_bytes(b"\n".join(good + [b"{broken"] * 30) + b"\n")
    with pytest.raises(
        IngestError, match=r"23.1% of review lines quarantined .*ingest_max_review_quarantine_fraction"
    ):
        run_ingest(reviews, small_dataset.metadata_path, tmp_path / "out")
    report = ingest(str(reviews), str(small_dataset.metadata_path), tmp_path / "ok" / "examples",
                    tmp_path / "ok" / "q.jsonl.gz", tmp_path / "ok" / "report.json",
                    settings=IngestSettings(max_review_quarantine_fraction=0.5))  # fmt: skip
    assert report["quarantined"] == 30 and report["warnings"][0].startswith("23.1% of review lines quarantined")


# --- properties -----------------------------------------------------------------------------------------
_ANY_LINE = st.one_of(
    st.binary(max_size=200).map(lambda b: b.replace(b"\n", b" ")),
    st.builds(lambda r: line(reviewerID=r), st.text(min_size=1, max_size=20).filter(lambda t: "\n" not in t)),
    st.sampled_from([line(), line(asin="B2"), line(overall=1.0), codecs.BOM_UTF8 + line(asin="B3"),
                     line()[:-7], line(reviewText="y" * (schema.MAX_TEXT_CHARS + 1)), line() + b"\r", b""]),
)  # fmt: skip


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(lines=st.lists(_ANY_LINE, min_size=1, max_size=30))
@example(lines=[GZIP_MAGIC + b"\x00", line()])
def test_any_byte_lines_are_all_accounted_for_and_every_valid_review_kept(lines, small_dataset, tmp_path_factory):
    out = tmp_path_factory.mktemp("property")
    reviews = out / "reviews.json"
    reviews.write_bytes(b"\n".join(lines) + b"\n")
    if lines[0].startswith(GZIP_MAGIC):
        # A file is read as gzip when it starts with the gzip magic; one that is not gzip is refused whole.
        with pytest.raises(IngestError, match=r"cannot read .*reviews\.json: (corrupt|truncated) gzip"):
            ingest(str(reviews), str(small_dataset.metadata_path), out / "examples", out / "q.jsonl.gz",
                   out / "report.json")  # fmt: skip
        assert not (out / "examples").exists()
        return
    valid = []
    for raw in lines:
        try:
            valid.append(parse_review(raw))
        except InvalidLineError:
            pass
    lenient = IngestSettings(max_review_quarantine_fraction=1.0)
    try:
        report = ingest(str(reviews), str(small_dataset.metadata_path), out / "examples", out / "q.jsonl.gz",
                        out / "report.json", settings=lenient)  # fmt: skip
    except IngestError as error:
        assert not valid and "no valid reviews" in str(error)
        return
    assert report["kept"] + report["quarantined"] + report["duplicates"] == report["lines_read"]
    assert report["kept"] == len(set(valid))
    kept = sum(pq.read_table(out / "examples" / name).num_rows for name in schema.SPLITS)
    assert kept == report["kept"]


@settings(max_examples=300, deadline=2000)
@given(text=st.text(max_size=3000) | st.from_regex(r"(not |<b>|&amp;|[.!?]|\w+ ){0,400}", fullmatch=True))
def test_the_normalizer_never_raises_and_returns_quickly_on_any_string(text):
    tokens = normalize(text)
    assert all(isinstance(token, str) and token and " " not in token for token in tokens)
