"""The tables `best`, `run` and `retrain` print. Their rows come from report/numbers.py,
the functions the report's tables use, from one reading of the study (record.Snapshot), so the
console and the report never disagree."""

from __future__ import annotations

import os
import shlex

from rich import box
from rich.console import Console
from rich.table import Table
from sqlalchemy.engine import make_url

from ..study.layout import DEFAULT_STORAGE, STORAGE_ENV, invoked_as, plural
from ..study.record import Snapshot, trial_counts
from .live import terminal
from .report import numbers


def titled(title: str) -> Table:
    """A table whose title is printed above it as a line of text (a title rich centres is padded
    with spaces to the table's width), with no outer edge and one space between columns, so that
    the widest (a 5M study's best) fits 80 columns without cutting a number."""
    table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, collapse_padding=True)
    table.heading = title
    return table


def add_column(table: Table, name: str, text: bool = False) -> None:
    """A column of text (left, folded to what the table leaves it) or of numbers (right, never
    folded: the text columns give way first; a header of several words takes a line each)."""
    table.add_column(name if text else name.replace(" ", "\n"), justify="left" if text else "right",
                     overflow="fold", no_wrap=not text)


def show(out: Console, table: Table) -> None:
    """The title, then the table, each line without the spaces that pad it to the width."""
    with out.capture() as captured:
        out.print(table.heading, markup=False, highlight=False)
        out.print(table)
    out.file.write("".join(line.rstrip() + "\n" for line in captured.get().splitlines()))


def pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.2%}"


def console() -> Console:
    return terminal(stderr=False)


def print_best(study, top: int) -> None:
    out = console()
    snapshot = Snapshot.of(study)
    table = titled(f"best of study {study.study_name!r} (validation accuracy)")
    for column in ("rank", "trial", "spec", "params", "MACs", "val acc", "epochs", "s/epoch"):
        add_column(table, column, text=column == "spec")
    for r in numbers.top_rows(snapshot, top, with_baseline=True):
        label = r["label"]
        table.add_row(str(r["rank"]), str(r["trial"]), label, f"{r['params'] or 0:,}", f"{r['macs'] or 0:,}",
                      pct(r["val_acc"]) + ("" if r["complete"] else " (pruned)"), str(r["epochs"]),
                      f"{r['seconds'] / max(1, r['epochs']):.1f}")
    show(out, table)
    report = titled("the seed report's Table 1, as reported (test accuracy, 200 epochs, true CIFAR-10)")
    for column in ("model", "description", "reported test acc", "reported params", "exact params"):
        add_column(report, column, text=column in ("model", "description"))
    for row in snapshot.study.table_1:
        report.add_row(row["model"], row["description"], f"{row['reported_test_acc']:.2f}%",
                       f"{row['reported_params'] / 1e6:.3f}M", f"{row['params']:,}" if row["params"] else "-")
    show(out, report)
    print_final_stage(out, snapshot)
    print_retrained(out, snapshot)
    print_pruner_trust(out, snapshot)
    out.print(", ".join(f"{k.replace('_', ' ')} {v}" for k, v in trial_counts(snapshot.trials).items()), soft_wrap=True)


def print_front(study, storage: str, data: str | None) -> None:
    """`best --front`: the trade-off front of accuracy, params and MACs, fewest params first, and
    the command that exports its first trial, as it runs: with the study's images (`data`, None
    for a named data set) and storage (a URL holding a password named by its environment
    variable, never printed)."""
    out = console()
    table = titled(f"front of study {study.study_name!r}: complete trials no other beats on validation "
                        "accuracy, params and MACs together")
    for column in ("trial", "spec", "params", "MACs", "val acc", "epochs"):
        add_column(table, column, text=column == "spec")
    rows = numbers.front_rows(Snapshot.of(study))
    for r in rows:
        table.add_row(str(r["trial"]), r["label"],
                      f"{r['params']:,}", f"{r['macs']:,}", pct(r["val_acc"]), str(r["epochs"]))
    show(out, table)
    if rows:
        n = rows[0]["trial"]
        where = "" if storage in (DEFAULT_STORAGE, os.environ.get(STORAGE_ENV)) else (
            f" --storage env:{STORAGE_ENV}" if make_url(storage).password else f" --storage {shlex.quote(storage)}")
        images = "" if data is None else f" --data {shlex.quote(str(data))}"
        out.print(f"export one with: {invoked_as()} best --study {shlex.quote(study.study_name)}{where}{images} "
                  f"--export trial-{n} --trial {n}", soft_wrap=True, markup=False, highlight=False)


def print_exported(metrics: dict, out) -> None:
    """`best --export`: what was exported, and its accuracies."""
    print(f"exported trial {metrics['trial']} to {out}: validation {metrics['val_acc']:.2%}, "
          f"test {metrics['test_acc']:.2%} on {metrics['dataset']}")
    if metrics["onnx"] != "model.onnx":
        print(metrics["onnx"])


