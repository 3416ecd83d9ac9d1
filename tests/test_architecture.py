"""The step registry is the DAG: compiled task edges and outputs match musicrec.steps; lineage and push read it."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from musicrec.release.lineage import ArtifactRef, build_chain
from musicrec.release.push import MODELS
from musicrec.steps import BY_NAME, PUSHED_MODELS, STEPS
from pipelines.package import compile_pipeline

CHANNEL = re.compile(r"pipelinechannel--(?P<task>[a-z-]+?)-(?P<output>[a-z_]+)$")


@pytest.fixture(scope="module")
def compiled(tmp_path_factory):
    return next(yaml.safe_load_all(compile_pipeline(tmp_path_factory.mktemp("c") / "p.yaml").read_text()))


def _tasks(compiled: dict) -> dict[str, dict]:
    """Every task of the DAG by name, including those inside conditions."""
    tasks = dict(compiled["root"]["dag"]["tasks"])
    for name in [n for n in tasks if n.startswith("condition")]:
        condition = tasks.pop(name)
        tasks.update(compiled["components"][condition["componentRef"]["name"]]["dag"]["tasks"])
    return tasks


def _producers(task: dict) -> set[str]:
    """The tasks whose output artifacts a task reads (directly, or passed into its condition)."""
    producers = set()
    for source in task["inputs"].get("artifacts", {}).values():
        if "taskOutputArtifact" in source:
            producers.add(source["taskOutputArtifact"]["producerTask"])
        elif "componentInputArtifact" in source:
            producers.add(CHANNEL.match(source["componentInputArtifact"])["task"])
    return producers


def test_the_compiled_dag_has_exactly_the_registered_steps_and_edges(compiled):
    tasks = _tasks(compiled)
    assert set(tasks) == {step.task for step in STEPS}
    for step in STEPS:
        assert _producers(tasks[step.task]) == {BY_NAME[name].task for name in step.upstream}, step.name


def test_each_component_has_exactly_the_registered_outputs(compiled):
    for step in STEPS:
        outputs = compiled["components"][f"comp-{step.task}"]["outputDefinitions"]["artifacts"]
        assert set(outputs) == set(step.outputs), step.name
        if step.model_output:
            assert outputs[step.model_output]["artifactType"]["schemaTitle"] == "system.Model"


def test_push_publishes_one_model_per_registered_training_step():
    assert MODELS == {"sentiment": "train_cnn", "encoder": "train_autoencoder", "recommender": "train_dnn"}
    assert list(MODELS) == list(PUSHED_MODELS)


def test_lineage_records_the_registered_upstream_steps(tmp_path):
    (tmp_path / "model").write_text("weights")
    chain = build_chain([ArtifactRef("train_autoencoder", "encoder", "file://x", tmp_path / "model")],
                        {"reviews": {"uri": "r", "sha256": "0" * 64, "bytes": 1}})  # fmt: skip
    assert chain["format"] == "musicrec.lineage/1"  # pushed lineage.json files are read by this name
    assert chain["steps"]["train_autoencoder"]["upstream"] == ["preprocess", "train_cnn"]
    assert chain["steps"]["ingest"]["inputs"]["reviews"]["uri"] == "r"


def test_no_module_is_over_450_lines():
    roots = [Path(__file__).parents[1] / name for name in ("src", "components", "pipelines")]
    sizes = {path: len(path.read_text().splitlines()) for root in roots for path in root.rglob("*.py")}
    assert sizes and not {str(path): n for path, n in sizes.items() if n > 450}
