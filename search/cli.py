"""The `resnet-search` command line. Every user error ends as one line on stderr and exit code 2."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from resnet_space import ResNetSpec, SpecError, count, parse_budget
from resnet_space.spec import parse_int_list


class UserError(Exception):
    """Bad input or state a user can fix: printed as one line, exit code 2."""


class Parser(argparse.ArgumentParser):
    def error(self, message):  # one line instead of usage + message
        raise UserError(f"{self.prog}: {message} (see --help)")


def budget_arg(text: str) -> int:
    try:
        return parse_budget(text)
    except SpecError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text} must be at least 1")
    return value


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"{text} must be a positive number")
    return value


def study_name(text: str) -> str:
    if not text.strip() or len(text) > 512 or not text.isprintable():
        raise argparse.ArgumentTypeError(f"{text!r} is not a study name (1 to 512 printable characters)")
    return text


def spec_from_flags(args) -> ResNetSpec:
    blocks = parse_int_list("--blocks", args.blocks)
    channels = parse_int_list("--channels", args.channels)
    conv = parse_int_list("--conv-kernel", args.conv_kernel)
    skip = parse_int_list("--skip-kernel", args.skip_kernel)
    n = len(blocks)
    return ResNetSpec(
        blocks=blocks,
        channels=channels,
        conv_kernels=conv * n if len(conv) == 1 else conv,
        skip_kernels=skip * n if len(skip) == 1 else skip,
        pool=args.pool,
        classes=args.classes,
    )


def cmd_count(args) -> int:
    spec = spec_from_flags(args)
    counts = count(spec)
    fits = None if args.budget is None else counts.params < args.budget
    if args.json:
        out = {"summary": spec.summary(), "spec": spec.to_dict(), "params": counts.params, "macs": counts.macs}
        if fits is not None:
            out.update(budget=args.budget, fits=fits)
        print(json.dumps(out))
    else:
        print(f"{spec.summary()}: {counts.params:,} params, {counts.macs:,} MACs")
        if fits is not None:
            verdict = "fits under" if fits else "does not fit under"
            print(f"{verdict} the budget of {args.budget:,} ({args.budget - counts.params:+,})")
    return 0 if fits is None or fits else 1


REPO_STUDIES = Path(__file__).resolve().parent.parent / "studies"
# Defaults live here, not in study.py, so that parsing flags imports neither torch nor optuna.
DEFAULT_STUDY = "resnet-search"
DEFAULT_STORAGE = "sqlite:///studies/resnet-search.db"
DEFAULT_ARTIFACTS = "studies/artifacts"


def cmd_run(args) -> int:
    import optuna
    import torch

    from resnet_space.space import SpaceError, StudyFile

    from . import study as st
    from .data import DataError, load_cifar10
    from .train import DeviceError, resolve_device

    try:
        space = StudyFile.load(resolve_space(args.space))
        budget = args.budget or space.budget
        device = resolve_device(args.device)
    except (SpaceError, DeviceError) as e:
        raise UserError(str(e)) from None
    if args.device == "auto" and device.type == "cpu":
        raise UserError(cpu_refusal(space, args))
    storage = open_storage_or_fail(args.storage, args.heartbeat, args.storage_retry)
    try:
        data = load_cifar10(args.data, val_size=args.val_size, limit_train=args.limit_train, seed=args.seed)
    except DataError as e:
        raise UserError(str(e)) from None

    optuna.logging.set_verbosity(optuna.logging.ERROR)  # our own line per trial replaces Optuna's
    settings = st.SearchSettings(
        budget=budget, space=space, epochs=args.epochs, device=str(device), seed=args.seed,
        checkpoints=Path(args.artifacts).parent / "checkpoints" / args.study, artifacts=Path(args.artifacts),
        baseline=not args.no_baseline,
    )
    max_epochs = space.center_recipe(args.epochs)[0].epochs
    # Workers sharing a study must not share a sampler seed, or their random start-up trials coincide.
    sampler = optuna.samplers.TPESampler(multivariate=True, group=True, constant_liar=True,
                                         seed=args.seed * 100_003 + os.getpid(), n_startup_trials=10)
    # Hyperband on epochs: weak trials stop after 1, 3, 9, ... epochs instead of running to the end.
    pruner = optuna.pruners.HyperbandPruner(min_resource=1, max_resource=max_epochs, reduction_factor=3)
    try:
        study, created = st.create_or_load(storage, args.study, settings, sampler, pruner)
    except st.StudyError as e:
        raise UserError(str(e)) from None
    if created:
        for key, value in {"data_root": data.root, "dataset": data.name, "val_size": args.val_size,
                           "limit_train": args.limit_train}.items():
            study.set_user_attr(key, value)

    view = LiveView(study, args.trials, quiet=args.quiet)
    objective = st.Objective(settings, data, progress=view.progress or False, log=view.log, max_trials=args.trials)
    # --trials counts the study's finished trials, so running the same command again resumes it.
    # Failed trials do not count: the heartbeat retries those of dead workers, and trials stopped
    # by Ctrl-C are queued again here to resume from their checkpoints.
    finished = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
    taken = optuna.study.MaxTrialsCallback(args.trials, states=(*finished, optuna.trial.TrialState.RUNNING))
    done = len(study.get_trials(deepcopy=False, states=finished))
    requeued = st.requeue_interrupted(study) if done < args.trials else []
    view.log(f"study {args.study!r} on {st.redact(args.storage)}: {done} of {args.trials} trials finished"
             + (f", resuming interrupted trial(s) {', '.join(map(str, requeued))}" if requeued else "")
             + f"; budget {budget:,} params; {data.name}: {len(data.train):,} train / {len(data.val):,} "
             f"validation images; device {device}")
    deadline = None if args.timeout is None else time.monotonic() + args.timeout
    while done < args.trials:
        try:
            with view:
                study.optimize(objective, callbacks=[taken, view.on_trial], gc_after_trial=True,
                               timeout=None if deadline is None else max(0.0, deadline - time.monotonic()),
                               catch=(torch.cuda.OutOfMemoryError, st.SurplusTrial))
            break
        except KeyboardInterrupt:
            view.log("interrupted: the running trial is recorded as failed and its checkpoint kept; "
                     "run the same command again to resume it and continue the study")
            return 130
        except Exception as e:
            outage = st.storage_outage(e)
            if outage is None:
                raise
            # The server went away: reconnect with backoff for a bounded time. What was recorded
            # stays in the database; the trial in flight is failed by its heartbeat and retried.
            view.log(f"storage unreachable ({str(outage).splitlines()[0][:120]}); "
                     f"retrying for up to {args.storage_retry:g} s")
            storage = open_storage_or_fail(args.storage, args.heartbeat, args.storage_retry)
            study = optuna.load_study(study_name=args.study, storage=storage, sampler=sampler, pruner=pruner)
            view.study = study
    refresh_report(study, Path(args.artifacts).parent / "reports" / args.study, view.log)
    print_best(study, top=5)
    return 0


def resolve_space(name: str) -> Path:
    """A study file's path, or the name of one shipped in studies/ ('paper', 'cpu-small')."""
    path = Path(name)
    shipped = REPO_STUDIES / (name if name.endswith(".toml") else f"{name}.toml")
    return shipped if not path.exists() and path.parent == Path(".") and shipped.exists() else path


