"""train_cnn: model shapes, the serving signature on raw text, baselines, determinism with a seed."""

from __future__ import annotations

import gzip
import json

import keras
import numpy as np
import pytest
from helpers import read_records, small_cnn_settings

from musicrec import features, schema
from musicrec.data.ingest import ingest
from musicrec.data.transform import preprocess
from musicrec.errors import TrainingError
from musicrec.models.autoencoder import train_autoencoder
from musicrec.models.sentiment import (
    _BIGRAM_MULTIPLIER,
    REVIEW_CODE_LAYER,
    NgramLogit,
    build_cnn,
    build_linear,
    score_texts,
    train_sentiment,
)
from musicrec.models.training import make_dataset, split_files, transformed_feature_spec
from musicrec.settings import AutoencoderSettings, CnnSettings, TransformSettings

SETTINGS = small_cnn_settings()


@pytest.fixture
def trained(small_cnn):
    return small_cnn


def test_model_shapes_take_any_sequence_length():
    model = build_cnn(100, 50, CnnSettings(filters=8, kernel_sizes=(2, 3)), build_linear(100, 50, 64, "ngrams"))
    for length in (5, 40):
        batch = {
            features.REVIEW_IDS: np.ones((3, length), np.int64),
            features.SUMMARY_IDS: np.ones((3, 4), np.int64),
        }
        assert model(batch).shape == (3, 1)
    assert model.get_layer(REVIEW_CODE_LAYER).output.shape == (None, 16)


def test_the_cnn_scores_a_review_the_same_whatever_its_padding():
    """Padding is masked, so training may cut each batch to its longest review without changing any score."""
    rng = np.random.default_rng(3)
    wide = build_linear(100, 50, 64, "ngrams")
    wide.set_weights([rng.normal(size=w.shape) for w in wide.get_weights()])
    model = build_cnn(100, 50, CnnSettings(filters=8, kernel_sizes=(2, 3, 4)), wide)
    lengths = np.array([1, 7, 20, 30])
    short = np.where(np.arange(30) < lengths[:, None], rng.integers(1, 102, (4, 30)), features.PADDING_ID)
    summary = np.array([[3, 4, 0], [0, 0, 0], [5, 0, 0], [6, 7, 8]])
    padded = np.pad(short, ((0, 0), (0, 226)))
    scores = [model({features.REVIEW_IDS: ids, features.SUMMARY_IDS: summary}, training=False).numpy()
              for ids in (short, padded)]  # fmt: skip
    np.testing.assert_allclose(scores[0], scores[1], rtol=0, atol=1e-6)


def test_the_ngram_logit_is_the_length_normalized_sum_of_its_unigram_and_bigram_weights():
    layer = NgramLogit(vocabulary_size=4, bigram_buckets=11)
    layer(np.zeros((1, 2), np.int64))
    unigram, bigram = np.arange(6, dtype=np.float32)[:, None] / 10, np.arange(11, dtype=np.float32)[:, None]
    layer.set_weights([unigram, bigram])
    ids = np.array([[1, 2, 3, 0, 0], [2, 1, 0, 0, 0], [0, 0, 0, 0, 0]])
    logits = layer(ids).numpy().reshape(-1)

    def bucket(a: int, b: int) -> float:
        return float((a * _BIGRAM_MULTIPLIER + b) % 11)

    np.testing.assert_allclose(logits[0], (0.6 + bucket(1, 2) + bucket(2, 3)) / np.sqrt(5), rtol=1e-6)
    np.testing.assert_allclose(logits[1], (0.3 + bucket(2, 1)) / np.sqrt(3), rtol=1e-6)  # order counts
    assert logits[2] == 0.0  # an empty text says nothing
    unigrams_only = NgramLogit(vocabulary_size=4)
    unigrams_only(ids)
    unigrams_only.set_weights([unigram])
    np.testing.assert_allclose(unigrams_only(ids).numpy()[0, 0], 0.6 / np.sqrt(3), rtol=1e-6)


