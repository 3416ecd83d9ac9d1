"""The run summary (``summary.json``): every step's headline results, the blessing and the push.

Evaluate reads every step's report; :func:`step_results` picks what a run summary shows of each and evaluate
stores it in its ``evaluation`` artifact, with each step's seconds. :func:`run_summary` turns that artifact,
and the push record that names it, into the summary ``musicrec run`` writes. So a summary needs nothing but
the evaluation artifact and the model store, on a laptop or after a cluster run.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from musicrec import schema
from musicrec.reports import Evaluation
from musicrec.steps import BY_NAME, INGEST, PREPROCESS, PUSHED_MODELS, TRAIN_AUTOENCODER, TRAIN_CNN, TRAIN_DNN

_INGEST_KEYS = ("lines_read", "kept", "quarantined", "duplicates", "quarantine_reasons", "users", "items",
                "reviews_without_metadata", "rating_histogram", "date_range", "splits", "inputs")  # fmt: skip
_PREPROCESS_KEYS = ("vocabulary_sizes", "splits", "reviews_per_second", "settings")
_SENTIMENT_SCORES = ("accuracy", "balanced_accuracy", "auc")


def _picked(report: Mapping[str, Any], keys: tuple[str, ...]) -> dict[str, Any]:
    return {key: report[key] for key in keys}


def _model_section(report: Mapping[str, Any], scores: tuple[str, ...] | None = None) -> dict[str, Any]:
    """A training step's eval and test scores (all, or only ``scores``) with the baselines of each split."""
    section = {
        split: _picked(report[split], scores or tuple(report[split])) for split in (schema.EVAL, schema.TEST)
    }
    section["baselines"] = report["baselines"][schema.TEST]
    section["eval_baselines"] = report["baselines"][schema.EVAL]
    return section


def step_results(reports: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """The summary sections of the steps' reports, keyed as ``summary.json`` keys them.

    Args:
        reports: the JSON reports of ingest, preprocess and the three training steps, by step name.

    Raises:
        KeyError: a report lacks a key (written by another version).
    """
    cnn, autoencoder, dnn = reports[TRAIN_CNN.name], reports[TRAIN_AUTOENCODER.name], reports[TRAIN_DNN.name]
    return {
        "ingest": _picked(reports[INGEST.name], _INGEST_KEYS),
        "preprocess": _picked(reports[PREPROCESS.name], _PREPROCESS_KEYS),
        "sentiment": _model_section(cnn, _SENTIMENT_SCORES)
        | {
            "train_examples_per_second": cnn["train_examples_per_second"],
            "train_text_share": cnn["train_text_share"],
        },
        "autoencoder": _model_section(autoencoder)
        | {key: autoencoder[key] for key in ("varying_inputs", "note") if key in autoencoder},
        "rating": _model_section(dnn) | {"test_by_user": dnn["test_by_user"]},
        "ranking": dnn["ranking"],
    }


def step_seconds(reports: Mapping[str, Mapping[str, Any]]) -> dict[str, float]:
    """Each step's own measure of its wall time, in DAG order, by task name (``train-cnn``)."""
    return {BY_NAME[step].task: report["seconds"] for step, report in reports.items() if "seconds" in report}


def run_summary(evaluation: Evaluation, push_record: Mapping[str, Any] | None, run_dir: str) -> dict[str, Any]:
    """``summary.json`` of one run from its evaluation artifact and, if it was pushed, its push record.

    Args:
        evaluation: evaluate's ``evaluation`` artifact.
        push_record: the model store's commit record of the push of this evaluation (``None``: not pushed).
        run_dir: where the run's artifacts are, for the reader.
    """
    summary: dict[str, Any] = {
        "run_dir": run_dir,
        "seconds": {**evaluation["step_seconds"], BY_NAME["evaluate"].task: evaluation["seconds"]},
        **evaluation["results"],
        "blessed": evaluation["blessed"],
        "blessing_reasons": evaluation["reasons"],
        "serving_check": evaluation["serving_check"],
        "pushed_model": None,
    }
    if push_record is not None:
        summary["seconds"][BY_NAME["push"].task] = push_record["seconds"]
        summary["pushed_model"] = push_record["models"][TRAIN_DNN.pushed_as]
        summary["pushed_version"] = push_record["version"]
        summary["pushed_models"] = {name: push_record["models"][name] for name in PUSHED_MODELS}
    return summary
