"""Two-tower retrieval and the re-ranker: chunked top-k, exclusions, cold users, EASE^R on candidates, blends."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from helpers import small_rating_settings

from musicrec.models.recommender import retrieval
from musicrec.models.recommender.classic import Catalogue, ease
from musicrec.models.recommender.history import History, history_inputs
from musicrec.models.recommender.network import build_rating_model
from musicrec.models.recommender.rerank import BLEND_FEATURES, Ranker, blend_grid, standardize
from musicrec.models.recommender.retrieval import fit_two_tower, retrieve, top_by_score


def random_history(n_users: int, n_items: int, reviews: int, seed: int) -> History:
    """Train history of ``reviews`` distinct random (user, item) pairs; the last user index is the unseen one."""
    rng = np.random.default_rng(seed)
    keys = rng.choice((n_users - 1) * n_items, reviews, replace=False)
    users, items = keys // n_items, keys % n_items
    ones = np.ones(reviews)
    return History.from_train(users, items, 4 * ones, ones, rng.normal(size=(reviews, 3)), np.ones((reviews, 2)),
                              n_users, n_items + 1)  # fmt: skip


def brute_force(history: History, user_vectors: np.ndarray, item_vectors: np.ndarray, user: int, k: int) -> list:
    scores = (user_vectors[user] @ item_vectors.T).astype(np.float64)
    scores[history.train_items(user)] = -np.inf
    order = np.argsort(-scores, kind="stable")
    return [int(i) for i in order[:k] if np.isfinite(scores[i])]


def test_chunked_retrieval_equals_brute_force_and_never_returns_a_reviewed_item(monkeypatch):
    history = random_history(n_users=41, n_items=30, reviews=400, seed=1)
    rng = np.random.default_rng(2)
    user_vectors = rng.normal(size=(41, 4)).astype(np.float32)
    item_vectors = rng.normal(size=(30, 4)).astype(np.float32)
    popularity = history.item_count[:30].astype(np.float32)
    users = np.arange(40)
    whole, whole_scores = retrieve(history, user_vectors, item_vectors, popularity, users, 7)
    monkeypatch.setattr(retrieval, "SCORE_BLOCK", 30 * 3)  # three users a chunk, the last chunk shorter
    chunked, chunked_scores = retrieve(history, user_vectors, item_vectors, popularity, users, 7)
    np.testing.assert_array_equal(chunked, whole)
    np.testing.assert_allclose(chunked_scores, whole_scores, rtol=1e-6)  # BLAS may sum a block in another order
    for user in users:
        assert chunked[user].tolist() == brute_force(history, user_vectors, item_vectors, user, 7)
        assert not set(chunked[user].tolist()) & set(history.train_items(user).tolist())


def test_fewer_items_come_back_when_the_user_reviewed_most_of_the_catalogue():
    users = np.array([0, 0, 0, 1])
    items = np.array([0, 1, 2, 0])
    ones = np.ones(4)
    history = History.from_train(users, items, 4 * ones, ones, np.zeros((4, 2)), np.ones((4, 2)), 3, 5)
    vectors = np.eye(4, dtype=np.float32)
    found, scores = retrieve(history, vectors[:3], vectors, history.item_count[:4].astype(np.float32),
                             np.array([0, 1]), 4)  # fmt: skip
    # User 0 reviewed 3 of the 4 items: one real slot, then slots marked -inf.
    assert found[0, 0] == 3 and np.isfinite(scores[0, 0]) and np.isneginf(scores[0, 1:]).all()
    assert np.isfinite(scores[1, :3]).all() and np.isneginf(scores[1, 3]) and 0 not in found[1, :3]


def test_unseen_users_get_the_most_popular_items():
    history = random_history(n_users=21, n_items=15, reviews=120, seed=3)
    rng = np.random.default_rng(4)
    popularity = history.item_count[:15].astype(np.float32)
    found, _ = retrieve(history, rng.normal(size=(21, 3)).astype(np.float32),
                        rng.normal(size=(15, 3)).astype(np.float32), popularity, np.array([20]), 5)  # fmt: skip
    assert found[0].tolist() == np.argsort(-popularity, kind="stable")[:5].tolist()


def test_top_by_score_orders_best_first_and_breaks_ties_by_index():
    scores = np.array([[0.5, 0.9, 0.5, 0.1, 0.9, 0.5]], np.float32)
    order, values = top_by_score(scores, 4)
    assert order.tolist() == [[1, 4, 0, 2]] and values[0].tolist() == pytest.approx([0.9, 0.9, 0.5, 0.5])
    assert top_by_score(scores, 10)[0].tolist() == [[1, 4, 0, 2, 5, 3]]


def test_top_by_score_equals_a_stable_sort_of_each_row_with_many_ties_and_excluded_items():
    rng = np.random.default_rng(3)
    scores = rng.integers(0, 6, (40, 300)).astype(np.float32)  # every row ties at its k-th score
    scores[rng.random(scores.shape) < 0.3] = -np.inf
    scores[0, 2:] = -np.inf  # fewer finite scores than k
    expected = np.argsort(-scores, axis=1, kind="stable")[:, :10]
    order, values = top_by_score(scores, 10)
    np.testing.assert_array_equal(order, expected)
    np.testing.assert_array_equal(values, np.take_along_axis(scores, expected, axis=1))


def test_standardize_uses_the_valid_slots_only():
    values = np.array([[1.0, 3.0, -np.inf], [2.0, 2.0, 2.0]], np.float32)
    valid = np.isfinite(values)
    out = standardize(values, valid)
    np.testing.assert_allclose(out[0], [-1.0, 1.0, 0.0], atol=1e-5)
    np.testing.assert_allclose(out[1], 0.0)  # no spread: no evidence either way


def test_the_blend_grid_covers_every_weighting_in_quarter_steps():
    grid = blend_grid()
    assert len(grid) == 15 and len(set(grid)) == 15
    assert all(len(w) == len(BLEND_FEATURES) and sum(w) == pytest.approx(1.0) for w in grid)
    assert (1.0, 0.0, 0.0) in grid and (0.0, 1.0, 0.0) in grid and (0.25, 0.5, 0.25) in grid


def test_ease_on_candidates_equals_ease_on_the_whole_catalogue():
    history = random_history(n_users=31, n_items=20, reviews=200, seed=5)
    popularity = history.item_count[:20].astype(np.float64)
    catalogue = Catalogue.of(history, 20, size=12)  # 8 items outside the classic catalogue: the fallback order
    scorer = ease(catalogue, catalogue.co_reviews(), popularity, 5.0)
    users = np.array([0, 7, 30])
    candidates = np.random.default_rng(6).integers(0, 20, (3, 9))
    np.testing.assert_allclose(scorer.score_pairs(users, candidates),
                               np.take_along_axis(scorer(users), candidates, axis=1), atol=1e-5)  # fmt: skip


def small_ranker(weights: tuple[float, ...], candidates: int = 6) -> Ranker:
    history = random_history(n_users=21, n_items=15, reviews=150, seed=7)
    rng = np.random.default_rng(8)
    catalogue = Catalogue.of(history, 15)
    popularity = history.item_count[:15].astype(np.float64)
    width = history_inputs(history, np.zeros(1, np.int64), np.zeros(1, np.int64)).shape[1]
    networks = build_rating_model(21, 16, width, small_rating_settings())
    vectors = [rng.normal(size=(rows, 4)).astype(np.float32) for rows in (21, 15)]
    scorer = ease(catalogue, catalogue.co_reviews(), popularity, 5.0)
    return Ranker(history, *vectors, scorer, networks.model, candidates, weights)


def test_the_ranker_reranks_the_retrieved_candidates_only_and_keeps_popularity_for_unseen_users():
    ranker = small_ranker((0.0, 1.0, 0.0))
    users = np.array([0, 3, 20])
    found = ranker.retrieve(users)
    items, _, _ = ranker.top(found, 4)
    retrieved, _ = retrieve(ranker.history, ranker.user_vectors, ranker.item_vectors, ranker.popularity, users, 6)
    for row, user in enumerate(users[:2]):
        assert set(items[row].tolist()) <= set(retrieved[row].tolist())  # never beyond the candidates
        ease_scores = ranker.ease.score_pairs(np.array([user]), retrieved[row : row + 1])[0]
        assert items[row].tolist() == retrieved[row][np.argsort(-ease_scores, kind="stable")[:4]].tolist()
    assert not found.personalized[2]
    assert items[2].tolist() == np.argsort(-ranker.popularity, kind="stable")[:4].tolist()
    # Weight on the two-tower score alone keeps the retrieval order.
    alone, _, _ = small_ranker((1.0, 0.0, 0.0)).top(found, 4)
    np.testing.assert_array_equal(alone[:2], retrieved[:2, :4])
    # Asking for more than the candidates widens the retrieval: every unreviewed item, then -1.
    wide, _, _ = ranker.top(ranker.retrieve(np.array([0]), 15), 15)
    unreviewed = 15 - len(ranker.history.train_items(0))
    assert (wide[0, :unreviewed] >= 0).all() and (wide[0, unreviewed:] == -1).all()


def test_the_two_towers_learn_which_items_go_together():
    """Two groups of users each review one half of the catalogue: retrieval finds the user's own half."""
    rng = np.random.default_rng(9)
    n_users, n_items = 81, 40
    group = np.arange(n_users - 1) % 2
    pairs = [(u, int(i)) for u in range(n_users - 1) for i in rng.choice(20, 8, replace=False) + 20 * group[u]]
    users, items = np.array(pairs).T
    half = np.arange(len(users)) % 4 != 0
    ones = np.ones(len(users))
    history = History.from_train(users[half], items[half], 4 * ones[half], ones[half], np.zeros((half.sum(), 2)),
                                 np.ones((half.sum(), 2)), n_users, n_items + 1)  # fmt: skip
    settings = dataclasses.replace(small_rating_settings(), retrieval_epochs=30, retrieval_batch_size=64,
                                   retrieval_learning_rate=1e-2, retrieval_l2=1e-4)  # fmt: skip
    user_vectors, item_vectors, curves = fit_two_tower(history, n_items, (users[half], items[half]),
                                                       (users[~half], items[~half]), settings)  # fmt: skip
    assert user_vectors.shape == (n_users, settings.retrieval_dim) and item_vectors.shape[0] == n_items
    found, _ = retrieve(history, user_vectors, item_vectors, history.item_count[:n_items].astype(np.float32),
                        np.arange(n_users - 1), 5)  # fmt: skip
    own_half = (found // 20) == group[:, None]
    assert own_half.mean() > 0.9 and min(curves["val_loss"]) < curves["val_loss"][0]