def cpu_refusal(space, args) -> str:
    from resnet_space import MODEL_1, count

    from .study import cpu_estimate_hours

    epochs = args.epochs or space.center_recipe()[0].epochs
    images = args.limit_train or 45_000
    hours, rate = cpu_estimate_hours(count(MODEL_1).macs, images, epochs)
    return (f"no CUDA device here: one trial like the report's Model 1 ({count(MODEL_1).macs:,} MACs/image, "
            f"{images:,} images x {epochs} epochs) would take about {hours:,.0f} h on this CPU "
            f"({rate / 1e9:.1f} GMAC/s measured); for a small search on this CPU run: resnet-search run "
            f"--device cpu --space cpu-small --study cpu-try --epochs 2 --limit-train 2000 --val-size 1000 --trials 5")


def load_study_or_fail(url: str, name: str):
    from .study import StudyError, load_study

    try:
        return load_study(open_storage_or_fail(url), name)
    except StudyError as e:
        raise UserError(str(e)) from None


def open_storage_or_fail(url: str, heartbeat_s: int | None = None, retry_s: float = 0):
    from .study import StudyError, open_storage

    try:
        return open_storage(url, *([heartbeat_s] if heartbeat_s else []), retry_s=retry_s)
    except StudyError as e:
        raise UserError(str(e)) from None


