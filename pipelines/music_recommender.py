"""The music recommender DAG: one typed KFP v2 pipeline, free of any runner or environment specifics."""

from kfp import dsl

from components.ingest import ingest

PIPELINE_NAME = "music-recommender"


@dsl.pipeline(
    name=PIPELINE_NAME,
    description="Review-aware music recommender trained on Amazon Review Data (2018) Digital Music.",
)
def music_recommender(reviews_uri: str, metadata_uri: str) -> None:
    """Train a review-aware music recommender from Amazon Review Data (2018) "Digital Music".

    Args:
        reviews_uri: Digital_Music.json(.gz): a path in the container, s3://bucket/key or gs://bucket/key.
        metadata_uri: meta_Digital_Music.json(.gz), same schemes.
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
