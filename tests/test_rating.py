"""train_dnn: no target leakage, the damped bias baseline, ranking and recommendations, the exported model."""

from __future__ import annotations

import json

import numpy as np
import pytest
from helpers import small_rating_settings

from musicrec import features
from musicrec.models import bundles
from musicrec.models.recommender.classic import (
    EASE_LAMBDAS,
    MF_FACTORS,
    MF_L2,
    Catalogue,
    biased_mf,
    ease,
    item_knn,
)
from musicrec.models.recommender.history import (
    BIAS_DAMPING,
    BIAS_INPUT,
    History,
    bias_inputs,
    damped_bias_baseline,
    history_inputs,
    pair_inputs,
)
from musicrec.models.recommender.negatives import PairBatches, implicit_pairs, sample_negatives
from musicrec.models.recommender.network import INTERACTION_OUTPUT, RATING_OUTPUT, build_rating_model
from musicrec.models.recommender.ranking import top_items
from musicrec.models.recommender.rerank import Ranker
from musicrec.models.recommender.serving import recommend
from musicrec.models.recommender.text_codes import fit_text_projection, text_codes

SETTINGS = small_rating_settings()


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
    # Changing a review's own code leaves that review's inputs unchanged under leave-one-out (user side, item
    # side and the user's taste for the item), and changes the inputs of the other reviews of its user.
    for row in range(len(train["users"])):
        changed_codes = train["code"].copy()
        changed_codes[row] = [100.0, -50.0]
        changed_history, _ = toy_history(codes=changed_codes)
        changed_own = {**own, "code": changed_codes}
        changed = history_inputs(changed_history, train["users"], train["items"], changed_own)
        assert np.allclose(changed[row], loo[row])
        same_user = (train["users"] == train["users"][row]) & (np.arange(len(train["users"])) != row)
        assert all(not np.allclose(changed[other], loo[other]) for other in np.flatnonzero(same_user))


def test_damped_bias_baseline_by_hand():
    users, items, ratings = np.array([0, 0, 1]), np.array([0, 1, 0]), np.array([5.0, 3.0, 4.0])
    mean, user_bias, item_bias = damped_bias_baseline(users, items, ratings, 2, 2)
    assert mean == pytest.approx(4.0)
    assert item_bias[0] == pytest.approx((1.0 + 0.0) / (2 + BIAS_DAMPING))
    assert item_bias[1] == pytest.approx(-1.0 / (1 + BIAS_DAMPING))
    assert user_bias[1] == pytest.approx((0.0 - item_bias[0]) / (1 + BIAS_DAMPING))


def test_train_bias_inputs_are_the_baseline_refit_without_the_review():
    history, train = toy_history()
    # Outside train: exactly the damped bias baseline.
    mean, user_bias, item_bias = damped_bias_baseline(train["users"], train["items"], train["rating"], 4, 4)
    users, items = np.array([0, 1, 3]), np.array([2, 1, 0])
    assert np.allclose(bias_inputs(history, users, items), mean + user_bias[users] + item_bias[items])
    # A train review: the baseline fit on every other review (its mean kept, as the rest of the inputs do).
    loo = bias_inputs(history, train["users"], train["items"], {"rating": train["rating"]})
    for row in range(len(train["users"])):
        rest = np.arange(len(train["users"])) != row
        ratings = train["rating"][rest]
        item_sums = np.bincount(train["items"][rest], ratings - mean, 4)
        refit_item = item_sums / (np.bincount(train["items"][rest], minlength=4) + BIAS_DAMPING)
        residual = ratings - mean - refit_item[train["items"][rest]]
        refit_user = np.bincount(train["users"][rest], residual, 4) / (
            np.bincount(train["users"][rest], minlength=4) + BIAS_DAMPING
        )
        user, item = train["users"][row], train["items"][row]
        assert loo[row] == pytest.approx(mean + refit_user[user] + refit_item[item], abs=1e-6)


def test_a_negative_shares_its_review_s_user_side_and_keeps_its_item_whole():
    """A sampled negative's user history leaves its positive out too, so user features cannot tell them apart."""
    history, train = toy_history()
    own = {"rating": train["rating"][:1], "sentiment": train["sentiment"][:1], "code": train["code"][:1]}
    positive = history_inputs(history, train["users"][:1], train["items"][:1], own)
    negative = history_inputs(history, np.array([0]), np.array([2]), {**own, "item": np.array([0])})
    outside = history_inputs(history, np.array([0]), np.array([2]))
    user_width = 2 + 4  # code, sentiment, damped mean, log count, seen
    assert np.allclose(negative[:, :user_width], positive[:, :user_width])
    assert np.allclose(negative[:, user_width : 2 * user_width], outside[:, user_width : 2 * user_width])
    assert not np.allclose(negative[:, :user_width], outside[:, :user_width])


