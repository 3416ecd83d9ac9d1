"""The DAG: it compiles, the committed YAML is current, the CLI validates, and runs go end to end."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from components import BASE_IMAGE, GPU_IMAGE
from musicrec.errors import SettingsError
from pipelines.cli import main
from pipelines.local_run import RunError, parse_parameters
from pipelines.package import COMPILED_PIPELINE, compile_pipeline


def _without_versions(text: str) -> str:
    """Compiled YAML minus the lines that only name the kfp version that compiled it."""
    return re.sub(r"^.*(sdkVersion|kfp-\d|kfp==).*$", "", text, flags=re.MULTILINE)


def test_compiled_yaml_is_current(tmp_path):
    fresh = compile_pipeline(tmp_path / "pipeline.yaml")
    assert _without_versions(fresh.read_text()) == _without_versions(COMPILED_PIPELINE.read_text()), (
        "pipelines/music_recommender.yaml is stale: run `make compile` and commit it"
    )


def test_compiled_pipeline_shape(tmp_path):
    spec = next(yaml.safe_load_all(compile_pipeline(tmp_path / "p.yaml").read_text()))
    assert spec["pipelineInfo"]["name"] == "music-recommender"
    parameters = spec["root"]["inputDefinitions"]["parameters"]
    expected = {"reviews_uri", "metadata_uri", "beam_runner", "beam_options", "preprocess_review_vocabulary_size"}
    assert expected <= set(parameters)
    assert (
        "defaultValue" not in parameters["reviews_uri"]
        and parameters["beam_runner"]["defaultValue"] == "DirectRunner"
    )
    assert all(p.get("description") for p in parameters.values()), "every pipeline parameter is documented"
    tasks = spec["root"]["dag"]["tasks"]
    assert tasks["ingest"]["taskInfo"]["name"] == "Ingest reviews"
    assert tasks["preprocess"]["dependentTasks"] == ["ingest"]
    assert tasks["preprocess"]["inputs"]["artifacts"]["examples"]["taskOutputArtifact"] == {
        "outputArtifactKey": "examples",
        "producerTask": "ingest",
    }
    assert tasks["ingest"]["cachingOptions"] == {}  # caching off for ingest: same URI, maybe new bytes
    outputs = spec["components"]["comp-ingest"]["outputDefinitions"]["artifacts"]
    assert outputs["examples"]["artifactType"]["schemaTitle"] == "system.Dataset"
    assert outputs["report_markdown"]["artifactType"]["schemaTitle"] == "system.Markdown"
    container = spec["deploymentSpec"]["executors"]["exec-ingest"]["container"]
    assert container["image"] == BASE_IMAGE
    assert "pip install" not in " ".join(container["command"]), "the image carries kfp; no install at run time"


def test_push_runs_only_when_evaluate_blesses_and_neither_is_cached(tmp_path):
    spec = next(yaml.safe_load_all(compile_pipeline(tmp_path / "p.yaml").read_text()))
    tasks = spec["root"]["dag"]["tasks"]
    assert "push" not in tasks
    (condition,) = [task for name, task in tasks.items() if name.startswith("condition")]
    assert (
        condition["triggerPolicy"]["condition"]
        == "inputs.parameter_values['pipelinechannel--evaluate-Output'] == true"
    )
    inner = spec["components"][condition["componentRef"]["name"]]["dag"]["tasks"]
    assert list(inner) == ["push"]
    assert tasks["evaluate"]["cachingOptions"] == {} and inner["push"]["cachingOptions"] == {}
    evaluate_outputs = spec["components"]["comp-evaluate"]["outputDefinitions"]
    assert evaluate_outputs["parameters"]["Output"]["parameterType"] == "BOOLEAN"  # the blessing
    assert evaluate_outputs["artifacts"]["report"]["artifactType"]["schemaTitle"] == "system.HTML"
    assert "defaultValue" not in spec["root"]["inputDefinitions"]["parameters"]["push_destination"]


TRAINING_TASKS = {"train-cnn", "train-autoencoder", "train-dnn"}


def test_gpu_requests_toleration_and_node_selector_on_exactly_the_training_tasks(tmp_path):
    documents = list(yaml.safe_load_all(compile_pipeline(tmp_path / "p.yaml").read_text()))
    spec, platform = documents[0], documents[1]["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    executors = spec["deploymentSpec"]["executors"]  # one per component, including push inside its condition
    assert len(executors) == 7
    for executor, definition in executors.items():
        name = executor.removeprefix("exec-")
        resources = definition["container"].get("resources", {})
        on_gpu = name in TRAINING_TASKS
        assert ("accelerator" in resources) == on_gpu, name
        assert (executor in platform) == on_gpu, name
        assert definition["container"]["image"] == (GPU_IMAGE if on_gpu else BASE_IMAGE), name
        if on_gpu:
            assert resources["accelerator"]["resourceType"] == "nvidia.com/gpu"
            assert resources["accelerator"]["resourceCount"] == "1"
            assert platform[executor]["tolerations"] == [
                {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
            ]
            assert platform[executor]["nodeSelector"] == {"labels": {"eks.amazonaws.com/nodegroup": "gpu"}}
    assert TRAINING_TASKS <= set(spec["root"]["dag"]["tasks"])


def test_compile_can_point_every_step_at_another_image(tmp_path):
    image = "123456789012.dkr.ecr.us-east-1.amazonaws.com/musicrec:0.1.0"
    spec = next(yaml.safe_load_all(compile_pipeline(tmp_path / "p.yaml", image=image).read_text()))
    images = {name: e["container"]["image"] for name, e in spec["deploymentSpec"]["executors"].items()}
    training = {f"exec-{task}" for task in TRAINING_TASKS}
    assert {name for name, used in images.items() if used == f"{image}-gpu"} == training
    assert {used for name, used in images.items() if name not in training} == {image}


def test_compile_with_two_digests_sets_every_tasks_image_and_keeps_the_package_loadable(tmp_path):
    registry = "123456789012.dkr.ecr.us-east-1.amazonaws.com:443/ml/musicrec"
    cpu, gpu = f"{registry}@sha256:{'a' * 64}", f"{registry}-gpu@sha256:{'b' * 64}"
    package = compile_pipeline(tmp_path / "p.yaml", image=cpu, gpu_image=gpu)
    documents = list(yaml.safe_load_all(package.read_text()))
    images = {name: e["container"]["image"] for name, e in documents[0]["deploymentSpec"]["executors"].items()}
    training = {f"exec-{task}" for task in TRAINING_TASKS}
    assert {name for name, used in images.items() if used == gpu} == training
    assert {name for name, used in images.items() if used == cpu} == set(images) - training
    # The GPU scheduling (platform spec) survives, and KFP loads the package as a pipeline.
    selectors = documents[1]["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    assert set(selectors) == training
    from kfp import components

    loaded = components.load_component_from_file(str(package))
    assert loaded.pipeline_spec.deployment_spec["executors"]["exec-train-cnn"]["container"]["image"] == gpu
    assert package.read_text().startswith("# PIPELINE DEFINITION")


def test_a_digest_image_needs_its_gpu_image_and_references_are_checked(tmp_path, capsys):
    digest = f"repo/musicrec@sha256:{'c' * 64}"
    assert main(["compile", "--out", str(tmp_path / "p.yaml"), "--image", digest]) == 1
    assert capsys.readouterr().err.strip() == (
        f"musicrec compile: error: --image {digest} is a digest: give the training steps' image with --gpu-image"
    )
    assert main(["compile", "--out", str(tmp_path / "p.yaml"), "--image", "repo/musicrec: 1"]) == 1
    assert "expected an image reference" in capsys.readouterr().err
    assert not (tmp_path / "p.yaml").exists()


def test_parameters_are_typed_and_checked():
    assert parse_parameters(["push_destination=s3://b/k"]) == {"push_destination": "s3://b/k"}
    with pytest.raises(RunError, match="--param reviews_uri: give it with --reviews instead"):
        parse_parameters(["reviews_uri=s3://b/k"])
    with pytest.raises(RunError, match="--param push_destination: give it with --push-destination instead"):
        parse_parameters(["push_destination=s3://b/k"], {"push_destination": "--push-destination"})
    typed = parse_parameters(["cnn_seed=3", "dnn_l2=1e-3", "blessing_max_regression=0"])
    assert typed == {"cnn_seed": 3, "dnn_l2": 0.001, "blessing_max_regression": 0.0}
    assert [type(v) for v in typed.values()] == [int, float, float]
    with pytest.raises(RunError, match=r"--param cnn_seed='x': expected integer"):
        parse_parameters(["cnn_seed=x"])
    with pytest.raises(RunError, match="unknown parameter"):
        parse_parameters(["learning_rate=0.1"])
    with pytest.raises(RunError, match="expected name=value"):
        parse_parameters(["reviews_uri"])
    for pair, message in [
        ("cnn_epochs=0", "cnn_epochs must be at least 1, got 0"),
        ("preprocess_max_review_tokens=-1", "preprocess_max_review_tokens must be at least 1"),
    ]:
        with pytest.raises(SettingsError, match=message):
            parse_parameters([pair])


def test_cli_rejects_a_missing_local_input_with_one_line(tmp_path, capsys):
    code = main(["run", "--output", str(tmp_path / "run"), "--reviews", str(tmp_path / "absent.json.gz"),
                 "--metadata", str(tmp_path / "absent_meta.json.gz")])  # fmt: skip
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1
    assert err[-1] == f"musicrec run: error: cannot read {tmp_path / 'absent.json.gz'}: not found"
    assert not (tmp_path / "run").exists()  # a failure before the pipeline leaves no output directory behind


def test_run_into_a_file_or_under_one_is_one_line(tmp_path, capsys):
    (tmp_path / "afile").write_text("")
    assert main(["run", "--output", str(tmp_path / "afile")]) == 1
    assert capsys.readouterr().err.strip() == (
        f"musicrec run: error: --output {tmp_path / 'afile'} is a file: give a directory "
        "(it is created if missing)"
    )
    assert main(["run", "--output", str(tmp_path / "afile" / "run")]) == 1
    assert capsys.readouterr().err.strip() == (
        f"musicrec run: error: --output {tmp_path / 'afile' / 'run'}: cannot write {tmp_path / 'afile' / 'run'}: "
        "Not a directory"
    )


def test_a_docker_run_refuses_local_inputs_its_containers_cannot_see(tmp_path, small_dataset, capsys):
    out = tmp_path / "run"
    code = main(["run", "--runner", "docker", "--output", str(out), "--reviews", str(small_dataset.reviews_path),
                 "--metadata", str(small_dataset.metadata_path)])  # fmt: skip
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and len(err) == 1
    assert err[0].startswith(
        f"musicrec run: error: {small_dataset.reviews_path}: with --runner docker a local input"
    )
    assert not (out / "summary.json").exists()


def test_images_are_chosen_only_for_a_docker_run(tmp_path, capsys):
    assert main(["run", "--output", str(tmp_path), "--image", "musicrec:0.1.0"]) == 1
    assert capsys.readouterr().err.strip() == (
        "musicrec run: error: --image and --gpu-image choose the images of --runner docker"
    )


def test_cli_wants_both_data_arguments(tmp_path, capsys):
    assert main(["run", "--output", str(tmp_path), "--reviews", "x.json"]) == 1
    assert "give both --reviews and --metadata" in capsys.readouterr().err


def test_cli_generate_writes_the_files(tmp_path):
    assert main(["generate", "--reviews", "500", "--seed", "1", "--out", str(tmp_path)]) == 0
    assert (tmp_path / "Digital_Music.json.gz").stat().st_size > 0
    assert main(["generate", "--reviews", "50", "--out", str(tmp_path / "x")]) == 1


@pytest.mark.slow
def test_musicrec_run_end_to_end_on_a_small_sample(tmp_path):
    """The console script, a generated sample, the DAG through kfp.local, summary.json."""
    out, scratch = tmp_path / "run", tmp_path / "tmp"
    scratch.mkdir()
    result = subprocess.run(
        [sys.executable, "-m", "pipelines.cli", "run", "--output", str(out), "--sample-reviews", "3000",
         "--param", "blessing_min_ranking_ndcg=0", "--param", "blessing_max_rating_rmse=5",
         "--param", "blessing_min_sentiment_auc=0.5"],
        capture_output=True, text=True, timeout=600, env={**os.environ, "TMPDIR": str(scratch)},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert not list(scratch.iterdir())  # kfp.local's and Beam's temporary directories went with the run
    summary = json.loads((out / "summary.json").read_text())
    ingest = summary["ingest"]
    assert ingest["lines_read"] == 3000
    assert ingest["kept"] + ingest["quarantined"] + ingest["duplicates"] == 3000
    assert set(summary["seconds"]) >= {"generate", "ingest", "preprocess", "total"}
    assert "ingest    lines" in result.stdout
    examples = next((out / "pipeline_root").glob("music-recommender-*/ingest/examples"))
    assert {p.name for p in examples.iterdir()} == {"train", "eval", "test"}
    preprocess = summary["preprocess"]
    assert {split: preprocess["splits"][split]["rows"] for split in ("train", "eval", "test")} == {
        split: ingest["splits"][split]["rows"] for split in ("train", "eval", "test")
    }
    assert preprocess["vocabulary_sizes"]["users"] == ingest["splits"]["train"]["users"]
    transformed = next((out / "pipeline_root").glob("music-recommender-*/preprocess/transformed_examples"))
    assert all(list((transformed / split).glob("*.tfrecord.gz")) for split in ("train", "eval", "test"))
    sentiment = summary["sentiment"]
    assert set(sentiment["test"]) == {"accuracy", "balanced_accuracy", "auc"}
    assert set(sentiment["baselines"]) == {"majority", "bow_linear", "ngram_linear"}
    assert "sentiment test: CNN accuracy" in result.stdout
    assert next((out / "pipeline_root").glob("music-recommender-*/train-cnn/model/saved_model.pb"))
    importance = next((out / "pipeline_root").glob("music-recommender-*/train-cnn/token_importance"))
    assert "data:image/png;base64," in importance.read_text()
    assert set(summary["autoencoder"]["test"]) == {"reconstruction_mse"}
    assert set(summary["autoencoder"]["baselines"]) == {"pca"}
    assert set(summary["rating"]["test"]) == {"rmse", "mae"}
    assert set(summary["rating"]["baselines"]) == {"global_mean", "bias", "mf"}
    assert set(summary["ranking"]["test"]) == {"hr@10", "ndcg@10"}
    assert set(summary["ranking"]["baselines"]) == {"mostpop", "itemknn", "ease"}
    # Relaxed thresholds (--param below): a 3,000-review sample is blessed and pushed to the run's model store.
    assert summary["blessed"] is True and all(r.startswith("pass: ") for r in summary["blessing_reasons"])
    assert summary["serving_check"]["auc"] == pytest.approx(sentiment["test"]["auc"], abs=0.002)
    pushed = Path(summary["pushed_model"])
    assert pushed == out / "model_store" / "recommender" / "1" and (pushed / "saved_model.pb").is_file()
    assert summary["pushed_version"] == 1 and set(summary["pushed_models"]) == {
        "sentiment",
        "encoder",
        "recommender",
    }
    assert {"evaluate", "push"} <= set(summary["seconds"])
    report = next((out / "pipeline_root").glob("music-recommender-*/evaluate/report")).read_text()
    assert report.count("data:image/png;base64,") >= 5 and "BLESSED" in report
    assert "lineage of " in result.stdout and "input reviews" in result.stdout
    verified = subprocess.run([sys.executable, "-m", "pipelines.cli", "lineage", str(pushed), "--verify"],
                              capture_output=True, text=True, timeout=300)  # fmt: skip
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert ", 0 mismatch, 0 unreachable" in verified.stdout
    assert main(["lineage", str(out), "--verify"]) == 0  # the run directory's own chain


@pytest.mark.slow
def test_musicrec_run_from_s3_through_kfp_local(tmp_path, s3_env, small_dataset):
    import boto3

    client = boto3.client("s3")
    client.create_bucket(Bucket="musicrec-e2e")
    client.upload_file(str(small_dataset.reviews_path), "musicrec-e2e", "r.json.gz")
    client.upload_file(str(small_dataset.metadata_path), "musicrec-e2e", "m.json.gz")
    out = tmp_path / "run"
    assert main(["run", "--output", str(out), "--reviews", "s3://musicrec-e2e/r.json.gz",
                 "--metadata", "s3://musicrec-e2e/m.json.gz",
                 "--param", "blessing_min_sentiment_auc=1.0"]) == 0  # fmt: skip
    summary = json.loads((out / "summary.json").read_text())
    assert summary["ingest"]["inputs"]["reviews"]["uri"] == "s3://musicrec-e2e/r.json.gz"
    assert summary["ingest"]["lines_read"] == 3000
    # An AUC no model reaches: evaluate says why, push is skipped, nothing reaches the model store.
    assert summary["blessed"] is False and summary["pushed_model"] is None
    assert any(r.startswith("FAIL: sentiment test AUC") for r in summary["blessing_reasons"])
    assert "push" not in summary["seconds"]
    # Nothing pushed; the run's evaluation is kept in the store all the same, under the run's id.
    assert [p.name for p in (out / "model_store").iterdir()] == [".runs"]
    (kept,) = (out / "model_store" / ".runs").glob("*/evaluation.json")
    assert json.loads(kept.read_text())["blessed"] is False


@pytest.mark.slow
def test_a_failing_step_makes_musicrec_run_exit_non_zero(tmp_path):
    """All lines invalid: the ingest task fails inside kfp.local and the CLI says so, exit 1."""
    reviews = tmp_path / "Digital_Music.json"
    reviews.write_text('{"overall": 9.0}\nnot json\n')
    metadata = tmp_path / "meta.json"
    metadata.write_text('{"asin": "B1"}\n')
    out = tmp_path / "run"
    result = subprocess.run(
        [sys.executable, "-m", "pipelines.cli", "run", "--output", str(out), "--reviews", str(reviews),
         "--metadata", str(metadata)],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert result.returncode == 1
    assert "ingest failed: no valid reviews in" in result.stdout + result.stderr
    # The step's own cause is the last line on stderr; kfp.local's executor JSON is in the task's log only.
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith(f"musicrec run: error: ingest failed: no valid reviews in {reviews}: all 2 lines were")
    assert '"outputFile"' not in result.stdout + result.stderr and "Inner task failed" not in result.stderr
    assert '"outputFile"' in (out / "logs" / "ingest.log").read_text()
    assert not (out / "summary.json").exists()
    assert not list((out / "pipeline_root").glob("*/ingest/examples"))
    assert not list((out / "pipeline_root").glob("*/preprocess"))


@pytest.mark.parametrize("command", [["score", "--model", "{dir}", "great album"],
                                     ["recommend", "--model", "{dir}", "--user", "A1"]])  # fmt: skip
def test_score_and_recommend_on_a_directory_without_a_model_fail_in_one_line(tmp_path, capsys, command):
    assert main([part.replace("{dir}", str(tmp_path)) for part in command]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(
        f"musicrec {command[0]}: error: cannot load a model from {tmp_path}"
    )
