"""The ingest step as a KFP component; the logic lives in :mod:`musicrec.ingest`."""

from kfp import dsl
from kfp.dsl import Artifact, Dataset, Markdown, Output

from components import BASE_IMAGE


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def ingest(
    reviews_uri: str,
    metadata_uri: str,
    examples: Output[Dataset],
    quarantine: Output[Dataset],
    report: Output[Artifact],
    report_markdown: Output[Markdown],
) -> None:
    """Validate, deduplicate, join and chronologically split raw reviews into Parquet shards.

    Args:
        reviews_uri: Digital_Music.json(.gz) as a local path, s3:// or gs:// URI.
        metadata_uri: meta_Digital_Music.json(.gz), same schemes.
        examples: train/, eval/ and test/ Parquet shards (80/10/10 by review time).
        quarantine: gzipped JSON lines of every rejected line with its reason.
        report: the ingest report as JSON (counts, reasons, splits, input sha256).
        report_markdown: the same report rendered for the Kubeflow UI.
    """
    from musicrec.artifacts import attach_metadata
    from musicrec.ingest import IngestError, artifact_metadata
    from musicrec.ingest import ingest as run_ingest
    from musicrec.progress import configure_logging

    configure_logging()
    try:
        result = run_ingest(
            reviews_uri=reviews_uri,
            metadata_uri=metadata_uri,
            examples_dir=examples.path,
            quarantine_path=quarantine.path,
            report_path=report.path,
            markdown_path=report_markdown.path,
        )
    except IngestError as error:
        raise SystemExit(f"ingest failed: {error}") from None
    outputs = {"examples": examples, "quarantine": quarantine, "report": report}
    attach_metadata(outputs, artifact_metadata(result))
