"""The ingest step as a KFP component; the logic lives in :mod:`musicrec.data.ingest`."""

from kfp import dsl
from kfp.dsl import Artifact, Dataset, Markdown, Output

from components import BASE_IMAGE
from musicrec.settings import IngestSettings, documented_with


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
@documented_with(IngestSettings)
def ingest(
    reviews_uri: str,
    metadata_uri: str,
    push_destination: str,
    examples: Output[Dataset],
    quarantine: Output[Dataset],
    report: Output[Artifact],
    report_markdown: Output[Markdown],
    max_review_quarantine_fraction: float,
    max_metadata_quarantine_fraction: float,
) -> None:
    """Validate, deduplicate, join and chronologically split raw reviews into Parquet shards.

    Args:
        reviews_uri: Digital_Music.json(.gz) as a local path, s3:// or gs:// URI.
        metadata_uri: meta_Digital_Music.json(.gz), same schemes.
        push_destination: the model store push will write to, checked for writing here, before any training.
        examples: train/, eval/ and test/ Parquet shards (80/10/10 by review time).
        quarantine: gzipped JSON lines of every rejected line with its reason.
        report: the ingest report as JSON (counts, reasons, splits, input sha256).
        report_markdown: the same report rendered for the Kubeflow UI.
    """
    from components.runtime import publish, step
    from musicrec.data.ingest import artifact_metadata
    from musicrec.data.ingest import ingest as run_ingest
    from musicrec.release.model_store import check_push_destination
    from musicrec.settings import IngestSettings

    with step("ingest"):
        check_push_destination(push_destination)
        result = run_ingest(reviews_uri, metadata_uri, examples.path, quarantine.path, report.path,
                            report_markdown.path, settings=IngestSettings.from_parameters(locals()))  # fmt: skip
        publish({"examples": examples, "quarantine": quarantine, "report": report}, artifact_metadata(result))
