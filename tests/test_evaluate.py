"""evaluate: the blessing rules, and the serving check of the exported sentiment model on raw test text."""

from __future__ import annotations

import copy
import json

import pytest

from musicrec.release.evaluate import bless, serving_check
from musicrec.release.scorecard import gated_values, scorecard
from musicrec.settings import BlessingSettings

SETTINGS = BlessingSettings()


def card() -> dict:
    """A scorecard in which every model beats its baselines and meets the default thresholds."""
    return {
        "sentiment": {"test": {"accuracy": 0.95, "balanced_accuracy": 0.93, "auc": 0.97},
                      "baselines": {"majority": {"accuracy": 0.84, "balanced_accuracy": 0.5, "auc": 0.5},
                                    "bow_linear": {"accuracy": 0.93, "balanced_accuracy": 0.9, "auc": 0.96}},
                      "train_text_share": 1.0},
        "autoencoder": {"test": {"reconstruction_mse": 0.3}, "baselines": {"pca": {"reconstruction_mse": 0.31}}},
        "rating": {"test": {"rmse": 0.95, "mae": 0.66},
                   "baselines": {"global_mean": {"rmse": 1.08, "mae": 0.84}, "bias": {"rmse": 0.98, "mae": 0.7}}},
        "ranking": {"users": 500, "test": {"hr@10": 0.2, "ndcg@10": 0.09},
                    "baselines": {"mostpop": {"hr@10": 0.17, "ndcg@10": 0.07}}},
    }  # fmt: skip


SERVED = {"reviews": 1000, "auc": 0.97, "accuracy": 0.95}


def test_a_good_first_run_is_blessed_with_a_reason_per_check():
    blessed, reasons = bless(card(), SERVED, None, SETTINGS)
    assert blessed
    assert len(reasons) == 7 and all(reason.startswith("pass: ") for reason in reasons)


@pytest.mark.parametrize(
    ("change", "failing"),
    [
        (lambda c: c["sentiment"]["test"].update(auc=0.8), "sentiment test AUC 0.8000 vs minimum 0.85"),
        (lambda c: c["sentiment"]["test"].update(accuracy=0.84), "vs majority class"),
        (lambda c: c["rating"]["test"].update(rmse=1.09), "vs global mean"),
        (
            lambda c: (
                c["rating"]["test"].update(rmse=1.2),
                c["rating"]["baselines"]["global_mean"].update(rmse=1.3),
            ),
            "vs maximum 1.1",
        ),
        (lambda c: c["ranking"]["test"].update({"ndcg@10": 0.0}), "NDCG@10 0.0000 vs minimum"),
    ],
)
def test_a_threshold_or_baseline_failure_blocks_the_blessing(change, failing):
    candidate = copy.deepcopy(card())
    change(candidate)
    served = {**SERVED, "auc": candidate["sentiment"]["test"]["auc"]}  # the served model agrees with training
    blessed, reasons = bless(candidate, served, None, SETTINGS)
    assert not blessed
    assert [r for r in reasons if r.startswith("FAIL: ")] == [r for r in reasons if failing in r]


def test_rating_only_data_is_blessed_on_the_recommender_without_sentiment_gates():
    """No text: the sentiment model is the train prior (accuracy of the majority, AUC 0.5), which is not gated."""
    candidate = copy.deepcopy(card())
    candidate["sentiment"].update(
        train_text_share=0.0, test={"accuracy": 0.84, "balanced_accuracy": 0.5, "auc": 0.5}
    )
    blessed, reasons = bless(candidate, {**SERVED, "auc": 0.5}, None, SETTINGS)
    assert blessed and not any("sentiment test" in reason for reason in reasons)
    assert "pass: no review or summary text in train: sentiment is the train prior, not gated" in reasons
    candidate["rating"]["test"].update(rmse=1.09)  # the recommender is still gated
    assert not bless(candidate, {**SERVED, "auc": 0.5}, None, SETTINGS)[0]


