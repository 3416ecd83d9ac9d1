"""The command line's usage and environment errors: one line on stderr, exit 1 (2 for usage), nothing else."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from pipelines.cli import main
from pipelines.package import COMPILED_PIPELINE


def one_error_line(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    return err[0]


@pytest.mark.parametrize("text", ["", "   \n"])
def test_scoring_empty_text_is_a_usage_error(text, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["score", "--model", str(tmp_path), text])
    assert exit_.value.code == 2
    assert capsys.readouterr().err.strip().endswith("argument text: the review text is empty")


def test_scoring_with_the_recommender_names_the_wrong_model(small_recommender, capsys):
    model = small_recommender[0] / "model"
    assert main(["score", "--model", str(model), "great album"]) == 1
    assert one_error_line(capsys) == (
        f"musicrec score: error: {model} is not a sentiment model: its serving_default takes item_id, user_id, "
        "not review_text, summary_text"
    )


def test_score_prints_its_answer_without_tensorflow_start_up_noise(small_cnn):
    model = small_cnn[0] / "model"
    result = subprocess.run([sys.executable, "-m", "pipelines.cli", "score", "--model", str(model), "great album"],
                            capture_output=True, text=True, timeout=300)  # fmt: skip
    assert result.returncode == 0 and result.stdout.strip().endswith(("positive", "negative"))
    assert result.stderr == ""


@pytest.mark.parametrize(
    ("out", "message"),
    [
        ("afile/x.yaml", "cannot write {tmp}/afile/x.yaml: Not a directory"),
        ("missing/x.yaml", "cannot write {tmp}/missing/x.yaml: No such file or directory"),
        (".", "--out {tmp}/. is a directory: give the YAML file's path"),
    ],
)
def test_compile_to_a_path_it_cannot_write_is_one_line(out, message, tmp_path, capsys):
    (tmp_path / "afile").write_text("")
    assert main(["compile", "--out", f"{tmp_path}/{out}"]) == 1
    assert one_error_line(capsys) == "musicrec compile: error: " + message.format(tmp=tmp_path)


def test_compile_writes_into_the_current_directory_by_default(tmp_path, monkeypatch, capsys):
    packaged = COMPILED_PIPELINE.read_bytes()
    monkeypatch.chdir(tmp_path)
    assert main(["compile"]) == 0
    assert (tmp_path / COMPILED_PIPELINE.name).is_file() and COMPILED_PIPELINE.read_bytes() == packaged


def test_generate_into_a_path_it_cannot_write_is_one_line(tmp_path, capsys):
    (tmp_path / "afile").write_text("")
    assert main(["generate", "--reviews", "100", "--out", str(tmp_path / "afile" / "data")]) == 1
    assert one_error_line(capsys).startswith(f"musicrec generate: error: cannot write {tmp_path / 'afile'}")
    assert not Path(tmp_path / "afile").is_dir()
