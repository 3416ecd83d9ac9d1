"""`musicrec submit` and `musicrec schedule`: the real kfp client against a stand-in KFP v2beta1 REST server.

No Kubeflow API server can run here, so a small HTTP server on 127.0.0.1 keeps pipelines, versions, experiments,
runs and recurring runs in memory, records every call (with its Authorization header), and plays a scripted
sequence of run states: success, failure, or a run that never ends.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

import pytest

from pipelines.cli import main

API = "/apis/v2beta1"
DATA = ["--reviews", "s3://data/Digital_Music.json.gz", "--metadata", "s3://data/meta_Digital_Music.json.gz",
        "--push-destination", "s3://models/musicrec"]  # fmt: skip


class FakePipelinesApi(BaseHTTPRequestHandler):
    """Answers like the KFP API server would; ``state`` holds what was created, ``calls`` what was asked."""

    state: dict
    calls: list[dict]
    run_states: list[str]

    def _reply(self, body: dict, status: int = 200) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _record(self, method: str, body: object = None) -> tuple[str, dict]:
        url = urlparse(self.path)
        query = {k: v[0] for k, v in parse_qs(url.query).items()}
        self.calls.append({"method": method, "path": url.path, "query": query, "body": body,
                           "authorization": self.headers.get("Authorization")})  # fmt: skip
        return url.path.removeprefix(API), query

    @staticmethod
    def _named(items: list[dict], query: dict) -> list[dict]:
        if "filter" not in query:
            return items
        (predicate,) = json.loads(query["filter"])["predicates"]
        name = predicate.get("stringValue", predicate.get("string_value"))
        return [item for item in items if item["display_name"] == name]

    def do_GET(self) -> None:  # noqa: N802 - the http.server hook name
        path, query = self._record("GET")
        parts = path.strip("/").split("/")
        if path == "/healthz":
            self._reply({"multi_user": False})
        elif path == "/pipelines":
            self._reply({"pipelines": self._named(self.state["pipelines"], query) or None})
        elif parts[0] == "pipelines" and parts[-1] == "versions":
            versions = [v for v in self.state["versions"] if v["pipeline_id"] == parts[1]]
            self._reply({"pipeline_versions": self._named(versions, query) or None})
        elif path == "/experiments":
            self._reply({"experiments": self._named(self.state["experiments"], query) or None})
        elif parts[0] == "runs":
            state = self.run_states.pop(0) if len(self.run_states) > 1 else self.run_states[0]
            self._reply({"run_id": parts[1], "state": state})
        else:
            self.send_error(404)

    def do_POST(self) -> None:  # noqa: N802
        raw = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        multipart = self.headers.get("Content-Type", "").startswith("multipart/")
        path, query = self._record("POST", None if multipart else json.loads(raw or b"{}"))
        body = self.calls[-1]["body"]
        if path == "/pipelines/upload":
            pipeline = {"pipeline_id": f"p{len(self.state['pipelines']) + 1}", "display_name": query["name"]}
            self.state["pipelines"].append(pipeline)
            self._reply(pipeline)
        elif path == "/pipelines/upload_version":
            version = {"pipeline_id": query["pipelineid"], "display_name": query["name"],
                       "pipeline_version_id": f"v{len(self.state['versions']) + 1}"}  # fmt: skip
            self.state["versions"].append(version)
            self._reply(version)
        elif path == "/experiments":
            experiment = {"experiment_id": f"e{len(self.state['experiments']) + 1}", **body}
            self.state["experiments"].append(experiment)
            self._reply(experiment)
        elif path == "/runs":
            self._reply({"run_id": "r1", "display_name": body["display_name"], "state": "PENDING"})
        elif path == "/recurringruns":
            self._reply({"recurring_run_id": "rr1", "display_name": body["display_name"]})
        else:
            self.send_error(404)

    def log_message(self, *args) -> None:
        """Quiet."""


@pytest.fixture
def kfp_api(monkeypatch):
    FakePipelinesApi.state = {"pipelines": [], "versions": [], "experiments": []}
    FakePipelinesApi.calls = []
    FakePipelinesApi.run_states = ["RUNNING", "RUNNING", "SUCCEEDED"]
    monkeypatch.delenv("KF_PIPELINES_TOKEN", raising=False)
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakePipelinesApi)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", FakePipelinesApi
    server.shutdown()


def posted(api, path: str) -> list[dict]:
    return [call for call in api.calls if call["method"] == "POST" and call["path"] == API + path]


def test_submit_uploads_a_version_named_by_the_revision_runs_it_and_waits_for_success(kfp_api, capsys, tmp_path,
                                                                                      monkeypatch):  # fmt: skip
    host, api = kfp_api
    monkeypatch.setenv("KF_PIPELINES_TOKEN", "secret-token")
    monkeypatch.setenv("MUSICREC_GIT_REVISION", "0123456789abcdef0123456789abcdef01234567")
    image = "123456789012.dkr.ecr.us-east-1.amazonaws.com/musicrec:0.1.0"
    code = main(["submit", "--host", host, *DATA, "--image", image, "--param", "cnn_seed=3", "--wait",
                 "--poll-seconds", "0.05", "--record-out", str(tmp_path / "run.json")])  # fmt: skip
    out = capsys.readouterr().out
    assert code == 0, out
    assert [call["query"]["name"] for call in posted(api, "/pipelines/upload")] == ["music-recommender"]
    (version,) = posted(api, "/pipelines/upload_version")
    assert version["query"] == {"name": "0123456789abcdef0123456789abcdef01234567", "pipelineid": "p1"}
    (run,) = posted(api, "/runs")
    assert run["body"]["display_name"] == "music-recommender-0123456789ab"
    assert run["body"]["pipeline_version_reference"] == {"pipeline_id": "p1", "pipeline_version_id": "v1"}
    assert run["body"]["runtime_config"]["parameters"] == {
        "reviews_uri": "s3://data/Digital_Music.json.gz", "metadata_uri": "s3://data/meta_Digital_Music.json.gz",
        "push_destination": "s3://models/musicrec", "cnn_seed": 3,
    }  # fmt: skip
    assert {call["authorization"] for call in api.calls} == {"Bearer secret-token"}
    assert "run r1: RUNNING" in out and "run r1: SUCCEEDED" in out and f"{host}/#/runs/details/r1" in out
    assert out.count("run r1: RUNNING") == 1, "state changes are printed once each"
    record = json.loads((tmp_path / "run.json").read_text())
    assert record["state"] == "SUCCEEDED" and record["version_id"] == "v1" and record["experiment_id"] == "e1"


def test_a_retry_of_the_same_version_reuses_pipeline_version_and_experiment(kfp_api, capsys):
    host, api = kfp_api
    for _ in range(2):
        assert main(["submit", "--host", host, *DATA, "--version", "abc123"]) == 0
    assert len(posted(api, "/pipelines/upload")) == 1 and len(posted(api, "/pipelines/upload_version")) == 1
    assert len(posted(api, "/experiments")) == 1 and len(posted(api, "/runs")) == 2
    assert "run r1 (music-recommender-abc123) submitted" in capsys.readouterr().out


def test_a_failed_run_makes_submit_wait_exit_1_in_one_line(kfp_api, capsys):
    host, api = kfp_api
    api.run_states = ["RUNNING", "FAILED"]
    code = main(["submit", "--host", host, *DATA, "--version", "v", "--wait", "--poll-seconds", "0.05"])
    assert code == 1
    assert capsys.readouterr().err.strip().splitlines()[-1] == "musicrec submit: error: run r1 ended FAILED"


def test_a_run_that_never_ends_times_out_with_exit_1(kfp_api, capsys, tmp_path):
    host, api = kfp_api
    api.run_states = ["RUNNING"]
    code = main(["submit", "--host", host, *DATA, "--version", "v", "--wait", "--timeout", "1",
                 "--poll-seconds", "0.1", "--record-out", str(tmp_path / "run.json")])  # fmt: skip
    assert code == 1
    assert (
        capsys.readouterr().err.strip() == "musicrec submit: error: run r1 is still RUNNING after 1 s (--timeout)"
    )
    assert json.loads((tmp_path / "run.json").read_text())["state"] is None


def test_a_token_file_and_a_namespace_reach_the_server(kfp_api, tmp_path):
    host, api = kfp_api
    (tmp_path / "token").write_text("from-file\n")
    assert main(["submit", "--host", host, *DATA, "--version", "v", "--token-file", str(tmp_path / "token"),
                 "--namespace", "team-a"]) == 0  # fmt: skip
    assert {call["authorization"] for call in api.calls} == {"Bearer from-file"}
    (experiment,) = posted(api, "/experiments")
    assert experiment["body"]["namespace"] == "team-a"
    assert main(["submit", "--host", host, *DATA, "--version", "v", "--token-file", str(tmp_path / "absent")]) == 1


def test_schedule_creates_one_recurring_run_at_a_time_without_catch_up(kfp_api, capsys):
    host, api = kfp_api
    code = main(["schedule", "--host", host, *DATA, "--version", "v", "--cron", "0 0 3 * * 1", "--name", "weekly"])
    assert code == 0
    (recurring,) = posted(api, "/recurringruns")
    body = recurring["body"]
    assert body["display_name"] == "weekly" and body["trigger"]["cron_schedule"]["cron"] == "0 0 3 * * 1"
    assert int(body["max_concurrency"]) == 1 and body["no_catchup"] is True
    assert body["pipeline_version_reference"] == {"pipeline_id": "p1", "pipeline_version_id": "v1"}
    assert "recurring run rr1 (weekly) scheduled" in capsys.readouterr().out


def test_a_compiled_package_is_submitted_as_it_is(kfp_api, tmp_path, capsys):
    host, api = kfp_api
    assert main(["compile", "--out", str(tmp_path / "p.yaml"), "--image", "repo/musicrec:1"]) == 0
    assert main(["submit", "--host", host, *DATA, "--version", "v", "--package", str(tmp_path / "p.yaml")]) == 0
    assert main(["submit", "--host", host, *DATA, "--version", "v", "--package", str(tmp_path / "p.yaml"),
                 "--image", "other"]) == 1  # fmt: skip
    assert "--package is compiled already" in capsys.readouterr().err


def test_submit_checks_parameters_and_the_endpoint_in_one_line(kfp_api, capsys):
    host, api = kfp_api
    code = main(["submit", "--host", host, *DATA, "--version", "v", "--param", "cnn_seed=x"])
    assert code == 1
    assert capsys.readouterr().err.strip() == "musicrec submit: error: --param cnn_seed='x': expected integer"
    assert api.calls == []
    assert main(["submit", "--host", "http://127.0.0.1:9", *DATA, "--version", "v"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("musicrec submit: error: cannot reach Kubeflow Pipelines at http:")


def test_submit_wait_writes_the_runs_summary_from_what_it_left_at_the_push_destination(kfp_api, tmp_path, capsys):
    host, _ = kfp_api
    store = tmp_path / "models"
    evaluation = {
        "id": "ev-1", "blessed": True, "reasons": ["pass: all"], "serving_check": {"auc": 0.9},
        "results": {"sentiment": {"test": {"auc": 0.91}}}, "step_seconds": {"ingest": 1.0}, "seconds": 2.0,
    }  # fmt: skip
    (store / ".runs" / "r1").mkdir(parents=True)
    (store / ".runs" / "r1" / "evaluation.json").write_text(json.dumps(evaluation))
    (store / ".versions").mkdir()
    models = {name: str(store / name / "3") for name in ("sentiment", "encoder", "recommender")}
    (store / ".versions" / "3.json").write_text(json.dumps(
        {"state": "committed", "version": 3, "evaluation_id": "ev-1", "models": models, "seconds": 4.0}
    ))  # fmt: skip
    data = [*DATA[:4], "--push-destination", str(store)]
    code = main(["submit", "--host", host, *data, "--version", "v", "--wait", "--poll-seconds", "0.05",
                 "--summary-out", str(tmp_path / "summary.json")])  # fmt: skip
    assert code == 0, capsys.readouterr().err
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["blessed"] is True and summary["pushed_version"] == 3
    assert summary["pushed_model"] == models["recommender"] and summary["sentiment"] == {"test": {"auc": 0.91}}
    assert summary["seconds"] == {"ingest": 1.0, "evaluate": 2.0, "push": 4.0}
    assert summary["run_dir"] == f"{host}/#/runs/details/r1"
    # A run that left nothing there (it failed before evaluate, say) is one line, exit 1.
    (store / ".runs" / "r1" / "evaluation.json").unlink()
    assert main(["submit", "--host", host, *data, "--version", "v", "--wait", "--poll-seconds", "0.05",
                 "--summary-out", str(tmp_path / "again.json")]) == 1  # fmt: skip
    assert (
        capsys.readouterr()
        .err.strip()
        .splitlines()[-1]
        .startswith("musicrec submit: error: run r1 left no evaluation")
    )
    assert main(["submit", "--host", host, *data, "--version", "v", "--summary-out", "x.json"]) == 1
