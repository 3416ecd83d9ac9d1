"""The project image, built by `make image`: what it holds, and the whole DAG run inside it (DockerRunner).

Marked ``container``: `make test-containers` builds the image and runs these (CI does); `make test` does not,
so it needs no docker.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from components import BASE_IMAGE

pytestmark = pytest.mark.container
IMAGE = os.environ.get("MUSICREC_TEST_IMAGE", BASE_IMAGE)


@pytest.fixture(scope="module")
def docker():
    import docker

    client = docker.from_env()
    try:
        client.images.get(IMAGE)
    except docker.errors.ImageNotFound:
        pytest.fail(f"no image {IMAGE}: build it with `make image`")
    yield client
    client.close()


def run_in_image(docker, *command: str) -> str:
    return docker.containers.run(IMAGE, list(command), remove=True).decode().strip()


def test_the_image_runs_as_a_non_root_user_with_the_project_and_no_compiler(docker):
    labels = docker.images.get(IMAGE).labels
    assert labels["org.opencontainers.image.version"] == IMAGE.rsplit(":", 1)[1].removesuffix("-gpu")
    assert len(labels["org.opencontainers.image.revision"].removesuffix("-dirty")) == 40
    assert run_in_image(docker, "id", "-u") == "1000"
    probe = ("import shutil, musicrec, components, pipelines, kfp, tensorflow_transform, keras, apache_beam; "
             "print(musicrec.__version__, kfp.__version__, keras.__version__, "
             "[c for c in ('gcc', 'cc', 'g++', 'make') if shutil.which(c)])")  # fmt: skip
    assert run_in_image(docker, "python3", "-c", probe).splitlines()[-1] == "0.1.0 2.17.3 3.15.1 []"
    assert run_in_image(docker, "printenv", "MUSICREC_IMAGE") == IMAGE
    assert "usage: musicrec" in run_in_image(docker, "musicrec", "--help")


def test_the_whole_dag_runs_inside_the_image_blessed_pushed_and_verified(docker, tmp_path):
    out = tmp_path / "run"
    result = subprocess.run(
        [sys.executable, "-m", "pipelines.cli", "run", "--runner", "docker", "--image", IMAGE,
         "--output", str(out), "--sample-reviews", "3000",
         "--param", "blessing_min_ranking_ndcg=0", "--param", "blessing_max_rating_rmse=5",
         "--param", "blessing_min_sentiment_auc=0.5"],
        capture_output=True, text=True, timeout=1800,
    )  # fmt: skip
    assert result.returncode == 0, (result.stdout[-2000:], result.stderr[-3000:])
    summary = json.loads((out / "summary.json").read_text())
    assert summary["blessed"] is True and summary["pushed_version"] == 1
    assert Path(summary["pushed_model"]).is_dir() and Path(summary["pushed_model"]).is_relative_to(out)
    assert set(summary["seconds"]) >= {"ingest", "preprocess", "train-cnn", "train-autoencoder", "train-dnn",
                                       "evaluate", "push"}  # fmt: skip
    # Every step stamped its artifacts from inside the image: provenance names it, not a local process.
    lineage = json.loads((Path(summary["pushed_model"]) / "lineage.json").read_text())
    images = {a["metadata"]["image"] for step in lineage["steps"].values() for a in step["artifacts"]}
    assert images == {IMAGE} and lineage["push"]["image"] == IMAGE
    verify = [sys.executable, "-m", "pipelines.cli", "lineage", summary["pushed_model"], "--verify"]
    verified = subprocess.run(verify, capture_output=True, text=True, timeout=600)
    assert verified.returncode == 0, verified.stderr[-2000:]
    assert ", 0 mismatch, 0 unreachable" in verified.stdout
