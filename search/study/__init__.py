"""The search: a study's plan (plan.py), its run and final stage (run.py), one trial
(objective.py), what it does when other workers are about (faults.py), the sampler and pruner
(strategy.py), the storage (storage.py), what trials and studies record (record.py), and where
things live (layout.py). It imports the engine and never a command or a view of the command line.

    from search.study import SearchSettings, run_search

The two names load on first use, so that the command line can read layout.py while parsing its
flags without loading torch or optuna.
"""


def __getattr__(name: str):
    if name in ("SearchSettings", "run_search"):
        from . import plan, run

        return {"SearchSettings": plan.SearchSettings, "run_search": run.run_search}[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
