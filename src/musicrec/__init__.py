"""musicrec: the domain library behind the music recommender pipeline (no Kubeflow imports here)."""

__version__ = "0.1.0"
