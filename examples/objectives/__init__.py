"""Objectives of your own code for Caviar to tune, each beside the same one for Optuna.

`digits` tunes scikit-learn's SGDClassifier and `torch_digits` a small PyTorch network,
both on scikit-learn's copy of the handwritten digits (no download), both reporting the
dev accuracy every epoch so that ASHA can stop the poor ones early. Each `NAME.py` has
its spec in `NAME.yaml` and its Optuna original in `NAME_optuna.py`; docs/own-code.md
walks through them. Copy them into a package of your own: workers import an objective by
its module path, so it must be importable where they run.
"""
