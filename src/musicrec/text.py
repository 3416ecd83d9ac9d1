"""Text cleaning shared by ingest (titles) and, later, the review normalizer: one definition of "clean"."""

from __future__ import annotations

import html
import re

_TAG = re.compile(r"<[^>]*>")
_SPACE = re.compile(r"\s+")


def strip_html(text: str) -> str:
    """Unescape HTML entities, drop tags and collapse white space: ``'<b>A &amp; B</b>'`` -> ``'A & B'``."""
    if "<" not in text and "&" not in text:
        return _SPACE.sub(" ", text).strip()
    return _SPACE.sub(" ", _TAG.sub(" ", html.unescape(text))).strip()
