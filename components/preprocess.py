"""The preprocess step as a KFP component; the logic lives in :mod:`musicrec.transform`."""

from kfp import dsl
from kfp.dsl import Artifact, Dataset, Input, Markdown, Output

from components import BASE_IMAGE


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def preprocess(
    examples: Input[Dataset],
    transformed_examples: Output[Dataset],
    transform_graph: Output[Artifact],
    report: Output[Artifact],
    report_markdown: Output[Markdown],
    review_vocabulary_size: int,
    summary_vocabulary_size: int,
    min_token_frequency: int,
    max_review_tokens: int,
    max_summary_tokens: int,
    beam_runner: str,
    beam_options: str,
) -> None:
    """Normalize review text with NLTK in Beam, then fit tf.Transform on train and transform every split.

    Args:
        examples: ingest output: train/, eval/, test/ Parquet shards.
        transformed_examples: train/, eval/, test/ gzipped TFRecords of transformed tf.Examples.
        transform_graph: the tf.Transform output directory (graph, vocabularies, raw and transformed schema).
        report: the data report as JSON.
        report_markdown: the data report rendered for the Kubeflow UI.
        review_vocabulary_size: the most review tokens kept (most frequent in train).
        summary_vocabulary_size: the most summary tokens kept.
        min_token_frequency: tokens rarer than this in train are out of vocabulary.
        max_review_tokens: review sequence length (truncate or pad).
        max_summary_tokens: summary sequence length.
        beam_runner: Beam runner, e.g. DirectRunner, DataflowRunner, FlinkRunner, SparkRunner.
        beam_options: further Beam flags as one shell-quoted string.
    """
    from musicrec.artifacts import attach_metadata
    from musicrec.progress import configure_logging
    from musicrec.settings import TransformSettings
    from musicrec.transform import PreprocessError, artifact_metadata
    from musicrec.transform import preprocess as run_preprocess

    configure_logging()
    settings = TransformSettings(
        review_vocabulary_size=review_vocabulary_size,
        summary_vocabulary_size=summary_vocabulary_size,
        min_token_frequency=min_token_frequency,
        max_review_tokens=max_review_tokens,
        max_summary_tokens=max_summary_tokens,
    )
    try:
        result = run_preprocess(
            examples_dir=examples.path,
            transformed_dir=transformed_examples.path,
            transform_graph_dir=transform_graph.path,
            report_path=report.path,
            markdown_path=report_markdown.path,
            settings=settings,
            beam_runner=beam_runner,
            beam_options=beam_options,
        )
    except PreprocessError as error:
        raise SystemExit(f"preprocess failed: {error}") from None
    outputs = {"transformed_examples": transformed_examples, "transform_graph": transform_graph, "report": report}
    attach_metadata(outputs, artifact_metadata(result))
