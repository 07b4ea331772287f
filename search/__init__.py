"""resnet-search: the training engine (data, train) and the Optuna search on top (study, cli).

data.py and train.py never import optuna, so the engine runs wherever torch does.
"""
