"""The command line and what it shows: `resnet-search` (cli.py) and its flags (flags.py), the
tables it prints (console.py), the live view of a running search (live.py), `best --export`
(export.py), `retrain` (retrain.py) and the report (report/). It imports the search and the
engine; neither imports it."""
