"""Release: the scorecard, evaluation and blessing, the model store, push, lineage and the run summary."""
