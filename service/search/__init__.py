"""Pure search code: distributions, the unit-box space, strategies, the surrogate, pruners.

Nothing here imports the database, the web or HTTP layers: every module works on plain
values, so the spec, the queue and the benchmarks share one implementation.
"""