def test_ranking_is_not_gated_when_no_test_user_can_be_ranked():
    """Every test user new (a text-only set): NDCG@10 over 0 users is no measurement, so it cannot fail the run."""
    candidate = copy.deepcopy(card())
    candidate["ranking"].update(users=0, test={"hr@10": 0.0, "ndcg@10": 0.0})
    blessed, reasons = bless(candidate, SERVED, None, SETTINGS)
    assert blessed and not any("ranking test NDCG@10" in reason for reason in reasons)
    assert any(r.startswith("pass: no test user has train history") for r in reasons)
    candidate["ranking"]["users"] = 1  # one rankable user with NDCG@10 0 is a measured failure
    assert not bless(candidate, SERVED, None, SETTINGS)[0]


def test_training_serving_skew_blocks_the_blessing():
    blessed, reasons = bless(card(), {**SERVED, "auc": 0.96}, None, SETTINGS)
    assert not blessed and any(r.startswith("FAIL: served SavedModel AUC") for r in reasons)


def test_regression_against_the_pushed_version_beyond_tolerance_blocks_the_blessing():
    pushed = {"version": 4, "metrics": gated_values(card())}
    assert bless(card(), SERVED, pushed, SETTINGS)[0]  # the same numbers: no regression
    within = copy.deepcopy(card())
    within["rating"]["test"]["rmse"] += SETTINGS.max_regression / 2
    assert bless(within, SERVED, pushed, SETTINGS)[0]
    worse = copy.deepcopy(card())
    worse["rating"]["test"]["rmse"] += 0.03
    worse["ranking"]["test"]["ndcg@10"] -= 0.02
    blessed, reasons = bless(worse, SERVED, pushed, SETTINGS)
    assert not blessed
    assert [r.split(" ")[1] for r in reasons if r.startswith("FAIL")] == ["rating_rmse", "ranking_ndcg@10"]
    assert "pushed version 4" in reasons[-1]


def test_the_served_model_scores_raw_test_text_as_training_measured_it(small_cnn, small_preprocessed):
    """No training/serving skew: normalizer + transform graph inside the SavedModel reproduce the test AUC."""
    cnn_dir, report = small_cnn
    served = serving_check(cnn_dir / "model", small_preprocessed["examples"])
    test_rows = json.loads((small_preprocessed["examples"].parent / "report.json").read_text())["splits"]["test"]
    assert served["reviews"] == test_rows["rows"]
    assert served["auc"] == pytest.approx(report["test"]["auc"], abs=1e-3)
    assert served["accuracy"] == pytest.approx(report["test"]["accuracy"], abs=1e-3)
    # The model's own normalizer agrees with preprocessing's on (almost) every raw test text.
    assert 0 <= served["token_id_skew"] < 0.005


def test_scorecard_takes_the_test_split_of_each_report():
    reports = {
        "cnn": {"test": {"accuracy": 0.9, "balanced_accuracy": 0.8, "auc": 0.95, "roc": {}},
                "baselines": {"test": {"majority": {"accuracy": 0.8}}, "eval": {}}, "train_text_share": 0.9},
        "ae": {"test": {"reconstruction_mse": 0.3}, "baselines": {"test": {"pca": {"reconstruction_mse": 0.4}}}},
        "dnn": {"test": {"rmse": 1.0, "mae": 0.7}, "baselines": {"test": {"bias": {"rmse": 1.1, "mae": 0.8}}},
                "ranking": {"test": {"ndcg@10": 0.1}}},
    }  # fmt: skip
    result = scorecard(reports["cnn"], reports["ae"], reports["dnn"])
    assert result["sentiment"]["test"] == {"accuracy": 0.9, "balanced_accuracy": 0.8, "auc": 0.95}
    assert result["sentiment"]["train_text_share"] == 0.9
    assert gated_values(result) == {"sentiment_auc": 0.95, "rating_rmse": 1.0, "ranking_ndcg@10": 0.1}
