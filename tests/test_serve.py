"""`musicrec serve`: KServe's model server over pushed models, called over HTTP on 127.0.0.1 as a client would.

The server runs in the serving environment (.venv-serve, built by `make test`); the answers are compared with the
same SavedModels called in this process.
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from conftest import free_port

from musicrec import features
from musicrec.models.recommender.serving import recommend
from musicrec.models.sentiment import score_texts
from musicrec.release.model_store import LINEAGE_FILE
from pipelines.cli import main

SERVE_COMMAND = Path(__file__).resolve().parents[1] / ".venv-serve" / "bin" / "musicrec"
REVIEWS = ["not good at all, a waste of money", "a wonderful album, I love every song", "", "ok"]
SUMMARIES = ["One Star", "Five Stars", "", "meh"]

TWO_KS = [{"user_id": "A", "k": 1}, {"user_id": "B", "k": 3}]

pytestmark = pytest.mark.slow


def _serve_command() -> str:
    if not SERVE_COMMAND.is_file():
        pytest.fail(f"{SERVE_COMMAND} is missing: `make serve-env` builds it (`make test` does)")
    return str(SERVE_COMMAND)


def _post(url: str, body: object) -> tuple[int, dict]:
    request = urllib.request.Request(url, json.dumps(body).encode(), {"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


@pytest.fixture(scope="module")
def server(small_cnn, small_recommender, tmp_path_factory) -> Iterator[tuple[str, Path, Path]]:
    """The server over a pushed-style sentiment base (version 2 still incomplete) and a recommender version."""
    store = tmp_path_factory.mktemp("served") / "model_store"
    sentiment_model = small_cnn[0] / "model"
    shutil.copytree(sentiment_model, store / "sentiment" / "1")
    (store / "sentiment" / "1" / LINEAGE_FILE).write_text("{}")
    (store / "sentiment" / "2").mkdir()  # a push still under way: no lineage.json yet, so not served
    recommender_model = small_recommender[0] / "model"
    port = free_port()
    process = subprocess.Popen(
        [_serve_command(), "serve", "--http-port", str(port), "--model", str(store / "sentiment"),
         "--model", f"recs={recommender_model}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}/v1/models"
    deadline = time.monotonic() + 180
    while True:
        if process.poll() is not None:
            pytest.fail(f"the server exited with {process.returncode}: {process.stderr.read()[-2000:]}")
        try:
            with urllib.request.urlopen(f"{base}/recs", timeout=2) as response:
                if json.loads(response.read()).get("ready"):
                    break
        except (urllib.error.URLError, ConnectionError):
            pass
        if time.monotonic() > deadline:
            process.kill()
            pytest.fail("the server did not get ready within 180 s")
        time.sleep(1)
    yield base, sentiment_model, recommender_model
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=60) == 0


def test_raw_text_rows_score_as_the_saved_model_does(server):
    base, sentiment_model, _ = server
    rows = [{"review_text": r, "summary_text": s} for r, s in zip(REVIEWS, SUMMARIES, strict=True)]
    status, body = _post(f"{base}/sentiment:predict", {"instances": rows})
    assert status == 200
    np.testing.assert_allclose(body["predictions"], score_texts(sentiment_model, REVIEWS, SUMMARIES), atol=1e-6)
    columns = {"review_text": REVIEWS, "summary_text": SUMMARIES}
    status, body = _post(f"{base}/sentiment:predict", {"inputs": columns})
    assert status == 200 and len(body["outputs"]) == len(REVIEWS)


def test_recommend_answers_known_and_new_users_as_the_signature_does(server):
    base, _, recommender_model = server
    user = (recommender_model / features.USER_VOCABULARY).read_text().splitlines()[3]
    request = {"signature_name": "recommend", "inputs": {"user_id": [user, "ANOBODY"], "k": 4}}
    status, body = _post(f"{base}/recs:predict", request)
    assert status == 200
    outputs = body["outputs"]
    for row, user_id in enumerate((user, "ANOBODY")):
        expected = recommend(recommender_model, user_id, 4)
        assert outputs["personalized"][row] == expected.personalized
        assert outputs["item_ids"][row][: outputs["count"][row]] == [asin for asin, _ in expected.items]
    assert outputs["personalized"] == [True, False]
    # Rows carry one k for the request, as the signature takes it.
    status, body = _post(f"{base}/recs:predict",
                         {"signature_name": "recommend", "instances": [{"user_id": user, "k": 2}]})  # fmt: skip
    assert status == 200 and len(body["predictions"][0]["item_ids"]) == 2


@pytest.mark.parametrize(
    ("model", "body", "message"),
    [
        ("sentiment", {"instances": [{"review_text": "good"}]}, "instance 0 has no 'summary_text'"),
        ("sentiment", {"instances": []}, "'instances' must be a non-empty list"),
        ("sentiment", {"signature_name": "nope", "instances": [{"review_text": "a"}]}, "no signature 'nope'"),
        ("sentiment", {"inputs": {"review_text": ["a"], "summary_text": ["b"], "x": [1]}}, "unknown x"),
        ("recs", {"signature_name": "recommend", "inputs": {"user_id": ["A"], "k": "many"}}, "input 'k'"),
        ("recs", {"signature_name": "recommend", "inputs": {"user_id": ["A"], "k": -3}}, "Need k >= 0"),
        ("recs", {"signature_name": "recommend", "instances": [{"user_id": "A", "k": 1}, {"user_id": "B"}]},
         "instance 1 has no 'k'"),
        ("recs", {"signature_name": "recommend", "instances": TWO_KS}, "one value per request"),
    ],
)  # fmt: skip
def test_a_bad_request_is_a_400_naming_what_is_wrong(server, model, body, message):
    base, _, _ = server
    status, answer = _post(f"{base}/{model}:predict", body)
    assert status == 400 and message in answer["error"]


def test_serve_rejects_a_directory_without_a_model_in_one_line(tmp_path):
    result = subprocess.run([_serve_command(), "serve", "--model", str(tmp_path)], capture_output=True, text=True,
                            timeout=120)  # fmt: skip
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1] == (
        f"musicrec serve: error: --model {tmp_path}: neither a SavedModel nor a model base with a complete version"
    )


def test_serve_in_the_pipeline_environment_says_where_it_runs(tmp_path, capsys):
    assert main(["serve", "--model", str(tmp_path)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "needs the kserve SDK" in err[0] and "make serve" in err[0]
