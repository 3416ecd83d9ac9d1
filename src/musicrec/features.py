"""Feature names and shapes: the one definition shared by preprocessing, training and serving.

Raw features are what the tf.Transform graph takes (ingest columns, with text already normalized by
:func:`musicrec.data.text.normalize_to_string`); transformed features are what the models read.
"""

from __future__ import annotations

from musicrec import schema

# --- raw features (inputs of the transform graph) -----------------------------------------------------
REVIEW_TOKENS = "review_tokens"  # normalized review text, tokens joined by single spaces
SUMMARY_TOKENS = "summary_tokens"
RAW_STRING_FEATURES = (schema.REVIEWER_ID, schema.ASIN, schema.FORMAT, REVIEW_TOKENS, SUMMARY_TOKENS)
RAW_INT_FEATURES = (schema.RATING, schema.VERIFIED, schema.HELPFUL_VOTES)
# Missing in part of the catalogue: fed as variable-length (zero or one value), never as an invented default.
RAW_OPTIONAL_FLOAT_FEATURES = (schema.PRICE,)
RAW_OPTIONAL_INT_FEATURES = (schema.SALES_RANK,)
RAW_FEATURES = (*RAW_STRING_FEATURES, *RAW_INT_FEATURES, *RAW_OPTIONAL_FLOAT_FEATURES, *RAW_OPTIONAL_INT_FEATURES)
# Ingest columns the preprocess step reads; review_text and summary become the token features.
INGEST_COLUMNS_READ = (
    schema.REVIEWER_ID, schema.ASIN, schema.RATING, schema.REVIEW_TEXT, schema.SUMMARY, schema.VERIFIED,
    schema.HELPFUL_VOTES, schema.FORMAT, schema.PRICE, schema.SALES_RANK,
)  # fmt: skip

# --- transformed features (inputs of the models) ------------------------------------------------------
REVIEW_IDS = "review_token_ids"  # int64[max_review_tokens]: 0 padding, 1..V vocabulary, V+1 out of vocabulary
SUMMARY_IDS = "summary_token_ids"  # int64[max_summary_tokens], same coding
TOKEN_SEQUENCES = (REVIEW_IDS, SUMMARY_IDS)  # padding only ever trails a sequence's tokens
REVIEW_LENGTH = "review_token_count"  # tokens before truncation
SUMMARY_LENGTH = "summary_token_count"
USER_INDEX = "user_index"  # 0..U-1 train users, U for a user unseen in train
ITEM_INDEX = "item_index"
FORMAT_INDEX = "format_index"
PRICE_Z, PRICE_MISSING = "log_price_z", "price_missing"
SALES_RANK_Z, SALES_RANK_MISSING = "log_sales_rank_z", "sales_rank_missing"
HELPFUL_VOTES_Z = "log_helpful_votes_z"
VERIFIED_FLAG = "verified_flag"
RATING_LABEL = "rating_label"  # float 1..5
SENTIMENT_LABEL = "sentiment_label"  # 1 when rating > schema.POSITIVE_RATING_THRESHOLD

# --- vocabulary files written by the transform graph -----------------------------------------------------
REVIEW_VOCABULARY = "review_tokens"
SUMMARY_VOCABULARY = "summary_tokens"
USER_VOCABULARY = "users"
ITEM_VOCABULARY = "items"
FORMAT_VOCABULARY = "formats"
VOCABULARIES = (REVIEW_VOCABULARY, SUMMARY_VOCABULARY, USER_VOCABULARY, ITEM_VOCABULARY, FORMAT_VOCABULARY)

PADDING_ID = 0
