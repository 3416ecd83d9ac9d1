"""The preprocess step as a KFP component; the logic lives in :mod:`musicrec.data.transform`."""

from kfp import dsl
from kfp.dsl import Artifact, Dataset, Input, Markdown, Output

from components import BASE_IMAGE
from musicrec.settings import TransformSettings, documented_with


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
@documented_with(TransformSettings)
def preprocess(
    examples: Input[Dataset],
    transformed_examples: Output[Dataset],
    transform_graph: Output[Artifact],
    report: Output[Artifact],
    report_markdown: Output[Markdown],
    beam_runner: str,
    beam_options: str,
    review_vocabulary_size: int,
    summary_vocabulary_size: int,
    min_token_frequency: int,
    max_review_tokens: int,
    review_tail_tokens: int,
    max_summary_tokens: int,
) -> None:
    """Normalize review text with NLTK in Beam, then fit tf.Transform on train and transform every split.

    Args:
        examples: ingest output: train/, eval/, test/ Parquet shards.
        transformed_examples: train/, eval/, test/ gzipped TFRecords of transformed tf.Examples.
        transform_graph: the tf.Transform output directory (graph, vocabularies, raw and transformed schema).
        report: the data report as JSON.
        report_markdown: the data report rendered for the Kubeflow UI.
        beam_runner: Beam runner, e.g. DirectRunner, DaskRunner, DataflowRunner, FlinkRunner, SparkRunner.
        beam_options: further Beam flags as one shell-quoted string (see the README's preprocess section).
    """
    from components.runtime import publish, step
    from musicrec.data.transform import artifact_metadata
    from musicrec.data.transform import preprocess as run_preprocess
    from musicrec.settings import TransformSettings

    with step("preprocess"):
        result = run_preprocess(examples.path, transformed_examples.path, transform_graph.path, report.path,
                                report_markdown.path, TransformSettings.from_parameters(locals()), beam_runner,
                                beam_options)  # fmt: skip
        outputs = {"transformed_examples": transformed_examples, "transform_graph": transform_graph}
        publish({**outputs, "report": report}, artifact_metadata(result))
