"""The generator's planted world: users, items, genres, biases and latent taste, before any text is written.

Zipf-like user activity and item popularity; items belong to genres with a latent vector; a user's latent
preference decides which genres they mostly review and, with user and item biases, how they rate. Ratings
are predictable from history, not from the review itself. ``benchmarks/rating_headroom.py`` reads the same
world to measure how much of a rating any model could learn.
"""

from __future__ import annotations

import logging
import math

import numpy as np

from musicrec.errors import GeneratorError

logger = logging.getLogger(__name__)

FULL_SCALE_REVIEWS = 1_584_082
FULL_SCALE_ITEMS = 74_347
ITEMS_PER_REVIEW = FULL_SCALE_ITEMS / FULL_SCALE_REVIEWS
_LATENT_DIM = 8
_BIAS_SD = 0.45  # spread of user and item biases on the latent rating scale
_ITEM_SPREAD = 0.6  # how far an item's latent vector strays from its genre centre
_TASTE_WEIGHT = 0.8  # weight of the user-item latent match in the rating
_RATING_NOISE = 0.55  # per-review noise on the latent rating
FIRST_DAY = np.datetime64("1998-06-01")
_LAST_DAY = np.datetime64("2018-09-30")
RATING_SHARES = (0.06, 0.03, 0.07, 0.17, 0.67)  # planted share of 1..5 stars, close to the real category


GENRES = {
    "Rock": ("guitar", "riffs", "drums", "rock", "band"),
    "Pop": ("pop", "dance", "hooks", "radio", "synths"),
    "Jazz": ("jazz", "saxophone", "trumpet", "improvisation", "swing"),
    "Classical": ("orchestra", "symphony", "violin", "piano", "concerto"),
    "Country": ("country", "banjo", "fiddle", "twang", "nashville"),
    "Rap & Hip-Hop": ("rap", "rhymes", "flow", "beats", "verses"),
    "R&B": ("soul", "groove", "falsetto", "rnb", "funk"),
    "Dance & Electronic": ("edm", "techno", "bass", "drops", "remix"),
    "Metal": ("metal", "shredding", "growls", "breakdowns", "thrash"),
    "Blues": ("blues", "harmonica", "slide", "delta", "bluesy"),
    "Folk": ("folk", "acoustic", "ballads", "harmonies", "storytelling"),
    "Christian": ("worship", "gospel", "choir", "faith", "hymns"),
    "Latin Music": ("salsa", "latin", "reggaeton", "bachata", "cumbia"),
    "Reggae": ("reggae", "dub", "ska", "island", "roots"),
    "Soundtracks": ("soundtrack", "score", "film", "cinematic", "theme"),
    "New Age": ("ambient", "meditation", "relaxing", "new", "calm"),
}
GENRE_NAMES = tuple(GENRES)


