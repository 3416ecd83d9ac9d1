"""The models: training helpers, the sentiment CNN, the stacked autoencoder, the DNN recommender, bundles."""
