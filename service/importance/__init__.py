"""Which hyperparameters mattered in a study: fANOVA over a random forest, on each one's scale.

`features` turns a study's space into fANOVA's features (each on its own scale, the
conditional ``layers`` space made unconditional) and holds the course's ranking;
`fanova` runs Optuna's maintained evaluator; `reads` samples, computes and caches what
``GET /api/studies/{id}/importance`` returns.
"""

from service.importance.features import COURSE_TIERS, course_tier
from service.importance.reads import study_importance

__all__ = ["COURSE_TIERS", "course_tier", "study_importance"]
