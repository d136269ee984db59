"""A benchmark suite for Caviar's search strategies against Optuna's samplers.

`problems` defines what is optimized (standard test functions laid over real TrainConfig
fields through the spec's scales, and the trainer on real and generated data sets),
`runners` runs one method on one problem for one seed (results cached under /tmp), and
`report` prints paired differences. `bench/search_vs_optuna.py` is the command.
"""
