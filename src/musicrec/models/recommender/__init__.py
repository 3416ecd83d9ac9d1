"""The two-head DNN recommender: history features, network, negatives, text codes, ranking, serving, training."""
