"""Multi-worker training: two worker processes over loopback (TF_CONFIG) train what one worker trains."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest
from helpers import small_cnn_settings

# Two workers differ from one only in dropout draws and summation order; on the small set's ~300 test reviews
# one review is 0.0033 of accuracy. Measured: 0.0033 accuracy and 0.0003 AUC apart.
ACCURACY_TOLERANCE = 0.015
AUC_TOLERANCE = 0.01
TIMEOUT = 1_200  # seconds; the shared 2-core machine took 415 s for the two workers


@pytest.mark.slow
def test_two_workers_train_the_model_one_trains_and_only_the_chief_writes(small_preprocessed, small_cnn, tmp_path):
    _, one = small_cnn  # the same data and settings, trained in this process by one worker
    settings = small_cnn_settings().to_dict()
    params = [f"--param=cnn_{name}={','.join(map(str, v)) if isinstance(v, list) else v}" for name, v in
              settings.items()]  # fmt: skip
    scratch = tmp_path / "tmp"  # the workers' TMPDIR: where the other worker's outputs go and are removed
    scratch.mkdir()
    environment = {key: value for key, value in os.environ.items() if key != "TF_CONFIG"}
    data = ["--transformed", str(small_preprocessed["transformed"]), "--graph", str(small_preprocessed["graph"])]
    command = [sys.executable, "-m", "pipelines.cli", "train-cnn", "--workers", "2", "--timeout", str(TIMEOUT),
               *data, "--out", str(tmp_path / "out"), *params]  # fmt: skip
    # Its own session, so the launcher and both workers can be killed together whatever happens.
    launcher = subprocess.Popen(command, env={**environment, "TMPDIR": str(scratch)}, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, start_new_session=True)  # fmt: skip
    try:
        _, stderr = launcher.communicate(timeout=TIMEOUT + 60)
    finally:
        if launcher.poll() is None:
            os.killpg(launcher.pid, signal.SIGKILL)
            launcher.wait()
    assert launcher.returncode == 0, stderr[-3_000:]  # 0 only when both workers exited 0

    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["importance.html", "model", "report.json"]
    assert not list(scratch.glob("musicrec-worker-*")), "the other worker's outputs were left behind"
    two = json.loads((tmp_path / "out" / "report.json").read_text())
    assert (two["replicas"], one["replicas"]) == (2, 1)
    finals = {line[: line.index("]")]: line[line.index("train_cnn: eval") :]
              for line in stderr.splitlines() if "train_cnn: eval" in line}  # fmt: skip
    assert len(finals) == 2 and len(set(finals.values())) == 1, "both workers stopped early alike and agree"
    assert len(two["history"]["val_auc"]) == len(one["history"]["val_auc"])
    for split in ("eval", "test"):
        pairs = [(two[split], one[split])] + [(two["baselines"][split][name], one["baselines"][split][name])
                                              for name in ("bow_linear", "ngram_linear")]  # fmt: skip
        for mine, reference in pairs:
            accuracy, auc = (mine["accuracy"], reference["accuracy"]), (mine["auc"], reference["auc"])
            assert abs(accuracy[0] - accuracy[1]) <= ACCURACY_TOLERANCE, (split, accuracy)
            assert abs(auc[0] - auc[1]) <= AUC_TOLERANCE, (split, auc)
