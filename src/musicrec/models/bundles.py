"""Model bundles: the file layout of each trained model directory, saved and loaded in this one place.

* **sentiment** (train_cnn's ``model``): a SavedModel whose ``serving_default`` takes raw review and summary
  text and returns the positive probability, with the Keras CNN beside it (:data:`SENTIMENT_KERAS_FILE`), which
  the later steps read review codes from.
* **encoder** (train_autoencoder's ``encoder``): the Keras encoder (:data:`ENCODER_FILE`) and the train mean and
  standard deviation of its input, whose z-scores are clipped to ``clip`` (:data:`NORMALIZATION_FILE`).
* **recommender** (train_dnn's ``model``): a SavedModel whose ``serving_default`` takes raw ``user_id`` and
  ``item_id``, with the two-head Keras model (:data:`RECOMMENDER_KERAS_FILE`), the train history arrays
  (:data:`HISTORY_FILE`), the ranker's tower vectors, EASE^R and blend weights (:data:`RANKER_FILE`) and the
  user and item vocabularies (one id a line).

Push lays each bundle out as a TF Serving version directory with :func:`serving_layout`.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import keras
import numpy as np

from musicrec import features
from musicrec.errors import ModelLoadError, first_line

SAVED_MODEL_FILE = "saved_model.pb"
EXTRA_DIRECTORY = "assets.extra"  # TF Serving's place for files beside a SavedModel that it does not load
SENTIMENT_KERAS_FILE = "keras_model.keras"
ENCODER_FILE = "encoder.keras"
NORMALIZATION_FILE = "normalization.json"
# The encoder's input is standardized with the train mean and standard deviation, then clipped to this many
# standard deviations: a CNN filter that fires on a handful of reviews has a tiny spread, and its z-scores (431
# in one full-scale run) made the autoencoder's SGD diverge to NaN; the widest ordinary column reached 14.
STANDARD_LIMIT = 10.0
RECOMMENDER_KERAS_FILE = "rating_model.keras"
HISTORY_FILE = "history.npz"
RANKER_FILE = "ranker.npz"
USERS_FILE = features.USER_VOCABULARY
ITEMS_FILE = features.ITEM_VOCABULARY


def _load_keras(path: Path) -> keras.Model:
    try:
        return keras.models.load_model(path, compile=False)  # for inference: no optimizer state to restore
    except (OSError, ValueError) as error:
        raise ModelLoadError(f"cannot load a model from {path.parent}: {first_line(error)}") from None


def load_all_signatures(bundle_dir: str | Path, *required: str) -> dict[str, Any]:
    """Every signature of a bundle's SavedModel by name, loaded once (what TF Serving would serve).

    Raises:
        ModelLoadError: no SavedModel at ``bundle_dir``, or one without one of ``required``.
    """
    import tensorflow as tf

    try:
        signatures = dict(tf.saved_model.load(str(bundle_dir)).signatures)
    except (OSError, ValueError) as error:
        raise ModelLoadError(f"cannot load a model from {bundle_dir}: {first_line(error)}") from None
    missing = [name for name in required if name not in signatures]
    if missing:
        raise ModelLoadError(f"cannot load a model from {bundle_dir}: no {', '.join(missing)} signature")
    return signatures


def load_signatures(bundle_dir: str | Path, *names: str) -> tuple[Any, ...]:
    """The named signatures of a bundle's SavedModel, loaded once.

    Raises:
        ModelLoadError: no SavedModel at ``bundle_dir``, or one without one of ``names``.
    """
    signatures = load_all_signatures(bundle_dir, *names)
    return tuple(signatures[name] for name in names)


def save_sentiment_keras(model: keras.Model, bundle_dir: Path) -> None:
    """Put the Keras CNN beside the sentiment SavedModel in ``bundle_dir``."""
    model.save(Path(bundle_dir) / SENTIMENT_KERAS_FILE)


def load_sentiment_keras(bundle_dir: str | Path) -> keras.Model:
    """The Keras CNN of a sentiment bundle (its ``review_code`` layer gives review codes)."""
    return _load_keras(Path(bundle_dir) / SENTIMENT_KERAS_FILE)


@dataclass
class EncoderBundle:
    """The autoencoder's encoder and the train normalization of its input."""

    encoder: keras.Model
    mean: np.ndarray
    std: np.ndarray

    def encode(self, representation: np.ndarray) -> np.ndarray:
        """Codes of raw representations (normalized with the train statistics first)."""
        scaled = standardize(representation, self.mean, self.std)
        return self.encoder.predict(scaled, batch_size=8_192, verbose=0)