def test_negatives_are_seeded_and_never_a_users_train_item():
    rng = np.random.default_rng(0)
    users, items = rng.integers(0, 30, 600), rng.integers(0, 12, 600)
    history = History.from_train(users, items, np.full(600, 4.0), np.full(600, 0.5), np.zeros((600, 2)),
                                 np.zeros((600, 4), np.float32), 31, 13)  # fmt: skip
    rows, negatives = sample_negatives(history, users, 12, 3, seed=9)
    assert len(rows) > 0 and (negatives < 12).all()
    assert not history.reviewed(users[rows], negatives).any()
    reviewed = {(int(u), int(i)) for u, i in zip(users, items, strict=True)}
    assert not {(int(users[r]), int(n)) for r, n in zip(rows, negatives, strict=True)} & reviewed
    again = sample_negatives(history, users, 12, 3, seed=9)
    assert np.array_equal(rows, again[0]) and np.array_equal(negatives, again[1])
    assert not np.array_equal(negatives, sample_negatives(history, users, 12, 3, seed=10)[1])


def test_implicit_pairs_label_reviews_one_and_negatives_zero():
    history, train = toy_history()
    table = {features.USER_INDEX: train["users"], features.ITEM_INDEX: train["items"], "rating": train["rating"],
             "sentiment": train["sentiment"], "code": train["code"]}  # fmt: skip
    pairs = implicit_pairs(history, table, 3, per_positive=2, seed=1, leave_out=True)
    inputs, labels = pairs.inputs(history), pairs.labels
    assert labels[:5].tolist() == [1.0] * 5 and not labels[5:].any()
    negative = labels == 0
    assert not history.reviewed(inputs[features.USER_INDEX][negative], inputs[features.ITEM_INDEX][negative]).any()
    own = {"rating": train["rating"], "sentiment": train["sentiment"], "code": train["code"]}
    expected = pair_inputs(history, train["users"], train["items"], own)
    assert np.allclose(inputs["history"][:5], expected["history"])
    assert np.allclose(inputs[BIAS_INPUT][:5], expected[BIAS_INPUT])


def test_pair_batches_cover_every_pair_once_a_pass_with_the_inputs_of_the_whole_set():
    history, train = toy_history()
    table = {features.USER_INDEX: train["users"], features.ITEM_INDEX: train["items"], "rating": train["rating"],
             "sentiment": train["sentiment"], "code": train["code"]}  # fmt: skip
    pairs = implicit_pairs(history, table, 3, per_positive=2, seed=1, leave_out=True)
    whole = pairs.inputs(history)
    batches = PairBatches(history, pairs, batch_size=4, seed=5)
    passes = []
    for _ in range(2):
        seen = [batches[index] for index in range(len(batches))]
        rows = np.concatenate([batch[0]["history"] for batch in seen])
        labels = np.concatenate([batch[1] for batch in seen])
        # Each pair once, with the inputs computed for the whole set (a negative still leaves its review out).
        order = np.lexsort(rows.T)
        assert np.allclose(rows[order], whole["history"][np.lexsort(whole["history"].T)])
        assert sorted(labels.tolist()) == sorted(pairs.labels.tolist())
        passes.append(rows)
    assert not np.allclose(passes[0], passes[1])  # reshuffled between passes


def test_text_codes_separate_items_by_their_words_and_read_only_their_own_review():
    # Items 0-1 are reviewed with tokens 1-3, items 2-3 with tokens 4-6; token 7 is on every review.
    rng = np.random.default_rng(3)
    items = np.repeat(np.arange(4), 20)
    tokens = np.where((items < 2)[:, None], rng.integers(1, 4, (80, 5)), rng.integers(4, 7, (80, 5)))
    tokens = np.concatenate([tokens, np.full((80, 1), 7), np.zeros((80, 2), np.int64)], axis=1)
    corpus_rate, projection = fit_text_projection(tokens, items, 5, tokens=1_000, dims=24)
    codes = text_codes(tokens, corpus_rate, projection)
    profiles = np.stack([codes[items == i].mean(0) for i in range(4)])
    assert np.linalg.norm(profiles[0] - profiles[1]) < np.linalg.norm(profiles[0] - profiles[2]) / 5
    assert np.allclose(text_codes(tokens[:3], corpus_rate, projection), codes[:3], atol=1e-6)


