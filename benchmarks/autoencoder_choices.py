"""Benchmark: the autoencoder's SGD learning rate and epochs against PCA, on a run's review representations.

Usage: ``python benchmarks/autoencoder_choices.py --run DIR``; DIR is a run's pipeline root task directory (e.g.
of the IMDB reviews that ``benchmarks/real_data.py reviews`` converts). Builds the autoencoder's inputs with the
run's CNN exactly as train_autoencoder does, then trains the default architecture at each setting (patience 3,
so early stopping rarely cuts a run short) and prints one Markdown row each, beside PCA at the same dimension.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import keras  # Keras 3 before anything imports tensorflow_transform

from musicrec import schema
from musicrec.models import bundles
from musicrec.models.autoencoder import build_autoencoder, mse_over, pca_reconstruction_mse, review_table
from musicrec.models.training import split_files, transformed_feature_spec
from musicrec.settings import AutoencoderSettings

_SETTINGS = ((0.02, 20), (0.1, 30), (0.1, 60))  # (learning rate, epochs): the old default, the new, twice as long


def main() -> None:
    """Train at each setting and print the README rows."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, required=True)
    args = parser.parse_args()
    spec = transformed_feature_spec(args.run / "preprocess" / "transform_graph")
    cnn = bundles.load_sentiment_keras(args.run / "train-cnn" / "model")
    files = {
        split: split_files(args.run / "preprocess" / "transformed_examples", split) for split in schema.SPLITS
    }
    data = {split: review_table(cnn, files[split], spec)["representation"] for split in schema.SPLITS}
    spread = data[schema.TRAIN].std(axis=0)
    varying = spread > 1e-6
    scaled = {split: (x - data[schema.TRAIN].mean(axis=0)) / (spread + 1e-6) for split, x in data.items()}
    defaults = AutoencoderSettings()
    pca = pca_reconstruction_mse(scaled[schema.TRAIN], {schema.TEST: scaled[schema.TEST]}, defaults.bottleneck,
                                 varying)[schema.TEST]  # fmt: skip
    print("| SGD learning rate | most epochs | test reconstruction MSE | PCA | seconds |")
    print("| ---: | ---: | ---: | ---: | ---: |")
    for learning_rate, epochs in _SETTINGS:
        keras.utils.set_random_seed(defaults.seed)
        autoencoder, _ = build_autoencoder(scaled[schema.TRAIN].shape[1], defaults)
        autoencoder.compile(optimizer=keras.optimizers.SGD(learning_rate, momentum=defaults.momentum), loss="mse")
        started = time.monotonic()
        stop = keras.callbacks.EarlyStopping(patience=3, restore_best_weights=True)
        autoencoder.fit(scaled[schema.TRAIN], scaled[schema.TRAIN], batch_size=defaults.batch_size, epochs=epochs,
                        validation_data=(scaled[schema.EVAL], scaled[schema.EVAL]), callbacks=[stop],
                        verbose=0)  # fmt: skip
        reconstruction = autoencoder.predict(scaled[schema.TEST], batch_size=4_096, verbose=0)
        error = mse_over(reconstruction - scaled[schema.TEST], varying)
        print(f"| {learning_rate} | {epochs} | {error:.4f} | {pca:.4f} | {time.monotonic() - started:.0f} |",
              flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
