"""Parsing one line of the raw 2018 files into a validated review tuple or an item, or a quarantine reason.

Pure functions of a line's bytes: a review becomes a tuple in :data:`musicrec.schema.EXAMPLES_SCHEMA` column
order (without the joined metadata), an item its :class:`Item`; anything unusable raises
:class:`InvalidLineError` with a short reason code such as ``missing_asin``, which ingest counts and quarantines.
"""

from __future__ import annotations

import codecs
import re
from dataclasses import dataclass
from typing import Any

import orjson

from musicrec import schema
from musicrec.data.text import strip_html

_RANK_NUMBER = re.compile(r"([\d,]+)")
_PRICE_NUMBER = re.compile(r"^\$\s*([\d,]+(?:\.\d+)?)")


@dataclass(frozen=True)
class Item:
    """Metadata joined onto each review of the item."""

    title: str
    brand: str
    price: float | None
    sales_rank: int | None


class InvalidLineError(ValueError):
    """A line is invalid; ``reason`` is a short machine-friendly code such as ``missing_asin``."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


# --- line parsing ---------------------------------------------------------------------------------------
def _load_object(line: bytes) -> dict[str, Any]:
    line = line.removeprefix(codecs.BOM_UTF8)  # some editors and exporters start a file with one
    if not line.strip():
        raise InvalidLineError("empty_line")
    try:
        record = orjson.loads(line)
    except orjson.JSONDecodeError:
        try:
            line.decode("utf-8")
        except UnicodeDecodeError:
            raise InvalidLineError("bad_encoding") from None
        raise InvalidLineError("bad_json") from None
    if not isinstance(record, dict):
        raise InvalidLineError("not_an_object")
    return record


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _bounded(text: str) -> str:
    if len(text) > schema.MAX_TEXT_CHARS:
        raise InvalidLineError("field_too_long")
    return text


def _identifier(record: dict[str, Any], key: str) -> str:
    value = record.get(key)
    if value is None or (isinstance(value, str) and not value.strip()):
        raise InvalidLineError(f"missing_{key}")
    if not isinstance(value, str):
        raise InvalidLineError(f"wrong_type_{key}")
    return _bounded(value.strip())


def _optional_text(record: dict[str, Any], key: str) -> str:
    value = record.get(key)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise InvalidLineError(f"wrong_type_{key}")
    return _bounded(value)


def _helpful_votes(value: Any) -> int:
    """``vote`` is a string with thousands separators in the 2018 files ("1,234"); absent means none."""
    if value is None:
        return 0
    if isinstance(value, str):
        digits = value.replace(",", "").strip()
        if digits.isdigit():
            return min(int(digits), 2**31 - 1)
        raise InvalidLineError("wrong_type_vote")
    if _is_number(value) and value >= 0 and float(value).is_integer():
        return min(int(value), 2**31 - 1)
    raise InvalidLineError("wrong_type_vote")


def _format(value: Any) -> str:
    """``style`` is ``{"Format:": " Audio CD"}``; we keep the stripped format name."""
    if value is None:
        return ""
    if not isinstance(value, dict):
        raise InvalidLineError("wrong_type_style")
    name = value.get("Format:", "")
    return name.strip() if isinstance(name, str) else ""


def parse_review(line: bytes) -> tuple:
    """Parse one review line into the review columns of :data:`schema.EXAMPLES_SCHEMA`, in order.

    Returns:
        ``(reviewer_id, asin, rating, unix_time, review_text, summary, verified, helpful_votes, format,
        n_images)``.

    Raises:
        InvalidLineError: with the reason the line cannot be used.
    """
    record = _load_object(line)
    for key in schema.RAW_REQUIRED_REVIEW_FIELDS:
        if record.get(key) is None:
            raise InvalidLineError(f"missing_{key}")
    reviewer_id = _identifier(record, "reviewerID")
    asin = _identifier(record, "asin")
    overall = record["overall"]
    if not _is_number(overall):
        raise InvalidLineError("wrong_type_overall")
    if overall not in (1, 2, 3, 4, 5):
        raise InvalidLineError("rating_out_of_range")
    unix_time = record["unixReviewTime"]
    if not isinstance(unix_time, int) or isinstance(unix_time, bool):
        raise InvalidLineError("wrong_type_unixReviewTime")
    if unix_time < 0:
        raise InvalidLineError("time_out_of_range")
    verified = record.get("verified", False)
    if not isinstance(verified, bool):
        raise InvalidLineError("wrong_type_verified")
    images = record.get("image") or []
    if not isinstance(images, list):
        raise InvalidLineError("wrong_type_image")
    return (
        reviewer_id,
        asin,
        int(overall),
        unix_time,
        _optional_text(record, "reviewText"),
        _optional_text(record, "summary"),
        verified,
        _helpful_votes(record.get("vote")),
        _format(record.get("style")),
        min(len(images), 2**15 - 1),
    )


def _price(value: Any) -> float | None:
    """Parse a 2018 price: "$13.01" -> 13.01; a range gives its low end; empty or CSS junk gives None."""
    if _is_number(value):
        return float(value) if value >= 0 else None
    if isinstance(value, str):
        match = _PRICE_NUMBER.match(value.strip())
        if match:
            return float(match.group(1).replace(",", ""))
    return None


def _sales_rank(value: Any) -> int | None:
    """Parse a 2018 rank: "58,009 in CDs & Vinyl (" -> 58009; a list takes its first parseable entry."""
    candidates = value if isinstance(value, list) else [value]
    for candidate in candidates:
        if isinstance(candidate, int) and not isinstance(candidate, bool):
            return candidate
        if isinstance(candidate, str):
            match = _RANK_NUMBER.search(candidate)
            if match and match.group(1).replace(",", ""):
                return int(match.group(1).replace(",", ""))
    return None


def parse_metadata(line: bytes) -> tuple[str, Item]:
    """Parse one metadata line into ``(asin, Item)``; raises :class:`InvalidLineError` for an unusable line."""
    record = _load_object(line)
    asin = _identifier(record, "asin")
    title = record.get("title")
    brand = record.get("brand")
    return asin, Item(
        title=strip_html(_bounded(title)) if isinstance(title, str) else "",
        brand=strip_html(_bounded(brand)) if isinstance(brand, str) else "",
        price=_price(record.get("price")),
        sales_rank=_sales_rank(record.get("rank")),
    )


# --- the step -------------------------------------------------------------------------------------------