def test_predictions_are_valid_ratings_and_top_items_skip_history():
    networks = build_rating_model(5, 6, 7, SETTINGS)
    inputs = {features.USER_INDEX: np.array([0, 4]), features.ITEM_INDEX: np.array([1, 5]),
              "history": np.random.default_rng(0).normal(size=(2, 7)).astype(np.float32) * 100,
              BIAS_INPUT: np.array([[-3.0], [9.0]], np.float32)}  # fmt: skip
    predicted = networks.model.predict(inputs, verbose=0)
    assert ((predicted[RATING_OUTPUT] >= 1.0) & (predicted[RATING_OUTPUT] <= 5.0)).all()
    assert ((predicted[INTERACTION_OUTPUT] >= 0.0) & (predicted[INTERACTION_OUTPUT] <= 1.0)).all()
    # The rating head starts at the (clipped) bias prediction: training starts from the baseline.
    assert predicted[RATING_OUTPUT].reshape(-1).tolist() == [1.0, 5.0]
    assert top_items(np.array([0.1, 0.9, 0.5, 0.7]), np.array([1]), 2).tolist() == [3, 2]


def test_report_holds_rating_and_ranking_beside_baselines(small_recommender):
    out, report = small_recommender
    assert json.loads((out / "report.json").read_text()) == report
    for split in ("eval", "test"):
        assert set(report[split]) == {"rmse", "mae"} and 0 < report[split]["rmse"] < 4
        assert set(report["baselines"][split]) == {"global_mean", "bias", "mf"}
        # Biased MF, fitted on train with its size picked on eval, beats the global mean it starts from.
        assert report["baselines"][split]["mf"]["rmse"] < report["baselines"][split]["global_mean"]["rmse"]
    assert report["baseline_settings"]["mf"]["factors"] == MF_FACTORS
    segments = report["test_by_user"]
    assert set(segments) == {"returning_users", "new_users"}
    rows = sum(segment["rows"] for segment in segments.values())
    for key, overall in (
        ("rmse", report["test"]["rmse"]),
        ("bias_rmse", report["baselines"]["test"]["bias"]["rmse"]),
    ):
        pooled = sum(segment["rows"] * segment[key] ** 2 for segment in segments.values()) / rows
        assert pooled == pytest.approx(overall**2, abs=2e-3)  # the two segments partition the test split
    ranking = report["ranking"]
    assert 0 < ranking["users"] <= SETTINGS.ranking_users
    assert set(ranking["baselines"]) == {"mostpop", "itemknn", "ease"}
    assert all(
        set(scores) == set(ranking["test"]) == {"hr@10", "ndcg@10"} for scores in ranking["baselines"].values()
    )
    assert ranking["baselines"]["mostpop"]["hr@10"] > 0
    assert ranking["baseline_settings"]["ease"]["lambda"] in EASE_LAMBDAS
    # The retrieval stage alone is reported beside the blend, whose weights (picked on eval) sum to 1.
    assert set(ranking["two_tower"]) == {"hr@10", "ndcg@10"}
    assert ranking["settings"]["candidates"] == SETTINGS.retrieval_candidates
    assert sum(ranking["settings"]["blend"].values()) == pytest.approx(1.0)


def toy_catalogue() -> tuple[History, Catalogue]:
    """Four users over four items: items 0 and 1 always go together, item 3 only with item 2."""
    users = np.array([0, 0, 1, 1, 1, 2, 2, 3, 3])
    items = np.array([0, 1, 0, 1, 2, 2, 3, 0, 1])
    ones = np.ones(len(users))
    history = History.from_train(users, items, 4 * ones, ones, np.zeros((len(users), 2)), np.ones((len(users), 3)),
                                 5, 5)  # fmt: skip
    return history, Catalogue.of(history, 4)


def test_co_reviews_count_users_who_reviewed_both_items():
    history, catalogue = toy_catalogue()
    gram = catalogue.co_reviews()
    by_item = np.zeros((4, 4))
    for user in range(4):
        reviewed = history.train_items(user)
        by_item[np.ix_(reviewed, reviewed)] += 1
    order = catalogue.items
    np.testing.assert_array_equal(gram, by_item[np.ix_(order, order)])
    # Blocks of users are summed like one pass (the block boundary falls inside the user list).
    import musicrec.models.recommender.classic as classic

    original, classic._PAIR_BLOCK = classic._PAIR_BLOCK, 5
    try:
        np.testing.assert_array_equal(catalogue.co_reviews(), gram)
    finally:
        classic._PAIR_BLOCK = original


