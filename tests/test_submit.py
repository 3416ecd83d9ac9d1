"""`musicrec submit`: the real kfp client against a stand-in for the KFP v2beta1 REST API on 127.0.0.1.

No Kubeflow API server can run here, so a small HTTP server answers the four calls a submission makes
(healthz, find the experiment, create it, create the run) and records what the client sent.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

import pytest

from pipelines.cli import main


class FakePipelinesApi(BaseHTTPRequestHandler):
    """Answers like the KFP API server would; every request lands in ``received``."""

    received: list[tuple[str, str, dict]] = []

    def _reply(self, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:  # noqa: N802 - the http.server hook name
        url = urlparse(self.path)
        self.received.append(("GET", url.path, parse_qs(url.query)))
        if url.path.endswith("/healthz"):
            self._reply({"multi_user": False})
        elif url.path.endswith("/experiments"):
            self._reply({"experiments": [], "total_size": 0})
        else:
            self.send_error(404)

    def do_POST(self) -> None:  # noqa: N802
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])) or b"{}")
        self.received.append(("POST", self.path, body))
        if self.path.endswith("/experiments"):
            self._reply({"experiment_id": "exp-1", "display_name": body.get("display_name")})
        elif self.path.endswith("/runs"):
            self._reply({"run_id": "run-42", "display_name": body.get("display_name"), "experiment_id": "exp-1"})
        else:
            self.send_error(404)

    def log_message(self, *args) -> None:
        """Quiet."""


@pytest.fixture
def kfp_api():
    FakePipelinesApi.received = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakePipelinesApi)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", FakePipelinesApi.received
    server.shutdown()


def test_submit_files_a_run_with_the_compiled_dag_and_its_arguments(kfp_api, capsys):
    host, received = kfp_api
    image = "123456789012.dkr.ecr.us-east-1.amazonaws.com/musicrec:0.1.0"
    code = main(["submit", "--host", host, "--reviews", "s3://data/Digital_Music.json.gz",
                 "--metadata", "s3://data/meta_Digital_Music.json.gz", "--push-destination", "s3://models/musicrec",
                 "--run-name", "nightly", "--image", image, "--param", "cnn_seed=3"])  # fmt: skip
    assert code == 0
    out = capsys.readouterr().out
    assert "run run-42 submitted to experiment 'musicrec'" in out and f"{host}/#/runs/details/run-42" in out
    experiment = next(
        body for method, path, body in received if method == "POST" and path.endswith("/experiments")
    )
    assert experiment["display_name"] == "musicrec"
    run = next(body for method, path, body in received if method == "POST" and path.endswith("/runs"))
    assert run["display_name"] == "nightly" and run["experiment_id"] == "exp-1"
    assert run["runtime_config"]["parameters"] == {
        "reviews_uri": "s3://data/Digital_Music.json.gz", "metadata_uri": "s3://data/meta_Digital_Music.json.gz",
        "push_destination": "s3://models/musicrec", "cnn_seed": 3,
    }  # fmt: skip
    spec = run["pipeline_spec"]["pipeline_spec"]  # with the kfp-kubernetes platform spec beside it
    assert spec["pipelineInfo"]["name"] == "music-recommender"
    assert "gpu" in json.dumps(run["pipeline_spec"]["platform_spec"])  # tolerations and node selector travel
    images = {executor["container"]["image"] for executor in spec["deploymentSpec"]["executors"].values()}
    assert images == {image, f"{image}-gpu"}


def test_submit_checks_parameters_before_calling_the_server(kfp_api, capsys):
    host, received = kfp_api
    code = main(["submit", "--host", host, "--reviews", "s3://d/r", "--metadata", "s3://d/m",
                 "--push-destination", "s3://m", "--param", "cnn_seed=x"])  # fmt: skip
    assert code == 1
    assert capsys.readouterr().err.strip() == "musicrec submit: error: --param cnn_seed='x': expected integer"
    assert received == []
