"""The one definition of the data layout: raw 2018 field names, ingest columns, and the split protocol.

Every step (ingest, preprocess, training, serving) imports its names from here, so a column is renamed
in exactly one place.
"""

from __future__ import annotations

import pyarrow as pa

# --- Raw Amazon Review Data (2018) layout -------------------------------------------------------------
REVIEWS_FILENAME = "Digital_Music.json.gz"
METADATA_FILENAME = "meta_Digital_Music.json.gz"

# The longest text field ingest keeps (in characters), and the most of a text the normalizer reads. Real
# reviews run to a few thousand characters; a field beyond this is quarantined (``field_too_long``) rather than
# letting one line stall the tokenizer or blow up a Parquet page.
MAX_TEXT_CHARS = 100_000

# Fields a review line must carry to be usable at all; anything else may be missing.
RAW_REQUIRED_REVIEW_FIELDS = ("overall", "reviewerID", "asin", "unixReviewTime")

# --- Ingest output columns ----------------------------------------------------------------------------
REVIEWER_ID = "reviewer_id"
ASIN = "asin"
RATING = "rating"
UNIX_TIME = "unix_time"
REVIEW_TEXT = "review_text"
SUMMARY = "summary"
VERIFIED = "verified"
HELPFUL_VOTES = "helpful_votes"
FORMAT = "format"
N_IMAGES = "n_images"
TITLE = "title"
BRAND = "brand"
PRICE = "price"
SALES_RANK = "sales_rank"
HAS_METADATA = "has_metadata"

EXAMPLES_SCHEMA = pa.schema(
    [
        pa.field(REVIEWER_ID, pa.string(), nullable=False),
        pa.field(ASIN, pa.string(), nullable=False),
        pa.field(RATING, pa.int8(), nullable=False),
        pa.field(UNIX_TIME, pa.int64(), nullable=False),
        pa.field(REVIEW_TEXT, pa.string(), nullable=False),
        pa.field(SUMMARY, pa.string(), nullable=False),
        pa.field(VERIFIED, pa.bool_(), nullable=False),
        pa.field(HELPFUL_VOTES, pa.int32(), nullable=False),
        pa.field(FORMAT, pa.string(), nullable=False),
        pa.field(N_IMAGES, pa.int16(), nullable=False),
        pa.field(TITLE, pa.string(), nullable=False),
        pa.field(BRAND, pa.string(), nullable=False),
        # Missing in the raw metadata often; null rather than an invented value.
        pa.field(PRICE, pa.float32(), nullable=True),
        pa.field(SALES_RANK, pa.int64(), nullable=True),
        pa.field(HAS_METADATA, pa.bool_(), nullable=False),
    ]
)

# --- Evaluation protocol (docs/architecture.md): chronological 80/10/10 ------------------------------
TRAIN, EVAL, TEST = "train", "eval", "test"
SPLITS = (TRAIN, EVAL, TEST)
SPLIT_FRACTIONS = {TRAIN: 0.8, EVAL: 0.1, TEST: 0.1}

# Sentiment label used by every model and metric: a review is positive when its rating is above 3.
POSITIVE_RATING_THRESHOLD = 3