class LiveView:
    """A rich view of the study (trials, pruned, over budget, best) with the trainer's epoch bar
    beneath it; with --quiet, plain log lines on stderr instead."""

    def __init__(self, study, total: int, quiet: bool):
        self.study, self.total, self.quiet = study, total, quiet
        self.progress = None
        if not quiet:
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            self.progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                     TextColumn("{task.fields[info]}"), TimeElapsedColumn(),
                                     console=Console(stderr=True, log_path=False))
            self.task = self.progress.add_task("trials", total=total, info="")
            self._refresh()

    def _refresh(self):
        from .study import trial_counts

        counts = trial_counts(self.study)
        best = self._best()
        line = (f"complete {counts['complete']}  pruned {counts['pruned']}  over budget {counts['over_budget']}  "
                f"failed {counts['failed']}  best {best}")
        if self.progress is not None:
            self.progress.update(self.task, completed=min(counts["trials"] - counts["running"], self.total),
                                 info=line)
        return line

    def _best(self) -> str:
        try:
            t = self.study.best_trial
        except ValueError:
            return "-"
        return f"{t.value:.2%} (trial {t.number}, {t.user_attrs.get('summary', '')})"

    def log(self, message: str):
        if self.progress is not None:
            self.progress.console.log(message)
        else:
            print(message, file=sys.stderr, flush=True)

    def on_trial(self, study, trial):
        reason = trial.user_attrs.get("prune_reason", "")
        value = f"{trial.value:.2%}" if trial.value is not None else "-"
        self.log(f"trial {trial.number} {trial.state.name.lower()}: {value} {reason}".rstrip())
        line = self._refresh()
        if self.quiet:
            self.log(line)

    def __enter__(self):
        if self.progress is not None:
            self.progress.start()
        return self

    def __exit__(self, *exc):
        if self.progress is not None:
            self.progress.stop()


def print_best(study, top: int) -> None:
    from rich.console import Console
    from rich.table import Table

    from .study import best_trials, trial_counts

    console = Console()
    table = Table(title=f"best of study {study.study_name!r} (validation accuracy)")
    for column in ("rank", "trial", "spec", "params", "MACs", "val acc", "epochs", "s/epoch"):
        table.add_column(column, justify="left" if column == "spec" else "right")
    for rank, t in enumerate(best_trials(study, top), 1):
        secs = t.user_attrs.get("seconds_per_epoch") or [0]
        baseline = " (Model 1)" if t.user_attrs.get("baseline") else ""
        table.add_row(str(rank), str(t.number), t.user_attrs.get("summary", "?") + baseline,
                      f"{t.user_attrs.get('params', 0):,}", f"{t.user_attrs.get('macs', 0):,}", f"{t.value:.2%}",
                      str(len(t.user_attrs.get("val_acc_per_epoch", []))), f"{sum(secs) / len(secs):.1f}")
    console.print(table)
    report = Table(title="the seed report's Table 1, as reported (test accuracy, 200 epochs, true CIFAR-10)")
    for column in ("model", "description", "reported test acc", "reported params", "exact params"):
        report.add_column(column)
    for row in study.user_attrs.get("table_1", []):
        report.add_row(row["model"], row["description"], f"{row['reported_test_acc']:.2f}%",
                       f"{row['reported_params'] / 1e6:.3f}M", f"{row['params']:,}" if row["params"] else "-")
    console.print(report)
    counts = trial_counts(study)
    console.print(", ".join(f"{k.replace('_', ' ')} {v}" for k, v in counts.items()))