def test_report_has_eval_test_and_both_baselines(trained):
    out, report = trained
    assert json.loads((out / "report.json").read_text()) == report
    for split in ("eval", "test"):
        assert set(report[split]) >= {"accuracy", "balanced_accuracy", "auc", "confusion_matrix", "roc"}
        assert set(report["baselines"][split]) == {"majority", "bow_linear", "ngram_linear"}
        assert sum(map(sum, report[split]["confusion_matrix"])) > 0
    assert report["baselines"]["test"]["majority"]["balanced_accuracy"] == 0.5
    assert len(report["history"]["val_auc"]) <= SETTINGS.epochs


def test_cnn_beats_the_majority_class(trained):
    _, report = trained
    assert report["test"]["balanced_accuracy"] > 0.7
    assert report["test"]["auc"] > 0.8


def test_serving_signature_scores_raw_text(trained):
    out, _ = trained
    good, bad = score_texts(
        out / "model",
        [
            "I love this album. The vocals are stunning, highly recommended!",
            "Not good. Boring and awful, i hate it.",
        ],
        ["Five Stars", "One Star"],
    )
    assert 0.0 <= bad < 0.5 < good <= 1.0


def test_exported_model_matches_the_trained_keras_model(trained, small_preprocessed):
    """Raw test text through the SavedModel (transform graph inside) equals the Keras model on Beam's features."""
    import pyarrow.parquet as pq

    out, _ = trained
    rows = pq.read_table(small_preprocessed["examples"] / schema.TEST).to_pylist()[:64]
    served = score_texts(out / "model", [r[schema.REVIEW_TEXT] for r in rows], [r[schema.SUMMARY] for r in rows])
    model = keras.models.load_model(out / "model" / "keras_model.keras")
    from musicrec.data.transform import transform_rows

    transformed = transform_rows(small_preprocessed["graph"], rows)
    direct = model.predict({name: transformed[name] for name in (features.REVIEW_IDS, features.SUMMARY_IDS)},
                           verbose=0).reshape(-1)  # fmt: skip
    np.testing.assert_allclose(served, direct, atol=1e-5)


def test_training_is_deterministic_with_a_seed(trained, small_preprocessed, tmp_path):
    _, first = trained
    second = train_sentiment(small_preprocessed["transformed"], small_preprocessed["graph"], tmp_path / "model",
                             tmp_path / "report.json", SETTINGS)  # fmt: skip
    assert second["test"] == first["test"] and second["history"] == first["history"]


def test_missing_split_is_a_training_error(tmp_path):
    with pytest.raises(TrainingError, match="no transformed examples for split 'train'"):
        split_files(tmp_path, "train")


def test_dataset_streams_batches_of_the_requested_features(small_preprocessed):
    spec = transformed_feature_spec(small_preprocessed["graph"])
    files = split_files(small_preprocessed["transformed"], "eval")
    inputs, label = next(iter(make_dataset(files, spec, (features.REVIEW_IDS,), features.SENTIMENT_LABEL, 32)))
    assert set(inputs) == {features.REVIEW_IDS} and inputs[features.REVIEW_IDS].shape == (32, 48)
    assert label.shape == (32,)
    whole = make_dataset(files, spec, (features.REVIEW_IDS,), features.SENTIMENT_LABEL, 4)
    trimmed = make_dataset(files, spec, (features.REVIEW_IDS,), features.SENTIMENT_LABEL, 4, trim_padding=True)
    widths = []
    for (full, _), (cut, _) in zip(whole, trimmed, strict=True):
        widths.append(int((full[features.REVIEW_IDS].numpy() != features.PADDING_ID).sum(axis=1).max()))
        np.testing.assert_array_equal(cut[features.REVIEW_IDS], full[features.REVIEW_IDS][:, : widths[-1]])
    assert min(widths) < 48  # some batches had padding to cut


def test_token_importance_by_occlusion_finds_sentiment_words(trained):
    _, report = trained
    review = report["token_importance"][features.REVIEW_IDS]
    assert review["positive"] and review["negative"]
    assert all(score > 0 for _, score in review["positive"]) and all(score < 0 for _, score in review["negative"])
    # Negation-marked words ("good_NEG") push towards negative reviews; plain praise towards positive ones.
    assert any(token.endswith("_NEG") for token, _ in review["negative"])