def standardize(representation: np.ndarray, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    """The encoder's input: z-scores by the train ``mean`` and ``std``, clipped to :data:`STANDARD_LIMIT`."""
    return np.clip((representation - mean) / std, -STANDARD_LIMIT, STANDARD_LIMIT).astype(np.float32)


def save_encoder(bundle_dir: Path, encoder: keras.Model, mean: np.ndarray, std: np.ndarray,
                 metadata_inputs: tuple[str, ...]) -> None:  # fmt: skip
    """Write an encoder bundle into the existing directory ``bundle_dir``."""
    encoder.save(Path(bundle_dir) / ENCODER_FILE)
    normalization = {"mean": mean.tolist(), "std": std.tolist(), "clip": STANDARD_LIMIT,
                     "metadata_inputs": list(metadata_inputs)}  # fmt: skip
    (Path(bundle_dir) / NORMALIZATION_FILE).write_text(json.dumps(normalization))


def load_encoder(bundle_dir: str | Path) -> EncoderBundle:
    """Read what :func:`save_encoder` wrote."""
    root = Path(bundle_dir)
    normalization = json.loads((root / NORMALIZATION_FILE).read_text())
    return EncoderBundle(_load_keras(root / ENCODER_FILE), np.array(normalization["mean"]),
                         np.array(normalization["std"]))  # fmt: skip


@dataclass
class RecommenderBundle:
    """What a recommender bundle holds besides its SavedModel."""

    model: keras.Model
    history: dict[str, np.ndarray]
    users: list[str]
    items: list[str]
    ranker: dict[str, np.ndarray]  # tower vectors, EASE^R weights and blend weights (rerank.Ranker.to_arrays)


def save_recommender(bundle_dir: Path, model: keras.Model, history: dict[str, Any], users: list[str],
                     items: list[str], ranker: dict[str, np.ndarray]) -> None:  # fmt: skip
    """Write the Keras model, history and ranker arrays and vocabularies into the existing ``bundle_dir``."""
    root = Path(bundle_dir)
    model.save(root / RECOMMENDER_KERAS_FILE)
    np.savez_compressed(root / HISTORY_FILE, **{k: np.asarray(v) for k, v in history.items()})
    np.savez_compressed(root / RANKER_FILE, **ranker)
    for name, ids in ((USERS_FILE, users), (ITEMS_FILE, items)):
        (root / name).write_text("".join(f"{value}\n" for value in ids))


def load_recommender(bundle_dir: str | Path) -> RecommenderBundle:
    """Read what :func:`save_recommender` wrote (from train_dnn's model or a pushed ``recommender`` version)."""
    root = Path(bundle_dir)
    if not (root / HISTORY_FILE).is_file():
        raise ModelLoadError(f"cannot load a model from {root}: no {HISTORY_FILE} (not a recommender bundle)")
    arrays = []
    for name in (HISTORY_FILE, RANKER_FILE):
        with np.load(root / name) as data:
            arrays.append({key: data[key] for key in data.files})
    return RecommenderBundle(_load_keras(root / RECOMMENDER_KERAS_FILE), arrays[0],
                             (root / USERS_FILE).read_text().splitlines(),
                             (root / ITEMS_FILE).read_text().splitlines(), arrays[1])  # fmt: skip


def serving_layout(bundle_dir: Path, out: Path) -> None:
    """Lay out one bundle as a SavedModel directory TF Serving can load, at ``out`` (which must not exist).

    A bundle that is a SavedModel (sentiment, recommender) is copied as it is; a Keras-only bundle (encoder)
    is exported with ``model.export`` and its files go to ``assets.extra/``.

    Raises:
        ModelLoadError: ``bundle_dir`` holds neither a SavedModel nor exactly one Keras model.
    """
    source = Path(bundle_dir)
    if (source / SAVED_MODEL_FILE).is_file():
        shutil.copytree(source, out)
        return
    keras_files = sorted(source.glob("*.keras"))
    if len(keras_files) != 1:
        raise ModelLoadError(f"expected a SavedModel or one .keras file in {source}")
    _load_keras(keras_files[0]).export(str(out), verbose=False)
    (out / EXTRA_DIRECTORY).mkdir()
    for path in source.iterdir():
        target = out / EXTRA_DIRECTORY / path.name
        shutil.copytree(path, target) if path.is_dir() else shutil.copy2(path, target)