def cmd_best(args) -> int:
    import optuna

    from . import study as st

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    out = Path(args.export) if args.export else None
    if out is not None and out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise UserError(f"export path {out} exists and is not an empty directory; choose a new one")
    study = load_study_or_fail(args.storage, args.study)
    if not st.best_trials(study, 1):
        raise UserError(f"study {args.study!r} has no completed trial yet; run `resnet-search run` first")
    print_best(study, args.top)
    if out is not None:
        from .export import ExportError, export_trial

        try:
            metrics = export_trial(study, st.best_trials(study, 1)[0], out, data_root=args.data)
        except ExportError as e:
            raise UserError(str(e)) from None
        study.set_user_attr("exported", {"trial": metrics["trial"], "test_acc": metrics["test_acc"],
                                         "dir": str(out.resolve()), "dataset": metrics["dataset"]})
        print(f"exported trial {metrics['trial']} to {out}: validation {metrics['val_acc']:.2%}, "
              f"test {metrics['test_acc']:.2%} on {metrics['dataset']}")
    return 0


def cmd_report(args) -> int:
    import optuna

    from .report import attach_to_study, write_report

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    out = Path(args.out or Path("studies") / "reports" / args.study)
    if out.exists() and not out.is_dir():
        raise UserError(f"report path {out} is a file, not a folder")
    study = load_study_or_fail(args.storage, args.study)
    numbers = write_report(study, out, top=args.top)
    if not args.no_attach and study.user_attrs.get("artifact_dir"):
        attach_to_study(study, out)
    counts = numbers["counts"]
    print(f"report for study {args.study!r}: {out / 'index.html'} ({counts['trials']} trials, "
          f"{counts['trained']} trained)")
    return 0


def refresh_report(study, out: Path, log) -> None:
    """The report and the plots the dashboard shows, redrawn after a search; a plotting
    problem is logged in one line and never fails the search that produced the results."""
    from .report import attach_to_study, write_report

    try:
        write_report(study, out)
        attach_to_study(study, out)
        log(f"report: {out / 'index.html'}")
    except Exception as e:  # noqa: BLE001
        log(f"report not refreshed: {type(e).__name__}: {str(e).splitlines()[0][:160] if str(e) else ''}")


def cmd_dashboard(args) -> int:
    import optuna
    import optuna_dashboard
    from optuna.artifacts import FileSystemArtifactStore

    study = load_study_or_fail(args.storage, args.study)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    store = FileSystemArtifactStore(study.user_attrs.get("artifact_dir", args.artifacts))
    print(f"optuna-dashboard for study {args.study!r}: http://{args.host}:{args.port}/dashboard", flush=True)
    optuna_dashboard.run_server(args.storage, host=args.host, port=args.port, artifact_store=store)
    return 0


def add_study_args(p) -> None:
    p.add_argument("--study", type=study_name, default=DEFAULT_STUDY, help=f"study name (default {DEFAULT_STUDY})")
    p.add_argument("--storage", default=DEFAULT_STORAGE,
                   help=f"Optuna storage URL (default {DEFAULT_STORAGE}; postgresql://... to share among workers)")


