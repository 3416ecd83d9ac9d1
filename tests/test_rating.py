"""train_dnn: no target leakage, the damped bias baseline, ranking and recommendations, the exported model."""

from __future__ import annotations

import json

import numpy as np
import pytest

from musicrec import features
from musicrec.rating import (
    BIAS_DAMPING,
    History,
    build_rating_model,
    damped_bias_baseline,
    history_inputs,
    recommend,
    top_items,
    train_rating,
)
from musicrec.settings import AutoencoderSettings, RatingSettings

SETTINGS = RatingSettings(epochs=3, batch_size=128, ranking_users=200, seed=5)


def toy_history(codes: np.ndarray | None = None) -> tuple[History, dict[str, np.ndarray]]:
    users = np.array([0, 0, 1, 1, 2])
    items = np.array([0, 1, 0, 2, 1])
    train = {"rating": np.array([5.0, 4.0, 1.0, 2.0, 5.0]), "sentiment": np.array([0.9, 0.8, 0.1, 0.2, 0.95]),
             "code": codes if codes is not None else np.arange(10, dtype=np.float64).reshape(5, 2)}  # fmt: skip
    metadata = np.ones((5, 4), np.float32)
    history = History.from_train(users, items, train["rating"], train["sentiment"], train["code"], metadata, 4, 4)
    return history, {"users": users, "items": items, **train}


def test_test_pair_inputs_do_not_depend_on_the_review_being_scored():
    """Leakage: a test review's own text (its code and sentiment) never reaches the rating model's inputs."""
    history, _ = toy_history()
    users, items = np.array([0, 1, 3]), np.array([2, 1, 0])
    with_text = history_inputs(history, users, items)
    # Nothing of the test review is an argument at all; the same pair gives the same inputs however its text reads.
    assert np.array_equal(with_text, history_inputs(history, users, items))
    # And changing train texts other than the pair's own changes them: the features do carry history.
    other_history, _ = toy_history(codes=np.zeros((5, 2)))
    assert not np.array_equal(with_text, history_inputs(other_history, users, items))


def test_train_pairs_leave_their_own_review_out():
    history, train = toy_history()
    own = {"rating": train["rating"], "sentiment": train["sentiment"], "code": train["code"]}
    loo = history_inputs(history, train["users"], train["items"], own)
    # User 2 has one train review: without it, their side has no history (count 0, zero code).
    user_two = loo[4]
    assert user_two[:2].tolist() == [0.0, 0.0] and user_two[4] == 0.0 and user_two[5] == 0.0
    # Changing a review's own code leaves that review's inputs unchanged under leave-one-out.
    changed_codes = train["code"].copy()
    changed_codes[4] = [100.0, 100.0]
    changed_history, _ = toy_history(codes=changed_codes)
    changed_own = {**own, "code": changed_codes}
    changed = history_inputs(changed_history, train["users"], train["items"], changed_own)
    assert np.allclose(changed[4], loo[4])


def test_damped_bias_baseline_by_hand():
    users, items, ratings = np.array([0, 0, 1]), np.array([0, 1, 0]), np.array([5.0, 3.0, 4.0])
    mean, user_bias, item_bias = damped_bias_baseline(users, items, ratings, 2, 2)
    assert mean == pytest.approx(4.0)
    assert item_bias[0] == pytest.approx((1.0 + 0.0) / (2 + BIAS_DAMPING))
    assert item_bias[1] == pytest.approx(-1.0 / (1 + BIAS_DAMPING))
    assert user_bias[1] == pytest.approx((0.0 - item_bias[0]) / (1 + BIAS_DAMPING))


def test_predictions_are_valid_ratings_and_top_items_skip_history():
    model = build_rating_model(5, 6, 7, SETTINGS)
    inputs = {features.USER_INDEX: np.array([0, 4]), features.ITEM_INDEX: np.array([1, 5]),
              "history": np.random.default_rng(0).normal(size=(2, 7)).astype(np.float32) * 100}  # fmt: skip
    predictions = model.predict(inputs, verbose=0)
    assert ((predictions >= 1.0) & (predictions <= 5.0)).all()
    assert top_items(np.array([0.1, 0.9, 0.5, 0.7]), np.array([1]), 2).tolist() == [3, 2]


@pytest.fixture(scope="module")
def trained(small_preprocessed, small_cnn, tmp_path_factory):
    from musicrec.autoencoder import train_autoencoder

    out = tmp_path_factory.mktemp("dnn")
    cnn_dir, _ = small_cnn
    graph, transformed = small_preprocessed["graph"], small_preprocessed["transformed"]
    train_autoencoder(transformed, graph, cnn_dir / "model", out / "encoder", out / "ae.json", out / "ae.html",
                      AutoencoderSettings(bottleneck=4, epochs=3, seed=5))  # fmt: skip
    models = (cnn_dir / "model", out / "encoder")
    report = train_rating(transformed, graph, *models, out / "model", out / "report.json", SETTINGS)
    return out, report


def test_report_holds_rating_and_ranking_beside_baselines(trained):
    out, report = trained
    assert json.loads((out / "report.json").read_text()) == report
    for split in ("eval", "test"):
        assert set(report[split]) == {"rmse", "mae"} and 0 < report[split]["rmse"] < 4
        assert set(report["baselines"][split]) == {"global_mean", "bias"}
    ranking = report["ranking"]
    assert 0 < ranking["users"] <= SETTINGS.ranking_users
    assert set(ranking["test"]) == set(ranking["baselines"]["mostpop"]) == {"hr@10", "ndcg@10"}
    assert ranking["baselines"]["mostpop"]["hr@10"] > 0


def test_recommend_returns_unseen_items_for_a_train_user(trained):
    out, _ = trained
    users = (out / "model" / features.USER_VOCABULARY).read_text().splitlines()
    history = History.load(out / "model" / "history.npz")
    items = (out / "model" / features.ITEM_VOCABULARY).read_text().splitlines()
    user = int(np.argmax(history.user_count[: len(users)]))
    recommended = recommend(out / "model", users[user], k=5)
    assert len(recommended) == 5
    seen = {items[i] for i in history.train_items(user)}
    assert not seen & {asin for asin, _ in recommended}
    assert all(1.0 <= score <= 5.0 for _, score in recommended)
    with pytest.raises(KeyError, match="no train history"):
        recommend(out / "model", "ANOBODY", k=5)
