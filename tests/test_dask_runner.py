"""Preprocess on Dask (a LocalCluster of worker processes) writes what the DirectRunner writes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from musicrec.data.dask_runner import dask_cluster
from musicrec.data.generate import generate_dataset
from musicrec.data.ingest import ingest
from musicrec.data.transform import preprocess
from musicrec.data.transform_compare import output_differences
from musicrec.errors import PreprocessError
from musicrec.settings import TransformSettings

SETTINGS = TransformSettings(
    min_token_frequency=2, max_review_tokens=32, review_tail_tokens=8, max_summary_tokens=6
)


def _run(examples: Path, out: Path, **options) -> dict[str, Path]:
    preprocess(examples, out / "transformed", out / "graph", out / "report.json", settings=SETTINGS, **options)
    return {"transformed": out / "transformed", "transform_graph": out / "graph", "report": out / "report.json"}


@pytest.mark.slow
def test_dask_local_cluster_writes_what_the_direct_runner_writes(tmp_path):
    generated = generate_dataset(tmp_path / "generated", 300, seed=5)
    ingest(str(generated.reviews_path), str(generated.metadata_path), tmp_path / "examples",
           tmp_path / "q.jsonl.gz", tmp_path / "ingest.json")  # fmt: skip
    direct = _run(tmp_path / "examples", tmp_path / "direct")
    dask = _run(tmp_path / "examples", tmp_path / "dask", beam_runner="DaskRunner",
                beam_options="--dask_local_workers=2")  # fmt: skip
    # Vocabularies, every transformed row (floats too, at this size) and the report's numbers.
    assert output_differences(direct, dask, atol=0) == []
    # Every sink was written once: no temporary shard of a second write is left beside the outputs.
    assert sorted(p.name for p in dask["transformed"].rglob("*")) == sorted(
        p.name for p in direct["transformed"].rglob("*")
    )
    assert json.loads(dask["report"].read_text())["beam_runner"] == "DaskRunner"


def test_a_given_scheduler_is_used_as_is():
    with dask_cluster(["--dask_client_address=tcp://127.0.0.1:1"], default_workers=2) as flags:
        assert flags == ["--dask_client_address=tcp://127.0.0.1:1", "--dask_partition_size=1"]


def test_a_local_cluster_needs_a_worker():
    with pytest.raises(PreprocessError, match=r"^--dask_local_workers must be at least 1, got 0$"):
        with dask_cluster(["--dask_local_workers=0"], default_workers=2):
            pass


def test_an_unreachable_scheduler_is_a_one_line_error():
    import apache_beam as beam
    from apache_beam.options.pipeline_options import PipelineOptions
    from conftest import free_port

    from musicrec.data.dask_runner import DaskRunner

    address = f"tcp://127.0.0.1:{free_port()}"
    options = PipelineOptions([f"--dask_client_address={address}", "--dask_connection_timeout=2"])
    with pytest.raises(PreprocessError, match=rf"^cannot reach the Dask scheduler at {address}: [^\n]+$"):
        with beam.Pipeline(runner=DaskRunner(), options=options) as pipeline:
            _ = pipeline | beam.Create([1])