def build_parser() -> Parser:
    parser = Parser(prog="resnet-search", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True, parser_class=Parser)

    p = sub.add_parser("count", help="exact params and MACs of one spec, without building it")
    p.add_argument("--blocks", required=True, help="blocks per stage, e.g. 8,6,4,3")
    p.add_argument("--channels", required=True, help="channels per stage, e.g. 32,64,128,256")
    p.add_argument("--conv-kernel", default="3", help="conv kernel F: one for all stages or one per stage")
    p.add_argument("--skip-kernel", default="1", help="shortcut kernel k: one for all stages or one per stage")
    p.add_argument("--pool", type=int, default=4, help="average-pool kernel P (capped at the final map)")
    p.add_argument("--classes", type=int, default=10)
    p.add_argument("--budget", type=budget_arg, help="exit 0 if the spec fits under it, 1 if not")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=cmd_count)

    p = sub.add_parser("run", help="search: train sampled ResNets under the budget, prune the weak ones")
    p.add_argument("--budget", type=budget_arg, help="parameter budget, e.g. 5e6 or 5M (default: the space file's)")
    add_study_args(p)
    p.add_argument("--space", default=str(REPO_STUDIES / "default.toml"),
                   help="study file (TOML) with the space and recipe, or a shipped one by name: default, paper, "
                        "cpu-small")
    p.add_argument("--trials", type=positive_int, default=100, help="trials in the study in all (default 100)")
    p.add_argument("--timeout", type=positive_float, help="stop starting trials after this many seconds")
    p.add_argument("--epochs", type=positive_int, help="epochs per trial (default: the recipe's)")
    p.add_argument("--device", default="auto", help="auto, cuda, cuda:N or cpu (default auto)")
    p.add_argument("--data", help="CIFAR-10 root: torchvision layout or train/<class>/ test/<class>/ folders "
                                  "(default: $RESNET_SEARCH_DATA, else downloaded to the user cache)")
    p.add_argument("--limit-train", type=positive_int, help="train on only this many images (stratified)")
    p.add_argument("--val-size", type=positive_int, default=5000, help="validation images held out of train")
    p.add_argument("--seed", type=int, default=0, help="seed of the split, sampler and training")
    p.add_argument("--artifacts", default=DEFAULT_ARTIFACTS, help="artifact store directory for checkpoints")
    p.add_argument("--no-baseline", action="store_true", help="do not seed the study with the report's Model 1")
    p.add_argument("--heartbeat", type=positive_int, default=30,  # study.HEARTBEAT_S
                   help="seconds between worker heartbeats; a worker silent for 3 is dead and its trial retried")
    p.add_argument("--storage-retry", type=positive_float, default=60,
                   help="seconds to keep retrying an unreachable storage before giving up (default 60)")
    p.add_argument("--quiet", action="store_true", help="log lines instead of the live view")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("best", help="the best trials beside Table 1; --export hands over the winner")
    add_study_args(p)
    p.add_argument("--top", type=positive_int, default=5)
    p.add_argument("--export", metavar="DIR", help="write spec.json, state_dict.pt, model.pt2, metrics.json")
    p.add_argument("--data", help="data root for the test evaluation (default: the one the study used)")
    p.set_defaults(func=cmd_best)

    p = sub.add_parser("report", help="HTML and Markdown report with plots, attached to the study for the dashboard")
    add_study_args(p)
    p.add_argument("--out", metavar="DIR", help="report folder (default studies/reports/STUDY)")
    p.add_argument("--top", type=positive_int, default=10, help="trials in the top table (default 10)")
    p.add_argument("--no-attach", action="store_true", help="do not attach the plots to the study")
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("dashboard", help="optuna-dashboard on the study's storage, artifacts wired in")
    add_study_args(p)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=positive_int, default=8080)
    p.add_argument("--artifacts", default=DEFAULT_ARTIFACTS)
    p.set_defaults(func=cmd_dashboard)
    return parser


def main(argv=None) -> int:
    try:
        args = build_parser().parse_args(argv)
        return args.func(args)
    except (UserError, SpecError) as e:
        print(f"resnet-search: error: {e}" if not str(e).startswith("resnet-search") else str(e), file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("resnet-search: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