FIRST_NAMES = ("John", "Mary", "Dave", "Linda", "Mike", "Sue", "Chris", "Pat", "José", "Amy", "Bob", "Kim")
_BASE36 = np.frombuffer(b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ", dtype=np.uint8)


def _standard_normal_cdf(x: float) -> float:
    return 0.5 * (1.0 + math.erf(x / math.sqrt(2.0)))


def _zipf_weights(n: int, exponent: float, rng: np.random.Generator) -> np.ndarray:
    """Zipf weights ``1/(rank+1)^exponent`` assigned to a random permutation of ``n`` entities."""
    ranks = rng.permutation(n)
    weights = 1.0 / np.power(ranks + 1.0, exponent)
    return weights / weights.sum()


def _codes(n: int, prefix: str, width: int, salt: int) -> list[str]:
    """``n`` distinct, random-looking upper-case base-36 identifiers such as ``A1ZCPG3D3HGRSS``."""
    modulus = 36**width
    # An affine map with a multiplier coprime to 36 is a bijection modulo 36**width: no collisions.
    multiplier, offset = 2_305_843_009_213_693_951, salt % modulus
    values = [(i * multiplier + offset) % modulus for i in range(n)]
    digits = np.empty((n, width), dtype=np.uint8)
    remaining = np.array(values, dtype=object)
    for position in range(width - 1, -1, -1):
        digits[:, position] = _BASE36[(remaining % 36).astype(np.int64)]
        remaining //= 36
    encoded = digits.view(f"S{width}").ravel()
    return [prefix + code.decode() for code in encoded]


class PlantedWorld:
    """Users, items and the taste model that links them: the ground truth behind the generated reviews."""

    def __init__(self, n_reviews: int, n_items: int, rng: np.random.Generator) -> None:
        n_users = max(10, int(n_reviews * 0.6))
        n_genres = len(GENRE_NAMES)
        self.genre_centres = rng.normal(0.0, 1.0, (n_genres, _LATENT_DIM))
        genre_share = rng.dirichlet(np.full(n_genres, 2.0))
        self.item_genre = rng.choice(n_genres, size=n_items, p=genre_share)
        self.item_latent = self.genre_centres[self.item_genre] + rng.normal(
            0, _ITEM_SPREAD, (n_items, _LATENT_DIM)
        )
        self.item_bias = rng.normal(0.0, _BIAS_SD, n_items)
        self.item_weight = _zipf_weights(n_items, 0.95, rng)
        self.item_ids = _codes(n_items, "B", 9, salt=int(rng.integers(1 << 40)))
        # Some real asins are ISBN-like digit strings (an affine bijection keeps them distinct).
        for i in np.flatnonzero(rng.random(n_items) < 0.05):
            self.item_ids[i] = str(1_000_000_000 + (int(i) * 2_654_435_761) % 9_000_000_000)
        self.orphan_ids = _codes(max(1, n_items // 20), "B0", 8, salt=int(rng.integers(1 << 40)))

        self.user_latent = rng.normal(0.0, 1.0, (n_users, _LATENT_DIM)).astype(np.float32)
        self.user_bias = rng.normal(0.0, _BIAS_SD, n_users).astype(np.float32)
        affinity = self.user_latent @ self.genre_centres.T.astype(np.float32)
        top_two = np.argsort(-affinity, axis=1)[:, :2]
        self.user_favourite, self.user_second = top_two[:, 0], top_two[:, 1]
        self.user_cumweight = np.cumsum(_zipf_weights(n_users, 0.85, rng))
        self.user_ids = _codes(n_users, "A", 13, salt=int(rng.integers(1 << 40)))
        # Reviewing careers: a start day skewed towards the 2010s, then activity for a few years.
        span = int((_LAST_DAY - FIRST_DAY).astype(int))
        self.user_start = (span * rng.beta(4.0, 1.6, n_users)).astype(np.int64)
        self.user_names = [
            None if rng.random() < 0.03 else f"{FIRST_NAMES[i % len(FIRST_NAMES)]} {chr(65 + i % 26)}."
            for i in range(n_users)
        ]
        self.span_days = span

        self.genre_items = []
        self.genre_cumweight = []
        for g in range(n_genres):
            members = np.flatnonzero(self.item_genre == g)
            if members.size == 0:
                members = np.array([int(np.argmax(self.item_weight))])
            weights = self.item_weight[members]
            self.genre_items.append(members)
            self.genre_cumweight.append(np.cumsum(weights / weights.sum()))
        self.item_cumweight = np.cumsum(self.item_weight)
        self.rating_cuts = self._calibrate_rating_cuts(rng)

    def mean_scores(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        """The latent rating score of each (user, item) pair before noise and the cut into stars."""
        match = np.einsum("ij,ij->i", self.user_latent[users], self.item_latent[items]) / np.sqrt(_LATENT_DIM)
        return self.user_bias[users] + self.item_bias[items] + _TASTE_WEIGHT * match

    def raw_scores(self, users: np.ndarray, items: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """The latent rating score of each pair, noise included, before it is cut into stars."""
        return self.mean_scores(users, items) + rng.normal(0, _RATING_NOISE, users.size)

    def expected_stars(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        """E[stars | user, item] under the planted model: the best any predictor could do knowing the truth."""
        above_cut = (self.mean_scores(users, items)[:, None] - self.rating_cuts[None, :]) / _RATING_NOISE
        return 1.0 + np.vectorize(_standard_normal_cdf)(above_cut).sum(axis=1)

    def _calibrate_rating_cuts(self, rng: np.random.Generator) -> np.ndarray:
        users, items = self.sample_pairs(min(200_000, 20 * len(self.user_ids)), rng)
        quantiles = np.cumsum(RATING_SHARES)[:-1]
        return np.quantile(self.raw_scores(users, items, rng), quantiles)

    def sample_pairs(self, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """Draw (user, item) index pairs: active users more often, mostly items of their favourite genres."""
        users = np.minimum(np.searchsorted(self.user_cumweight, rng.random(n)), len(self.user_ids) - 1)
        mode = rng.random(n)
        genre = np.where(mode < 0.55, self.user_favourite[users], self.user_second[users])
        items = np.minimum(np.searchsorted(self.item_cumweight, rng.random(n)), len(self.item_ids) - 1)
        by_taste = mode < 0.8
        for g, members in enumerate(self.genre_items):
            rows = np.flatnonzero(by_taste & (genre == g))
            if rows.size:
                picks = np.searchsorted(self.genre_cumweight[g], rng.random(rows.size))
                items[rows] = members[np.minimum(picks, members.size - 1)]
        return users, items


def planted_world(
    n_reviews: int, n_items: int | None = None, seed: int = 0
) -> tuple[PlantedWorld, np.random.Generator]:
    """The world :func:`generate_dataset` draws reviews from, and the random stream it goes on with.

    Args: as for :func:`generate_dataset`, which calls this; the same arguments give the same world.

    Raises:
        GeneratorError: for fewer than 100 reviews or 20 items.
    """
    if n_reviews < 100:
        raise GeneratorError(f"--reviews must be at least 100, got {n_reviews}")
    n_items = n_items or max(50, round(n_reviews * ITEMS_PER_REVIEW))
    if n_items < 20:
        raise GeneratorError(f"--items must be at least 20, got {n_items}")
    rng = np.random.default_rng(seed)
    logger.info("building %s users and %s items (seed %d)", f"{int(n_reviews * 0.6):,}", f"{n_items:,}", seed)
    return PlantedWorld(n_reviews, n_items, rng), rng
