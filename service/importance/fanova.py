"""Functional ANOVA over a random-forest surrogate: Optuna's evaluator, on an in-memory study.

`optuna.importance.FanovaImportanceEvaluator` is a maintained implementation of Hutter,
Hoos and Leyton-Brown's fANOVA (2014): a random forest (scikit-learn's) is fitted to the
trials' values, and each hyperparameter's importance is the share of the forest's
variance its marginal explains. Optuna reads trials from a study, so one is built in
memory from the feature rows (`service.importance.features`); each ordered feature is a
float in [0, 1] on its hyperparameter's own scale, each categorical a choice of indexes.
"""

from __future__ import annotations

from collections.abc import Sequence

from service.importance.features import Feature

# The forest: fANOVA's cost grows with trees x leaves x features, in Python. 16 trees of
# depth 6 find the course's ranking on the synthetic studies of tests/service/
# test_importance.py as 64 trees of depth 64 do, in a fraction of the time (a few
# tenths of a second for 800 trials; bench/importance.py).
N_TREES = 16
MAX_DEPTH = 6


def fanova_importances(
    features: Sequence[Feature],
    rows: Sequence[Sequence[float]],
    values: Sequence[float],
    *,
    seed: int = 0,
) -> dict[str, float]:
    """Each feature's share of the variance of `values` (summing to 1), by fANOVA.

    A feature that takes a single value in every row has nothing to explain and gets 0.
    """
    import optuna
    from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution
    from optuna.importance import FanovaImportanceEvaluator, get_param_importances

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    distributions: dict[str, BaseDistribution] = {
        f.name: CategoricalDistribution(list(range(f.choices)))
        if f.choices
        else FloatDistribution(0.0, 1.0)
        for f in features
    }

    def params(row: Sequence[float]) -> dict[str, float | int]:
        pairs = zip(features, row, strict=True)
        return {f.name: int(x) if f.choices else float(x) for f, x in pairs}

    trials = [
        optuna.trial.create_trial(
            params=params(row), distributions=distributions, value=float(value)
        )
        for row, value in zip(rows, values, strict=True)
    ]
    study = optuna.create_study(storage=optuna.storages.InMemoryStorage())
    study.add_trials(trials)
    varied = [f.name for i, f in enumerate(features) if len({row[i] for row in rows}) > 1]
    shares: dict[str, float] = {f.name: 0.0 for f in features}
    if not varied:
        return shares
    evaluator = FanovaImportanceEvaluator(n_trees=N_TREES, max_depth=MAX_DEPTH, seed=seed)
    found = get_param_importances(study, evaluator=evaluator, params=varied, normalize=True)
    shares.update({name: float(share) for name, share in found.items()})
    return shares
