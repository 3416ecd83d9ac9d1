"""Lineage: provenance stamps, the chain behind a pushed model, `musicrec lineage` and its --verify."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest

from musicrec.errors import LineageError
from musicrec.io.artifacts import attach_metadata, directory_sha256
from musicrec.io.object_store import LocalStore
from musicrec.io.provenance import GIT_REVISION_VARIABLE, IMAGE_VARIABLE, provenance
from musicrec.release.lineage import load, render_tree
from musicrec.release.push import push_models
from pipelines.cli import main


@pytest.fixture
def pushed(small_models, small_evaluation, tmp_path) -> tuple[Path, dict]:
    """One push to a local store; returns the store and the commit record."""
    return tmp_path / "store", push_models(small_models, small_evaluation, str(tmp_path / "store"))


def test_provenance_names_version_revision_and_image(monkeypatch):
    local = provenance()
    assert local["package_version"] == "0.1.0"
    assert local["git_revision"] != "" and local["image"].startswith("local")
    monkeypatch.setenv(GIT_REVISION_VARIABLE, "abc123")
    monkeypatch.setenv(IMAGE_VARIABLE, "123.dkr.ecr.eu-west-1.amazonaws.com/musicrec:0.1.0")
    assert provenance() == {"package_version": "0.1.0", "git_revision": "abc123",
                            "image": "123.dkr.ecr.eu-west-1.amazonaws.com/musicrec:0.1.0"}  # fmt: skip


def test_every_artifact_is_stamped_with_hash_size_and_provenance(tmp_path):
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "weights.bin").write_bytes(b"\x00" * 10)
    (tmp_path / "report.json").write_text("{}")
    artifacts = {
        name: SimpleNamespace(path=str(tmp_path / name), metadata={}) for name in ("model", "report.json")
    }
    attach_metadata(artifacts, {"model": {"bottleneck": 8}})
    model = artifacts["model"].metadata
    assert model["sha256"] == directory_sha256(tmp_path / "model") and model["bytes"] == 10
    assert model["bottleneck"] == 8 and model["package_version"] == "0.1.0" and "git_revision" in model
    assert artifacts["report.json"].metadata["bytes"] == 2


def test_a_store_hashes_a_directory_as_the_local_hash_does(small_models):
    directory = small_models["sentiment"]
    assert LocalStore(str(directory)).tree_sha256() == directory_sha256(directory)


def test_the_pushed_lineage_chains_back_to_the_raw_inputs(pushed, small_dataset, capsys):
    store, record = pushed
    target = record["models"]["sentiment"]
    assert main(["lineage", target]) == 0
    tree = capsys.readouterr().out
    assert tree.splitlines()[0].startswith("model sentiment version 1")
    assert "evaluate: blessed" in tree and "train_cnn" in tree and "input reviews" in tree
    assert str(small_dataset.reviews_path) in tree and "code: musicrec 0.1.0 @ " in tree
    assert main(["lineage", str(store / "sentiment"), "--json"]) == 0  # the model resolves to its newest version
    document = json.loads(capsys.readouterr().out)
    assert document["model"]["uri"] == target and document["steps"]["ingest"]["inputs"]["reviews"]["bytes"] > 0


def test_verify_passes_on_a_fresh_push_and_flags_a_tampered_file(pushed, small_models, capsys):
    store, record = pushed
    target = record["models"]["sentiment"]
    assert main(["lineage", target, "--verify"]) == 0
    assert "mismatch" not in capsys.readouterr().out.split("verify: ")[1].split(",")[0]
    (Path(target) / "variables" / "variables.index").write_bytes(b"tampered")
    assert main(["lineage", target, "--verify"]) == 1
    captured = capsys.readouterr()
    assert "1 mismatch" in captured.out and "variables/variables.index" in captured.out
    assert "musicrec lineage: error: 1 artifact(s) failed verification" in captured.err
    assert main(["lineage", target, "--verify", "--json"]) == 1
    checks = json.loads(capsys.readouterr().out)["verification"]
    assert [c["uri"] for c in checks if c["status"] == "mismatch"] == [f"{target}/variables/variables.index"]


def test_verify_hashes_a_copy_where_it_is_not_the_original(pushed, tmp_path, capsys):
    """A copied model store is verified by its own bytes: a byte flipped in the copy fails, the original aside."""
    store, record = pushed
    copy = tmp_path / "copy"
    shutil.copytree(store, copy)
    version = Path(record["models"]["sentiment"]).relative_to(store)
    copied = copy / version
    data = next((copied / "variables").glob("variables.data-*"))
    data.write_bytes(bytes([data.read_bytes()[0] ^ 1]) + data.read_bytes()[1:])
    assert main(["lineage", str(copied), "--verify"]) == 1
    captured = capsys.readouterr()
    assert f"mismatch: {data}" in captured.out and "1 mismatch" in captured.out
    assert captured.err.startswith("musicrec lineage: error: 1 artifact(s) failed verification, first ")
    # A file added beside the recorded ones is a change too (TF Serving would load the directory as it is).
    data.write_bytes(bytes([data.read_bytes()[0] ^ 1]) + data.read_bytes()[1:])
    (copied / "variables" / "extra.bin").write_bytes(b"x")
    assert main(["lineage", str(copied), "--verify"]) == 1
    assert "not in the recorded model" in capsys.readouterr().out
    (copied / "variables" / "extra.bin").unlink()
    assert main(["lineage", str(copied), "--verify"]) == 0


def test_unreachable_artifacts_fail_verification_unless_allowed(pushed, tmp_path, capsys):
    store, record = pushed
    copy = tmp_path / "copy"
    shutil.copytree(store, copy)
    copied = copy / Path(record["models"]["encoder"]).relative_to(store)
    lineage = json.loads((copied / "lineage.json").read_text())
    lineage["steps"]["ingest"]["inputs"]["reviews"]["uri"] = str(tmp_path / "gone.json.gz")
    (copied / "lineage.json").write_text(json.dumps(lineage))
    assert main(["lineage", str(copied), "--verify"]) == 1
    captured = capsys.readouterr()
    assert f"unreachable: {tmp_path / 'gone.json.gz'}" in captured.out and "--allow-unreachable" in captured.err
    assert main(["lineage", str(copied), "--verify", "--allow-unreachable"]) == 0
    assert "1 unreachable" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("content", "message"),
    [("{not json", "not valid JSON"), ('{"format": "x"}', "not a musicrec.lineage/1 document"), ("[1]", "not a")],
)
def test_a_corrupt_lineage_file_is_a_one_line_error(tmp_path, capsys, content, message):
    (tmp_path / "lineage.json").write_text(content)
    assert main(["lineage", str(tmp_path), "--verify"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"musicrec lineage: error: {tmp_path}/lineage.json: ")
    assert message in err[0]


def test_lineage_of_nothing_is_a_one_line_error(tmp_path, capsys):
    assert main(["lineage", str(tmp_path)]) == 1
    assert capsys.readouterr().err.strip().startswith(f"musicrec lineage: error: {tmp_path}: no lineage.json here")
    with pytest.raises(LineageError):
        load(str(tmp_path / "missing"))


def test_render_tree_of_a_run_lists_every_step_once():
    chain = [("ingest", []), ("preprocess", ["ingest"]), ("train_cnn", ["preprocess"])]
    steps = {step: {"upstream": up, "artifacts": [{"name": "x", "sha256": "0" * 64, "uri": f"/r/{step}/x"}]}
             for step, up in chain}  # fmt: skip
    steps["ingest"]["inputs"] = {"reviews": {"uri": "s3://b/r.json.gz", "sha256": "1" * 64, "bytes": 5}}
    tree = render_tree({"steps": steps, "evaluation": {"blessed": False, "reasons": ["FAIL: x"]}})
    assert tree.splitlines()[0] == "evaluate: NOT blessed"
    assert sum(line.strip().startswith("└─ preprocess") for line in tree.splitlines()) == 1
    assert "input reviews  sha256:111111111111  5 bytes  s3://b/r.json.gz" in tree
