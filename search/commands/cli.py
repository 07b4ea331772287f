"""The `resnet-search` command line. Every user error ends as one line on stderr and exit code 2."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from resnet_space import Shape, count, fits
from resnet_space.errors import UserError
from resnet_space.spec import spec_from_text

from ..engine.files import DATA_ENV, NAMED, named_key
from ..study.interrupts import ctrl_c_stops_once, how_stopped
from ..study.layout import (DEFAULT_ARTIFACTS, DEFAULT_FINALISTS, DEFAULT_SPACE, DEFAULT_STORAGE,
                            DEFAULT_STORAGE_RETRY_S, DEFAULT_STUDY, DEFAULT_TRIALS, DEFAULT_VAL_SIZE, HEARTBEAT_S,
                            LOCAL_OUTPUTS, STORAGE_ENV, invoked_as, shipped_spaces, study_name, writable_folder)
from .flags import (artifacts_folder, budget_arg, integer_at_least, positive_float, positive_int, settings_from,
                    storage_url, trial_number)


class Parser(argparse.ArgumentParser):
    def error(self, message):  # one line instead of usage + message
        raise UserError(f"{self.prog}: {message} (see --help)")


def cmd_count(args) -> int:
    spec = spec_from_text(args.blocks, args.channels, args.conv_kernel, args.skip_kernel, args.pool,
                          Shape(args.side, 1 if args.gray else 3, args.classes))
    counts = count(spec)
    fitting = None if args.budget is None else fits(counts, args.budget)
    if args.json:
        out = {"summary": spec.summary(), "spec": spec.to_dict(), "params": counts.params, "macs": counts.macs}
        if fitting is not None:
            out.update(budget=args.budget, fits=fitting)
        print(json.dumps(out))
    else:
        print(f"{spec.summary()}: {counts.params:,} params, {counts.macs:,} MACs")
        if fitting is not None:
            verdict = "fits under" if fitting else "does not fit under"
            print(f"{verdict} the budget of {args.budget:,} ({args.budget - counts.params:+,})")
    return 0 if fitting is None or fitting else 1


def cmd_run(args) -> int:
    from ..study.plan import SearchSettings
    from ..study.run import run_search
    from .console import print_best
    from .live import CountedLog, LiveView

    view = CountedLog() if args.quiet else LiveView()
    try:
        study = run_search(settings_from(SearchSettings, args, baseline=not args.no_baseline), view,
                           on_stop=lambda study, outputs: refresh_report(study, outputs, view.log))
    except KeyboardInterrupt as e:
        return how_stopped(e)[1]  # the search logged what was kept and how to resume
    print_best(study, top=5)
    return 0


def refresh_report(study, outputs, log) -> None:
    """The report and the plots the dashboard shows, redrawn as a search stops; a plotting
    problem is logged in one line and never fails the search that produced the results."""
    from .report import attach_to_study, write_report

    try:
        write_report(study, outputs.reports)
        attach_to_study(study, outputs.reports, outputs.artifacts)
        log(f"report: {outputs.reports / 'index.html'}")
    except Exception as e:  # noqa: BLE001
        log(f"report not refreshed: {type(e).__name__}: {str(e).splitlines()[0][:160] if str(e) else ''}")


def note(message: str) -> None:
    print(f"resnet-search: {message}", file=sys.stderr)


def open_study(args, write: bool = True):
    from ..study.storage import load_study, open_storage

    return load_study(open_storage(args.storage, write=write), args.study, log=note)


def cmd_retrain(args) -> int:
    import optuna

    from .console import print_retrain_result
    from .live import progress_bar, terminal
    from .retrain import RetrainSettings, retrain

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    settings = settings_from(RetrainSettings, args)
    shown = terminal()
    try:
        if shown.is_terminal:
            with progress_bar(transient=True, console=shown) as bar:
                result = retrain(settings, log=lambda m: bar.console.log(m, markup=False, highlight=False),
                                 progress=bar)
        else:  # a pipe or a file: a line per epoch, and nothing drawn (a refusal stays one line)
            result = retrain(settings, log=lambda m: print(m, file=sys.stderr, flush=True),
                             on_epoch=lambda seed, e: print(f"seed {seed}, epoch {e.epoch}: loss {e.loss:.3f}, "
                                                            f"{e.seconds:.0f} s", file=sys.stderr, flush=True))
    except KeyboardInterrupt as e:
        print(f"resnet-search: stopped by {how_stopped(e)[0]}: finished seeds are kept and the running one resumes "
              "from its last epoch; run the same command again to continue", file=sys.stderr)
        return how_stopped(e)[1]
    print_retrain_result(result)
    return 0


def cmd_best(args) -> int:
    import optuna

    from .console import print_best, print_exported, print_front
    from .export import export_folder
    from ..study.record import StudyRecord, winner

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    if args.trial is not None and not args.export:
        raise UserError(f"--trial {args.trial} names the trial to export: give --export DIR with it")
    out = export_folder(Path(args.export)) if args.export else None
    study = open_study(args, write=out is not None)
    found = winner(study)
    if found is None:
        raise UserError(f"study {study.study_name!r} has no completed trial yet; run `{invoked_as()} run` first")
    if out is not None:
        from .export import export_trial, exportable_trial, final_run

        stage, trial = found if args.trial is None else (study, exportable_trial(study, args.trial))
        if args.trial is not None and args.stage == "final" and (run := final_run(study, args.trial)) is not None:
            stage, trial = run
            note(f"exporting trial {args.trial}'s final-stage run (trial {trial.number} of {stage.study_name!r}, "
                 f"{len(trial.user_attrs.get('val_acc_per_epoch', []))} epochs); --stage search exports its search run")
    if args.front:
        recorded = StudyRecord.of(study).data or {}
        named = named_key(recorded.get("name")) is not None
        print_front(study, args.storage,
                    args.data or os.environ.get(DATA_ENV) or (None if named else recorded.get("root")))
    else:
        print_best(study, args.top)
    if out is not None:
        print_exported(export_trial(stage, trial, out, args.artifacts, data_root=args.data, search=study), out)
    return 0


def cmd_report(args) -> int:
    import optuna

    from .console import print_report_written
    from ..study.record import StudyRecord
    from .report import attach_to_study, write_report

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    study = open_study(args, write=not args.no_attach)
    outputs = StudyRecord.of(study).outputs(args.artifacts, args.storage)
    out = writable_folder(Path(args.out) if args.out else outputs.reports, "report folder")
    numbers = write_report(study, out, top=args.top)
    if not args.no_attach:
        attach_to_study(study, out, args.artifacts)
    print_report_written(study.study_name, out, numbers["counts"])
    return 0


def cmd_dashboard(args) -> int:
    import optuna
    import optuna_dashboard
    from ..study.artifacts import open_artifact_store

    if args.port > 65535:
        raise UserError(f"port {args.port} is not a TCP port (1 to 65535)")
    study = open_study(args, write=False)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    store = open_artifact_store(args.artifacts)
    check_can_serve(args.host, args.port)
    print(f"optuna-dashboard for study {study.study_name!r}: http://{args.host}:{args.port}/dashboard", flush=True)
    optuna_dashboard.run_server(args.storage, host=args.host, port=args.port, artifact_store=store)
    return 0


def cmd_serve_storage(args) -> int:
    from ..study.proxy import serve

    if args.storage.startswith("grpc://"):
        raise UserError("serve-storage serves a database (sqlite:///FILE or postgresql://...), not another proxy")
    if args.port > 65535:
        raise UserError(f"port {args.port} is not a TCP port (1 to 65535)")
    check_can_serve(args.host, args.port)
    serve(args.storage, args.host, args.port, log=lambda line: print(line, flush=True))
    return 0


def check_can_serve(host: str, port: int) -> None:
    """Refuse, in one line, an address that does not resolve or a port already taken."""
    import socket

    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    except (socket.gaierror, UnicodeError) as e:
        raise UserError(f"--host {host!r} is not an address of this machine ({e.args[-1]})") from None
    with socket.socket(family, kind, proto) as probe:
        # As servers bind: a port whose last connections linger in TIME_WAIT is free; one listened on is not.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(address)
        except OSError as e:
            raise UserError(f"cannot serve on {host}:{port}: {e.strerror or e}; choose another --port or --host") from None


def add_study_args(p, default: str | None = None) -> None:
    p.add_argument("--study", type=study_name, default=default,
                   help=f"study name (default {default})" if default else
                   "study name (default: the storage's only study, else the one whose trials ran last)")
    p.add_argument("--storage", type=storage_url, default=os.environ.get(STORAGE_ENV) or DEFAULT_STORAGE,
                   help=f"Optuna storage URL, or env:VAR to read it from an environment variable so that no password "
                        f"shows in the process list (default: ${STORAGE_ENV}, else {DEFAULT_STORAGE}; "
                        "postgresql://... to share among workers)")


def add_artifacts_arg(p, default: str | None = DEFAULT_ARTIFACTS) -> None:
    p.add_argument("--artifacts", type=artifacts_folder, default=default,
                   help=f"artifact store of the study's checkpoints and plots, a folder or s3://bucket/prefix (boto3's "
                        f"credentials; local files then go to {LOCAL_OUTPUTS}/): give the same to every command of a "
                        "study (default " + (f"{DEFAULT_ARTIFACTS})" if default else
                                             f"the study file's `artifacts`, else {DEFAULT_ARTIFACTS})"))


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
    p.add_argument("--side", type=int, default=32, help="side of the square input images (16 to 128)")
    p.add_argument("--gray", action="store_true", help="grayscale input (one channel) instead of colour")
    p.add_argument("--budget", type=budget_arg("parameters"), help="exit 0 if the spec fits under it, 1 if not")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=cmd_count)

    p = sub.add_parser("run", help="search: train sampled ResNets under the budget, prune the weak ones")
    p.add_argument("--budget", type=budget_arg("parameters"),
                   help="parameter budget, e.g. 5e6 or 5M (default: the study file's)")
    p.add_argument("--macs-budget", type=budget_arg("MACs"),
                   help="MACs per image (at the data's side), e.g. 500M, a second wall no trained spec reaches (default: the "
                        "study file's macs_budget, else none)")
    add_study_args(p, DEFAULT_STUDY)
    p.add_argument("--space", default=DEFAULT_SPACE,
                   help="study file (TOML) with the space and recipe, or a shipped one by name: "
                        + ", ".join(shipped_spaces()))
    p.add_argument("--trials", type=positive_int, default=DEFAULT_TRIALS,
                   help=f"trained trials in the study in all (default {DEFAULT_TRIALS})")
    p.add_argument("--timeout", type=positive_float, help="stop starting trials after this many seconds")
    p.add_argument("--epochs", type=positive_int, help="epochs per trial (default: the recipe's)")
    p.add_argument("--device", default="auto", help="auto, cuda, cuda:N or cpu (default auto)")
    p.add_argument("--data", help=f"{', '.join(NAMED)} (in the user cache, downloaded when online), or a folder: "
                                  "train/<class>/ test/<class>/ images, or torchvision's layout (default: "
                                  f"${DATA_ENV}, else cifar10)")
    p.add_argument("--limit-train", type=positive_int, help="train on only this many images (stratified)")
    p.add_argument("--trial-images", type=positive_int,
                   help="search trials train on only this many of the training images (a cheaper fidelity, so more "
                        "trials fit the same compute); the final stage and retrain use all of them (default: all)")
    p.add_argument("--val-size", type=positive_int, default=DEFAULT_VAL_SIZE,
                   help=f"validation images held out of train (default {DEFAULT_VAL_SIZE:,})")
    p.add_argument("--seed", type=int, default=0, help="seed of the split, sampler and training (default 0)")
    p.add_argument("--sampler", choices=("tpe", "random"), default="tpe",
                   help="tpe (default), or random search under the same pruner, to measure what TPE adds")
    add_artifacts_arg(p, default=None)
    p.add_argument("--no-baseline", action="store_true", help="do not seed the study with the report's Model 1")
    p.add_argument("--heartbeat", type=positive_int, default=HEARTBEAT_S,
                   help=f"seconds between worker heartbeats (default {HEARTBEAT_S}); a worker that misses 3 in a "
                        "row is taken for dead and its trial is retried from its last checkpoint")
    p.add_argument("--storage-retry", type=positive_float, default=DEFAULT_STORAGE_RETRY_S,
                   help=f"seconds to keep retrying an unreachable storage before giving up "
                        f"(default {DEFAULT_STORAGE_RETRY_S:g})")
    p.add_argument("--finalists", type=integer_at_least(0), default=DEFAULT_FINALISTS,
                   help="after the search, train its best this many distinct specs (and the baseline) again, "
                        f"longer and unpruned; the best of them is the winner; 0 skips it (default {DEFAULT_FINALISTS})")
    p.add_argument("--final-epochs", type=positive_int,
                   help="epochs of the final stage (default: twice --epochs)")
    p.add_argument("--quiet", action="store_true", help="log lines instead of the live view")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("best", help="the best trials beside Table 1; --export hands over the winner")
    add_study_args(p)
    p.add_argument("--top", type=positive_int, default=5)
    p.add_argument("--front", action="store_true",
                   help="list instead the trials no other beats on validation accuracy, params and MACs together")
    p.add_argument("--export", metavar="DIR", help="write spec.json, state_dict.pt, model.pt2, metrics.json")
    p.add_argument("--trial", type=trial_number, help="export this complete trial instead of the winner")
    p.add_argument("--stage", choices=("final", "search"), default="final",
                   help="with --trial: its final-stage run where it has one (default), or its search run")
    p.add_argument("--data", help=f"data for the test evaluation (default: ${DATA_ENV}, else the named data set the "
                                  "study used; an image folder must be given)")
    add_artifacts_arg(p)
    p.set_defaults(func=cmd_best)

    p = sub.add_parser("retrain", help="train the best trial again on training + validation images with several "
                                       "seeds; test once each after the final epoch")
    add_study_args(p)
    which = p.add_mutually_exclusive_group()
    which.add_argument("--trial", type=trial_number, help="retrain this trial (default: the study's best)")
    which.add_argument("--spec", metavar="SPEC.JSON", help="retrain this spec (as `best --export` writes it) "
                                                          "under the study's recipe")
    which.add_argument("--baseline", action="store_true", help="retrain the study's seeded baseline (Model 1)")
    p.add_argument("--epochs", type=positive_int, help="epochs (default: the trial's recipe's)")
    p.add_argument("--seeds", type=positive_int, default=3, help="train with seeds 0..K-1 (default 3)")
    p.add_argument("--device", default="auto", help="auto, cuda, cuda:N or cpu (default auto)")
    p.add_argument("--data", help=f"data (default: ${DATA_ENV}, else the named data set the study used; an image "
                                  "folder must be given)")
    add_artifacts_arg(p)
    p.add_argument("--out", metavar="DIR", help="folder of the retraining (default: retrain/STUDY/trial-N beside "
                                                "--artifacts); run again to resume")
    p.set_defaults(func=cmd_retrain)

    p = sub.add_parser("report", help="HTML and Markdown report with plots, attached to the study for the dashboard")
    add_study_args(p)
    p.add_argument("--out", metavar="DIR", help="report folder (default: reports/STUDY beside --artifacts, "
                                                "studies/reports/STUDY for the default; STUDY@NAME-DIGEST for a "
                                                "storage other than the default)")
    add_artifacts_arg(p)
    p.add_argument("--top", type=positive_int, default=10, help="trials in the top table (default 10)")
    p.add_argument("--no-attach", action="store_true", help="do not attach the plots to the study")
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("dashboard", help="optuna-dashboard on the study's storage, artifacts wired in")
    add_study_args(p)
    p.add_argument("--host", default="127.0.0.1", help="address to serve on (default 127.0.0.1)")
    p.add_argument("--port", type=positive_int, default=8080, help="port to serve on (default 8080)")
    add_artifacts_arg(p)
    p.set_defaults(func=cmd_dashboard)

    p = sub.add_parser("serve-storage", help="Optuna's gRPC storage proxy over the study's database, for many "
                                             "workers (they take --storage grpc://HOST:PORT)")
    p.add_argument("--storage", type=storage_url, default=os.environ.get(STORAGE_ENV) or DEFAULT_STORAGE,
                   help=f"the database to serve, or env:VAR (default: ${STORAGE_ENV}, else {DEFAULT_STORAGE})")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to serve on (default 127.0.0.1; the proxy has no authentication: serve other "
                        "machines only on a private network)")
    p.add_argument("--port", type=positive_int, default=13000, help="port to serve on (default 13000)")
    p.set_defaults(func=cmd_serve_storage)
    return parser


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    # argparse takes "-5e6" after a budget flag for an option; joined, it reaches our own parser.
    for i in reversed(range(len(argv) - 1)):
        if argv[i] in ("--budget", "--macs-budget") and argv[i + 1].startswith("-"):
            argv[i:i + 2] = [f"{argv[i]}={argv[i + 1]}"]
    try:
        with ctrl_c_stops_once():
            args = build_parser().parse_args(argv)
            return args.func(args)
    except UserError as e:
        print(f"resnet-search: error: {e}" if not str(e).startswith("resnet-search") else str(e), file=sys.stderr)
        return 2
    except OSError as e:  # a folder or file the checks could not foresee (a disk full, a mount gone read-only)
        where = f" {e.filename}" if e.filename else ""
        print(f"resnet-search: error: cannot write or read{where}: {e.strerror or e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as e:
        print(f"resnet-search: stopped by {how_stopped(e)[0]}", file=sys.stderr)
        return how_stopped(e)[1]


if __name__ == "__main__":
    sys.exit(main())