def test_an_item_reviewed_twice_counts_once_in_co_reviews_and_in_scores():
    history, catalogue = toy_catalogue()
    users, items = np.array([0, 0, 1, 1, 1, 2, 2, 3, 3, 0, 0]), np.array([0, 1, 0, 1, 2, 2, 3, 0, 1, 1, 1])
    ones = np.ones(len(users))
    twice = History.from_train(users, items, 4 * ones, ones, np.zeros((len(users), 2)), np.ones((len(users), 3)),
                               5, 5)  # fmt: skip
    repeated = Catalogue.of(twice, 4)  # user 0 reviewed item 1 three times
    np.testing.assert_array_equal(repeated.co_reviews(), catalogue.co_reviews())
    scorer = ease(repeated, repeated.co_reviews(), twice.item_count[:4].astype(float), 1.0)
    candidates = np.array([[2, 3]])
    np.testing.assert_allclose(scorer.score_pairs(np.array([0]), candidates),
                               scorer(np.array([0]))[:, [2, 3]], rtol=1e-6)  # fmt: skip


def test_item_knn_and_ease_recommend_what_goes_with_a_users_items():
    history, catalogue = toy_catalogue()
    popularity = history.item_count[:4].astype(float)
    gram = catalogue.co_reviews()
    for scorer in (item_knn(catalogue, gram, popularity), ease(catalogue, gram, popularity, 1.0)):
        scores = scorer(np.array([3, 4]))
        assert scores.shape == (2, 4)  # every known item
        # User 3 reviewed items 0 and 1; item 2 went with both (user 1), item 3 with neither.
        assert top_items(scores[0, :4], history.train_items(3), 1).tolist() == [2]
        # User 4 has no train items: no item-item evidence, so the catalogue ties at 0.
        np.testing.assert_array_equal(scores[1, catalogue.items], 0.0)


def _user_and_item_effects() -> tuple[tuple[np.ndarray, ...], tuple[np.ndarray, ...]]:
    rng = np.random.default_rng(0)
    users, items = rng.integers(0, 40, 4000), rng.integers(0, 30, 4000)
    user_effect, item_effect = rng.normal(0, 0.8, 40), rng.normal(0, 0.8, 30)
    ratings = np.clip(np.round(3.5 + user_effect[users] + item_effect[items]), 1, 5)
    return (users[:3500], items[:3500], ratings[:3500]), (users[3500:], items[3500:], ratings[3500:])


def test_biased_mf_learns_user_and_item_effects_and_picks_its_l2_on_eval():
    train, valid = _user_and_item_effects()
    predict, chosen = biased_mf(train, valid, 41, 31, seed=1)
    mean_rmse = float(np.sqrt(np.mean((valid[2] - train[2].mean()) ** 2)))
    mf_rmse = float(np.sqrt(np.mean((valid[2] - predict(valid[0], valid[1])) ** 2)))
    assert mf_rmse < 0.7 * mean_rmse
    assert chosen["factors"] == MF_FACTORS and chosen["l2"] in MF_L2


def test_biased_mf_penalty_is_per_review_so_unused_table_rows_do_not_strengthen_it():
    # The same ratings with 100x more user and item rows that no rating uses: a penalty weighted by table size
    # would be 100x stronger and flatten the biases (RMSE near the global mean's); a penalty a review is not.
    train, valid = _user_and_item_effects()
    rmse = {}
    for rows in (1, 100):
        predict, _ = biased_mf(train, valid, 41 * rows, 31 * rows, seed=1)
        rmse[rows] = float(np.sqrt(np.mean((valid[2] - predict(valid[0], valid[1])) ** 2)))
    assert abs(rmse[100] - rmse[1]) < 0.03, rmse


def test_recommend_returns_unseen_items_for_a_train_user_and_mostpop_for_a_new_one(small_recommender):
    out, _ = small_recommender
    users = (out / "model" / features.USER_VOCABULARY).read_text().splitlines()
    history = History.from_arrays(bundles.load_recommender(out / "model").history)
    items = (out / "model" / features.ITEM_VOCABULARY).read_text().splitlines()
    user = int(np.argmax(history.user_count[: len(users)]))
    recommended = recommend(out / "model", users[user], k=5)
    assert len(recommended.items) == 5 and recommended.personalized
    seen = {items[i] for i in history.train_items(user)}
    assert not seen & {asin for asin, _ in recommended.items}
    assert all(1.0 <= score <= 5.0 for _, score in recommended.items)
    # A user with no train history gets the most popular items, and is told so.
    cold = recommend(out / "model", "ANOBODY", k=5)
    assert not cold.personalized
    assert [asin for asin, _ in cold.items] == [
        items[i] for i in top_items(history.item_count[: len(items)], [], 5)
    ]


