"""train_autoencoder: the stacked shape, SGD training against PCA, the exported encoder and the picture."""

from __future__ import annotations

import dataclasses
import json

import keras
import numpy as np
import pytest

from musicrec import features, schema
from musicrec.errors import TrainingError
from musicrec.models import bundles
from musicrec.models.autoencoder import build_autoencoder, pca_reconstruction_mse, review_table, train_autoencoder
from musicrec.models.bundles import ENCODER_FILE
from musicrec.models.training import make_dataset, split_files, transformed_feature_spec
from musicrec.settings import AutoencoderSettings

SETTINGS = AutoencoderSettings(bottleneck=4, hidden_units=(32, 16), epochs=8, batch_size=64, seed=3)


def test_stacked_shape_mirrors_around_the_bottleneck():
    autoencoder, encoder = build_autoencoder(20, SETTINGS)
    dense = [layer.units for layer in autoencoder.layers if isinstance(layer, keras.layers.Dense)]
    assert dense == [32, 16, 4, 16, 32, 20]
    assert encoder.output.shape == (None, 4) and autoencoder.output.shape == (None, 20)


def test_review_table_keeps_the_frequent_review_tokens_in_file_order_at_full_width(small_preprocessed, small_cnn):
    spec = transformed_feature_spec(small_preprocessed["graph"])
    files = split_files(small_preprocessed["transformed"], schema.EVAL)
    cnn = bundles.load_sentiment_keras(small_cnn[0] / "model")
    # Small batches: their token sequences are trimmed to different lengths, which the table pads back.
    table = review_table(cnn, files, spec, batch_size=16, text_tokens=40)
    ids = np.concatenate([inputs[features.REVIEW_IDS].numpy() for inputs, _ in make_dataset(
        files, spec, (features.REVIEW_IDS,), features.RATING_LABEL, 512)])  # fmt: skip
    assert table["review_tokens"].dtype == np.uint16 and (ids > 40).any()
    np.testing.assert_array_equal(table["review_tokens"], np.where(ids <= 40, ids, 0))
    assert "review_tokens" not in review_table(cnn, files, spec, batch_size=16)


def test_pca_baseline_is_exact_at_full_rank_and_total_variance_at_zero():
    rng = np.random.default_rng(0)
    train, test = rng.normal(size=(200, 6)), rng.normal(size=(50, 6))
    assert pca_reconstruction_mse(train, {"test": test}, 6)["test"] == pytest.approx(0.0, abs=1e-12)
    centred = test - train.mean(axis=0)
    assert pca_reconstruction_mse(train, {"test": test}, 0)["test"] == pytest.approx(np.mean(centred**2))


def test_pca_error_is_measured_on_the_columns_asked_for():
    rng = np.random.default_rng(1)
    train, test = rng.normal(size=(200, 4)), rng.normal(size=(50, 4))
    train[:, 3], test[:, 3] = 0.0, 5.0  # constant in train; far off in test
    measured = np.array([True, True, True, False])
    error = pca_reconstruction_mse(train, {"test": test}, 1, measured)["test"]
    full = pca_reconstruction_mse(train, {"test": test}, 1)["test"]
    assert full > 6 > error > 0  # the constant column's 25 per row counts only when it is measured


@pytest.fixture(scope="module")
def trained(small_preprocessed, small_cnn, tmp_path_factory):
    out = tmp_path_factory.mktemp("autoencoder")
    cnn_dir, _ = small_cnn
    inputs = (small_preprocessed["transformed"], small_preprocessed["graph"], cnn_dir / "model")
    report = train_autoencoder(*inputs, out / "encoder", out / "report.json", out / "projection.html", SETTINGS)
    return out, report


def test_autoencoder_learns_and_reports_pca_beside_it(trained):
    out, report = trained
    assert json.loads((out / "report.json").read_text()) == report
    for split in ("eval", "test"):
        ours = report[split]["reconstruction_mse"]
        pca = report["baselines"][split]["pca"]["reconstruction_mse"]
        # Standardized inputs: predicting the mean scores about 1.0; both must do clearly better.
        assert 0 < ours < 0.9 and 0 < pca < 0.9
    assert report["history"]["loss"][-1] < report["history"]["loss"][0]


def test_exported_encoder_gives_codes_of_the_bottleneck_size(trained):
    out, report = trained
    encoder = keras.models.load_model(out / "encoder" / ENCODER_FILE)
    normalization = json.loads((out / "encoder" / "normalization.json").read_text())
    assert len(normalization["mean"]) == report["input_width"]
    codes = encoder.predict(np.zeros((3, report["input_width"]), np.float32), verbose=0)
    assert codes.shape == (3, SETTINGS.bottleneck)


def test_projection_picture_is_an_embedded_png(trained):
    out, _ = trained
    html = (out / "projection.html").read_text()
    assert html.count("data:image/png;base64,") == 1 and len(html) > 5_000


def test_encoder_inputs_far_outside_the_train_spread_are_clipped(trained):
    out, report = trained
    bundle = bundles.load_encoder(out / "encoder")
    rows = np.tile(bundle.mean, (3, 1))
    rows[1, 0] = bundle.mean[0] + bundles.STANDARD_LIMIT * bundle.std[0]
    rows[2, 0] = bundle.mean[0] + 1_000 * bundle.std[0]  # a filter firing where train almost never saw it
    codes = bundle.encode(rows)
    np.testing.assert_allclose(codes[2], codes[1], atol=1e-6)
    assert not np.allclose(codes[1], codes[0], atol=1e-6)
    assert json.loads((out / "encoder" / "normalization.json").read_text())["clip"] == bundles.STANDARD_LIMIT


def test_a_diverging_autoencoder_fails_with_a_clear_error_and_publishes_nothing(
    small_preprocessed, small_cnn, tmp_path
):
    inputs = (small_preprocessed["transformed"], small_preprocessed["graph"], small_cnn[0] / "model")
    diverging = dataclasses.replace(SETTINGS, learning_rate=1e6)
    with pytest.raises(TrainingError, match="autoencoder training diverged .* lower ae_learning_rate"):
        train_autoencoder(*inputs, tmp_path / "encoder", tmp_path / "report.json", tmp_path / "p.html", diverging)
    assert list(tmp_path.iterdir()) == []
