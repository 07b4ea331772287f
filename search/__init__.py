"""resnet-search, in three rooms, each importing only those below it:

- engine/: data, augmentation, training and checkpoint files; imports neither optuna nor a view;
- study/: the search on Optuna: plan, run, one trial, faults, strategy, storage, records;
- commands/: the command line, its views, the export, retrain and the report.

private.py, beneath all three, holds every private optuna and torch name they use.
"""