def print_report_written(study_name: str, out, counts: dict) -> None:
    """`report`: where the report is, and how many trials it covers."""
    print(f"report for study {study_name!r}: {out / 'index.html'} ({counts['trials']} trials, "
          f"{counts['trained']} trained)")


def print_final_stage(out: Console, snapshot: Snapshot) -> None:
    """The finalists: the search's validation accuracy beside the final stage's, the winner marked."""
    rows = numbers.final_stage_rows(snapshot)
    if not rows:
        return
    table = titled("final stage: the best distinct specs and the baseline trained again, longer and unpruned "
                        "(validation accuracy)")
    for column in ("", "trial", "spec", "params", "MACs", "search val", "epochs", "final val", "final epochs"):
        add_column(table, column, text=column == "spec")
    for r in rows:
        table.add_row("winner" if r["winner"] else "", str(r["trial"]),
                      r["label"], f"{r['params'] or 0:,}",
                      f"{r['macs'] or 0:,}", pct(r["search_val_acc"]), str(r["search_epochs"]),
                      pct(r["val_acc"]) if r["val_acc"] is not None else r["state"].lower(), str(r["epochs"]))
    show(out, table)


def print_pruner_trust(out: Console, snapshot: Snapshot) -> None:
    """How well the ranking at each epoch where the pruner decides predicts the final one, on this
    study's own trials."""
    rows = [r for r in numbers.pruner_trust(snapshot) if r["spearman"] is not None]
    if not rows:
        return
    table = titled(f"the pruner's epochs against epoch {rows[0]['last']} (Spearman, full-length trials)")
    for column in ("epoch", "trials", "Spearman"):
        add_column(table, column)
    for r in rows:
        table.add_row(str(r["epoch"]), str(r["trials"]), f"{r['spearman']:+.2f}")
    show(out, table)


def print_retrained(out: Console, snapshot: Snapshot) -> None:
    """The study's `retrain` results, beside the search's validation accuracy of each trial."""
    entries = numbers.retrained(snapshot)
    if not entries:
        return
    sets = {(e["dataset"], e.get("train_images")) for e in entries}
    (name, images), = sets if len(sets) == 1 else {(None, None)}
    on = f" on {name}" + (f" ({images:,} images)" if images else "") if name else ""
    table = titled(f"retrained{on} on training + validation images, each seed tested once after its final "
                        "epoch (test accuracy)")
    columns = ["network", "spec", *([] if on else ["data set"]), "epochs", "seeds", "search val", "test mean ± std",
               "min-max"]
    for column in columns:
        add_column(table, column, text=column in ("network", "spec", "data set"))
    for e in entries:
        spread = f" ± {e['std']:.2%}" if e.get("std") is not None else ""
        table.add_row(e["label"], e["summary"], *([] if on else [e["dataset"]]), str(e["epochs"]), str(e["seeds"]),
                      pct(e["val_acc"]), f"{e['mean']:.2%}{spread}", f"{e['min']:.2%}-{e['max']:.2%}")
    show(out, table)


def print_retrain_result(result) -> None:
    """One `retrain` run: each seed's test accuracy, their mean and spread, and the export."""
    e = result.entry
    table = titled(f"{e['label']} retrained: {e['summary']}, {e['params']:,} params, "
                        f"{e['macs']:,} MACs; {e['dataset']}, "
                        f"{e.get('train_images', 0):,} training + validation images, {plural(e['epochs'], 'epoch')}, "
                        f"{plural(e['seeds'], 'seed')}; test accuracy after the final epoch")
    for column in ("seed", "test acc", "train loss", "seconds"):
        add_column(table, column)
    for s in result.seeds:
        table.add_row(str(s["seed"]) + (" (exported)" if s["seed"] == e["export_seed"] else ""),
                      f"{s['test_acc']:.2%}", f"{s['train_loss_last']:.3f}", f"{s['seconds']:.1f}")
    out = console()
    show(out, table)
    spread = f" ± {e['std']:.2%} (sample std)" if e["std"] is not None else ""
    out.print(f"test accuracy: mean {e['mean']:.2%}{spread}, min {e['min']:.2%}, max {e['max']:.2%} "
              f"over {plural(e['seeds'], 'seed')}", soft_wrap=True)
    if result.target.val_acc is not None:
        out.print(f"the search measured {result.target.val_acc:.2%} on its validation split", soft_wrap=True)
    out.print(f"exported seed {e['export_seed']} (closest to the mean) to {e['export_dir']}", soft_wrap=True,
              markup=False, highlight=False)
    if result.export.get("onnx", "model.onnx") != "model.onnx":
        out.print(result.export["onnx"], soft_wrap=True, markup=False, highlight=False)
