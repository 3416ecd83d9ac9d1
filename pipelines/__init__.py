"""Kubeflow Pipelines layer: the DAG, the local runner and the ``musicrec`` command line."""
