"""The data steps: synthetic data in the 2018 layout, ingest, text normalization, tf.Transform preprocessing."""