def test_token_importance_is_occlusion_on_a_known_model():
    """A model whose output is the share of token 1 among review tokens: occluding token 1 lowers it."""
    from musicrec.models.token_importance import token_importance

    review = keras.Input(shape=(None,), dtype="int64", name=features.REVIEW_IDS)
    summary = keras.Input(shape=(None,), dtype="int64", name=features.SUMMARY_IDS)
    ones = keras.ops.sum(keras.ops.cast(keras.ops.equal(review, 1), "float32"), axis=1, keepdims=True) / 4.0
    model = keras.Model({features.REVIEW_IDS: review, features.SUMMARY_IDS: summary}, ones)
    inputs = {features.REVIEW_IDS: np.array([[1, 2, 1, 3]] * 6), features.SUMMARY_IDS: np.array([[2, 0]] * 6)}
    importance = token_importance(model, inputs, {features.REVIEW_IDS: ["a", "b", "c"]}, k=3)
    assert importance[features.REVIEW_IDS]["positive"] == [["a", 0.25]]
    assert importance[features.REVIEW_IDS]["negative"] == []


def test_token_importance_picture(trained):
    out, report = trained
    from musicrec.models.sentiment import token_importance_html

    assert token_importance_html(report["token_importance"]).count("data:image/png;base64,") == 1


def test_a_tf1_style_loader_serves_the_exported_model_too(trained):
    """TF Serving loads SavedModels the TF1 way; `saved_model_cli run` does the same and must agree."""
    import re
    import subprocess
    import sys
    from pathlib import Path

    out, _ = trained
    cli = Path(sys.executable).parent / "saved_model_cli"
    result = subprocess.run(
        [str(cli), "run", "--dir", str(out / "model"), "--tag_set", "serve", "--signature_def", "serving_default",
         "--input_exprs", 'review_text=["Not good. Boring and awful, i hate it."];summary_text=["One Star"]'],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    served = float(re.search(r"positive_probability:\s*\[([0-9.e-]+)\]", result.stdout).group(1))
    expected = score_texts(out / "model", ["Not good. Boring and awful, i hate it."], ["One Star"])[0]
    assert served == pytest.approx(float(expected), abs=1e-5)


def test_rating_only_data_gives_the_train_prior_and_says_so(small_dataset, tmp_path, caplog):
    """Reviews without any text: no minority-class collapse, and both text steps' reports say there was no text."""
    reviews = tmp_path / "ratings.json.gz"
    with gzip.open(reviews, "wt") as out:
        for record in read_records(small_dataset.reviews_path):
            out.write(json.dumps({**record, "reviewText": "", "summary": ""}) + "\n")
    ingest(str(reviews), str(small_dataset.metadata_path), tmp_path / "examples", tmp_path / "q.jsonl.gz",
           tmp_path / "ingest.json")  # fmt: skip
    settings = TransformSettings(
        min_token_frequency=2, max_review_tokens=16, review_tail_tokens=4, max_summary_tokens=4
    )
    preprocess(tmp_path / "examples", tmp_path / "transformed", tmp_path / "graph", tmp_path / "pre.json",
               settings=settings)  # fmt: skip
    report = train_sentiment(tmp_path / "transformed", tmp_path / "graph", tmp_path / "model",
                             tmp_path / "report.json", small_cnn_settings())  # fmt: skip
    assert report["train_text_share"] == 0.0
    assert "no train review has any text" in caplog.text
    majority = report["baselines"]["test"]["majority"]["accuracy"]
    assert report["test"]["accuracy"] == pytest.approx(majority) and majority > 0.5

    encoded = train_autoencoder(tmp_path / "transformed", tmp_path / "graph", tmp_path / "model", tmp_path / "ae",
                                tmp_path / "ae.json", tmp_path / "ae.html",
                                AutoencoderSettings(bottleneck=2, hidden_units=(8,), epochs=2))  # fmt: skip
    assert encoded["train_text_share"] == 0.0 and encoded["note"].startswith("no review or summary text in train")
    assert 0 < encoded["varying_inputs"] < encoded["input_width"]  # the metadata varies, the review codes do not
    assert encoded["test"]["reconstruction_mse"] > 0  # measured on what varies, not diluted by constant codes