def test_recommend_never_returns_a_reviewed_item_even_when_k_exceeds_what_is_left(small_recommender):
    out, _ = small_recommender
    users = (out / "model" / features.USER_VOCABULARY).read_text().splitlines()
    items = (out / "model" / features.ITEM_VOCABULARY).read_text().splitlines()
    history = History.from_arrays(bundles.load_recommender(out / "model").history)
    user = int(np.argmax(history.user_count[: len(users)]))
    seen = {items[i] for i in history.train_items(user)}
    everything = recommend(out / "model", users[user], k=len(items) + 10)
    assert len(everything.items) == len(items) - len(seen) > 0
    assert not seen & {asin for asin, _ in everything.items}


def test_recommend_ranks_as_the_measured_python_ranking(small_recommender):
    """The CLI's recommendations (the SavedModel's recommend signature) are the report's ranking, in its order."""
    out, _ = small_recommender
    bundle = bundles.load_recommender(out / "model")
    history = History.from_arrays(bundle.history)
    ranker = Ranker.from_arrays(bundle.ranker, history, bundle.model)
    assert sum(ranker.weights) == pytest.approx(1.0)
    by_reviews = np.argsort(-history.user_count[: len(bundle.users)], kind="stable")
    for user in by_reviews[[0, len(by_reviews) // 2]]:
        items, _, ratings = ranker.top(ranker.retrieve(np.array([user]), 5), 5)
        recommended = recommend(out / "model", bundle.users[user], k=5).items
        assert [asin for asin, _ in recommended] == [bundle.items[i] for i in items[0] if i >= 0]
        assert [score for _, score in recommended] == pytest.approx(ratings[0].tolist(), abs=2e-3)
    # The rating is the rating head's prediction of the pair.
    user = int(by_reviews[0])
    items, _, ratings = ranker.top(ranker.retrieve(np.array([user]), 5), 5)
    predicted = bundle.model.predict(pair_inputs(history, np.full(5, user), items[0]), verbose=0)
    np.testing.assert_allclose(ratings[0], predicted[RATING_OUTPUT].reshape(-1), atol=1e-5)


def test_the_serving_signature_takes_raw_ids_and_scores_as_training_does(small_recommender):
    """TF Serving needs no Python: raw reviewerID / asin in, the same rating and interaction score out."""
    import tensorflow as tf

    out, _ = small_recommender
    root = out / "model"
    bundle = bundles.load_recommender(root)
    history = History.from_arrays(bundle.history)
    users, items = bundle.users, bundle.items
    picked = np.repeat([0, len(users) // 2, len(users)], len(items))  # the last: the out-of-vocabulary index
    catalogue = np.tile(np.arange(len(items)), 3)
    expected = bundle.model.predict(pair_inputs(history, picked, catalogue), batch_size=65_536, verbose=0)
    serve = tf.saved_model.load(str(root)).signatures["serving_default"]
    served = serve(user_id=tf.constant([users[u] if u < len(users) else "ANOBODY" for u in picked]),
                   item_id=tf.constant([items[i] for i in catalogue]))  # fmt: skip
    for name in (RATING_OUTPUT, INTERACTION_OUTPUT):
        np.testing.assert_allclose(served[name].numpy(), expected[name].reshape(-1), atol=1e-5)


def test_a_tf1_style_loader_answers_the_recommend_signature(small_recommender):
    """TF Serving loads SavedModels the TF1 way; `saved_model_cli run` does the same on the recommend signature."""
    import subprocess
    import sys
    from pathlib import Path

    out, _ = small_recommender
    users = (out / "model" / features.USER_VOCABULARY).read_text().splitlines()
    history = History.from_arrays(bundles.load_recommender(out / "model").history)
    user = users[int(np.argmax(history.user_count[: len(users)]))]
    cli = Path(sys.executable).parent / "saved_model_cli"
    result = subprocess.run(
        [str(cli), "run", "--dir", str(out / "model"), "--tag_set", "serve", "--signature_def", "recommend",
         "--input_exprs", f'user_id=["{user}"];k=3'],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    expected = [asin for asin, _ in recommend(out / "model", user, k=3).items]
    assert all(asin in result.stdout for asin in expected) and "personalized" in result.stdout
