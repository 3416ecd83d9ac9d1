"""The music recommender DAG: one typed KFP v2 pipeline, free of any runner or environment specifics."""

from kfp import dsl

from components.ingest import ingest
from components.preprocess import preprocess
from musicrec.features import TransformSettings

PIPELINE_NAME = "music-recommender"


@dsl.pipeline(
    name=PIPELINE_NAME,
    description="Review-aware music recommender trained on Amazon Review Data (2018) Digital Music.",
)
def music_recommender(
    reviews_uri: str,
    metadata_uri: str,
    review_vocabulary_size: int = TransformSettings.review_vocabulary_size,
    summary_vocabulary_size: int = TransformSettings.summary_vocabulary_size,
    min_token_frequency: int = TransformSettings.min_token_frequency,
    max_review_tokens: int = TransformSettings.max_review_tokens,
    max_summary_tokens: int = TransformSettings.max_summary_tokens,
    beam_runner: str = "DirectRunner",
    beam_options: str = "",
) -> None:
    """Train a review-aware music recommender from Amazon Review Data (2018) "Digital Music".

    Args:
        reviews_uri: Digital_Music.json(.gz): a path in the container, s3://bucket/key or gs://bucket/key.
        metadata_uri: meta_Digital_Music.json(.gz), same schemes.
        review_vocabulary_size: the most review tokens in the vocabulary (most frequent in train).
        summary_vocabulary_size: the most summary tokens in the vocabulary.
        min_token_frequency: tokens seen fewer times in train are out of vocabulary.
        max_review_tokens: review token sequences are truncated or padded to this length.
        max_summary_tokens: summary token sequences are truncated or padded to this length.
        beam_runner: Beam runner of the preprocess step (DirectRunner in the pod; DataflowRunner, FlinkRunner...).
        beam_options: further Beam flags for that runner, one shell-quoted string.
    """
    ingest_task = (
        ingest(reviews_uri=reviews_uri, metadata_uri=metadata_uri)
        .set_display_name("Ingest reviews")
        .set_cpu_request("1")
        .set_memory_request("4G")
        .set_memory_limit("8G")
    )
    # The bytes behind a URI can change while the URI stays the same: never serve ingest from cache.
    ingest_task.set_caching_options(enable_caching=False)
    (
        preprocess(
            examples=ingest_task.outputs["examples"],
            review_vocabulary_size=review_vocabulary_size,
            summary_vocabulary_size=summary_vocabulary_size,
            min_token_frequency=min_token_frequency,
            max_review_tokens=max_review_tokens,
            max_summary_tokens=max_summary_tokens,
            beam_runner=beam_runner,
            beam_options=beam_options,
        )
        .set_display_name("Preprocess: NLTK + tf.Transform")
        .set_cpu_request("2")
        .set_memory_request("8G")
        .set_memory_limit("16G")
    )
