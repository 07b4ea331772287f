"""The training engine: data found, decoded, cached and augmented (data.py), networks trained,
evaluated and checkpointed (train.py), and how its files are written (files.py).

It imports neither optuna nor any view: anyone can train a spec with
`train(spec, data, recipe)`, and a caller that shows progress passes its own bar.
"""
